//! A disk that stops taking writes: room sends are refused with a clear error while it lasts,
//! the log says so once (not once per batch), what was delivered is written once storage works
//! again (no hole in the room's ids), and everything acknowledged survives a restart.
//!
//! The failure is real, not mocked: the server's RLIMIT_FSIZE is set to 0 with prlimit(2), so
//! every write SQLite makes to its files fails with EFBIG — as on a full disk — while reads go
//! on; raising the limit again is the disk being freed.

use std::time::{Duration, Instant};

use parley_tests::stomp::StompClient;
use parley_tests::{fresh_data_dir, ServerProcess};
use serde_json::json;

use crate::json_client::{next_of, raw, send, Ws};

/// Sets the soft limit on the size of files process `pid` may write (`None`: no limit).
fn limit_file_size(pid: u32, soft: Option<u64>) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) reads `new` and writes `old`, both valid for the call; the pid is our
    // own unreaped child.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft.unwrap_or(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

async fn joined(server: &ServerProcess, name: &str) -> Ws {
    let mut ws = raw(server, name).await;
    send(&mut ws, json!({"type": "join", "room": "vault"})).await;
    let answer = next_of(&mut ws, "joined", Duration::from_secs(10)).await;
    assert!(answer.is_some(), "{name} could not join");
    ws
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn while_storage_fails_room_sends_are_refused_and_nothing_delivered_is_lost() {
    let data = fresh_data_dir();
    let server = ServerProcess::start_on_sqlite(&data, &["--storage-log-interval", "2s"]);
    let mut alice = joined(&server, "alice").await;
    let mut bob = joined(&server, "bob").await;
    send(
        &mut alice,
        json!({"type": "send", "room": "vault", "body": "m1", "ref": "1"}),
    )
    .await;
    let ack = next_of(&mut alice, "ack", Duration::from_secs(10)).await;
    assert_eq!(ack.expect("ack of m1")["id"], "1");
    let m1 = next_of(&mut bob, "message", Duration::from_secs(10)).await;
    assert_eq!(m1.expect("m1")["body"], "m1");

    limit_file_size(server.pid(), Some(0));
    let failing_since = Instant::now();
    // Sends until one is refused: the first (and any racing it) is numbered and delivered
    // before the failed write is known. Those are kept, not acknowledged yet.
    let mut delivered = Vec::new();
    let refusal = loop {
        let n = delivered.len() + 2;
        assert!(n < 50, "no send was refused");
        let body = format!("m{n}");
        let send_it = json!({"type": "send", "room": "vault", "body": body, "ref": n.to_string()});
        send(&mut alice, send_it).await;
        match next_of(&mut bob, "message", Duration::from_secs(5)).await {
            Some(m) => {
                // Bob sees each delivered one, numbered on from 1.
                assert_eq!(m["id"], n.to_string(), "{m}");
                assert_eq!(m["body"], body.as_str(), "{m}");
                delivered.push(body);
            }
            None => break next_of(&mut alice, "error", Duration::from_secs(10)).await,
        }
    };
    let refusal = refusal.expect("neither delivered nor refused");
    assert_eq!(refusal["code"], "storage_unavailable", "{refusal}");
    assert_eq!(
        refusal["ref"],
        (delivered.len() + 2).to_string(),
        "{refusal}"
    );
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("storage unavailable"),
        "{refusal}"
    );
    assert!(
        !delivered.is_empty(),
        "the first send after the failure is delivered"
    );
    // STOMP is refused as clearly (an ERROR, as STOMP has no other refusal); direct messages
    // are not stored and go on.
    let mut carol = StompClient::connect(server.stomp_addr(), "carol").await;
    carol
        .send(
            "SEND",
            &[("destination", "/topic/vault"), ("receipt", "s1")],
            b"stomp",
        )
        .await;
    let error = carol.recv().await.expect("ERROR");
    assert_eq!(
        (error.command.as_str(), error.header("receipt-id")),
        ("ERROR", "s1")
    );
    assert!(
        error.header("message").contains("storage unavailable"),
        "{error:?}"
    );
    send(
        &mut alice,
        json!({"type": "send", "to": "bob", "body": "dm", "ref": "dm"}),
    )
    .await;
    let dm = next_of(&mut bob, "message", Duration::from_secs(10))
        .await
        .expect("DM");
    assert_eq!(dm["body"], "dm");
    let dm_ack = next_of(&mut alice, "ack", Duration::from_secs(10))
        .await
        .expect("DM ack");
    assert_eq!(dm_ack["ref"], "dm");

    // Several retries happen meanwhile (one a second); acknowledgements wait for durability.
    let early_ack = next_of(&mut alice, "ack", Duration::from_secs(3)).await;
    assert!(
        early_ack.is_none(),
        "acknowledged while not stored: {early_ack:?}"
    );
    limit_file_size(server.pid(), None);
    let failed_for = failing_since.elapsed();
    // The kept messages are written and acknowledged, in order.
    for i in 0..delivered.len() {
        let ack = next_of(&mut alice, "ack", Duration::from_secs(10))
            .await
            .expect("late ack");
        assert_eq!(ack["id"], (i + 2).to_string());
    }
    let next_id = delivered.len() + 2;
    send(
        &mut alice,
        json!({"type": "send", "room": "vault", "body": "after", "ref": "a"}),
    )
    .await;
    let ack = next_of(&mut alice, "ack", Duration::from_secs(10))
        .await
        .expect("ack after");
    assert_eq!(
        ack["id"],
        next_id.to_string(),
        "no id was used by a refused message"
    );
    // The log: one line when it started, one per interval (2 s here) while it lasted, one
    // when it ended — not one per failed batch (one a second, besides the refused sends).
    let log = server.stderr_log();
    assert_eq!(count(&log, "storage failing"), 1, "{log}");
    let reports = count(&log, "storage still failing");
    let most = usize::try_from(failed_for.as_secs() / 2).unwrap() + 1;
    assert!(
        (1..=most).contains(&reports),
        "{reports} reports in {failed_for:?}:\n{log}"
    );
    let counted = log
        .lines()
        .filter_map(|l| l.split("failed_attempts=").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .collect::<Vec<_>>();
    assert!(
        counted.len() == reports && counted.iter().all(|&n| n >= 1),
        "each report counts the failed attempts since the last: {counted:?}\n{log}"
    );
    assert_eq!(count(&log, "storing messages failed"), 0, "{log}");
    assert_eq!(count(&log, "storage recovered"), 1, "{log}");

    // Everything acknowledged (and everything delivered) is on disk: ids 1..=next_id, no gap.
    let mut server = server;
    server.kill();
    let server = ServerProcess::start_on_sqlite(&data, &[]);
    let mut reader = raw(&server, "reader").await;
    send(
        &mut reader,
        json!({"type": "history", "room": "vault", "limit": 100}),
    )
    .await;
    let page = next_of(&mut reader, "history", Duration::from_secs(10))
        .await
        .expect("history");
    let got: Vec<(String, String)> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut expected = vec![("1".to_owned(), "m1".to_owned())];
    expected.extend(
        delivered
            .iter()
            .enumerate()
            .map(|(i, b)| ((i + 2).to_string(), b.clone())),
    );
    expected.push((next_id.to_string(), "after".to_owned()));
    assert_eq!(got, expected);
}
