//! The terminal side: stdin read line by line on a task of its own, and lines printed on
//! stdout by [`Screen`], which keeps a prompt naming the current room (`[lobby]> `) on the
//! last line when a person is typing.
//!
//! The prompt is shown only when stdin and stdout are both terminals: piped input is a script,
//! and its output stays plain lines for the next program; with stdout redirected, a prompt
//! would only litter the file. A line from the server clears the prompt (`\r`, then ESC `[K`
//! to erase to the end of the line), prints, and the prompt comes back after it. The
//! terminal, not this program, holds what was typed so far (it is in line mode), so a line
//! arriving mid-typing hides the typed part from view; Enter still sends all of it.

use std::io::{IsTerminal as _, Write as _};

use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

/// Moves to the start of the line and erases it.
const CLEAR_LINE: &str = "\r\x1b[K";

/// How stdin and stdout are connected.
#[derive(Debug, Clone, Copy)]
pub struct Tty {
    /// Stdin is a terminal: a person types. Otherwise input is piped (a script).
    pub stdin: bool,
    /// Stdout is a terminal too: a prompt is shown.
    pub stdout: bool,
}

impl Tty {
    pub fn detect() -> Self {
        Tty {
            stdin: std::io::stdin().is_terminal(),
            stdout: std::io::stdout().is_terminal(),
        }
    }
}

/// Stdout, with the prompt when there is one.
#[derive(Debug)]
pub struct Screen {
    /// Whether to show a prompt at all.
    prompting: bool,
    /// The prompt now on the last line, if any.
    shown: Option<String>,
}

impl Screen {
    /// A screen that shows the prompt when `prompting` (see the top of this file for when).
    pub fn new(prompting: bool) -> Self {
        Screen {
            prompting,
            shown: None,
        }
    }

    /// Prints one line (clearing the prompt first). A closed stdout (e.g. `| head`) is not an
    /// error worth a panic.
    pub fn line(&mut self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let clear = if self.shown.take().is_some() {
            CLEAR_LINE
        } else {
            ""
        };
        let _ = writeln!(stdout, "{clear}{text}");
    }

    /// Shows the prompt for `room` (the current room) unless it is there already.
    pub fn prompt(&mut self, room: Option<&str>) {
        if !self.prompting {
            return;
        }
        let prompt = room.map_or_else(|| "> ".to_owned(), |room| format!("[{room}]> "));
        if self.shown.as_ref() == Some(&prompt) {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let clear = if self.shown.is_some() { CLEAR_LINE } else { "" };
        let _ = write!(stdout, "{clear}{prompt}");
        let _ = stdout.flush();
        self.shown = Some(prompt);
    }

    /// The user pressed Enter: the terminal moved to a fresh line, without the prompt.
    pub fn entered(&mut self) {
        self.shown = None;
    }

    /// Erases the prompt before the program ends.
    pub fn finish(&mut self) {
        if self.shown.take().is_some() {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "{CLEAR_LINE}");
            let _ = stdout.flush();
        }
    }
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
