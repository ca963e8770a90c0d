//! `parley-bots` against the real server: the smoke scenario passes, a missed SLO fails the
//! run, the STOMP TCP address comes from `/api/info`, minted tokens and a personal access token
//! (`--token`) authenticate on every protocol, and the conversations scenario exercises edits, reactions and DMs.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use parley_tests::auth::{account, get_as, post_as};
use parley_tests::{fresh_data_dir, workspace_root, ServerProcess};
use serde_json::Value;

/// A bots run never takes longer than this; past it the test kills it and fails.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// Runs `parley-bots ARGS...`, killing it if it outlives [`RUN_LIMIT`].
fn bots(args: &[&str]) -> Output {
    parley_tests::bots::run(args, RUN_LIMIT)
}

/// Runs a scenario with `--json` against `server`; returns the exit code and the report.
fn run_json(server: &ServerProcess, scenario: &Path, extra: &[&str]) -> (Option<i32>, Value) {
    let stomp = server.stomp_addr().to_string();
    let mut args = vec!["--stomp-tcp", stomp.as_str()];
    args.extend_from_slice(extra);
    run_json_learning_stomp(server, scenario, &args)
}

/// Like [`run_json`] but without `--stomp-tcp` (unless in `extra`): the bots ask the server's
/// `/api/info` where its STOMP TCP listener is.
fn run_json_learning_stomp(
    server: &ServerProcess,
    scenario: &Path,
    extra: &[&str],
) -> (Option<i32>, Value) {
    let http = server.addr().to_string();
    let pid = server.pid().to_string();
    let mut args = vec![
        "run",
        scenario.to_str().expect("UTF-8 path"),
        "--http",
        &http,
        "--server-pid",
        &pid,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = bots(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// Writes `text` to a fresh temporary scenario file.
fn scenario_file(name: &str, text: &str) -> PathBuf {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write scenario");
    path
}

fn assert_clean(report: &Value) {
    let errors = &report["errors"];
    for kind in [
        "gaps",
        "duplicates",
        "out_of_order",
        "connect",
        "auth",
        "protocol",
    ] {
        assert_eq!(errors[kind], 0, "{kind} in {report:#}");
    }
    assert!(
        report["messages"]["delivered"].as_u64().unwrap_or(0) > 0,
        "nothing delivered: {report:#}"
    );
}

#[test]
fn smoke_scenario_passes() {
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    let smoke = workspace_root().join("bots/scenarios/smoke.toml");
    let (code, report) = run_json(&server, &smoke, &["--duration", "3s"]);
    assert_eq!(code, Some(0), "{report:#}\n{}", server.stderr_log());
    assert_clean(&report);
    assert_eq!(report["errors"]["total"], 0, "{report:#}");
    assert_eq!(report["connections"]["up"], 9, "{report:#}");
    assert_eq!(report["slo"]["passed"], true);
    assert!(report["server"]["cpu_s"].is_number(), "{report:#}");
    assert!(
        report["latency_us"]["p99"].as_u64().unwrap() > 0,
        "{report:#}"
    );
}

/// STOMP over SockJS (xhr-streaming, xhr-polling), the SSE feed posting over REST and STOMP
/// over WebSocket, in one room: every message reaches every bot on every transport.
#[test]
fn fallback_transports_scenario_passes() {
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    let scenario = workspace_root().join("bots/scenarios/fallback.toml");
    let (code, report) = run_json(&server, &scenario, &["--duration", "3s"]);
    assert_eq!(code, Some(0), "{report:#}\n{}", server.stderr_log());
    assert_clean(&report);
    assert_eq!(report["errors"]["total"], 0, "{report:#}");
    assert_eq!(report["connections"]["up"], 12, "{report:#}");
    let sent = report["messages"]["sent"].as_u64().unwrap_or_default();
    assert!(sent > 0, "{report:#}");
    assert_every_send_acked(&report);
}

/// Every measured send was acknowledged, once. Counts are taken from the end of the warm-up on,
/// so a send just before it may have its acknowledgement counted and itself not: at this
/// scenario's rate (5 a second per bot, acknowledged in milliseconds) at most one per bot. A
/// server acknowledging sends twice would be far past that.
fn assert_every_send_acked(report: &Value) {
    let count = |key: &str| report["messages"][key].as_u64().unwrap_or_default();
    let (sent, acked) = (count("sent"), count("acked"));
    let straddling = report["bots"].as_u64().unwrap_or_default();
    assert!(
        (sent..=sent + straddling).contains(&acked),
        "{sent} sent, {acked} acknowledged: {report:#}"
    );
}

/// Socket.IO bots on WebSocket and on long-polling in one room: every message reaches every
/// bot on both transports, each send acknowledged once durable.
#[test]
fn socketio_scenario_passes_on_both_transports() {
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    let scenario = workspace_root().join("bots/scenarios/socketio.toml");
    let (code, report) = run_json(&server, &scenario, &["--duration", "3s"]);
    assert_eq!(code, Some(0), "{report:#}\n{}", server.stderr_log());
    assert_clean(&report);
    assert_eq!(report["errors"]["total"], 0, "{report:#}");
    assert_eq!(report["connections"]["up"], 6, "{report:#}");
    let count = |field: &str| report["messages"][field].as_u64().unwrap_or_default();
    let sent = count("sent");
    assert!(sent > 0, "{report:#}");
    // Acks and deliveries counted in the window include those of sends made just before it.
    assert!(count("acked") >= sent, "{report:#}");
    assert!(count("delivered") >= 6 * sent, "{report:#}");
}

#[test]
fn a_missed_slo_fails_the_run() {
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    let scenario = scenario_file(
        "impossible",
        r#"
        name = "impossible"
        duration = "1s"
        ramp_up = "200ms"
        [[group]]
        name = "b"
        count = 2
        protocol = "stomp-tcp"
        room = "impossible"
        rate = 5
        [slo]
        min_delivered_per_s = 1e9
        "#,
    );
    let (code, report) = run_json(&server, &scenario, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["slo"]["passed"], false);
    let violations = report["slo"]["violations"].to_string();
    assert!(violations.contains("min_delivered_per_s"), "{violations}");
}

#[test]
fn the_stomp_tcp_address_is_learned_from_the_server() {
    // The harness binds STOMP TCP to port 0, never the bots' old default 61613: without
    // --stomp-tcp only the server's /api/info can tell the bots where it listens.
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    assert_ne!(server.stomp_addr().port(), 61613);
    let scenario = scenario_file(
        "learned",
        r#"
        name = "learned"
        duration = "1s"
        ramp_up = "200ms"
        [[group]]
        name = "tcp"
        count = 3
        protocol = "stomp-tcp"
        room = "learned"
        rate = 5
        [slo]
        max_errors = 0
        "#,
    );
    let (code, report) = run_json_learning_stomp(&server, &scenario, &[]);
    assert_eq!(code, Some(0), "{report:#}\n{}", server.stderr_log());
    assert_clean(&report);
    assert_eq!(report["connections"]["up"], 3, "{report:#}");

    // No server to ask: the run fails before any bot starts, and says why.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let http = gone.local_addr().expect("local address").to_string();
    drop(gone);
    let path = scenario.to_str().expect("UTF-8 path");
    let out = bots(&["run", path, "--http", &http, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        stderr.contains("--stomp-tcp") && stderr.contains("/api/info"),
        "{stderr}"
    );
}

#[test]
fn minted_tokens_authenticate_on_every_protocol() {
    let data = fresh_data_dir();
    let server = ServerProcess::start_strict_with_data(&data, &["--rate-limit", "0"]);
    let secret = data.join("jwt-secret");
    assert!(secret.is_file(), "the server wrote no {}", secret.display());
    let groups = |auth: &str| {
        ["raw", "stomp-ws", "stomp-tcp"]
            .iter()
            .map(|p| {
                format!(
                    "[[group]]\nname = \"{p}\"\ncount = 2\nprotocol = \"{p}\"\nauth = \"{auth}\"\n\
                     room = \"tokens\"\nrate = 5\ndm_rate = 1\n"
                )
            })
            .collect::<String>()
    };
    let head = "name = \"tokens\"\nduration = \"2s\"\nramp_up = \"300ms\"\n";
    let tokens = scenario_file("tokens", &format!("{head}{}", groups("token")));
    let secret_arg = secret.to_str().expect("UTF-8 path");
    let (code, report) = run_json(&server, &tokens, &["--jwt-secret-file", secret_arg]);
    assert_eq!(code, Some(0), "{report:#}\n{}", server.stderr_log());
    assert_clean(&report);
    assert_eq!(report["connections"]["up"], 6, "{report:#}");

    // The same bots as guests are refused by a server without --allow-guests, and counted.
    let guests = scenario_file(
        "guests",
        &format!("{head}{}[slo]\nmax_errors = 0\n", groups("guest")),
    );
    let (code, report) = run_json(&server, &guests, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["errors"]["auth"], 6, "{report:#}");
    assert_eq!(report["connections"]["failed"], 6, "{report:#}");
}

#[test]
fn a_personal_access_token_authenticates_every_bot() {
    let server = ServerProcess::start_strict(&["--rate-limit", "0"]);
    let addr = server.addr();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (jwt, token) = runtime.block_on(async {
        let jwt = account(addr, "loadtest").await;
        // A one-room token creates no room: its owner does.
        let room = serde_json::json!({"name": "tokens"});
        post_as(addr, "/api/rooms", &jwt, &room)
            .await
            .assert_status(201, "create the room");
        let body = serde_json::json!({"name": "bots", "scope": "room:tokens"});
        let made = post_as(addr, "/api/tokens", &jwt, &body).await;
        made.assert_status(201, "create a token");
        (
            jwt.clone(),
            made.json()["token"].as_str().unwrap().to_owned(),
        )
    });
    let groups: String = ["raw", "stomp-ws", "stomp-tcp"]
        .iter()
        .map(|p| {
            format!(
                "[[group]]\nname = \"{p}\"\ncount = 2\nprotocol = \"{p}\"\nauth = \"register\"\n\
                 room = \"tokens\"\nrate = 5\n"
            )
        })
        .collect();
    let head = "name = \"pat\"\nduration = \"2s\"\nramp_up = \"300ms\"\n";
    let scenario = scenario_file("pat", &format!("{head}{groups}"));
    let (code, report) = run_json(&server, &scenario, &["--token", &token]);
    assert_eq!(code, Some(0), "{report:#}\n{}", server.stderr_log());
    assert_clean(&report);
    assert_eq!(report["connections"]["up"], 6, "{report:#}");
    let users = runtime.block_on(get_as(addr, "/api/users", &jwt)).json();
    assert_eq!(
        users["users"].as_array().map(Vec::len),
        Some(1),
        "no bot registered: {users}"
    );
}

#[test]
fn conversations_scenario_edits_reacts_and_dms() {
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    // The shipped scenario, scaled down to what a debug build on a busy 2-core machine keeps
    // up with: the same groups and rates, fewer bots, a shorter run.
    let shipped =
        std::fs::read_to_string(workspace_root().join("bots/scenarios/conversations.toml"))
            .expect("read conversations.toml");
    let short = shipped
        .replace("count = 100", "count = 6")
        .replace("ramp_up = \"3s\"", "ramp_up = \"1s\"")
        .replace("warmup = \"2s\"", "warmup = \"1s\"")
        .replace("max_p99 = \"1s\"", "max_p99 = \"2s\"")
        .replace("max_change_p99 = \"1s\"", "max_change_p99 = \"2s\"")
        .replace("rate = 1\n", "rate = 4\n")
        .replace("dm_rate = 0.2", "dm_rate = 1")
        .replace("edit_rate = 0.2", "edit_rate = 1")
        .replace("react_rate = 0.5", "react_rate = 2");
    assert!(
        short.contains("count = 6") && short.contains("edit_rate = 1"),
        "{short}"
    );
    let scenario = scenario_file("conversations", &short);
    let (code, report) = run_json(&server, &scenario, &["--duration", "4s"]);
    assert_eq!(code, Some(0), "{report:#}\n{}", server.stderr_log());
    assert_clean(&report);
    assert_eq!(report["errors"]["total"], 0, "{report:#}");
    assert_eq!(report["errors"]["room_ids"], 0, "{report:#}");
    let changes = &report["changes"];
    for kind in ["edits", "reactions"] {
        let c = &changes[kind];
        let n = |field: &str| c[field].as_u64().unwrap_or(0);
        assert!(n("acked") > 0, "no {kind} acknowledged: {report:#}");
        assert!(n("echoed") > 0, "no {kind} came back: {report:#}");
        assert!(c["latency_us"]["count"].as_u64() > Some(0), "{report:#}");
        // Under --edit-rate, nothing is refused.
        assert_eq!(n("refused"), 0, "{kind} refused: {report:#}");
    }
    // Every bot hears every change in its room (events counted by all, made by some).
    let made = changes["edits"]["echoed"].as_u64().unwrap_or(0)
        + changes["reactions"]["echoed"].as_u64().unwrap_or(0);
    assert!(
        changes["events_received"].as_u64() > Some(made),
        "{report:#}"
    );
    // DMs went out and arrived (bots DM the next bot of their group).
    assert!(
        report["messages"]["dms_delivered"].as_u64() > Some(0),
        "no DMs: {report:#}"
    );
}

#[test]
fn a_dm_to_a_bot_not_yet_online_is_refused_not_an_error() {
    let server = ServerProcess::start(&["--rate-limit", "0"]);
    // Bot 0 of each group DMs bot 1, which connects ~1 s later (the ramp-up spreads 4 bots
    // over 3 s): its first DMs find nobody. Raw gets an `error`; STOMP an ERROR that closes
    // the connection, after which the bot reconnects and resumes: the catch-up replays the
    // messages, edits and reactions it missed, and the room's ids carry on without a gap.
    let scenario = scenario_file(
        "refused",
        r#"
        name = "refused"
        ramp_up = "3s"
        duration = "1s"
        [[group]]
        name = "raw"
        count = 2
        protocol = "raw"
        room = "refused"
        rate = 2
        dm_rate = 10
        edit_rate = 1
        react_rate = 2
        [[group]]
        name = "ws"
        count = 2
        protocol = "stomp-ws"
        room = "refused"
        rate = 2
        dm_rate = 10
        edit_rate = 1
        react_rate = 2
        [slo]
        max_errors = 0
        "#,
    );
    let (code, report) = run_json(&server, &scenario, &[]);
    assert_eq!(code, Some(0), "{report:#}\n{}", server.stderr_log());
    assert_eq!(report["errors"]["total"], 0, "{report:#}");
    // Counted over the whole run would be more; the measured window starts after ramp-up, so
    // look at the connections: the STOMP bot came back after its refusal.
    assert!(
        report["connections"]["reconnects"].as_u64() > Some(0),
        "{report:#}"
    );
    assert!(
        report["messages"]["dms_delivered"].as_u64() > Some(0),
        "{report:#}"
    );
}

#[test]
fn check_validates_scenarios() {
    for name in [
        "smoke",
        "fanout",
        "many-rooms",
        "churn",
        "slow-consumer",
        "idle",
        "failover",
        "conversations",
        "fallback",
        "socketio",
    ] {
        let path = workspace_root().join(format!("bots/scenarios/{name}.toml"));
        let out = bots(&["check", path.to_str().expect("UTF-8 path")]);
        assert!(out.status.success(), "{name}: {out:?}");
    }
    let bad = scenario_file("bad", "name = \"bad\"\nduration = \"1s\"\n");
    let out = bots(&["check", bad.to_str().expect("UTF-8 path")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("group"));
}

#[test]
fn bots_resume_through_a_node_failure_behind_nginx() {
    use parley_tests::cluster::{Cluster, Nginx};

    let mut cluster = Cluster::start("bots", 3, &["--rate-limit", "0", "--public-stats"]);
    let nodes: Vec<&ServerProcess> = cluster.nodes.iter().collect();
    let nginx = Nginx::start(&nodes);
    let scenario = scenario_file(
        "resume",
        r#"
name = "resume"
ramp_up = "1s"
warmup = "0s"
duration = "5s"
drain = "2s"

[[group]]
name = "raw"
count = 6
protocol = "raw"
room = "resume"
rate = 20
in_flight = 1
reconnect = true

[[group]]
name = "ws"
count = 6
protocol = "stomp-ws"
room = "resume"
rate = 20
in_flight = 1
reconnect = true
"#,
    );
    let http = nginx.http.to_string();
    let stomp = nginx.stomp.to_string();
    let path = scenario.to_str().expect("UTF-8 path").to_owned();
    parley_tests::bots::binary(); // built before the run starts, not while the clock below runs
    let run = std::thread::spawn(move || {
        bots(&[
            "run",
            &path,
            "--http",
            &http,
            "--stomp-tcp",
            &stomp,
            "--json",
        ])
    });
    // Kill node 1 once bots are on it and chatting.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let node = cluster.nodes[1].addr();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = rt
            .block_on(parley_tests::http::get(node, "/stats", &[]))
            .json();
        if stats["sessions"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no bots reached node 1: {stats}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    cluster.nodes[1].kill();
    let out = run.join().expect("bots thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let errors = &report["errors"];
    let reconnects = report["connections"]["reconnects"].as_u64().unwrap_or(0);
    assert!(reconnects >= 1, "nobody was on the killed node? {report}");
    assert!(
        report["messages"]["delivered"].as_u64().unwrap_or(0) > 500,
        "{report}"
    );
    assert_eq!(errors["duplicates"], 0, "{report}");
    assert_eq!(errors["out_of_order"], 0, "{report}");
    // Only a message never acknowledged (sent to the node as it died, never stored) may be
    // missing, and then at every receiver; everything else is resumed from storage.
    let missing = errors["missing"].as_u64().expect("missing is reported");
    // A send just before the warm-up ended may be counted acknowledged and not sent: at most
    // one per bot (one in flight each here), which must not hide a send really unacknowledged.
    let receivers = report["bots"].as_u64().unwrap_or(0);
    let unacked = (report["messages"]["sent"].as_u64().unwrap_or(0) + receivers)
        .saturating_sub(report["messages"]["acked"].as_u64().unwrap_or(0));
    assert!(
        missing <= unacked * receivers,
        "missing {missing}, but only {unacked} sends went unacknowledged: {report}"
    );
}
