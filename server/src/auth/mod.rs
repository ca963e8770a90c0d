//! Accounts and authentication: passwords, JWT access tokens, rotating refresh tokens, login
//! throttling, and telling which origins a browser may call from. See `docs/auth.md`.

pub mod bans;
mod external;
mod fetch;
mod jwks;
mod jwt;
mod names;
pub mod oauth;
pub mod password;
mod secret;
mod throttle;
mod tokens;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use parley_stomp::destination::valid_user;
use parley_stomp::session::{Identity, Scope};
use tokio_util::sync::CancellationToken;

pub use bans::Bans;
pub use external::{ExternalSettings, ExternalUser};
pub use jwt::{JwtAlgorithm, KeySettings, Keys};
pub use names::{check_new_account, reserved_for_guests, GUEST_PREFIX};
pub use password::Passwords;
use secret::{hash_token, random_token};
use throttle::{Limits, Throttle};
use tokens::PersonalTokens;
pub use tokens::{looks_like_personal_token, TokenError, TOKEN_PREFIX};

use crate::clock::now_ms;
use crate::metrics;
use crate::store::{self, AccessToken, RefreshRecord, Rotation, Store};

/// The browser session cookie: it holds a refresh token.
pub const SESSION_COOKIE: &str = "parley_session";

/// Auth settings, resolved.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// Signing keys and claims.
    pub keys: KeySettings,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// `POST /api/register` is open.
    pub registration_open: bool,
    /// Connections without an account are allowed.
    pub allow_guests: bool,
    /// Failed logins for one username from one client address before 429 (growing delays).
    pub failures_per_user: u32,
    /// Failed logins from one client address before 429 (growing delays).
    pub failures_per_ip: u32,
    /// Registration requests per client address per minute before 429.
    pub registrations_per_ip: u32,
    /// Extra origins allowed for WebSockets and cookie requests; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Signing in through other sites, and external tokens.
    pub identity: oauth::IdentitySettings,
}

/// Who a request or connection is, and until when.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The user.
    pub identity: Identity,
    /// When the credential runs out (ms since the epoch); `None` for guests.
    pub expires_ms: Option<u64>,
    /// Set when a personal access token authenticated it: cancelled when that token is
    /// revoked, which ends the session. Such a credential cannot manage tokens.
    pub revoked: Option<Arc<CancellationToken>>,
}

impl Authenticated {
    /// Authenticated by a personal access token.
    pub fn by_personal_token(&self) -> bool {
        self.revoked.is_some()
    }
}

/// A freshly issued pair.
#[derive(Debug)]
pub struct TokenPair {
    /// The JWT.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The opaque refresh token.
    pub refresh_token: String,
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong username or password (deliberately not saying which).
    #[error("invalid username or password")]
    Invalid,
    /// Too many failures lately; retry after this long.
    #[error("too many failed logins; retry in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// Storage failed.
    #[error("storage error")]
    Storage(#[from] anyhow::Error),
    /// Too many password checks are waiting.
    #[error("{0}")]
    Busy(#[from] password::HashError),
    /// The right password, but an operator banned the account (`banned: <reason>`).
    #[error("{0}")]
    Banned(String),
}

/// Why a registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Bad username or password, with the rule.
    #[error("{0}")]
    Invalid(&'static str),
    /// The name is taken.
    #[error("username taken")]
    Taken,
    /// Registration is closed.
    #[error("registration is closed")]
    Closed,
    /// Too many registrations from this address lately; retry after this long.
    #[error("too many registrations; retry in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// Storage failed.
    #[error("storage error")]
    Storage(#[from] anyhow::Error),
    /// Too many password checks are waiting.
    #[error("{0}")]
    Busy(#[from] password::HashError),
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Unknown, expired or revoked.
    #[error("invalid refresh token")]
    Invalid,
    /// A rotated token came back: its family is now revoked.
    #[error("refresh token reused; the session is revoked")]
    Reused,
    /// An operator banned the account (`banned: <reason>`).
    #[error("{0}")]
    Banned(String),
    /// Storage failed.
    #[error("storage error")]
    Storage(#[from] anyhow::Error),
}

/// Accounts and tokens. Shared by every connection; cheap checks are synchronous, anything that
/// hashes a password or touches storage is async and runs off the runtime's threads.
pub struct Auth {
    settings: AuthSettings,
    keys: Keys,
    passwords: Passwords,
    throttle: Arc<Throttle>,
    store: Arc<dyn Store>,
    /// Numbers unnamed guests.
    next_guest: AtomicU64,
    /// Calls to identity providers.
    fetcher: Arc<fetch::Fetcher>,
    /// Signing in with other sites.
    oauth: oauth::SignIn,
    /// The external identity provider whose access tokens count as credentials.
    external: Option<external::External>,
    /// Personal access tokens, and the open sessions they authenticated.
    personal: PersonalTokens,
    /// Banned users: refused every credential.
    bans: Arc<Bans>,
}

impl Auth {
    /// Auth over `store`, signing with `keys`.
    pub fn new(
        settings: AuthSettings,
        keys: Keys,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Arc<Self>> {
        let identity = &settings.identity;
        let external = identity
            .external
            .clone()
            .map(|e| external::External::new(e, identity.jwks_refetch, identity.jwks_max_age));
        let fetcher = Arc::new(fetch::Fetcher::new(identity.timeout)?);
        let throttle = Arc::new(Throttle::new(Limits {
            per_user_and_ip: settings.failures_per_user,
            per_ip: settings.failures_per_ip,
            registrations_per_ip: settings.registrations_per_ip,
            sign_ins_per_ip: identity.sign_ins_per_ip,
        }));
        let oauth = oauth::SignIn::new(
            identity,
            keys.derive_secret("oauth cookies"),
            store.clone(),
            fetcher.clone(),
            throttle.clone(),
            settings.registration_open,
        );
        Ok(Arc::new(Self {
            fetcher,
            oauth,
            external,
            throttle,
            passwords: Passwords::new(),
            settings,
            keys,
            personal: PersonalTokens::new(store.clone()),
            store,
            next_guest: AtomicU64::new(1),
            bans: Arc::default(),
        }))
    }

    /// Banned users, shared with the hub (which closes their sessions).
    pub fn bans(&self) -> &Arc<Bans> {
        &self.bans
    }

    /// Signing in with other sites.
    pub fn sign_in(&self) -> &oauth::SignIn {
        &self.oauth
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Creates an account, for a client at `ip`.
    pub async fn register(
        &self,
        name: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<(), RegisterError> {
        if !self.settings.registration_open {
            return Err(RegisterError::Closed);
        }
        self.throttle.register(ip, Instant::now()).map_err(|wait| {
            metrics::auth("register", "throttled");
            RegisterError::Throttled(wait)
        })?;
        check_new_account(name, password).map_err(RegisterError::Invalid)?;
        // The name first: a taken one costs an indexed read, never a hash.
        if self.account_like(name).await?.is_some() {
            return Err(RegisterError::Taken);
        }
        let hash = self.passwords.hash(password.to_owned()).await?;
        let name = name.to_owned();
        match store::run(&self.store, move |store| store.create_user(&name, &hash)).await? {
            true => Ok(()),
            false => Err(RegisterError::Taken),
        }
    }

    /// Checks a username (exactly as registered) and password, throttling repeated failures
    /// per (name, `ip`) and per `ip`.
    pub async fn check_password(
        &self,
        name: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<(), LoginError> {
        // The attempt counts as a failure from here on (see Throttle::attempt). An early
        // return below (busy, storage) drops it unsettled, which gives it back: the client
        // learnt nothing about the password.
        let attempt = self
            .throttle
            .attempt(name, ip, Instant::now())
            .map_err(|wait| {
                metrics::auth("password", "throttled");
                LoginError::Throttled(wait)
            })?;
        let stored = match valid_user(name) {
            Some(name) => store::run(&self.store, move |store| store.password_hash(&name)).await?,
            None => None,
        };
        // Accounts made by signing in elsewhere have no password (an empty hash): none matches.
        let stored = stored.filter(|hash| !hash.is_empty());
        // An unknown user is checked against a dummy hash: both failures take the same time.
        if self.passwords.verify(password.to_owned(), stored).await? {
            attempt.succeeded();
            metrics::auth("password", "success");
            // Only the right password learns of a ban.
            self.bans.check(name).map_err(LoginError::Banned)
        } else {
            attempt.failed();
            metrics::auth("password", "failure");
            Err(LoginError::Invalid)
        }
    }

    /// Logs in: a new access token and a refresh token starting a new family.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<TokenPair, LoginError> {
        self.check_password(name, password, ip).await?;
        self.start_session(name).await
    }

    /// A new session of `user`: an access token and a refresh token starting a new family;
    /// refused (`banned: <reason>`) while an operator bans `user`.
    pub(crate) async fn start_session(&self, user: &str) -> Result<TokenPair, LoginError> {
        self.bans.check(user).map_err(LoginError::Banned)?;
        let (refresh_token, record) = self.new_refresh(user, random_token(16));
        store::run(&self.store, move |store| store.insert_refresh(&record)).await?;
        Ok(self.pair(user, refresh_token))
    }

    /// Rotates a refresh token into a new pair. A banned user's token is refused before it is
    /// rotated, so it still works once the ban is lifted.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, RefreshError> {
        let refreshed = self.rotate(refresh_token).await;
        let result = if refreshed.is_ok() {
            "success"
        } else {
            "failure"
        };
        metrics::auth("refresh", result);
        refreshed
    }

    async fn rotate(&self, refresh_token: &str) -> Result<TokenPair, RefreshError> {
        let old = hash_token(refresh_token);
        if !self.bans.is_empty() {
            let hash = old;
            let user = store::run(&self.store, move |s| s.refresh_user(&hash, now_ms())).await?;
            if let Some(user) = user {
                self.bans.check(&user).map_err(RefreshError::Banned)?;
            }
        }
        // The successor inherits the old token's family and user inside the store.
        let (new_token, record) = self.new_refresh("", String::new());
        let rotation = store::run(&self.store, move |store| {
            store.rotate_refresh(&old, &record, now_ms())
        })
        .await?;
        match rotation {
            // A ban made since the check above: the pair is refused wherever it is presented
            // while the ban lasts (every credential check asks), and works once it is lifted.
            Rotation::Rotated { user } => Ok(self.pair(&user, new_token)),
            Rotation::Reused => Err(RefreshError::Reused),
            Rotation::Invalid => Err(RefreshError::Invalid),
        }
    }

    /// Revokes the family of a refresh token.
    pub async fn logout(&self, refresh_token: &str) -> anyhow::Result<bool> {
        let hash = hash_token(refresh_token);
        store::run(&self.store, move |store| store.revoke_family(&hash)).await
    }

    /// The user of a valid session cookie's refresh token, without rotating it.
    pub async fn cookie_user(&self, refresh_token: &str) -> anyhow::Result<Option<String>> {
        let hash = hash_token(refresh_token);
        store::run(&self.store, move |store| {
            store.refresh_user(&hash, now_ms())
        })
        .await
    }

    /// The account whose name equals `name` ignoring case, spelt as registered.
    pub async fn account_like(&self, name: &str) -> anyhow::Result<Option<String>> {
        let name = name.to_owned();
        store::run(&self.store, move |store| store.account_like(&name)).await
    }

    /// True if `name` is an account (exactly so spelt).
    pub async fn is_registered(&self, name: &str) -> anyhow::Result<bool> {
        let name = name.to_owned();
        Ok(
            store::run(&self.store, move |store| store.password_hash(&name))
                .await?
                .is_some(),
        )
    }

    /// Verifies any presented token: a personal access token (`pat_…`, read from storage), an
    /// external identity provider's access token (when one is configured), or Parley's own JWT.
    /// Every place that takes a token calls this. `Err` says why it is refused, never echoing
    /// the token.
    /// A banned user's credential is refused (`banned: <reason>`).
    pub async fn verify_any(&self, token: &str) -> Result<Authenticated, String> {
        let verified = self.verify_any_kind(token).await;
        metrics::auth(
            "token",
            if verified.is_ok() {
                "success"
            } else {
                "failure"
            },
        );
        verified
    }

    async fn verify_any_kind(&self, token: &str) -> Result<Authenticated, String> {
        if let Some(result) = self.verify_external(token).await {
            let who = result?;
            self.bans.check(&who.identity.name)?;
            return Ok(who);
        }
        if token.starts_with(TOKEN_PREFIX) {
            let (identity, expires_ms, revoked) = self.personal.verify(token).await?;
            self.bans.check(&identity.name)?;
            return Ok(Authenticated {
                identity,
                expires_ms: Some(expires_ms),
                revoked: Some(revoked),
            });
        }
        self.verify(token)
    }

    /// Makes a personal access token for account `user`: `(the token, its record)`. The token
    /// itself is never stored nor shown again.
    pub async fn create_token(
        &self,
        user: &str,
        name: &str,
        scope: &str,
        days: Option<u64>,
    ) -> Result<(String, AccessToken), TokenError> {
        self.personal.create(user, name, scope, days).await
    }

    /// `user`'s live personal access tokens, oldest first.
    pub async fn tokens(&self, user: &str) -> anyhow::Result<Vec<AccessToken>> {
        self.personal.list(user).await
    }

    /// Revokes `user`'s personal access token `id` and ends the sessions it opened here;
    /// `false` if `user` has no such token.
    pub async fn revoke_token(&self, user: &str, id: &str) -> anyhow::Result<bool> {
        self.personal.revoke(user, id).await
    }

    /// Ends the sessions of personal access tokens revoked elsewhere (or expired), until the
    /// process ends ([`tokens::SWEEP_EVERY`]).
    pub async fn sweep_revoked_tokens(self: Arc<Self>) {
        self.personal.sweep().await;
    }

    /// Verifies one of Parley's access tokens (a JWT); `Err` says why it is refused, never
    /// echoing the token.
    pub fn verify(&self, token: &str) -> Result<Authenticated, String> {
        if let Some(external) = self.external.as_ref().filter(|e| e.claims_issuer(token)) {
            let who = external.verify_cached(token).map(external_session)?;
            self.bans.check(&who.identity.name)?;
            return Ok(who);
        }
        let claims = self.keys.verify(token)?;
        self.bans.check(&claims.sub)?;
        Ok(Authenticated {
            identity: Identity::new(claims.sub, false),
            expires_ms: Some(claims.exp.saturating_mul(1000)),
            revoked: None,
        })
    }

    /// Verifies an external identity provider's access token, fetching its keys as needed;
    /// `None` if `token` is not that provider's. Its user may not be a Parley account's name:
    /// such a token could otherwise speak for the account.
    async fn verify_external(&self, token: &str) -> Option<Result<Authenticated, String>> {
        let external = self.external.as_ref().filter(|e| e.claims_issuer(token))?;
        let user = match external.verify(&self.fetcher, token).await {
            Ok(user) => user,
            Err(why) => return Some(Err(why)),
        };
        Some(match self.account_like(&user.name).await {
            Ok(None) => Ok(external_session(user)),
            Ok(Some(_)) => Err(format!(
                "the name {:?} belongs to a Parley account; the identity provider cannot speak for it",
                user.name
            )),
            Err(_) => Err("storage error".into()),
        })
    }

    /// A fresh access token `token` presented in-band by a connection of `current`: the new
    /// expiry if it is for the same (registered) user. `Err` says why it is refused.
    pub fn renew(&self, current: &Identity, token: &str) -> Result<Option<u64>, String> {
        if token.starts_with(TOKEN_PREFIX) {
            return Err(
                "a personal access token cannot renew a session: a session it opens \
                        lasts until the token expires"
                    .into(),
            );
        }
        let renewed = self.verify(token)?;
        if current.guest || renewed.identity.name != current.name {
            return Err("the token is for another user".into());
        }
        Ok(renewed.expires_ms)
    }

    /// A guest named `name` (or `guest-<n>`), if guests are allowed and the name is no account's
    /// in any case.
    pub async fn guest(&self, name: Option<&str>) -> Result<Authenticated, String> {
        if !self.settings.allow_guests {
            return Err("an account is required (guests are not allowed)".into());
        }
        let name = match name {
            Some(name) => {
                let name = valid_user(name).ok_or("names are 1-32 of letters, digits, _ - .")?;
                if reserved_for_guests(&name) {
                    return Err("names starting with guest- are given by the server".into());
                }
                match self.account_like(&name).await {
                    Ok(None) => name,
                    Ok(Some(_)) => {
                        return Err(format!(
                            "the name {name:?} belongs to a registered user; sign in"
                        ))
                    }
                    Err(_) => return Err("storage error".into()),
                }
            }
            None => format!(
                "{GUEST_PREFIX}{}",
                self.next_guest.fetch_add(1, Ordering::Relaxed)
            ),
        };
        self.bans.check(&name)?;
        Ok(Authenticated {
            identity: Identity::new(name, true),
            expires_ms: None,
            revoked: None,
        })
    }

    /// An identity that lasts as long as an access token would, for password and cookie logins.
    pub fn session_for(&self, name: &str) -> Authenticated {
        Authenticated {
            identity: Identity::new(name, false),
            expires_ms: Some(now_ms() + self.settings.access_ttl.as_millis() as u64),
            revoked: None,
        }
    }

    /// Authenticates an HTTP request by bearer token, `?access_token=` (when `query` allows it)
    /// or the session cookie. `Ok(None)`: no credentials at all.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<Authenticated>, String> {
        if let Some(token) = bearer(headers) {
            return self.verify_any(token).await.map(Some);
        }
        if let Some(token) = query.and_then(query_token) {
            return self.verify_any(&token).await.map(Some);
        }
        if let Some(cookie) = session_cookie(headers) {
            // A stale cookie (logged out, revoked, expired) is no credential at all, so a page
            // that still holds one can carry on as a guest where guests are allowed.
            return match self.cookie_user(cookie).await {
                Ok(Some(user)) => {
                    self.bans.check(&user)?;
                    Ok(Some(self.session_for(&user)))
                }
                Ok(None) => Ok(None),
                Err(_) => Err("storage error".into()),
            };
        }
        Ok(None)
    }

    /// Is a request with this `Origin` (and `Host`) allowed? No `Origin`: a non-browser client.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let same_origin = host.is_some_and(|host| {
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
        });
        same_origin
            || self
                .settings
                .allowed_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    /// Deletes expired refresh and personal access tokens now and then, until the process ends.
    pub async fn purge_expired(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            match store::run(&self.store, move |store| store.purge_refresh(now_ms())).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "expired refresh tokens deleted"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "purging refresh tokens failed"),
            }
            match self.personal.purge().await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "expired access tokens deleted"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "purging access tokens failed"),
            }
        }
    }

    fn new_refresh(&self, user: &str, family: String) -> (String, RefreshRecord) {
        let token = random_token(32);
        let record = RefreshRecord {
            hash: hash_token(&token),
            family,
            user: user.to_owned(),
            expires_ms: now_ms() + self.settings.refresh_ttl.as_millis() as u64,
        };
        (token, record)
    }

    fn pair(&self, user: &str, refresh_token: String) -> TokenPair {
        let ttl = self.settings.access_ttl;
        TokenPair {
            // Signing with a loaded key only fails on a broken key, which start-up rules out.
            access_token: self.keys.mint(user, ttl).unwrap_or_default(),
            expires_in: ttl.as_secs(),
            refresh_token,
        }
    }
}

/// The session of an external token's user.
fn external_session(user: ExternalUser) -> Authenticated {
    let mut identity = Identity::new(user.name, false);
    if !user.writer {
        identity.scope = Scope::Read;
    }
    Authenticated {
        identity,
        expires_ms: Some(user.expires_ms),
        revoked: None,
    }
}

/// `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    bearer_value(value)
}

/// The token of an `Authorization` value `Bearer <token>` (scheme case-insensitive).
pub fn bearer_value(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// The session cookie's value.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// The value of cookie `name`, if present and not empty.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name && !value.is_empty()).then_some(value)
        })
}

/// `access_token=` from a query string.
pub fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// True if `s` has the shape of a JWT (three base64url parts), so a STOMP passcode holding one
/// is checked as a token rather than as a password.
pub fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_in_headers_and_queries() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "bearer abc".parse().unwrap());
        headers.insert("cookie", "a=1; parley_session=xyz; b=2".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        assert_eq!(session_cookie(&headers), Some("xyz"));
        assert_eq!(bearer_value("Basic abc"), None);
        assert_eq!(
            query_token("name=x&access_token=t.u.v").as_deref(),
            Some("t.u.v")
        );
        assert!(looks_like_jwt(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig-_x"
        ));
        assert!(!looks_like_jwt("hunter2"));
    }

    /// Auth over `store` with a fixed HS256 secret, for tests.
    pub(super) fn auth_over(store: Arc<dyn Store>) -> Arc<Auth> {
        let settings = settings(std::env::temp_dir(), vec![]);
        let keys = Keys::load(&settings.keys).unwrap();
        Auth::new(settings, keys, store).unwrap()
    }

    fn settings(data: std::path::PathBuf, allowed_origins: Vec<String>) -> AuthSettings {
        let keys = KeySettings {
            algorithm: JwtAlgorithm::Hs256,
            data,
            secret_file: None,
            secret: Some("s".repeat(32)),
            private_key: None,
            public_key: None,
            issuer: "parley".into(),
            audience: "parley".into(),
        };
        AuthSettings {
            keys,
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(60),
            registration_open: true,
            allow_guests: false,
            failures_per_user: 5,
            failures_per_ip: 20,
            registrations_per_ip: 20,
            allowed_origins,
            identity: oauth::IdentitySettings::default(),
        }
    }

    #[tokio::test]
    async fn personal_tokens_authenticate_with_their_scope_and_never_renew() {
        let dir = std::env::temp_dir().join(format!("parley-auth-pat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let auth = auth_over(Arc::new(crate::store::SqliteStore::open(&dir).unwrap()));
        let (token, record) = auth
            .create_token("alice", "bot", "room:lobby", None)
            .await
            .unwrap();
        let who = auth.verify_any(&token).await.unwrap();
        assert!(who.by_personal_token());
        assert_eq!(who.expires_ms, Some(record.expires_ms));
        assert_eq!(who.identity.scope.to_string(), "room:lobby");
        let renewal = auth.renew(&who.identity, &token).unwrap_err();
        assert!(renewal.contains("cannot renew"), "{renewal}");
        assert!(auth.revoke_token("alice", &record.id).await.unwrap());
        assert!(who.revoked.unwrap().is_cancelled(), "its sessions end");
        assert!(auth.verify_any(&token).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn banned_users_get_no_session_and_keep_their_refresh_tokens() {
        let dir = std::env::temp_dir().join(format!("parley-auth-ban-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let auth = auth_over(Arc::new(crate::store::SqliteStore::open(&dir).unwrap()));
        let pair = auth.start_session("alice").await.unwrap();
        auth.bans().ban("ALICE", "spam");
        // What signing in through a provider (or choosing a name there) gets.
        let refused = auth.start_session("alice").await.unwrap_err();
        assert!(
            matches!(&refused, LoginError::Banned(why) if why == "banned: spam"),
            "{refused:?}"
        );
        let refused = auth.refresh(&pair.refresh_token).await.unwrap_err();
        assert!(matches!(refused, RefreshError::Banned(_)), "{refused:?}");
        auth.bans().unban("alice");
        let renewed = auth.refresh(&pair.refresh_token).await;
        assert!(renewed.is_ok(), "not used up by the refused refresh");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn origins_are_same_origin_or_listed() {
        let data = std::env::temp_dir().join(format!("parley-origin-{}", std::process::id()));
        let settings = settings(data, vec!["https://good.example".into()]);
        let keys = settings.keys.clone();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&keys.data.join("db")).unwrap());
        let auth = Auth::new(settings, Keys::load(&keys).unwrap(), store).unwrap();
        let host = Some("127.0.0.1:8080");
        assert!(auth.origin_allowed(None, host), "non-browser clients");
        assert!(auth.origin_allowed(Some("http://127.0.0.1:8080"), host));
        assert!(auth.origin_allowed(Some("https://GOOD.example"), host));
        assert!(!auth.origin_allowed(Some("https://evil.example"), host));
        assert!(!auth.origin_allowed(Some("http://127.0.0.1:8081"), host));
        assert!(!auth.origin_allowed(Some("null"), host));
        assert!(!auth.origin_allowed(Some("http://127.0.0.1:8080"), None));
    }

    #[test]
    fn refresh_tokens_are_random_and_long() {
        let a = random_token(32);
        assert_eq!(a.len(), 43, "256 bits in base64url");
        assert_ne!(a, random_token(32));
    }
}
