//! Password hashing: argon2id with OWASP's parameters, on a few dedicated threads.
//!
//! Each hash needs 19 MiB. Running them on tokio's blocking pool would let every pool thread keep
//! its own 19 MiB (the allocator retains it per thread) and let a burst of logins grow the
//! process by gigabytes; a fixed set of hasher threads with a bounded queue caps both the memory
//! and the CPU a login storm can take from message delivery.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::oneshot;

/// Most hasher threads (memory: 19 MiB each).
const MAX_HASHERS: usize = 4;
/// Hash requests waiting for a thread; more are refused as "busy" rather than queued unbounded.
const QUEUE: usize = 256;

/// Why a hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many password checks are waiting.
    #[error("the server is busy checking passwords; retry shortly")]
    Busy,
    /// Hashing failed.
    #[error("hashing failed: {0}")]
    Failed(String),
}

enum Job {
    Hash(String, oneshot::Sender<Result<String, HashError>>),
    Verify(String, Arc<str>, oneshot::Sender<bool>),
}

/// Hashes and verifies passwords on dedicated threads.
pub struct Passwords {
    jobs: SyncSender<Job>,
    /// The hash an unknown user's login is checked against, so it costs the same as a real one.
    dummy: Arc<str>,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

impl Passwords {
    /// Starts the hasher threads (one per core, at most [`MAX_HASHERS`]).
    pub fn new() -> Self {
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_HASHERS);
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("parley-hash-{i}"))
                .spawn(move || loop {
                    // Take one job and release the queue before the slow part.
                    let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    match job {
                        Job::Hash(password, reply) => {
                            let _ = reply.send(hash_now(&password).map_err(HashError::Failed));
                        }
                        Job::Verify(password, stored, reply) => {
                            let _ = reply.send(verify_now(&password, &stored));
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hasher thread");
            }
        }
        Self {
            jobs,
            dummy: hash_now("parley dummy password").unwrap_or_default().into(),
        }
    }

    /// Hashes a password (PHC string).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Hash(password, tx))?;
        rx.await.unwrap_or(Err(HashError::Busy))
    }

    /// `Ok(true)` if `password` matches `stored`; with no stored hash, checks a dummy and fails.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let exists = stored.is_some();
        let hash: Arc<str> = stored.map_or_else(|| self.dummy.clone(), Arc::from);
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Verify(password, hash, tx))?;
        Ok(rx.await.unwrap_or(false) && exists)
    }

    fn submit(&self, job: Job) -> Result<(), HashError> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Disconnected(_) => HashError::Busy,
        })
    }
}

fn argon2() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes on the calling thread (the CLI, or a hasher thread).
pub fn hash_now(password: &str) -> Result<String, String> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
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
        assert!(!p
            .verify("parley dummy password".into(), None)
            .await
            .unwrap());
        let h = p.hash("hunter22".into()).await.unwrap();
        assert!(p.verify("hunter22".into(), Some(h.clone())).await.unwrap());
        assert!(!p.verify("hunter23".into(), Some(h)).await.unwrap());
    }
}
