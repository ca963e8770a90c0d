//! Group commit: messages to store queue up here and a dedicated thread writes them in batches,
//! one transaction each, then runs each message's completion (the ack or RECEIPT).
//!
//! Fan-out never waits for this: subscribers get a message at once; only the sender's
//! acknowledgement waits until the message is durable.

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use tracing::error;

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

/// The queue in front of the writer thread.
pub struct Journal {
    tx: mpsc::SyncSender<Job>,
}

/// The writer's queue is full: storage cannot keep up.
#[derive(Debug)]
pub struct Overloaded;

impl Journal {
    /// Starts the writer thread; `capacity` bounds the jobs waiting for it.
    pub fn start(store: Arc<dyn Store>, capacity: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let spawned = thread::Builder::new()
            .name("parley-journal".into())
            .spawn(move || write_loop(&*store, &rx));
        if let Err(e) = spawned {
            error!(%e, "cannot start the journal thread");
        }
        Self { tx }
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

fn write_loop(store: &dyn Store, rx: &mpsc::Receiver<Job>) {
    let mut last_commit = Instant::now() - COMMIT_INTERVAL;
    while let Ok(first) = rx.recv() {
        // Sleeping (rather than waiting on the channel) means senders wake this thread at most
        // once per commit, not once per message.
        let since = last_commit.elapsed();
        if since < COMMIT_INTERVAL {
            thread::sleep(COMMIT_INTERVAL - since);
        }
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut batch = Vec::with_capacity(jobs.len());
        let mut completions = Vec::with_capacity(jobs.len());
        let mut numbered = Vec::new();
        let mut numbered_done = Vec::new();
        for job in jobs {
            match job {
                Job::Store(message, done) => {
                    batch.push(message);
                    completions.extend(done);
                }
                Job::StoreNumbered(message, done) => {
                    numbered.push(message);
                    numbered_done.push(done);
                }
                Job::Barrier(done) => completions.push(done),
                Job::CreateRoom(room) => {
                    // Rooms go first: the messages of this batch may belong to it.
                    if let Err(e) = store.create_room(&room) {
                        error!(error = %e, room = %room.name, "creating a room failed");
                    }
                }
            }
        }
        let ok = batch.is_empty()
            || store
                .append(&batch)
                .map_err(|e| error!(error = %e, "storing messages failed"))
                .is_ok();
        let numbered_ok = numbered.is_empty()
            || store
                .append_numbered(&mut numbered)
                .map_err(|e| error!(error = %e, "storing messages failed"))
                .is_ok();
        last_commit = Instant::now();
        // In batch order, so each room's messages complete in id order.
        for (message, done) in numbered.iter().zip(numbered_done) {
            done(numbered_ok.then_some(message.id));
        }
        for done in completions {
            done(ok && numbered_ok);
        }
    }
}
