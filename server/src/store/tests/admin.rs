//! The admin storage tests (operators, bans, closed rooms, the audit log), on every backend.

use super::*;

fn record(name: &str, reason: &str, at_ms: u64) -> AdminRecord {
    AdminRecord {
        name: name.into(),
        reason: reason.into(),
        by: "root".into(),
        at_ms,
    }
}

#[test]
fn operators_bans_and_closed_rooms_are_kept_and_lifted() {
    on_every_backend("admin", |open| {
        let store = open();
        assert!(store.grant_operator(&record("alice", "", 1)).unwrap());
        assert!(
            !store.grant_operator(&record("alice", "", 2)).unwrap(),
            "once"
        );
        assert!(store.grant_operator(&record("bob", "", 3)).unwrap());
        let names: Vec<String> = store
            .operators("", 10)
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        assert!(store.is_operator("bob").unwrap());
        assert!(!store.is_operator("carol").unwrap());
        let after_alice = store.operators("alice", 10).unwrap();
        assert_eq!(after_alice, [record("bob", "", 3)], "paged by name");
        assert!(store.revoke_operator("bob").unwrap());
        assert!(!store.is_operator("bob").unwrap());
        assert!(!store.revoke_operator("bob").unwrap());

        store.ban(&record("Mallory", "spam", 10)).unwrap();
        store.ban(&record("mallory", "more spam", 11)).unwrap();
        assert_eq!(
            store.bans("", 10).unwrap(),
            [record("mallory", "more spam", 11)],
            "one ban per name in any case, the latest reason"
        );
        store.ban(&record("Eve", "", 12)).unwrap();
        assert_eq!(store.bans("", 1).unwrap(), [record("Eve", "", 12)]);
        assert_eq!(
            store.bans("EVE", 1).unwrap(),
            [record("mallory", "more spam", 11)],
            "the next page, after the key of the last name"
        );
        assert!(store.unban("eve").unwrap());
        assert!(store.unban("MALLORY").unwrap());
        assert!(store.bans("", 10).unwrap().is_empty());
        assert!(!store.unban("mallory").unwrap());

        store.close_room(&record("lobby", "archived", 20)).unwrap();
        store.close_room(&record("attic", "", 21)).unwrap();
        let rooms: Vec<String> = store
            .closed_rooms("", 10)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(rooms, ["attic", "lobby"]);
        assert_eq!(store.closed_rooms("attic", 10).unwrap().len(), 1);
        assert!(store.reopen_room("lobby").unwrap());
        assert!(!store.reopen_room("lobby").unwrap());
        drop(store);
        let again = open();
        assert_eq!(
            again.closed_rooms("", 10).unwrap(),
            [record("attic", "", 21)],
            "kept"
        );
        assert_eq!(again.operators("", 10).unwrap().len(), 1);
    });
}

#[test]
fn the_audit_log_pages_newest_first() {
    on_every_backend("audit", |open| {
        let store = open();
        for i in 0..5u64 {
            store
                .audit(&AuditEntry {
                    at_ms: 100 + i,
                    actor: "alice".into(),
                    action: format!("act{i}"),
                    target: "bob".into(),
                    detail: "{}".into(),
                    node: "n1".into(),
                    outcome: "ok".into(),
                    ..AuditEntry::default()
                })
                .unwrap();
        }
        let first = store.audit_page(None, 3).unwrap();
        let actions: Vec<&str> = first.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["act4", "act3", "act2"]);
        assert_eq!(first[0].at_ms, 104);
        assert_eq!(first[0].node, "n1");
        let rest = store.audit_page(Some(first[2].id), 3).unwrap();
        let actions: Vec<&str> = rest.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["act1", "act0"]);
    });
}

#[test]
fn audit_rows_older_than_the_retention_are_purged() {
    on_every_backend("audit_purge", |open| {
        let store = open();
        for at_ms in [100, 200, 300] {
            store
                .audit(&AuditEntry {
                    at_ms,
                    actor: "alice".into(),
                    action: format!("at{at_ms}"),
                    ..AuditEntry::default()
                })
                .unwrap();
        }
        assert_eq!(
            store.purge_audit(200).unwrap(),
            1,
            "only the row before 200"
        );
        assert_eq!(store.purge_audit(200).unwrap(), 0);
        let left: Vec<u64> = store
            .audit_page(None, 10)
            .unwrap()
            .iter()
            .map(|e| e.at_ms)
            .collect();
        assert_eq!(left, [300, 200]);
    });
}
