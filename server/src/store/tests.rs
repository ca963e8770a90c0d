//! The storage tests, run against SQLite and, when `PARLEY_TEST_DATABASE` is set, PostgreSQL.

use super::*;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("parley-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn msg(room: &str, id: u64) -> StoredMessage {
    StoredMessage {
        room: room.into(),
        id,
        from: "alice".into(),
        ts: 1000 + id,
        body: format!("m{id}"),
        guest: id % 2 == 0,
        ..StoredMessage::default()
    }
}

/// An event `kind` by `from` about `target`, as message `id`.
fn event(id: u64, kind: Kind, target: u64, from: &str, body: &str) -> StoredMessage {
    StoredMessage {
        from: from.into(),
        body: body.into(),
        kind,
        target: Some(target),
        guest: false,
        ..msg("r", id)
    }
}

/// Opens the store under test, again on the same data when called again.
type Opener = Box<dyn Fn() -> Box<dyn Store>>;

/// Runs `check` on SQLite, then on PostgreSQL when `PARLEY_TEST_DATABASE` names a server
/// (CI sets it): both backends must behave the same.
fn on_every_backend(name: &str, check: impl Fn(&Opener)) {
    let dir = temp_dir(name);
    let sqlite: Opener = Box::new(move || Box::new(SqliteStore::open(&dir).unwrap()));
    check(&sqlite);
    if let Some(db) = postgres::tests::fresh_database(name) {
        let url = db.url.clone();
        let pg: Opener = Box::new(move || Box::new(PgStore::connect(&url).unwrap()));
        check(&pg);
    }
}

#[test]
fn nodes_sharing_a_database_number_each_room_consecutively() {
    let Some(db) = postgres::tests::fresh_database("numbering") else {
        return; // PostgreSQL only: SQLite serves one node.
    };
    let a = PgStore::connect(&db.url).unwrap();
    let b = PgStore::connect(&db.url).unwrap();
    // Single-node ids first: the shared counter continues after them.
    a.append(&[msg("r", 1), msg("r", 2)]).unwrap();
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|store| {
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for _ in 0..20 {
                    let mut batch = vec![msg("r", 0), msg("s", 0), msg("r", 0)];
                    store.append_numbered(&mut batch).unwrap();
                    ids.extend(batch.iter().map(|m| (m.room.clone(), m.id)));
                }
                ids
            })
        })
        .collect();
    let mut got: Vec<(String, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    got.sort();
    let r: Vec<u64> = got
        .iter()
        .filter(|(room, _)| room == "r")
        .map(|p| p.1)
        .collect();
    let s: Vec<u64> = got
        .iter()
        .filter(|(room, _)| room == "s")
        .map(|p| p.1)
        .collect();
    assert_eq!(
        r,
        (3..=82).collect::<Vec<_>>(),
        "no gap, no duplicate across nodes"
    );
    assert_eq!(s, (1..=40).collect::<Vec<_>>());
    let store = PgStore::connect(&db.url).unwrap();
    assert_eq!(store.last_id("r").unwrap(), 82);
    assert_eq!(store.after("r", 80, 10).unwrap().len(), 2);
}

#[test]
fn append_then_page_both_ways_and_survive_reopen() {
    on_every_backend("pages", append_then_page_both_ways_and_survive_reopen_on);
}

fn append_then_page_both_ways_and_survive_reopen_on(open: &Opener) {
    {
        let store = open();
        store
            .append(&(1..=10).map(|i| msg("general", i)).collect::<Vec<_>>())
            .unwrap();
        store.append(&[msg("other", 1)]).unwrap();
    }
    let store = open();
    let ids = |v: Vec<StoredMessage>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(ids(store.before("general", None, 3).unwrap()), [8, 9, 10]);
    assert_eq!(ids(store.before("general", Some(8), 3).unwrap()), [5, 6, 7]);
    assert_eq!(ids(store.after("general", 7, 100).unwrap()), [8, 9, 10]);
    assert_eq!(
        store.last_ids().unwrap(),
        HashMap::from([("general".into(), 10), ("other".into(), 1)])
    );
    assert_eq!(
        store.before("general", None, 1).unwrap()[0],
        msg("general", 10)
    );
}

#[test]
fn rooms_are_created_once_and_by_messages() {
    on_every_backend("rooms", |open| {
        rooms_are_created_once_and_by_messages_on(&*open())
    });
}

fn rooms_are_created_once_and_by_messages_on(store: &dyn Store) {
    assert!(store
        .create_room(&Room {
            name: "a".into(),
            private: true,
            owner: Some("alice".into()),
        })
        .unwrap());
    assert!(!store
        .create_room(&Room {
            name: "a".into(),
            private: false,
            owner: None,
        })
        .unwrap());
    store.append(&[msg("b", 1)]).unwrap();
    assert_eq!(
        store.rooms().unwrap(),
        [
            Room {
                name: "a".into(),
                private: true,
                owner: Some("alice".into()),
            },
            Room {
                name: "b".into(),
                private: false,
                owner: None,
            }
        ]
    );
    assert_eq!(
        store.memberships().unwrap(),
        [("a".into(), "alice".into(), Role::Owner)]
    );
}

#[test]
fn any_body_round_trips_and_rules_and_last_ids_read_back() {
    on_every_backend("bodies", |open| any_body_round_trips_on(&*open()));
}

fn any_body_round_trips_on(store: &dyn Store) {
    let mut m = msg("odd", 1);
    m.body = "nul \0 inside, and ünïcödé".into();
    store.append(std::slice::from_ref(&m)).unwrap();
    assert_eq!(store.after("odd", 0, 10).unwrap(), [m]);
    assert!(store
        .create_room(&Room {
            name: "club".into(),
            private: true,
            owner: Some("alice".into()),
        })
        .unwrap());
    store.set_member("club", "bob", Role::Admin).unwrap();
    let (private, mut members) = store.room_rules("club").unwrap().expect("stored");
    members.sort();
    assert!(private);
    assert_eq!(
        members,
        [("alice".into(), Role::Owner), ("bob".into(), Role::Admin)]
    );
    assert_eq!(store.room_rules("nowhere").unwrap(), None);
    let last = store
        .last_ids_of(&["odd".into(), "club".into(), "nowhere".into()])
        .unwrap();
    assert_eq!(last.get("odd"), Some(&1));
    assert!(last.get("club").is_none_or(|&id| id == 0));
    assert!(last.get("nowhere").is_none_or(|&id| id == 0));
}

#[test]
fn events_change_their_messages_in_stream_order() {
    on_every_backend("events", |open| events_change_their_messages_on(&*open()));
}

fn events_change_their_messages_on(store: &dyn Store) {
    let reply = StoredMessage {
        reply_to: Some(1),
        client_id: Some("c-2".into()),
        ..msg("r", 2)
    };
    store.append(&[msg("r", 1), reply.clone()]).unwrap();
    store
        .append(&[
            event(3, Kind::Edit, 1, "alice", "m1, edited"),
            event(4, Kind::React, 2, "carol", "👍"),
            event(5, Kind::React, 2, "alice", "🎉"),
            event(6, Kind::React, 2, "bob", "👍"),
            event(7, Kind::Unreact, 2, "carol", "👍"),
            event(8, Kind::React, 9, "carol", "👍"),
        ])
        .unwrap();
    let page = store.before("r", None, 10).unwrap();
    assert_eq!(
        page.len(),
        2,
        "history pages hold messages, not events: {page:?}"
    );
    assert_eq!(
        (page[0].body.as_str(), page[0].edited),
        ("m1, edited", true)
    );
    assert_eq!(page[1].reply_to, Some(1));
    assert_eq!(page[1].client_id.as_deref(), Some("c-2"));
    let reactions: Vec<_> = page[1]
        .reactions
        .iter()
        .map(|r| (r.emoji.as_str(), r.users.clone()))
        .collect();
    assert_eq!(
        reactions,
        [
            ("🎉", vec!["alice".to_owned()]),
            ("👍", vec!["bob".to_owned()])
        ]
    );
    // Deleting takes the text everywhere it was kept, and the reactions; later edits do nothing.
    store
        .append(&[
            event(9, Kind::Delete, 1, "alice", ""),
            event(10, Kind::Edit, 1, "alice", "too late"),
            event(11, Kind::Delete, 2, "alice", ""),
        ])
        .unwrap();
    let page = store.before("r", None, 10).unwrap();
    assert!(page
        .iter()
        .all(|m| m.deleted && m.body.is_empty() && m.reactions.is_empty()));
    let replay = store.after("r", 0, 100).unwrap();
    assert_eq!(replay.len(), 11, "catch-up replays messages and events");
    assert_eq!(replay[2].kind, Kind::Edit);
    assert_eq!(replay[2].target, Some(1));
    assert!(
        replay[2].body.is_empty(),
        "the edit of a deleted message keeps no text"
    );
    assert_eq!(
        store.message("r", 7).unwrap().map(|m| m.kind),
        Some(Kind::Unreact)
    );
    assert_eq!(store.message("r", 99).unwrap(), None);
}

fn refresh(hash: u8, expires_ms: u64) -> RefreshRecord {
    RefreshRecord {
        hash: [hash; 32],
        family: "f1".into(),
        user: "alice".into(),
        expires_ms,
    }
}

#[test]
fn refresh_tokens_rotate_once_and_reuse_revokes_the_family() {
    on_every_backend("refresh", |open| {
        refresh_tokens_rotate_once_and_reuse_revokes_the_family_on(&*open())
    });
}

fn refresh_tokens_rotate_once_and_reuse_revokes_the_family_on(store: &dyn Store) {
    store.insert_refresh(&refresh(1, 10_000)).unwrap();
    let rotated = store
        .rotate_refresh(&[1; 32], &refresh(2, 10_000), 5)
        .unwrap();
    assert_eq!(
        rotated,
        Rotation::Rotated {
            user: "alice".into()
        }
    );
    assert_eq!(
        store.refresh_user(&[2; 32], 5).unwrap().as_deref(),
        Some("alice")
    );
    assert_eq!(
        store.refresh_user(&[1; 32], 5).unwrap(),
        None,
        "rotated away"
    );
    // The old one again: theft. The newest one dies with it.
    let reused = store
        .rotate_refresh(&[1; 32], &refresh(3, 10_000), 6)
        .unwrap();
    assert_eq!(reused, Rotation::Reused);
    assert_eq!(store.refresh_user(&[2; 32], 6).unwrap(), None);
    assert_eq!(
        store
            .rotate_refresh(&[9; 32], &refresh(4, 10_000), 6)
            .unwrap(),
        Rotation::Invalid
    );
    store.insert_refresh(&refresh(5, 100)).unwrap();
    assert_eq!(
        store
            .rotate_refresh(&[5; 32], &refresh(6, 10_000), 100)
            .unwrap(),
        Rotation::Invalid,
        "expired"
    );
    assert_eq!(store.purge_refresh(100).unwrap(), 1);
}

#[test]
fn users_are_unique_and_passwords_change() {
    on_every_backend("users", |open| {
        users_are_unique_and_passwords_change_on(&*open())
    });
}

fn users_are_unique_and_passwords_change_on(store: &dyn Store) {
    assert!(store.create_user("alice", "h1").unwrap());
    assert!(!store.create_user("alice", "h2").unwrap());
    store
        .insert_refresh(&RefreshRecord {
            hash: [7; 32],
            family: "f".into(),
            user: "alice".into(),
            expires_ms: u64::MAX / 2,
        })
        .unwrap();
    assert!(store.set_password("alice", "h3").unwrap());
    assert_eq!(
        store.refresh_user(&[7; 32], 0).unwrap(),
        None,
        "sessions end"
    );
    assert!(!store.set_password("bob", "h3").unwrap());
    assert_eq!(store.password_hash("alice").unwrap().as_deref(), Some("h3"));
    assert_eq!(store.password_hash("bob").unwrap(), None);
}

#[test]
fn account_names_are_unique_ignoring_case() {
    on_every_backend("user_case", |open| {
        let store = open();
        assert!(store.create_user("alice", "h1").unwrap());
        for other in ["ALICE", "Alice", "aLiCe"] {
            assert!(!store.create_user(other, "h2").unwrap(), "{other}");
        }
        assert_eq!(
            store.account_like("ALICE").unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(store.account_like("bob").unwrap(), None);
        assert_eq!(
            store.password_hash("ALICE").unwrap(),
            None,
            "login is by exact name"
        );
    });
}

/// A database from before names were unique ignoring case may hold `alice` and `ALICE`: both
/// stay and log in by their exact names, and no third spelling can be registered.
#[test]
fn names_differing_only_by_case_from_before_stay() {
    let dir = temp_dir("legacy_case");
    {
        std::fs::create_dir_all(&dir).unwrap();
        let conn = rusqlite::Connection::open(dir.join("parley.db")).unwrap();
        for (i, sql) in sqlite::MIGRATIONS.iter().take(2).enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i as i64 + 1)
                .unwrap();
        }
        conn.execute_batch(LEGACY_USERS).unwrap();
    }
    legacy_names_on(&SqliteStore::open(&dir).unwrap());
    if let Some(db) = postgres::tests::fresh_database("legacy_case") {
        let mut client = ::postgres::Client::connect(&db.url, ::postgres::NoTls).unwrap();
        client.batch_execute(postgres::MIGRATIONS[0]).unwrap();
        client
            .batch_execute(
                "CREATE TABLE parley_migrations (version INTEGER PRIMARY KEY);
                 INSERT INTO parley_migrations VALUES (1);",
            )
            .unwrap();
        client.batch_execute(LEGACY_USERS).unwrap();
        legacy_names_on(&PgStore::connect(&db.url).unwrap());
    }
}

const LEGACY_USERS: &str = "INSERT INTO users (name, password_hash, created_ms) VALUES
    ('ALICE', 'h-upper', 2), ('alice', 'h-lower', 1), ('Bob', 'h-bob', 3);";

fn legacy_names_on(store: &dyn Store) {
    assert_eq!(
        store.password_hash("alice").unwrap().as_deref(),
        Some("h-lower")
    );
    assert_eq!(
        store.password_hash("ALICE").unwrap().as_deref(),
        Some("h-upper")
    );
    assert_eq!(
        store.account_like("Alice").unwrap().as_deref(),
        Some("alice"),
        "the oldest"
    );
    assert_eq!(store.account_like("BOB").unwrap().as_deref(), Some("Bob"));
    for other in ["Alice", "bob", "ALICE"] {
        assert!(!store.create_user(other, "h").unwrap(), "{other}");
    }
    assert!(store.set_password("ALICE", "h-new").unwrap());
    assert_eq!(
        store.password_hash("alice").unwrap().as_deref(),
        Some("h-lower")
    );
}

#[test]
fn a_duplicate_id_fails_the_whole_batch() {
    on_every_backend("dup", |open| {
        a_duplicate_id_fails_the_whole_batch_on(&*open())
    });
}

fn a_duplicate_id_fails_the_whole_batch_on(store: &dyn Store) {
    store.append(&[msg("r", 1)]).unwrap();
    assert!(store.append(&[msg("r", 2), msg("r", 1)]).is_err());
    assert_eq!(
        store.last_ids().unwrap()["r"],
        1,
        "nothing of the failed batch stayed"
    );
}

#[test]
fn read_marks_move_forward_and_unread_counts_only_others_live_messages() {
    on_every_backend("reads", read_state_on);
}

fn read_state_on(open: &Opener) {
    let from = |id, who: &str| StoredMessage {
        from: who.into(),
        ..msg("r", id)
    };
    let event = |id, kind, target| StoredMessage {
        kind,
        target: Some(target),
        body: "👍".into(),
        ..from(id, "bob")
    };
    let mention = StoredMessage {
        body: "hi @Alice".into(),
        mentions: vec!["Alice".into()],
        ..from(4, "bob")
    };
    {
        let store = open();
        store
            .append(&[from(1, "bob"), from(2, "ALICE"), from(3, "bob"), mention])
            .unwrap();
        // An edit and a reaction are no messages; a deleted message is not unread.
        store
            .append(&[
                event(5, Kind::React, 1),
                event(6, Kind::Edit, 3),
                event(7, Kind::Delete, 3),
            ])
            .unwrap();
        let rooms = ["r".to_owned(), "empty".to_owned()];
        let before = store.unread("alice", &rooms).unwrap();
        assert_eq!(
            before["r"],
            ReadState {
                last_read: 0,
                unread: 2,
                mentions: 1
            }
        );
        assert_eq!(before["empty"], ReadState::default());
        assert_eq!(store.set_read("Alice", "r", 3).unwrap(), 3);
        assert_eq!(
            store.set_read("alice", "r", 1).unwrap(),
            3,
            "never backwards"
        );
    }
    let store = open();
    let after = store.unread("ALICE", &["r".to_owned()]).unwrap();
    assert_eq!(
        after["r"],
        ReadState {
            last_read: 3,
            unread: 1,
            mentions: 1
        }
    );
    assert_eq!(store.set_read("alice", "r", 7).unwrap(), 7);
    assert_eq!(
        store.unread("alice", &["r".to_owned()]).unwrap()["r"],
        ReadState {
            last_read: 7,
            unread: 0,
            mentions: 0
        }
    );
    assert_eq!(store.read_rooms("alice").unwrap(), ["r"]);
    assert!(store.read_rooms("bob").unwrap().is_empty());
    assert!(store.unread("alice", &[]).unwrap().is_empty());
}

#[test]
fn unread_counts_stop_at_the_cap() {
    on_every_backend("cap", |open| {
        let store = open();
        let many: Vec<StoredMessage> = (1..=UNREAD_CAP + 5)
            .map(|i| StoredMessage {
                from: "bob".into(),
                ..msg("big", i)
            })
            .collect();
        store.append(&many).unwrap();
        let got = store.unread("alice", &["big".to_owned()]).unwrap();
        assert_eq!(got["big"].unread, UNREAD_CAP);
    });
}

#[test]
fn the_directory_pages_accounts_by_name_ignoring_case() {
    on_every_backend("directory", |open| {
        let store = open();
        for name in ["bob", "Alice", "al.x", "al-y", "al_z", "carol", "ALBERT"] {
            assert!(store.create_user(name, "h").unwrap());
        }
        let all = store.users_page("", None, 100).unwrap();
        // Bytewise by lower-case key: '-' < '.' < '_' < letters.
        assert_eq!(
            all,
            ["al-y", "al.x", "al_z", "ALBERT", "Alice", "bob", "carol"]
        );
        assert_eq!(
            store.users_page("AL", None, 100).unwrap(),
            ["al-y", "al.x", "al_z", "ALBERT", "Alice"]
        );
        let first = store.users_page("al", None, 2).unwrap();
        assert_eq!(first, ["al-y", "al.x"]);
        let next = store.users_page("al", Some(&first[1]), 2).unwrap();
        assert_eq!(next, ["al_z", "ALBERT"]);
        let last = store.users_page("al", Some("albert"), 2).unwrap();
        assert_eq!(last, ["Alice"]);
        assert!(store.users_page("al", Some("ALICE"), 2).unwrap().is_empty());
        assert!(store.users_page("zed", None, 5).unwrap().is_empty());
        assert_eq!(store.users_page("", None, 0).unwrap(), Vec::<String>::new());
    });
}

mod admin;
mod identities;
mod tokens;
