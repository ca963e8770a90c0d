//! One provider: its endpoints (configured, or discovered from an OpenID Connect issuer and
//! cached), the authorization request, the code exchange, and who the person is — from a fully
//! checked ID token, or from the user-info endpoint of a plain OAuth 2.0 provider.

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::config::{ProviderConfig, ProviderKind};
use super::failure::Failure;
use super::state::LoginState;
use crate::auth::fetch::{FetchError, Fetcher};
use crate::auth::jwks::{Expect, Jwks, ASYMMETRIC, LEEWAY_SECS};
use crate::clock::now_ms;

/// A discovery document is used this long before it is fetched again.
const DISCOVERY_LIFE: Duration = Duration::from_secs(3600);

/// Where to send people and codes.
#[derive(Clone)]
struct Endpoints {
    /// The issuer as the provider spells it (`iss` of its ID tokens); OpenID Connect only.
    issuer: Option<String>,
    authorize: String,
    token: String,
    userinfo: Option<String>,
    /// ID token algorithms the provider announced, among those Parley accepts.
    algorithms: Vec<Algorithm>,
}

/// What discovery found, and when it last failed.
#[derive(Default)]
struct Discovered {
    endpoints: Option<(Endpoints, Instant)>,
    failed: Option<(Instant, Failure)>,
}

/// The person, as the provider says.
pub struct ProviderUser {
    /// Stable id at the provider (`sub`, or the configured profile field).
    pub subject: String,
    /// The name it suggests, if any.
    pub name: Option<String>,
}

/// A configured provider and what was learnt about it.
pub struct Provider {
    pub(super) config: ProviderConfig,
    discovered: tokio::sync::Mutex<Discovered>,
    jwks: std::sync::OnceLock<Jwks>,
    jwks_refetch: Duration,
    jwks_max_age: Duration,
}

impl Provider {
    pub(super) fn new(
        config: ProviderConfig,
        jwks_refetch: Duration,
        jwks_max_age: Duration,
    ) -> Self {
        Self {
            config,
            discovered: tokio::sync::Mutex::default(),
            jwks: std::sync::OnceLock::new(),
            jwks_refetch,
            jwks_max_age,
        }
    }

    /// The URL to send the person to.
    pub(super) async fn authorize_url(
        &self,
        fetcher: &Fetcher,
        state: &LoginState,
        challenge: &str,
    ) -> Result<String, Failure> {
        let endpoints = self.endpoints(fetcher).await?;
        let mut url = url::Url::parse(&endpoints.authorize)
            .map_err(|_| self.invalid("its authorization endpoint is not a URL"))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", &state.redirect_uri)
                .append_pair("state", &state.id)
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256");
            if !self.config.scopes.is_empty() {
                query.append_pair("scope", &self.config.scopes);
            }
            if endpoints.issuer.is_some() {
                query.append_pair("nonce", &state.nonce);
            }
        }
        Ok(url.into())
    }

    /// Exchanges `code` for tokens and finds out who the person is.
    pub(super) async fn identify(
        &self,
        fetcher: &Fetcher,
        state: &LoginState,
        code: &str,
    ) -> Result<ProviderUser, Failure> {
        let endpoints = self.endpoints(fetcher).await?;
        let tokens = self.exchange(fetcher, &endpoints, state, code).await?;
        let access_token = tokens.get("access_token").and_then(Value::as_str);
        if endpoints.issuer.is_some() {
            let id_token = tokens
                .get("id_token")
                .and_then(Value::as_str)
                .ok_or_else(|| self.unverified("no ID token came with the code".into()))?;
            let claims = self
                .check_id_token(fetcher, &endpoints, id_token, state)
                .await?;
            let subject = text(claims.get("sub")).unwrap_or_default();
            let mut name = suggested_name(&claims);
            // Providers may keep profile claims to the user-info endpoint.
            if name.is_none() {
                if let (Some(url), Some(token)) = (&endpoints.userinfo, access_token) {
                    let info = fetcher
                        .get_json(url, Some(token))
                        .await
                        .map_err(|e| self.fetch(e))?;
                    if text(info.get("sub")).as_deref() == Some(subject.as_str()) {
                        name = info.as_object().and_then(suggested_name);
                    }
                }
            }
            return Ok(ProviderUser { subject, name });
        }
        let ProviderKind::OAuth2 {
            id_field,
            name_field,
            ..
        } = &self.config.kind
        else {
            return Err(self.invalid("it has no user-info endpoint"));
        };
        let url = endpoints.userinfo.as_deref().unwrap_or_default();
        let token =
            access_token.ok_or_else(|| self.invalid("no access token came with the code"))?;
        let profile = fetcher
            .get_json(url, Some(token))
            .await
            .map_err(|e| self.fetch(e))?;
        let subject = text(field(&profile, id_field))
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or_else(|| self.invalid("the profile has no user id"))?;
        Ok(ProviderUser {
            subject,
            name: text(field(&profile, name_field)),
        })
    }

    async fn exchange(
        &self,
        fetcher: &Fetcher,
        endpoints: &Endpoints,
        state: &LoginState,
        code: &str,
    ) -> Result<Value, Failure> {
        let c = &self.config;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", state.redirect_uri.as_str()),
            ("code_verifier", state.verifier.as_str()),
            ("client_id", c.client_id.as_str()),
        ];
        let basic = c
            .basic_auth
            .then_some((c.client_id.as_str(), c.client_secret.as_str()));
        if !c.basic_auth {
            form.push(("client_secret", c.client_secret.as_str()));
        }
        match fetcher.post_form(&endpoints.token, &form, basic).await {
            Ok(tokens) => Ok(tokens),
            Err(FetchError::Status(400, Some(body)))
                if body.get("error").and_then(Value::as_str) == Some("invalid_grant") =>
            {
                Err(Failure::CodeUsed(c.label.clone()))
            }
            Err(e) => Err(self.fetch(e)),
        }
    }

    /// OpenID Connect Core §3.1.3.7: signature by a key of the provider's set with an announced
    /// asymmetric algorithm, `iss`, `aud`, `exp`, `iat`, `nonce`, and `azp` when present or
    /// needed.
    async fn check_id_token(
        &self,
        fetcher: &Fetcher,
        endpoints: &Endpoints,
        token: &str,
        state: &LoginState,
    ) -> Result<Map<String, Value>, Failure> {
        let jwks = self
            .jwks
            .get()
            .ok_or_else(|| self.invalid("it announced no keys"))?;
        let issuer = endpoints.issuer.as_deref().unwrap_or_default();
        let expect = Expect {
            issuer,
            audience: &self.config.client_id,
            algorithms: &endpoints.algorithms,
        };
        let claims = jwks
            .verify(fetcher, token, &expect)
            .await
            .map_err(|why| self.unverified(why))?;
        if claims.get("nonce").and_then(Value::as_str) != Some(state.nonce.as_str()) {
            return Err(self.unverified("its nonce is not this sign-in's".into()));
        }
        let audiences = match claims.get("aud") {
            Some(Value::Array(list)) => list.len(),
            _ => 1,
        };
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.config.client_id => {
                return Err(self.unverified("it was issued to another client (azp)".into()))
            }
            None if audiences > 1 => {
                return Err(self.unverified("it has several audiences and no azp".into()))
            }
            _ => {}
        }
        let now = now_ms() / 1000;
        match claims.get("iat").and_then(Value::as_u64) {
            Some(iat) if iat <= now + LEEWAY_SECS => {}
            _ => {
                return Err(
                    self.unverified("its issue time (iat) is missing or in the future".into())
                )
            }
        }
        match text(claims.get("sub")) {
            Some(sub) if !sub.is_empty() && sub.len() <= 255 => Ok(claims),
            _ => Err(self.unverified("it has no usable subject".into())),
        }
    }

    async fn endpoints(&self, fetcher: &Fetcher) -> Result<Endpoints, Failure> {
        let issuer = match &self.config.kind {
            ProviderKind::OAuth2 {
                authorize,
                token,
                userinfo,
                ..
            } => {
                return Ok(Endpoints {
                    issuer: None,
                    authorize: authorize.clone(),
                    token: token.clone(),
                    userinfo: Some(userinfo.clone()),
                    algorithms: Vec::new(),
                })
            }
            ProviderKind::Oidc { issuer } => issuer,
        };
        let asked = Instant::now();
        let mut discovered = self.discovered.lock().await;
        if let Some((endpoints, at)) = &discovered.endpoints {
            if at.elapsed() < DISCOVERY_LIFE {
                return Ok(endpoints.clone());
            }
        }
        // A provider that is down fails everyone who waited on that attempt at once, rather
        // than each in turn after a deadline of their own.
        if let Some((at, failure)) = &discovered.failed {
            if *at >= asked {
                return Err(failure.clone());
            }
        }
        let url = format!("{issuer}/.well-known/openid-configuration");
        let doc = match fetcher.get_json(&url, None).await {
            Ok(doc) => doc,
            Err(e) => {
                let failure = self.fetch(e);
                discovered.failed = Some((Instant::now(), failure.clone()));
                return Err(failure);
            }
        };
        let get = |key: &str| doc.get(key).and_then(Value::as_str).map(str::to_owned);
        let announced = get("issuer").unwrap_or_default();
        // OpenID Connect Discovery §4.3: the document is the issuer's own.
        if announced.trim_end_matches('/') != issuer {
            return Err(self.invalid("its discovery document names another issuer"));
        }
        let (Some(authorize), Some(token), Some(jwks_uri)) = (
            get("authorization_endpoint"),
            get("token_endpoint"),
            get("jwks_uri"),
        ) else {
            return Err(self.invalid("its discovery document lacks an endpoint"));
        };
        let algorithms = match doc.get("id_token_signing_alg_values_supported") {
            Some(Value::Array(names)) => ASYMMETRIC
                .into_iter()
                .filter(|a| names.iter().any(|n| n.as_str() == Some(&format!("{a:?}"))))
                .collect(),
            // The default of OpenID Connect Discovery.
            _ => vec![Algorithm::RS256],
        };
        self.jwks
            .get_or_init(|| Jwks::new(jwks_uri, self.jwks_refetch, self.jwks_max_age));
        let endpoints = Endpoints {
            issuer: Some(announced),
            authorize,
            token,
            userinfo: get("userinfo_endpoint"),
            algorithms,
        };
        discovered.endpoints = Some((endpoints.clone(), Instant::now()));
        Ok(endpoints)
    }

    fn fetch(&self, e: FetchError) -> Failure {
        let label = self.config.label.clone();
        match e {
            FetchError::Timeout => Failure::Timeout(label),
            FetchError::Unreachable => Failure::Unreachable(label),
            FetchError::Status(status, _) => {
                Failure::ProviderError(label, format!("HTTP {status}"))
            }
            FetchError::Invalid(why) => Failure::ProviderError(label, why.to_owned()),
        }
    }

    fn invalid(&self, why: &str) -> Failure {
        Failure::ProviderError(self.config.label.clone(), why.to_owned())
    }

    fn unverified(&self, why: String) -> Failure {
        Failure::Unverified(self.config.label.clone(), why)
    }
}

/// The name a profile suggests: `preferred_username`, else `nickname`, else `name`.
fn suggested_name(claims: &Map<String, Value>) -> Option<String> {
    ["preferred_username", "nickname", "name"]
        .iter()
        .find_map(|k| text(claims.get(*k)).filter(|s| !s.is_empty()))
}

/// A dotted path (`properties.nickname`) into a profile.
fn field<'a>(profile: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(profile, |v, key| v.get(key))
}

/// A string, or a number as text (some providers number their users).
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
