//! Who is connected: each user's number of sessions (and how many of them said they are
//! away), and the changes of that since the caller last asked, so a server can share them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::types::SessionId;

/// Whether a user is connected, as one of [`Broker::take_online_changes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlineChange {
    /// The user.
    pub user: Arc<str>,
    /// A guest (not an account).
    pub guest: bool,
    /// `None`: their last session ended; `Some(away)`: connected, away if every session is.
    pub state: Option<bool>,
}

/// One connected user.
#[derive(Clone, Copy, Debug, Default)]
struct UserSessions {
    sessions: usize,
    away: usize,
    guest: bool,
}

impl UserSessions {
    fn away(&self) -> bool {
        self.sessions > 0 && self.away == self.sessions
    }
}

/// The broker's index of connected users. Changes wait in `changes` until taken; at most one
/// entry per user is kept (the latest), so the list is bounded by the users who changed.
#[derive(Default)]
pub(super) struct Online {
    users: HashMap<Arc<str>, UserSessions>,
    away: HashSet<SessionId>,
    changes: HashMap<Arc<str>, OnlineChange>,
}

impl Online {
    fn note(&mut self, user: &Arc<str>) {
        let state = self.users.get(user).map(UserSessions::away);
        let guest = self.users.get(user).is_some_and(|u| u.guest);
        let change = OnlineChange {
            user: user.clone(),
            guest,
            state,
        };
        self.changes.insert(user.clone(), change);
    }

    /// A guest of this name is connected.
    pub(super) fn is_guest_online(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.guest && u.sessions > 0)
    }

    pub(super) fn connected(&mut self, user: &Arc<str>, guest: bool) {
        let entry = self.users.entry(user.clone()).or_default();
        let before = entry.away();
        entry.sessions += 1;
        entry.guest = guest;
        if entry.sessions == 1 || before != entry.away() {
            self.note(user);
        }
    }

    pub(super) fn disconnected(&mut self, session: SessionId, user: &Arc<str>) {
        let was_away = self.away.remove(&session);
        let Some(entry) = self.users.get_mut(user) else {
            return;
        };
        let before = entry.away();
        entry.sessions = entry.sessions.saturating_sub(1);
        if was_away {
            entry.away = entry.away.saturating_sub(1);
        }
        if entry.sessions == 0 {
            self.users.remove(user);
            self.note(user);
        } else if before != entry.away() {
            self.note(user);
        }
    }
}

impl Online {
    /// Marks `session` of `user` away (or back); `user` is away while every session is.
    pub(super) fn set_away(&mut self, session: SessionId, user: &Arc<str>, away: bool) {
        let changed = if away {
            self.away.insert(session)
        } else {
            self.away.remove(&session)
        };
        let Some(entry) = self.users.get_mut(user).filter(|_| changed) else {
            return;
        };
        let before = entry.away();
        if away {
            entry.away += 1;
        } else {
            entry.away = entry.away.saturating_sub(1);
        }
        if before != entry.away() {
            self.note(user);
        }
    }

    /// Is `user` connected (exactly this name), and if so, away?
    pub(super) fn state(&self, user: &str) -> Option<bool> {
        self.users.get(user).map(UserSessions::away)
    }

    /// Every connected user: (name, guest, away), in no order.
    pub(super) fn users(&self) -> Vec<(Arc<str>, bool, bool)> {
        self.users
            .iter()
            .map(|(name, u)| (name.clone(), u.guest, u.away()))
            .collect()
    }

    /// Changes since the last call.
    pub(super) fn take_changes(&mut self) -> Vec<OnlineChange> {
        if self.changes.is_empty() {
            return Vec::new();
        }
        self.changes.drain().map(|(_, c)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::broker::{Broker, BrokerLimits};

    #[test]
    fn a_user_is_online_while_a_session_is_and_away_while_all_are() {
        let mut b = Broker::new(BrokerLimits::default());
        b.connect(1, "alice".into());
        b.connect(2, "alice".into());
        assert_eq!(b.online_state("alice"), Some(false));
        let changes = b.take_online_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].state, Some(false));
        b.set_away(1, true);
        assert_eq!(b.online_state("alice"), Some(false));
        assert!(b.take_online_changes().is_empty());
        b.set_away(2, true);
        assert_eq!(b.online_state("alice"), Some(true));
        b.disconnect(2, &mut |_| {});
        assert_eq!(b.online_state("alice"), Some(true));
        b.disconnect(1, &mut |_| {});
        assert_eq!(b.online_state("alice"), None);
        let changes = b.take_online_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].state, None);
        assert!(b.online_users().is_empty());
    }
}
