//! `parley-bots`' command line and run orchestration: scripted load-testing bots for Parley and
//! other STOMP brokers.
//!
//! A scenario file describes groups of bots; `run` connects them (ramped, bounded, from many
//! source addresses), makes them chat, checks every delivery for gaps, duplicates and order,
//! measures latency, and reports — with the scenario's SLOs deciding the exit status.

mod auth;
mod body;
mod bot;
mod checker;
mod conn;
mod http;
mod pattern;
mod procfs;
mod receiving;
mod report;
mod scenario;
mod stats;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use crate::bot::{Behaviour, Bot, Phase, Shared};
use crate::conn::Targets;
use crate::report::{round3, Report, Usage};
use crate::scenario::{AuthMode, Protocol, Scenario};
use crate::stats::{Aggregator, Clock, HistogramPool, Recorder};

/// How long bots get to hang up after the run before they are abandoned.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Exit status when a scenario's SLO is missed.
const EXIT_SLO_MISSED: u8 = 1;

/// Exit status for a bad scenario or command line.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "parley-bots",
    version,
    about = "Scripted load-testing bots for Parley"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs a scenario against a server.
    Run(Box<RunArgs>),
    /// Validates a scenario file and exits.
    Check {
        /// The scenario file.
        scenario: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// The server's HTTP / WebSocket address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// The server's STOMP-over-TCP address; by default the one the server names in
    /// `GET /api/info` (asked only when a group speaks stomp-tcp). Behind a load balancer,
    /// pass the balancer's: the server names its own listener.
    #[arg(long)]
    stomp_tcp: Option<SocketAddr>,
    /// The server's HS256 secret, for groups with `auth = "token"`.
    #[arg(long)]
    jwt_secret_file: Option<PathBuf>,
    /// A personal access token (`pat_…`) every bot connects with, whatever its group's `auth`:
    /// no accounts registered, nothing minted. Every bot then acts as the token's user.
    #[arg(long, env = "PARLEY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Overrides the scenario's measured duration (e.g. `3s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Prints one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// The server's process id, to report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Local source addresses to spread connections over, e.g. `127.0.0.2-127.0.0.50`.
    #[arg(long, value_parser = parse_sources)]
    sources: Option<Sources>,
    /// Runs every group with this protocol instead of its own (raw, stomp-ws, stomp-tcp,
    /// ws-broadcast, socketio, socketio-polling): one scenario against servers that speak different protocols.
    #[arg(long, value_parser = Protocol::from_name)]
    protocol: Option<Protocol>,
    /// WebSocket path (and query) instead of the protocol's default, e.g. `/ws` for RabbitMQ
    /// Web-STOMP.
    #[arg(long)]
    ws_path: Option<String>,
    /// STOMP `login` header for every bot instead of its name (e.g. `guest` for RabbitMQ).
    #[arg(long)]
    stomp_login: Option<String>,
    /// STOMP `passcode` header for every bot instead of its token.
    #[arg(long)]
    stomp_passcode: Option<String>,
    /// STOMP `host` header instead of the server's address (RabbitMQ: the virtual host, `/`).
    #[arg(long)]
    stomp_host: Option<String>,
}

/// A list of IPv4 source addresses.
#[derive(Clone, Debug)]
struct Sources(Vec<IpAddr>);

/// Parses `A` or `A-B` (inclusive IPv4 range), or several of those separated by commas.
fn parse_sources(text: &str) -> anyhow::Result<Sources> {
    let mut all = Vec::new();
    for part in text.split(',') {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let from: Ipv4Addr = from.trim().parse().context("source address")?;
        let to: Ipv4Addr = to.trim().parse().context("source address")?;
        let (from, to) = (u32::from(from), u32::from(to));
        if from > to || to - from > 65_535 {
            bail!("source range {part:?} is empty or too large");
        }
        all.extend((from..=to).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
    }
    Ok(Sources(all))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Check { scenario } => match Scenario::load(&scenario) {
            Ok(s) => {
                println!(
                    "{}: ok ({} bots in {} groups)",
                    s.name,
                    s.bot_count(),
                    s.groups.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("parley-bots: {e:#}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Cmd::Run(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("parley-bots: starting the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(*args)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("parley-bots: {e:#}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let scenario = load_scenario(&args)?;
    let total = scenario.bot_count();
    if total > u64::from(u32::MAX) {
        bail!("at most {} bots", u32::MAX);
    }
    let run_length = scenario.ramp_up + scenario.warmup + scenario.duration + scenario.drain;
    let minter = token_minter(&args, &scenario, run_length)?;
    let targets = resolve_targets(&args, &scenario).await?;

    let progress = report::progress_line(format!("{}: starting {total} bots", scenario.name));
    let t0 = Instant::now();
    let measure_from = t0 + scenario.ramp_up + scenario.warmup;
    let measure_until = measure_from + scenario.duration;
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let (stats_tx, stats_rx) = mpsc::unbounded_channel();
    let pool = Arc::new(HistogramPool::default());
    let connected = Arc::new(AtomicI64::new(0));
    let aggregator = tokio::spawn(
        Aggregator::new(
            stats_rx,
            Arc::clone(&pool),
            Arc::clone(&connected),
            Clock {
                measure_from: measure_from.into_std(),
            },
            total,
        )
        .run(progress.clone()),
    );
    let shared = Arc::new(Shared {
        targets,
        sources: args.sources.map(|s| s.0).unwrap_or_default(),
        minter,
        token: args.token.clone(),
        connect_timeout: scenario.connect_timeout,
        connect_slots: Arc::new(Semaphore::new(scenario.connect_concurrency)),
        connected,
        phase: phase_rx,
        error_samples: AtomicUsize::new(0),
        progress,
    });

    let bots = plan_bots(&scenario)?;
    let spawner = tokio::spawn(spawn_bots(
        bots,
        Arc::clone(&shared),
        stats_tx,
        pool,
        t0,
        scenario.ramp_up,
    ));

    sleep_until(measure_from).await;
    let cpu_from = (
        procfs::cpu_time(None),
        args.server_pid.and_then(|p| procfs::cpu_time(Some(p))),
    );
    sleep_until(measure_until).await;
    let _ = phase_tx.send(Phase::Drain);
    tokio::time::sleep(scenario.drain).await;
    let cpu_until = (
        procfs::cpu_time(None),
        args.server_pid.and_then(|p| procfs::cpu_time(Some(p))),
    );
    let server_memory = args.server_pid.and_then(procfs::memory_kib);
    let _ = phase_tx.send(Phase::Stop);

    let mut running = spawner.await.context("the bot spawner panicked")?;
    let all_stopped = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, all_stopped).await.is_err() {
        eprintln!("parley-bots: some bots did not hang up within {STOP_GRACE:?}");
    }
    drop(shared);
    let totals = aggregator.await.context("the aggregator panicked")?;

    let cpu = |from: Option<Duration>, until: Option<Duration>| {
        Some(round3(until?.saturating_sub(from?).as_secs_f64()))
    };
    let usage = Usage {
        client_cpu_s: cpu(cpu_from.0, cpu_until.0),
        server_cpu_s: cpu(cpu_from.1, cpu_until.1),
        server_memory,
    };
    let report = Report::new(&scenario, &totals, usage);
    report.print(args.json)?;
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SLO_MISSED)
    })
}

/// What signs the bots' tokens, when a group authenticates with `auth = "token"`.
fn token_minter(
    args: &RunArgs,
    scenario: &Scenario,
    run_length: Duration,
) -> anyhow::Result<Option<auth::TokenMinter>> {
    if args.token.is_some() || !scenario.groups.iter().any(|g| g.auth == AuthMode::Token) {
        return Ok(None);
    }
    let path = args
        .jwt_secret_file
        .as_ref()
        .context("a group has auth = \"token\": pass --jwt-secret-file")?;
    let valid_for = run_length + Duration::from_secs(3600);
    Ok(Some(auth::TokenMinter::from_file(path, valid_for)?))
}

/// The scenario with the command line's overrides (duration, protocol) applied.
fn load_scenario(args: &RunArgs) -> anyhow::Result<Scenario> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(d) = args.duration {
        scenario.duration = d;
    }
    if let Some(protocol) = args.protocol {
        for g in &mut scenario.groups {
            if g.dm_rate > 0.0 && !protocol.has_direct_messages() {
                bail!(
                    "group {:?} sends direct messages, which {protocol:?} cannot",
                    g.name
                );
            }
            if g.changes() && !protocol.has_direct_messages() {
                bail!(
                    "group {:?} edits or reacts, which {protocol:?} cannot",
                    g.name
                );
            }
            g.protocol = protocol;
        }
    }
    Ok(scenario)
}

/// Where the bots connect. Without `--stomp-tcp`, a scenario speaking STOMP over TCP asks the
/// server where that listener is, so a server on other ports needs no second address.
async fn resolve_targets(args: &RunArgs, scenario: &Scenario) -> anyhow::Result<Targets> {
    let speaks_stomp_tcp = scenario
        .groups
        .iter()
        .any(|g| g.protocol == Protocol::StompTcp);
    let stomp_tcp = match args.stomp_tcp {
        Some(address) => Some(address),
        None if speaks_stomp_tcp => {
            let address = http::stomp_tcp_address(args.http)
                .await
                .context("a group speaks stomp-tcp and --stomp-tcp is not given")?;
            eprintln!("parley-bots: STOMP over TCP at {address} (from /api/info)");
            Some(address)
        }
        None => None,
    };
    Ok(Targets {
        ws_path: args.ws_path.clone(),
        stomp_login: args.stomp_login.clone(),
        stomp_passcode: args.stomp_passcode.clone(),
        stomp_host: args.stomp_host.clone(),
        ..Targets::new(args.http, stomp_tcp)
    })
}

/// Every bot of the scenario, in start order.
fn plan_bots(scenario: &Scenario) -> anyhow::Result<Vec<Bot>> {
    let mut bots = Vec::new();
    for g in &scenario.groups {
        let pattern = g.room_pattern()?;
        let behaviour = Arc::new(Behaviour {
            protocol: g.protocol,
            auth: g.auth,
            rate: g.rate,
            jitter: g.jitter,
            size: g.size,
            in_flight: g.in_flight,
            dm_rate: g.dm_rate,
            edit_rate: g.edit_rate,
            react_rate: g.react_rate,
            churn: g.churn,
            reconnect: g.reconnect,
            slow: g.slow,
        });
        for n in 0..g.count {
            bots.push(Bot {
                // Checked against u32::MAX by the caller.
                id: u32::try_from(bots.len()).context("too many bots")?,
                name: g.bot_name(n),
                room: pattern.expand(n),
                dm_to: g.bot_name((n + 1) % g.count),
                behaviour: Arc::clone(&behaviour),
            });
        }
    }
    Ok(bots)
}

/// Starts the bots evenly over `ramp_up`, each once a connection slot is free.
async fn spawn_bots(
    bots: Vec<Bot>,
    shared: Arc<Shared>,
    stats_tx: mpsc::UnboundedSender<stats::Delta>,
    pool: Arc<HistogramPool>,
    t0: Instant,
    ramp_up: Duration,
) -> JoinSet<()> {
    let mut running = JoinSet::new();
    let total = bots.len().max(1) as f64;
    for (i, bot) in bots.into_iter().enumerate() {
        sleep_until(t0 + ramp_up.mul_f64(i as f64 / total)).await;
        let Ok(permit) = Arc::clone(&shared.connect_slots).acquire_owned().await else {
            break;
        };
        if *shared.phase.borrow() != Phase::Run {
            break;
        }
        let recorder = Recorder::new(stats_tx.clone(), Arc::clone(&pool));
        running.spawn(bot.run(Arc::clone(&shared), recorder, permit));
        // Reap finished bots as we go, so a long churn run does not pile up results.
        while running.try_join_next().is_some() {}
    }
    running
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges() {
        let s = parse_sources("127.0.0.2-127.0.0.4").unwrap().0;
        assert_eq!(s.len(), 3);
        assert_eq!(s[2], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
        let s = parse_sources("127.0.0.1,127.0.1.1-127.0.1.2").unwrap().0;
        assert_eq!(s.len(), 3);
        assert!(parse_sources("127.0.0.5-127.0.0.2").is_err());
        assert!(parse_sources("nope").is_err());
    }

    #[test]
    fn bots_are_planned_from_groups() {
        let s = Scenario::parse(
            r#"
            name = "p"
            duration = "1s"
            [[group]]
            name = "a"
            count = 3
            protocol = "raw"
            room = "r-{n % 2}"
            [[group]]
            name = "b"
            count = 1
            protocol = "stomp-tcp"
            room = "solo"
            "#,
        )
        .unwrap();
        let bots = plan_bots(&s).unwrap();
        let summary: Vec<_> = bots
            .iter()
            .map(|b| (b.id, b.name.as_str(), b.room.as_str(), b.dm_to.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (0, "a-0", "r-0", "a-1"),
                (1, "a-1", "r-1", "a-2"),
                (2, "a-2", "r-0", "a-0"),
                (3, "b-0", "solo", "b-0"),
            ]
        );
    }
}
