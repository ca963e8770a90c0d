//! A real Prometheus (Debian's `prometheus` package) for the metrics suite: started on a free
//! loopback port with storage in a temporary folder, scraping the given targets every second,
//! and asked through its HTTP API; stopped when dropped. Also `promtool check metrics`.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::{fresh_data_dir, http};

/// How long Prometheus may take to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `prometheus`; killed (and its folder removed) when dropped.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`/metrics` on each) every second under job
    /// `parley`; returns once it is ready.
    pub async fn start(targets: &[SocketAddr]) -> Prometheus {
        let dir = fresh_data_dir().with_extension("prometheus");
        std::fs::create_dir_all(dir.join("data")).expect("create Prometheus' folder");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: parley\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let check = Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(&config_path)
            .output()
            .expect("run promtool (Debian package prometheus)");
        assert!(check.status.success(), "promtool check config: {check:?}");
        // A free port: bound, read and released; another process taking it in between makes
        // Prometheus exit, which the readiness wait reports.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("create the log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus (Debian package prometheus)");
        let mut prometheus = Prometheus { child, addr, dir };
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            if let Ok(Ok(stream)) = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(self.addr),
            )
            .await
            {
                drop(stream);
                if http::get(self.addr, "/-/ready", &[]).await.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within {READY_TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What Prometheus logged (warnings and worse).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Runs instant query `expr` (`/api/v1/query`); the result's vector (may be empty).
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let resp = http::get(self.addr, &path, &[]).await;
        let body = resp.json();
        assert_eq!(resp.status, 200, "{expr}: {body}");
        assert_eq!(body["status"], "success", "{expr}: {body}");
        assert_eq!(body["data"]["resultType"], "vector", "{expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of `expr`, which must give exactly one series.
    pub async fn value(&self, expr: &str) -> f64 {
        let result = self.query(expr).await;
        assert_eq!(result.len(), 1, "{expr} gave {result:?}");
        sample_value(&result[0])
    }

    /// Waits until every target was scraped after `since` (a time taken with [`now`]).
    pub async fn until_scraped_after(&self, since: f64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            // `timestamp(up)` is when each target's last scrape happened.
            let scrapes = self.query("timestamp(up{job=\"parley\"})").await;
            if !scrapes.is_empty() && scrapes.iter().all(|s| sample_value(s) > since) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no scrape after {since} within {within:?}: {scrapes:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Seconds since the Unix epoch, as Prometheus' timestamps are.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The number in one result of an instant vector: `{"metric":…,"value":[t,"v"]}`.
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {sample}"))
}

/// `promtool check metrics` on an exposition: its exit status and what it printed (lint
/// problems go to stderr).
pub fn promtool_check_metrics(exposition: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus)");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(exposition.as_bytes())
        .expect("feed promtool");
    drop(stdin);
    let out = child.wait_with_output().expect("wait for promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// `s` with everything but unreserved URL characters percent-encoded (a query's value).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
