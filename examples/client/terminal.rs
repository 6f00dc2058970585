//! The terminal side: stdin read line by line on a task of its own, and lines printed on
//! stdout.

use std::io::Write as _;

use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

/// Prints one line on stdout; a closed stdout (e.g. `| head`) is not an error worth a panic.
pub fn out(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Reads stdin line by line on its own task. The channel closes at end of input.
pub fn spawn_stdin_reader() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf).await {
                Ok(0) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_owned();
                    if tx.send(line).await.is_err() {
                        break;
                    }
                }
                Err(error) => {
                    log::warn!("cannot read stdin: {error}");
                    break;
                }
            }
        }
    });
    rx
}

pub async fn next_line(lines: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match lines {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
