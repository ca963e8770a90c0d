//! Tokens signed by someone else: a provider's JSON Web Key Set, cached and fetched again when
//! a token names a key it does not hold (the provider rotated its keys), and the checks every
//! such token passes — an asymmetric algorithm the provider may use, signature, `iss`, `aud`,
//! `exp`, `nbf`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::fetch::Fetcher;
use super::jwt::refusal;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;
/// The algorithms a foreign token may be signed with: asymmetric only, so no public key can
/// ever serve as an HMAC secret, and never `none`.
pub const ASYMMETRIC: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// What a token must say about where it comes from and whom it is for.
pub struct Expect<'a> {
    /// Exact `iss`.
    pub issuer: &'a str,
    /// One of the token's `aud`.
    pub audience: &'a str,
    /// Allowed `alg`s (a subset of [`ASYMMETRIC`]).
    pub algorithms: &'a [Algorithm],
}

/// One usable key of the set.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
}

#[derive(Default)]
struct Cached {
    keys: Vec<Key>,
    /// The last successful fetch.
    fetched: Option<Instant>,
    /// The last fetch, successful or not.
    attempted: Option<Instant>,
}

/// A provider's key set at `url`.
pub struct Jwks {
    url: String,
    /// Least time between two fetches caused by unknown keys, so tokens naming made-up keys
    /// cannot make Parley hammer the provider.
    refetch_gap: Duration,
    /// Keys older than this are fetched again before use, so a key the provider removed stops
    /// working.
    max_age: Duration,
    cached: Mutex<Cached>,
    /// One fetch at a time; the others wait for it and use its keys.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    /// The set at `url`, fetched on first use.
    pub fn new(url: String, refetch_gap: Duration, max_age: Duration) -> Self {
        Self {
            url,
            refetch_gap,
            max_age,
            cached: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Checks `token` (fetching keys as needed) and returns its claims; `Err` says why not.
    pub async fn verify(
        &self,
        fetcher: &Fetcher,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<Map<String, Value>, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        let algorithm = allowed(header.alg, expect)?;
        let key = match self.key(header.kid.as_deref(), algorithm) {
            Some(key) if self.fresh() => key,
            held => {
                self.fetch_for(fetcher, header.kid.as_deref(), algorithm, held)
                    .await?
            }
        };
        check(token, &key, algorithm, expect)
    }

    /// Checks `token` with the keys held now, never fetching (for renewals inside a session's
    /// synchronous code).
    pub fn verify_cached(
        &self,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<Map<String, Value>, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        let algorithm = allowed(header.alg, expect)?;
        let key = self
            .key(header.kid.as_deref(), algorithm)
            .ok_or("token signed with an unknown key; reconnect")?;
        check(token, &key, algorithm, expect)
    }

    fn fresh(&self) -> bool {
        lock(&self.cached)
            .fetched
            .is_some_and(|at| at.elapsed() < self.max_age)
    }

    fn key(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<DecodingKey> {
        let cached = lock(&self.cached);
        let mut fitting = cached.keys.iter().filter(|k| k.algorithm == algorithm);
        match kid {
            Some(kid) => fitting.find(|k| k.kid.as_deref() == Some(kid)),
            // No `kid`: only unambiguous when one key fits.
            None => match (fitting.next(), fitting.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            },
        }
        .map(|k| k.decoding.clone())
    }

    /// Fetches the set again if the cached one is stale or lacks the key (and the last fetch
    /// is older than the gap); `held` is the key found before, used if the fetch fails.
    async fn fetch_for(
        &self,
        fetcher: &Fetcher,
        kid: Option<&str>,
        algorithm: Algorithm,
        held: Option<DecodingKey>,
    ) -> Result<DecodingKey, String> {
        let _one = self.fetching.lock().await;
        // Another task may have fetched while this one waited; and a fetch tried lately (failed,
        // or without this key) is not tried again before the gap, so neither made-up keys nor a
        // provider that is down make every request wait on the provider.
        let (fresh, tried_lately) = {
            let cached = lock(&self.cached);
            (
                cached.fetched.is_some_and(|at| at.elapsed() < self.max_age),
                cached
                    .attempted
                    .is_some_and(|at| at.elapsed() < self.refetch_gap),
            )
        };
        if let Some(key) = self.key(kid, algorithm).filter(|_| fresh) {
            return Ok(key);
        }
        if tried_lately {
            return held.ok_or_else(|| "token signed with an unknown key".into());
        }
        lock(&self.cached).attempted = Some(Instant::now());
        match fetcher.get_json(&self.url, None).await {
            Ok(set) => {
                let keys = parse_set(&set);
                tracing::info!(url = %self.url, keys = keys.len(), "fetched a JSON Web Key Set");
                let mut cached = lock(&self.cached);
                cached.keys = keys;
                cached.fetched = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "fetching a JSON Web Key Set failed");
                // Keys held stay usable while the provider is away.
                return held
                    .ok_or_else(|| format!("the provider's keys could not be fetched: it {e}"));
            }
        }
        self.key(kid, algorithm)
            .ok_or_else(|| "token signed with an unknown key".into())
    }
}

fn allowed(algorithm: Algorithm, expect: &Expect<'_>) -> Result<Algorithm, String> {
    if expect.algorithms.contains(&algorithm) {
        Ok(algorithm)
    } else {
        Err(format!(
            "token signed with {algorithm:?}, which is not allowed"
        ))
    }
}

fn check(
    token: &str,
    key: &DecodingKey,
    algorithm: Algorithm,
    expect: &Expect<'_>,
) -> Result<Map<String, Value>, String> {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_issuer(&[expect.issuer]);
    validation.set_audience(&[expect.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
        .map_err(|e| refusal(&e).to_owned())?;
    Ok(data.claims)
}

/// The signing keys of a set: asymmetric ones of a supported kind, not marked for encryption.
/// A key the set declares for one algorithm serves only that one.
fn parse_set(set: &Value) -> Vec<Key> {
    let Some(entries) = set.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| serde_json::from_value::<Jwk>(entry.clone()).ok())
        .filter(|jwk| jwk.common.public_key_use != Some(PublicKeyUse::Encryption))
        .filter_map(|jwk| {
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                (AlgorithmParameters::OctetKeyPair(_), None | Some(KeyAlgorithm::EdDSA)) => {
                    Algorithm::EdDSA
                }
                _ => return None,
            };
            Some(Key {
                kid: jwk.common.key_id.clone(),
                algorithm,
                decoding: DecodingKey::from_jwk(&jwk).ok()?,
            })
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
