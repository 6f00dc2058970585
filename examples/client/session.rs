//! The running client: one loop over the socket, stdin and Ctrl-C. Typed lines become frames
//! (through `State`), frames become printed lines (through `render`, and `State` for the
//! status of what was sent). Two ways to end besides `/quit` and Ctrl-C:
//!
//! - Piped input (stdin not a terminal): at its end (or at `/quit`), wait for the answers to
//!   everything sent (`State::waiting`), then close and exit: 0 when all of it was confirmed,
//!   1 naming what failed, or what got no answer within the timeout.
//! - `--send`: once the rooms are joined, send the texts, wait for their echoes, exit.
//!
//! Meanwhile the socket's token is refreshed before it lapses (`token.rs`): the fresh one is
//! fetched on a task of its own (a `--token-cmd` may take its time) and sent as `refresh`.
//!
//! Lines are read only once the rooms given with `--room` are joined (or refused) and their
//! history shown, so what a script prints follows the rooms' history, and a chat finds its
//! room.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::args::{Args, build_url, http_base};
use crate::command::parse_command;
use crate::connection::{CLOSE_TIMEOUT, Ws, close, connect, send_json};
use crate::pending::describe_line;
use crate::render::{describe_close_frame, render};
use crate::state::{State, Step};
use crate::terminal::{Screen, Tty, next_line, spawn_stdin_reader};
use crate::token::{self, Fresh};

/// `--timeout` with `--send`: the whole script's.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// `--timeout` for piped input: the wait at its end.
const PIPED_TIMEOUT: Duration = Duration::from_secs(5);

/// The `--send` script: its texts, then the `client_msg_id`s still waiting for their echo.
struct Script {
    texts: Vec<String>,
    awaiting: Option<HashSet<String>>,
}

enum Flow {
    Continue,
    /// End of input, or `/quit`: piped input waits for its answers first.
    EndOfInput,
    /// Close and exit 0.
    Quit,
    /// Close and exit 1 with this error.
    Fail(anyhow::Error),
}

struct Client {
    ws: Ws,
    state: State,
    screen: Screen,
    quiet_typing: bool,
    script: Option<Script>,
    /// Stdin is not a terminal: at its end, wait for the answers to what was sent.
    piped: bool,
    /// With piped input, the messages that failed, which make the exit status 1.
    failed: Vec<String>,
    /// The socket's token and when to refresh it.
    auth: token::Session,
    /// Fresh tokens, fetched on a task of their own.
    fresh_tx: mpsc::Sender<anyhow::Result<Fresh>>,
    fresh_rx: mpsc::Receiver<anyhow::Result<Fresh>>,
    /// A fresh token is being fetched.
    fetching: bool,
}

impl Client {
    async fn on_line(&mut self, line: &str) -> anyhow::Result<Flow> {
        match self.state.handle(parse_command(line)) {
            Step::Nothing => {}
            Step::Print(text) => {
                // A line refused here (too long, no room to send it to, a bad command): with
                // piped input it was not sent, which is a failure like a refused chat.
                if self.piped
                    && let Some(why) = text.strip_prefix("! ")
                {
                    self.failed.push(format!("{} ({why})", describe_line(line)));
                }
                self.screen.line(&text)
            }
            Step::Send { frames, echo } => {
                if let Some(echo) = echo {
                    self.screen.line(&echo);
                }
                for frame in &frames {
                    send_json(&mut self.ws, frame).await?;
                }
            }
            Step::Quit => return Ok(Flow::EndOfInput),
        }
        Ok(Flow::Continue)
    }

    async fn on_message(&mut self, message: Message) -> anyhow::Result<Flow> {
        match message {
            Message::Text(text) => self.on_text(text.as_str()).await,
            Message::Binary(bytes) => {
                self.screen
                    .line(&format!("<binary frame, {} bytes>", bytes.len()));
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
        let kind = frame.get("type").and_then(Value::as_str);
        if kind == Some("refreshed") {
            // The socket lives on with the fresh token: nothing to show.
            self.auth.refreshed(&frame);
            return Ok(Flow::Continue);
        }
        let refused_refresh = kind == Some("error")
            && frame
                .get("code")
                .and_then(Value::as_str)
                .is_some_and(|code| code.starts_with("token_"));
        if refused_refresh && self.auth.source.renews() {
            self.auth.retry_soon();
        }
        let seen = self.state.observe(&frame);
        for line in &seen.before {
            self.screen.line(line);
        }
        let hidden = seen.hide || (self.quiet_typing && kind == Some("typing"));
        if !hidden && let Some(line) = render(raw) {
            self.screen.line(&line);
        }
        if let Some(note) = seen.note {
            self.screen.line(&note);
        }
        if self.piped {
            self.failed.extend(seen.failed);
        }
        if self.script.is_some() && !refused_refresh {
            return self.advance_script(&frame, kind).await;
        }
        Ok(Flow::Continue)
    }

    /// Time to refresh the token: fetch a fresh one on a task of its own (or say, once, that
    /// a `--token` cannot be renewed).
    fn refresh_due(&mut self) -> Flow {
        if !self.auth.source.renews() {
            if let Some(line) = self.auth.cannot_renew() {
                self.screen.line(&line);
            }
            return Flow::Continue;
        }
        self.auth.refresh_at = None;
        self.fetching = true;
        let source = self.auth.source.clone();
        let tx = self.fresh_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(source.fetch().await).await;
        });
        Flow::Continue
    }

    /// A fresh token came (or could not be had): send it as `refresh`.
    async fn on_fresh(&mut self, fresh: Option<anyhow::Result<Fresh>>) -> anyhow::Result<Flow> {
        self.fetching = false;
        match fresh {
            Some(Ok(fresh)) => {
                let frame = self.auth.adopt(fresh);
                send_json(&mut self.ws, &frame).await?;
            }
            Some(Err(error)) => {
                self.screen
                    .line(&format!("! cannot get a fresh token: {error:#}"));
                self.auth.retry_soon();
            }
            None => {}
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

    /// With piped input ended: how it ends once nothing is waiting any more.
    fn verdict(&mut self) -> Flow {
        if self.failed.is_empty() {
            Flow::Quit
        } else {
            Flow::Fail(anyhow!("not sent: {}", self.failed.join("; ")))
        }
    }

    /// With piped input ended: how it ends when the answers did not all come in time.
    fn unanswered(&mut self, timeout: Duration) -> Flow {
        let mut error = format!(
            "no answer from the server within {} s for: {}",
            timeout.as_secs(),
            self.state.waiting().join("; ")
        );
        if !self.failed.is_empty() {
            error.push_str(&format!("; not sent: {}", self.failed.join("; ")));
        }
        Flow::Fail(anyhow!(error))
    }

    async fn run(
        &mut self,
        lines: Option<mpsc::Receiver<String>>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let result = self.run_loop(lines, timeout).await;
        self.screen.finish();
        result
    }

    async fn run_loop(
        &mut self,
        mut lines: Option<mpsc::Receiver<String>>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut ctrl_c_armed = true;
        let scripted = self.script.is_some();
        let script_deadline = tokio::time::sleep(timeout);
        tokio::pin!(script_deadline);
        // With piped input ended: when to stop waiting for answers.
        let mut draining: Option<Instant> = None;
        // Whether the rooms of `--room` are joined (or refused) and their history shown: lines
        // wait until then.
        let mut ready = !self.state.joining();
        // Piped input is not read before then, so its end cannot be seen: bound that wait too.
        let ready_deadline = Instant::now() + timeout;
        loop {
            if ready {
                self.screen.prompt(self.state.current.as_deref());
            }
            let flow = tokio::select! {
                incoming = self.ws.next() => match incoming {
                    Some(Ok(message)) => self.on_message(message).await.unwrap_or_else(Flow::Fail),
                    Some(Err(error)) => Flow::Fail(anyhow!("lost the connection: {error}")),
                    None => Flow::Fail(anyhow!(
                        "the server closed the connection without a close frame"
                    )),
                },
                line = next_line(&mut lines), if ready => match line {
                    Some(line) => {
                        self.screen.entered();
                        self.on_line(&line).await.unwrap_or_else(Flow::Fail)
                    }
                    None => Flow::EndOfInput,
                },
                result = &mut ctrl_c, if ctrl_c_armed => {
                    ctrl_c_armed = false;
                    match result {
                        Ok(()) if scripted => Flow::Fail(anyhow!("--send: interrupted")),
                        Ok(()) => Flow::Quit,
                        Err(error) => {
                            log::warn!("cannot listen for Ctrl-C: {error}");
                            Flow::Continue
                        }
                    }
                },
                () = &mut script_deadline, if scripted => {
                    Flow::Fail(anyhow!(
                        "--send: no echo for every message within {} s",
                        timeout.as_secs()
                    ))
                },
                () = tokio::time::sleep_until(draining.unwrap_or_else(Instant::now)),
                    if draining.is_some() => self.unanswered(timeout),
                () = tokio::time::sleep_until(ready_deadline), if self.piped && !ready => {
                    self.unanswered(timeout)
                },
                () = tokio::time::sleep_until(self.auth.refresh_at.unwrap_or_else(Instant::now)),
                    if self.auth.refresh_at.is_some() && !self.fetching => self.refresh_due(),
                fresh = self.fresh_rx.recv(), if self.fetching => self.on_fresh(fresh).await.unwrap_or_else(Flow::Fail),
            };
            ready = ready || !self.state.joining();
            let flow = match flow {
                Flow::EndOfInput if self.piped => {
                    // Stop reading; what was sent still has its answers coming.
                    lines = None;
                    draining.get_or_insert(Instant::now() + timeout);
                    Flow::Continue
                }
                Flow::EndOfInput => Flow::Quit,
                flow => flow,
            };
            let flow = match flow {
                Flow::Continue if draining.is_some() && self.state.waiting().is_empty() => {
                    self.verdict()
                }
                flow => flow,
            };
            match flow {
                Flow::Continue | Flow::EndOfInput => {}
                Flow::Quit => {
                    close(&mut self.ws).await;
                    return Ok(());
                }
                Flow::Fail(error) => {
                    close(&mut self.ws).await;
                    return Err(error);
                }
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
        token,
        token_cmd,
    } = args;
    let (fresh, source) = token::sign_in(token, token_cmd, http_base(&url), &user).await?;
    let auth = token::Session::new(fresh, source);
    let url = build_url(&url, &user, auth.token());
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
    let tty = Tty::detect();
    let scripted = script.is_some();
    let lines = (!scripted).then(spawn_stdin_reader);
    let default_timeout = if scripted {
        SCRIPT_TIMEOUT
    } else {
        PIPED_TIMEOUT
    };
    let (fresh_tx, fresh_rx) = mpsc::channel(1);
    let mut client = Client {
        ws,
        state,
        screen: Screen::new(!scripted && tty.stdin && tty.stdout),
        quiet_typing,
        script,
        piped: !scripted && !tty.stdin,
        failed: Vec::new(),
        auth,
        fresh_tx,
        fresh_rx,
        fetching: false,
    };
    let timeout = timeout.map_or(default_timeout, Duration::from_secs);
    client.run(lines, timeout).await
}
