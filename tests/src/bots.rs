//! `parley-bots` as the suites run it: built once, every run bounded in time; for the metrics
//! suite, a scenario given as text, run with `--json` against a server, its report parsed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use serde_json::Value;

use crate::{build_binary, fresh_data_dir};

/// A bots run never takes longer than this; past it the run is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Path of the `parley-bots` binary, built once per test process.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_binary("parley-bots", "parley-bots"))
}

/// Runs scenario `text` against the server at `http` (STOMP over TCP at `stomp`) with
/// `--json`; returns the exit code and the report, panicking if stdout is not one.
pub fn run_json(http: SocketAddr, stomp: SocketAddr, text: &str) -> (Option<i32>, Value) {
    let dir = fresh_data_dir().with_extension("bots");
    std::fs::create_dir_all(&dir).expect("create the scenario's folder");
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, text).expect("write the scenario");
    let scenario = scenario.to_str().expect("scratch paths are UTF-8");
    let (http, stomp) = (http.to_string(), stomp.to_string());
    let args = [
        "run",
        scenario,
        "--http",
        &http,
        "--stomp-tcp",
        &stomp,
        "--json",
    ];
    let out = run(&args, RUN_LIMIT);
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "parley-bots' stdout is not one JSON object ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// Runs `parley-bots ARGS...`, killing it and failing if it outlives `limit`.
pub fn run(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn parley-bots");
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("wait for parley-bots"),
        Err(_) => {
            // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet
            // (wait_with_output has not returned), so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("parley-bots {args:?} ran longer than {limit:?}");
        }
    }
}
