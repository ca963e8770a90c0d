//! Signing in with another site: OAuth 2.0 authorization code with PKCE (S256), OpenID Connect
//! on top where the provider speaks it, and what the sign-in does to accounts — the pair
//! (provider, subject) is one Parley account: created at the first sign-in (with the provider's
//! name when free, else one the person chooses), or linked to a signed-in account.

mod config;
mod failure;
mod provider;
pub mod state;

pub use config::{IdentitySettings, ProviderConfig, ProviderKind};
pub use failure::{Failure, SignupError};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use self::provider::Provider;
use self::state::{local_path, LoginState, PendingSignup, Sealer, Unsealed};
use super::fetch::Fetcher;
use super::names::{check_account_name, name_from_profile};
use super::secret::random_token;
use super::throttle::Throttle;
use crate::clock::now_ms;
use crate::store::{self, Link, LinkedIdentity, Store, Unlink};

/// A provider as the page lists it.
pub struct ProviderInfo {
    /// Name.
    pub name: String,
    /// Label.
    pub label: String,
    /// `oidc` or `oauth2`.
    pub kind: &'static str,
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

/// Signing in with the configured providers: what it needs of the rest of `auth` is handed in
/// (storage, the provider client, the registration throttle), so nothing here leads back.
pub struct SignIn {
    list: Vec<Provider>,
    sealer: Sealer,
    public_url: Option<String>,
    life_ms: u64,
    store: Arc<dyn Store>,
    fetcher: Arc<Fetcher>,
    throttle: Arc<Throttle>,
    registration_open: bool,
}

impl SignIn {
    /// The providers of `settings`; cookies sealed under `key`.
    pub(super) fn new(
        settings: &IdentitySettings,
        key: [u8; 32],
        store: Arc<dyn Store>,
        fetcher: Arc<Fetcher>,
        throttle: Arc<Throttle>,
        registration_open: bool,
    ) -> Self {
        Self {
            store,
            fetcher,
            throttle,
            registration_open,
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

impl SignIn {
    /// The providers people can sign in with.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.list
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

    /// Starts a sign-in with `provider`; `origin` (`http://host`) makes the redirect URI when
    /// no public URL is configured; `link_user`: link to this account instead.
    pub async fn start(
        &self,
        provider: &str,
        origin: &str,
        return_to: Option<&str>,
        link_user: Option<String>,
    ) -> Result<Started, Failure> {
        let p = self.get(provider)?;
        let base = self.public_url.as_deref().unwrap_or(origin);
        let state = LoginState {
            id: random_token(16),
            provider: provider.to_owned(),
            verifier: random_token(32),
            nonce: random_token(16),
            redirect_uri: format!("{base}/auth/{provider}/callback"),
            return_to: local_path(return_to),
            link_user,
            expires_ms: now_ms() + self.life_ms,
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(state.verifier.as_bytes()));
        let location = p.authorize_url(&self.fetcher, &state, &challenge).await?;
        Ok(Started {
            location,
            cookie: self.sealer.seal(LOGIN_KIND, &state),
        })
    }

    /// Finishes a sign-in at its callback: `query` is the callback's, `cookie` the state
    /// cookie's value, `ip` the client's.
    pub async fn finish(
        &self,
        provider: &str,
        query: &str,
        cookie: Option<&str>,
        ip: IpAddr,
    ) -> Result<Finished, Failure> {
        let p = self.get(provider)?;
        let label = p.config.label.clone();
        let param = |key: &str| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let state: LoginState = match self.sealer.open(LOGIN_KIND, cookie.unwrap_or("")) {
            Ok(state) => state,
            Err(Unsealed::Expired) => return Err(Failure::Expired),
            Err(Unsealed::Invalid) => return Err(Failure::NotStartedHere),
        };
        if param("state").as_deref() != Some(state.id.as_str()) || state.provider != provider {
            return Err(Failure::NotStartedHere);
        }
        // Each callback past this point records its state: bounded per address.
        self.throttle
            .sign_in(ip, Instant::now())
            .map_err(|_| Failure::TooManySignIns)?;
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
            return Ok(Finished::SignedIn {
                user,
                return_to: state.return_to,
                created: false,
            });
        }
        if !self.registration_open {
            return Err(Failure::RegistrationClosed);
        }
        self.throttle
            .register(ip, Instant::now())
            .map_err(|_| Failure::Throttled)?;
        let name = who.name.as_deref().and_then(name_from_profile);
        if let Some(name) = name.clone() {
            if self.create_for(&name, provider, &who.subject).await? {
                return Ok(Finished::SignedIn {
                    user: name,
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
            expires_ms: now_ms() + self.life_ms,
        };
        Ok(Finished::ChooseName {
            cookie: self.sealer.seal(SIGNUP_KIND, &pending),
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
    pub fn pending(&self, cookie: Option<&str>) -> Result<PendingSignup, SignupError> {
        match self.sealer.open(SIGNUP_KIND, cookie.unwrap_or("")) {
            Ok(pending) => Ok(pending),
            Err(Unsealed::Expired) => Err(SignupError::Expired),
            Err(Unsealed::Invalid) => Err(SignupError::NoPending),
        }
    }

    /// Finishes a pending sign-up with the chosen `name`: the account and where to go.
    pub async fn complete(
        &self,
        cookie: Option<&str>,
        name: &str,
    ) -> Result<(String, String), SignupError> {
        let pending = self.pending(cookie)?;
        let (p, s) = (pending.provider.clone(), pending.subject.clone());
        // Sent twice (a double click): the first made the account; this signs in to it.
        if let Some(user) = store::run(&self.store, move |st| st.identity_user(&p, &s)).await? {
            return Ok((user, pending.return_to));
        }
        check_account_name(name).map_err(SignupError::Invalid)?;
        if !self.registration_open {
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
        Ok((name.to_owned(), pending.return_to))
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
