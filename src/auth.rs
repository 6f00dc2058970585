//! Who a socket is, and which rooms it may use: tokens (JWT) checked before the upgrade.
//!
//! An [`Identity`] is built once per server from the `--jwt-*` flags. With `--jwt-secret`
//! (HS256) or `--jwt-public-key` (a PEM file: RS256 for an RSA key, ES256 for a P-256 key)
//! every socket must present a token; [`Identity::authenticate`] checks its signature, `exp`,
//! `nbf`, and `aud`/`iss` when configured, and turns it into [`Credentials`]: the user (the
//! token's `sub`), its [`Grants`] and when it lapses. Without those flags the server is in
//! development mode: a socket may name its user, and tokens minted by
//! `POST /api/dev-token` (signed with a secret made at start, never written anywhere) are
//! accepted too.
//!
//! Grants come from the claims `rooms` and `read_only`, lists of room names or prefixes
//! ending in `*`; [`Identity::access`] applies them, and the reserved prefixes
//! (`--reserved-prefixes`), to one room. The same rule holds in both modes.
//!
//! Pure: no actix, no sockets, no HTTP. `docs/SECURITY.md` is the human description.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::ids::{MAX_NAME_LEN, NAME_RULE, RoomId, UserId};
use crate::protocol::ErrorCode;

/// The WebSocket subprotocol roomcast speaks; selected whenever a client offers it.
pub const SUBPROTOCOL: &str = "roomcast.v1";

/// A subprotocol offer that carries a token instead of naming a protocol:
/// `roomcast.token.<JWT>`. Never selected.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "roomcast.token.";

/// Longest token accepted, in bytes: far above any real token, and below what a URL or a
/// header may carry. The same bound as a `refresh` frame's `token`.
pub const MAX_TOKEN_LEN: usize = crate::protocol::MAX_TOKEN_CHARS;

/// Most entries in one of a token's lists (`rooms`, `read_only`).
pub const MAX_GRANTS: usize = 1000;

/// The `iss` of tokens minted by `POST /api/dev-token`.
pub const DEV_ISSUER: &str = "roomcast-dev";

/// Default and longest lifetime of a development token, in seconds.
pub const DEV_TTL_DEFAULT: u64 = 3600;
pub const DEV_TTL_MAX: u64 = 86_400;

/// Shortest accepted `--jwt-secret`, in bytes: HS256's own output size (RFC 7518 §3.2).
pub const MIN_SECRET_LEN: usize = 32;

/// Why a token (or its absence) was refused. Each maps to one stable code, sent as the JSON
/// body of the HTTP refusal before the upgrade ([`AuthError::code`]), and, for a `refresh`,
/// as an `error` frame ([`AuthError::frame_code`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this server needs a token: send it as ?token=JWT or offer the WebSocket protocols \
         `roomcast.v1` and `roomcast.token.JWT`"
    )]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token is meant for another audience (aud)")]
    Audience,
    #[error("the token comes from another issuer (iss)")]
    Issuer,
    /// Malformed, forged, signed with another algorithm or key, or claims that break the
    /// rules; the message says which.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A valid token, for someone else than the user the URL (or the socket) names.
    #[error("the token is for user '{token}', not '{named}'")]
    UserMismatch { token: UserId, named: UserId },
}

impl AuthError {
    /// The code of the HTTP refusal's JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::Audience => "token_audience",
            AuthError::Issuer => "token_issuer",
            AuthError::Invalid(_) => "token_invalid",
            AuthError::UserMismatch { .. } => "token_user_mismatch",
        }
    }

    /// Whether the refusal is 403 (a valid token, for another user) rather than 401.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::UserMismatch { .. })
    }

    /// The code of the `error` frame answering a refused `refresh`: `token_expired`,
    /// `token_user_mismatch`, or `token_invalid` for everything else.
    pub fn frame_code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::UserMismatch { .. } => ErrorCode::TokenUserMismatch,
            _ => ErrorCode::TokenInvalid,
        }
    }

    fn from_jwt(e: jsonwebtoken::errors::Error) -> AuthError {
        match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::InvalidIssuer => AuthError::Issuer,
            ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) if c == "aud" => {
                AuthError::Audience
            }
            ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) if c == "iss" => {
                AuthError::Issuer
            }
            ErrorKind::MissingRequiredClaim(c) => {
                AuthError::Invalid(format!("the claim `{c}` is required"))
            }
            ErrorKind::InvalidClaimFormat(c) => {
                AuthError::Invalid(format!("the claim `{c}` has the wrong type"))
            }
            ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
            ErrorKind::InvalidAlgorithm => {
                AuthError::Invalid("signed with an algorithm this server does not accept".into())
            }
            _ => AuthError::Invalid(format!("malformed ({e})")),
        }
    }
}

/// A flag combination or key file that cannot work; stops the server at start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read --jwt-public-key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("--jwt-public-key {path}: {why}")]
    Unusable { path: String, why: String },
    #[error("{0}")]
    Other(String),
}

/// One entry of a `rooms` or `read_only` claim: a room's exact name, or every room whose
/// name starts with a prefix (written `prefix*`; `*` alone is every room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomPattern {
    Exact(RoomId),
    Prefix(String),
}

impl RoomPattern {
    /// Parses `name` or `prefix*`; the name or prefix follows the room naming rule.
    pub fn parse(s: &str) -> Option<RoomPattern> {
        match s.strip_suffix('*') {
            Some(prefix) => {
                let ok = prefix.len() < MAX_NAME_LEN
                    && prefix.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
                    });
                ok.then(|| RoomPattern::Prefix(prefix.to_owned()))
            }
            None => RoomId::parse(s).map(RoomPattern::Exact),
        }
    }

    fn matches(&self, room: &RoomId) -> bool {
        match self {
            RoomPattern::Exact(r) => r == room,
            RoomPattern::Prefix(p) => room.as_str().starts_with(p.as_str()),
        }
    }

    /// Whether this entry names `room`, which is under the reserved prefix `reserved`,
    /// explicitly: the room itself, or a prefix inside the reserved one (`private:*` does,
    /// `*` and `priv*` do not).
    fn grants_reserved(&self, room: &RoomId, reserved: &str) -> bool {
        match self {
            RoomPattern::Exact(r) => r == room,
            RoomPattern::Prefix(p) => p.starts_with(reserved) && self.matches(room),
        }
    }
}

impl std::fmt::Display for RoomPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoomPattern::Exact(r) => write!(f, "{r}"),
            RoomPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// Parses a list of patterns; the error names the claim (or field) and the entry.
pub fn parse_patterns(field: &str, entries: &[String]) -> Result<Vec<RoomPattern>, String> {
    if entries.len() > MAX_GRANTS {
        return Err(format!("`{field}` has more than {MAX_GRANTS} entries"));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            RoomPattern::parse(e).ok_or_else(|| {
                format!(
                    "`{field}[{i}]` must be a room name or a prefix ending in `*` ({NAME_RULE})"
                )
            })
        })
        .collect()
}

/// The rooms a socket may use, from its token. [`Grants::default`] (no token, or a token
/// without the claims) allows every room outside the reserved prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The `rooms` claim: `None` when absent (any room not reserved), else exactly these.
    pub rooms: Option<Vec<RoomPattern>>,
    /// The `read_only` claim: rooms the user may join but not chat or type in. Takes
    /// precedence over `rooms`.
    pub read_only: Vec<RoomPattern>,
}

/// What a socket may do in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Join, chat, type.
    Full,
    /// Join and read: no `chat`, no `typing`.
    ReadOnly,
    /// Nothing: `join` is refused.
    None,
}

impl Access {
    pub fn may_join(self) -> bool {
        self != Access::None
    }

    pub fn may_post(self) -> bool {
        self == Access::Full
    }
}

/// Who a socket is: what a token (or, in development mode, the URL) established.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub user: UserId,
    pub grants: Grants,
    /// The token's `exp` (Unix seconds); `None` for a socket that named its user without a
    /// token (development mode), which never lapses.
    pub expires_at: Option<u64>,
}

impl Credentials {
    /// A socket that named its user without a token (development mode only).
    pub fn named(user: UserId) -> Credentials {
        Credentials {
            user,
            grants: Grants::default(),
            expires_at: None,
        }
    }
}

/// The claims roomcast reads. `exp`, `nbf`, `aud` and `iss` are checked by `jsonwebtoken`'s
/// `Validation`; `exp` is read again here to time the socket's lapse.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: serde_json::Number,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    read_only: Option<Vec<String>>,
}

/// The claims of a development token.
#[derive(Debug, Serialize)]
struct DevClaims<'a> {
    sub: &'a UserId,
    iss: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rooms: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    read_only: Vec<String>,
}

/// How tokens are checked, and which rooms need an explicit grant. One per server.
pub struct Identity {
    key: DecodingKey,
    validation: Validation,
    /// Seconds of clock skew allowed on `exp` and `nbf`; a socket lapses this long after its
    /// token's `exp`.
    leeway: u64,
    /// `Some` in development mode: the key `POST /api/dev-token` signs with. Tokens are then
    /// optional.
    dev_signer: Option<EncodingKey>,
    /// Room name prefixes that only an explicit grant opens (`--reserved-prefixes`).
    reserved: Vec<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Identity")
            .field("algorithms", &self.validation.algorithms)
            .field("development", &self.is_development())
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The identity the flags describe: tokens checked with `--jwt-secret` or
    /// `--jwt-public-key`, or development mode without either, with a key of its own.
    pub fn from_config(config: &Config) -> Result<Identity, KeyError> {
        Self::with_dev_secret(config, random_secret())
    }

    /// As [`Self::from_config`], with `dev_secret` as development mode's signing key (a
    /// cluster's nodes share one: `cluster::dev_secret`). Unused when a JWT flag is set.
    pub fn with_dev_secret(config: &Config, dev_secret: Vec<u8>) -> Result<Identity, KeyError> {
        // An empty entry (`--reserved-prefixes ''`) reserves nothing.
        let reserved = config
            .reserved_prefixes
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect();
        let (key, algorithm, dev_signer) = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(_), Some(_)) => {
                return Err(KeyError::Other(
                    "give --jwt-secret or --jwt-public-key, not both".into(),
                ));
            }
            (Some(secret), None) => (hmac_key(secret.as_bytes())?, Algorithm::HS256, None),
            (None, Some(path)) => {
                let (key, alg) = public_key(path)?;
                (key, alg, None)
            }
            (None, None) => {
                let signer = EncodingKey::from_secret(&dev_secret)
                    .map_err(|e| KeyError::Other(format!("development key: {e}")))?;
                (hmac_key(&dev_secret)?, Algorithm::HS256, Some(signer))
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.jwt_leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(aud) = &config.jwt_audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        if let Some(iss) = &config.jwt_issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Identity {
            key,
            validation,
            leeway: config.jwt_leeway_secs,
            dev_signer,
            reserved,
        })
    }

    /// Development mode: no JWT option, so a socket may name its user.
    pub fn is_development(&self) -> bool {
        self.dev_signer.is_some()
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// Who a socket is, from its token if it sent one, and the user its URL names if any
    /// (`/ws/{room}/{user}`, `/notifications/{user}`, `?user_id=`).
    ///
    /// - A token must be valid, and its `sub` must be the named user when one is named
    ///   (otherwise [`AuthError::UserMismatch`]).
    /// - Without a token: [`AuthError::Missing`] when tokens are required; in development
    ///   mode the named user, with no grants (callers make sure one is named).
    pub fn authenticate(
        &self,
        token: Option<&str>,
        named: Option<UserId>,
    ) -> Result<Credentials, AuthError> {
        match (token, named) {
            (Some(token), named) => {
                let credentials = self.verify(token)?;
                match named {
                    Some(named) if named != credentials.user => Err(AuthError::UserMismatch {
                        token: credentials.user,
                        named,
                    }),
                    _ => Ok(credentials),
                }
            }
            (None, Some(named)) if self.is_development() => Ok(Credentials::named(named)),
            (None, _) => Err(AuthError::Missing),
        }
    }

    /// Checks a token and reads its claims: signature (with the one configured algorithm:
    /// the token's header cannot choose another), `exp`, `nbf`, `aud`, `iss`, then `sub` (a
    /// valid user name) and the grants.
    pub fn verify(&self, token: &str) -> Result<Credentials, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid(format!(
                "longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(AuthError::from_jwt)?;
        let claims = data.claims;
        let user = UserId::parse(&claims.sub)
            .ok_or_else(|| AuthError::Invalid(format!("`sub` {NAME_RULE}")))?;
        let expires_at = unix_secs(&claims.exp)
            .ok_or_else(|| AuthError::Invalid("`exp` must be a number of seconds".into()))?;
        // jsonwebtoken compares whole seconds; a socket lapses at `exp` + leeway exactly.
        if self.lapses_in(expires_at, SystemTime::now()).is_zero() {
            return Err(AuthError::Expired);
        }
        let rooms = claims
            .rooms
            .map(|r| parse_patterns("rooms", &r))
            .transpose()
            .map_err(AuthError::Invalid)?;
        let read_only = parse_patterns("read_only", &claims.read_only.unwrap_or_default())
            .map_err(AuthError::Invalid)?;
        Ok(Credentials {
            user,
            grants: Grants { rooms, read_only },
            expires_at: Some(expires_at),
        })
    }

    /// How long from `now` until a token that expires at `expires_at` (Unix seconds) lapses:
    /// `exp` plus the leeway. Zero once it has.
    pub fn lapses_in(&self, expires_at: u64, now: SystemTime) -> Duration {
        let lapse = UNIX_EPOCH + Duration::from_secs(expires_at.saturating_add(self.leeway));
        lapse.duration_since(now).unwrap_or(Duration::ZERO)
    }

    /// What `grants` allow in `room`. A room under a reserved prefix needs an explicit
    /// grant; `read_only` wins over `rooms`.
    pub fn access(&self, grants: &Grants, room: &RoomId) -> Access {
        let reserved: Vec<&str> = self
            .reserved
            .iter()
            .map(String::as_str)
            .filter(|r| room.as_str().starts_with(r))
            .collect();
        let grants_room = |p: &RoomPattern| match reserved.as_slice() {
            [] => p.matches(room),
            under => under.iter().any(|r| p.grants_reserved(room, r)),
        };
        if grants.read_only.iter().any(grants_room) {
            return Access::ReadOnly;
        }
        let full = match &grants.rooms {
            None => reserved.is_empty(),
            Some(rooms) => rooms.iter().any(grants_room),
        };
        if full { Access::Full } else { Access::None }
    }

    /// Whether `room` is under a reserved prefix (for messages that say why).
    pub fn is_reserved(&self, room: &RoomId) -> bool {
        self.reserved.iter().any(|r| room.as_str().starts_with(r))
    }

    /// A development token for `user` with these grants, valid for `ttl_secs`: the token and
    /// its `exp`. `None` when the server checks real tokens (no development key).
    pub fn mint_dev_token(
        &self,
        user: &UserId,
        grants: &Grants,
        ttl_secs: u64,
    ) -> Option<Result<(String, u64), String>> {
        let signer = self.dev_signer.as_ref()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let exp = now.saturating_add(ttl_secs);
        let names = |list: &[RoomPattern]| list.iter().map(|p| p.to_string()).collect();
        let claims = DevClaims {
            sub: user,
            iss: DEV_ISSUER,
            iat: now,
            exp,
            rooms: grants.rooms.as_deref().map(names),
            read_only: names(&grants.read_only),
        };
        Some(
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, signer)
                .map(|token| (token, exp))
                .map_err(|e| e.to_string()),
        )
    }
}

/// A JWT `NumericDate` as whole seconds: a non-negative integer, or a finite non-negative
/// number (fractions dropped).
fn unix_secs(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

fn hmac_key(secret: &[u8]) -> Result<DecodingKey, KeyError> {
    DecodingKey::from_secret(secret).map_err(|e| KeyError::Other(format!("--jwt-secret: {e}")))
}

/// The public key in the PEM file at `path` and the algorithm it verifies: RS256 for an RSA
/// key, ES256 for an EC P-256 key. A private key is refused: the server only verifies, and
/// should never hold what signs.
fn public_key(path: &std::path::Path) -> Result<(DecodingKey, Algorithm), KeyError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: shown.clone(),
        source,
    })?;
    let unusable = |why: &str| KeyError::Unusable {
        path: shown.clone(),
        why: why.to_owned(),
    };
    let text = String::from_utf8_lossy(&pem);
    if text.contains("PRIVATE KEY-----") {
        return Err(unusable(
            "this is a private key; give the public key (roomcast only verifies tokens, so it \
             should never hold the key that signs them)",
        ));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    match DecodingKey::from_ec_pem(&pem) {
        // An uncompressed P-256 point is 65 bytes (P-384: 97).
        Ok(key) if key.try_get_as_bytes().is_ok_and(|b| b.len() == 65) => {
            Ok((key, Algorithm::ES256))
        }
        Ok(_) => Err(unusable(
            "an EC key on a curve other than P-256; ES256 needs P-256 (prime256v1)",
        )),
        Err(_) if text.contains("-----BEGIN PUBLIC KEY-----") => Err(unusable(
            "a public key of an algorithm roomcast does not verify (Ed25519, say); give an \
             RSA key (RS256) or an EC P-256 key (ES256)",
        )),
        Err(_) => Err(unusable(
            "not a PEM public key (-----BEGIN PUBLIC KEY----- or -----BEGIN RSA PUBLIC \
             KEY-----) of RSA or EC P-256",
        )),
    }
}

/// 32 random bytes (2 × 122 random bits) from `uuid`'s v4 generator, for the development
/// signing key: with `fast-rng`, `rand`'s thread-local ChaCha generator, a cryptographic
/// generator seeded from the operating system.
pub fn random_secret() -> Vec<u8> {
    let mut secret = Vec::with_capacity(32);
    secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret
}

/// What a `Sec-WebSocket-Protocol` request header offers: whether `roomcast.v1` is among
/// the protocols, and the tokens offered as `roomcast.token.<JWT>`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProtocolOffer<'a> {
    pub roomcast_v1: bool,
    pub tokens: Vec<&'a str>,
}

/// Reads the comma-separated protocols of every `Sec-WebSocket-Protocol` header line.
pub fn protocol_offer<'a>(lines: impl IntoIterator<Item = &'a str>) -> ProtocolOffer<'a> {
    let mut offer = ProtocolOffer::default();
    for protocol in lines.into_iter().flat_map(|l| l.split(',')).map(str::trim) {
        if protocol == SUBPROTOCOL {
            offer.roomcast_v1 = true;
        } else if let Some(token) = protocol.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX) {
            offer.tokens.push(token);
        }
    }
    offer
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a test secret that is long enough for HS256";

    fn identity(tweak: impl FnOnce(&mut Config)) -> Identity {
        let mut config = Config::for_tests();
        config.jwt_secret = Some(SECRET.into());
        config.jwt_leeway_secs = 0;
        tweak(&mut config);
        Identity::from_config(&config).expect("a valid configuration")
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        sign(claims, SECRET)
    }

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    #[test]
    fn a_valid_token_gives_its_sub_grants_and_exp() {
        let id = identity(|_| {});
        let exp = now() + 600;
        let t = token(serde_json::json!({
            "sub": "alice", "exp": exp, "rooms": ["lobby", "support:*"], "read_only": ["news"]
        }));
        let c = id.authenticate(Some(&t), None).unwrap();
        assert_eq!(c.user, user("alice"));
        assert_eq!(c.expires_at, Some(exp));
        assert_eq!(
            c.grants.rooms,
            Some(vec![
                RoomPattern::Exact(room("lobby")),
                RoomPattern::Prefix("support:".into())
            ])
        );
        assert_eq!(c.grants.read_only, vec![RoomPattern::Exact(room("news"))]);
        // The same user named in the URL is fine; another is not.
        assert!(id.authenticate(Some(&t), Some(user("alice"))).is_ok());
        assert_eq!(
            id.authenticate(Some(&t), Some(user("bob"))),
            Err(AuthError::UserMismatch {
                token: user("alice"),
                named: user("bob")
            })
        );
    }

    #[test]
    fn every_refusal_has_its_code() {
        let id = identity(|c| {
            c.jwt_audience = Some("roomcast".into());
            c.jwt_issuer = Some("https://auth.example".into());
        });
        let good = || {
            serde_json::json!({"sub": "alice", "exp": now() + 600, "aud": "roomcast",
                               "iss": "https://auth.example"})
        };
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good();
            c[k] = v;
            token(c)
        };
        let without = |k: &str| {
            let mut c = good();
            c.as_object_mut().unwrap().remove(k);
            token(c)
        };
        assert!(id.verify(&token(good())).is_ok());
        let cases: Vec<(String, &str)> = vec![
            (with("exp", (now() - 10).into()), "token_expired"),
            (with("nbf", (now() + 600).into()), "token_not_yet_valid"),
            (with("aud", "another-service".into()), "token_audience"),
            (without("aud"), "token_audience"),
            (with("iss", "https://evil.example".into()), "token_issuer"),
            (without("iss"), "token_issuer"),
            (without("exp"), "token_invalid"),
            (without("sub"), "token_invalid"),
            (with("sub", "../bob".into()), "token_invalid"),
            (with("sub", 42.into()), "token_invalid"),
            (with("exp", "tomorrow".into()), "token_invalid"),
            (with("rooms", "lobby".into()), "token_invalid"),
            (with("rooms", serde_json::json!(["a b"])), "token_invalid"),
            (
                with("read_only", serde_json::json!(["x*y"])),
                "token_invalid",
            ),
            (
                sign(good(), "another secret, also long enough for HS256"),
                "token_invalid",
            ),
            ("not.a.token".into(), "token_invalid"),
            ("".into(), "token_invalid"),
            ("x".repeat(MAX_TOKEN_LEN + 1), "token_invalid"),
        ];
        for (t, code) in cases {
            let e = id.verify(&t).expect_err(code);
            assert_eq!(e.code(), code, "{e}");
            assert!(!e.is_forbidden());
        }
        assert_eq!(
            id.authenticate(None, None).unwrap_err().code(),
            "token_missing"
        );
        assert_eq!(
            id.authenticate(None, Some(user("alice"))).unwrap_err(),
            AuthError::Missing,
            "naming a user is not enough once tokens are required"
        );
    }

    #[test]
    fn the_token_cannot_choose_its_algorithm() {
        let id = identity(|_| {});
        let claims = serde_json::json!({"sub": "alice", "exp": now() + 600});
        // HS384 with the right secret, and an unsigned token.
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(id.verify(&hs384).unwrap_err().code(), "token_invalid");
        let good = token(claims);
        let payload = good.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(id.verify(&none).unwrap_err().code(), "token_invalid");
    }

    #[test]
    fn without_an_audience_configured_a_token_for_one_is_refused() {
        let id = identity(|_| {});
        let t = token(serde_json::json!({"sub": "a", "exp": now() + 60, "aud": "other"}));
        assert_eq!(id.verify(&t).unwrap_err(), AuthError::Audience);
    }

    #[test]
    fn a_socket_lapses_at_exp_plus_the_leeway() {
        let id = identity(|c| c.jwt_leeway_secs = 30);
        let at = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(id.lapses_in(1000, at), Duration::from_secs(30));
        assert_eq!(id.lapses_in(960, at), Duration::ZERO);
        // A token past its exp but within the leeway is still accepted.
        let t = token(serde_json::json!({"sub": "a", "exp": now() - 5}));
        assert!(id.verify(&t).is_ok());
    }

    #[test]
    fn grants_and_reserved_prefixes() {
        let id = identity(|_| {}); // reserved: private:
        let g = |rooms: Option<&[&str]>, read_only: &[&str]| Grants {
            rooms: rooms.map(|r| {
                parse_patterns(
                    "rooms",
                    &r.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                )
                .unwrap()
            }),
            read_only: parse_patterns(
                "read_only",
                &read_only.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap(),
        };
        let (full, read_only, none) = (Access::Full, Access::ReadOnly, Access::None);
        let cases: &[(Grants, &str, Access)] = &[
            // No claims: anything outside the reserved prefixes.
            (g(None, &[]), "lobby", full),
            (g(None, &[]), "private:alice-bob", none),
            (g(None, &["news"]), "news", read_only),
            (g(None, &["news"]), "lobby", full),
            // A `rooms` claim: exactly those.
            (g(Some(&["lobby", "support:*"]), &[]), "lobby", full),
            (g(Some(&["lobby", "support:*"]), &[]), "support:42", full),
            (g(Some(&["lobby", "support:*"]), &[]), "supporters", none),
            (g(Some(&["lobby"]), &[]), "lobby2", none),
            (g(Some(&[]), &[]), "lobby", none),
            // read_only grants a join, and wins over `rooms`.
            (g(Some(&["lobby"]), &["news"]), "news", read_only),
            (
                g(Some(&["support:*"]), &["support:archive"]),
                "support:archive",
                read_only,
            ),
            // Reserved rooms need an entry that names them or a prefix inside the reserved one.
            (g(Some(&["*"]), &[]), "private:x", none),
            (g(Some(&["priv*"]), &[]), "private:x", none),
            (g(Some(&["private:*"]), &[]), "private:x", full),
            (
                g(Some(&["private:alice-*"]), &[]),
                "private:alice-bob",
                full,
            ),
            (
                g(Some(&["private:alice-*"]), &[]),
                "private:bob-carol",
                none,
            ),
            (g(Some(&["private:x"]), &[]), "private:x", full),
            (g(None, &["private:x"]), "private:x", read_only),
            (g(Some(&["*"]), &[]), "anything", full),
        ];
        for (grants, r, want) in cases {
            assert_eq!(id.access(grants, &room(r)), *want, "{r} with {grants:?}");
        }
        assert!(id.is_reserved(&room("private:x")));
        assert!(!id.is_reserved(&room("privatex")));
    }

    #[test]
    fn reserved_prefixes_come_from_the_flag() {
        let id = identity(|c| c.reserved_prefixes = vec!["staff.".into(), "ops:".into()]);
        let open = Grants::default();
        assert_eq!(id.access(&open, &room("private:x")), Access::Full);
        assert_eq!(id.access(&open, &room("staff.room")), Access::None);
        assert_eq!(id.access(&open, &room("ops:pager")), Access::None);
        let none = identity(|c| c.reserved_prefixes = vec![]);
        assert_eq!(none.access(&open, &room("private:x")), Access::Full);
    }

    #[test]
    fn patterns() {
        assert_eq!(
            RoomPattern::parse("lobby"),
            Some(RoomPattern::Exact(room("lobby")))
        );
        assert_eq!(
            RoomPattern::parse("*"),
            Some(RoomPattern::Prefix("".into()))
        );
        assert_eq!(
            RoomPattern::parse("a:*"),
            Some(RoomPattern::Prefix("a:".into()))
        );
        for bad in ["", "a b", "a*b", "**", "a/*", &"x".repeat(65)] {
            assert_eq!(RoomPattern::parse(bad), None, "{bad:?}");
        }
        assert_eq!(RoomPattern::Prefix("a:".into()).to_string(), "a:*");
        let too_many = vec!["r".to_string(); MAX_GRANTS + 1];
        assert!(parse_patterns("rooms", &too_many).is_err());
    }

    #[test]
    fn development_mode_names_users_and_mints_tokens_only_there() {
        let mut config = Config::for_tests();
        config.jwt_leeway_secs = 0;
        let dev = Identity::from_config(&config).unwrap();
        assert!(dev.is_development());
        assert_eq!(
            dev.authenticate(None, Some(user("alice"))),
            Ok(Credentials::named(user("alice")))
        );
        let grants = Grants {
            rooms: Some(vec![RoomPattern::Prefix("team:".into())]),
            read_only: vec![RoomPattern::Exact(room("news"))],
        };
        let (t, exp) = dev
            .mint_dev_token(&user("alice"), &grants, 60)
            .unwrap()
            .unwrap();
        assert!(exp >= now() + 59);
        let c = dev.authenticate(Some(&t), Some(user("alice"))).unwrap();
        assert_eq!((&c.grants, c.expires_at), (&grants, Some(exp)));
        // Another server's development key signed nothing this one accepts.
        let other = Identity::from_config(&config).unwrap();
        assert_eq!(other.verify(&t).unwrap_err().code(), "token_invalid");
        // With real keys there is no development token.
        assert!(
            identity(|_| {})
                .mint_dev_token(&user("a"), &grants, 60)
                .is_none()
        );
        assert!(!identity(|_| {}).is_development());
    }

    #[test]
    fn public_keys_choose_their_algorithm_and_private_keys_are_refused() {
        let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/keys");
        let load = |file: &str| {
            let mut config = Config::for_tests();
            config.jwt_public_key = Some(keys.join(file));
            Identity::from_config(&config)
        };
        assert_eq!(
            load("rs256-public.pem").unwrap().algorithm(),
            Algorithm::RS256
        );
        assert_eq!(
            load("es256-public.pem").unwrap().algorithm(),
            Algorithm::ES256
        );
        let err = load("rs256-private.pem").unwrap_err().to_string();
        assert!(err.contains("private key"), "{err}");
        let err = load("no-such-file.pem").unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
        let err = load("ed25519-public.pem").unwrap_err().to_string();
        assert!(err.contains("algorithm roomcast does not verify"), "{err}");
        // Signed with the matching private keys, tokens verify; the wrong one does not.
        let claims = serde_json::json!({"sub": "alice", "exp": now() + 60});
        for (alg, private, public) in [
            (Algorithm::RS256, "rs256-private.pem", "rs256-public.pem"),
            (Algorithm::ES256, "es256-private.pem", "es256-public.pem"),
        ] {
            let pem = std::fs::read(keys.join(private)).unwrap();
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
                _ => EncodingKey::from_ec_pem(&pem).unwrap(),
            };
            let t = jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap();
            assert_eq!(
                load(public).unwrap().verify(&t).unwrap().user,
                user("alice")
            );
            let other = if alg == Algorithm::RS256 {
                "es256-public.pem"
            } else {
                "rs256-public.pem"
            };
            assert_eq!(
                load(other).unwrap().verify(&t).unwrap_err().code(),
                "token_invalid"
            );
        }
    }

    #[test]
    fn protocol_offers() {
        let offer = protocol_offer(["roomcast.v1, roomcast.token.abc.def.ghi", "chat"]);
        assert!(offer.roomcast_v1);
        assert_eq!(offer.tokens, vec!["abc.def.ghi"]);
        let offer = protocol_offer(["chat,  roomcast.v2"]);
        assert_eq!(offer, ProtocolOffer::default());
    }

    #[test]
    fn refusal_frames_use_three_codes() {
        assert_eq!(AuthError::Expired.frame_code(), ErrorCode::TokenExpired);
        assert_eq!(AuthError::Audience.frame_code(), ErrorCode::TokenInvalid);
        let mismatch = AuthError::UserMismatch {
            token: user("a"),
            named: user("b"),
        };
        assert_eq!(mismatch.frame_code(), ErrorCode::TokenUserMismatch);
        assert!(mismatch.is_forbidden());
    }
}
