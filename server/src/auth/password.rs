//! Password hashing: argon2id with OWASP's parameters, off the async threads, a few at a time.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Hashes computed at once: each takes 19 MiB and tens of ms of a core, so a login storm queues
/// here instead of exhausting memory and starving message delivery.
const CONCURRENT_HASHES: usize = 4;

/// Hashes and verifies passwords.
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// The hash an unknown user's login is checked against, so it costs the same as a real one.
    dummy: Arc<str>,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

impl Passwords {
    /// A hasher with a fresh dummy hash.
    pub fn new() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(CONCURRENT_HASHES)),
            dummy: hash_now("parley dummy password").unwrap_or_default().into(),
        }
    }

    /// Hashes a password (PHC string).
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        tokio::task::spawn_blocking(move || hash_now(&password)).await?
    }

    /// True if `password` matches `stored`; with no stored hash, checks a dummy and fails.
    pub async fn verify(&self, password: String, stored: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let dummy = self.dummy.clone();
        let exists = stored.is_some();
        let matches = tokio::task::spawn_blocking(move || {
            verify_now(&password, stored.as_deref().unwrap_or(&dummy))
        })
        .await
        .unwrap_or(false);
        exists && matches
    }
}

fn argon2() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes on the calling thread (the CLI, or inside `spawn_blocking`).
pub fn hash_now(password: &str) -> anyhow::Result<String> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

fn verify_now(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|hash| argon2().verify_password(password.as_bytes(), &hash).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_now("correct horse").unwrap();
        let b = hash_now("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify_now("correct horse", &a));
        assert!(!verify_now("wrong horse", &a));
        assert!(!verify_now("correct horse", "not a hash"));
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        let p = Passwords::new();
        assert!(!p.verify("parley dummy password".into(), None).await);
        let h = p.hash("hunter22".into()).await.unwrap();
        assert!(p.verify("hunter22".into(), Some(h)).await);
    }
}
