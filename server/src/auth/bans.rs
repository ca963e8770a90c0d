//! Banned users, in memory: checked whenever a credential is presented or made (login,
//! refresh, tokens, cookies, guests) and when a session is identified to the hub, so a banned
//! user opens nothing. Storage holds the bans; operators change them here and on every node
//! (through the hub and the bus).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use crate::store::user_key;

/// Banned names (by their key, [`user_key`]: every spelling) and why. Checked on every
/// credential check, so a check is a read lock, and none at all while nobody is banned.
#[derive(Debug, Default)]
pub struct Bans {
    any: AtomicBool,
    reasons: RwLock<HashMap<String, String>>,
}

impl Bans {
    /// `Err("banned: <reason>")` if `name` is banned.
    pub fn check(&self, name: &str) -> Result<(), String> {
        match self.reason(name) {
            Some(reason) => Err(banned(&reason)),
            None => Ok(()),
        }
    }

    /// Nobody is banned.
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// Why `name` is banned, if it is.
    pub fn reason(&self, name: &str) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.read().get(&user_key(name)).cloned()
    }

    /// Bans `name` (any spelling).
    pub fn ban(&self, name: &str, reason: &str) {
        let mut reasons = self.write();
        reasons.insert(user_key(name), reason.to_owned());
        self.any.store(true, Ordering::Release);
    }

    /// Lifts the ban of `name`.
    pub fn unban(&self, name: &str) {
        let mut reasons = self.write();
        reasons.remove(&user_key(name));
        self.any.store(!reasons.is_empty(), Ordering::Release);
    }

    /// Replaces every ban with `bans` (name, reason): what storage holds. Returns the names
    /// (by key) that were not banned before, with their reasons.
    pub fn replace(
        &self,
        bans: impl IntoIterator<Item = (String, String)>,
    ) -> HashMap<String, String> {
        let mut reasons = self.write();
        let new: HashMap<String, String> =
            bans.into_iter().map(|(n, r)| (user_key(&n), r)).collect();
        let old = std::mem::replace(&mut *reasons, new);
        self.any.store(!reasons.is_empty(), Ordering::Release);
        reasons
            .iter()
            .filter(|(key, _)| !old.contains_key(*key))
            .map(|(key, why)| (key.clone(), why.clone()))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, String>> {
        // Single inserts and removes: a panic cannot leave the map half-written.
        self.reasons.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, String>> {
        self.reasons.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a banned user is told: `banned: <reason>`.
pub fn banned(reason: &str) -> String {
    if reason.is_empty() {
        "banned: by an operator".to_owned()
    } else {
        format!("banned: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_hold_for_every_spelling_until_lifted() {
        let bans = Bans::default();
        assert!(bans.check("mallory").is_ok());
        bans.ban("Mallory", "spam");
        assert_eq!(bans.check("MALLORY").unwrap_err(), "banned: spam");
        bans.unban("mallory");
        assert!(bans.check("Mallory").is_ok());
        let newly = bans.replace([("Eve".to_owned(), String::new())]);
        assert_eq!(newly.keys().collect::<Vec<_>>(), ["eve"]);
        assert_eq!(bans.check("eve").unwrap_err(), "banned: by an operator");
        assert!(bans
            .replace([("EVE".to_owned(), "x".to_owned())])
            .is_empty());
        assert_eq!(
            bans.check("eve").unwrap_err(),
            "banned: x",
            "the stored reason"
        );
    }
}
