//! Identities from other sites and login states, on every backend.

use super::*;

#[test]
fn identities_link_unlink_and_keep_a_way_in() {
    on_every_backend("identities", |open| identities_on(&*open()));
}

fn identities_on(store: &dyn Store) {
    // First sign-in creates a password-less account; the name is taken in any case.
    assert!(store.create_identity_user("Zoe", "test", "sub-1").unwrap());
    assert!(!store.create_identity_user("zoe", "test", "sub-2").unwrap());
    assert_eq!(store.identity_user("test", "sub-2").unwrap(), None);
    assert_eq!(
        store.identity_user("test", "sub-1").unwrap().as_deref(),
        Some("Zoe")
    );
    assert_eq!(store.password_hash("Zoe").unwrap().as_deref(), Some(""));
    // Its only way in cannot go; a second provider makes the first removable.
    assert_eq!(
        store.unlink_identity("Zoe", "test").unwrap(),
        Unlink::LastWay
    );
    assert_eq!(
        store.unlink_identity("Zoe", "other").unwrap(),
        Unlink::NotLinked
    );
    assert_eq!(
        store.link_identity("Zoe", "other", "o-1").unwrap(),
        Link::Linked
    );
    assert_eq!(
        store.link_identity("Zoe", "other", "o-1").unwrap(),
        Link::Linked
    );
    assert_eq!(
        store.link_identity("Zoe", "other", "o-2").unwrap(),
        Link::ProviderTaken
    );
    let linked: Vec<_> = store
        .identities("Zoe")
        .unwrap()
        .into_iter()
        .map(|i| i.provider)
        .collect();
    assert_eq!(linked, ["other", "test"]);
    assert_eq!(
        store.unlink_identity("Zoe", "test").unwrap(),
        Unlink::Unlinked
    );
    assert_eq!(store.identity_user("test", "sub-1").unwrap(), None);
    // A password account links one, and may unlink it: the password remains.
    assert!(store.create_user("bob", "hash").unwrap());
    assert_eq!(
        store.link_identity("bob", "other", "o-1").unwrap(),
        Link::OtherUser
    );
    assert_eq!(
        store.link_identity("bob", "test", "sub-1").unwrap(),
        Link::Linked
    );
    assert_eq!(
        store.unlink_identity("bob", "test").unwrap(),
        Unlink::Unlinked
    );
    assert!(store.identities("bob").unwrap().is_empty());
}

#[test]
fn a_login_state_works_once_and_expired_ones_are_forgotten() {
    on_every_backend("login_states", |open| login_states_on(&*open()));
}

fn login_states_on(store: &dyn Store) {
    assert!(store.consume_login_state("a", 2_000, 1_000).unwrap());
    assert!(!store.consume_login_state("a", 2_000, 1_500).unwrap());
    // Past its expiry the row is purged; the signed cookie refuses such a state before this.
    assert!(store.consume_login_state("a", 9_000, 3_000).unwrap());
}
