//! The browser pages' files: the chat (`/`, its entry module `/app.js` and the modules under
//! `/js/`) and the operator dashboard (`/dashboard`). They are built into the binary, so the
//! server serves them from any working directory; `--static-dir` serves a directory instead,
//! for editing.
//!
//! `FILES` lists every file under `static/`; a unit test compares it with the directory and
//! checks that every script, stylesheet and module import the pages name is served, so a new
//! module cannot be left out of the binary.

use actix_web::{HttpResponse, http::header::ContentType, web};

/// `(path under static/, contents)` for each listed file.
macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../static/", $path)))),*]
    };
}

/// Every file under `static/`, served at `/<path>`.
const FILES: &[(&str, &str)] = embed![
    "index.html",
    "style.css",
    "app.js",
    "js/auth.js",
    "js/composer.js",
    "js/connection.js",
    "js/dom.js",
    "js/errors.js",
    "js/frames.js",
    "js/notify.js",
    "js/privates.js",
    "js/render.js",
    "js/rooms.js",
    "js/state.js",
    "js/storage.js",
    "js/timeline.js",
    "dashboard.html",
    "dashboard.css",
    "dashboard.js",
    "js/chart.js",
];

/// The pages, also served at these paths.
const PAGES: &[(&str, &str)] = &[("/", "index.html"), ("/dashboard", "dashboard.html")];

/// The `Content-Type` of a file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Registers one route per embedded file, and the pages' own paths.
pub fn embedded(cfg: &mut web::ServiceConfig) {
    let routes = FILES
        .iter()
        .map(|&(path, body)| (format!("/{path}"), path, body))
        .chain(PAGES.iter().map(|&(url, path)| {
            let (_, body) = FILES
                .iter()
                .find(|(p, _)| *p == path)
                .expect("every page is in FILES (see the tests)");
            (url.to_owned(), path, *body)
        }));
    for (url, path, body) in routes {
        let content_type = content_type(path);
        cfg.route(
            &url,
            web::get().to(move || async move {
                HttpResponse::Ok()
                    .insert_header(ContentType(content_type.parse().expect("valid mime")))
                    .insert_header(("cache-control", "no-cache"))
                    .body(body)
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::{FILES, PAGES, content_type};

    fn static_dir() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/static"))
    }

    /// Every file under `dir`, as a path relative to `static/` with `/` separators.
    fn files_under(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read static/") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                files_under(&path, out);
            } else {
                let rel = path.strip_prefix(static_dir()).expect("under static/");
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    /// Resolves `spec` (`/x`, `./x`, `../x`) against the file `from` (relative to static/).
    fn resolve(from: &str, spec: &str) -> String {
        if let Some(abs) = spec.strip_prefix('/') {
            return abs.to_owned();
        }
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop(); // the file's own name
        for part in spec.split('/') {
            match part {
                "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        parts.join("/")
    }

    /// The quoted strings that follow each `marker` in `text`.
    fn quoted_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
        text.match_indices(marker)
            .filter_map(|(at, _)| {
                let rest = text[at + marker.len()..].trim_start();
                let quote = rest.chars().next().filter(|c| matches!(c, '\'' | '"'))?;
                rest[1..].split(quote).next()
            })
            .collect()
    }

    /// What a file loads: scripts and stylesheets of a page, imports of a module.
    fn references(path: &str, text: &str) -> Vec<String> {
        let specs: Vec<&str> = if path.ends_with(".html") {
            let mut specs = quoted_after(text, "<script type=\"module\" src=");
            specs.extend(quoted_after(text, "<script src="));
            specs.extend(quoted_after(text, "<link rel=\"stylesheet\" href="));
            specs
        } else if path.ends_with(".js") {
            let mut specs = quoted_after(text, "from");
            specs.extend(quoted_after(text, "import"));
            specs.extend(quoted_after(text, "import("));
            specs.retain(|s| s.starts_with('.') || s.starts_with('/'));
            specs
        } else {
            Vec::new()
        };
        specs.into_iter().map(|s| resolve(path, s)).collect()
    }

    #[test]
    fn every_file_in_static_is_embedded_and_nothing_else() {
        let mut on_disk = BTreeSet::new();
        files_under(static_dir(), &mut on_disk);
        let embedded: BTreeSet<String> = FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        assert_eq!(
            embedded.len(),
            FILES.len(),
            "a file is listed twice in FILES"
        );
        assert_eq!(
            on_disk, embedded,
            "static/ and FILES in src/http/assets.rs differ: list every file of static/ there"
        );
    }

    #[test]
    fn everything_the_pages_load_is_served_with_its_type() {
        let served: BTreeSet<&str> = FILES.iter().map(|(p, _)| *p).collect();
        let mut checked = 0;
        for (path, text) in FILES {
            for reference in references(path, text) {
                assert!(
                    served.contains(reference.as_str()),
                    "{path} loads {reference}, which is not served"
                );
                checked += 1;
            }
            assert_ne!(
                content_type(path),
                "application/octet-stream",
                "{path} has no content type"
            );
        }
        // The pages, the entry module and its imports at least.
        assert!(checked > 10, "only {checked} references found");
        for (_, page) in PAGES {
            assert!(served.contains(page), "{page}");
        }
        assert_eq!(content_type("js/dom.js"), "text/javascript; charset=utf-8");
    }

    #[test]
    fn references_are_found_and_resolved() {
        let module = "import { a } from './dom.js';\nimport {\n  b,\n} from \"../x/y.js\";\n\
                      import './side.js';\nconst c = await import('./lazy.js');\nimport x from 'pkg';";
        assert_eq!(
            references("js/m.js", module),
            ["js/dom.js", "x/y.js", "js/side.js", "js/lazy.js"]
        );
        let page = "<link rel=\"stylesheet\" href=\"/style.css\">\n\
                    <script type=\"module\" src=\"/app.js\"></script><a href=\"/metrics\">";
        assert_eq!(references("index.html", page), ["app.js", "style.css"]);
    }
}
