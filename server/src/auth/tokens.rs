//! Personal access tokens ("tokens for programs"): making, listing and revoking them, checking
//! one that is presented, and ending the sessions of a revoked one. See `docs/auth.md`.
//!
//! A token is `pat_` + 256 random bits (base64url). Storage holds only its SHA-256, a short
//! public id, its account, label, scope and expiry. Unlike a JWT every use reads storage, so a
//! revoked or expired token is refused at once; sessions it opened end when it is revoked
//! (through [`Revocations`]), at once on this node and within [`SWEEP_EVERY`] on others.
//! `Auth` owns a [`PersonalTokens`] and offers it (`Auth::verify_any`, `Auth::create_token`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley_stomp::destination::RoomName;
use parley_stomp::session::{Identity, Scope};
use tokio_util::sync::CancellationToken;

use super::secret::{hash_token, random_token};
use crate::clock::now_ms;
use crate::store::{self, AccessToken, Store, MAX_PAGE_ROWS};

/// What every personal access token starts with: how a presented credential is told apart from
/// a JWT (which starts `eyJ`).
pub const TOKEN_PREFIX: &str = "pat_";
/// Live tokens one account may hold.
pub const MAX_TOKENS_PER_ACCOUNT: usize = 20;
/// Lifetime in days when none is asked for.
pub const DEFAULT_DAYS: u64 = 90;
/// Longest lifetime, in days.
pub const MAX_DAYS: u64 = 365;
/// Longest label, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// How often the tokens of open sessions are checked against storage (another node may have
/// revoked one there).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A bad name, scope or lifetime, with the rule.
    #[error("{0}")]
    Invalid(String),
    /// The account holds [`MAX_TOKENS_PER_ACCOUNT`] live tokens already.
    #[error(
        "an account may hold at most {MAX_TOKENS_PER_ACCOUNT} access tokens; revoke one first"
    )]
    TooMany,
    /// Storage failed.
    #[error("storage error")]
    Storage(#[from] anyhow::Error),
}

/// One cancellation per token that has open sessions, cancelled when it is revoked. Written
/// when a token authenticates and when one is revoked or swept; the map is behind a `Mutex`
/// because both are rare next to the messages a session sends.
#[derive(Default)]
pub(super) struct Revocations {
    by_id: Mutex<HashMap<String, Arc<CancellationToken>>>,
}

impl Revocations {
    /// The cancellation sessions authenticated by token `id` watch.
    fn watch(&self, id: &str) -> Arc<CancellationToken> {
        self.lock().entry(id.to_owned()).or_default().clone()
    }

    /// Ends the sessions of token `id`.
    fn revoke(&self, id: &str) {
        if let Some(cancel) = self.lock().remove(id) {
            cancel.cancel();
        }
    }

    /// The ids still watched by a session (others are forgotten).
    fn watched(&self) -> Vec<String> {
        let mut map = self.lock();
        map.retain(|_, cancel| Arc::strong_count(cancel) > 1);
        map.keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CancellationToken>>> {
        // Single inserts and removes: a panic cannot leave the map half-written.
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// True if `s` has the shape of a personal access token (`pat_` and 43 base64url characters),
/// so a STOMP passcode holding one is checked as a token rather than as a password.
pub fn looks_like_personal_token(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A token's scope from its requested form, with a room checked by the server's room-name rule.
pub fn parse_scope(scope: &str) -> Result<Scope, String> {
    let parsed = Scope::parse(scope).ok_or("scope is all, read or room:<room>")?;
    if let Scope::Room(room) = &parsed {
        RoomName::parse(room).map_err(|e| e.to_string())?;
    }
    Ok(parsed)
}

/// Personal access tokens over storage, and the cancellations their sessions watch. Owned by
/// `Auth`, which hands out what they decide.
pub(super) struct PersonalTokens {
    store: Arc<dyn Store>,
    revocations: Revocations,
}

impl PersonalTokens {
    pub(super) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            revocations: Revocations::default(),
        }
    }

    /// Makes a token for account `user`: `(the token, its record)`.
    pub(super) async fn create(
        &self,
        user: &str,
        name: &str,
        scope: &str,
        days: Option<u64>,
    ) -> Result<(String, AccessToken), TokenError> {
        let name = name.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(TokenError::Invalid(format!(
                "name is 1-{MAX_NAME_CHARS} printable characters"
            )));
        }
        let scope = parse_scope(scope).map_err(TokenError::Invalid)?;
        let days = days.unwrap_or(DEFAULT_DAYS);
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(TokenError::Invalid(format!(
                "expires_in_days is 1-{MAX_DAYS}"
            )));
        }
        let token = format!("{TOKEN_PREFIX}{}", random_token(32));
        let now = now_ms();
        let record = AccessToken {
            id: random_token(8),
            hash: hex(&hash_token(&token)),
            user: user.to_owned(),
            name: name.to_owned(),
            scope: scope.to_string(),
            created_ms: now,
            expires_ms: now + days * DAY_MS,
        };
        let stored = record.clone();
        let max = MAX_TOKENS_PER_ACCOUNT;
        match store::run(&self.store, move |s| {
            s.insert_access_token(&stored, max, now)
        })
        .await?
        {
            true => Ok((token, record)),
            false => Err(TokenError::TooMany),
        }
    }

    /// `user`'s live tokens, oldest first.
    pub(super) async fn list(&self, user: &str) -> anyhow::Result<Vec<AccessToken>> {
        let user = user.to_owned();
        store::run(&self.store, move |s| s.access_tokens(&user, now_ms())).await
    }

    /// Revokes `user`'s token `id` and ends the sessions it opened here.
    pub(super) async fn revoke(&self, user: &str, id: &str) -> anyhow::Result<bool> {
        let (owner, name) = (user.to_owned(), id.to_owned());
        let revoked =
            store::run(&self.store, move |s| s.revoke_access_token(&owner, &name)).await?;
        if revoked {
            self.revocations.revoke(id);
        }
        Ok(revoked)
    }

    /// Checks a presented token: known, unexpired. `(its identity with its scope, its expiry,
    /// the cancellation its sessions watch)`; `Err` says why not, never echoing the token.
    pub(super) async fn verify(
        &self,
        token: &str,
    ) -> Result<(Identity, u64, Arc<CancellationToken>), String> {
        let hash = hex(&hash_token(token));
        let found = store::run(&self.store, move |s| s.access_token(&hash))
            .await
            .map_err(|_| "storage error".to_owned())?;
        let Some(found) = found else {
            return Err("unknown or revoked access token".into());
        };
        if found.expires_ms <= now_ms() {
            return Err("access token expired".into());
        }
        // Stored scopes were checked when made; an unreadable one grants nothing.
        let scope = parse_scope(&found.scope).map_err(|_| "access token unusable".to_owned())?;
        let mut identity = Identity::new(found.user, false);
        identity.scope = scope;
        Ok((
            identity,
            found.expires_ms,
            self.revocations.watch(&found.id),
        ))
    }

    /// Deletes expired tokens (hourly, with the refresh tokens).
    pub(super) async fn purge(&self) -> anyhow::Result<usize> {
        store::run(&self.store, move |s| s.purge_access_tokens(now_ms())).await
    }

    /// Ends, every [`SWEEP_EVERY`], the sessions whose token storage no longer holds (revoked on
    /// another node, or expired), until the process ends.
    pub(super) async fn sweep(&self) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            every.tick().await;
            let watched = self.revocations.watched();
            for ids in watched.chunks(MAX_PAGE_ROWS) {
                let asked = ids.to_vec();
                let live = store::run(&self.store, move |s| s.live_access_tokens(&asked, now_ms()));
                let live = match live.await {
                    Ok(live) => live,
                    Err(error) => {
                        tracing::warn!(%error, "checking access tokens failed");
                        break;
                    }
                };
                for id in ids.iter().filter(|id| !live.contains(id)) {
                    self.revocations.revoke(id);
                }
            }
        }
    }
}

/// Lower-case hex, as hashes are stored.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_room_rule_and_hashes_are_hex() {
        assert_eq!(parse_scope("read"), Ok(Scope::Read));
        assert_eq!(parse_scope("room:lobby"), Ok(Scope::Room("lobby".into())));
        assert!(parse_scope("room:no spaces").is_err());
        assert!(parse_scope("everything").is_err());
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(hex(&hash_token("x")).len(), 64);
        let token = format!("{TOKEN_PREFIX}{}", random_token(32));
        assert!(looks_like_personal_token(&token));
        assert!(!looks_like_personal_token("pat_hunter2"));
    }

    #[tokio::test]
    async fn expired_and_unknown_tokens_are_refused() {
        let dir = std::env::temp_dir().join(format!("parley-pat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn Store> = Arc::new(crate::store::SqliteStore::open(&dir).unwrap());
        let tokens = PersonalTokens::new(store.clone());
        let (token, record) = tokens
            .create("alice", "bot", "read", Some(1))
            .await
            .unwrap();
        let (identity, expires_ms, _) = tokens.verify(&token).await.unwrap();
        assert_eq!(identity.scope, Scope::Read);
        assert_eq!(expires_ms, record.expires_ms);
        let old = AccessToken {
            id: "old".into(),
            hash: hex(&hash_token("pat_old")),
            expires_ms: now_ms() - 1,
            ..record
        };
        store.insert_access_token(&old, 20, 0).unwrap();
        assert_eq!(
            tokens.verify("pat_old").await.unwrap_err(),
            "access token expired"
        );
        assert!(tokens.verify("pat_unknown").await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn revocations_cancel_the_watchers_and_forget_the_unwatched() {
        let r = Revocations::default();
        let a = r.watch("a");
        let _b = r.watch("b");
        drop(r.watch("c"));
        let mut watched = r.watched();
        watched.sort();
        assert_eq!(watched, ["a", "b"], "nobody watches c");
        r.revoke("a");
        assert!(a.is_cancelled());
    }
}
