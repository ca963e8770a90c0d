//! Access tokens: JWTs signed with one configured algorithm and key.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parley_stomp::destination::valid_user;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET: usize = 32;
/// Smallest RSA modulus accepted (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;
/// The file in the data directory holding a generated HS256 secret.
const SECRET_FILE: &str = "jwt-secret";

/// Supported signing algorithms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    #[default]
    #[value(name = "HS256")]
    #[serde(rename = "HS256")]
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    #[value(name = "RS256")]
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256.
    #[value(name = "ES256")]
    #[serde(rename = "ES256")]
    Es256,
}

/// Where keys come from, and the claims every token carries.
#[derive(Clone, Debug)]
pub struct KeySettings {
    /// The algorithm; tokens signed any other way are refused.
    pub algorithm: JwtAlgorithm,
    /// The data directory, where a generated HS256 secret is kept.
    pub data: PathBuf,
    /// An HS256 secret file shared by every node.
    pub secret_file: Option<PathBuf>,
    /// An HS256 secret given directly (`PARLEY_JWT_SECRET`).
    pub secret: Option<String>,
    /// RS256/ES256 private key (PEM).
    pub private_key: Option<PathBuf>,
    /// RS256/ES256 public key (PEM).
    pub public_key: Option<PathBuf>,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
}

/// Access token claims.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user name.
    pub sub: String,
    /// Issued at (s).
    pub iat: u64,
    /// Expires at (s).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Unique id.
    pub jti: String,
    /// Always `access`, so no other kind of token the key might sign passes for one.
    pub typ: String,
}

/// The loaded keys.
pub struct Keys {
    header: Header,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    /// The secret or private key, from which other secrets shared by every node are derived.
    material: Vec<u8>,
}

impl Keys {
    /// Loads (or, for HS256 with nothing configured, creates) the keys.
    pub fn load(settings: &KeySettings) -> anyhow::Result<Self> {
        let (algorithm, encoding, decoding, material) = match settings.algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = hs256_secret(settings)?;
                (
                    Algorithm::HS256,
                    EncodingKey::from_secret(&secret)?,
                    DecodingKey::from_secret(&secret)?,
                    secret,
                )
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                let (Some(private), Some(public)) = (&settings.private_key, &settings.public_key)
                else {
                    bail!(
                        "--jwt-algorithm RS256/ES256 needs --jwt-private-key and --jwt-public-key"
                    );
                };
                let private_pem = read(private)?;
                let public_pem = read(public)?;
                if settings.algorithm == JwtAlgorithm::Rs256 {
                    (
                        Algorithm::RS256,
                        EncodingKey::from_rsa_pem(&private_pem).context("RS256 private key")?,
                        DecodingKey::from_rsa_pem(&public_pem).context("RS256 public key")?,
                        private_pem,
                    )
                } else {
                    (
                        Algorithm::ES256,
                        EncodingKey::from_ec_pem(&private_pem).context("ES256 private key")?,
                        DecodingKey::from_ec_pem(&public_pem).context("ES256 public key")?,
                        private_pem,
                    )
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        // A token may say it is not valid yet (`nbf`, RFC 7519 §4.1.5): honoured, with the same
        // leeway as `exp`. Parley's own tokens carry none.
        validation.validate_nbf = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let keys = Self {
            header: Header::new(algorithm),
            encoding,
            decoding,
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            material,
        };
        // A key pair that does not match would only show at the first login; check it now.
        let probe = keys.mint("probe", Duration::from_secs(60))?;
        keys.verify(&probe)
            .map_err(|e| anyhow::anyhow!("the JWT private and public keys do not match: {e}"))?;
        if algorithm == Algorithm::RS256 {
            // An RSA signature is as long as the modulus.
            let signature = probe.rsplit('.').next().unwrap_or_default();
            let bits = URL_SAFE_NO_PAD.decode(signature).map_or(0, |s| s.len() * 8);
            if bits < MIN_RSA_BITS {
                bail!("the RS256 key has {bits} bits; at least {MIN_RSA_BITS} are required");
            }
        }
        Ok(keys)
    }

    /// A 32-byte secret for `purpose`, the same on every node sharing these keys and useless
    /// for anything else (SHA-256 over the purpose and the key material).
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        let mut hash = sha2::Sha256::new();
        hash.update(b"parley derived secret\0");
        hash.update(purpose.as_bytes());
        hash.update([0]);
        hash.update(&self.material);
        hash.finalize().into()
    }

    /// Signs an access token for `user` valid for `ttl`.
    pub fn mint(&self, user: &str, ttl: Duration) -> anyhow::Result<String> {
        let now = crate::clock::now_ms() / 1000;
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).context("random jti")?;
        let claims = Claims {
            sub: user.to_owned(),
            iat: now,
            exp: now + ttl.as_secs().max(1),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: URL_SAFE_NO_PAD.encode(jti),
            typ: "access".to_owned(),
        };
        Ok(jsonwebtoken::encode(&self.header, &claims, &self.encoding)?)
    }

    /// Verifies a token: the configured algorithm only, signature, `exp` and `nbf` (with
    /// leeway), `iss`, `aud`, and a valid user name in `sub`.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| refusal(&e).to_owned())?;
        let claims = data.claims;
        if claims.typ != "access" || valid_user(&claims.sub).is_none() {
            return Err("not an access token".to_owned());
        }
        Ok(claims)
    }
}

/// Why a token was refused, in words that never echo it.
pub(super) fn refusal(e: &jsonwebtoken::errors::Error) -> &'static str {
    match e.kind() {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet",
        ErrorKind::InvalidSignature => "invalid token signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "token signed with another algorithm"
        }
        ErrorKind::InvalidIssuer => "token from another issuer",
        ErrorKind::InvalidAudience => "token for another audience",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
        _ => "malformed token",
    }
}

/// The HS256 secret: from `PARLEY_JWT_SECRET`, `--jwt-secret-file`, or `DATA/jwt-secret`
/// (generated on first start, readable by the owner only).
fn hs256_secret(settings: &KeySettings) -> anyhow::Result<Vec<u8>> {
    let secret = if let Some(secret) = &settings.secret {
        secret.as_bytes().to_vec()
    } else if let Some(path) = &settings.secret_file {
        trim_newline(read(path)?)
    } else {
        let path = settings.data.join(SECRET_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => trim_newline(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate_secret(&path)?,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    };
    if secret.len() < MIN_SECRET {
        bail!("the JWT secret must be at least {MIN_SECRET} bytes");
    }
    Ok(secret)
}

fn generate_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut raw = [0u8; 64];
    getrandom::fill(&mut raw).context("generating the JWT secret")?;
    let secret = URL_SAFE_NO_PAD.encode(raw);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "generated a new JWT secret");
            Ok(secret.into_bytes())
        }
        // Another process (`parley token` next to `parley serve`) created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(trim_newline(read(path)?)),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &str) -> KeySettings {
        let data = std::env::temp_dir().join(format!("parley-jwt-{dir}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        KeySettings {
            algorithm: JwtAlgorithm::Hs256,
            data,
            secret_file: None,
            secret: None,
            private_key: None,
            public_key: None,
            issuer: "parley".into(),
            audience: "parley".into(),
        }
    }

    #[test]
    fn a_generated_secret_is_kept_private_and_reused() {
        let s = settings("gen");
        let token = Keys::load(&s)
            .unwrap()
            .mint("alice", Duration::from_secs(60))
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(s.data.join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Keys::load(&s).unwrap();
        assert_eq!(again.verify(&token).unwrap().sub, "alice");
    }

    #[test]
    fn tokens_of_another_issuer_audience_or_key_are_refused() {
        let s = settings("claims");
        let keys = Keys::load(&s).unwrap();
        let token = keys.mint("alice", Duration::from_secs(60)).unwrap();
        let mut other = s.clone();
        other.issuer = "elsewhere".into();
        assert_eq!(
            Keys::load(&other).unwrap().verify(&token).unwrap_err(),
            "token from another issuer"
        );
        let mut other = s.clone();
        other.audience = "elsewhere".into();
        assert_eq!(
            Keys::load(&other).unwrap().verify(&token).unwrap_err(),
            "token for another audience"
        );
        let mut other = settings("claims-other-key");
        other.secret = Some("x".repeat(40));
        assert_eq!(
            Keys::load(&other).unwrap().verify(&token).unwrap_err(),
            "invalid token signature"
        );
        let mut short = settings("short");
        short.secret = Some("too short".into());
        assert!(Keys::load(&short).is_err());
    }

    #[test]
    fn not_before_is_checked_with_the_exp_leeway() {
        let mut s = settings("nbf");
        s.secret = Some("n".repeat(32));
        let keys = Keys::load(&s).unwrap();
        let now = crate::clock::now_ms() / 1000;
        let token = |nbf: u64| {
            let claims = serde_json::json!({
                "sub": "alice", "iat": now, "nbf": nbf, "exp": now + 600,
                "iss": "parley", "aud": "parley", "jti": "j", "typ": "access",
            });
            let key = EncodingKey::from_secret("n".repeat(32).as_bytes()).unwrap();
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        assert_eq!(
            keys.verify(&token(now + 600)).unwrap_err(),
            "token not valid yet"
        );
        assert!(
            keys.verify(&token(now + LEEWAY_SECS / 2)).is_ok(),
            "within the leeway"
        );
        assert!(keys.verify(&token(now - 60)).is_ok());
    }
}
