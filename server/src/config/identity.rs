//! Settings of signing in through other sites (OAuth 2.0 / OpenID Connect providers) and of
//! accepting an external identity provider's access tokens: flags, or the `[identity]` table
//! of the config file. Client secrets come from files or the environment, never from flags.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use serde::Deserialize;

use crate::auth::oauth::{IdentitySettings, ProviderConfig, ProviderKind};
use crate::auth::ExternalSettings;

/// Flags of sign-in through other sites; in the config file they sit under `[identity]`.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IdentityArgs {
    /// The address people open Parley at (e.g. `https://chat.example.com`); providers send
    /// them back to `<it>/auth/<provider>/callback`. Default: `http://` and the request's Host.
    #[arg(long, env = "PARLEY_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// A provider to sign in with, repeatable: comma-separated `key=value` — `name`, `label`,
    /// `client-id`, `client-secret-file` or `client-secret-env`, `scopes`, and either `issuer`
    /// (OpenID Connect, by discovery) or `authorize-url`, `token-url`, `userinfo-url`,
    /// `id-field`, `name-field` (plain OAuth 2.0). See docs/auth.md.
    #[arg(long = "auth-provider", env = "PARLEY_AUTH_PROVIDERS", value_delimiter = ';',
          value_parser = ProviderSpec::parse)]
    #[serde(default)]
    pub auth_providers: Vec<ProviderSpec>,

    /// Deadline of every call to a provider (discovery, keys, code exchange, profile)
    /// [default: 10s].
    #[arg(long, env = "PARLEY_PROVIDER_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub provider_timeout: Option<Duration>,

    /// How long a person has to sign in at the provider, and then to choose a name; a sign-in
    /// finishing later is refused as expired [default: 10m].
    #[arg(long, env = "PARLEY_SIGN_IN_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub sign_in_timeout: Option<Duration>,

    /// Sign-in callbacks (through any provider, any outcome) one client address may make per
    /// minute; each records its state in storage [default: 60].
    #[arg(long, env = "PARLEY_SIGN_INS_PER_IP")]
    pub sign_ins_per_ip: Option<u32>,

    /// Least time between two fetches of a provider's keys caused by a token naming a key not
    /// held (key rotation) [default: 30s].
    #[arg(long, env = "PARLEY_JWKS_REFETCH_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub jwks_refetch_interval: Option<Duration>,

    /// A provider's keys are fetched again after this long, so keys it removed stop working
    /// [default: 10m].
    #[arg(long, env = "PARLEY_JWKS_MAX_AGE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub jwks_max_age: Option<Duration>,

    /// Accept access tokens of this external issuer (exact `iss`) as Parley credentials.
    #[arg(long, env = "PARLEY_EXTERNAL_JWT_ISSUER")]
    pub external_jwt_issuer: Option<String>,

    /// The `aud` external access tokens must carry (required with the issuer).
    #[arg(long, env = "PARLEY_EXTERNAL_JWT_AUDIENCE")]
    pub external_jwt_audience: Option<String>,

    /// The issuer's key set [default: `jwks_uri` of its discovery document].
    #[arg(long, env = "PARLEY_EXTERNAL_JWT_JWKS_URL")]
    pub external_jwt_jwks_url: Option<String>,

    /// The claim holding the user name [default: preferred_username].
    #[arg(long, env = "PARLEY_EXTERNAL_JWT_NAME_CLAIM")]
    pub external_jwt_name_claim: Option<String>,

    /// The claim holding the user's roles (a list of strings, or one space-separated string).
    #[arg(long, env = "PARLEY_EXTERNAL_JWT_ROLES_CLAIM")]
    pub external_jwt_roles_claim: Option<String>,

    /// With a roles claim: only tokens holding this role may write; others are read-only.
    #[arg(long, env = "PARLEY_EXTERNAL_JWT_WRITER_ROLE")]
    pub external_jwt_writer_role: Option<String>,
}

/// One provider as configured (flag or `[[identity.auth-providers]]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProviderSpec {
    name: String,
    label: Option<String>,
    issuer: Option<String>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    userinfo_url: Option<String>,
    id_field: Option<String>,
    name_field: Option<String>,
    client_id: String,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    scopes: Option<String>,
    /// `basic` (HTTP Basic, the default) or `post` (in the form).
    token_auth: Option<String>,
}

impl ProviderSpec {
    /// Parses `key=value,key=value`.
    fn parse(spec: &str) -> Result<Self, String> {
        let mut map = serde_json::Map::new();
        for pair in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?}: expected key=value"))?;
            if key.trim() == "client-secret" {
                return Err("a client secret never goes on the command line: use \
                            client-secret-file or client-secret-env"
                    .into());
            }
            map.insert(key.trim().to_owned(), value.trim().into());
        }
        serde_json::from_value(map.into()).map_err(|e| e.to_string())
    }

    fn resolve(self) -> anyhow::Result<ProviderConfig> {
        let name = self.name;
        let ok_name = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_name {
            bail!("provider name {name:?}: 1-32 of a-z, 0-9 and -");
        }
        let secret = match (&self.client_secret_file, &self.client_secret_env) {
            (Some(path), None) => std::fs::read_to_string(path)
                .with_context(|| format!("provider {name}: reading {}", path.display()))?,
            (None, Some(var)) => std::env::var(var)
                .with_context(|| format!("provider {name}: environment variable {var}"))?,
            _ => bail!("provider {name}: give one of client-secret-file or client-secret-env"),
        };
        let secret = secret.trim_end_matches(['\r', '\n']).to_owned();
        let kind = match (
            self.issuer,
            self.authorize_url,
            self.token_url,
            self.userinfo_url,
        ) {
            (Some(issuer), None, None, None) => ProviderKind::Oidc {
                issuer: issuer.trim_end_matches('/').to_owned(),
            },
            (None, Some(authorize), Some(token), Some(userinfo)) => ProviderKind::OAuth2 {
                authorize,
                token,
                userinfo,
                id_field: self.id_field.unwrap_or_else(|| "id".into()),
                name_field: self.name_field.unwrap_or_else(|| "name".into()),
            },
            _ => bail!(
                "provider {name}: give either issuer, or authorize-url, token-url and userinfo-url"
            ),
        };
        for url in kind.urls() {
            url::Url::parse(url).with_context(|| format!("provider {name}: URL {url:?}"))?;
        }
        let basic_auth = match self.token_auth.as_deref() {
            None | Some("basic") => true,
            Some("post") => false,
            Some(other) => bail!("provider {name}: token-auth {other:?}: expected basic or post"),
        };
        let scopes = self.scopes.unwrap_or_else(|| match kind {
            ProviderKind::Oidc { .. } => "openid profile".into(),
            ProviderKind::OAuth2 { .. } => String::new(),
        });
        Ok(ProviderConfig {
            label: self.label.unwrap_or_else(|| name.clone()),
            name,
            kind,
            client_id: self.client_id,
            client_secret: secret,
            scopes,
            basic_auth,
        })
    }
}

impl IdentityArgs {
    /// Flags over the file's `[identity]` over the defaults.
    pub fn resolve(self, file: IdentityArgs) -> anyhow::Result<IdentitySettings> {
        let specs = if self.auth_providers.is_empty() {
            file.auth_providers
        } else {
            self.auth_providers
        };
        let providers: Vec<ProviderConfig> = specs
            .into_iter()
            .map(ProviderSpec::resolve)
            .collect::<anyhow::Result<_>>()?;
        for (i, p) in providers.iter().enumerate() {
            if providers[..i].iter().any(|q| q.name == p.name) {
                bail!("two providers are named {}", p.name);
            }
        }
        let public_url = self.public_url.or(file.public_url);
        if let Some(url) = &public_url {
            let parsed = url::Url::parse(url).with_context(|| format!("--public-url {url:?}"))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https") && parsed.path() == "/",
                "--public-url {url:?}: expected http(s)://host[:port] with no path"
            );
        }
        let external = match (
            self.external_jwt_issuer.or(file.external_jwt_issuer),
            self.external_jwt_audience.or(file.external_jwt_audience),
        ) {
            (None, None) => None,
            (Some(issuer), Some(audience)) => Some(ExternalSettings {
                issuer,
                audience,
                jwks_url: self.external_jwt_jwks_url.or(file.external_jwt_jwks_url),
                name_claim: self
                    .external_jwt_name_claim
                    .or(file.external_jwt_name_claim)
                    .unwrap_or_else(|| "preferred_username".into()),
                roles_claim: self
                    .external_jwt_roles_claim
                    .or(file.external_jwt_roles_claim),
                writer_role: self
                    .external_jwt_writer_role
                    .or(file.external_jwt_writer_role),
            }),
            _ => bail!("--external-jwt-issuer and --external-jwt-audience go together"),
        };
        if let Some(e) = &external {
            anyhow::ensure!(
                e.writer_role.is_none() || e.roles_claim.is_some(),
                "--external-jwt-writer-role needs --external-jwt-roles-claim"
            );
        }
        Ok(IdentitySettings {
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
            providers,
            timeout: self
                .provider_timeout
                .or(file.provider_timeout)
                .unwrap_or(Duration::from_secs(10)),
            sign_in_timeout: self
                .sign_in_timeout
                .or(file.sign_in_timeout)
                .unwrap_or(Duration::from_secs(600)),
            sign_ins_per_ip: self.sign_ins_per_ip.or(file.sign_ins_per_ip).unwrap_or(60),
            jwks_refetch: self
                .jwks_refetch_interval
                .or(file.jwks_refetch_interval)
                .unwrap_or(Duration::from_secs(30)),
            jwks_max_age: self
                .jwks_max_age
                .or(file.jwks_max_age)
                .unwrap_or(Duration::from_secs(600)),
            external,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_spec_names_its_secret_never_holds_it() {
        std::env::set_var("PARLEY_TEST_PROVIDER_SECRET", "s3cret\n");
        let p = ProviderSpec::parse(
            "name=test,issuer=http://127.0.0.1:9/,client-id=parley,\
             client-secret-env=PARLEY_TEST_PROVIDER_SECRET",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(p.client_secret, "s3cret");
        assert_eq!(p.scopes, "openid profile");
        assert!(
            matches!(p.kind, ProviderKind::Oidc { ref issuer } if issuer == "http://127.0.0.1:9")
        );
        assert!(
            !format!("{p:?}").contains("s3cret"),
            "Debug hides the secret"
        );
        let e = ProviderSpec::parse("name=x,client-id=a,client-secret=oops").unwrap_err();
        assert!(e.contains("never goes on the command line"), "{e}");
        let plain = ProviderSpec::parse(
            "name=kakao,authorize-url=http://k/a,token-url=http://k/t,userinfo-url=http://k/u,\
             id-field=id,name-field=properties.nickname,client-id=a,\
             client-secret-env=PARLEY_TEST_PROVIDER_SECRET,token-auth=post",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert!(!plain.basic_auth);
        let half = ProviderSpec::parse(
            "name=x,authorize-url=http://k/a,client-id=a,client-secret-env=PARLEY_TEST_PROVIDER_SECRET",
        )
        .unwrap()
        .resolve();
        assert!(half.is_err());
    }

    #[test]
    fn the_config_file_lists_providers_in_its_identity_table() {
        std::env::set_var("PARLEY_TEST_PROVIDER_SECRET_2", "x");
        let file: IdentityArgs = toml::from_str(
            r#"
            public-url = "https://chat.example.com/"
            provider-timeout = "3s"
            external-jwt-issuer = "https://id.example.com/realms/x"
            external-jwt-audience = "parley"
            external-jwt-roles-claim = "realm_access.roles"
            external-jwt-writer-role = "chat"

            [[auth-providers]]
            name = "google"
            issuer = "https://accounts.google.com"
            client-id = "abc"
            client-secret-env = "PARLEY_TEST_PROVIDER_SECRET_2"
            "#,
        )
        .unwrap();
        let s = IdentityArgs::default().resolve(file).unwrap();
        assert_eq!(s.public_url.as_deref(), Some("https://chat.example.com"));
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert_eq!(s.providers[0].name, "google");
        let e = s.external.unwrap();
        assert_eq!(e.name_claim, "preferred_username");
        assert_eq!(e.writer_role.as_deref(), Some("chat"));
    }
}
