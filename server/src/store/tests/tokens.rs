//! The personal access token storage tests, on every backend.

use super::*;

fn access(id: &str, user: &str, expires_ms: u64) -> AccessToken {
    AccessToken {
        id: id.into(),
        hash: format!("{id:0>64}"),
        user: user.into(),
        name: format!("token {id}"),
        scope: "room:lobby".into(),
        created_ms: 10,
        expires_ms,
    }
}

#[test]
fn access_tokens_are_bounded_found_by_hash_listed_and_revoked() {
    on_every_backend("access_tokens", |open| {
        access_tokens_on(open);
    });
}

fn access_tokens_on(open: &Opener) {
    let store = open();
    assert!(store.create_user("alice", "h").unwrap());
    assert!(store.create_user("bob", "h").unwrap());
    assert!(store
        .insert_access_token(&access("a1", "alice", 1000), 2, 50)
        .unwrap());
    assert!(store
        .insert_access_token(&access("a2", "alice", 60), 2, 50)
        .unwrap());
    assert!(
        !store
            .insert_access_token(&access("a3", "alice", 1000), 2, 50)
            .unwrap(),
        "two live ones held already"
    );
    assert!(store
        .insert_access_token(&access("b1", "bob", 1000), 2, 50)
        .unwrap());
    assert!(
        store
            .insert_access_token(&access("a3", "alice", 1000), 2, 60)
            .unwrap(),
        "a2 expired at 60: it no longer counts, and is gone"
    );
    let found = store.access_token(&format!("{:0>64}", "a1")).unwrap();
    assert_eq!(found, Some(access("a1", "alice", 1000)));
    assert_eq!(store.access_token(&"f".repeat(64)).unwrap(), None);
    let ids = |user| {
        let tokens = store.access_tokens(user, 60).unwrap();
        tokens.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    assert_eq!(ids("alice"), ["a1", "a3"]);
    assert!(
        !store.revoke_access_token("bob", "a1").unwrap(),
        "not bob's"
    );
    assert!(store.revoke_access_token("alice", "a1").unwrap());
    assert!(!store.revoke_access_token("alice", "a1").unwrap(), "once");
    drop(store);
    let store = open();
    assert_eq!(store.access_token(&format!("{:0>64}", "a1")).unwrap(), None);
    let asked = ["a1".to_owned(), "a3".to_owned(), "b1".to_owned()];
    let mut live = store.live_access_tokens(&asked, 60).unwrap();
    live.sort();
    assert_eq!(live, ["a3", "b1"]);
    assert_eq!(store.purge_access_tokens(1000).unwrap(), 2);
    assert!(store.access_tokens("bob", 0).unwrap().is_empty());
}
