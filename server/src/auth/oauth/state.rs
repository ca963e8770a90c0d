//! What a sign-in through another site carries between its requests, in cookies signed by the
//! server (HMAC-SHA256 under a secret every node derives from the JWT keys), so any node can
//! finish a sign-in another started: the login state (PKCE verifier, nonce, where to go after,
//! whom to link) and a pending sign-up that still needs a name.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::Sha256;

use crate::clock::now_ms;

/// The cookie holding a login state.
pub const STATE_COOKIE: &str = "parley_oauth";
/// The cookie holding a pending sign-up.
pub const SIGNUP_COOKIE: &str = "parley_signup";

/// A sign-in in progress, from `/auth/<p>/login` to its callback.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginState {
    /// The `state` parameter: random, single use.
    pub id: String,
    /// The provider's name.
    pub provider: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// The OpenID Connect `nonce`.
    pub nonce: String,
    /// The redirect URI sent, sent again with the code.
    pub redirect_uri: String,
    /// A path on this site to go to afterwards.
    pub return_to: String,
    /// Link to this signed-in account instead of signing in.
    pub link_user: Option<String>,
    /// Expiry (ms since the epoch).
    pub expires_ms: u64,
}

/// A provider account with no Parley account yet whose name was not free: the person chooses.
#[derive(Debug, Serialize, Deserialize)]
pub struct PendingSignup {
    /// The provider's name.
    pub provider: String,
    /// The provider's subject.
    pub subject: String,
    /// The name it suggested (may be taken or invalid).
    pub suggested: String,
    /// Where to go afterwards.
    pub return_to: String,
    /// Expiry (ms since the epoch).
    pub expires_ms: u64,
}

/// Why a signed cookie was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Unsealed {
    /// Absent, altered or of another kind.
    Invalid,
    /// Genuine but past its expiry.
    Expired,
}

/// Signs and checks cookie values.
pub struct Sealer {
    key: [u8; 32],
}

impl Sealer {
    /// A sealer under `key` (see `Keys::derive_secret`).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// `base64url(json).base64url(hmac(kind, json))`: readable by the browser (it holds nothing
    /// secret from its own user), unforgeable by it. `kind` keeps one kind of cookie from
    /// passing for another.
    pub fn seal<T: Serialize>(&self, kind: &str, value: &T) -> String {
        let json = serde_json::to_vec(value).unwrap_or_default();
        let body = URL_SAFE_NO_PAD.encode(json);
        let tag = URL_SAFE_NO_PAD.encode(self.tag(kind, body.as_bytes()));
        format!("{body}.{tag}")
    }

    /// The value of a sealed cookie if genuine, of `kind` and unexpired.
    pub fn open<T: DeserializeOwned + Expiring>(
        &self,
        kind: &str,
        sealed: &str,
    ) -> Result<T, Unsealed> {
        let (body, tag) = sealed.split_once('.').ok_or(Unsealed::Invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Unsealed::Invalid)?;
        let mut mac = self.mac(kind);
        mac.update(body.as_bytes());
        // Constant time: the tag is a secret's function.
        mac.verify_slice(&tag).map_err(|_| Unsealed::Invalid)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| Unsealed::Invalid)?;
        let value: T = serde_json::from_slice(&json).map_err(|_| Unsealed::Invalid)?;
        if value.expires_ms() < now_ms() {
            return Err(Unsealed::Expired);
        }
        Ok(value)
    }

    fn mac(&self, kind: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac
    }

    fn tag(&self, kind: &str, body: &[u8]) -> Vec<u8> {
        let mut mac = self.mac(kind);
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

/// A sealed value with an expiry.
pub trait Expiring {
    /// Expiry (ms since the epoch).
    fn expires_ms(&self) -> u64;
}

impl Expiring for LoginState {
    fn expires_ms(&self) -> u64 {
        self.expires_ms
    }
}

impl Expiring for PendingSignup {
    fn expires_ms(&self) -> u64 {
        self.expires_ms
    }
}

/// `return_to` if it is a path on this site, else `/`: never a redirect to another site
/// (`//host`, `/\host`, `https://…`, control characters all fall back).
pub fn local_path(return_to: Option<&str>) -> String {
    match return_to {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && p.len() <= 512
                && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(expires_ms: u64) -> LoginState {
        LoginState {
            id: "id".into(),
            provider: "p".into(),
            verifier: "v".into(),
            nonce: "n".into(),
            redirect_uri: "http://x/auth/p/callback".into(),
            return_to: "/".into(),
            link_user: None,
            expires_ms,
        }
    }

    #[test]
    fn sealed_cookies_open_only_untouched_of_their_kind_and_in_time() {
        let sealer = Sealer::new([7; 32]);
        let sealed = sealer.seal("login", &state(now_ms() + 60_000));
        let opened: LoginState = sealer.open("login", &sealed).unwrap();
        assert_eq!(opened.nonce, "n");
        assert_eq!(
            sealer.open::<LoginState>("signup", &sealed).unwrap_err(),
            Unsealed::Invalid
        );
        assert_eq!(
            Sealer::new([8; 32])
                .open::<LoginState>("login", &sealed)
                .unwrap_err(),
            Unsealed::Invalid,
            "another node's key must be the same key"
        );
        let (body, tag) = sealed.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(body).unwrap())
                .unwrap()
                .replace("\"n\"", "\"m\""),
        );
        assert_eq!(
            sealer
                .open::<LoginState>("login", &format!("{forged}.{tag}"))
                .unwrap_err(),
            Unsealed::Invalid
        );
        let old = sealer.seal("login", &state(now_ms() - 1));
        assert_eq!(
            sealer.open::<LoginState>("login", &old).unwrap_err(),
            Unsealed::Expired
        );
    }

    #[test]
    fn return_paths_stay_on_this_site() {
        assert_eq!(local_path(Some("/#room")), "/#room");
        assert_eq!(local_path(Some("/rooms?x=1")), "/rooms?x=1");
        for evil in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/ok\r\nLocation: x",
            "evil",
            "",
        ] {
            assert_eq!(local_path(Some(evil)), "/", "{evil:?}");
        }
        assert_eq!(local_path(None), "/");
    }
}
