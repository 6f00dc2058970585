//! The browser-test harness: chromedriver started by the test itself, one headless Chromium
//! per test (several windows when a test needs several people), the server in-process on
//! 127.0.0.1, bounded waits on the DOM, and artifacts (screenshot, console log, page HTML) of
//! every window when a test fails.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::wd::{Capabilities, WindowHandle};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use roomcast::Config;
use serde_json::{Value, json};

use crate::common::{TIMEOUT, TestServer};

/// Debian's paths; `ROOMCAST_TEST_CHROMIUM` / `ROOMCAST_TEST_CHROMEDRIVER` point elsewhere.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn chromium() -> String {
    std::env::var("ROOMCAST_TEST_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned())
}

fn chromedriver() -> String {
    std::env::var("ROOMCAST_TEST_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.to_owned())
}

/// How long a whole test may take; every wait inside is bounded by `TIMEOUT` as well.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);
/// How often a wait looks at the DOM again.
const POLL: Duration = Duration::from_millis(50);

pub const ENTER: &str = "\u{e007}";
pub const TAB: &str = "\u{e004}";
pub const BACKSPACE: &str = "\u{e003}";
pub const ESCAPE: &str = "\u{e00c}";

/// Chromium on 2 cores is slow to start and the tests share one machine: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs one browser test: starts chromedriver and a browser, runs `body`, and on failure
/// (a panic, or the whole test taking longer than `TEST_TIMEOUT`) saves every window's
/// screenshot, console log and HTML under `target/browser-artifacts/<name>/` before failing.
pub fn browser_test<F, Fut>(name: &'static str, body: F)
where
    F: FnOnce(Browser) -> Fut,
    Fut: Future<Output = ()>,
{
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let driver = Driver::start();
        let browser = Browser::open(&driver, name).await;
        let outcome = AssertUnwindSafe(tokio::time::timeout(TEST_TIMEOUT, body(browser.clone())))
            .catch_unwind()
            .await;
        let failure = match outcome {
            Ok(Ok(())) => match browser.uncaught_errors().await {
                errors if errors.is_empty() => None,
                errors => Some(
                    Box::new(format!("the page had uncaught errors: {errors:#?}"))
                        as Box<dyn std::any::Any + Send>,
                ),
            },
            Ok(Err(_)) => Some(
                Box::new(format!("the test took longer than {TEST_TIMEOUT:?}"))
                    as Box<dyn std::any::Any + Send>,
            ),
            Err(panic) => Some(panic),
        };
        if let Some(panic) = failure {
            browser.save_artifacts(name).await;
            browser.close().await;
            drop(driver);
            std::panic::resume_unwind(panic);
        }
        browser.close().await;
        // A pass clears what an earlier failure of this test left, so none of it misleads.
        let _ = std::fs::remove_dir_all(artifacts_dir(name));
    });
}

fn artifacts_dir(test: &str) -> PathBuf {
    target_dir().join("browser-artifacts").join(test)
}

/// Fails, saying how to get them, when chromium or chromedriver is missing. Never skips.
fn require_browser() {
    let missing: Vec<String> = [chromium(), chromedriver()]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    if missing.is_empty() {
        return;
    }
    let how = "run `scripts/test` from the repository root: it installs Debian's chromium \
               and chromium-driver with apt when they are missing, then runs every test \
               (extra arguments go to cargo test, e.g. `scripts/test --test browser`); or \
               point ROOMCAST_TEST_CHROMIUM / ROOMCAST_TEST_CHROMEDRIVER at another \
               matching pair";
    if std::env::var_os("CI").is_some() {
        panic!("CI: the browser tests need {missing:?}, which are missing; {how}");
    }
    panic!("the browser tests need {missing:?}, which are missing; {how}");
}

/// chromedriver on a free port, in a process group of its own so that dropping it also ends
/// any Chromium it started.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Driver {
    pub fn start() -> Driver {
        require_browser();
        let mut child = Command::new(chromedriver())
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // "ChromeDriver was started successfully on port 40123."
                if let Some(port) = line.split("successfully on port ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port.trim_end_matches('.').trim().to_owned());
                }
            }
        });
        let port: u16 = match rx.recv_timeout(TIMEOUT) {
            Ok(port) => port.parse().expect("chromedriver printed a port number"),
            Err(_) => {
                let _ = child.kill();
                panic!("{} did not say which port it listens on", chromedriver());
            }
        };
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and whatever browser it still runs.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscall on a process group this test created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

static PROFILE_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp, which honours CARGO_TARGET_DIR.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .to_path_buf()
}

/// One Chromium (one WebDriver session). Windows of it are [`Page`]s.
#[derive(Clone)]
pub struct Browser {
    client: Client,
    /// chromedriver's address, for the commands fantoccini has no method for.
    driver_url: String,
    profile: PathBuf,
    pages: Arc<Mutex<Vec<(String, WindowHandle)>>>,
}

impl Browser {
    async fn open(driver: &Driver, test: &str) -> Browser {
        let n = PROFILE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let profile = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("browser-profiles")
            .join(format!("{test}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("create the profile directory");
        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium(),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    // Several windows talk at once; none may be throttled as "in the background".
                    "--disable-background-timer-throttling",
                    "--disable-backgrounding-occluded-windows",
                    "--disable-renderer-backgrounding",
                    "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            TIMEOUT * 4,
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&driver.url),
        )
        .await
        .expect("Chromium started in time")
        .unwrap_or_else(|e| panic!("cannot start Chromium through chromedriver: {e}"));
        Browser {
            client,
            driver_url: driver.url.clone(),
            profile,
            pages: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A window showing `url`, labelled `label` in artifacts. The first call uses the window
    /// the browser opened with; later calls open new windows.
    pub async fn page(&self, label: &str, url: &str) -> Page {
        let page = self.window(label).await;
        page.goto(url).await;
        page
    }

    /// Like [`Browser::page`], but `script` runs in the window before the page's own scripts,
    /// on this and every later load (see [`Page::add_init_script`]).
    pub async fn page_with_init_script(&self, label: &str, script: &str, url: &str) -> Page {
        let page = self.window(label).await;
        page.add_init_script(script).await;
        page.goto(url).await;
        page
    }

    async fn window(&self, label: &str) -> Page {
        let first = self.pages.lock().unwrap().is_empty();
        let handle = if first {
            self.client.window().await.expect("the first window")
        } else {
            self.client
                .new_window(false)
                .await
                .expect("open a window")
                .handle
        };
        self.pages
            .lock()
            .unwrap()
            .push((label.to_owned(), handle.clone()));
        Page {
            client: self.client.clone(),
            driver_url: self.driver_url.clone(),
            handle,
            label: label.to_owned(),
        }
    }

    async fn uncaught_errors(&self) -> Vec<String> {
        let pages = self.pages.lock().unwrap().clone();
        let mut errors = Vec::new();
        for (label, handle) in pages {
            if self.client.switch_to_window(handle).await.is_err() {
                continue;
            }
            if let Ok(Value::Array(lines)) = self
                .client
                .execute("return window.__log || [];", vec![])
                .await
            {
                errors.extend(
                    lines
                        .iter()
                        .filter_map(Value::as_str)
                        .filter(|l| {
                            l.starts_with("[uncaught]") || l.starts_with("[unhandledrejection]")
                        })
                        .map(|l| format!("{label}: {l}")),
                );
            }
        }
        errors
    }

    /// Screenshot, console log and HTML of every window, into
    /// `target/browser-artifacts/<test>/`; prints each path to stderr.
    async fn save_artifacts(&self, test: &str) {
        let dir = artifacts_dir(test);
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("cannot create {}: {e}", dir.display());
            return;
        }
        let pages = self.pages.lock().unwrap().clone();
        for (label, handle) in pages {
            let c = &self.client;
            if let Err(e) = c.switch_to_window(handle).await {
                eprintln!("browser artifacts: window {label} is gone: {e}");
                continue;
            }
            let png = dir.join(format!("{label}.png"));
            match c.screenshot().await {
                Ok(bytes) => write_artifact(&png, &bytes),
                Err(e) => eprintln!("browser artifacts: no screenshot of {label}: {e}"),
            }
            let log = c
                .execute(
                    "return (window.__log || ['(no console hook in this page)']).join('\\n');",
                    vec![],
                )
                .await
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .unwrap_or_else(|e| format!("(cannot read the console log: {e})"));
            write_artifact(&dir.join(format!("{label}.console.log")), log.as_bytes());
            if let Ok(html) = c.source().await {
                write_artifact(&dir.join(format!("{label}.html")), html.as_bytes());
            }
        }
    }

    async fn close(self) {
        let _ = tokio::time::timeout(TIMEOUT, self.client.clone().close()).await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn write_artifact(path: &Path, bytes: &[u8]) {
    match std::fs::write(path, bytes) {
        Ok(()) => eprintln!("browser artifact: {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

/// Records console output and uncaught errors in `window.__log`, for the failure artifacts.
const LOG_HOOK: &str = r#"
if (!window.__log) {
  window.__log = [];
  const fmt = (a) => { try { return typeof a === 'string' ? a : JSON.stringify(a); } catch { return String(a); } };
  for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
    const orig = console[level].bind(console);
    console[level] = (...args) => { window.__log.push(`[${level}] ${args.map(fmt).join(' ')}`); orig(...args); };
  }
  window.addEventListener('error', (e) => window.__log.push(`[uncaught] ${e.message} at ${e.filename}:${e.lineno}`));
  window.addEventListener('unhandledrejection', (e) => window.__log.push(`[unhandledrejection] ${e.reason}`));
}
"#;

/// One browser window. Every call first makes this window the current one.
pub struct Page {
    client: Client,
    driver_url: String,
    handle: WindowHandle,
    pub label: String,
}

impl Page {
    async fn focus(&self) {
        self.client
            .switch_to_window(self.handle.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: switch window: {e}", self.label));
    }

    pub async fn goto(&self, url: &str) {
        self.focus().await;
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("{}: open {url}: {e}", self.label));
        self.client
            .execute(LOG_HOOK, vec![])
            .await
            .expect("install the console hook");
    }

    /// Makes `script` run in this window before the page's own scripts, on every document
    /// loaded from now on (so it survives a reload): a fake a test installs before the page
    /// starts. DevTools' `Page.addScriptToEvaluateOnNewDocument`, through chromedriver's
    /// `goog/cdp/execute` (a command fantoccini has no method for).
    pub async fn add_init_script(&self, script: &str) {
        self.focus().await;
        let session = self
            .client
            .session_id()
            .await
            .expect("the WebDriver session id")
            .expect("a WebDriver session");
        let url = format!("{}/session/{session}/goog/cdp/execute", self.driver_url);
        let body = json!({
            "cmd": "Page.addScriptToEvaluateOnNewDocument",
            "params": {"source": script},
        });
        let response = tokio::time::timeout(
            TIMEOUT,
            reqwest::Client::new().post(&url).json(&body).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: chromedriver did not answer {url}", self.label))
        .unwrap_or_else(|e| panic!("{}: {url}: {e}", self.label));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{}: {url}: {status} {text}",
            self.label
        );
    }

    /// Reloads the page, as the browser's reload button would.
    pub async fn reload(&self) {
        self.focus().await;
        self.client
            .refresh()
            .await
            .unwrap_or_else(|e| panic!("{}: reload: {e}", self.label));
        self.client
            .execute(LOG_HOOK, vec![])
            .await
            .expect("install the console hook");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.focus().await;
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("{}: script failed: {e}\n{script}", self.label))
    }

    /// Polls `script` until `done(result)`; returns that result. Fails after `TIMEOUT`,
    /// naming `what` and the last result.
    pub async fn wait_for(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let v = self.js(script, args.clone()).await;
            if done(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: timed out waiting for {what}; last seen: {v}",
                self.label
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `script` returns exactly `want`.
    pub async fn wait_eq(&self, what: &str, script: &str, args: Vec<Value>, want: Value) {
        self.wait_for(what, script, args, |v| *v == want).await;
    }

    /// Types `keys` into the element `css` (clicking nothing: WebDriver focuses it).
    pub async fn type_into(&self, css: &str, keys: &str) {
        self.focus().await;
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.label));
        el.send_keys(keys)
            .await
            .unwrap_or_else(|e| panic!("{}: type into {css}: {e}", self.label));
    }

    /// Types into whatever has the focus, as a keyboard would.
    pub async fn keys(&self, keys: &str) {
        self.focus().await;
        let el = self
            .client
            .active_element()
            .await
            .unwrap_or_else(|e| panic!("{}: no focused element: {e}", self.label));
        el.send_keys(keys)
            .await
            .unwrap_or_else(|e| panic!("{}: keys: {e}", self.label));
    }

    /// Presses and releases one key (e.g. [`TAB`]) wherever the focus is, as a person would.
    pub async fn press(&self, key: &str) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let value = key.chars().next().expect("a key");
        self.focus().await;
        let actions = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value })
            .then(KeyAction::Up { value });
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("{}: press {key:?}: {e}", self.label));
    }

    /// Presses Tab until the element with id `id` has the focus; fails if it never does.
    pub async fn tab_to(&self, id: &str) {
        for _ in 0..40 {
            let active = self
                .js(
                    "return document.activeElement ? document.activeElement.id : '';",
                    vec![],
                )
                .await;
            if active == json!(id) {
                return;
            }
            self.press(TAB).await;
        }
        panic!("{}: Tab never reached #{id}", self.label);
    }

    pub async fn clear(&self, css: &str) {
        self.focus().await;
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.label));
        el.clear()
            .await
            .unwrap_or_else(|e| panic!("{}: clear {css}: {e}", self.label));
    }

    pub async fn click(&self, css: &str) {
        self.focus().await;
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.label));
        el.click()
            .await
            .unwrap_or_else(|e| panic!("{}: click {css}: {e}", self.label));
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.focus().await;
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize the window");
    }

    /// The text of `css` (textContent, "" when absent).
    pub async fn text(&self, css: &str) -> String {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
                vec![json!(css)],
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    // ---- the chat page ----

    /// Picks `name` and connects; waits for "connected".
    pub async fn connect_as(&self, name: &str) {
        // The field starts with the name last used in this browser profile (localStorage).
        self.clear("#name-input").await;
        self.type_into("#name-input", &format!("{name}{ENTER}"))
            .await;
        self.wait_conn("connected").await;
    }

    /// Waits until the connection state reads `state`.
    pub async fn wait_conn(&self, state: &str) {
        self.wait_eq(
            &format!("connection state {state:?}"),
            "const e = document.getElementById('conn-state'); return [e.textContent, e.dataset.state];",
            vec![],
            json!([state, state]),
        )
        .await;
    }

    /// Joins (or creates) `room` with the join form; waits until it is joined and current.
    pub async fn join(&self, room: &str) {
        self.type_into("#room-input", &format!("{room}{ENTER}"))
            .await;
        self.wait_room_joined(room).await;
        self.wait_eq(
            &format!("{room} to be the current room"),
            "return document.getElementById('room-title').textContent;",
            vec![],
            json!(format!("# {room}")),
        )
        .await;
    }

    pub async fn wait_room_joined(&self, room: &str) {
        self.wait_eq(
            &format!("room {room} joined"),
            "const li = document.querySelector(`#room-list li[data-room=\"${arguments[0]}\"]`);
             return !!li && li.classList.contains('joined');",
            vec![json!(room)],
            json!(true),
        )
        .await;
    }

    /// Sends `text` to the current room with the keyboard (Enter).
    pub async fn say(&self, text: &str) {
        self.type_into("#message-input", &format!("{text}{ENTER}"))
            .await;
    }

    /// The chat messages shown (seq, user, text) in page order; pending ones without a seq
    /// have seq null.
    pub async fn messages(&self) -> Value {
        self.js(&format!("{MESSAGES_FN} return messages();"), vec![])
            .await
    }

    /// Waits until the shown messages, as (user, text) pairs in order, are `want`, and all of
    /// them have a seq (the server echoed them). Returns the full list.
    pub async fn wait_messages(&self, want: &[(&str, &str)]) -> Value {
        let want: Vec<Value> = want.iter().map(|(u, t)| json!([u, t])).collect();
        let script = format!(
            "{MESSAGES_FN} return messages().filter((m) => m.seq !== null).map((m) => [m.user, m.text]);"
        );
        let want = Value::Array(want);
        self.wait_for("the messages shown", &script, vec![], |v| *v == want)
            .await;
        // Nothing still waiting for its echo, either.
        let all = self.messages().await;
        assert!(
            all.as_array().unwrap().iter().all(|m| m["seq"].is_u64()),
            "{}: messages without a seq remain: {all}",
            self.label
        );
        all
    }

    /// The members listed for the current room.
    pub async fn wait_members(&self, want: &[&str]) {
        self.wait_eq(
            &format!("members {want:?}"),
            "return [...document.querySelectorAll('#members li')].map((li) => li.dataset.user);",
            vec![],
            json!(want),
        )
        .await;
    }
}

const MESSAGES_FN: &str = r#"
function messages() {
  return [...document.querySelectorAll('#messages li.msg')].map((li) => ({
    seq: li.dataset.seq === undefined ? null : Number(li.dataset.seq),
    user: li.dataset.user,
    text: li.querySelector('.text').textContent,
    classes: [...li.classList].sort(),
    cid: li.dataset.clientMsgId || null,
  }));
}
"#;

/// The server in this process (the integration tests' [`TestServer`]), restartable on the
/// same port with the same config (what a page open across a server restart needs).
pub struct Server {
    pub addr: SocketAddr,
    config: Config,
    running: Option<TestServer>,
}

impl Server {
    pub fn start() -> Server {
        Server::with_config(Config::for_tests())
    }

    pub fn with_config(mut config: Config) -> Server {
        config.shutdown_timeout = 1;
        let running = TestServer::with_config(config.clone());
        Server {
            addr: running.addr,
            config,
            running: Some(running),
        }
    }

    /// The page's URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    fn running(&self) -> &TestServer {
        self.running.as_ref().expect("the server is running")
    }

    /// The value of `series` in the server's `/metrics` now (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        self.running().metric(series).await
    }

    /// The counts `/health` reports.
    pub async fn health(&self) -> Value {
        self.running().health().await
    }

    /// Shuts the server down (sockets closed with 1001) and waits until it has stopped.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop_blocking();
        }
    }

    /// Starts again, with the same config, on the same port.
    pub fn start_again(&mut self) {
        assert!(self.running.is_none(), "stop the server first");
        let mut config = self.config.clone();
        config.bind = self.addr;
        let running = TestServer::with_config(config);
        assert_eq!(running.addr, self.addr);
        self.running = Some(running);
    }
}
