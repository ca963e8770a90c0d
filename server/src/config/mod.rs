//! `parley serve` settings: flags, their `PARLEY_*` environment twins, and an optional TOML file.
//!
//! Precedence: flag > environment variable > config file > built-in default. Every setting has
//! a default, so `parley serve` with nothing else works.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;

use crate::acl::RoomLimits;
use crate::auth::{AuthSettings, JwtAlgorithm, KeySettings};
use crate::http::proxy::{Cidr, ForwardedHeader, TrustedProxies};

/// An idle SSE feed's heartbeat: under the read timeouts proxies commonly use (nginx: 60 s).
mod admin;
mod identity;
mod limits;
mod operations;
mod tls;
mod transports;
pub use admin::{AdminArgs, AdminSettings};
pub use identity::IdentityArgs;
pub use limits::{LimitArgs, Limits};
pub use operations::{LogFormat, Operations, OperationsArgs};
pub use tls::TlsArgs;
pub use transports::{TransportArgs, Transports};

/// Flags of `parley serve`; each may also be set in the config file under the same name.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML config file; flags and environment variables override it.
    #[arg(long, env = "PARLEY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Data directory: the SQLite database lives here [default: ./parley-data].
    #[arg(long, env = "PARLEY_DATA")]
    pub data: Option<PathBuf>,

    /// PostgreSQL for rooms, messages and accounts (`postgres://user@host:port/db`), shared
    /// by every node of a cluster [default: SQLite in the data directory].
    #[arg(long, env = "PARLEY_DATABASE")]
    pub database: Option<String>,

    /// Redis for a cluster of nodes (`redis://host:port`): rooms, presence and direct
    /// messages reach clients on every node; needs --database [default: one node alone].
    #[arg(long, env = "PARLEY_CLUSTER")]
    pub cluster: Option<String>,

    /// Cluster mode: a node's presence entries in Redis expire this long after their last
    /// refresh (every quarter of it), so a crashed node's users leave within about this long
    /// [default: 20s].
    #[arg(long, env = "PARLEY_PRESENCE_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub presence_ttl: Option<Duration>,

    /// Address for HTTP and WebSocket [default: 127.0.0.1:8080].
    #[arg(long, env = "PARLEY_HTTP")]
    pub http: Option<SocketAddr>,

    /// Serve the /echo WebSocket endpoint (conformance testing) [default: false].
    #[arg(long, env = "PARLEY_ECHO", num_args = 0..=1, default_missing_value = "true")]
    pub echo: Option<bool>,

    /// Largest message /echo accepts, in bytes [default: 16777216].
    #[arg(long, env = "PARLEY_ECHO_MAX_MESSAGE")]
    pub echo_max_message: Option<usize>,

    /// Time a new connection has to send a complete HTTP request head [default: 10s].
    #[arg(long, env = "PARLEY_HANDSHAKE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub handshake_timeout: Option<Duration>,

    /// A WebSocket silent this long is pinged at half of it and closed at all of it [default: 60s].
    #[arg(long, env = "PARLEY_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,

    /// A write that makes no progress for this long drops the connection [default: 30s].
    #[arg(long, env = "PARLEY_WRITE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub write_timeout: Option<Duration>,

    /// On SIGINT/SIGTERM, how long /readyz answers 503 (new WebSocket upgrades refused) while
    /// the node keeps serving, so a load balancer's health check takes it out first [default: 0s].
    #[arg(long, env = "PARLEY_DRAIN_DELAY", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub drain_delay: Option<Duration>,

    /// On SIGINT/SIGTERM, how long WebSockets get to answer the 1001 close [default: 10s].
    #[arg(long, env = "PARLEY_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,

    /// Most simultaneous TCP connections; more are refused [default: 100000].
    #[arg(long, env = "PARLEY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most simultaneous connections from one client address (IPv6: one /64); more are
    /// refused (HTTP 429, STOMP ERROR); 0 disables [default: 1000].
    #[arg(long, env = "PARLEY_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,

    /// A proxy or balancer whose word on client addresses is taken (`X-Forwarded-For` or
    /// `Forwarded` on HTTP, the PROXY protocol on STOMP TCP): an address or CIDR network,
    /// repeatable or comma-separated [default: none].
    #[arg(long, env = "PARLEY_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Option<Vec<String>>,

    /// The header trusted proxies name clients in: `x-forwarded-for` or `forwarded` (RFC 7239)
    /// [default: x-forwarded-for].
    #[arg(long, env = "PARLEY_FORWARDED_HEADER", value_enum)]
    pub forwarded_header: Option<ForwardedHeader>,

    /// A request body not complete this long after its head gets 408 [default: 30s].
    #[arg(long, env = "PARLEY_BODY_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub body_timeout: Option<Duration>,

    /// Answer `GET /stats` (this node's counters) to anyone who can reach the port; without
    /// it /stats is 404 [default: false].
    #[arg(long, env = "PARLEY_PUBLIC_STATS", num_args = 0..=1, default_missing_value = "true")]
    pub public_stats: Option<bool>,

    /// Origins besides the server's own allowed to open WebSockets and use the session cookie,
    /// repeatable or comma-separated; `*` allows any [default: none].
    #[arg(
        long,
        alias = "allowed-origins",
        env = "PARLEY_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    #[serde(alias = "allowed-origins")]
    pub allowed_origin: Option<Vec<String>>,

    /// Allow connections without an account (name-only guests) [default: false].
    #[arg(long, env = "PARLEY_ALLOW_GUESTS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_guests: Option<bool>,

    /// Let guests create public rooms by joining them, as accounts do, with no quota: for load
    /// tests and trusted networks [default: false].
    #[arg(long, env = "PARLEY_GUESTS_CREATE_ROOMS", num_args = 0..=1, default_missing_value = "true")]
    pub guests_create_rooms: Option<bool>,

    /// Rooms one account may create (REST, joins, STOMP SUBSCRIBE or SEND); 0: no limit
    /// [default: 50].
    #[arg(long, env = "PARLEY_MAX_ROOMS_PER_ACCOUNT")]
    pub max_rooms_per_account: Option<usize>,

    /// Account registration: `open` or `closed` [default: open].
    #[arg(long, env = "PARLEY_REGISTRATION")]
    pub registration: Option<String>,

    /// JWT signing algorithm: HS256, RS256 or ES256 [default: HS256].
    #[arg(long, env = "PARLEY_JWT_ALGORITHM", value_enum)]
    pub jwt_algorithm: Option<JwtAlgorithm>,

    /// HS256 secret file shared by the nodes of a deployment [default: DATA/jwt-secret, generated;
    /// `PARLEY_JWT_SECRET` gives the secret itself].
    #[arg(long, env = "PARLEY_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// RS256/ES256 private key, PEM.
    #[arg(long, env = "PARLEY_JWT_PRIVATE_KEY")]
    pub jwt_private_key: Option<PathBuf>,

    /// RS256/ES256 public key, PEM.
    #[arg(long, env = "PARLEY_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// The `iss` of access tokens [default: parley].
    #[arg(long, env = "PARLEY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The `aud` of access tokens [default: parley].
    #[arg(long, env = "PARLEY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Access token lifetime [default: 15m].
    #[arg(long, env = "PARLEY_ACCESS_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub access_ttl: Option<Duration>,

    /// Refresh token lifetime [default: 14days].
    #[arg(long, env = "PARLEY_REFRESH_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub refresh_ttl: Option<Duration>,

    /// Failed logins for one username from one client IP before further attempts from there
    /// get 429, for 1 min, doubling with each further failure up to 15 min [default: 5].
    #[arg(long, env = "PARLEY_LOGIN_FAILURES_PER_USER")]
    pub login_failures_per_user: Option<u32>,

    /// Failed logins from one client IP (any usernames) before its attempts get 429, with the
    /// same growing delays [default: 20].
    #[arg(long, env = "PARLEY_LOGIN_FAILURES_PER_IP")]
    pub login_failures_per_ip: Option<u32>,

    /// Registration requests per client IP per minute before further ones get 429
    /// [default: 20].
    #[arg(long, env = "PARLEY_REGISTRATIONS_PER_IP")]
    pub registrations_per_ip: Option<u32>,

    /// Largest chat message body (/ws, STOMP SEND to rooms), in bytes [default: 65536].
    #[arg(long, env = "PARLEY_MAX_BODY")]
    pub max_body: Option<usize>,

    /// Messages per second one connection may send (bursts of twice that); 0 disables
    /// [default: 1000].
    #[arg(long, env = "PARLEY_RATE_LIMIT")]
    pub rate_limit: Option<u32>,

    /// STOMP over plain TCP: an address, or `off` [default: 127.0.0.1:61613].
    #[arg(long, env = "PARLEY_STOMP_TCP")]
    pub stomp_tcp: Option<String>,

    /// Largest STOMP body, in bytes [default: 2097152].
    #[arg(long, env = "PARLEY_STOMP_MAX_BODY")]
    pub stomp_max_body: Option<usize>,

    /// STOMP heart-beat the server offers, `SEND_MS,RECEIVE_MS` [default: 10000,10000].
    #[arg(long, env = "PARLEY_STOMP_HEART_BEAT")]
    pub stomp_heart_beat: Option<String>,

    /// A connected STOMP session that sends nothing (not even a heart-beat) this long is closed,
    /// whatever heart-beat it negotiated; `0s` turns the limit off [default: 5m].
    #[arg(long, env = "PARLEY_STOMP_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub stomp_idle_timeout: Option<Duration>,

    /// Deliveries a STOMP session may have waiting before it is closed as a slow consumer
    /// [default: 1024].
    #[arg(long, env = "PARLEY_STOMP_OUTBOX")]
    pub stomp_outbox: Option<usize>,

    /// While storage fails, how often the log says so again (with the number of failed
    /// attempts); the start and the recovery are logged once each [default: 1m].
    #[arg(long, env = "PARLEY_STORAGE_LOG_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub storage_log_interval: Option<Duration>,

    /// Accept permessage-deflate offers on /echo, /ws and /stomp [default: true].
    #[arg(long, env = "PARLEY_DEFLATE", num_args = 0..=1, default_missing_value = "true")]
    pub deflate: Option<bool>,

    /// Buffer limits (the config file's `[limits]` table).
    #[command(flatten)]
    #[serde(default)]
    pub limits: LimitArgs,

    /// Fallback transports (the config file's `[transports]` table).
    #[command(flatten)]
    #[serde(default)]
    pub transports: TransportArgs,

    /// Signing in through other sites (the config file's `[identity]` table).
    #[command(flatten)]
    #[serde(default)]
    pub identity: IdentityArgs,

    /// Metrics and logs (the config file's `[operations]` table).
    #[command(flatten)]
    #[serde(default)]
    pub operations: OperationsArgs,

    /// Operating the server (the config file's `[admin]` table).
    #[command(flatten)]
    #[serde(default)]
    pub admin: AdminArgs,

    /// TLS (the config file's `[tls]` table).
    #[command(flatten)]
    #[serde(default)]
    pub tls: TlsArgs,
}

/// Resolved settings: every field set.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Data directory.
    pub data: PathBuf,
    /// PostgreSQL URL, if storage is there instead of SQLite.
    pub database: Option<String>,
    /// Redis URL of the cluster, if this node is one of several.
    pub cluster: Option<String>,
    /// Expiry of this node's presence entries in the cluster.
    pub presence_ttl: Duration,
    /// Listening address.
    pub http: SocketAddr,
    /// /echo enabled.
    pub echo: bool,
    /// /echo message limit.
    pub echo_max_message: usize,
    /// Deadline for a complete request head.
    pub handshake_timeout: Duration,
    /// WebSocket idle timeout.
    pub idle_timeout: Duration,
    /// Per-write progress timeout.
    pub write_timeout: Duration,
    /// Time between a shutdown signal and closing connections, /readyz answering 503.
    pub drain_delay: Duration,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Connection cap.
    pub max_connections: usize,
    /// Connection cap per client address (0: none).
    pub max_connections_per_ip: usize,
    /// Proxies trusted to name clients.
    pub trusted: TrustedProxies,
    /// Deadline for a whole request body.
    pub body_timeout: Duration,
    /// `/stats` served.
    pub public_stats: bool,
    /// Accounts, tokens, guests, origins.
    pub auth: AuthSettings,
    /// Who may create rooms.
    pub rooms: RoomLimits,
    /// permessage-deflate accepted.
    pub deflate: bool,
    /// Chat body limit on /ws.
    pub max_body: usize,
    /// Messages per second per /ws connection (0: unlimited).
    pub rate_limit: u32,
    /// STOMP TCP listener, if enabled.
    pub stomp_tcp: Option<SocketAddr>,
    /// TLS on the listeners, if a certificate is given.
    pub tls: Option<crate::http::tls::TlsSettings>,
    /// STOMP body limit.
    pub stomp_max_body: usize,
    /// STOMP heart-beat offer (send, receive) in ms.
    pub stomp_heart_beat: (u64, u64),
    /// STOMP per-session outbox capacity.
    pub stomp_outbox: usize,
    /// What clients can make the server buffer.
    pub limits: Limits,
    /// Fallback transports.
    pub transports: Transports,
    /// Metrics and logs.
    pub operations: Operations,
    /// Silence after which a connected STOMP session is closed (`None`: never).
    pub stomp_idle_timeout: Option<Duration>,
    /// How often an ongoing storage failure is logged.
    pub storage_log_interval: Duration,
    /// Operators by configuration, the audit log's retention.
    pub admin: AdminSettings,
}

impl ServeArgs {
    /// Reads the config file if one is named and fills in what flags and environment left unset.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file = self.read_file()?;
        let data = self
            .data
            .clone()
            .or_else(|| file.data.clone())
            .unwrap_or_else(|| PathBuf::from("parley-data"));
        // Before the fields below move out of `self` and `file`.
        let auth = self.auth_settings(&file, &data)?;
        let handshake_timeout = pick(
            self.handshake_timeout,
            file.handshake_timeout,
            Duration::from_secs(10),
        );
        let trusted = TrustedProxies {
            networks: trusted_proxies(self.trusted_proxy.as_ref().or(file.trusted_proxy.as_ref()))?,
            header: self
                .forwarded_header
                .or(file.forwarded_header)
                .unwrap_or_default(),
            // A balancer sends its header at once; the client's request head gets as long.
            header_timeout: handshake_timeout,
        };
        Ok(Settings {
            data: data.clone(),
            database: self.database.or(file.database),
            cluster: self.cluster.or(file.cluster),
            presence_ttl: pick(
                self.presence_ttl,
                file.presence_ttl,
                Duration::from_secs(20),
            ),
            drain_delay: pick(self.drain_delay, file.drain_delay, Duration::ZERO),
            http: pick(self.http, file.http, ([127, 0, 0, 1], 8080).into()),
            echo: pick(self.echo, file.echo, false),
            echo_max_message: pick(self.echo_max_message, file.echo_max_message, 16 << 20),
            handshake_timeout,
            idle_timeout: pick(
                self.idle_timeout,
                file.idle_timeout,
                Duration::from_secs(60),
            ),
            write_timeout: pick(
                self.write_timeout,
                file.write_timeout,
                Duration::from_secs(30),
            ),
            shutdown_grace: pick(
                self.shutdown_grace,
                file.shutdown_grace,
                Duration::from_secs(10),
            ),
            max_connections: pick(self.max_connections, file.max_connections, 100_000),
            max_connections_per_ip: pick(
                self.max_connections_per_ip,
                file.max_connections_per_ip,
                1000,
            ),
            trusted,
            body_timeout: pick(
                self.body_timeout,
                file.body_timeout,
                Duration::from_secs(30),
            ),
            public_stats: pick(self.public_stats, file.public_stats, false),
            auth,
            rooms: RoomLimits {
                guests_create: pick(self.guests_create_rooms, file.guests_create_rooms, false),
                max_per_account: pick(
                    self.max_rooms_per_account,
                    file.max_rooms_per_account,
                    RoomLimits::default().max_per_account,
                ),
            },
            deflate: pick(self.deflate, file.deflate, true),
            max_body: pick(self.max_body, file.max_body, 64 * 1024),
            rate_limit: pick(self.rate_limit, file.rate_limit, 1000),
            stomp_tcp: stomp_tcp(self.stomp_tcp.or(file.stomp_tcp).as_deref())?,
            tls: self.tls.resolve(file.tls)?,
            stomp_max_body: pick(self.stomp_max_body, file.stomp_max_body, 2 << 20),
            stomp_heart_beat: heart_beat(self.stomp_heart_beat.or(file.stomp_heart_beat))?,
            stomp_outbox: pick(self.stomp_outbox, file.stomp_outbox, 1024).max(1),
            limits: self.limits.resolve(file.limits),
            transports: self.transports.resolve(file.transports)?,
            operations: self.operations.resolve(file.operations)?,
            admin: self.admin.resolve(file.admin)?,
            stomp_idle_timeout: Some(pick(
                self.stomp_idle_timeout,
                file.stomp_idle_timeout,
                Duration::from_secs(5 * 60),
            ))
            .filter(|d| !d.is_zero()),
            storage_log_interval: pick(
                self.storage_log_interval,
                file.storage_log_interval,
                Duration::from_secs(60),
            ),
        })
    }
    /// The config file's settings; all unset without `--config`.
    fn read_file(&self) -> anyhow::Result<ServeArgs> {
        let Some(path) = &self.config else {
            return Ok(ServeArgs::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Accounts, tokens, guests and origins, from flags over the file over the defaults.
    fn auth_settings(&self, file: &ServeArgs, data: &Path) -> anyhow::Result<AuthSettings> {
        Ok(AuthSettings {
            keys: KeySettings {
                algorithm: self
                    .jwt_algorithm
                    .or(file.jwt_algorithm)
                    .unwrap_or_default(),
                data: data.to_owned(),
                secret_file: self
                    .jwt_secret_file
                    .clone()
                    .or_else(|| file.jwt_secret_file.clone()),
                secret: std::env::var("PARLEY_JWT_SECRET")
                    .ok()
                    .filter(|s| !s.is_empty()),
                private_key: self
                    .jwt_private_key
                    .clone()
                    .or_else(|| file.jwt_private_key.clone()),
                public_key: self
                    .jwt_public_key
                    .clone()
                    .or_else(|| file.jwt_public_key.clone()),
                issuer: self
                    .jwt_issuer
                    .clone()
                    .or_else(|| file.jwt_issuer.clone())
                    .unwrap_or_else(|| "parley".to_owned()),
                audience: self
                    .jwt_audience
                    .clone()
                    .or_else(|| file.jwt_audience.clone())
                    .unwrap_or_else(|| "parley".to_owned()),
            },
            access_ttl: self
                .access_ttl
                .or(file.access_ttl)
                .unwrap_or(Duration::from_secs(15 * 60)),
            refresh_ttl: self
                .refresh_ttl
                .or(file.refresh_ttl)
                .unwrap_or(Duration::from_secs(14 * 86_400)),
            registration_open: match self
                .registration
                .clone()
                .or_else(|| file.registration.clone())
                .as_deref()
            {
                None | Some("open") => true,
                Some("closed") => false,
                Some(other) => {
                    anyhow::bail!("--registration {other:?}: expected open or closed")
                }
            },
            allow_guests: self.allow_guests.or(file.allow_guests).unwrap_or(false),
            failures_per_user: self
                .login_failures_per_user
                .or(file.login_failures_per_user)
                .unwrap_or(5),
            failures_per_ip: self
                .login_failures_per_ip
                .or(file.login_failures_per_ip)
                .unwrap_or(20),
            registrations_per_ip: self
                .registrations_per_ip
                .or(file.registrations_per_ip)
                .unwrap_or(20),
            allowed_origins: self
                .allowed_origin
                .clone()
                .or_else(|| file.allowed_origin.clone())
                .unwrap_or_default(),
            identity: self.identity.clone().resolve(file.identity.clone())?,
        })
    }
}

/// `--stomp-tcp`: an address, or `off`; the default is 127.0.0.1:61613.
fn stomp_tcp(value: Option<&str>) -> anyhow::Result<Option<SocketAddr>> {
    match value {
        None => Ok(Some(([127, 0, 0, 1], 61613).into())),
        Some("off") => Ok(None),
        Some(addr) => Ok(Some(addr.parse().with_context(|| {
            format!("--stomp-tcp {addr:?}: expected ADDR:PORT or off")
        })?)),
    }
}

/// `--trusted-proxy`: addresses or CIDR networks.
fn trusted_proxies(values: Option<&Vec<String>>) -> anyhow::Result<Vec<Cidr>> {
    values
        .into_iter()
        .flatten()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.parse::<Cidr>()
                .map_err(|e| anyhow::anyhow!("--trusted-proxy {e}"))
        })
        .collect()
}

/// `--stomp-heart-beat SEND_MS,RECEIVE_MS`; the default is 10 s each way.
fn heart_beat(value: Option<String>) -> anyhow::Result<(u64, u64)> {
    let Some(v) = value else {
        return Ok((10_000, 10_000));
    };
    v.split_once(',')
        .and_then(|(x, y)| Some((x.trim().parse().ok()?, y.trim().parse().ok()?)))
        .with_context(|| format!("--stomp-heart-beat {v:?}: expected SEND_MS,RECEIVE_MS"))
}

/// A setting: the flag (or its environment variable), else the config file, else `default`.
fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn defaults_need_no_flags() {
        let s = Cli::parse_from(["parley"]).serve.resolve().unwrap();
        assert_eq!(s.http, "127.0.0.1:8080".parse().unwrap());
        assert!(!s.echo);
        assert_eq!(s.handshake_timeout, Duration::from_secs(10));
        assert_eq!(s.stomp_tcp, Some("127.0.0.1:61613".parse().unwrap()));
        assert_eq!(s.stomp_idle_timeout, Some(Duration::from_secs(300)));
        let off = Cli::parse_from(["parley", "--stomp-idle-timeout", "0s"]);
        assert_eq!(off.serve.resolve().unwrap().stomp_idle_timeout, None);
    }

    #[test]
    fn stomp_tcp_can_be_turned_off() {
        let s = Cli::parse_from(["parley", "--stomp-tcp", "off"])
            .serve
            .resolve()
            .unwrap();
        assert_eq!(s.stomp_tcp, None);
        assert!(Cli::parse_from(["parley", "--stomp-tcp", "nope"])
            .serve
            .resolve()
            .is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("parley-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("parley.toml");
        std::fs::write(
            &path,
            "http = \"127.0.0.1:9000\"\necho = true\nidle-timeout = \"5s\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "parley",
            "--config",
            path.to_str().unwrap(),
            "--idle-timeout",
            "7s",
        ]);
        let s = cli.serve.resolve().unwrap();
        assert_eq!(s.http, "127.0.0.1:9000".parse().unwrap());
        assert!(s.echo);
        assert_eq!(s.idle_timeout, Duration::from_secs(7));
    }

    #[test]
    fn trusted_proxies_parse_from_flags_and_file() {
        let s = Cli::parse_from([
            "parley",
            "--trusted-proxy",
            "10.0.0.0/8,::1",
            "--trusted-proxy",
            "192.0.2.7",
            "--forwarded-header",
            "forwarded",
        ])
        .serve
        .resolve()
        .unwrap();
        let nets: Vec<String> = s.trusted.networks.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        assert_eq!(s.trusted.header, ForwardedHeader::Forwarded);
        assert_eq!(s.max_connections_per_ip, 1000);
        assert_eq!(s.body_timeout, Duration::from_secs(30));
        assert!(!s.public_stats);
        assert!(
            Cli::parse_from(["parley", "--trusted-proxy", "10.0.0.0/40"])
                .serve
                .resolve()
                .is_err()
        );
        let dir = std::env::temp_dir().join(format!("parley-config-tp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("parley.toml");
        std::fs::write(
            &path,
            "trusted-proxy = [\"127.0.0.1\"]\nforwarded-header = \"x-forwarded-for\"\n",
        )
        .unwrap();
        let s = Cli::parse_from(["parley", "--config", path.to_str().unwrap()])
            .serve
            .resolve()
            .unwrap();
        assert_eq!(s.trusted.networks.len(), 1);
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = std::env::temp_dir().join(format!("parley-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("parley.toml");
        std::fs::write(&path, "htp = \"127.0.0.1:9000\"\n").unwrap();
        let cli = Cli::parse_from(["parley", "--config", path.to_str().unwrap()]);
        assert!(cli.serve.resolve().is_err());
    }
}
