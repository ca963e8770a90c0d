//! `parley`: the Parley chat server binary.

mod acl;
mod api;
mod auth;
mod cluster;
mod config;
mod http;
mod journal;
mod mailbox;
mod raw;
mod stomp;
mod store;
mod web;
mod ws;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::EnvFilter;

use crate::config::ServeArgs;
use crate::http::Server;

/// Parley: a realtime chat server speaking WebSocket and STOMP.
#[derive(Parser)]
#[command(name = "parley", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage accounts (on the server's data directory).
    #[command(subcommand)]
    User(UserCommand),
    /// Print an access token for NAME, signed with the key `parley serve` uses (same options).
    Token {
        /// The user name the token is for.
        name: String,
        /// How long the token is valid.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; the password is read from the terminal, or from stdin.
    Add {
        /// The user name.
        name: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Change an account's password; read from the terminal, or from stdin.
    Passwd {
        /// The user name.
        name: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve(args) => {
            let settings = args.resolve()?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?
                .block_on(serve(settings))
        }
        Command::Token { name, ttl, serve } => {
            let settings = serve.resolve()?;
            if parley_stomp::destination::valid_user(&name).is_none() {
                anyhow::bail!("{name:?} is not a user name: 1-32 of letters, digits, _ - .");
            }
            let token = auth::Keys::load(&settings.auth.keys)?.mint(&name, ttl)?;
            println!("{token}");
            Ok(())
        }
        Command::User(UserCommand::Add { name, serve }) => {
            let settings = serve.resolve()?;
            let store = store::open(&settings)?;
            let password = read_password(true)?;
            auth::check_new_account(&name, &password).map_err(anyhow::Error::msg)?;
            let hash = auth::password::hash_now(&password).map_err(anyhow::Error::msg)?;
            if !store.create_user(&name, &hash)? {
                anyhow::bail!("user {name:?} already exists");
            }
            eprintln!("created user {name}");
            Ok(())
        }
        Command::User(UserCommand::Passwd { name, serve }) => {
            let settings = serve.resolve()?;
            let store = store::open(&settings)?;
            let password = read_password(true)?;
            auth::check_new_account(&name, &password).map_err(anyhow::Error::msg)?;
            let hash = auth::password::hash_now(&password).map_err(anyhow::Error::msg)?;
            if !store.set_password(&name, &hash)? {
                anyhow::bail!("no user {name:?}");
            }
            eprintln!("password of {name} changed");
            Ok(())
        }
    }
}

/// A new password: typed twice without echo on a terminal, else the first line of stdin.
fn read_password(confirm: bool) -> anyhow::Result<String> {
    use std::io::{BufRead as _, IsTerminal as _};
    if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password("Password: ")?;
        if confirm && rpassword::prompt_password("Again: ")? != password {
            anyhow::bail!("the passwords differ");
        }
        Ok(password)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    }
}

async fn serve(settings: config::Settings) -> anyhow::Result<()> {
    // Storage and keys first: a bad key or database stops the start before anyone connects.
    if settings.cluster.is_some() && settings.database.is_none() {
        anyhow::bail!("--cluster needs --database postgres://…: the nodes share one store");
    }
    let store: Arc<dyn store::Store> = store::open(&settings)?.into();
    let cluster = match &settings.cluster {
        Some(url) => Some(cluster::Cluster::connect(url, settings.presence_ttl).await?),
        None => None,
    };
    let keys = auth::Keys::load(&settings.auth.keys)?;
    let listener = TcpListener::bind(settings.http)
        .await
        .with_context(|| format!("binding {}", settings.http))?;
    let addr = listener.local_addr()?;
    let stomp_listener = match settings.stomp_tcp {
        Some(stomp_addr) => Some(TcpListener::bind(stomp_addr).await.with_context(|| {
            format!("binding STOMP TCP {stomp_addr} (--stomp-tcp off disables it)")
        })?),
        None => None,
    };
    // Handlers go in before anyone learns the port: a signal arriving earlier would otherwise
    // get the default action and kill the process instead of shutting it down.
    let signals = ShutdownSignals::install()?;
    info!(%addr, echo = settings.echo, "listening");
    // A stable line on stdout so scripts and tests learn the port when binding port 0.
    println!("parley listening on http://{addr}");
    if let Some(l) = &stomp_listener {
        let stomp_addr = l.local_addr()?;
        info!(addr = %stomp_addr, "STOMP over TCP listening");
        println!("parley stomp listening on tcp://{stomp_addr}");
    }
    std::io::stdout().flush()?;

    let mut settings = settings;
    // Port 0 picks a free port: /api/info tells clients the address actually bound.
    if let Some(l) = &stomp_listener {
        settings.stomp_tcp = Some(l.local_addr()?);
    }
    let draining = CancellationToken::new();
    let shutdown = CancellationToken::new();
    tokio::spawn(signals.drain_on_signal(draining.clone(), settings.drain_delay, shutdown.clone()));
    let auth = auth::Auth::new(settings.auth.clone(), keys, store.clone());
    tokio::spawn(auth.clone().purge_expired());
    Server::new(settings, store, auth, cluster, draining, shutdown)?
        .run(listener, stomp_listener)
        .await;
    info!("shut down");
    Ok(())
}

/// SIGINT and SIGTERM, registered with the OS.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
                terminate: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// On the first signal cancels `draining`, then `shutdown` after `delay` (or at once on a
    /// second signal).
    async fn drain_on_signal(
        mut self,
        draining: CancellationToken,
        delay: Duration,
        shutdown: CancellationToken,
    ) {
        self.next().await;
        info!(?delay, "draining");
        draining.cancel();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.next() => {}
        }
        info!("shutting down");
        shutdown.cancel();
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
