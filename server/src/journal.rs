//! Group commit: messages to store queue up here and a dedicated thread writes them in batches,
//! one transaction each, then runs each message's completion (the ack or RECEIPT). It also owns
//! what happens when storage fails: the failing state, the retries and how often it is logged.
//!
//! Fan-out never waits for this: subscribers get a message at once; only the sender's
//! acknowledgement waits until the message is durable. So a batch that fails is not dropped
//! (its messages were delivered; dropping them would leave holes in their rooms' ids): it is
//! kept and written again every [`JournalSettings::retry_every`] until a write succeeds, and
//! its senders are acknowledged then. Meanwhile [`Journal::is_failing`] says so, and the hub
//! refuses new room messages, so what is kept stays bounded.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::metrics;
use crate::store::{Room, Store, StoredMessage};

/// Most messages per transaction.
const MAX_BATCH: usize = 1024;

/// Least time between two commits. Every commit pays an fsync and WAL bookkeeping whatever its
/// size (≈ 0.25 ms of CPU measured on SQLite here), so under a steady trickle (thousands of
/// rooms, a message each now and then) committing each message as it comes costs more than the
/// fan-out itself; waiting this long lets them gather. Only the sender's acknowledgement waits:
/// delivery never does.
const COMMIT_INTERVAL: Duration = Duration::from_millis(2);

/// The least time between commits while the last one carried several messages: many senders
/// are writing, so a longer wait gathers more of them per fsync (many small rooms: ≈ 9 % off
/// the server's CPU per STOMP delivery). A lone sender waiting for each receipt before its next
/// message always makes one-message batches and keeps `COMMIT_INTERVAL`.
const BUSY_COMMIT_INTERVAL: Duration = Duration::from_millis(5);

/// How long to let jobs gather after committing `batch`: longer only after several room
/// messages. Barriers and new rooms do not count (a REST edit's barrier rides with its own
/// message; a lone client must not wait longer for it). Messages numbered by the store (cluster
/// mode) are delivered only once committed, so there the wait stays short: it is delivery
/// latency, not only the sender's acknowledgement.
fn interval_after(batch: &[Job]) -> Duration {
    let messages = batch
        .iter()
        .filter(|job| matches!(job, Job::Store(..)))
        .count();
    let numbered = batch
        .iter()
        .any(|job| matches!(job, Job::StoreNumbered(..)));
    if messages > 1 && !numbered {
        BUSY_COMMIT_INTERVAL
    } else {
        COMMIT_INTERVAL
    }
}

/// Runs once the message is stored (`true`) or storing failed (`false`).
pub type Completion = Box<dyn FnOnce(bool) + Send>;

/// Runs once a message numbered by the store is durable (`Some(id)`), or storing failed.
pub type Numbered = Box<dyn FnOnce(Option<u64>) + Send>;

enum Job {
    Store(StoredMessage, Option<Completion>),
    /// Cluster mode: the store gives the id.
    StoreNumbered(StoredMessage, Numbered),
    /// Creates a room if it does not exist.
    CreateRoom(Room),
    /// Completes when everything queued before it has been written.
    Barrier(Completion),
}

/// How the writer copes with failing storage.
#[derive(Clone, Debug)]
pub struct JournalSettings {
    /// Jobs waiting for the writer before senders are told it is overloaded (default 65,536).
    pub capacity: usize,
    /// While storage fails, how often the kept batch is written again (default 1 s).
    pub retry_every: Duration,
    /// While storage fails, how often that is logged (default 1 min): once when it starts,
    /// then one line per interval with the number of failed attempts, then once on recovery.
    pub report_every: Duration,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            retry_every: Duration::from_secs(1),
            report_every: Duration::from_secs(60),
        }
    }
}

/// The queue in front of the writer thread.
pub struct Journal {
    tx: mpsc::SyncSender<Job>,
    /// Set by the writer thread while it keeps delivered messages it could not write, cleared
    /// once they are written; read by the hub before each operation. An atomic: one writer, readers that only need the latest value.
    failing: Arc<AtomicBool>,
    /// Jobs in the queue, for the metrics.
    queued: Arc<AtomicUsize>,
}

/// The writer's queue is full: storage cannot keep up.
#[derive(Debug)]
pub struct Overloaded;

impl Journal {
    /// Starts the writer thread.
    pub fn start(store: Arc<dyn Store>, settings: JournalSettings) -> Self {
        let (tx, rx) = mpsc::sync_channel(settings.capacity);
        let failing = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let mut writer = Writer {
            queued: queued.clone(),
            store,
            health: Health {
                failing: failing.clone(),
                trouble: None,
                report_every: settings.report_every,
            },
            kept: Vec::new(),
            retry_every: settings.retry_every,
        };
        let spawned = thread::Builder::new()
            .name("parley-journal".into())
            .spawn(move || writer.run(&rx));
        if let Err(e) = spawned {
            error!(%e, "cannot start the journal thread");
        }
        Self {
            tx,
            failing,
            queued,
        }
    }

    /// Jobs waiting for the writer thread.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues `job`; never blocks. Gives it back when the queue is full or the writer gone.
    fn send(&self, job: Job) -> Option<Job> {
        // Counted before it can be taken, so the writer's decrement never comes first.
        self.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => None,
            Err(mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                Some(job)
            }
        }
    }

    /// Storage is failing with delivered messages waiting to be written: room messages must be
    /// refused.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// The flag behind [`Journal::is_failing`], for readiness to read once the hub owns this.
    pub fn failing_flag(&self) -> Arc<AtomicBool> {
        self.failing.clone()
    }

    /// Queues a message; never blocks.
    pub fn push(&self, message: StoredMessage, done: Option<Completion>) -> Result<(), Overloaded> {
        self.send(Job::Store(message, done))
            .map_or(Ok(()), |_| Err(Overloaded))
    }

    /// Queues a message for the store to number and keep (cluster mode); never blocks.
    pub fn push_numbered(&self, message: StoredMessage, done: Numbered) -> Result<(), Overloaded> {
        self.send(Job::StoreNumbered(message, done))
            .map_or(Ok(()), |_| Err(Overloaded))
    }

    /// Creates a room (if it does not exist yet) in order with the messages around it.
    pub fn create_room(&self, room: Room) {
        if self.send(Job::CreateRoom(room)).is_some() {
            error!("storage queue full: a new room was not recorded");
        }
    }

    /// Runs `done` once everything queued so far is durable (`false` if that cannot be known).
    pub fn barrier(&self, done: Completion) {
        if let Some(Job::Barrier(done)) = self.send(Job::Barrier(done)) {
            done(false);
        }
    }
}

/// The writer thread's state.
struct Writer {
    store: Arc<dyn Store>,
    queued: Arc<AtomicUsize>,
    health: Health,
    /// What the last failed write held, in order: written again before anything newer.
    kept: Vec<Job>,
    retry_every: Duration,
}

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Job>) {
        let mut last_commit = Instant::now() - BUSY_COMMIT_INTERVAL;
        let mut interval = COMMIT_INTERVAL;
        loop {
            let mut jobs = std::mem::take(&mut self.kept);
            if jobs.is_empty() {
                match rx.recv() {
                    Ok(first) => jobs.push(first),
                    Err(_) => return,
                }
                self.queued.fetch_sub(1, Ordering::Relaxed);
                // Sleeping (rather than waiting on the channel) means senders wake this thread
                // at most once per commit, not once per message.
                let since = last_commit.elapsed();
                if since < interval {
                    thread::sleep(interval - since);
                }
            } else {
                // Storage is failing: try again after a while, with whatever came meanwhile.
                thread::sleep(self.retry_every);
                jobs = self.unless_written(jobs);
            }
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
                self.queued.fetch_sub(1, Ordering::Relaxed);
            }
            interval = interval_after(&jobs);
            self.write(jobs);
            last_commit = Instant::now();
        }
    }

    /// The kept jobs, less the messages the failed write stored all the same: a COMMIT whose
    /// answer was lost (PostgreSQL's connection dropping) took effect, and writing its messages
    /// again would fail on their ids for ever. The batch was one transaction, so its first
    /// message tells for all of them.
    fn unless_written(&self, jobs: Vec<Job>) -> Vec<Job> {
        let first = jobs.iter().find_map(|job| match job {
            Job::Store(message, _) => Some(message),
            _ => None,
        });
        let Some(first) = first else {
            return jobs;
        };
        let found = self.store.after(&first.room, first.id.saturating_sub(1), 1);
        if !matches!(found, Ok(found) if found.first().is_some_and(|m| m.id == first.id)) {
            return jobs;
        }
        let mut rest = Vec::new();
        for job in jobs {
            match job {
                Job::Store(_, done) => done.into_iter().for_each(|done| done(true)),
                other => rest.push(other),
            }
        }
        rest
    }

    /// Writes one batch and completes what it can: on failure its rooms and messages are kept
    /// for the next attempt, their completions with them.
    fn write(&mut self, jobs: Vec<Job>) {
        let store = &*self.store;
        let mut batch = Vec::with_capacity(jobs.len());
        let mut completions = Vec::with_capacity(jobs.len());
        let mut barriers = Vec::new();
        let mut numbered = Vec::new();
        let mut numbered_done = Vec::new();
        let mut failure = None;
        for job in jobs {
            match job {
                Job::Store(message, done) => {
                    batch.push(message);
                    completions.push(done);
                }
                Job::StoreNumbered(message, done) => {
                    numbered.push(message);
                    numbered_done.push(done);
                }
                Job::Barrier(done) => barriers.push(done),
                // Rooms go first: the messages of this batch may belong to it.
                Job::CreateRoom(room) => {
                    if let Err(e) = store.create_room(&room) {
                        failure = Some(format!("creating room {}: {e:#}", room.name));
                        self.kept.push(Job::CreateRoom(room));
                    }
                }
            }
        }
        let handles = metrics::handles();
        handles
            .storage_batch
            .record((batch.len() + numbered.len()) as f64);
        let started = metrics::start();
        let stored = batch.is_empty() || {
            let result = store.append(&batch);
            if let Err(e) = &result {
                failure = Some(format!("{e:#}"));
            }
            result.is_ok()
        };
        let numbered_ok = numbered.is_empty() || {
            let result = store.append_numbered(&mut numbered);
            if let Err(e) = &result {
                failure = Some(format!("{e:#}"));
            }
            result.is_ok()
        };
        metrics::observe_since(&handles.storage_commit, started);
        match failure {
            None => self.health.succeeded(),
            Some(e) => {
                handles.storage_failures.increment(1);
                self.health.failed(&e);
            }
        }
        let completions = if stored {
            completions
        } else {
            let kept = batch.into_iter().zip(completions);
            self.kept
                .extend(kept.map(|(message, done)| Job::Store(message, done)));
            Vec::new()
        };
        // Room messages are refused while delivered ones wait here. (Numbered messages are
        // delivered only once stored: a failure there fails each sender, refuses nothing.) Said
        // before anything completes, so whoever hears "stored" sees storage working.
        self.health.set_failing(!self.kept.is_empty());
        // In batch order, so each room's messages complete in id order. Numbered messages were
        // not delivered yet: they fail now and are not kept.
        for (message, done) in numbered.iter().zip(numbered_done) {
            done(numbered_ok.then_some(message.id));
        }
        for done in completions.into_iter().flatten() {
            done(true);
        }
        // Everything before a barrier is durable only if nothing is kept.
        let durable = stored && numbered_ok && self.kept.is_empty();
        for done in barriers {
            done(durable);
        }
    }
}

/// Whether storage works, and the log lines that say so: one when it starts failing, one per
/// interval while it goes on, one when it recovers — never one per failed batch.
struct Health {
    failing: Arc<AtomicBool>,
    trouble: Option<Trouble>,
    report_every: Duration,
}

/// An ongoing storage failure.
struct Trouble {
    since: Instant,
    reported: Instant,
    /// Failed attempts since the last log line.
    unreported: u64,
}

impl Health {
    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    fn failed(&mut self, why: &str) {
        let Some(trouble) = &mut self.trouble else {
            error!(
                error = why,
                "storage failing: writes are retried; room messages are refused until one \
                 succeeds (messages already delivered are kept and written then)"
            );
            let now = Instant::now();
            self.trouble = Some(Trouble {
                since: now,
                reported: now,
                unreported: 0,
            });
            return;
        };
        trouble.unreported += 1;
        if trouble.reported.elapsed() >= self.report_every {
            error!(
                error = why,
                failed_attempts = trouble.unreported,
                failing_for = ?trouble.since.elapsed(),
                "storage still failing"
            );
            trouble.reported = Instant::now();
            trouble.unreported = 0;
        }
    }

    fn succeeded(&mut self) {
        if let Some(trouble) = self.trouble.take() {
            warn!(
                failed_for = ?trouble.since.elapsed(),
                "storage recovered: room messages are accepted again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::store::{self, RefreshRecord, Role, Rotation, SqliteStore};

    /// How the next appends go.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Mode {
        Works,
        /// Nothing is written; the call fails.
        Fails,
        /// The batch is written, then the call fails (a COMMIT whose answer was lost).
        WritesThenFails,
    }

    /// SQLite whose appends can be made to fail, to drive the writer's failure path in memory.
    struct Flaky {
        inner: SqliteStore,
        mode: Mutex<Mode>,
        appends: Mutex<usize>,
    }

    impl Flaky {
        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }
    }

    impl Store for Flaky {
        fn append(&self, batch: &[StoredMessage]) -> anyhow::Result<()> {
            *self.appends.lock().unwrap() += 1;
            let mode = *self.mode.lock().unwrap();
            match mode {
                Mode::Works => self.inner.append(batch),
                Mode::Fails => anyhow::bail!("disk full"),
                Mode::WritesThenFails => {
                    self.inner.append(batch)?;
                    self.set(Mode::Works);
                    anyhow::bail!("connection lost during COMMIT")
                }
            }
        }
        fn before(&self, r: &str, b: Option<u64>, l: usize) -> anyhow::Result<Vec<StoredMessage>> {
            self.inner.before(r, b, l)
        }
        fn after(&self, r: &str, a: u64, l: usize) -> anyhow::Result<Vec<StoredMessage>> {
            self.inner.after(r, a, l)
        }
        fn last_ids(&self) -> anyhow::Result<HashMap<String, u64>> {
            self.inner.last_ids()
        }
        fn create_room(&self, room: &Room) -> anyhow::Result<bool> {
            self.inner.create_room(room)
        }
        fn rooms(&self) -> anyhow::Result<Vec<Room>> {
            self.inner.rooms()
        }
        fn message(&self, room: &str, id: u64) -> anyhow::Result<Option<StoredMessage>> {
            self.inner.message(room, id)
        }
        fn recent_client_ids(
            &self,
            since_ms: u64,
            limit: usize,
        ) -> anyhow::Result<Vec<crate::store::SentId>> {
            self.inner.recent_client_ids(since_ms, limit)
        }
        fn sent_id(&self, r: &str, s: &str, c: &str) -> anyhow::Result<Option<u64>> {
            self.inner.sent_id(r, s, c)
        }
        fn conversations(
            &self,
            user: &str,
            limit: usize,
        ) -> anyhow::Result<Vec<crate::store::Conversation>> {
            self.inner.conversations(user, limit)
        }
        fn memberships(&self) -> anyhow::Result<Vec<(String, String, Role)>> {
            self.inner.memberships()
        }
        fn set_member(&self, room: &str, user: &str, role: Role) -> anyhow::Result<()> {
            self.inner.set_member(room, user, role)
        }
        fn remove_member(&self, room: &str, user: &str) -> anyhow::Result<bool> {
            self.inner.remove_member(room, user)
        }
        fn create_user(&self, name: &str, hash: &str) -> anyhow::Result<bool> {
            self.inner.create_user(name, hash)
        }
        fn account_like(&self, name: &str) -> anyhow::Result<Option<String>> {
            self.inner.account_like(name)
        }
        fn users_page(
            &self,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
        ) -> anyhow::Result<Vec<String>> {
            self.inner.users_page(prefix, after, limit)
        }
        fn password_hash(&self, name: &str) -> anyhow::Result<Option<String>> {
            self.inner.password_hash(name)
        }
        fn set_password(&self, name: &str, hash: &str) -> anyhow::Result<bool> {
            self.inner.set_password(name, hash)
        }
        fn insert_refresh(&self, token: &RefreshRecord) -> anyhow::Result<()> {
            self.inner.insert_refresh(token)
        }
        fn rotate_refresh(
            &self,
            old: &[u8; 32],
            new: &RefreshRecord,
            now_ms: u64,
        ) -> anyhow::Result<Rotation> {
            self.inner.rotate_refresh(old, new, now_ms)
        }
        fn refresh_user(&self, hash: &[u8; 32], now_ms: u64) -> anyhow::Result<Option<String>> {
            self.inner.refresh_user(hash, now_ms)
        }
        fn revoke_family(&self, hash: &[u8; 32]) -> anyhow::Result<bool> {
            self.inner.revoke_family(hash)
        }
        fn purge_refresh(&self, now_ms: u64) -> anyhow::Result<usize> {
            self.inner.purge_refresh(now_ms)
        }

        fn set_read(&self, user: &str, room: &str, id: u64) -> anyhow::Result<u64> {
            self.inner.set_read(user, room, id)
        }

        fn unread(
            &self,
            user: &str,
            rooms: &[String],
        ) -> anyhow::Result<HashMap<String, crate::store::ReadState>> {
            self.inner.unread(user, rooms)
        }

        fn read_rooms(&self, user: &str) -> anyhow::Result<Vec<String>> {
            self.inner.read_rooms(user)
        }
        fn identity_user(&self, p: &str, s: &str) -> anyhow::Result<Option<String>> {
            self.inner.identity_user(p, s)
        }
        fn create_identity_user(&self, n: &str, p: &str, s: &str) -> anyhow::Result<bool> {
            self.inner.create_identity_user(n, p, s)
        }
        fn link_identity(&self, u: &str, p: &str, s: &str) -> anyhow::Result<store::Link> {
            self.inner.link_identity(u, p, s)
        }
        fn identities(&self, u: &str) -> anyhow::Result<Vec<store::LinkedIdentity>> {
            self.inner.identities(u)
        }
        fn unlink_identity(&self, u: &str, p: &str) -> anyhow::Result<store::Unlink> {
            self.inner.unlink_identity(u, p)
        }
        fn consume_login_state(&self, i: &str, e: u64, n: u64) -> anyhow::Result<bool> {
            self.inner.consume_login_state(i, e, n)
        }
    }

    fn flaky(name: &str) -> Arc<Flaky> {
        let dir =
            std::env::temp_dir().join(format!("parley-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Arc::new(Flaky {
            inner: SqliteStore::open(&dir).expect("temporary store"),
            mode: Mutex::new(Mode::Works),
            appends: Mutex::new(0),
        })
    }

    fn message(id: u64) -> StoredMessage {
        StoredMessage {
            room: "r".into(),
            id,
            from: "alice".into(),
            ts: 1,
            body: format!("m{id}"),
            ..StoredMessage::default()
        }
    }

    #[test]
    fn only_a_batch_of_several_room_messages_waits_longer_for_the_next_commit() {
        let store = |id| Job::Store(message(id), None);
        let numbered = |id| Job::StoreNumbered(message(id), Box::new(|_| {}));
        // A lone sender waiting for each receipt: its acknowledgement is not held back.
        assert_eq!(interval_after(&[store(1)]), COMMIT_INTERVAL);
        assert_eq!(interval_after(&[store(1), store(2)]), BUSY_COMMIT_INTERVAL);
        // A REST edit's barrier, or a room's creation, rides with one message: not busy.
        let barrier = || Job::Barrier(Box::new(|_| {}));
        assert_eq!(interval_after(&[store(1), barrier()]), COMMIT_INTERVAL);
        let room = Job::CreateRoom(Room {
            name: "r".into(),
            private: false,
            owner: None,
        });
        assert_eq!(
            interval_after(&[room, barrier(), barrier()]),
            COMMIT_INTERVAL
        );
        // Cluster mode delivers numbered messages only once stored: no longer wait there.
        assert_eq!(interval_after(&[store(1), numbered(2)]), COMMIT_INTERVAL);
        assert!(BUSY_COMMIT_INTERVAL > COMMIT_INTERVAL);
    }

    /// Pushes message `id`; the receiver gets its completion's verdict.
    fn push(journal: &Journal, id: u64) -> mpsc::Receiver<bool> {
        let (tx, rx) = mpsc::channel();
        let done: Completion = Box::new(move |ok| {
            let _ = tx.send(ok);
        });
        journal
            .push(message(id), Some(done))
            .expect("room in the queue");
        rx
    }

    fn start(store: &Arc<Flaky>) -> Journal {
        let settings = JournalSettings {
            retry_every: Duration::from_millis(20),
            ..JournalSettings::default()
        };
        Journal::start(store.clone(), settings)
    }

    const PATIENCE: Duration = Duration::from_secs(10);

    fn ids(store: &Flaky) -> Vec<u64> {
        let stored = store.after("r", 0, 100).unwrap();
        stored.iter().map(|m| m.id).collect()
    }

    #[test]
    fn a_failed_batch_is_kept_retried_and_acknowledged_once_written() {
        let store = flaky("kept");
        let journal = start(&store);
        assert!(push(&journal, 1).recv_timeout(PATIENCE).unwrap());
        store.set(Mode::Fails);
        let second = push(&journal, 2);
        let deadline = Instant::now() + PATIENCE;
        while !journal.is_failing() {
            assert!(Instant::now() < deadline, "never noticed the failure");
            thread::sleep(Duration::from_millis(5));
        }
        // Retried meanwhile, never acknowledged, never dropped.
        let before = *store.appends.lock().unwrap();
        assert!(second.recv_timeout(Duration::from_millis(200)).is_err());
        assert!(*store.appends.lock().unwrap() > before, "no retry");
        let barrier = {
            let (tx, rx) = mpsc::channel();
            journal.barrier(Box::new(move |ok| {
                let _ = tx.send(ok);
            }));
            rx
        };
        assert!(
            !barrier.recv_timeout(PATIENCE).unwrap(),
            "not durable while kept"
        );
        store.set(Mode::Works);
        assert!(second.recv_timeout(PATIENCE).unwrap());
        assert!(push(&journal, 3).recv_timeout(PATIENCE).unwrap());
        assert!(!journal.is_failing());
        assert_eq!(ids(&store), [1, 2, 3]);
    }

    #[test]
    fn a_write_that_took_effect_despite_its_error_is_not_written_again() {
        let store = flaky("lost-commit");
        let journal = start(&store);
        store.set(Mode::WritesThenFails);
        let first = push(&journal, 1);
        // Writing it again would fail on its id for ever; it is found stored instead.
        assert!(first.recv_timeout(PATIENCE).unwrap());
        assert!(push(&journal, 2).recv_timeout(PATIENCE).unwrap());
        assert!(!journal.is_failing());
        assert_eq!(ids(&store), [1, 2]);
    }
}
