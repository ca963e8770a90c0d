//! Resource-server mode: access tokens of an external identity provider (Keycloak, Auth0, an
//! app's own) accepted as Parley credentials, checked against that provider's keys with the
//! rules every foreign token passes (see [`super::jwks`]).

use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::fetch::Fetcher;
use super::jwks::{Expect, Jwks, ASYMMETRIC};
use super::names::reserved_for_guests;
use parley_stomp::destination::valid_user;

/// The external provider, as configured.
#[derive(Clone, Debug)]
pub struct ExternalSettings {
    /// Exact `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// The key set; else the issuer's discovery document names it.
    pub jwks_url: Option<String>,
    /// Dotted path of the claim holding the user name.
    pub name_claim: String,
    /// Dotted path of the claim holding roles.
    pub roles_claim: Option<String>,
    /// The role that may write; without it, read-only.
    pub writer_role: Option<String>,
}

/// Who an external token says the caller is.
#[derive(Debug)]
pub struct ExternalUser {
    /// The user name.
    pub name: String,
    /// May send (else read-only).
    pub writer: bool,
    /// `exp`, in ms since the epoch.
    pub expires_ms: u64,
}

/// The external provider's key set and checks.
pub struct External {
    settings: ExternalSettings,
    jwks: OnceCell<Jwks>,
    /// When discovery last failed: not tried again before the refetch gap.
    discovery_failed: std::sync::Mutex<Option<std::time::Instant>>,
    refetch: std::time::Duration,
    max_age: std::time::Duration,
}

impl External {
    /// Keys are fetched on first use.
    pub fn new(
        settings: ExternalSettings,
        refetch: std::time::Duration,
        max_age: std::time::Duration,
    ) -> Self {
        Self {
            settings,
            jwks: OnceCell::new(),
            discovery_failed: std::sync::Mutex::new(None),
            refetch,
            max_age,
        }
    }

    /// Is `token` one of this issuer's (by its unverified `iss`, only to pick the checks)?
    pub fn claims_issuer(&self, token: &str) -> bool {
        jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token)
            .ok()
            .and_then(|claims| claims.get("iss").and_then(Value::as_str).map(str::to_owned))
            .is_some_and(|iss| iss == self.settings.issuer)
    }

    /// Checks `token`, fetching keys as needed.
    pub async fn verify(&self, fetcher: &Fetcher, token: &str) -> Result<ExternalUser, String> {
        let jwks = self
            .jwks
            .get_or_try_init(|| async {
                let url = match &self.settings.jwks_url {
                    Some(url) => url.clone(),
                    None => self.discover(fetcher).await?,
                };
                tracing::info!(%url, "the external identity provider's keys are at this URL");
                Ok::<_, String>(Jwks::new(url, self.refetch, self.max_age))
            })
            .await?;
        let claims = jwks.verify(fetcher, token, &self.expect()).await?;
        self.user(&claims)
    }

    /// Checks `token` with the keys held now (renewal inside a session).
    pub fn verify_cached(&self, token: &str) -> Result<ExternalUser, String> {
        let jwks = self
            .jwks
            .get()
            .ok_or("the identity provider's keys are not loaded yet")?;
        let claims = jwks.verify_cached(token, &self.expect())?;
        self.user(&claims)
    }

    fn expect(&self) -> Expect<'_> {
        Expect {
            issuer: &self.settings.issuer,
            audience: &self.settings.audience,
            algorithms: &ASYMMETRIC,
        }
    }

    async fn discover(&self, fetcher: &Fetcher) -> Result<String, String> {
        {
            let last = self
                .discovery_failed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < self.refetch) {
                return Err("the identity provider could not be reached lately; retry".into());
            }
        }
        let result = self.fetch_discovery(fetcher).await;
        if result.is_err() {
            let mut last = self
                .discovery_failed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            tracing::warn!("fetching the external identity provider's discovery document failed");
            *last = Some(std::time::Instant::now());
        }
        result
    }

    async fn fetch_discovery(&self, fetcher: &Fetcher) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let doc = fetcher
            .get_json(&url, None)
            .await
            .map_err(|e| format!("the identity provider {e}"))?;
        doc.get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| "the identity provider announces no jwks_uri".into())
    }

    fn user(&self, claims: &Map<String, Value>) -> Result<ExternalUser, String> {
        let s = &self.settings;
        let name = claim(claims, &s.name_claim)
            .and_then(Value::as_str)
            .and_then(valid_user)
            .ok_or_else(|| format!("the token's {} is not a valid user name", s.name_claim))?;
        if reserved_for_guests(&name) {
            return Err("names starting with guest- are given by the server".into());
        }
        let writer = match (&s.roles_claim, &s.writer_role) {
            (Some(path), Some(role)) => roles(claim(claims, path)).any(|r| r == role),
            _ => true,
        };
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok(ExternalUser {
            name,
            writer,
            expires_ms: exp.saturating_mul(1000),
        })
    }
}

/// A dotted path (`realm_access.roles`, as Keycloak nests them) into the claims.
fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |v, key| v.get(key))
}

/// Roles as a list of strings, or one space-separated string (as `scope` is).
fn roles(value: Option<&Value>) -> Box<dyn Iterator<Item = &str> + '_> {
    match value {
        Some(Value::Array(list)) => Box::new(list.iter().filter_map(Value::as_str)),
        Some(Value::String(s)) => Box::new(s.split_whitespace()),
        _ => Box::new(std::iter::empty()),
    }
}
