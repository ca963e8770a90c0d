//! Sign-in settings as resolved from flags and the config file: the providers and how to reach
//! them, deadlines, key-set refetching, and resource-server mode.

use std::time::Duration;

use crate::auth::external::ExternalSettings;

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
    /// Sign-in callbacks per client address per minute.
    pub sign_ins_per_ip: u32,
    /// Least time between key-set fetches caused by unknown keys.
    pub jwks_refetch: Duration,
    /// Age after which key sets are fetched again.
    pub jwks_max_age: Duration,
    /// Resource-server mode.
    pub external: Option<ExternalSettings>,
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
