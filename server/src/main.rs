//! `parley`: the Parley chat server binary.

mod api;
mod config;
mod http;
mod journal;
mod raw;
mod stomp;
mod store;
mod web;
mod ws;

use std::io::Write as _;
use std::sync::Arc;

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
    }
}

async fn serve(settings: config::Settings) -> anyhow::Result<()> {
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

    let shutdown = CancellationToken::new();
    tokio::spawn(signals.cancel_on_signal(shutdown.clone()));
    let store: Arc<dyn store::Store> = Arc::new(store::SqliteStore::open(&settings.data)?);
    Server::new(settings, store, shutdown)?
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

    /// Cancels `shutdown` on the first signal.
    async fn cancel_on_signal(mut self, shutdown: CancellationToken) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        info!("shutting down");
        shutdown.cancel();
    }
}
