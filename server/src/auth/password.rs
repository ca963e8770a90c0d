//! Password hashing: argon2id with OWASP's parameters, on a few dedicated threads.
//!
//! Each hash needs 19 MiB. Running them on tokio's blocking pool would let every pool thread keep
//! its own 19 MiB (the allocator retains it per thread) and let a burst of logins grow the
//! process by gigabytes; a fixed set of hasher threads with bounded queues caps both the memory
//! and the CPU a login storm can take from message delivery.
//!
//! Logins come first: checks of a password (logins) and new hashes (registrations, new
//! passwords) wait in separate queues, a free thread always takes a check before a new hash,
//! and new hashes never occupy every thread. A registration flood therefore fills only its own
//! small queue and is told "busy", while a login waits at most for one hash to finish.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::oneshot;

/// Fewest hasher threads: one of them is always free for logins.
const MIN_HASHERS: usize = 2;
/// Most hasher threads (memory: 19 MiB each).
const MAX_HASHERS: usize = 4;
/// Password checks (logins) waiting for a thread; more are refused as "busy" rather than
/// queued unbounded.
const CHECK_QUEUE: usize = 256;
/// New hashes (registrations, new passwords) waiting for a thread.
const HASH_QUEUE: usize = 16;

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

/// The two queues and how many threads are hashing; one mutex for all, held only to push or
/// take a job, and a condvar the idle threads wait on.
struct Queues {
    jobs: Mutex<Jobs>,
    ready: Condvar,
    /// New hashes running at once at most: all threads but one.
    max_hashing: usize,
}

#[derive(Default)]
struct Jobs {
    checks: VecDeque<Job>,
    hashes: VecDeque<Job>,
    hashing: usize,
    closed: bool,
}

impl Queues {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next job for a hasher thread: checks first, new hashes while threads are left for
    /// checks. `None` once closed.
    fn take(&self) -> Option<Job> {
        let mut jobs = self.lock();
        loop {
            if jobs.closed {
                return None;
            }
            if let Some(job) = jobs.checks.pop_front() {
                return Some(job);
            }
            if jobs.hashing < self.max_hashing {
                if let Some(job) = jobs.hashes.pop_front() {
                    jobs.hashing += 1;
                    return Some(job);
                }
            }
            jobs = self.ready.wait(jobs).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn hashed(&self) {
        self.lock().hashing -= 1;
        // A waiting thread may now take a new hash.
        self.ready.notify_one();
    }

    fn submit(&self, job: Job) -> Result<(), HashError> {
        let mut jobs = self.lock();
        let (queue, bound) = match job {
            Job::Verify(..) => (&mut jobs.checks, CHECK_QUEUE),
            Job::Hash(..) => (&mut jobs.hashes, HASH_QUEUE),
        };
        if queue.len() >= bound {
            return Err(HashError::Busy);
        }
        queue.push_back(job);
        drop(jobs);
        self.ready.notify_one();
        Ok(())
    }
}

/// Hashes and verifies passwords on dedicated threads.
pub struct Passwords {
    queues: Arc<Queues>,
    /// The hash an unknown user's login is checked against, so it costs the same as a real one.
    dummy: Arc<str>,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Passwords {
    fn drop(&mut self) {
        self.queues.lock().closed = true;
        self.queues.ready.notify_all();
    }
}

impl Passwords {
    /// Starts the hasher threads (one per core, at least [`MIN_HASHERS`], at most
    /// [`MAX_HASHERS`]).
    pub fn new() -> Self {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(MIN_HASHERS, MAX_HASHERS);
        let queues = Arc::new(Queues {
            jobs: Mutex::new(Jobs::default()),
            ready: Condvar::new(),
            max_hashing: threads - 1,
        });
        for i in 0..threads {
            let queues = queues.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("parley-hash-{i}"))
                .spawn(move || {
                    while let Some(job) = queues.take() {
                        match job {
                            Job::Hash(password, reply) => {
                                let hash = hash_now(&password).map_err(HashError::Failed);
                                queues.hashed();
                                let _ = reply.send(hash);
                            }
                            Job::Verify(password, stored, reply) => {
                                let _ = reply.send(verify_now(&password, &stored));
                            }
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hasher thread");
            }
        }
        Self {
            queues,
            dummy: hash_now("parley dummy password").unwrap_or_default().into(),
        }
    }

    /// Hashes a password (PHC string).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let (tx, rx) = oneshot::channel();
        self.queues.submit(Job::Hash(password, tx))?;
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
        self.queues.submit(Job::Verify(password, hash, tx))?;
        // A dropped reply means the thread is gone: busy, not a wrong password.
        Ok(rx.await.map_err(|_| HashError::Busy)? && exists)
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

    #[test]
    fn checks_go_first_and_one_thread_is_kept_for_them() {
        let q = Queues {
            jobs: Mutex::default(),
            ready: Condvar::new(),
            max_hashing: 1,
        };
        let hash = || Job::Hash("pw".into(), oneshot::channel().0);
        let check = || Job::Verify("pw".into(), "h".into(), oneshot::channel().0);
        for _ in 0..HASH_QUEUE {
            q.submit(hash()).unwrap();
        }
        assert!(
            matches!(q.submit(hash()), Err(HashError::Busy)),
            "its own queue is full"
        );
        q.submit(check()).expect("a check still has room");
        assert!(matches!(q.take(), Some(Job::Verify(..))), "checks first");
        assert!(matches!(q.take(), Some(Job::Hash(..))));
        // One hash is running, the most allowed: the next thread takes only checks.
        q.submit(check()).unwrap();
        assert!(matches!(q.take(), Some(Job::Verify(..))));
        q.hashed();
        assert!(matches!(q.take(), Some(Job::Hash(..))));
        q.lock().closed = true;
        assert!(q.take().is_none());
    }
}
