//! Credentials for bots: tokens minted from the server's HS256 secret, or accounts registered
//! and logged in over the HTTP API.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::body::now_us;
use crate::conn::{Credential, OpenError};
use crate::http::{request, Response};
use crate::stats::ErrorKind;

/// Password of every account the bots register (≥ 8 characters, as Parley requires).
const BOT_PASSWORD: &str = "parley-bots-password";

/// Parley's default issuer and audience.
const ISSUER: &str = "parley";
const AUDIENCE: &str = "parley";

/// Signs access tokens the way `parley token` does.
pub struct TokenMinter {
    key: EncodingKey,
    ttl: Duration,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    iss: &'a str,
    aud: &'a str,
    jti: String,
    typ: &'a str,
}

impl TokenMinter {
    /// Reads the secret (trailing newlines trimmed, as the server does); tokens live `ttl`.
    pub fn from_file(path: &Path, ttl: Duration) -> anyhow::Result<Self> {
        let mut secret =
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            secret.pop();
        }
        anyhow::ensure!(
            secret.len() >= 32,
            "{}: a JWT secret has at least 32 bytes",
            path.display()
        );
        Ok(Self {
            key: EncodingKey::from_secret(&secret)?,
            ttl,
        })
    }

    /// An access token for `user`.
    pub fn mint(&self, user: &str) -> anyhow::Result<String> {
        let now_us = now_us();
        let now = now_us / 1_000_000;
        let claims = Claims {
            sub: user,
            iat: now,
            exp: now + self.ttl.as_secs().max(60),
            iss: ISSUER,
            aud: AUDIENCE,
            // Unique per token: the user plus the minting time.
            jti: format!("{user}.{now_us}"),
            typ: "access",
        };
        Ok(jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.key,
        )?)
    }
}

/// Registers `name` (an existing account is fine) and logs in; returns the access token.
///
/// Password hashing is deliberately slow and Parley answers 503/429 when busy, so both steps
/// retry after the server's `Retry-After` until the caller's timeout ends them.
pub async fn register_and_login(
    http: SocketAddr,
    source: Option<IpAddr>,
    name: &str,
) -> Result<Credential, OpenError> {
    let account = serde_json::json!({ "username": name, "password": BOT_PASSWORD }).to_string();
    loop {
        let answer = post(http, source, "/api/register", &account).await?;
        match answer.status {
            201 | 409 => break,
            429 | 503 => tokio::time::sleep(answer.retry_after).await,
            status => return Err(auth_error(format!("register: HTTP {status}"))),
        }
    }
    loop {
        let answer = post(http, source, "/api/login", &account).await?;
        match answer.status {
            200 => {
                let token = serde_json::from_str::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|v| v["access_token"].as_str().map(str::to_owned))
                    .ok_or_else(|| auth_error("login: no access_token in the answer"))?;
                return Ok(Credential::Token(token));
            }
            429 | 503 => tokio::time::sleep(answer.retry_after).await,
            status => return Err(auth_error(format!("login: HTTP {status}"))),
        }
    }
}

fn auth_error(why: impl Into<String>) -> OpenError {
    OpenError {
        kind: ErrorKind::Auth,
        why: why.into(),
    }
}

/// POSTs `json` to `path`; no answer at all counts as a connect error.
async fn post(
    http: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    json: &str,
) -> Result<Response, OpenError> {
    request(http, source, "POST", path, Some(json))
        .await
        .map_err(|e| OpenError {
            kind: ErrorKind::Connect,
            why: e.why,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_carry_parleys_claims() {
        let path = std::env::temp_dir().join(format!("bots-secret-{}", std::process::id()));
        std::fs::write(&path, "0123456789abcdef0123456789abcdef-secret\n").unwrap();
        let minter = TokenMinter::from_file(&path, Duration::from_secs(3600)).unwrap();
        let token = minter.mint("alice").unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&["parley"]);
        validation.set_audience(&["parley"]);
        let key =
            jsonwebtoken::DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef-secret")
                .unwrap();
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.claims["typ"], "access");
        std::fs::write(&path, "short").unwrap();
        assert!(TokenMinter::from_file(&path, Duration::from_secs(1)).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
