//! Who the client is: the token its socket carries (`?token=`), where it comes from, and when
//! to get a fresh one.
//!
//! - `--token TOKEN` (env `ROOMCAST_TOKEN`): used as given.
//! - `--token-cmd CMD`: `sh -c CMD` prints a token on stdout (its first line); run at start
//!   when there is no `--token`, and again for every refresh.
//! - Neither: `POST /api/dev-token` for `--user` (a development server makes one), and again
//!   for every refresh. A server that answers 404 (a server from before tokens; a server that
//!   checks real tokens refuses the socket next, with a hint), or that will not mint for this
//!   client (401, 403), gets `?user_id=USER` alone, as development mode allows.
//!
//! A token is refreshed at 80% of its lifetime (`exp - iat`, or `exp` minus when it came): the
//! fresh one goes out as `{"type": "refresh", "token": ..}`, and `refreshed` schedules the
//! next. A `--token` without `--token-cmd` cannot be refreshed: the client says so then, and
//! the server closes the socket with 4004 when it lapses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Refresh at this fraction of a token's lifetime.
const REFRESH_AT: f64 = 0.8;
/// How long `--token-cmd` and `POST /api/dev-token` may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Where fresh tokens come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `--token` alone: none.
    Given,
    /// `--token-cmd CMD`.
    Command(String),
    /// `POST {http_base}/api/dev-token` for `user`.
    Dev { http_base: String, user: String },
    /// No token at all: the socket names its user (development mode).
    Named,
}

/// A token and what the client read from it (not verified: only the server can).
#[derive(Debug, Clone)]
pub struct Fresh {
    pub token: String,
    /// Its `exp` (Unix seconds), when it has one.
    exp: Option<u64>,
    /// Its `iat`, when it has one.
    iat: Option<u64>,
    /// When the client got it (Unix seconds).
    received: f64,
}

impl Fresh {
    fn new(token: String, exp: Option<u64>) -> Fresh {
        let claims: Option<Value> =
            jsonwebtoken::dangerous::insecure_decode_claims(token.as_bytes()).ok();
        let claim = |name| claims.as_ref().and_then(|c| c.get(name)?.as_u64());
        Fresh {
            exp: exp.or_else(|| claim("exp")),
            iat: claim("iat"),
            token,
            received: unix_now(),
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Why `POST /api/dev-token` gave no token.
enum MintError {
    /// 401, 403, 404: this server does not make development tokens for this client.
    NotHere(u16),
    Failed(anyhow::Error),
}

impl Source {
    /// A fresh token from this source.
    pub async fn fetch(&self) -> anyhow::Result<Fresh> {
        match self {
            Source::Given => bail!("--token cannot be renewed: give --token-cmd CMD to refresh it"),
            Source::Named => bail!("no token to refresh"),
            Source::Command(cmd) => run_command(cmd).await,
            Source::Dev { http_base, user } => match mint(http_base, user).await {
                Ok(fresh) => Ok(fresh),
                Err(MintError::NotHere(status)) => {
                    bail!("the server no longer makes development tokens (HTTP {status})")
                }
                Err(MintError::Failed(error)) => Err(error),
            },
        }
    }

    /// Whether a fresh token can be had at all.
    pub fn renews(&self) -> bool {
        matches!(self, Source::Command(_) | Source::Dev { .. })
    }
}

/// The token to connect with, and where fresh ones come from.
pub async fn sign_in(
    token: Option<String>,
    token_cmd: Option<String>,
    http_base: String,
    user: &str,
) -> anyhow::Result<(Option<Fresh>, Source)> {
    if let Some(token) = token {
        let source = token_cmd.map_or(Source::Given, Source::Command);
        return Ok((Some(Fresh::new(token.trim().to_owned(), None)), source));
    }
    if let Some(cmd) = token_cmd {
        let fresh = run_command(&cmd).await?;
        return Ok((Some(fresh), Source::Command(cmd)));
    }
    match mint(&http_base, user).await {
        Ok(fresh) => Ok((
            Some(fresh),
            Source::Dev {
                http_base,
                user: user.to_owned(),
            },
        )),
        Err(MintError::NotHere(status)) => {
            log::info!("no development token (HTTP {status}): connecting by name");
            Ok((None, Source::Named))
        }
        Err(MintError::Failed(error)) => {
            // Most likely nobody listens there: connecting says so in its own words.
            log::info!("no development token ({error:#}): connecting by name");
            Ok((None, Source::Named))
        }
    }
}

/// `POST {http_base}/api/dev-token` for `user`.
async fn mint(http_base: &str, user: &str) -> Result<Fresh, MintError> {
    let url = format!("{http_base}/api/dev-token");
    let response = reqwest::Client::new()
        .post(&url)
        .json(&json!({"user_id": user}))
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| MintError::Failed(anyhow!("POST {url}: {e}")))?;
    let status = response.status().as_u16();
    if matches!(status, 401 | 403 | 404) {
        return Err(MintError::NotHere(status));
    }
    if status != 200 {
        return Err(MintError::Failed(anyhow!("POST {url}: HTTP {status}")));
    }
    let body: Value = response
        .json()
        .await
        .map_err(|e| MintError::Failed(anyhow!("POST {url}: {e}")))?;
    let token = body
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| MintError::Failed(anyhow!("POST {url}: no token in {body}")))?;
    let exp = body.get("expires_at").and_then(Value::as_u64);
    Ok(Fresh::new(token.to_owned(), exp))
}

/// Runs `sh -c cmd`; its stdout's first line is the token.
async fn run_command(cmd: &str) -> anyhow::Result<Fresh> {
    let run = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(FETCH_TIMEOUT, run)
        .await
        .map_err(|_| anyhow!("--token-cmd gave no token within {FETCH_TIMEOUT:?}"))?
        .context("cannot run --token-cmd")?;
    if !output.status.success() {
        bail!("--token-cmd failed ({})", output.status);
    }
    let stdout = String::from_utf8(output.stdout).context("--token-cmd printed no text")?;
    let token = stdout.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        bail!("--token-cmd printed no token");
    }
    Ok(Fresh::new(token.to_owned(), None))
}

/// The socket's token and when to refresh it.
#[derive(Debug)]
pub struct Session {
    pub source: Source,
    /// The newest token (the one sent last); `None` when the socket names its user.
    current: Option<Fresh>,
    /// When the socket's token lapses, as the server said (`refreshed`) or the token does.
    pub expires_at: Option<u64>,
    /// When to get a fresh token.
    pub refresh_at: Option<Instant>,
    /// A `--token` that cannot be renewed: the client said so already.
    warned: bool,
}

impl Session {
    pub fn new(current: Option<Fresh>, source: Source) -> Session {
        let mut session = Session {
            expires_at: current.as_ref().and_then(|f| f.exp),
            source,
            current,
            refresh_at: None,
            warned: false,
        };
        session.schedule();
        session
    }

    pub fn token(&self) -> Option<&str> {
        self.current.as_ref().map(|f| f.token.as_str())
    }

    /// Schedules the next refresh: at 80% of the newest token's lifetime, measured from when
    /// it came, and no later than at 80% of the time left by this clock.
    fn schedule(&mut self) {
        self.refresh_at = None;
        let Some(fresh) = &self.current else { return };
        let Some(exp) = fresh.exp else { return };
        let now = unix_now();
        let exp = exp as f64;
        let lifetime = exp - fresh.iat.map_or(fresh.received, |iat| iat as f64);
        let mut delay = REFRESH_AT * lifetime - (now - fresh.received);
        if exp > now {
            delay = delay.min(REFRESH_AT * (exp - now));
        }
        self.refresh_at = Some(Instant::now() + Duration::from_secs_f64(delay.clamp(1.0, 1e9)));
    }

    /// Tries again soon (a fresh token could not be had, or the server refused it), while
    /// the socket's token still lasts.
    pub fn retry_soon(&mut self) {
        let left = self.expires_at.map_or(0.0, |exp| exp as f64 - unix_now());
        if left > 1.0 {
            let wait = (left / 4.0).clamp(1.0, 10.0);
            self.refresh_at = Some(Instant::now() + Duration::from_secs_f64(wait));
        } else {
            self.refresh_at = None;
        }
    }

    /// The refresh is due and the token cannot be renewed: what to tell the user, once.
    pub fn cannot_renew(&mut self) -> Option<String> {
        self.refresh_at = None;
        if self.warned || matches!(self.source, Source::Named) {
            return None;
        }
        self.warned = true;
        let left = self
            .expires_at
            .map_or(0, |exp| (exp as f64 - unix_now()).max(0.0).round() as u64);
        Some(format!(
            "! your token expires in {left} s and cannot be renewed: give --token-cmd CMD to \
             refresh it"
        ))
    }

    /// A fresh token came: the frame that sends it. The next refresh is scheduled when the
    /// server says `refreshed`.
    pub fn adopt(&mut self, fresh: Fresh) -> Value {
        let frame = json!({"type": "refresh", "token": fresh.token});
        self.current = Some(fresh);
        frame
    }

    /// `refreshed`: the socket now lapses at `expires_at`; schedule the next refresh.
    pub fn refreshed(&mut self, frame: &Value) {
        if let Some(exp) = frame.get("expires_at").and_then(Value::as_u64) {
            self.expires_at = Some(exp);
        }
        self.schedule();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(exp: u64, iat: Option<u64>, received: f64) -> Fresh {
        Fresh {
            token: "t".into(),
            exp: Some(exp),
            iat,
            received,
        }
    }

    #[test]
    fn refreshes_at_80_percent_of_the_lifetime() {
        let now = unix_now();
        let at = now.floor() as u64;
        let mut session = Session::new(Some(fresh(at + 100, Some(at), now)), Source::Given);
        let due = session.refresh_at.expect("scheduled") - Instant::now();
        assert!(
            (Duration::from_secs(75)..=Duration::from_secs(81)).contains(&due),
            "{due:?}"
        );
        // A token that cannot be renewed is said once, then nothing is scheduled.
        assert!(session.cannot_renew().unwrap().contains("--token-cmd"));
        assert_eq!(session.cannot_renew(), None);
        assert_eq!(session.refresh_at, None);
    }

    #[test]
    fn a_token_without_exp_is_never_refreshed() {
        let session = Session::new(Some(Fresh::new("not-a-jwt".into(), None)), Source::Given);
        assert_eq!((session.expires_at, session.refresh_at), (None, None));
    }

    #[test]
    fn reads_exp_and_iat_from_a_jwt() {
        // {"alg":"HS256"} . {"sub":"u","iat":1700000000,"exp":1700000600} . (no signature)
        let token =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1IiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDA2MDB9.x";
        let f = Fresh::new(token.into(), None);
        assert_eq!((f.exp, f.iat), (Some(1_700_000_600), Some(1_700_000_000)));
    }
}
