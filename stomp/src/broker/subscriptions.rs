//! A session's subscriptions by id: a vector sorted by id, grown exactly (one slot for the
//! first subscription, doubling up to 64 slots at a time). A session usually has one or two subscriptions; a hash table would take four slots
//! (≈ 260 bytes) for the first, and a sorted vector finds an id among a few faster than
//! hashing it. The broker caps subscriptions per session, so the binary search and the
//! shifting insert stay bounded.

use std::sync::Arc;

/// A session's subscriptions (`S`), keyed by the id the client gave each.
pub(super) struct Subscriptions<S>(Vec<(Arc<str>, S)>);

impl<S> Default for Subscriptions<S> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<S> Subscriptions<S> {
    fn find(&self, id: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(have, _)| (**have).cmp(id))
    }

    /// How many there are.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// There is a subscription `id`.
    pub(super) fn contains_key(&self, id: &str) -> bool {
        self.find(id).is_ok()
    }

    /// Subscription `id`.
    pub(super) fn get(&self, id: &str) -> Option<&S> {
        self.find(id).ok().map(|i| &self.0[i].1)
    }

    /// Subscription `id`, to change.
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut S> {
        self.find(id).ok().map(|i| &mut self.0[i].1)
    }

    /// Adds subscription `id`, or replaces the one with that id.
    pub(super) fn insert(&mut self, id: Arc<str>, subscription: S) {
        match self.find(&id) {
            Ok(i) => self.0[i].1 = subscription,
            Err(i) => {
                // Exact growth while small: one subscription takes one slot, not four.
                if self.0.len() == self.0.capacity() {
                    self.0.reserve_exact(self.0.len().clamp(1, 64));
                }
                self.0.insert(i, (id, subscription));
            }
        }
    }

    /// Takes subscription `id` out, with its id.
    pub(super) fn remove_entry(&mut self, id: &str) -> Option<(Arc<str>, S)> {
        let i = self.find(id).ok()?;
        Some(self.0.remove(i))
    }

    /// Every subscription, in id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &S)> {
        self.0.iter().map(|(id, sub)| (id, sub))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_replaces_and_removes_by_id_and_keeps_one_slot_for_one() {
        let mut subs = Subscriptions::default();
        subs.insert("b".into(), 1);
        assert_eq!(subs.0.capacity(), 1, "one subscription, one slot");
        subs.insert("a".into(), 2);
        subs.insert("c".into(), 3);
        subs.insert("b".into(), 4);
        assert_eq!(subs.len(), 3);
        let ids: Vec<&str> = subs.iter().map(|(id, _)| &**id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(subs.get("b"), Some(&4));
        *subs.get_mut("c").unwrap() = 9;
        assert_eq!(subs.get("c"), Some(&9));
        assert!(subs.contains_key("a") && !subs.contains_key("d"));
        assert_eq!(subs.remove_entry("a").map(|(id, _)| id), Some("a".into()));
        assert!(subs.remove_entry("a").is_none());
        assert!(subs.get("zz").is_none());
        assert_eq!(subs.len(), 2);
    }
}
