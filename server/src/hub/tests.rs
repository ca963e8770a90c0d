//! The hub without sockets: sessions opened in memory over a temporary SQLite store, driven
//! through the same [`ChatSession`] and [`HubSession`] calls the endpoints make.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parley_protocol::CloseCode;
use parley_stomp::broker::Receipt;
use parley_stomp::session::Identity;
use parley_stomp::SharedMessage;

use super::session::DELIVERY_BATCH;
use super::*;
use crate::journal::JournalSettings;
use crate::metrics::{Protocol, Transport};
use crate::store::SqliteStore;

/// Longest wait for anything the hub should hand a session at once; only a failing test waits.
const PATIENCE: Duration = Duration::from_secs(10);

/// A hub over a fresh SQLite store in a temporary directory, removed when dropped.
struct TestHub {
    hub: Arc<Hub>,
    dir: std::path::PathBuf,
}

impl TestHub {
    fn new(name: &str, outbox_capacity: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("parley-hub-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir).expect("temporary store"));
        let journal = Journal::start(
            store.clone(),
            JournalSettings {
                capacity: 1024,
                ..JournalSettings::default()
            },
        );
        let acl = Acl::load(&*store, Default::default()).expect("empty rules");
        let settings = HubSettings {
            broker: BrokerLimits::default(),
            outbox_capacity,
            outbox_bytes: usize::MAX,
            budget: parley_stomp::budget::MemoryBudget::unlimited(),
            edits: Default::default(),
            bans: Default::default(),
            operators: Vec::new(),
        };
        let hub = Hub::new(settings, store, journal, acl, None, HashMap::new());
        Self { hub, dir }
    }

    fn client(&self, name: &str) -> Client {
        let identity = Identity::new(name, false);
        let settings = Arc::new(ChatSettings {
            max_body: 4096,
            rate_limit: 0,
        });
        let origin = Origin::new(Protocol::Raw, Transport::WebSocket, [127, 0, 0, 1].into());
        Client(
            ChatSession::open(&self.hub, identity, settings, origin),
            VecDeque::new(),
        )
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One session, as an endpoint would hold it, and the delivered messages it has not looked at
/// yet (a room's run arrives as one entry).
struct Client(ChatSession, VecDeque<Arc<SharedMessage>>);

impl Client {
    async fn join(&mut self, room: &str, since: Option<u64>) -> Result<JoinAnswer, Refusal> {
        self.0.join(room, since).await
    }

    /// Publishes one message per body, in one step; each acknowledgement (its id) comes back
    /// as a notice once durable.
    fn send(&mut self, target: Target<'_>, bodies: &[String]) {
        for body in bodies {
            let receipt = Receipt(Arc::new(|id| Bytes::from(id.to_string())));
            self.0
                .send(target.clone(), body, Default::default(), receipt)
                .expect("send accepted");
        }
        for result in self.0.flush() {
            result.expect("published");
        }
    }

    async fn next(&mut self) -> Next {
        tokio::time::timeout(PATIENCE, self.0.session().next())
            .await
            .expect("the hub handed the session nothing")
    }

    /// The next delivered message, one at a time (anything else the hub hands over skipped).
    async fn delivered(&mut self) -> Arc<SharedMessage> {
        loop {
            if let Some(message) = self.1.pop_front() {
                return message;
            }
            if let Next::Delivery(queued) = self.next().await {
                self.1.extend(queued.iter().map(|d| d.message.clone()));
            }
        }
    }

    /// The next room message or DM (presence and typing skipped): id and body.
    async fn message(&mut self) -> (u64, String) {
        loop {
            if let Some(message) = chat_message(&*self.delivered().await) {
                return message;
            }
        }
    }

    /// The next presence change: (user, event).
    async fn presence(&mut self) -> (String, String) {
        loop {
            let m = self.delivered().await;
            if m.header("destination")
                .is_some_and(|d| d.ends_with(".presence"))
            {
                let user = m.header("user").unwrap_or_default().to_owned();
                return (user, m.header("event").unwrap_or_default().to_owned());
            }
        }
    }

    /// The next read mark of the account: (room, last read id).
    async fn read_mark(&mut self) -> (String, u64) {
        loop {
            let m = self.delivered().await;
            if m.header("destination") == Some("/user/queue/read") {
                let last = m.header(READ_LAST).and_then(|l| l.parse().ok());
                let room = m.header(READ_ROOM).unwrap_or_default().to_owned();
                return (room, last.expect("a numeric last-read"));
            }
        }
    }

    /// Waits until the acknowledgements of `n` durable messages came back.
    async fn acks(&mut self, n: usize) {
        let mut acked = 0;
        while acked < n {
            if let Next::Notice(Notice::Encoded(_)) = self.next().await {
                acked += 1;
            }
        }
    }
}

/// A room message or DM's id and body; `None` for presence and typing.
fn chat_message(m: &SharedMessage) -> Option<(u64, String)> {
    let destination = m.header("destination").unwrap_or_default();
    if destination.ends_with(".presence") || destination.ends_with(".typing") {
        return None;
    }
    let id = m.header("message-id")?.parse().ok()?;
    Some((id, String::from_utf8_lossy(m.body()).into_owned()))
}

fn bodies(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("{prefix}-{n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_interleave_but_every_subscriber_sees_one_order() {
    let t = TestHub::new("order", 4096);
    let mut readers = Vec::new();
    for name in ["r1", "r2", "r3"] {
        let mut reader = t.client(name);
        reader.join("lobby", None).await.expect("joined");
        readers.push(reader);
    }
    let (publishers, per_publisher) = (3, 200);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let mut publisher = t.client(&format!("p{p}"));
        publisher.join("lobby", None).await.expect("joined");
        tasks.push(tokio::spawn(async move {
            // Small batches, so the publishers' steps interleave under the lock.
            for chunk in (0..per_publisher).step_by(5) {
                publisher.send(
                    Target::Room("lobby"),
                    &bodies(&format!("p{p}"), chunk..chunk + 5),
                );
                tokio::task::yield_now().await;
            }
            publisher
        }));
    }
    let mut seen = Vec::new();
    for reader in &mut readers {
        let mut got = Vec::new();
        for _ in 0..publishers * per_publisher {
            got.push(reader.message().await);
        }
        seen.push(got);
    }
    for task in tasks {
        task.await.expect("publisher finished");
    }
    assert!(
        seen.iter().all(|s| *s == seen[0]),
        "subscribers disagree on the order"
    );
    let ids: Vec<u64> = seen[0].iter().map(|(id, _)| *id).collect();
    let expected: Vec<u64> = (1..=(publishers * per_publisher) as u64).collect();
    assert_eq!(ids, expected, "room ids are consecutive in delivery order");
    for p in 0..publishers {
        let prefix = format!("p{p}-");
        let own: Vec<&String> = seen[0]
            .iter()
            .map(|(_, body)| body)
            .filter(|b| b.starts_with(&prefix))
            .collect();
        assert_eq!(
            own,
            bodies(&format!("p{p}"), 0..per_publisher)
                .iter()
                .collect::<Vec<_>>()
        );
    }
}

/// Publishers whose every batch alternates between two rooms (a turn taken and given up per
/// message, the broker shared): a member of both sees each room's ids consecutive and each
/// publisher's messages to a room in the order sent.
/// One read's worth of sends bigger than a batch, read by a subscriber whose outbox holds
/// `outbox_capacity`, in batches as an endpoint takes them: each batch's size in messages
/// (every id once, in order, checked).
async fn long_turn(name: &str, outbox_capacity: usize) -> Vec<usize> {
    let t = TestHub::new(name, outbox_capacity);
    let mut reader = t.client("reader");
    let mut writer = t.client("writer");
    for c in [&mut reader, &mut writer] {
        c.join("big", None).await.expect("joined");
    }
    // The room's first message takes the broker alone; the rest go in its turn.
    writer.send(Target::Room("big"), &bodies("m", 0..1));
    let total = 1 + 3 * DELIVERY_BATCH + 7;
    let reading = tokio::spawn(async move {
        let (mut ids, mut runs) = (Vec::new(), Vec::new());
        while ids.len() < total {
            let first = match reader.next().await {
                Next::Delivery(queued) => queued,
                Next::Evicted(_, why) => panic!("evicted: {why}"),
                _ => continue,
            };
            let batch: Vec<Queued> = reader.0.session().batch(first).collect();
            runs.push(batch.iter().map(mailbox::Weigh::count).sum());
            let delivered = batch.iter().flat_map(Queued::iter);
            ids.extend(delivered.filter_map(|d| chat_message(d.message).map(|(id, _)| id)));
        }
        (ids, runs)
    });
    writer.send(Target::Room("big"), &bodies("m", 1..total));
    let (ids, runs) = reading.await.expect("read everything");
    assert_eq!(ids, (1..=total as u64).collect::<Vec<_>>());
    runs
}

/// The turn hands its subscribers runs of at most one batch each, and a batch taken from the
/// outbox never holds more (it is what a subscriber copies into its output at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_turn_is_handed_on_in_runs_of_at_most_one_batch() {
    let runs = long_turn("long-turn", 8192).await;
    assert!(runs.iter().all(|&n| n <= DELIVERY_BATCH), "runs: {runs:?}");
    assert!(runs.contains(&DELIVERY_BATCH), "runs: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_across_rooms_keep_each_room_in_order() {
    let t = TestHub::new("rooms-order", 8192);
    let mut reader = t.client("reader");
    for room in ["east", "west"] {
        reader.join(room, None).await.expect("joined");
    }
    let (publishers, batches) = (2, 100);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let mut publisher = t.client(&format!("q{p}"));
        for room in ["east", "west"] {
            publisher.join(room, None).await.expect("joined");
        }
        tasks.push(tokio::task::spawn_blocking(move || {
            for batch in 0..batches {
                for (n, room) in ["east", "west", "east", "west"].into_iter().enumerate() {
                    let receipt = Receipt(Arc::new(|id| Bytes::from(id.to_string())));
                    let body = format!("q{p}-{room}-{}", batch * 2 + n / 2);
                    let sent =
                        publisher
                            .0
                            .send(Target::Room(room), &body, Default::default(), receipt);
                    sent.expect("send accepted");
                }
                for result in publisher.0.flush() {
                    result.expect("published");
                }
            }
            publisher
        }));
    }
    let mut ids: HashMap<String, Vec<u64>> = HashMap::new();
    let mut got: HashMap<String, Vec<String>> = HashMap::new();
    for _ in 0..publishers * batches * 4 {
        let (id, body) = reader.message().await;
        let mut parts = body.splitn(3, '-');
        let (who, room) = (parts.next().unwrap(), parts.next().unwrap());
        ids.entry(room.to_owned()).or_default().push(id);
        got.entry(format!("{who}-{room}"))
            .or_default()
            .push(body.clone());
    }
    for task in tasks {
        task.await.expect("publisher finished");
    }
    for room in ["east", "west"] {
        let expected: Vec<u64> = (1..=(publishers * batches * 2) as u64).collect();
        assert_eq!(
            ids[room], expected,
            "{room}: ids consecutive in delivery order"
        );
        for p in 0..publishers {
            let mine = bodies(&format!("q{p}-{room}"), 0..batches * 2);
            assert_eq!(got[&format!("q{p}-{room}")], mine);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_up_during_sends_misses_nothing_and_repeats_nothing() {
    let t = TestHub::new("catchup", 4096);
    let total = 600;
    let mut publisher = t.client("writer");
    publisher.join("news", None).await.expect("joined");
    publisher.send(Target::Room("news"), &bodies("m", 0..100));
    publisher.acks(100).await;
    let writer = tokio::spawn(async move {
        for chunk in (100..total).step_by(10) {
            publisher.send(Target::Room("news"), &bodies("m", chunk..chunk + 10));
            tokio::task::yield_now().await;
        }
        publisher
    });
    // Joins while the writer is busy; it had read up to id 40 before.
    let mut reader = t.client("reader");
    reader.join("news", Some(40)).await.expect("joined");
    let mut ids = Vec::new();
    while ids.last() != Some(&(total as u64)) {
        match reader.next().await {
            Next::Held(Held::Replay { messages, .. }) => {
                ids.extend(messages.expect("stored messages").iter().map(|m| m.id));
            }
            Next::Delivery(queued) => ids.extend(
                queued
                    .iter()
                    .filter_map(|d| chat_message(d.message).map(|(id, _)| id)),
            ),
            _ => {}
        }
    }
    writer.await.expect("writer finished");
    let expected: Vec<u64> = (41..=total as u64).collect();
    assert_eq!(ids, expected, "catch-up then live: every id once, in order");
}

#[tokio::test]
async fn several_sessions_of_one_user_are_one_member() {
    let t = TestHub::new("presence", 4096);
    let mut bob = t.client("bob");
    bob.join("hall", None).await.expect("joined");
    let mut tab1 = t.client("alice");
    let mut tab2 = t.client("alice");
    let JoinAnswer::Members { members, .. } = tab1.join("hall", None).await.expect("joined") else {
        panic!("one node answers at once");
    };
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!(bob.presence().await, ("alice".into(), "join".into()));
    tab2.join("hall", None).await.expect("joined");
    tab1.0.leave("hall").expect("left");
    // Neither the second tab's join nor the first tab's leave is a change: the next presence
    // event bob sees is alice leaving with her last tab.
    drop(tab2);
    assert_eq!(bob.presence().await, ("alice".into(), "leave".into()));
    assert_eq!(t.hub.members_here("hall"), vec!["bob".to_owned()]);
}

#[tokio::test]
async fn removing_a_member_ends_their_subscription_to_a_private_room() {
    let t = TestHub::new("revoke", 4096);
    let alice = Identity::new("alice", false);
    assert_eq!(t.hub.claim_room("secret", true, &alice), Ok(true));
    t.hub
        .acl()
        .set_member("secret", "bob", crate::store::Role::Member);
    let mut alice = t.client("alice");
    let mut bob = t.client("bob");
    let mut carol = t.client("carol");
    alice.join("secret", None).await.expect("owner joins");
    bob.join("secret", None).await.expect("member joins");
    let refused = carol.join("secret", None).await.expect_err("not a member");
    assert_eq!(refused.code, "forbidden");

    t.hub.acl().remove_member("secret", "bob");
    t.hub.revoke_room("bob", "secret");
    match bob.next().await {
        Next::Notice(Notice::Revoked { room, .. }) => assert_eq!(room, "secret"),
        other => panic!("expected the revocation, got {other:?}"),
    }
    alice.send(Target::Room("secret"), &["after".to_owned()]);
    let bob_name = super::direct::Recipient {
        name: "bob".into(),
        account: false,
    };
    alice.send(Target::User(bob_name), &["marker".to_owned()]);
    // The room message never reaches bob: the DM sent after it is his next message.
    assert_eq!(bob.message().await.1, "marker");
    let refused = bob.0.send(
        Target::Room("secret"),
        "still here?",
        Default::default(),
        Receipt(Arc::new(|_| Bytes::new())),
    );
    assert_eq!(refused.expect_err("no longer allowed").code, "forbidden");
}

#[tokio::test]
async fn a_slow_consumer_is_evicted_and_nobody_else_notices() {
    let capacity = 8;
    let t = TestHub::new("slow", capacity);
    let mut sleeper = t.client("sleeper");
    let mut reader = t.client("reader");
    let mut writer = t.client("writer");
    for client in [&mut sleeper, &mut reader, &mut writer] {
        client.join("busy", None).await.expect("joined");
    }
    // Presence announcements took some of the sleeper's room; these overflow the rest.
    let sent = capacity * 3;
    for n in 0..sent {
        writer.send(Target::Room("busy"), &[format!("m{n}")]);
        writer.message().await; // its own copy
        let (_, body) = reader.message().await;
        assert_eq!(
            body,
            format!("m{n}"),
            "the reader keeps up and gets everything"
        );
    }
    match sleeper.next().await {
        Next::Evicted(code, reason) => {
            assert_eq!(code, CloseCode::POLICY_VIOLATION);
            assert!(reason.starts_with("slow consumer"), "{reason}");
        }
        other => panic!("expected eviction, got {other:?}"),
    }
    assert_eq!(t.hub.stats.slow_consumers.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_read_mark_reaches_every_session_of_the_account_and_never_goes_back() {
    let t = TestHub::new("reads", 4096);
    let mut bob = t.client("bob");
    bob.join("hall", None).await.expect("joined");
    bob.send(Target::Room("hall"), &bodies("m", 0..3));
    bob.acks(3).await;
    let mut tab1 = t.client("alice");
    let mut tab2 = t.client("alice");
    let alice = tab1.0.identity().clone();
    let past = t.hub.mark_read(&alice, "hall", 4).await;
    assert_eq!(past.expect_err("past the last id").code, "invalid_id");
    assert_eq!(t.hub.mark_read(&alice, "hall", 2).await.expect("marked"), 2);
    assert_eq!(t.hub.mark_read(&alice, "hall", 1).await.expect("kept"), 2);
    for tab in [&mut tab1, &mut tab2] {
        assert_eq!(tab.read_mark().await, ("hall".to_owned(), 2));
        assert_eq!(
            tab.read_mark().await,
            ("hall".to_owned(), 2),
            "the stored mark"
        );
    }
    let states = t.hub.read_states(&alice, vec!["hall".into()]).await;
    let want = crate::store::ReadState {
        last_read: 2,
        unread: 1,
        mentions: 0,
    };
    assert_eq!(states.expect("an account's")["hall"], want);
    let guest = Identity::new("gus", true);
    let refused = t.hub.mark_read(&guest, "hall", 1).await;
    assert_eq!(refused.expect_err("a guest").code, "guest");
    assert!(t
        .hub
        .read_states(&guest, vec!["hall".into()])
        .await
        .is_none());
}
