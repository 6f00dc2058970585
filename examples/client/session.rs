//! The running client: one loop over the socket, stdin and Ctrl-C, turning typed lines into
//! frames (through `State`) and frames into printed lines (through `render`), plus the
//! `--send` script.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::args::{Args, build_url};
use crate::command::parse_command;
use crate::connection::{CLOSE_TIMEOUT, Ws, close, connect, send_json};
use crate::render::{describe_close_frame, render};
use crate::state::{State, Step};
use crate::terminal::{next_line, out, spawn_stdin_reader};

/// The `--send` script: its texts, then the `client_msg_id`s still waiting for their echo.
struct Script {
    texts: Vec<String>,
    awaiting: Option<HashSet<String>>,
}

enum Flow {
    Continue,
    Quit,
}

struct Client {
    ws: Ws,
    state: State,
    quiet_typing: bool,
    script: Option<Script>,
}

impl Client {
    async fn on_line(&mut self, line: &str) -> anyhow::Result<Flow> {
        match self.state.handle(parse_command(line)) {
            Step::Nothing => {}
            Step::Print(text) => out(&text),
            Step::Send { frame, echo } => {
                send_json(&mut self.ws, &frame).await?;
                if let Some(echo) = echo {
                    out(&echo);
                }
            }
            Step::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Continue)
    }

    async fn on_message(&mut self, message: Message) -> anyhow::Result<Flow> {
        match message {
            Message::Text(text) => self.on_text(text.as_str()).await,
            Message::Binary(bytes) => {
                out(&format!("<binary frame, {} bytes>", bytes.len()));
                Ok(Flow::Continue)
            }
            Message::Close(frame) => {
                let text = describe_close_frame(frame.as_ref());
                // Keep reading briefly so tungstenite sends and flushes its reply to the close.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Some(Ok(_)) = self.ws.next().await {}
                })
                .await;
                Err(anyhow!(text))
            }
            // tungstenite answers pings by itself; its pongs are flushed as we keep reading.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(Flow::Continue),
        }
    }

    async fn on_text(&mut self, raw: &str) -> anyhow::Result<Flow> {
        log::debug!("<- {raw}");
        let frame = serde_json::from_str::<Value>(raw).unwrap_or(Value::Null);
        let note = self.state.observe(&frame);
        let kind = frame.get("type").and_then(Value::as_str);
        let hidden = self.quiet_typing && kind == Some("typing");
        if !hidden && let Some(line) = render(raw) {
            out(&line);
        }
        if let Some(note) = note {
            out(&note);
        }
        if self.script.is_some() {
            return self.advance_script(&frame, kind).await;
        }
        Ok(Flow::Continue)
    }

    /// Moves the `--send` script on after a frame from the server: once every room is joined,
    /// send the texts; once all of them came back, quit.
    async fn advance_script(&mut self, frame: &Value, kind: Option<&str>) -> anyhow::Result<Flow> {
        let Some(script) = &mut self.script else {
            return Ok(Flow::Continue);
        };
        if kind == Some("error") {
            bail!("--send: the server answered with an error");
        }
        if let Some(awaiting) = &mut script.awaiting {
            let mine = kind == Some("chat")
                && frame.get("user_id").and_then(Value::as_str) == Some(self.state.user.as_str());
            if let Some(id) = frame
                .get("client_msg_id")
                .and_then(Value::as_str)
                .filter(|_| mine)
            {
                awaiting.remove(id);
            }
            return Ok(if awaiting.is_empty() {
                Flow::Quit
            } else {
                Flow::Continue
            });
        }
        if !self.state.pending_joins.is_empty() {
            return Ok(Flow::Continue);
        }
        let room = self
            .state
            .current
            .clone()
            .context("--send: not in any room")?;
        let mut awaiting = HashSet::new();
        for text in std::mem::take(&mut script.texts) {
            if let Some(error) = self.state.check_length(&text) {
                bail!("--send: {}", error.trim_start_matches("! "));
            }
            let (frame, id) = self.state.chat_frame(&room, &text);
            send_json(&mut self.ws, &frame).await?;
            awaiting.insert(id);
        }
        let flow = if awaiting.is_empty() {
            Flow::Quit
        } else {
            Flow::Continue
        };
        script.awaiting = Some(awaiting);
        Ok(flow)
    }

    async fn run(
        &mut self,
        mut lines: Option<mpsc::Receiver<String>>,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut ctrl_c_armed = true;
        let timeout = tokio::time::sleep(deadline);
        tokio::pin!(timeout);
        let scripted = self.script.is_some();
        loop {
            let flow = tokio::select! {
                incoming = self.ws.next() => match incoming {
                    Some(Ok(message)) => self.on_message(message).await?,
                    Some(Err(error)) => bail!("lost the connection: {error}"),
                    None => bail!("the server closed the connection without a close frame"),
                },
                line = next_line(&mut lines) => match line {
                    Some(line) => self.on_line(&line).await?,
                    None => Flow::Quit, // end of input
                },
                result = &mut ctrl_c, if ctrl_c_armed => {
                    ctrl_c_armed = false;
                    match result {
                        Ok(()) if scripted => bail!("--send: interrupted"),
                        Ok(()) => Flow::Quit,
                        Err(error) => {
                            log::warn!("cannot listen for Ctrl-C: {error}");
                            Flow::Continue
                        }
                    }
                },
                () = &mut timeout, if scripted => {
                    bail!("--send: no echo for every message within {} s", deadline.as_secs())
                },
            };
            if matches!(flow, Flow::Quit) {
                close(&mut self.ws).await;
                return Ok(());
            }
        }
    }
}

/// Connects, joins the rooms of `args`, and runs the client until it quits.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        user,
        rooms,
        url,
        quiet_typing,
        send,
        timeout,
    } = args;
    let url = build_url(&url, &user);
    let mut ws = connect(&url).await?;
    let mut state = State::new(&user);
    let mut seen = HashSet::new();
    for room in rooms.iter().filter(|room| seen.insert(room.as_str())) {
        let frame = state.request_join(room);
        send_json(&mut ws, &frame).await?;
    }
    // The last room given is the current one, even when it was also given earlier.
    state.current = rooms.last().cloned();

    let script = (!send.is_empty()).then_some(Script {
        texts: send,
        awaiting: None,
    });
    let lines = if script.is_some() {
        None
    } else {
        Some(spawn_stdin_reader())
    };
    let mut client = Client {
        ws,
        state,
        quiet_typing,
        script,
    };
    client.run(lines, Duration::from_secs(timeout)).await
}
