//! What a run shows: the live progress line, the final report (table or `--json`) and the SLO
//! verdict behind the exit status.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::scenario::Scenario;
use crate::stats::{format_us, ChangeCounts, Errors, Latency, Totals};

/// A spinner line on stderr, ticking on its own; the aggregator updates its message.
pub fn progress_line(message: String) -> indicatif::ProgressBar {
    let progress =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(250));
    progress.set_message(message);
    progress
}

/// `x` to three decimals, so the JSON reads cleanly.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// CPU and memory measured around the run, where they could be.
pub struct Usage {
    /// This process's CPU time over the measured window, in seconds.
    pub client_cpu_s: Option<f64>,
    /// The server's CPU time over the measured window, in seconds.
    pub server_cpu_s: Option<f64>,
    /// The server's resident memory and its peak, in KiB.
    pub server_memory: Option<(u64, u64)>,
}

/// The final report (also the `--json` output).
#[derive(Debug, Serialize)]
pub struct Report {
    scenario: String,
    bots: u64,
    duration_s: f64,
    connections: Connections,
    messages: Messages,
    latency_us: Latency,
    changes: Changes,
    errors: Errors,
    client_cpu_s: Option<f64>,
    server: Option<ServerUse>,
    slo: SloResult,
}

#[derive(Debug, Serialize)]
struct Connections {
    /// Successful connections (reconnects included).
    up: u64,
    /// Failed connection attempts.
    failed: u64,
    /// Reconnections by churning bots.
    reconnects: u64,
    /// Most open at once.
    peak: i64,
}

#[derive(Debug, Serialize)]
struct Messages {
    sent: u64,
    acked: u64,
    delivered: u64,
    foreign: u64,
    /// DMs refused because their recipient was not online (`no_such_user`): not errors.
    dms_refused: u64,
    /// DMs received from other bots (included in `delivered`).
    dms_delivered: u64,
    sent_per_s: f64,
    delivered_per_s: f64,
}

/// Edits and reactions in the measured window.
#[derive(Debug, Serialize)]
struct Changes {
    edits: ChangeReport,
    reactions: ChangeReport,
    /// Events (edits, deletions, reactions) received in rooms, by every bot.
    events_received: u64,
}

/// One kind of change: counts, and latency from sending to its event back at the sender.
#[derive(Debug, Serialize)]
struct ChangeReport {
    sent: u64,
    acked: u64,
    refused: u64,
    echoed: u64,
    latency_us: Latency,
}

impl ChangeReport {
    fn new(c: &ChangeCounts, latency: Latency) -> Self {
        Self {
            sent: c.sent,
            acked: c.acked,
            refused: c.refused,
            echoed: c.echoed,
            latency_us: latency,
        }
    }

    /// A table row's value.
    fn row(&self) -> String {
        let l = &self.latency_us;
        format!(
            "{} sent, {} acknowledged, {} refused, {} back; p50 {}  p99 {}  max {}",
            self.sent,
            self.acked,
            self.refused,
            self.echoed,
            format_us(l.p50),
            format_us(l.p99),
            format_us(l.max)
        )
    }
}

#[derive(Debug, Serialize)]
struct ServerUse {
    cpu_s: Option<f64>,
    rss_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
    cpu_us_per_delivery: Option<f64>,
}

#[derive(Debug, Serialize)]
struct SloResult {
    passed: bool,
    violations: Vec<String>,
}

impl Report {
    /// Sums up the run and holds it against the scenario's SLOs.
    pub fn new(scenario: &Scenario, totals: &Totals, usage: Usage) -> Self {
        let secs = scenario.duration.as_secs_f64();
        let m = &totals.measured;
        let latency = Latency::of(&totals.latencies);
        let errors = Errors::of(&totals.all);
        let Usage {
            client_cpu_s,
            server_cpu_s,
            server_memory,
        } = usage;
        let server = (server_cpu_s.is_some() || server_memory.is_some()).then(|| ServerUse {
            cpu_s: server_cpu_s,
            rss_kib: server_memory.map(|m| m.0),
            peak_rss_kib: server_memory.map(|m| m.1),
            cpu_us_per_delivery: server_cpu_s
                .filter(|_| m.delivered > 0)
                .map(|cpu| round3(cpu * 1e6 / m.delivered as f64)),
        });
        let delivered_per_s = m.delivered as f64 / secs;
        let changes = Changes {
            edits: ChangeReport::new(&m.edits, Latency::of(&totals.edit_latencies)),
            reactions: ChangeReport::new(&m.reactions, Latency::of(&totals.react_latencies)),
            events_received: m.events,
        };
        let mut slo = SloResult::evaluate(scenario, &latency, &errors, delivered_per_s);
        slo.evaluate_changes(scenario, &changes);
        Self {
            scenario: scenario.name.clone(),
            bots: scenario.bot_count(),
            duration_s: secs,
            connections: Connections {
                up: totals.all.connects,
                failed: totals.all.connect_failures,
                reconnects: totals.all.reconnects,
                peak: totals.peak_connected,
            },
            messages: Messages {
                sent: m.sent,
                acked: m.acked,
                delivered: m.delivered,
                foreign: m.foreign,
                dms_refused: m.dms_refused,
                dms_delivered: m.dms_delivered,
                sent_per_s: round3(m.sent as f64 / secs),
                delivered_per_s: round3(delivered_per_s),
            },
            latency_us: latency,
            changes,
            errors,
            client_cpu_s,
            server,
            slo,
        }
    }

    /// Whether every SLO held.
    pub fn passed(&self) -> bool {
        self.slo.passed
    }

    /// Prints the report on stdout (one JSON object with `json`, else the table), and every
    /// missed SLO on stderr.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
        } else {
            print!("{}", self.table());
        }
        for v in &self.slo.violations {
            eprintln!("parley-bots: SLO missed: {v}");
        }
        Ok(())
    }

    /// The human-readable table.
    fn table(&self) -> String {
        let mut t = String::new();
        let l = &self.latency_us;
        let e = &self.errors;
        let m = &self.messages;
        let c = &self.connections;
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.2}{unit}"));
        let rows: Vec<(&str, String)> = vec![
            ("scenario", format!("{} ({} bots, {:.1}s measured)", self.scenario, self.bots, self.duration_s)),
            ("connections", format!("{} up, {} failed, {} reconnects, peak {}", c.up, c.failed, c.reconnects, c.peak)),
            ("sent", format!("{} ({:.1}/s), {} acknowledged", m.sent, m.sent_per_s, m.acked)),
            ("delivered", format!("{} ({:.1}/s), {} DMs{}{}", m.delivered, m.delivered_per_s, m.dms_delivered,
                if m.foreign > 0 { format!(", {} foreign", m.foreign) } else { String::new() },
                if m.dms_refused > 0 { format!(", {} DMs refused (recipient offline)", m.dms_refused) } else { String::new() })),
            ("latency", format!("p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                format_us(l.p50), format_us(l.p90), format_us(l.p99), format_us(l.p999), format_us(l.max))),
            ("edits", self.changes.edits.row()),
            ("reactions", format!("{} ({} events received)", self.changes.reactions.row(), self.changes.events_received)),
            ("errors", format!(
                "{} total: connect {}, auth {}, protocol {}, gaps {} ({} missing), duplicates {}, out-of-order {}, closed-by-server {}, room ids {} ({} missing)",
                e.total, e.connect, e.auth, e.protocol, e.gaps, e.missing, e.duplicates, e.out_of_order, e.closed_by_server, e.room_ids, e.missing_ids)),
            ("client cpu", opt(self.client_cpu_s, "s")),
        ];
        for (name, value) in rows {
            // Writing into a String cannot fail.
            writeln!(t, "{name:<12} {value}").expect("write to String");
        }
        if let Some(s) = &self.server {
            writeln!(
                t,
                "{:<12} cpu {}, {} per delivery, rss {} (peak {})",
                "server",
                opt(s.cpu_s, "s"),
                opt(s.cpu_us_per_delivery, "µs"),
                s.rss_kib
                    .map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                s.peak_rss_kib
                    .map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            )
            .expect("write to String");
        }
        let slo = if self.slo.passed {
            "passed".to_owned()
        } else {
            format!("MISSED: {}", self.slo.violations.join("; "))
        };
        writeln!(t, "{:<12} {slo}", "slo").expect("write to String");
        t
    }
}

impl SloResult {
    /// Holds the measured latency, errors and delivery rate against the scenario's SLOs.
    fn evaluate(
        scenario: &Scenario,
        latency: &Latency,
        errors: &Errors,
        delivered_per_s: f64,
    ) -> Self {
        let mut violations = Vec::new();
        if let Some(max) = scenario.slo.max_p99 {
            let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
            if latency.p99 > max_us {
                violations.push(format!(
                    "p99 latency {} > max_p99 {}",
                    format_us(latency.p99),
                    format_us(max_us)
                ));
            }
        }
        if let Some(max) = scenario.slo.max_errors {
            if errors.total > max {
                violations.push(format!("{} errors > max_errors {max}", errors.total));
            }
        }
        if let Some(min) = scenario.slo.min_delivered_per_s {
            if delivered_per_s < min {
                violations.push(format!(
                    "{delivered_per_s:.1} deliveries/s < min_delivered_per_s {min}"
                ));
            }
        }
        Self {
            passed: violations.is_empty(),
            violations,
        }
    }

    /// Holds edit and reaction latencies against `max_change_p99`.
    fn evaluate_changes(&mut self, scenario: &Scenario, changes: &Changes) {
        let Some(max) = scenario.slo.max_change_p99 else {
            return;
        };
        let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        for (name, c) in [("edit", &changes.edits), ("reaction", &changes.reactions)] {
            if c.latency_us.p99 > max_us {
                self.violations.push(format!(
                    "{name} p99 latency {} > max_change_p99 {}",
                    format_us(c.latency_us.p99),
                    format_us(max_us)
                ));
            }
        }
        self.passed = self.violations.is_empty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Counters, ErrorKind};

    #[test]
    fn slos_are_held_against_the_measurements() {
        let scenario = Scenario::parse(
            r#"
            name = "s"
            duration = "1s"
            [[group]]
            name = "a"
            count = 1
            protocol = "raw"
            room = "r"
            [slo]
            max_p99 = "10ms"
            max_errors = 0
            min_delivered_per_s = 100
            "#,
        )
        .unwrap();
        let latency = |p99| Latency {
            count: 1,
            p50: 1,
            p90: 1,
            p99,
            p999: p99,
            max: p99,
        };
        let mut counters = Counters::default();
        let clean = Errors::of(&counters);
        let slo = SloResult::evaluate(&scenario, &latency(10_000), &clean, 100.0);
        assert!(slo.passed, "{:?}", slo.violations);

        counters.errors[ErrorKind::Gap as usize] = 2;
        let slo = SloResult::evaluate(&scenario, &latency(10_001), &Errors::of(&counters), 99.9);
        assert!(!slo.passed);
        assert_eq!(
            slo.violations,
            [
                "p99 latency 10.00ms > max_p99 10.00ms",
                "2 errors > max_errors 0",
                "99.9 deliveries/s < min_delivered_per_s 100",
            ]
        );
    }
}
