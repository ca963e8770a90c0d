//! End-to-end test harness: builds the real `parley` binary once, runs it on an
//! ephemeral loopback port, and offers byte-level HTTP/WebSocket helpers ([`raw`]).
#![deny(missing_docs)]

pub mod arch;
pub mod auth;
pub mod bots;
pub mod cluster;
pub mod http;
pub mod logs;
pub mod prometheus;
pub mod raw;
pub mod redis;
pub mod relay;
pub mod socketio;
pub mod sockjs;
pub mod sse;
pub mod stomp;
pub mod tls;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long [`ServerProcess::start`] waits for the `parley listening on ...` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Prefix of the line the server prints on stdout once it is listening.
pub const LISTENING_PREFIX: &str = "parley listening on http://";

/// The same line when the server speaks TLS (`--tls-cert`): HTTPS only.
pub const HTTPS_LISTENING_PREFIX: &str = "parley listening on https://";

/// Prefix of the line that follows it when STOMP over TCP is enabled.
pub const STOMP_LISTENING_PREFIX: &str = "parley stomp listening on tcp://";

/// Prefix of the line after that with TLS on, unless `--stomp-tls off`.
pub const STOMP_TLS_LISTENING_PREFIX: &str = "parley stomp-tls listening on tcp://";
/// Prefix of the line a server started with `--metrics ADDR` prints after those.
pub const METRICS_LISTENING_PREFIX: &str = "parley metrics listening on http://";

/// The Cargo workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Path of the `parley` binary, built with `cargo build` once per test process.
pub fn parley_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(build_parley)
}

fn build_parley() -> PathBuf {
    build_binary("parley-server", "parley")
}

/// Builds binary `bin` of workspace package `package` (debug) and returns its path.
pub fn build_binary(package: &str, bin: &str) -> PathBuf {
    let root = workspace_root();
    let output = Command::new(env!("CARGO"))
        .args(["build", "-p", package, "--bin", bin])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to run `cargo build -p {package}`: {e}"));
    assert!(
        output.status.success(),
        "`cargo build -p {package} --bin {bin}` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        // A relative CARGO_TARGET_DIR is relative to the directory cargo ran in: the root.
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    };
    let path = target_dir
        .join("debug")
        .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "cargo build succeeded but {} does not exist",
        path.display()
    );
    path
}

/// Every value of header `name` (case-insensitive) among `headers`, in order.
pub fn header_values<'h>(headers: &'h [(String, String)], name: &str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A new, empty data directory for one server.
pub fn fresh_data_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("parley-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// With `PARLEY_TEST_DATABASE` set (a `postgres://…/db` URL), every data directory gets a
/// PostgreSQL database of its own on that server, so the suites run against PostgreSQL
/// instead of SQLite; restarting on the same data directory finds the same database.
/// CI drops the `parley_e2e_*` databases afterwards.
pub fn database_for(data: &Path) -> Option<String> {
    use std::hash::{Hash as _, Hasher as _};
    let admin = std::env::var("PARLEY_TEST_DATABASE").ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut hasher);
    let name = format!("parley_e2e_{:016x}", hasher.finish());
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");
    // The blocking client runs its own runtime: keep it off the test's.
    let created = std::thread::spawn(move || -> Result<(), postgres::Error> {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?
            .is_some();
        if !exists {
            client.batch_execute(&format!("CREATE DATABASE {name}"))?;
        }
        Ok(())
    })
    .join()
    .expect("creating a test database panicked");
    created.unwrap_or_else(|e| panic!("PARLEY_TEST_DATABASE: {e}"));
    Some(url)
}

/// `args` after the chat suites' `--allow-guests --guests-create-rooms` (the latter left out
/// when `args` say otherwise).
pub fn chat_suite_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--allow-guests"];
    if !args.iter().any(|a| a.starts_with("--guests-create-rooms")) {
        all.push("--guests-create-rooms");
    }
    all.extend_from_slice(args);
    all
}

/// A running `parley serve` process on an ephemeral port; killed when dropped.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    stomp_addr: SocketAddr,
    stomp_tls_addr: Option<SocketAddr>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    /// Lines of stdout after the listening lines, as they come.
    stdout: Mutex<mpsc::Receiver<std::io::Result<String>>>,
}

impl ServerProcess {
    /// Runs `parley serve --http 127.0.0.1:0 --allow-guests --guests-create-rooms ARGS...` and
    /// waits for its listening line. Guests are allowed, and create rooms by joining, because
    /// the chat suites connect by name; auth suites use [`ServerProcess::start_strict`] (a test
    /// may also pass `--guests-create-rooms=false`).
    pub fn start(args: &[&str]) -> ServerProcess {
        Self::start_with_data(&fresh_data_dir(), args)
    }

    /// Like [`ServerProcess::start`], keeping its data in `data` (to restart on the same data).
    pub fn start_with_data(data: &Path, args: &[&str]) -> ServerProcess {
        Self::start_strict_with_data(data, &chat_suite_args(args))
    }

    /// Runs `parley serve --http 127.0.0.1:0 ARGS...` on its defaults: no guests.
    pub fn start_strict(args: &[&str]) -> ServerProcess {
        Self::start_strict_with_data(&fresh_data_dir(), args)
    }

    /// Like [`ServerProcess::start_strict`], keeping its data in `data`.
    pub fn start_strict_with_data(data: &Path, args: &[&str]) -> ServerProcess {
        Self::start_at(data, "127.0.0.1:0", "127.0.0.1:0", args)
    }

    /// Runs `parley serve --data DATA --http HTTP --stomp-tcp STOMP ARGS...` (to restart a
    /// server where a load balancer expects it).
    pub fn start_at(data: &Path, http: &str, stomp: &str, args: &[&str]) -> ServerProcess {
        Self::launch(data, http, stomp, args, true)
    }

    /// Like [`ServerProcess::start_with_data`], always on SQLite in `data`, even when the suites
    /// run against PostgreSQL (for tests that act on the database's files).
    pub fn start_on_sqlite(data: &Path, args: &[&str]) -> ServerProcess {
        let all = chat_suite_args(args);
        Self::launch(data, "127.0.0.1:0", "127.0.0.1:0", &all, false)
    }

    fn launch(
        data: &Path,
        http: &str,
        stomp: &str,
        args: &[&str],
        postgres: bool,
    ) -> ServerProcess {
        let bin = parley_binary();
        let mut command = Command::new(bin);
        command.arg("serve").arg("--data").arg(data);
        if postgres && !args.contains(&"--database") {
            if let Some(url) = database_for(data) {
                command.args(["--database", &url]);
            }
        }
        command
            .args(["--http", http, "--stomp-tcp", stomp])
            .args(args)
            .env("RUST_LOG", "warn");
        // PARLEY_TEST_LOG_DIR: a debug log of every server, kept for the secret scan.
        let log_file = logs::debug_log(&mut command, args).map(|(_, file)| file);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", bin.display()));

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = {
            let sink = Arc::clone(&stderr);
            let mut pipe = child.stderr.take().expect("stderr is piped");
            let mut log_file = log_file;
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if let Some(file) = &mut log_file {
                                let _ = std::io::Write::write_all(file, &chunk[..n]);
                            }
                            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
                        }
                    }
                }
            })
        };

        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        let tls = args.contains(&"--tls-cert");
        let stomp_tls = tls && !args.windows(2).any(|w| w == ["--stomp-tls", "off"]);
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            // The HTTP line, the STOMP TCP line (the harness always enables STOMP TCP), then
            // whatever follows (STOMP over TLS's, the metrics line). Once nobody listens, keep draining so output
            // can never block the server or hit a closed pipe.
            loop {
                let mut line = String::new();
                let read = reader.read_line(&mut line).map(|_| line);
                let end = !matches!(&read, Ok(line) if !line.is_empty());
                if tx.send(read).is_err() || end {
                    break;
                }
            }
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });

        let mut server = ServerProcess {
            child,
            // Placeholder until the listening line is parsed; never exposed before that.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stomp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stomp_tls_addr: None,
            stderr,
            stderr_thread: Some(stderr_thread),
            stdout: Mutex::new(rx),
        };
        let first = server.stdout.lock().unwrap().recv_timeout(STARTUP_TIMEOUT);
        let line = match first {
            Ok(Ok(line)) if !line.is_empty() => line,
            Ok(Ok(_)) => server.fail_startup("closed stdout without printing the listening line"),
            Ok(Err(e)) => server.fail_startup(&format!("stdout read failed: {e}")),
            Err(_) => server.fail_startup(&format!(
                "printed no listening line within {STARTUP_TIMEOUT:?}"
            )),
        };
        let line = line.trim_end_matches(['\r', '\n']);
        let prefix = if tls {
            HTTPS_LISTENING_PREFIX
        } else {
            LISTENING_PREFIX
        };
        let addr: SocketAddr = match line.strip_prefix(prefix).and_then(|rest| rest.parse().ok()) {
            Some(addr) => addr,
            None => server.fail_startup(&format!(
                "printed {line:?}, expected `{prefix}127.0.0.1:PORT`"
            )),
        };
        assert!(
            addr.ip().is_loopback() && addr.port() != 0,
            "listening line names {addr}, expected 127.0.0.1 and the real (non-zero) port"
        );
        server.addr = addr;
        let second = server.stdout.lock().unwrap().recv_timeout(STARTUP_TIMEOUT);
        let line = match second {
            Ok(Ok(line)) if !line.is_empty() => line,
            _ => server.fail_startup("printed no STOMP listening line"),
        };
        let line = line.trim_end_matches(['\r', '\n']);
        match line
            .strip_prefix(STOMP_LISTENING_PREFIX)
            .and_then(|rest| rest.parse().ok())
        {
            Some(stomp_addr) => server.stomp_addr = stomp_addr,
            None => server.fail_startup(&format!(
                "printed {line:?}, expected `{STOMP_LISTENING_PREFIX}ADDR`"
            )),
        }
        if stomp_tls {
            let third = server.stdout.lock().unwrap().recv_timeout(STARTUP_TIMEOUT);
            let line = match third {
                Ok(Ok(line)) if !line.is_empty() => line,
                _ => server.fail_startup("printed no STOMP-over-TLS listening line"),
            };
            let line = line.trim_end_matches(['\r', '\n']);
            match line
                .strip_prefix(STOMP_TLS_LISTENING_PREFIX)
                .and_then(|rest| rest.parse().ok())
            {
                Some(addr) => server.stomp_tls_addr = Some(addr),
                None => server.fail_startup(&format!(
                    "printed {line:?}, expected `{STOMP_TLS_LISTENING_PREFIX}ADDR`"
                )),
            }
        }
        server
    }

    /// The STOMP-over-TLS address the server reported (with `--tls-cert`).
    pub fn stomp_tls_addr(&self) -> Option<SocketAddr> {
        self.stomp_tls_addr
    }

    /// The next line the server printed on stdout after its listening lines, without its line
    /// end; `None` if it prints none within `within` (or closed stdout).
    pub fn stdout_line(&self, within: Duration) -> Option<String> {
        match self.stdout.lock().unwrap().recv_timeout(within) {
            Ok(Ok(line)) => Some(line.trim_end_matches(['\r', '\n']).to_owned()),
            _ => None,
        }
    }

    /// The address of `/metrics` from the line a server started with `--metrics` prints
    /// (`parley metrics listening on http://ADDR/metrics`); panics without it.
    pub fn metrics_addr(&self) -> SocketAddr {
        let line = self
            .stdout_line(STARTUP_TIMEOUT)
            .unwrap_or_else(|| panic!("no metrics line on stdout; stderr:\n{}", self.stderr_log()));
        line.strip_prefix(METRICS_LISTENING_PREFIX)
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| {
                panic!("printed {line:?}, expected `{METRICS_LISTENING_PREFIX}ADDR/metrics`")
            })
    }

    /// The STOMP-over-TCP address the server reported.
    pub fn stomp_addr(&self) -> SocketAddr {
        self.stomp_addr
    }

    fn fail_startup(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let status = self.child.wait();
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        panic!(
            "parley serve {why} (exit: {status:?}); stderr:\n{}",
            self.stderr_log()
        );
    }

    /// The address the server reported in its listening line.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR{path}`, e.g. `ws_url("/echo")`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory in bytes, from /proc.
    pub fn rss_bytes(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status of the server");
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the server process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child,
        // which is not reaped yet (we hold the `Child`), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Sends SIGKILL and reaps the process: a crash, nothing flushed or closed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGINT (graceful shutdown, as Ctrl-C).
    pub fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// Blocks until the process exits, panicking if that takes longer than `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on parley") {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "parley did not exit within {timeout:?}; stderr so far:\n{}",
                    self.stderr_log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status if the process has already exited, without waiting.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait on parley")
    }

    /// Everything the server wrote to stderr so far (its logs).
    pub fn stderr_log(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            if let Some(t) = self.stderr_thread.take() {
                let _ = t.join();
            }
            eprintln!(
                "---- parley stderr ({}) ----\n{}",
                self.addr,
                self.stderr_log()
            );
        }
    }
}
