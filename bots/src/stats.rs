//! Counting without a shared lock per message: each bot records into its own [`Recorder`] and
//! hands the totals and its latency histograms (messages, edits, reactions) to the
//! [`Aggregator`] about once a second.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;

/// Highest latency the histograms track, in µs (a minute); larger values are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Significant figures of the histograms: 1 % precision keeps a bot's histogram at 10 KB.
const SIGNIFICANT_FIGURES: u8 = 2;

/// Error kinds, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// TCP connect, WebSocket handshake or connection timeout.
    Connect,
    /// Credentials refused (HTTP 401/403, STOMP ERROR on CONNECT, register/login failed).
    Auth,
    /// A STOMP ERROR or raw `error` after connecting, or a frame we could not parse.
    Protocol,
    /// A sequence number skipped.
    Gap,
    /// A sequence number repeated.
    Duplicate,
    /// A sequence number went back.
    OutOfOrder,
    /// The server closed a connection before the run ended.
    ClosedByServer,
    /// A room's ids (messages and events alike) skipped, repeated or went back.
    RoomIds,
}

/// What a latency measures: a message, or a change coming back to its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Send → delivery of a room message or DM (each receiver).
    Message,
    /// Edit sent → its event back at the sender.
    Edit,
    /// Reaction sent → its event back at the sender.
    React,
}

/// How many [`Metric`]s there are.
const METRICS: usize = 3;

/// Counts of one kind of change a bot makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    /// Sent.
    pub sent: u64,
    /// Acknowledged (durable).
    pub acked: u64,
    /// Refused by the server (rate, window, no such message).
    pub refused: u64,
    /// Seen back by their sender as events (each one's latency is measured).
    pub echoed: u64,
}

impl ChangeCounts {
    fn add(&mut self, o: &ChangeCounts) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.refused += o.refused;
        self.echoed += o.echoed;
    }
}

/// Everything a bot counts; summed by the aggregator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections established (handshake, auth and join done).
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Reconnections by churning bots.
    pub reconnects: u64,
    /// Room messages and DMs sent.
    pub sent: u64,
    /// Sends acknowledged (raw `ack`, STOMP RECEIPT).
    pub acked: u64,
    /// Stamped messages received.
    pub delivered: u64,
    /// Messages whose body carried no stamp (someone else's traffic).
    pub foreign: u64,
    /// Numbers skipped, over all gaps.
    pub missing: u64,
    /// Room ids skipped, over all gaps in rooms' id sequences.
    pub missing_ids: u64,
    /// Events (edits, deletions, reactions) received in rooms.
    pub events: u64,
    /// Edits made.
    pub edits: ChangeCounts,
    /// Reactions made.
    pub reactions: ChangeCounts,
    /// DMs refused because their recipient was not online (`no_such_user`).
    pub dms_refused: u64,
    /// Stamped DMs received from other bots (a sender's own copy not counted here).
    pub dms_delivered: u64,
    /// Errors by kind, indexed by [`ErrorKind`] order.
    pub errors: [u64; 8],
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.connects += o.connects;
        self.connect_failures += o.connect_failures;
        self.reconnects += o.reconnects;
        self.sent += o.sent;
        self.acked += o.acked;
        self.delivered += o.delivered;
        self.foreign += o.foreign;
        self.missing += o.missing;
        self.missing_ids += o.missing_ids;
        self.events += o.events;
        self.edits.add(&o.edits);
        self.reactions.add(&o.reactions);
        self.dms_refused += o.dms_refused;
        self.dms_delivered += o.dms_delivered;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
    }
}

/// One bot's counts and latencies since its last flush.
#[derive(Debug)]
pub struct Delta {
    counters: Counters,
    latencies: [Option<Histogram<u32>>; METRICS],
}

/// Histograms handed back by the aggregator for bots to reuse, so a busy bot does not allocate
/// a fresh one every second. Touched once per bot per second, never per message.
#[derive(Debug, Default)]
pub struct HistogramPool(Mutex<Vec<Histogram<u32>>>);

impl HistogramPool {
    fn take(&self) -> Histogram<u32> {
        let reused = self.0.lock().ok().and_then(|mut v| v.pop());
        reused.unwrap_or_else(new_histogram)
    }

    fn give(&self, mut h: Histogram<u32>) {
        h.reset();
        if let Ok(mut v) = self.0.lock() {
            v.push(h);
        }
    }
}

fn new_histogram<T: hdrhistogram::Counter>() -> Histogram<T> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_FIGURES).expect("valid bounds")
}

/// A bot's private tally.
#[derive(Debug)]
pub struct Recorder {
    counters: Counters,
    latencies: [Option<Histogram<u32>>; METRICS],
    tx: mpsc::UnboundedSender<Delta>,
    pool: Arc<HistogramPool>,
}

impl Recorder {
    /// A recorder reporting to the aggregator behind `tx`.
    pub fn new(tx: mpsc::UnboundedSender<Delta>, pool: Arc<HistogramPool>) -> Self {
        Self {
            counters: Counters::default(),
            latencies: [None, None, None],
            tx,
            pool,
        }
    }

    /// The counters, to bump directly.
    pub fn counters(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Counts an error.
    pub fn error(&mut self, kind: ErrorKind) {
        self.counters.errors[kind as usize] += 1;
    }

    /// Records one delivery latency.
    pub fn latency(&mut self, us: u64) {
        self.latency_of(Metric::Message, us);
    }

    /// Records one latency of `metric`.
    pub fn latency_of(&mut self, metric: Metric, us: u64) {
        let pool = &self.pool;
        self.latencies[metric as usize]
            .get_or_insert_with(|| pool.take())
            .saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Whether anything was recorded since the last flush.
    pub fn has_data(&self) -> bool {
        self.counters != Counters::default() || self.latencies.iter().any(Option::is_some)
    }

    /// Hands what was recorded since the last flush to the aggregator.
    pub fn flush(&mut self) {
        if !self.has_data() {
            return;
        }
        let delta = Delta {
            counters: std::mem::take(&mut self.counters),
            latencies: self.latencies.each_mut().map(Option::take),
        };
        // The aggregator outlives every bot; if it is gone the run is over anyway.
        let _ = self.tx.send(delta);
    }
}

/// Where the run stands, for the aggregator.
#[derive(Debug)]
pub struct Clock {
    /// Traffic before this is not measured.
    pub measure_from: Instant,
}

/// Sums the bots' deltas; drives the live progress line.
pub struct Aggregator {
    rx: mpsc::UnboundedReceiver<Delta>,
    pool: Arc<HistogramPool>,
    connected: Arc<AtomicI64>,
    clock: Clock,
    bots: u64,
    /// Counters over the whole run (connections and errors).
    all: Counters,
    /// Traffic counters inside the measured window.
    measured: Counters,
    /// Measured latencies by [`Metric`].
    latencies: [Histogram<u64>; METRICS],
    last_second: Histogram<u64>,
    delivered_last_second: u64,
    peak_connected: i64,
}

/// What the aggregator hands back at the end.
pub struct Totals {
    /// Counters over the whole run.
    pub all: Counters,
    /// Traffic counters in the measured window.
    pub measured: Counters,
    /// Measured message latencies (µs).
    pub latencies: Histogram<u64>,
    /// Measured edit latencies (µs), sent → back at the sender.
    pub edit_latencies: Histogram<u64>,
    /// Measured reaction latencies (µs), sent → back at the sender.
    pub react_latencies: Histogram<u64>,
    /// Most bots connected at once.
    pub peak_connected: i64,
}

impl Aggregator {
    /// An aggregator for `bots` bots whose gauge of open connections is `connected`.
    pub fn new(
        rx: mpsc::UnboundedReceiver<Delta>,
        pool: Arc<HistogramPool>,
        connected: Arc<AtomicI64>,
        clock: Clock,
        bots: u64,
    ) -> Self {
        Self {
            rx,
            pool,
            connected,
            clock,
            bots,
            all: Counters::default(),
            measured: Counters::default(),
            latencies: [new_histogram(), new_histogram(), new_histogram()],
            last_second: new_histogram(),
            delivered_last_second: 0,
            peak_connected: 0,
        }
    }

    /// Runs until every recorder is dropped, updating `progress` every second.
    pub async fn run(mut self, progress: indicatif::ProgressBar) -> Totals {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                delta = self.rx.recv() => match delta {
                    Some(delta) => self.absorb(delta),
                    None => break,
                },
                _ = tick.tick() => {
                    let connected = self.connected.load(Ordering::Relaxed);
                    self.peak_connected = self.peak_connected.max(connected);
                    let p99 = self.last_second.value_at_quantile(0.99);
                    progress.set_message(format!(
                        "{connected}/{} connected · {} msg/s · p99 {} · {} errors",
                        self.bots,
                        self.delivered_last_second,
                        format_us(p99),
                        self.all.errors.iter().sum::<u64>(),
                    ));
                    self.last_second.reset();
                    self.delivered_last_second = 0;
                }
            }
        }
        progress.finish_and_clear();
        let [latencies, edit_latencies, react_latencies] = self.latencies;
        Totals {
            all: self.all,
            measured: self.measured,
            latencies,
            edit_latencies,
            react_latencies,
            peak_connected: self
                .peak_connected
                .max(self.connected.load(Ordering::Relaxed)),
        }
    }

    fn absorb(&mut self, delta: Delta) {
        self.all.add(&delta.counters);
        self.delivered_last_second += delta.counters.delivered;
        let measuring = Instant::now() >= self.clock.measure_from;
        if measuring {
            self.measured.add(&delta.counters);
        }
        for (metric, h) in delta.latencies.into_iter().enumerate() {
            let Some(h) = h else { continue };
            for v in h.iter_recorded() {
                let (value, count) = (v.value_iterated_to(), v.count_at_value().into());
                // The histograms share bounds, so recording cannot fail; saturate anyway.
                if metric == Metric::Message as usize {
                    let _ = self.last_second.record_n(value, count);
                }
                if measuring {
                    let _ = self.latencies[metric].record_n(value, count);
                }
            }
            self.pool.give(h);
        }
    }
}

/// `1234` µs as `1.23ms`, and so on.
pub fn format_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us}µs"),
        1_000..=999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// Latency percentiles in µs.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Deliveries measured.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Latency {
    /// Percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Errors by kind, as reported.
#[derive(Debug, Serialize)]
pub struct Errors {
    /// TCP connect, handshake, timeouts.
    pub connect: u64,
    /// Credentials refused.
    pub auth: u64,
    /// STOMP ERROR frames, raw `error` messages, unparsable frames.
    pub protocol: u64,
    /// Sequence gaps (events; `missing` counts the numbers).
    pub gaps: u64,
    /// Numbers skipped over all gaps.
    pub missing: u64,
    /// Repeated numbers.
    pub duplicates: u64,
    /// Numbers that went back.
    pub out_of_order: u64,
    /// Connections the server closed before the run ended.
    pub closed_by_server: u64,
    /// Breaks in rooms' id sequences (events included): gaps, repeats, ids going back.
    pub room_ids: u64,
    /// Room ids skipped over all gaps.
    pub missing_ids: u64,
    /// Sum of the kinds above (`missing` and `missing_ids` excluded).
    pub total: u64,
}

impl Errors {
    /// From run-wide counters.
    pub fn of(c: &Counters) -> Self {
        let e = |k: ErrorKind| c.errors[k as usize];
        Self {
            connect: e(ErrorKind::Connect),
            auth: e(ErrorKind::Auth),
            protocol: e(ErrorKind::Protocol),
            gaps: e(ErrorKind::Gap),
            missing: c.missing,
            duplicates: e(ErrorKind::Duplicate),
            out_of_order: e(ErrorKind::OutOfOrder),
            closed_by_server: e(ErrorKind::ClosedByServer),
            room_ids: e(ErrorKind::RoomIds),
            missing_ids: c.missing_ids,
            total: c.errors.iter().sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_flushes_into_the_aggregator() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, rx) = mpsc::unbounded_channel();
            let pool = Arc::new(HistogramPool::default());
            let agg = Aggregator::new(
                rx,
                Arc::clone(&pool),
                Arc::new(AtomicI64::new(0)),
                Clock {
                    measure_from: Instant::now(),
                },
                2,
            );
            let mut a = Recorder::new(tx.clone(), Arc::clone(&pool));
            let mut b = Recorder::new(tx, Arc::clone(&pool));
            for us in 1..=100 {
                a.latency(us * 10);
                a.counters().delivered += 1;
            }
            b.latency(5_000);
            b.latency_of(Metric::Edit, 7_000);
            b.counters().delivered += 1;
            b.error(ErrorKind::Gap);
            a.flush();
            b.flush();
            drop((a, b));
            let totals = agg.run(indicatif::ProgressBar::hidden()).await;
            assert_eq!(totals.measured.delivered, 101);
            assert_eq!(totals.all.errors[ErrorKind::Gap as usize], 1);
            let l = Latency::of(&totals.latencies);
            assert_eq!(l.count, 101);
            assert!((505..=520).contains(&l.p50), "{l:?}");
            assert!((4950..=5050).contains(&l.max), "{l:?}");
            // Edits are measured apart from messages.
            assert_eq!(totals.edit_latencies.len(), 1);
            assert_eq!(totals.react_latencies.len(), 0);
            // Every histogram came back for reuse.
            assert_eq!(pool.0.lock().unwrap().len(), 3);
        });
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_us(999), "999µs");
        assert_eq!(format_us(1_500), "1.50ms");
        assert_eq!(format_us(2_000_000), "2.00s");
    }
}
