//! A minimal HTTP/1.1 client over a plain `TcpStream`, for the few HTTP calls the tool makes
//! (`GET /health`, probing `/notifications/x`, `POST /send-notification/`): no HTTP client
//! crate is needed for that.
//!
//! [`HttpConn`] keeps one connection alive across requests (the notify scenario sends many
//! pushes). Responses are read by `Content-Length`, by chunked transfer coding, or to the end of
//! the connection; header and body sizes are bounded, and every call has a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest response body accepted.
const MAX_BODY: usize = 1 << 20;
/// Most header lines accepted.
const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    stream: BufReader<TcpStream>,
    host: String,
    /// False once the server said `Connection: close` or the body ran to the end.
    reusable: bool,
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr, host: &str) -> anyhow::Result<HttpConn> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        Ok(HttpConn {
            stream: BufReader::new(tcp),
            host: host.to_string(),
            reusable: true,
        })
    }

    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Sends one request and reads its response. `body` is `(content type, bytes)`.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> anyhow::Result<HttpResponse> {
        if !self.reusable {
            bail!("connection no longer usable");
        }
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: roomcast-loadtest\r\nAccept: */*\r\n",
            self.host
        );
        match body {
            Some((ctype, bytes)) => {
                head.push_str(&format!(
                    "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                ));
            }
            None if method == "POST" => head.push_str("Content-Length: 0\r\n\r\n"),
            None => head.push_str("\r\n"),
        }
        let out = self.stream.get_mut();
        out.write_all(head.as_bytes()).await?;
        if let Some((_, bytes)) = body {
            out.write_all(bytes).await?;
        }
        self.read_response(method == "HEAD").await
    }

    async fn read_response(&mut self, head_only: bool) -> anyhow::Result<HttpResponse> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            self.reusable = false;
            bail!("connection closed before the response");
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| anyhow!("bad status line {:?}", line.trim_end()))?;
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut headers = 0;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                self.reusable = false;
                bail!("connection closed inside the headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            headers += 1;
            if headers > MAX_HEADERS || line.len() > 8192 {
                bail!("response headers too large");
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(value.parse().context("bad Content-Length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                self.reusable = false;
            }
        }
        let mut body = Vec::new();
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
            // No body.
        } else if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let size_hex = line.trim_end().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size_hex.trim(), 16)
                    .with_context(|| format!("bad chunk size {size_hex:?}"))?;
                if body.len() + size > MAX_BODY {
                    bail!("response body too large");
                }
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        line.clear();
                        if self.stream.read_line(&mut line).await? == 0
                            || line.trim_end().is_empty()
                        {
                            break;
                        }
                    }
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.stream.read_exact(&mut body[start..]).await?;
                line.clear();
                self.stream.read_line(&mut line).await?;
            }
        } else if let Some(n) = content_length {
            if n > MAX_BODY {
                bail!("response body too large ({n} bytes)");
            }
            body.resize(n, 0);
            self.stream.read_exact(&mut body).await?;
        } else {
            self.reusable = false;
            (&mut self.stream)
                .take(MAX_BODY as u64)
                .read_to_end(&mut body)
                .await?;
        }
        Ok(HttpResponse { status, body })
    }
}

/// One request on a fresh connection, with a timeout on the whole exchange.
pub async fn request_once(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<HttpResponse> {
    tokio::time::timeout(timeout, async {
        let mut conn = HttpConn::connect(addr, host).await?;
        conn.request(method, path, None).await
    })
    .await
    .map_err(|_| anyhow!("{method} {path}: no answer within {timeout:?}"))?
}

/// The server's `/health` counts, when it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub connections: u64,
    pub users: u64,
    pub rooms: u64,
}

pub async fn health(addr: SocketAddr, host: &str, path: &str) -> Option<Health> {
    let resp = request_once(addr, host, "GET", path, Duration::from_secs(3))
        .await
        .ok()?;
    if resp.status != 200 {
        return None;
    }
    let v = resp.json()?;
    Some(Health {
        connections: v.get("connections")?.as_u64()?,
        users: v.get("users")?.as_u64()?,
        rooms: v.get("rooms")?.as_u64()?,
    })
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_escaped() {
        assert_eq!(super::query_escape("lt:1:2 x&y"), "lt%3A1%3A2%20x%26y");
    }
}
