//! The browser pages' files: the chat (`/`) and the operator dashboard (`/dashboard`). They
//! are built into the binary, so the server serves them from any working directory;
//! `--static-dir` serves a directory instead, for editing.

use actix_web::{HttpResponse, http::header::ContentType, web};

/// (URL path, content type, contents) of every embedded file.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../static/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../static/style.css"),
    ),
    (
        "/dashboard",
        "text/html; charset=utf-8",
        include_str!("../../static/dashboard.html"),
    ),
    (
        "/dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/dashboard.js"),
    ),
    (
        "/dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../../static/dashboard.css"),
    ),
];

/// Registers one route per embedded file.
pub fn embedded(cfg: &mut web::ServiceConfig) {
    for &(path, content_type, body) in FILES {
        cfg.route(
            path,
            web::get().to(move || async move {
                HttpResponse::Ok()
                    .insert_header(ContentType(content_type.parse().expect("valid mime")))
                    .insert_header(("cache-control", "no-cache"))
                    .body(body)
            }),
        );
    }
}
