//! The load tool (`examples/loadtest/`) reports server figures only for the process that
//! listens on the port it loads.
//!
//! These tests run the built tool, `target/debug/examples/loadtest`. `cargo test --all-targets`
//! builds examples only as unit-test harnesses, and a test cannot run cargo itself (cargo
//! holds the build directory's lock while tests run), so `scripts/test` builds it first
//! (`cargo build --example loadtest`); a missing or out-of-date binary fails the tests with
//! that command. Every run is bounded by [`RUN_LIMIT`] ([`STORM_LIMIT`] for the storm).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::common::*;

/// The longest one run of the load tool may take here (its scenarios last a second).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The built load tool: `target/debug/examples/loadtest`, beside `target/debug/deps/it-…`;
/// fails when it is missing or older than the sources it is built from.
pub(crate) fn loadtest_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| {
            dir.join("examples")
                .join(format!("loadtest{}", std::env::consts::EXE_SUFFIX))
        })
        .expect("the test binary is in target/PROFILE/deps");
    let built = bin
        .metadata()
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "the load tool is not built ({} is missing): run `cargo build --example loadtest` \
             (scripts/test does)",
                bin.display()
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = ["examples/loadtest", "src", "Cargo.toml", "Cargo.lock"].map(|p| root.join(p));
    if let Some(newer) = sources.iter().find_map(|p| newer_file(p, built)) {
        panic!(
            "the load tool at {} is older than {}: run `cargo build --example loadtest`",
            bin.display(),
            newer.display()
        );
    }
    bin
}

/// A file at or under `path` modified after `than`, if any.
fn newer_file(path: &Path, than: SystemTime) -> Option<PathBuf> {
    if path.is_dir() {
        std::fs::read_dir(path)
            .ok()?
            .filter_map(Result::ok)
            .find_map(|entry| newer_file(&entry.path(), than))
    } else {
        let modified = path.metadata().and_then(|m| m.modified()).ok()?;
        (modified > than).then(|| path.to_path_buf())
    }
}

/// How a run of the load tool ended.
pub(crate) struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The longest the small reconnect storm may take: setup, two restarts, the drain.
const STORM_LIMIT: Duration = Duration::from_secs(180);

/// Runs the load tool with `args` until it exits, killing it after [`RUN_LIMIT`].
pub(crate) fn run_loadtest(args: &[&str]) -> Run {
    run_loadtest_within(args, RUN_LIMIT)
}

/// Runs the load tool with `args` until it exits, killing it after `limit`.
fn run_loadtest_within(args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(loadtest_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the load tool");
    // Read both pipes while it runs, so it never blocks on a full one.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the load tool") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadtest {args:?} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A process that listens on nothing (`sleep`), stopped when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn spawn() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        )
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A one-second fan-out against `url` with `--server-pid pid`, its reports in `dir`.
fn fanout_args(url: &str, pid: u32, dir: &std::path::Path) -> Vec<String> {
    let pid = pid.to_string();
    let json = dir.join("fanout.json");
    let html = dir.join("fanout.html");
    let path = |p: &std::path::Path| p.to_str().expect("a UTF-8 temp path").to_owned();
    let (json, html) = (path(&json), path(&html));
    [
        "--url",
        url,
        "--server-pid",
        pid.as_str(),
        "--quiet",
        "--json",
        json.as_str(),
        "--html",
        html.as_str(),
        "--setup-timeout",
        "20",
        "--drain",
        "2",
        "fanout",
        "--clients",
        "4",
        "--senders",
        "1",
        "--duration",
        "1",
        "--warmup",
        "0",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn a_server_pid_that_does_not_listen_on_the_port_is_refused() {
    let srv = TestServer::start();
    let sleeper = Sleeper::spawn();
    let dir = temp_dir("loadtool-refused");
    let args = fanout_args(&srv.url(""), sleeper.0.id(), &dir);
    let run = run_loadtest(&args.iter().map(String::as_str).collect::<Vec<_>>());

    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    let refusal = format!(
        "--server-pid {} (sleep) does not listen on {}",
        sleeper.0.id(),
        srv.addr
    );
    assert!(run.stderr.contains(&refusal), "stderr: {}", run.stderr);
    // The server runs in this test's process, and the message names it.
    let listener = format!("; pid {} (", std::process::id());
    assert!(run.stderr.contains(&listener), "stderr: {}", run.stderr);
    // No figures: no summary, no reports.
    assert_eq!(run.stdout, "");
    assert!(!dir.join("fanout.json").exists());
    assert!(!dir.join("fanout.html").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_server_pid_that_listens_is_measured() {
    let srv = ChildServer::spawn(&["--rate-per-sec", "0"]);
    let pid = srv.child.id();
    let dir = temp_dir("loadtool-measured");
    let args = fanout_args(&srv.url(""), pid, &dir);
    let run = run_loadtest(&args.iter().map(String::as_str).collect::<Vec<_>>());

    assert_eq!(
        run.code,
        Some(0),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("PASS"), "{}", run.stdout);
    let json = std::fs::read_to_string(dir.join("fanout.json")).expect("the JSON report");
    let report: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(report["passed"], true);
    assert_eq!(report["server"]["pid"], pid);
    assert_eq!(report["server"]["name"], "roomcast");
    let html = std::fs::read_to_string(dir.join("fanout.html")).expect("the HTML report");
    assert!(html.contains("<svg"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A port nothing listens on now: the storm's server must come back on the same one, so it
/// cannot bind port 0.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn a_small_reconnect_storm_recovers_every_client_exactly() {
    let dir = temp_dir("loadtool-storm");
    let port = free_port();
    let path = |name: &str| {
        dir.join(name)
            .to_str()
            .expect("a UTF-8 temp path")
            .to_owned()
    };
    let (json, html, log) = (path("storm.json"), path("storm.html"), path("server.log"));
    let store = format!("sqlite:{}", path("roomcast.db"));
    let (url, bind) = (
        format!("ws://127.0.0.1:{port}"),
        format!("127.0.0.1:{port}"),
    );
    let args = [
        "--url",
        &url,
        "--quiet",
        "--json",
        &json,
        "--html",
        &html,
        "--setup-timeout",
        "60",
        "--drain",
        "20",
        "storm",
        "--clients",
        "200",
        "--rooms",
        "20",
        "--rate",
        "2",
        "--warmup",
        "1",
        "--restart-every",
        "1",
        "--restarts",
        "term,kill",
        "--recover-timeout",
        "60",
        "--server-log",
        &log,
        "--",
        env!("CARGO_BIN_EXE_roomcast"),
        "--bind",
        &bind,
        "--store",
        &store,
    ];
    let run = run_loadtest_within(&args, STORM_LIMIT);

    let shown = format!("stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(0), "{shown}");
    let text = std::fs::read_to_string(&json).expect("the JSON report");
    let report: Value = serde_json::from_str(&text).expect("JSON");
    let storm = &report["storm"];
    for (field, want) in [
        ("set_up", 200),
        ("recovered_exactly", 200),
        ("clients_recovered_false", 0),
        ("rejoins_not_recovered", 0),
        ("lost", 0),
        ("duplicated", 0),
        ("posted_twice", 0),
        ("acked_missing", 0),
        ("ack_conflicts", 0),
        ("chats_unacked", 0),
    ] {
        assert_eq!(storm[field], want, "{field}: {shown}");
    }
    // Each client rejoined its room once per restart, recovered.
    assert_eq!(storm["rejoins_recovered"], 400, "{shown}");
    assert!(storm["chats_acked"].as_u64() > Some(0), "{shown}");
    let restarts = storm["restarts"].as_array().expect("restarts");
    let signals: Vec<&Value> = restarts.iter().map(|r| &r["signal"]).collect();
    assert_eq!(signals, ["SIGTERM", "SIGKILL"], "{shown}");
    for r in restarts {
        assert_eq!(r["expected"], 200, "{shown}");
        assert_eq!(r["back"], 200, "{shown}");
        assert!(r["all_back_secs"].is_number(), "{shown}");
    }
    assert_eq!(restarts[0]["server_status"], "exit 0", "{shown}");
    assert_eq!(restarts[1]["server_status"], "signal 9", "{shown}");
    // Every rejoin after a restart finds its room's window empty: the store is read.
    let reads: u64 = report["timeline"]["per_second"]
        .as_array()
        .expect("the reads per second")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert!(reads > 0, "{shown}");
    assert!(run.stdout.contains("PASS"), "{shown}");
    let _ = std::fs::remove_dir_all(dir);
}
