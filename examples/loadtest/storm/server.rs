//! The server process the `storm` scenario owns: the command line after `--`, started before
//! the run, stopped with the chosen signal at each restart and started again with the same
//! command line (so the same `--bind` port and the same `--store` path), and stopped with
//! SIGTERM at the end.
//!
//! A start is complete when the server logs `listening on http://ADDR` (its stderr is read
//! for that line; everything it writes goes to `--server-log`). `ADDR`'s port must be
//! `--url`'s: a server on another port (or on port 0, which would move at each restart) is
//! refused. The child inherits the environment, with `RUST_LOG` extended so that the line
//! is logged (`roomcast=info`) when it names no `debug` or `trace` level.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// How a restart stops the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// SIGTERM: the server closes every socket with 1001, answers the chats it took, exits.
    Term,
    /// SIGKILL (kill -9): the process dies at once; only what its store committed survives.
    Kill,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Term => "SIGTERM",
            Stop::Kill => "SIGKILL",
        }
    }

    fn signal(self) -> libc::c_int {
        match self {
            Stop::Term => libc::SIGTERM,
            Stop::Kill => libc::SIGKILL,
        }
    }
}

/// A stop's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    /// From the signal to the process's exit.
    pub exit_secs: f64,
    /// How it ended: `exit 0`, `signal 9`...
    pub status: String,
    /// A graceful stop took longer than `--server-stop-timeout` and was killed.
    pub killed_after_timeout: bool,
}

pub struct OwnedServer {
    command: Vec<String>,
    port: u16,
    log: PathBuf,
    start_timeout: Duration,
    stop_timeout: Duration,
    child: Option<Child>,
}

impl OwnedServer {
    /// Starts `command` (the words after `--`); fails unless it logs `listening on` a
    /// loopback address (unless `allow_remote`) on `port` within `start_timeout`.
    pub async fn start(
        command: &[String],
        port: u16,
        log: PathBuf,
        start_timeout: Duration,
        stop_timeout: Duration,
    ) -> anyhow::Result<OwnedServer> {
        if command.is_empty() {
            bail!("storm needs the server's command line after `--`");
        }
        if let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&log, b"").with_context(|| format!("creating {}", log.display()))?;
        let mut server = OwnedServer {
            command: command.to_vec(),
            port,
            log,
            start_timeout,
            stop_timeout,
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// Starts the command and waits for its `listening on` line.
    pub async fn spawn(&mut self) -> anyhow::Result<SocketAddr> {
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match std::env::var("RUST_LOG") {
            Ok(v) if !(v.contains("debug") || v.contains("trace")) => {
                cmd.env("RUST_LOG", format!("{v},roomcast=info"));
            }
            _ => {}
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start the server {:?}", self.command[0]))?;
        let stderr = child.stderr.take().context("the server's stderr")?;
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(copy_log(stderr, self.log.clone(), ready_tx));
        self.child = Some(child);
        let addr = match tokio::time::timeout(self.start_timeout, ready_rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => bail!(
                "the server exited before it listened (its output: {})",
                self.log.display()
            ),
            Err(_) => bail!(
                "the server did not log `listening on` within {:?} (its output: {})",
                self.start_timeout,
                self.log.display()
            ),
        };
        if addr.port() != self.port {
            bail!(
                "the server listens on {addr}, not on --url's port {}: give it a fixed \
                 --bind on that port (it must come back on the same one)",
                self.port
            );
        }
        Ok(addr)
    }

    /// Sends `how` and waits for the process to exit; a graceful stop that outlasts
    /// `--server-stop-timeout` is killed.
    pub async fn stop(&mut self, how: Stop) -> anyhow::Result<Stopped> {
        let mut child = self.child.take().context("the server is not running")?;
        let started = Instant::now();
        if let Some(pid) = child.id() {
            let pid = libc::pid_t::try_from(pid).context("a pid")?;
            // SAFETY: a plain system call on our own child, not yet waited for, so the pid
            // cannot name another process.
            if unsafe { libc::kill(pid, how.signal()) } != 0 {
                bail!(
                    "cannot send {} to the server: {}",
                    how.name(),
                    std::io::Error::last_os_error()
                );
            }
        }
        let mut killed_after_timeout = false;
        let status = match tokio::time::timeout(self.stop_timeout, child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                killed_after_timeout = true;
                child.kill().await?;
                child.wait().await?
            }
        };
        let status = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "unknown".to_string(),
        };
        Ok(Stopped {
            exit_secs: started.elapsed().as_secs_f64(),
            status,
            killed_after_timeout,
        })
    }
}

/// Copies the server's stderr to `log`, reporting the first `listening on` address.
async fn copy_log(
    stderr: tokio::process::ChildStderr,
    log: PathBuf,
    ready: oneshot::Sender<SocketAddr>,
) {
    let mut ready = Some(ready);
    let mut out = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .await
        .ok();
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(addr) = listening_addr(&line)
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(addr);
        }
        if let Some(f) = out.as_mut() {
            let _ = f.write_all(line.as_bytes()).await;
            let _ = f.write_all(b"\n").await;
        }
    }
    if let Some(f) = out.as_mut() {
        let _ = f.flush().await;
    }
}

/// The address in roomcast's `listening on http://ADDR` log line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let rest = &rest[rest.find("://")? + 3..];
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        let line = "[2026-11-30T22:00:00Z INFO  roomcast] listening on http://127.0.0.1:9001";
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:9001".parse().unwrap())
        );
        assert_eq!(
            listening_addr("listening on https://[::1]:8443 now"),
            Some("[::1]:8443".parse().unwrap())
        );
        assert_eq!(listening_addr("browser chat: http://127.0.0.1:9001/"), None);
    }
}
