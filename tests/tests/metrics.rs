//! Metrics with real tools: `promtool check metrics` passes on `/metrics` before and after
//! traffic; a real Prometheus scrapes it every second while `parley-bots` chat over STOMP and
//! the raw protocol, and what its HTTP API answers matches what the bots counted (messages,
//! deliveries, sessions) — the numbers are exact where both sides count the same thing; the
//! histograms and process figures are there; `/metrics` is only on its own listener, which
//! serves nothing else and does not exist without `--metrics`. The shipped Grafana dashboard
//! (deploy/grafana-dashboard.json) queries only metrics the server exports, each of them, and
//! every query runs on that Prometheus; deploy/prometheus.yml passes `promtool check config`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parley_tests::http;
use parley_tests::prometheus::{self, promtool_check_metrics, Prometheus};
use parley_tests::{bots, workspace_root, ServerProcess};
use serde_json::Value;

/// Two STOMP groups (WebSocket and TCP) in one room: three bots each, five messages a second.
const STOMP_SCENARIO: &str = r#"
name = "metrics-stomp"
duration = "2s"
drain = "1s"
[[group]]
name = "ws"
count = 3
protocol = "stomp-ws"
room = "metrics-stomp"
rate = 5
[[group]]
name = "tcp"
count = 3
protocol = "stomp-tcp"
room = "metrics-stomp"
rate = 5
"#;

/// Three raw bots in a room of their own.
const RAW_SCENARIO: &str = r#"
name = "metrics-raw"
duration = "2s"
drain = "1s"
[[group]]
name = "raw"
count = 3
protocol = "raw"
room = "metrics-raw"
rate = 5
"#;

async fn exposition(metrics: SocketAddr) -> String {
    let resp = http::get(metrics, "/metrics", &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        resp.headers
    );
    resp.text()
}

fn assert_promtool_passes(text: &str, when: &str) {
    let (ok, said) = promtool_check_metrics(text);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics {when}: {said}\n{text}"
    );
}

fn count(report: &Value, section: &str, field: &str) -> u64 {
    report[section][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {section}.{field} in {report:#}"))
}

/// Queries `expr` after each scrape until `ok` holds of its single value; that value.
async fn eventually(prom: &Prometheus, expr: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let result = prom.query(expr).await;
        if let [one] = result.as_slice() {
            let value = prometheus::sample_value(one);
            if ok(value) {
                return value;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{expr} never as expected: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_what_the_bots_counted() {
    let server = ServerProcess::start(&["--rate-limit", "0", "--metrics", "127.0.0.1:0"]);
    let metrics = server.metrics_addr();
    assert_ne!(metrics.port(), server.addr().port());
    assert_promtool_passes(&exposition(metrics).await, "before any traffic");
    bots::binary(); // built before Prometheus starts its clock
    let prom = Prometheus::start(&[metrics]).await;
    eventually(&prom, "up{job=\"parley\"}", |up| up == 1.0).await;

    // Two runs at once, each in its own room: one per protocol, so each protocol's figures
    // can be held against the run that made them.
    let (http, stomp) = (server.addr(), server.stomp_addr());
    let stomp_run =
        tokio::task::spawn_blocking(move || bots::run_json(http, stomp, STOMP_SCENARIO));
    let raw_run = tokio::task::spawn_blocking(move || bots::run_json(http, stomp, RAW_SCENARIO));
    let (stomp_code, stomp_report) = stomp_run.await.expect("the STOMP run");
    let (raw_code, raw_report) = raw_run.await.expect("the raw run");
    for (code, report) in [(stomp_code, &stomp_report), (raw_code, &raw_report)] {
        assert_eq!(code, Some(0), "{report:#}\n{}", server.stderr_log());
        assert_eq!(report["errors"]["total"], 0, "{report:#}");
        let sent = count(report, "messages", "sent");
        assert!(sent > 0, "{report:#}");
        // Every send was acknowledged: it took effect on the server.
        assert_eq!(count(report, "messages", "acked"), sent, "{report:#}");
    }

    // The bots have hung up: once Prometheus saw no session open, one more scrape, then every
    // counter is final.
    eventually(&prom, "sum(parley_sessions_open)", |open| open == 0.0).await;
    prom.until_scraped_after(prometheus::now(), Duration::from_secs(10))
        .await;
    let prom = &prom;
    let q = |expr: &'static str| prom.value(expr);

    for (protocol, report) in [("stomp", &stomp_report), ("raw", &raw_report)] {
        let sent = count(report, "messages", "sent") as f64;
        let delivered = count(report, "messages", "delivered") as f64;
        let up = count(report, "connections", "up") as f64;
        let by = |metric: &str| format!("sum(parley_{metric}{{protocol=\"{protocol}\"}})");
        let value = |expr: String| async move { prom.value(&expr).await };
        assert_eq!(value(by("messages_in_total")).await, sent, "{protocol}");
        assert_eq!(value(by("sessions_opened_total")).await, up, "{protocol}");
        let closed = format!(
            "sum(parley_sessions_closed_total{{protocol=\"{protocol}\",reason=\"closed\"}})"
        );
        assert_eq!(value(closed).await, up, "{protocol}");
        let deliveries = value(by("deliveries_total")).await;
        if protocol == "stomp" {
            // STOMP bots get only their room's messages, and count each one.
            assert_eq!(deliveries, delivered, "{protocol}: {report:#}");
        } else {
            // Raw bots also get presence (each of three bots' join and leave, to at most the
            // three of them), which they do not count as messages.
            assert!(
                deliveries >= delivered && deliveries <= delivered + 2.0 * up * up,
                "raw: {deliveries} deliveries, the bots received {delivered}: {raw_report:#}"
            );
        }
    }
    let connections =
        count(&stomp_report, "connections", "up") + count(&raw_report, "connections", "up");
    assert_eq!(
        q("sum(parley_sessions_opened_total)").await,
        connections as f64
    );
    assert_eq!(q("sum(parley_sessions_open)").await, 0.0);
    assert!(q("sum(parley_connections_accepted_total)").await >= connections as f64);
    assert_eq!(
        q("sum(parley_connections_accepted_total{listener=\"stomp_tcp\"})").await,
        3.0,
        "the STOMP TCP bots"
    );
    for histogram in [
        "parley_fanout_seconds_count",
        "parley_delivery_delay_seconds_count",
        "parley_storage_commit_seconds_count",
        "parley_storage_batch_size_count",
    ] {
        let n = prom.value(histogram).await;
        assert!(n > 0.0, "{histogram} = {n}");
    }
    // Every message went through one storage transaction or another.
    let messages = q("sum(parley_messages_in_total)").await;
    assert!(q("parley_storage_batch_size_sum").await >= messages);
    assert!(q("process_resident_memory_bytes").await > 0.0);
    assert!(q("process_open_fds").await > 0.0);
    assert_eq!(q("parley_ready").await, 1.0);
    assert_eq!(q("parley_component_up{component=\"storage\"}").await, 1.0);
    assert_eq!(
        q("sum(parley_sessions_closed_total{reason=\"slow_consumer\"})").await,
        0.0
    );
    assert!(q("parley_rooms").await >= 2.0);

    // The dashboard's queries are PromQL this Prometheus runs.
    for expr in dashboard_queries() {
        prom.query(&expr).await;
    }

    // Every label set now exists: the exposition still passes.
    let text = exposition(metrics).await;
    assert!(
        text.contains("parley_deliveries_total{protocol=\"raw\""),
        "{text}"
    );
    assert_promtool_passes(&text, "after traffic");
}

#[tokio::test]
async fn metrics_listen_apart_and_only_when_asked() {
    let server = ServerProcess::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = server.metrics_addr();
    assert_eq!(http::get(metrics, "/metrics", &[]).await.status, 200);
    for path in ["/", "/metrics/", "/healthz", "/api/info"] {
        let status = http::get(metrics, path, &[]).await.status;
        assert_eq!(status, 404, "{path} on the metrics listener");
    }
    let post = http::request(metrics, "POST", "/metrics", &[], Some(b"")).await;
    assert_eq!(post.status, 405);
    // The public port has no /metrics.
    assert_eq!(http::get(server.addr(), "/metrics", &[]).await.status, 404);

    // Without --metrics: no metrics line, and the public port still has no /metrics.
    let plain = ServerProcess::start(&[]);
    assert_eq!(plain.stdout_line(Duration::from_millis(500)), None);
    assert_eq!(http::get(plain.addr(), "/metrics", &[]).await.status, 404);
    assert_eq!(server.stdout_line(Duration::from_millis(10)), None);
}

/// The metrics the server describes (`DESCRIPTIONS` in server/src/metrics/mod.rs) with their
/// kind, and the `process_*` figures it renders (server/src/metrics/process.rs, gauges but for
/// the CPU counter).
fn server_metrics() -> BTreeMap<String, &'static str> {
    let root = workspace_root().join("server/src/metrics");
    let source = std::fs::read_to_string(root.join("mod.rs")).expect("read metrics/mod.rs");
    let table = source
        .split_once("const DESCRIPTIONS")
        .and_then(|(_, rest)| rest.split_once("\n];"))
        .expect("the DESCRIPTIONS table")
        .0;
    let mut names = BTreeMap::new();
    for entry in table.split("Kind::").skip(1) {
        let kind = match entry.split(',').next().map(str::trim) {
            Some("Counter") => "counter",
            Some("Gauge") => "gauge",
            Some("Histogram") => "histogram",
            other => panic!("unknown kind {other:?} in DESCRIPTIONS"),
        };
        let name = entry
            .split('"')
            .nth(1)
            .expect("a quoted name after the kind");
        names.insert(name.to_owned(), kind);
    }
    let process = std::fs::read_to_string(root.join("process.rs")).expect("read process.rs");
    for name in process.split('"').filter(|s| s.starts_with("process_")) {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        names.insert(name.to_owned(), kind);
    }
    assert!(names.len() > 30, "{names:?}");
    names
}

/// Every query of the shipped dashboard, with its variables given values Prometheus takes.
fn dashboard_queries() -> Vec<String> {
    let path = workspace_root().join("deploy/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read deploy/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(
        dashboard["schemaVersion"].as_u64() >= Some(36),
        "schemaVersion"
    );
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
        let targets = panel["targets"].as_array().expect("a panel's targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("a target's expr");
            queries.push(
                expr.replace("$__rate_interval", "1m")
                    .replace("$instance", ".*"),
            );
        }
    }
    queries
}

/// The metric names in PromQL `expr` (identifiers starting `parley_` or `process_`).
fn names_in(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("parley_") || w.starts_with("process_"))
        .collect()
}

/// The dashboard's queries name only metrics the server has — histograms' series only on
/// histograms — and show every one of them.
#[test]
fn the_dashboard_queries_what_the_server_exports() {
    let known = server_metrics();
    let mut shown = BTreeSet::new();
    for expr in dashboard_queries() {
        for name in names_in(&expr) {
            let (base, want) = match ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
            {
                Some(base) if known.get(base) == Some(&"histogram") => (base, "histogram"),
                _ => (name, ""),
            };
            let kind = known
                .get(base)
                .unwrap_or_else(|| panic!("{name} (in {expr}) is not a metric the server exports"));
            assert!(
                want.is_empty() || *kind == want,
                "{name} in {expr}: {base} is a {kind}"
            );
            assert!(
                *kind != "histogram" || !want.is_empty(),
                "{name} in {expr} is a histogram: query its _bucket, _sum or _count"
            );
            assert!(
                *kind != "counter" || expr.contains("rate(") || expr.contains("increase("),
                "{name} in {expr} is a counter: chart its rate or increase"
            );
            shown.insert(base.to_owned());
        }
    }
    let missing: Vec<_> = known.keys().filter(|n| !shown.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard shows nothing of {missing:?}"
    );
}

#[test]
fn the_shipped_prometheus_config_is_valid() {
    let path = workspace_root().join("deploy/prometheus.yml");
    let out = std::process::Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(&path)
        .output()
        .expect("run promtool (Debian package prometheus)");
    assert!(out.status.success(), "{out:?}");
}
