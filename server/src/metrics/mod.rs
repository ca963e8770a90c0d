//! Process-wide metrics: the names and labels operators see at `/metrics`, the handles the
//! code counts through, and the Prometheus recorder that renders them.
//!
//! Nothing is recorded until [`install`] runs (`--metrics`): before that every handle is a
//! no-op and timings are not even taken. Hot paths count through handles taken once (a
//! relaxed atomic add each); what is cheaper to read than to count — open connections, queue
//! depths, the broker's sizes, the process — is read when Prometheus scrapes
//! (`http::metrics`). Labels have fixed, small value sets: no per-room or per-user series
//! except the bounded top-N of busiest rooms, rendered apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

pub use metrics::Counter;
use metrics::{counter, gauge, histogram, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub mod process;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Histogram buckets, in seconds (latencies) — also used for batch sizes, in messages.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
];

/// Installs the Prometheus recorder for the whole process; later calls return `None`.
/// Handles taken before it stay no-ops, so the server calls it before building anything.
pub fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    ENABLED.store(true, Ordering::Release);
    describe();
    Some(handle)
}

/// Whether metrics are being recorded (timings are only taken then).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A start time for a duration to be observed, when metrics are on.
pub fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Records the time since `start` (if metrics are on) in `histogram`, in seconds.
pub fn observe_since(histogram: &Histogram, start: Option<Instant>) {
    if let Some(start) = start {
        histogram.record(start.elapsed().as_secs_f64());
    }
}

/// The chat protocol a session speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// STOMP 1.0–1.2.
    Stomp,
    /// The raw JSON protocol.
    Raw,
    /// Socket.IO's chat events.
    SocketIo,
    /// An SSE room feed.
    Sse,
    /// One REST call (a post).
    Rest,
}

impl Protocol {
    const ALL: [Self; 5] = [
        Self::Stomp,
        Self::Raw,
        Self::SocketIo,
        Self::Sse,
        Self::Rest,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stomp => "stomp",
            Self::Raw => "raw",
            Self::SocketIo => "socketio",
            Self::Sse => "sse",
            Self::Rest => "rest",
        }
    }
}

/// What carries a session's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket (`/ws`, `/stomp`, Socket.IO's upgrade).
    WebSocket,
    /// STOMP over plain TCP.
    Tcp,
    /// SockJS (any of its transports).
    SockJs,
    /// Engine.IO (HTTP long-polling, maybe upgraded).
    EngineIo,
    /// One HTTP response (SSE).
    Http,
}

impl Transport {
    const ALL: [Self; 5] = [
        Self::WebSocket,
        Self::Tcp,
        Self::SockJs,
        Self::EngineIo,
        Self::Http,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Tcp => "tcp",
            Self::SockJs => "sockjs",
            Self::EngineIo => "engineio",
            Self::Http => "http",
        }
    }
}

/// Why a session ended, as labelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The client left, or its connection ended.
    Closed,
    /// Its outbox overflowed or it left too much unacknowledged.
    SlowConsumer,
    /// The server closed it for another reason (revoked token, kick, ban, room closed).
    Evicted,
}

impl Ended {
    const ALL: [Self; 3] = [Self::Closed, Self::SlowConsumer, Self::Evicted];

    fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::SlowConsumer => "slow_consumer",
            Self::Evicted => "evicted",
        }
    }
}

/// One (protocol, transport)'s session metrics; a session keeps a reference to its own.
pub struct SessionMetrics {
    /// Sessions open now.
    pub open: Gauge,
    /// Sessions opened.
    pub opened: Counter,
    /// Messages its clients published that took effect.
    pub messages_in: Counter,
    /// Deliveries taken by its writers.
    pub deliveries: Counter,
    ended: [Counter; 3],
}

impl SessionMetrics {
    fn new(protocol: Protocol, transport: Transport) -> Self {
        let (p, t) = (protocol.name(), transport.name());
        Self {
            open: gauge!("parley_sessions_open", "protocol" => p, "transport" => t),
            opened: counter!("parley_sessions_opened_total", "protocol" => p, "transport" => t),
            messages_in: counter!("parley_messages_in_total", "protocol" => p, "transport" => t),
            deliveries: counter!("parley_deliveries_total", "protocol" => p, "transport" => t),
            ended: Ended::ALL.map(|e| {
                counter!("parley_sessions_closed_total",
                    "protocol" => p, "transport" => t, "reason" => e.name())
            }),
        }
    }

    /// Counts a session's end.
    pub fn ended(&self, why: Ended) {
        self.open.decrement(1.0);
        self.ended[why as usize].increment(1);
    }
}

/// The session metrics of `protocol` over `transport`.
pub fn session(protocol: Protocol, transport: Transport) -> &'static SessionMetrics {
    const TRANSPORTS: usize = Transport::ALL.len();
    static TABLE: [[OnceLock<SessionMetrics>; TRANSPORTS]; Protocol::ALL.len()] =
        [const { [const { OnceLock::new() }; TRANSPORTS] }; Protocol::ALL.len()];
    TABLE[protocol as usize][transport as usize]
        .get_or_init(|| SessionMetrics::new(protocol, transport))
}

/// Handles of everything else counted as it happens.
pub struct Handles {
    /// Publish → last subscriber's outbox, per operation that delivered.
    pub fanout: Histogram,
    /// A message's publish → its session's writer taking it (the oldest of each batch).
    pub delivery_delay: Histogram,
    /// One storage transaction (a batch of messages and changes).
    pub storage_commit: Histogram,
    /// Messages and changes per storage transaction.
    pub storage_batch: Histogram,
    /// Storage transactions that failed.
    pub storage_failures: Counter,
    /// A message's publish on another node → its arrival here through Redis.
    pub bus_lag: Histogram,
    /// Connections to Redis re-established.
    pub bus_reconnects: Counter,
    /// Messages read from storage because Redis lost or delayed them.
    pub bus_gap_fills: Counter,
    /// Messages dropped on the way to Redis (its queue full).
    pub bus_dropped: Counter,
    /// Connections accepted, per listener (`http`, `stomp_tcp`, `stomp_tls`).
    pub accepted: [Counter; 3],
    /// Connections refused at the door: over the connection cap, over the address's cap.
    pub refused_connections: [Counter; 2],
}

/// The handles (no-ops until [`install`]).
pub fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| Handles {
        fanout: histogram!("parley_fanout_seconds"),
        delivery_delay: histogram!("parley_delivery_delay_seconds"),
        storage_commit: histogram!("parley_storage_commit_seconds"),
        storage_batch: histogram!("parley_storage_batch_size"),
        storage_failures: counter!("parley_storage_failures_total"),
        bus_lag: histogram!("parley_bus_lag_seconds"),
        bus_reconnects: counter!("parley_bus_reconnects_total"),
        bus_gap_fills: counter!("parley_bus_gap_fills_total"),
        bus_dropped: counter!("parley_bus_dropped_total"),
        accepted: ["http", "stomp_tcp", "stomp_tls"]
            .map(|l| counter!("parley_connections_accepted_total", "listener" => l)),
        refused_connections: ["max_connections", "per_ip"]
            .map(|r| counter!("parley_connections_refused_total", "reason" => r)),
    })
}

/// Counts a refused client request by its machine-readable code (`rate_limited`, `busy`, …):
/// codes are literals in the source, so the label's values are few.
pub fn refused(code: &'static str) {
    if enabled() {
        counter!("parley_refusals_total", "code" => code).increment(1);
    }
}

/// Counts an authentication outcome: `method` (`password`, `refresh`, `token`, `oauth`,
/// `register`) and `result` (`success`, `failure`, `throttled`).
pub fn auth(method: &'static str, result: &'static str) {
    if enabled() {
        counter!("parley_auth_total", "method" => method, "result" => result).increment(1);
    }
}

/// Sets a gauge read at scrape time.
pub fn set_gauge(name: &'static str, value: f64) {
    gauge!(name).set(value);
}

/// Sets a gauge with one label, read at scrape time.
pub fn set_labelled(name: &'static str, label: &'static str, value: &'static str, v: f64) {
    gauge!(name, label => value).set(v);
}

/// What each metric is, as `# HELP` says it (Prometheus tooling wants a help line for every
/// name); histograms of times are in seconds.
const DESCRIPTIONS: &[(Kind, &str, &str)] = &[
    (Kind::Gauge, "parley_sessions_open", "Chat sessions open now, by protocol and transport."),
    (Kind::Counter, "parley_sessions_opened_total", "Chat sessions opened."),
    (Kind::Counter, "parley_sessions_closed_total", "Chat sessions ended, by reason."),
    (Kind::Counter, "parley_messages_in_total", "Messages clients published that took effect."),
    (Kind::Counter, "parley_deliveries_total", "Messages taken by sessions' writers for their clients."),
    (Kind::Histogram, "parley_fanout_seconds", "Publish to the last subscriber's outbox."),
    (Kind::Histogram, "parley_delivery_delay_seconds", "A message's publish to its session's writer taking it (oldest of each batch; ms resolution)."),
    (Kind::Histogram, "parley_storage_commit_seconds", "One storage transaction."),
    (Kind::Histogram, "parley_storage_batch_size", "Messages and changes per storage transaction."),
    (Kind::Counter, "parley_storage_failures_total", "Storage transactions that failed."),
    (Kind::Histogram, "parley_bus_lag_seconds", "Another node's publish to its arrival here."),
    (Kind::Counter, "parley_bus_reconnects_total", "Connections to Redis re-established."),
    (Kind::Counter, "parley_bus_gap_fills_total", "Messages read from storage because the bus lost them."),
    (Kind::Counter, "parley_bus_dropped_total", "Messages dropped on the way to Redis (queue full)."),
    (Kind::Counter, "parley_connections_accepted_total", "TCP connections accepted, by listener."),
    (Kind::Counter, "parley_connections_refused_total", "TCP connections refused at the door, by reason."),
    (Kind::Counter, "parley_refusals_total", "Client requests refused, by code (limits, rates, rules)."),
    (Kind::Counter, "parley_auth_total", "Authentication attempts, by method and result."),
    (Kind::Gauge, "parley_connections_open", "Open TCP connections (HTTP, WebSocket, STOMP)."),
    (Kind::Gauge, "parley_connections_parked", "Idle connections waiting parked, without a task."),
    (Kind::Gauge, "parley_broker_sessions", "Sessions connected to the broker."),
    (Kind::Gauge, "parley_subscriptions", "Subscriptions to rooms, side channels and user destinations."),
    (Kind::Gauge, "parley_rooms_active", "Fan-out keys (rooms, side channels) with a subscriber here."),
    (Kind::Gauge, "parley_rooms", "Rooms that exist."),
    (Kind::Gauge, "parley_queues", "STOMP /queue/ destinations held."),
    (Kind::Gauge, "parley_queued_bytes", "Body bytes held by /queue/ destinations."),
    (Kind::Gauge, "parley_outbox_messages", "Deliveries waiting in sessions' outboxes."),
    (Kind::Gauge, "parley_outbox_bytes", "Bytes of the deliveries waiting in outboxes."),
    (Kind::Gauge, "parley_outbox_deepest_messages", "Deliveries waiting in the deepest outbox."),
    (Kind::Gauge, "parley_journal_queue", "Messages and changes waiting for the storage thread."),
    (Kind::Gauge, "parley_memory_budget_used_bytes", "Bytes charged to the memory budget."),
    (Kind::Gauge, "parley_memory_budget_bytes", "The memory budget (--memory-budget)."),
    (Kind::Gauge, "parley_draining", "1 while the node drains before shutting down."),
    (
        Kind::Gauge,
        "parley_ready",
        "1 when /readyz answers 200: storage and the bus are up and the node is not draining.",
    ),
    (
        Kind::Gauge,
        "parley_component_up",
        "1 while a component /readyz watches (storage, bus) works.",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

fn describe() {
    for &(kind, name, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram if name.ends_with("_seconds") => {
                metrics::describe_histogram!(name, metrics::Unit::Seconds, help)
            }
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}
