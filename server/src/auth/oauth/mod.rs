//! Signing in with another site: OAuth 2.0 authorization code with PKCE (S256), OpenID Connect
//! on top where the provider speaks it, and what the sign-in does to accounts — the pair
//! (provider, subject) is one Parley account: created at the first sign-in (with the provider's
//! name when free, else one the person chooses), or linked to a signed-in account.

mod provider;
pub mod state;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use self::provider::Provider;
use self::state::{local_path, LoginState, PendingSignup, Sealer, Unsealed};
use super::names::{check_account_name, name_from_profile};
use super::{random_token, Auth, TokenPair};
use crate::clock::now_ms;
use crate::store::{self, Link, LinkedIdentity, Unlink};

/// Sign-in settings, resolved.
#[derive(Clone, Debug, Default)]
pub struct IdentitySettings {
    /// Base of redirect URIs, without a trailing `/`.
    pub public_url: Option<String>,
    /// The providers.
    pub providers: Vec<ProviderConfig>,
    /// Deadline of each call to a provider.
    pub timeout: Duration,
    /// How long a person has at the provider, and then to choose a name.
    pub sign_in_timeout: Duration,
    /// Least time between key-set fetches caused by unknown keys.
    pub jwks_refetch: Duration,
    /// Age after which key sets are fetched again.
    pub jwks_max_age: Duration,
    /// Resource-server mode.
    pub external: Option<super::ExternalSettings>,
}

/// One provider, resolved.
#[derive(Clone)]
pub struct ProviderConfig {
    /// In URLs: `/auth/<name>/…`.
    pub name: String,
    /// On buttons and in messages.
    pub label: String,
    /// OpenID Connect or plain OAuth 2.0.
    pub kind: ProviderKind,
    /// Parley's client id there.
    pub client_id: String,
    /// Parley's client secret there.
    pub client_secret: String,
    /// Requested scopes, space-separated.
    pub scopes: String,
    /// Authenticate at the token endpoint with HTTP Basic (else in the form).
    pub basic_auth: bool,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<hidden>")
            .finish_non_exhaustive()
    }
}

/// How a provider is reached.
#[derive(Clone, Debug)]
pub enum ProviderKind {
    /// OpenID Connect: everything from the issuer's discovery document.
    Oidc {
        /// The issuer URL, without a trailing `/`.
        issuer: String,
    },
    /// Plain OAuth 2.0: endpoints and profile fields given.
    OAuth2 {
        /// Authorization endpoint.
        authorize: String,
        /// Token endpoint.
        token: String,
        /// User-info (profile) endpoint.
        userinfo: String,
        /// Dotted path of the user id in the profile.
        id_field: String,
        /// Dotted path of the preferred name in the profile.
        name_field: String,
    },
}

impl ProviderKind {
    /// The URLs configured.
    pub fn urls(&self) -> Vec<&str> {
        match self {
            Self::Oidc { issuer } => vec![issuer],
            Self::OAuth2 {
                authorize,
                token,
                userinfo,
                ..
            } => vec![authorize, token, userinfo],
        }
    }
}

/// A provider as the page lists it.
pub struct ProviderInfo {
    /// Name.
    pub name: String,
    /// Label.
    pub label: String,
    /// `oidc` or `oauth2`.
    pub kind: &'static str,
}

/// Why a sign-in through a provider failed, in words for the person.
#[derive(Clone, Debug)]
pub enum Failure {
    /// No such provider here.
    UnknownProvider,
    /// No (genuine) state cookie, a state that does not match it, or one already used.
    NotStartedHere,
    /// The state cookie's life ran out.
    Expired,
    /// The person said no at the provider.
    Declined(String),
    /// The provider did not answer in time.
    Timeout(String),
    /// The provider could not be reached.
    Unreachable(String),
    /// The provider answered with an error or something unusable.
    ProviderError(String, String),
    /// The authorization code was already used (or expired).
    CodeUsed(String),
    /// The ID token failed a check.
    Unverified(String, String),
    /// Linking: that provider account belongs to another Parley account.
    AlreadyLinked(String),
    /// Linking: this account has another account of that provider.
    ProviderTaken(String),
    /// Linking needs a signed-in account.
    SignInFirst,
    /// No new accounts here.
    RegistrationClosed,
    /// Too many new accounts from this address lately.
    Throttled,
    /// Storage failed.
    Storage,
}

impl Failure {
    /// What the page says.
    pub fn words(&self) -> String {
        match self {
            Self::UnknownProvider => "There is no such sign-in provider here.".into(),
            Self::NotStartedHere => "This sign-in did not start here, or it was already \
                finished. Please start again."
                .into(),
            Self::Expired => "This sign-in took too long and expired. Please start again.".into(),
            Self::Declined(p) => {
                format!("You declined to sign in with {p}, so you are not signed in.")
            }
            Self::Timeout(p) => format!("{p} did not answer in time. Please try again later."),
            Self::Unreachable(p) => format!("{p} could not be reached. Please try again later."),
            Self::ProviderError(p, why) => format!("{p} could not sign you in ({why})."),
            Self::CodeUsed(p) => format!(
                "The sign-in code from {p} was already used or has expired. Please start again."
            ),
            Self::Unverified(p, why) => {
                format!("The answer from {p} could not be verified: {why}.")
            }
            Self::AlreadyLinked(p) => {
                format!("This {p} account is already linked to another Parley account.")
            }
            Self::ProviderTaken(p) => {
                format!("Your account is already linked to another {p} account; unlink it first.")
            }
            Self::SignInFirst => "Sign in to Parley first, then link the provider.".into(),
            Self::RegistrationClosed => "This server does not take new accounts.".into(),
            Self::Throttled => "Too many new accounts from your address lately; try later.".into(),
            Self::Storage => "Parley could not finish the sign-in (storage error).".into(),
        }
    }

    /// The HTTP status of the page saying it.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownProvider => 404,
            Self::Timeout(_) | Self::Unreachable(_) | Self::ProviderError(..) => 502,
            Self::Throttled => 429,
            Self::Storage => 503,
            _ => 400,
        }
    }
}

/// A sign-in started: send the browser to `location` with `cookie` as the state cookie.
pub struct Started {
    /// The provider's authorization URL.
    pub location: String,
    /// The sealed login state.
    pub cookie: String,
}

/// How a callback ended.
pub enum Finished {
    /// Signed in as `user` (a new account when `created`).
    SignedIn {
        /// The account.
        user: String,
        /// Its new session.
        tokens: TokenPair,
        /// Where to go.
        return_to: String,
        /// The account was made now.
        created: bool,
    },
    /// The provider was linked to the signed-in account.
    Linked {
        /// Where to go.
        return_to: String,
    },
    /// The person must choose a name: `cookie` is the sealed pending sign-up.
    ChooseName {
        /// The sealed [`PendingSignup`].
        cookie: String,
    },
}

/// Why choosing a name failed.
#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    /// No pending sign-up (or an altered one).
    #[error("no sign-up is waiting for a name; sign in again")]
    NoPending,
    /// It expired.
    #[error("the sign-up expired; sign in again")]
    Expired,
    /// The name breaks a rule.
    #[error("{0}")]
    Invalid(&'static str),
    /// The name is taken.
    #[error("username taken")]
    Taken,
    /// Registration is closed.
    #[error("registration is closed")]
    Closed,
    /// Storage failed.
    #[error("storage error")]
    Storage(#[from] anyhow::Error),
}

/// The configured providers.
pub struct Providers {
    list: Vec<Provider>,
    sealer: Sealer,
    public_url: Option<String>,
    life_ms: u64,
}

impl Providers {
    /// The providers of `settings`; cookies sealed under `key`.
    pub fn new(settings: &IdentitySettings, key: [u8; 32]) -> Self {
        Self {
            list: settings
                .providers
                .iter()
                .map(|c| Provider::new(c.clone(), settings.jwks_refetch, settings.jwks_max_age))
                .collect(),
            sealer: Sealer::new(key),
            public_url: settings.public_url.clone(),
            life_ms: settings.sign_in_timeout.as_millis() as u64,
        }
    }

    fn get(&self, name: &str) -> Result<&Provider, Failure> {
        self.list
            .iter()
            .find(|p| p.config.name == name)
            .ok_or(Failure::UnknownProvider)
    }

    /// The label of provider `name` (the name itself if unknown, e.g. removed from the config).
    pub fn label(&self, name: &str) -> String {
        self.get(name)
            .map_or_else(|_| name.to_owned(), |p| p.config.label.clone())
    }
}

const LOGIN_KIND: &str = "login";
const SIGNUP_KIND: &str = "signup";

impl Auth {
    /// The providers people can sign in with.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.oauth
            .list
            .iter()
            .map(|p| ProviderInfo {
                name: p.config.name.clone(),
                label: p.config.label.clone(),
                kind: match p.config.kind {
                    ProviderKind::Oidc { .. } => "oidc",
                    ProviderKind::OAuth2 { .. } => "oauth2",
                },
            })
            .collect()
    }

    /// The label of provider `name`.
    pub fn provider_label(&self, name: &str) -> String {
        self.oauth.label(name)
    }

    /// Starts a sign-in with `provider`; `origin` (`http://host`) makes the redirect URI when
    /// no public URL is configured; `link_user`: link to this account instead.
    pub async fn sign_in_start(
        &self,
        provider: &str,
        origin: &str,
        return_to: Option<&str>,
        link_user: Option<String>,
    ) -> Result<Started, Failure> {
        let p = self.oauth.get(provider)?;
        let base = self.oauth.public_url.as_deref().unwrap_or(origin);
        let state = LoginState {
            id: random_token(16),
            provider: provider.to_owned(),
            verifier: random_token(32),
            nonce: random_token(16),
            redirect_uri: format!("{base}/auth/{provider}/callback"),
            return_to: local_path(return_to),
            link_user,
            expires_ms: now_ms() + self.oauth.life_ms,
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(state.verifier.as_bytes()));
        let location = p.authorize_url(&self.fetcher, &state, &challenge).await?;
        Ok(Started {
            location,
            cookie: self.oauth.sealer.seal(LOGIN_KIND, &state),
        })
    }

    /// Finishes a sign-in at its callback: `query` is the callback's, `cookie` the state
    /// cookie's value, `ip` the client's.
    pub async fn sign_in_finish(
        &self,
        provider: &str,
        query: &str,
        cookie: Option<&str>,
        ip: IpAddr,
    ) -> Result<Finished, Failure> {
        let p = self.oauth.get(provider)?;
        let label = p.config.label.clone();
        let param = |key: &str| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let state: LoginState = match self.oauth.sealer.open(LOGIN_KIND, cookie.unwrap_or("")) {
            Ok(state) => state,
            Err(Unsealed::Expired) => return Err(Failure::Expired),
            Err(Unsealed::Invalid) => return Err(Failure::NotStartedHere),
        };
        if param("state").as_deref() != Some(state.id.as_str()) || state.provider != provider {
            return Err(Failure::NotStartedHere);
        }
        let (id, expires) = (state.id.clone(), state.expires_ms);
        let fresh = store::run(&self.store, move |s| {
            s.consume_login_state(&id, expires, now_ms())
        })
        .await
        .map_err(|_| Failure::Storage)?;
        if !fresh {
            return Err(Failure::NotStartedHere);
        }
        if let Some(error) = param("error") {
            return Err(match error.as_str() {
                "access_denied" => Failure::Declined(label),
                other => Failure::ProviderError(label, error_code(other)),
            });
        }
        let code = param("code").ok_or_else(|| Failure::ProviderError(label, "no code".into()))?;
        let who = p.identify(&self.fetcher, &state, &code).await?;
        self.settle(provider, &p.config.label, state, who, ip).await
    }

    /// What a verified provider account does: link, sign in, create, or ask for a name.
    async fn settle(
        &self,
        provider: &str,
        label: &str,
        state: LoginState,
        who: provider::ProviderUser,
        ip: IpAddr,
    ) -> Result<Finished, Failure> {
        let (prov, subject) = (provider.to_owned(), who.subject.clone());
        if let Some(user) = state.link_user {
            let linked = store::run(&self.store, move |s| {
                s.link_identity(&user, &prov, &subject)
            })
            .await
            .map_err(|_| Failure::Storage)?;
            return match linked {
                Link::Linked => Ok(Finished::Linked {
                    return_to: state.return_to,
                }),
                Link::OtherUser => Err(Failure::AlreadyLinked(label.to_owned())),
                Link::ProviderTaken => Err(Failure::ProviderTaken(label.to_owned())),
            };
        }
        let known = store::run(&self.store, move |s| s.identity_user(&prov, &subject))
            .await
            .map_err(|_| Failure::Storage)?;
        if let Some(user) = known {
            let tokens = self
                .start_session(&user)
                .await
                .map_err(|_| Failure::Storage)?;
            return Ok(Finished::SignedIn {
                user,
                tokens,
                return_to: state.return_to,
                created: false,
            });
        }
        if !self.settings.registration_open {
            return Err(Failure::RegistrationClosed);
        }
        self.throttle
            .register(ip, Instant::now())
            .map_err(|_| Failure::Throttled)?;
        let name = who.name.as_deref().and_then(name_from_profile);
        if let Some(name) = name.clone() {
            if self.create_for(&name, provider, &who.subject).await? {
                let tokens = self
                    .start_session(&name)
                    .await
                    .map_err(|_| Failure::Storage)?;
                return Ok(Finished::SignedIn {
                    user: name,
                    tokens,
                    return_to: state.return_to,
                    created: true,
                });
            }
        }
        let pending = PendingSignup {
            provider: provider.to_owned(),
            subject: who.subject,
            suggested: name.or(who.name).unwrap_or_default(),
            return_to: state.return_to,
            expires_ms: now_ms() + self.oauth.life_ms,
        };
        Ok(Finished::ChooseName {
            cookie: self.oauth.sealer.seal(SIGNUP_KIND, &pending),
        })
    }

    /// Creates account `name` for the provider account unless the name is taken.
    async fn create_for(&self, name: &str, provider: &str, subject: &str) -> Result<bool, Failure> {
        let (n, p, s) = (name.to_owned(), provider.to_owned(), subject.to_owned());
        store::run(&self.store, move |store| {
            Ok(store.account_like(&n)?.is_none() && store.create_identity_user(&n, &p, &s)?)
        })
        .await
        .map_err(|_| Failure::Storage)
    }

    /// The sign-up waiting for a name, from its cookie.
    pub fn pending_signup(&self, cookie: Option<&str>) -> Result<PendingSignup, SignupError> {
        match self.oauth.sealer.open(SIGNUP_KIND, cookie.unwrap_or("")) {
            Ok(pending) => Ok(pending),
            Err(Unsealed::Expired) => Err(SignupError::Expired),
            Err(Unsealed::Invalid) => Err(SignupError::NoPending),
        }
    }

    /// Finishes a pending sign-up with the chosen `name`: the account and its first session.
    pub async fn complete_signup(
        &self,
        cookie: Option<&str>,
        name: &str,
    ) -> Result<(String, TokenPair, String), SignupError> {
        let pending = self.pending_signup(cookie)?;
        let (p, s) = (pending.provider.clone(), pending.subject.clone());
        // Sent twice (a double click): the first made the account; this signs in to it.
        if let Some(user) = store::run(&self.store, move |st| st.identity_user(&p, &s)).await? {
            let tokens = self.start_session(&user).await?;
            return Ok((user, tokens, pending.return_to));
        }
        check_account_name(name).map_err(SignupError::Invalid)?;
        if !self.settings.registration_open {
            return Err(SignupError::Closed);
        }
        match self
            .create_for(name, &pending.provider, &pending.subject)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Err(SignupError::Taken),
            Err(_) => return Err(SignupError::Storage(anyhow::anyhow!("storage"))),
        }
        let tokens = self.start_session(name).await?;
        Ok((name.to_owned(), tokens, pending.return_to))
    }

    /// The providers linked to `user`, and whether it has a password.
    pub async fn identities(&self, user: &str) -> anyhow::Result<(Vec<LinkedIdentity>, bool)> {
        let user = user.to_owned();
        store::run(&self.store, move |s| {
            let password = s.password_hash(&user)?.is_some_and(|h| !h.is_empty());
            Ok((s.identities(&user)?, password))
        })
        .await
    }

    /// Unlinks `provider` from `user` while another way to sign in remains.
    pub async fn unlink(&self, user: &str, provider: &str) -> anyhow::Result<Unlink> {
        let (user, provider) = (user.to_owned(), provider.to_owned());
        store::run(&self.store, move |s| s.unlink_identity(&user, &provider)).await
    }
}

/// An OAuth error code as shown: its letters only (it comes from the query string).
fn error_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}
