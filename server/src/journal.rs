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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::store::{Room, Store, StoredMessage};

/// Most messages per transaction.
const MAX_BATCH: usize = 1024;

/// Least time between two commits. Every commit pays an fsync and WAL bookkeeping whatever its
/// size, so under a steady trickle (thousands of rooms, a message each now and then) committing
/// each message as it comes costs more than the fan-out itself; waiting this long lets them
/// gather. Only the sender's acknowledgement waits: delivery never does.
const COMMIT_INTERVAL: Duration = Duration::from_millis(2);

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
}

/// The writer's queue is full: storage cannot keep up.
#[derive(Debug)]
pub struct Overloaded;

impl Journal {
    /// Starts the writer thread.
    pub fn start(store: Arc<dyn Store>, settings: JournalSettings) -> Self {
        let (tx, rx) = mpsc::sync_channel(settings.capacity);
        let failing = Arc::new(AtomicBool::new(false));
        let mut writer = Writer {
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
        Self { tx, failing }
    }

    /// Storage is failing with delivered messages waiting to be written: room messages must be
    /// refused.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Queues a message; never blocks.
    pub fn push(&self, message: StoredMessage, done: Option<Completion>) -> Result<(), Overloaded> {
        self.tx
            .try_send(Job::Store(message, done))
            .map_err(|_| Overloaded)
    }

    /// Queues a message for the store to number and keep (cluster mode); never blocks.
    pub fn push_numbered(&self, message: StoredMessage, done: Numbered) -> Result<(), Overloaded> {
        self.tx
            .try_send(Job::StoreNumbered(message, done))
            .map_err(|_| Overloaded)
    }

    /// Creates a room (if it does not exist yet) in order with the messages around it.
    pub fn create_room(&self, room: Room) {
        if self.tx.try_send(Job::CreateRoom(room)).is_err() {
            error!("storage queue full: a new room was not recorded");
        }
    }

    /// Runs `done` once everything queued so far is durable (`false` if that cannot be known).
    pub fn barrier(&self, done: Completion) {
        match self.tx.try_send(Job::Barrier(done)) {
            Ok(()) => {}
            Err(
                mpsc::TrySendError::Full(Job::Barrier(done))
                | mpsc::TrySendError::Disconnected(Job::Barrier(done)),
            ) => done(false),
            Err(_) => {}
        }
    }
}

/// The writer thread's state.
struct Writer {
    store: Arc<dyn Store>,
    health: Health,
    /// What the last failed write held, in order: written again before anything newer.
    kept: Vec<Job>,
    retry_every: Duration,
}

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Job>) {
        let mut last_commit = Instant::now() - COMMIT_INTERVAL;
        loop {
            let mut jobs = std::mem::take(&mut self.kept);
            if jobs.is_empty() {
                match rx.recv() {
                    Ok(first) => jobs.push(first),
                    Err(_) => return,
                }
                // Sleeping (rather than waiting on the channel) means senders wake this thread
                // at most once per commit, not once per message.
                let since = last_commit.elapsed();
                if since < COMMIT_INTERVAL {
                    thread::sleep(COMMIT_INTERVAL - since);
                }
            } else {
                // Storage is failing: try again after a while, with whatever came meanwhile.
                thread::sleep(self.retry_every);
            }
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.write(jobs);
            last_commit = Instant::now();
        }
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
        match failure {
            None => self.health.succeeded(),
            Some(e) => self.health.failed(&e),
        }
        // In batch order, so each room's messages complete in id order. Numbered messages were
        // not delivered yet: they fail now and are not kept.
        for (message, done) in numbered.iter().zip(numbered_done) {
            done(numbered_ok.then_some(message.id));
        }
        if stored {
            for done in completions.into_iter().flatten() {
                done(true);
            }
        } else {
            let kept = batch.into_iter().zip(completions);
            self.kept
                .extend(kept.map(|(message, done)| Job::Store(message, done)));
        }
        // Room messages are refused while delivered ones wait here. (Numbered messages are
        // delivered only once stored: a failure there fails each sender, refuses nothing.)
        self.health.set_failing(!self.kept.is_empty());
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
