//! The benchmarks' way into the hub (`server/benches/`; not an API, hidden from the docs): a
//! hub over a temporary SQLite store with rooms of raw JSON sessions, driven without sockets,
//! so a benchmark measures the publish path and the fan-out alone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use parley_stomp::broker::{BrokerLimits, Receipt};
use parley_stomp::budget::MemoryBudget;
use parley_stomp::session::Identity;

use crate::acl::Acl;
use crate::hub::{ChatSession, ChatSettings, Hub, HubSettings, Origin, Target};
use crate::journal::{Journal, JournalSettings};
use crate::metrics::{Protocol, Transport};
use crate::store::{SqliteStore, Store};

/// A hub over a temporary SQLite store (removed when dropped), and the runtime it lives on.
pub struct HubBench {
    runtime: tokio::runtime::Runtime,
    hub: Arc<Hub>,
    dir: PathBuf,
}

/// One room: a publisher and its subscribers, all joined.
pub struct RoomBench {
    publisher: ChatSession,
    subscribers: Vec<ChatSession>,
    room: String,
    body: String,
}

impl HubBench {
    /// A hub with `rooms` rooms of `subscribers` members each (besides each room's publisher).
    pub fn new(
        name: &str,
        rooms: usize,
        subscribers: usize,
    ) -> anyhow::Result<(Self, Vec<RoomBench>)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let dir = std::env::temp_dir().join(format!("parley-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir).context("temporary store")?);
        let hub = runtime.block_on(async {
            let acl = Acl::load(&*store, Default::default())?;
            let journal = Journal::start(store.clone(), JournalSettings::default());
            let settings = HubSettings {
                broker: BrokerLimits::default(),
                // Drained between iterations, never evicted.
                outbox_capacity: usize::MAX >> 1,
                outbox_bytes: usize::MAX >> 1,
                budget: MemoryBudget::unlimited(),
                edits: Default::default(),
                bans: Default::default(),
                operators: Vec::new(),
            };
            anyhow::Ok(Hub::new(
                settings,
                store,
                journal,
                acl,
                None,
                HashMap::new(),
            ))
        })?;
        let bench = Self { runtime, hub, dir };
        let rooms = (0..rooms)
            .map(|r| bench.room(&format!("bench-{r}"), subscribers))
            .collect::<anyhow::Result<_>>()?;
        Ok((bench, rooms))
    }

    /// Enters the hub's runtime on this thread, as the server's workers are.
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.runtime.enter()
    }

    fn room(&self, room: &str, subscribers: usize) -> anyhow::Result<RoomBench> {
        let settings = Arc::new(ChatSettings {
            max_body: 4096,
            rate_limit: 0,
        });
        let open = |name: String| {
            let origin = Origin::new(Protocol::Raw, Transport::WebSocket, [127, 0, 0, 1].into());
            let mut session = ChatSession::open(
                &self.hub,
                Identity::new(name.as_str(), false),
                settings.clone(),
                origin,
            );
            self.runtime
                .block_on(session.join(room, None))
                .map_err(|why| anyhow::anyhow!("join {room}: {why:?}"))?;
            anyhow::Ok(session)
        };
        let mut bench = RoomBench {
            publisher: open(format!("{room}-publisher"))?,
            subscribers: (0..subscribers)
                .map(|s| open(format!("{room}-{s}")))
                .collect::<anyhow::Result<_>>()?,
            room: room.to_owned(),
            body: "x".repeat(140),
        };
        // The room's first message numbers it alone; the rest take its turn.
        bench.publish(1);
        Ok(bench)
    }
}

impl RoomBench {
    /// Publishes `n` messages to the room, one send per step as a client sending one message
    /// per read.
    pub fn publish(&mut self, n: usize) {
        for _ in 0..n {
            let receipt = Receipt(Arc::new(|_| Bytes::new()));
            let sent = self.publisher.send(
                Target::Room(&self.room),
                &self.body,
                Default::default(),
                receipt,
            );
            if sent.is_ok() {
                self.publisher.flush();
            }
        }
    }

    /// Drops everything delivered to the room's sessions: how many deliveries there were.
    pub fn drain(&mut self) -> usize {
        self.publisher.session().discard_queued();
        self.subscribers
            .iter_mut()
            .map(|s| s.session().discard_queued())
            .sum()
    }
}

impl Drop for HubBench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
