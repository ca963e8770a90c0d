//! Settings of the HTTP fallback transports (SockJS, the SSE room feed, Socket.IO's Engine.IO):
//! heartbeats, how long a session outlives its requests, streaming response size, payload
//! size, session caps, the legacy transports. Flags, or the `[transports]` table of the config
//! file.

use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// Flags of the fallback transports; in the config file they sit under `[transports]`.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TransportArgs {
    /// SockJS: a receiving request with nothing to carry sends a heartbeat frame (`h`) after
    /// this long; keep it under every proxy's read timeout [default: 25s].
    #[arg(long, env = "PARLEY_SOCKJS_HEARTBEAT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub sockjs_heartbeat: Option<Duration>,

    /// SockJS: a session with no receiving request open this long is closed [default: 5s].
    #[arg(long, env = "PARLEY_SOCKJS_DISCONNECT_DELAY", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub sockjs_disconnect_delay: Option<Duration>,

    /// SockJS: a streaming response ends once it carried this many bytes, so that proxies
    /// buffering it do not grow without end; the client opens the next [default: 131072].
    #[arg(long, env = "PARLEY_SOCKJS_RESPONSE_LIMIT")]
    pub sockjs_response_limit: Option<usize>,

    /// SockJS sessions open at once on this node [default: 10000].
    #[arg(long, env = "PARLEY_SOCKJS_MAX_SESSIONS")]
    pub sockjs_max_sessions: Option<usize>,

    /// SockJS: serve the `jsonp` and `htmlfile` transports, which exist for very old
    /// browsers [default: true].
    #[arg(long, env = "PARLEY_SOCKJS_LEGACY", num_args = 0..=1, default_missing_value = "true")]
    pub sockjs_legacy: Option<bool>,

    /// Socket.IO: the server pings every session this often; keep it under every proxy's
    /// read timeout [default: 25s].
    #[arg(long, env = "PARLEY_SOCKETIO_PING_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub socketio_ping_interval: Option<Duration>,

    /// Socket.IO: a session that does not answer a ping within this is closed [default: 20s].
    #[arg(long, env = "PARLEY_SOCKETIO_PING_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub socketio_ping_timeout: Option<Duration>,

    /// Socket.IO: largest long-polling POST body or WebSocket message, announced to clients as
    /// `maxPayload` [default: 1000000].
    #[arg(long, env = "PARLEY_SOCKETIO_MAX_PAYLOAD")]
    pub socketio_max_payload: Option<usize>,

    /// Socket.IO sessions open at once on this node [default: 10000].
    #[arg(long, env = "PARLEY_SOCKETIO_MAX_SESSIONS")]
    pub socketio_max_sessions: Option<usize>,

    /// How often an idle SSE room feed sends a comment, so proxies and clients see it alive
    /// [default: 15s].
    #[arg(long, env = "PARLEY_SSE_HEARTBEAT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub sse_heartbeat: Option<Duration>,
}

/// Resolved transport settings.
#[derive(Clone, Debug)]
pub struct Transports {
    /// SockJS heartbeat interval.
    pub sockjs_heartbeat: Duration,
    /// SockJS session life without a receiving request.
    pub sockjs_disconnect_delay: Duration,
    /// SockJS streaming response limit in bytes.
    pub sockjs_response_limit: usize,
    /// SockJS sessions at once.
    pub sockjs_max_sessions: usize,
    /// `jsonp` and `htmlfile` served.
    pub sockjs_legacy: bool,
    /// SSE feed heartbeat interval.
    pub sse_heartbeat: Duration,
    /// Socket.IO ping interval.
    pub socketio_ping_interval: Duration,
    /// Socket.IO pong deadline.
    pub socketio_ping_timeout: Duration,
    /// Socket.IO `maxPayload`.
    pub socketio_max_payload: usize,
    /// Socket.IO sessions at once.
    pub socketio_max_sessions: usize,
}

impl TransportArgs {
    /// Flags over the file's `[transports]` over the defaults.
    pub fn resolve(self, file: TransportArgs) -> anyhow::Result<Transports> {
        let sse_heartbeat = self
            .sse_heartbeat
            .or(file.sse_heartbeat)
            .unwrap_or(Duration::from_secs(15));
        anyhow::ensure!(!sse_heartbeat.is_zero(), "--sse-heartbeat must be above 0s");
        let sockjs_heartbeat = self
            .sockjs_heartbeat
            .or(file.sockjs_heartbeat)
            .unwrap_or(Duration::from_secs(25));
        anyhow::ensure!(
            !sockjs_heartbeat.is_zero(),
            "--sockjs-heartbeat must be above 0s"
        );
        let socketio_ping_interval = self
            .socketio_ping_interval
            .or(file.socketio_ping_interval)
            .unwrap_or(Duration::from_secs(25));
        let socketio_ping_timeout = self
            .socketio_ping_timeout
            .or(file.socketio_ping_timeout)
            .unwrap_or(Duration::from_secs(20));
        anyhow::ensure!(
            !socketio_ping_interval.is_zero() && !socketio_ping_timeout.is_zero(),
            "--socketio-ping-interval and --socketio-ping-timeout must be above 0s"
        );
        let socketio_max_payload = self
            .socketio_max_payload
            .or(file.socketio_max_payload)
            .unwrap_or(1_000_000);
        anyhow::ensure!(
            socketio_max_payload >= 1024,
            "--socketio-max-payload must be at least 1024"
        );
        Ok(Transports {
            sockjs_heartbeat,
            sockjs_disconnect_delay: self
                .sockjs_disconnect_delay
                .or(file.sockjs_disconnect_delay)
                .unwrap_or(Duration::from_secs(5)),
            sockjs_response_limit: self
                .sockjs_response_limit
                .or(file.sockjs_response_limit)
                .unwrap_or(128 * 1024),
            sockjs_max_sessions: self
                .sockjs_max_sessions
                .or(file.sockjs_max_sessions)
                .unwrap_or(10_000),
            sockjs_legacy: self.sockjs_legacy.or(file.sockjs_legacy).unwrap_or(true),
            sse_heartbeat,
            socketio_ping_interval,
            socketio_ping_timeout,
            socketio_max_payload,
            socketio_max_sessions: self
                .socketio_max_sessions
                .or(file.socketio_max_sessions)
                .unwrap_or(10_000),
        })
    }
}
