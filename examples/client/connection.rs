//! The WebSocket connection: opening it (with a timeout, and HTTP refusals explained), sending
//! a JSON frame, and the closing handshake.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::args::redact;
use crate::render::field;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait for the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the server's side of the closing handshake.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the connection to `url` failed, in words. The URL is shown with its token hidden.
fn describe_connect_error(url: &str, error: tungstenite::Error) -> anyhow::Error {
    let url = redact(url);
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let error = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice::<Value>(body).ok())
                .and_then(|body| body.get("error").cloned());
            let mut text = format!("the server refused the connection to {url}: HTTP {status}");
            if let Some(error) = &error {
                text.push_str(&format!(
                    ": {}: {}",
                    field(error, "code"),
                    field(error, "message")
                ));
                if error.get("code").and_then(Value::as_str) == Some("token_missing") {
                    text.push_str(" (give --token TOKEN or --token-cmd CMD)");
                }
            } else if status.as_u16() == 503 {
                text.push_str(" (the server is full or shutting down)");
            }
            anyhow!(text)
        }
        error => anyhow!("cannot connect to {url}: {error}"),
    }
}

pub async fn connect(url: &str) -> anyhow::Result<Ws> {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url)).await {
        Err(_) => bail!(
            "cannot connect to {}: no answer within {} s",
            redact(url),
            CONNECT_TIMEOUT.as_secs()
        ),
        Ok(Err(error)) => Err(describe_connect_error(url, error)),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

pub async fn send_json(ws: &mut Ws, frame: &Value) -> anyhow::Result<()> {
    if frame.get("type").and_then(Value::as_str) == Some("refresh") {
        log::debug!("-> refresh (token not shown)");
    } else {
        log::debug!("-> {frame}");
    }
    ws.send(Message::text(frame.to_string()))
        .await
        .context("lost the connection while sending")
}

/// Starts the close handshake with 1000 and waits (briefly) for the server's answer.
pub async fn close(ws: &mut Ws) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    if ws.close(Some(frame)).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(message)) = ws.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
