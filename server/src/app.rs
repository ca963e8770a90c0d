//! Wiring: opens storage, starts the journal, auth, the cluster bus and the hub, builds the
//! endpoints and the listeners from the settings, and serves until a signal ends it.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use parley_stomp::broker::BrokerLimits;
use parley_stomp::budget::MemoryBudget;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::acl::Acl;
use crate::auth::{Auth, Bans, Keys};
use crate::bus::Bus;
use crate::config::Settings;
use crate::endpoints::socketio::SocketIoSettings;
use crate::endpoints::sockjs::SockJsSettings;
use crate::endpoints::stomp::{Stomp, StompSettings};
use crate::health::{self, Health};
use crate::http::tls::Tls;
use crate::http::{scrape, HttpSettings, Parts, Server};
use crate::hub::{ChatSettings, EditLimits, Hub, HubSettings, MAX_REMEMBERED, REMEMBERED_MS};
use crate::journal::{Journal, JournalSettings};
use crate::store::{self, PgStore, SqliteStore, Store};

/// The store the settings name: PostgreSQL with `--database`, else SQLite in `--data`.
pub fn open_store(settings: &Settings) -> anyhow::Result<Box<dyn Store>> {
    Ok(match &settings.database {
        Some(url) => Box::new(PgStore::connect(url)?),
        None => Box::new(SqliteStore::open(&settings.data)?),
    })
}

/// Runs the server until SIGINT or SIGTERM (then drains and shuts down).
pub async fn serve(mut settings: Settings) -> anyhow::Result<()> {
    // Storage and keys first: a bad key or database stops the start before anyone connects.
    if settings.cluster.is_some() && settings.database.is_none() {
        anyhow::bail!("--cluster needs --database postgres://…: the nodes share one store");
    }
    check_file_limit(settings.max_connections);
    // The recorder before anything that takes metric handles.
    let metrics = match settings.operations.metrics {
        Some(addr) => {
            let handle = crate::metrics::install().context("installing the metrics recorder")?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics {addr}"))?;
            Some((listener, handle))
        }
        None => None,
    };
    let store: Arc<dyn Store> = open_store(&settings)?.into();
    let bus = match &settings.cluster {
        Some(url) => Some(Bus::connect(url, settings.presence_ttl).await?),
        None => None,
    };
    let keys = Keys::load(&settings.auth.keys)?;
    let tls = match &settings.tls {
        Some(t) => Some(Tls::new(t, settings.handshake_timeout).context("TLS certificate")?),
        None => None,
    };
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
    let stomp_tls_listener = match settings.tls.as_ref().and_then(|t| t.stomp_tls) {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!("binding STOMP over TLS {addr} (--stomp-tls off disables it)")
        })?),
        None => None,
    };
    // Handlers go in before anyone learns the port: a signal arriving earlier would otherwise
    // get the default action and kill the process instead of shutting it down.
    let signals = ShutdownSignals::install()?;
    survive_file_size_limit()?;
    reload_on_hangup(tls.clone())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(%addr, echo = settings.echo, scheme, "listening");
    // A stable line on stdout so scripts and tests learn the port when binding port 0.
    println!("parley listening on {scheme}://{addr}");
    if let Some(l) = &stomp_listener {
        let stomp_addr = l.local_addr()?;
        // Port 0 picks a free port: /api/info tells clients the address actually bound.
        settings.stomp_tcp = Some(stomp_addr);
        info!(addr = %stomp_addr, "STOMP over TCP listening");
        println!("parley stomp listening on tcp://{stomp_addr}");
    }
    if let (Some(l), Some(t)) = (&stomp_tls_listener, settings.tls.as_mut()) {
        let tls_addr = l.local_addr()?;
        t.stomp_tls = Some(tls_addr);
        info!(addr = %tls_addr, "STOMP over TLS listening");
        println!("parley stomp-tls listening on tcp://{tls_addr}");
    }
    if let Some((l, _)) = &metrics {
        let metrics_addr = l.local_addr()?;
        info!(addr = %metrics_addr, "metrics listening");
        println!("parley metrics listening on http://{metrics_addr}/metrics");
    }
    std::io::stdout().flush()?;

    let draining = CancellationToken::new();
    let shutdown = CancellationToken::new();
    tokio::spawn(signals.drain_on_signal(draining.clone(), settings.drain_delay, shutdown.clone()));
    let mut parts = parts(&settings, store, bus, keys, draining, shutdown.clone()).await?;
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(shutdown.clone()));
    }
    parts.tls = tls;
    let hub = parts.hub.clone();
    let server = Server::new(http_settings(&settings), parts);
    if let Some((listener, handle)) = metrics {
        tokio::spawn(scrape::serve(listener, handle, server.clone(), shutdown));
    }
    server
        .run(listener, stomp_listener, stomp_tls_listener)
        .await;
    // The journal's thread is not joined: messages delivered in its last commit interval
    // would be lost with the process (their senders were not yet acknowledged, but their
    // subscribers saw them). Wait for them, within reason.
    match tokio::time::timeout(STORE_ON_EXIT, hub.durable()).await {
        Ok(true) => {}
        Ok(false) => warn!("messages delivered last could not be stored before exit"),
        Err(_) => warn!("storage took too long to finish before exit"),
    }
    info!("shut down");
    Ok(())
}

/// What the listeners serve, over `store`: auth, the journal and the hub, and the endpoints.
/// `draining` and `shutdown` are the two steps of a shutdown (see `http::Server`).
pub async fn parts(
    settings: &Settings,
    store: Arc<dyn Store>,
    bus: Option<Arc<Bus>>,
    keys: Keys,
    draining: CancellationToken,
    shutdown: CancellationToken,
) -> anyhow::Result<Parts> {
    let auth = Auth::new(settings.auth.clone(), keys, store.clone())?;
    tokio::spawn(auth.clone().purge_expired());
    tokio::spawn(auth.clone().sweep_revoked_tokens());
    let limits = settings.rooms.clone();
    let since = crate::clock::now_ms().saturating_sub(REMEMBERED_MS);
    let (acl, last_ids, sent) = store::run(&store, move |s| {
        let sent = s.recent_client_ids(since, MAX_REMEMBERED)?;
        Ok((Acl::load(s, limits)?, s.last_ids()?, sent))
    })
    .await?;
    let health = Health::new(bus.is_some());
    let bans = auth.bans().clone();
    let (hub, journal_failing) =
        start_hub(settings, store.clone(), acl, last_ids, bus.clone(), bans)?;
    health::start_probes(&health, store, journal_failing, bus);
    // Before any client connects: a retry after a restart finds its first send, a banned user
    // is refused and a closed room stays closed.
    hub.remember_sent(sent);
    hub.reload_admin().await?;
    hub.warn_unclaimed_operators().await?;
    hub.start_admin_upkeep(settings.admin.audit_retention);
    Ok(Parts {
        stomp: Stomp::new(
            hub.clone(),
            auth.clone(),
            stomp_settings(settings),
            shutdown.clone(),
        ),
        chat: Arc::new(ChatSettings {
            max_body: settings.max_body,
            rate_limit: settings.rate_limit,
        }),
        hub,
        auth,
        health,
        draining,
        shutdown,
        tls: None,
    })
}

/// The journal and the hub over `store`, numbering rooms on from `last_ids`; with the
/// journal's failing flag.
fn start_hub(
    settings: &Settings,
    store: Arc<dyn Store>,
    acl: Arc<Acl>,
    last_ids: HashMap<String, u64>,
    bus: Option<Arc<Bus>>,
    bans: Arc<Bans>,
) -> anyhow::Result<(Arc<Hub>, Arc<AtomicBool>)> {
    let journal = Journal::start(store.clone(), journal_settings(settings));
    let failing = journal.failing_flag();
    let limits = &settings.limits;
    let mut broker = BrokerLimits::default();
    broker.max_queue_bytes = limits.queue_max_bytes;
    broker.max_queued_bytes = limits.queues_max_bytes;
    broker.max_queues_per_user = limits.queues_per_user;
    broker.queue_ttl_ms = limits.queue_ttl.as_millis().try_into().unwrap_or(u64::MAX);
    let hub_settings = HubSettings {
        broker,
        outbox_capacity: settings.stomp_outbox,
        outbox_bytes: limits.outbox_bytes,
        budget: MemoryBudget::new(limits.memory_budget),
        edits: EditLimits {
            window_ms: limits
                .edit_window
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            per_second: limits.edit_rate,
            max_body: settings.max_body,
        },
        bans,
        operators: settings.admin.operators.clone(),
    };
    let hub = Hub::new(hub_settings, store, journal, acl, bus, last_ids);
    Ok((hub, failing))
}

fn journal_settings(settings: &Settings) -> JournalSettings {
    JournalSettings {
        report_every: settings.storage_log_interval,
        ..JournalSettings::default()
    }
}

fn stomp_settings(settings: &Settings) -> StompSettings {
    StompSettings {
        limits: Arc::new(parley_stomp::Limits::default().with_max_body(settings.stomp_max_body)),
        heart_beat: settings.stomp_heart_beat,
        max_room_body: settings.max_body,
        rate_limit: settings.rate_limit,
        connect_timeout: settings.handshake_timeout,
        idle_timeout: settings.stomp_idle_timeout,
        write_timeout: settings.write_timeout,
        max_transaction_bytes: settings.limits.stomp_transaction_bytes,
        guest_queues: settings.limits.guest_queues,
    }
}

/// The listeners' settings.
pub fn http_settings(settings: &Settings) -> HttpSettings {
    HttpSettings {
        echo: settings.echo,
        echo_max_message: settings.echo_max_message,
        deflate: settings.deflate,
        handshake_timeout: settings.handshake_timeout,
        idle_timeout: settings.idle_timeout,
        write_timeout: settings.write_timeout,
        shutdown_grace: settings.shutdown_grace,
        max_connections: settings.max_connections,
        max_body: settings.max_body,
        stomp_max_body: settings.stomp_max_body,
        stomp_tcp: settings.stomp_tcp,
        stomp_tls: settings.tls.as_ref().and_then(|t| t.stomp_tls),
        max_connections_per_ip: settings.max_connections_per_ip,
        trusted: settings.trusted.clone(),
        body_timeout: settings.body_timeout,
        sse_heartbeat: settings.transports.sse_heartbeat,
        public_stats: settings.public_stats,
        sockjs: sockjs_settings(settings),
        socketio: SocketIoSettings {
            ping_interval: settings.transports.socketio_ping_interval,
            ping_timeout: settings.transports.socketio_ping_timeout,
            max_payload: settings.transports.socketio_max_payload,
            max_sessions: settings.transports.socketio_max_sessions,
            max_sessions_per_ip: settings.max_connections_per_ip,
            max_outbound: settings.limits.outbox_bytes,
        },
    }
}

/// SockJS's bounds: a session holds what a WebSocket session may (its outbox), and as much
/// unread input as one largest message.
fn sockjs_settings(settings: &Settings) -> SockJsSettings {
    let t = &settings.transports;
    SockJsSettings {
        heartbeat: t.sockjs_heartbeat,
        disconnect_delay: t.sockjs_disconnect_delay,
        response_limit: t.sockjs_response_limit,
        max_sessions: t.sockjs_max_sessions,
        max_sessions_per_ip: settings.max_connections_per_ip,
        legacy: t.sockjs_legacy,
        write_timeout: settings.write_timeout,
        max_inbound: 2 * settings.stomp_max_body.max(settings.max_body) + (64 << 10),
        max_outbound: settings.limits.outbox_bytes,
    }
}

/// File descriptors the process needs besides its connections (listeners, storage, Redis,
/// the runtime, logs).
const RESERVED_FILES: u64 = 64;

/// How long the last commit may take once the connections are closed, before the process
/// exits anyway.
const STORE_ON_EXIT: Duration = Duration::from_secs(10);

/// Raises the open-file soft limit to the hard one, and warns when `--max-connections` does
/// not fit under it: past it accept fails (EMFILE) before the connection cap refuses anyone.
fn check_file_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we own and pass by pointer; nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "getrlimit(RLIMIT_NOFILE)");
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard
            // one needs no privilege.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                info!(
                    from = limit.rlim_cur,
                    to = raised.rlim_cur,
                    "raised the open-file limit"
                );
                limit = raised;
            }
        }
        // rlim_t is u64 on Linux and the BSDs.
        #[allow(clippy::useless_conversion)]
        let usable = u64::from(limit.rlim_cur).saturating_sub(RESERVED_FILES);
        if max_connections as u64 > usable {
            tracing::warn!(
                max_connections,
                file_limit = limit.rlim_cur,
                "--max-connections exceeds the open-file limit: connections past about {usable} \
                 fail to be accepted; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower \
                 --max-connections"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}

/// A file-size limit (`ulimit -f`) reached by a storage write must fail that write (EFBIG: a
/// storage failure the journal rides out), not kill the process, SIGXFSZ's default action. A
/// tokio handler, once registered, replaces that action for the life of the process.
fn survive_file_size_limit() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        drop(signal(SignalKind::from_raw(libc::SIGXFSZ)).context("installing SIGXFSZ handler")?);
    }
    Ok(())
}

/// SIGHUP reloads the TLS certificate. The handler goes in whether or not TLS is on: the
/// signal's default action would kill the process.
fn reload_on_hangup(tls: Option<Arc<Tls>>) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match &tls {
                    Some(tls) => {
                        tls.reload("SIGHUP").await;
                    }
                    None => info!("SIGHUP: no TLS certificate to reload"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = tls;
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
