//! Limits on what clients can make the server buffer: the memory budget, outboxes, STOMP
//! transactions and queues. Flags, or the `[limits]` table of the config file.

use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// Flags for buffer limits; in the config file they sit under `[limits]`.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitArgs {
    /// Bytes the server may hold for clients in all (queued, unsent and replayed messages,
    /// open transactions); past it new sends are refused as "server busy" [default: 1 GiB].
    #[arg(long, env = "PARLEY_MEMORY_BUDGET")]
    pub memory_budget: Option<usize>,

    /// Bytes of deliveries one session may have waiting before it is closed as a slow
    /// consumer [default: 8388608].
    #[arg(long, env = "PARLEY_OUTBOX_BYTES")]
    pub outbox_bytes: Option<usize>,

    /// Bytes of frames one STOMP session may hold in open transactions [default: 1048576].
    #[arg(long, env = "PARLEY_STOMP_TRANSACTION_BYTES")]
    pub stomp_transaction_bytes: Option<usize>,

    /// Body bytes one `/queue/` destination holds while nobody consumes [default: 4194304].
    #[arg(long, env = "PARLEY_QUEUE_MAX_BYTES")]
    pub queue_max_bytes: Option<usize>,

    /// Body bytes all queues together hold [default: 67108864].
    #[arg(long, env = "PARLEY_QUEUES_MAX_BYTES")]
    pub queues_max_bytes: Option<usize>,

    /// Queues one user's sends and subscriptions may create [default: 32].
    #[arg(long, env = "PARLEY_QUEUES_PER_USER")]
    pub queues_per_user: Option<usize>,

    /// A queued message nobody took within this long is dropped [default: 10m].
    #[arg(long, env = "PARLEY_QUEUE_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub queue_ttl: Option<Duration>,

    /// Guests may use `/queue/` destinations [default: false: accounts only].
    #[arg(long, env = "PARLEY_GUEST_QUEUES", num_args = 0..=1, default_missing_value = "true")]
    pub guest_queues: Option<bool>,

    /// How long after sending an author may edit or delete a message; 0s: forever [default: 24h].
    #[arg(long, env = "PARLEY_EDIT_WINDOW", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub edit_window: Option<Duration>,

    /// Edits, deletions and reactions per second per user, bursts of twice that [default: 5].
    #[arg(long, env = "PARLEY_EDIT_RATE")]
    pub edit_rate: Option<u32>,
}

/// Resolved buffer limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The server-wide memory budget in bytes.
    pub memory_budget: usize,
    /// Per-session outbox bytes.
    pub outbox_bytes: usize,
    /// Per-session STOMP transaction bytes.
    pub stomp_transaction_bytes: usize,
    /// Per-queue body bytes.
    pub queue_max_bytes: usize,
    /// All queues' body bytes.
    pub queues_max_bytes: usize,
    /// Queues per user.
    pub queues_per_user: usize,
    /// Queue message time-to-live.
    pub queue_ttl: Duration,
    /// Guests may use queues.
    pub guest_queues: bool,
    /// How long after sending messages may be changed.
    pub edit_window: Duration,
    /// Changes per second per user.
    pub edit_rate: u32,
}

impl LimitArgs {
    /// Flags over the file's `[limits]` over the defaults.
    pub fn resolve(self, file: LimitArgs) -> Limits {
        Limits {
            memory_budget: self.memory_budget.or(file.memory_budget).unwrap_or(1 << 30),
            outbox_bytes: self.outbox_bytes.or(file.outbox_bytes).unwrap_or(8 << 20),
            stomp_transaction_bytes: self
                .stomp_transaction_bytes
                .or(file.stomp_transaction_bytes)
                .unwrap_or(1 << 20),
            queue_max_bytes: self
                .queue_max_bytes
                .or(file.queue_max_bytes)
                .unwrap_or(4 << 20),
            queues_max_bytes: self
                .queues_max_bytes
                .or(file.queues_max_bytes)
                .unwrap_or(64 << 20),
            queues_per_user: self.queues_per_user.or(file.queues_per_user).unwrap_or(32),
            queue_ttl: self
                .queue_ttl
                .or(file.queue_ttl)
                .unwrap_or(Duration::from_secs(600)),
            guest_queues: self.guest_queues.or(file.guest_queues).unwrap_or(false),
            edit_window: self
                .edit_window
                .or(file.edit_window)
                .unwrap_or(Duration::from_secs(24 * 3600)),
            edit_rate: self.edit_rate.or(file.edit_rate).unwrap_or(5),
        }
    }
}
