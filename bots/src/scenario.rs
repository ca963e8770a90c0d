//! Scenario files: TOML describing groups of bots, the run's timing and its SLOs.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::body;
use crate::pattern::RoomPattern;

/// Largest body a bot sends: Parley's default `--max-body` (64 KiB).
pub const MAX_SIZE: usize = 64 * 1024;

/// Longest user name Parley accepts; a bot is named `<group>-<n>`.
const MAX_USER_NAME: usize = 32;

/// A whole scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in the report.
    pub name: String,
    /// How long traffic is measured, after ramp-up and warm-up.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Bots are started evenly over this time.
    #[serde(with = "humantime_serde", default)]
    pub ramp_up: Duration,
    /// Traffic flows but is not measured (errors still count).
    #[serde(with = "humantime_serde", default)]
    pub warmup: Duration,
    /// After senders stop, receivers keep reading this long so in-flight messages arrive.
    #[serde(with = "humantime_serde", default = "default_drain")]
    pub drain: Duration,
    /// Most connection attempts (TCP + handshake + auth + join) at once.
    #[serde(default = "default_connect_concurrency")]
    pub connect_concurrency: usize,
    /// Limit on each connection attempt, from TCP connect to the join being confirmed.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// The bot groups, in start order.
    #[serde(rename = "group")]
    pub groups: Vec<Group>,
    /// Objectives that decide the exit status.
    #[serde(default)]
    pub slo: Slo,
}

/// A group of identical bots.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Bots are named `<name>-<n>`.
    pub name: String,
    /// How many bots.
    pub count: u64,
    /// Wire protocol.
    pub protocol: Protocol,
    /// How the bots authenticate.
    #[serde(default)]
    pub auth: AuthMode,
    /// Room pattern, e.g. `room-{n % 50}`.
    pub room: String,
    /// Room messages per second per bot: a number (0 = listen only) or `"max"` (as fast as the
    /// in-flight cap allows).
    #[serde(default)]
    pub rate: Rate,
    /// Each send interval is scaled by a random factor in `1 ± jitter` (0..=1).
    #[serde(default)]
    pub jitter: f64,
    /// Body size in bytes (at least the stamp, which is up to ~40 bytes).
    #[serde(default = "default_size")]
    pub size: usize,
    /// Most unacknowledged sends (room messages and DMs) per bot.
    #[serde(default = "default_in_flight")]
    pub in_flight: u32,
    /// Direct messages per second per bot, each to the next bot of the group.
    #[serde(default)]
    pub dm_rate: f64,
    /// Edits per second per bot, each of its own latest message seen back in its room. Parley
    /// allows `--edit-rate` (default 5) edits and reactions together per second per user.
    #[serde(default)]
    pub edit_rate: f64,
    /// Reactions per second per bot, each toggling the bot's emoji on the latest message it
    /// received in its room.
    #[serde(default)]
    pub react_rate: f64,
    /// Disconnect and reconnect every this long (± jitter).
    #[serde(with = "humantime_serde", default)]
    pub churn: Option<Duration>,
    /// When the server closes the connection (or it breaks), reconnect with backoff and resume
    /// the room from the last id seen (`since`): nothing may then be missing (a cluster's
    /// failover, a rolling restart).
    #[serde(default)]
    pub reconnect: bool,
    /// Stop reading after joining (a slow consumer); its socket gets a small (4 KiB) receive
    /// buffer, so the server's queue rather than the kernel's buffers fills up.
    #[serde(default)]
    pub slow: bool,
}

/// Wire protocol of a group.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// JSON over `/ws`.
    Raw,
    /// STOMP 1.2 over `/stomp` (subprotocol `v12.stomp`).
    StompWs,
    /// STOMP 1.2 over TCP.
    StompTcp,
    /// STOMP 1.2 over SockJS at `/stomp`, receiving on `xhr_streaming` (a fallback client).
    StompXhrStreaming,
    /// STOMP 1.2 over SockJS at `/stomp`, long-polling `xhr`.
    StompXhrPolling,
    /// Plain WebSocket to a broadcast server (e.g. the `ws` package's broadcast example): no
    /// join, every text message is a room message and every message received is a delivery.
    /// The server must echo to the sender too: a publisher's own messages are its
    /// acknowledgements. No direct messages.
    WsBroadcast,
    /// Socket.IO 5 over Engine.IO 4 on a WebSocket, in Parley's event vocabulary
    /// (docs/socketio.md): `join`, `send`, `edit`, `react` with acknowledgements, `message` and
    /// change events. Also what bench/node/socketio-rooms.js speaks (joins and room sends).
    #[serde(rename = "socketio")]
    SocketIo,
    /// The same over Engine.IO 4 HTTP long-polling (no upgrade).
    #[serde(rename = "socketio-polling")]
    SocketIoPolling,
    /// Parley's Server-Sent Events room feed, posting over REST (`201` once durable): needs
    /// accounts (`auth = "token"` or `"register"`) to send. No direct messages, no changes.
    Sse,
}

impl Protocol {
    /// Every protocol with its scenario / command-line name.
    pub const ALL: [(Protocol, &'static str); 9] = [
        (Protocol::Raw, "raw"),
        (Protocol::StompWs, "stomp-ws"),
        (Protocol::StompTcp, "stomp-tcp"),
        (Protocol::StompXhrStreaming, "stomp-xhr-streaming"),
        (Protocol::StompXhrPolling, "stomp-xhr-polling"),
        (Protocol::WsBroadcast, "ws-broadcast"),
        (Protocol::SocketIo, "socketio"),
        (Protocol::SocketIoPolling, "socketio-polling"),
        (Protocol::Sse, "sse"),
    ];

    /// The protocol called `name` in scenario files.
    pub fn from_name(name: &str) -> anyhow::Result<Self> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(p, _)| *p)
            .with_context(|| {
                let names: Vec<_> = Self::ALL.iter().map(|(_, n)| *n).collect();
                format!("unknown protocol {name:?} (one of {})", names.join(", "))
            })
    }

    /// Whether a sender learns its message went through by seeing it come back (no receipts).
    pub fn acks_by_echo(self) -> bool {
        self == Protocol::WsBroadcast
    }

    /// Whether a refused send closes the connection (a STOMP ERROR): what the bot sent behind
    /// it is then lost, so a send that may be refused (a DM to a bot maybe not online) goes
    /// alone, with nothing else in flight, and nothing follows it until it is answered.
    pub fn refusal_closes(self) -> bool {
        matches!(
            self,
            Protocol::StompWs
                | Protocol::StompTcp
                | Protocol::StompXhrStreaming
                | Protocol::StompXhrPolling
        )
    }

    /// Whether the protocol can address one user.
    pub fn has_direct_messages(self) -> bool {
        !self.acks_by_echo() && self != Protocol::Sse
    }
}

/// How a group authenticates.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// A guest name (`?name=`, STOMP `login` without `passcode`); needs `--allow-guests`, and
    /// `--guests-create-rooms` for the bots' rooms to come into being.
    #[default]
    Guest,
    /// An HS256 access token minted from `--jwt-secret-file`.
    Token,
    /// `POST /api/register` (409 is fine) then `POST /api/login`.
    Register,
}

/// A send rate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Rate {
    /// Never send room messages.
    #[default]
    Listen,
    /// Messages per second.
    PerSecond(f64),
    /// As fast as the in-flight cap allows.
    Max,
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(0.0) => Ok(Rate::Listen),
            Raw::Number(r) if r.is_finite() && r > 0.0 => Ok(Rate::PerSecond(r)),
            Raw::Text(t) if t == "max" => Ok(Rate::Max),
            other => Err(serde::de::Error::custom(format!(
                "rate must be a number ≥ 0 or \"max\", not {}",
                match other {
                    Raw::Number(r) => r.to_string(),
                    Raw::Text(t) => format!("{t:?}"),
                }
            ))),
        }
    }
}

/// Service-level objectives; each one set and missed makes the exit status non-zero.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Highest acceptable p99 delivery latency.
    #[serde(with = "humantime_serde", default)]
    pub max_p99: Option<Duration>,
    /// Most errors of all kinds together.
    pub max_errors: Option<u64>,
    /// Fewest deliveries per second over the measured duration.
    pub min_delivered_per_s: Option<f64>,
    /// Highest acceptable p99 of edits and of reactions (sent → back at the sender).
    #[serde(with = "humantime_serde", default)]
    pub max_change_p99: Option<Duration>,
}

fn default_drain() -> Duration {
    Duration::from_secs(1)
}

fn default_connect_concurrency() -> usize {
    256
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_size() -> usize {
    64
}

fn default_in_flight() -> u32 {
    16
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Every bot of every group.
    pub fn bot_count(&self) -> u64 {
        self.groups.iter().map(|g| g.count).sum()
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.duration.is_zero() {
            bail!("duration must be more than 0");
        }
        if self.connect_concurrency == 0 {
            bail!("connect_concurrency must be at least 1");
        }
        if self.groups.is_empty() {
            bail!("a scenario needs at least one [[group]]");
        }
        let mut names = std::collections::HashSet::new();
        for g in &self.groups {
            g.validate()
                .with_context(|| format!("group {:?}", g.name))?;
            if !names.insert(g.name.as_str()) {
                bail!("two groups are named {:?}", g.name);
            }
        }
        Ok(())
    }
}

impl Group {
    /// The parsed room pattern (validated at load, so this cannot fail afterwards).
    pub fn room_pattern(&self) -> anyhow::Result<RoomPattern> {
        RoomPattern::parse(&self.room)
    }

    /// The user name of bot `n`.
    pub fn bot_name(&self, n: u64) -> String {
        format!("{}-{n}", self.name)
    }

    /// Whether this group sends anything (and so needs acknowledgements read).
    pub fn sends(&self) -> bool {
        self.rate != Rate::Listen || self.dm_rate > 0.0 || self.changes()
    }

    /// Whether this group edits or reacts.
    pub fn changes(&self) -> bool {
        self.edit_rate > 0.0 || self.react_rate > 0.0
    }

    fn validate(&self) -> anyhow::Result<()> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && !self.name.starts_with("guest");
        if !name_ok {
            bail!("a group name is letters, digits, `_`, `-`, and does not start with `guest`");
        }
        if self.count == 0 {
            bail!("count must be at least 1");
        }
        let longest = self.bot_name(self.count - 1);
        if longest.len() > MAX_USER_NAME {
            bail!(
                "bot name {longest:?} is over {MAX_USER_NAME} characters: shorten the group name"
            );
        }
        self.room_pattern()?;
        if !(0.0..=1.0).contains(&self.jitter) {
            bail!("jitter must be between 0 and 1");
        }
        if self.size > MAX_SIZE {
            bail!("size {} is over {MAX_SIZE} bytes", self.size);
        }
        if self.size < body::MIN_SIZE {
            bail!("size must be at least {} bytes (the stamp)", body::MIN_SIZE);
        }
        if self.in_flight == 0 {
            bail!("in_flight must be at least 1");
        }
        for (name, rate) in [
            ("dm_rate", self.dm_rate),
            ("edit_rate", self.edit_rate),
            ("react_rate", self.react_rate),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                bail!("{name} must be a number ≥ 0");
            }
        }
        if self.changes() && !self.protocol.has_direct_messages() {
            bail!("protocol {:?} cannot edit or react", self.protocol);
        }
        if self.edit_rate > 0.0 && self.rate == Rate::Listen {
            bail!("edit_rate needs a rate: a bot edits its own messages");
        }
        if self.slow && (self.sends() || self.churn.is_some()) {
            bail!("a slow group only listens: no rate, dm_rate or churn");
        }
        if self.dm_rate > 0.0 && !self.protocol.has_direct_messages() {
            bail!(
                "protocol {:?} has no direct messages: no dm_rate",
                self.protocol
            );
        }
        if self.churn.is_some_and(|c| c < Duration::from_millis(100)) {
            bail!("churn must be at least 100ms");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        name = "t"
        duration = "5s"
        ramp_up = "1s"
        warmup = "500ms"

        [[group]]
        name = "pub"
        count = 2
        protocol = "stomp-tcp"
        auth = "token"
        room = "r-{n % 2}"
        rate = 10
        jitter = 0.5
        size = 128
        in_flight = 4
        dm_rate = 1
        edit_rate = 0.5
        react_rate = 2
        churn = "2s"

        [[group]]
        name = "fast"
        count = 1
        protocol = "raw"
        room = "r-0"
        rate = "max"

        [[group]]
        name = "sub"
        count = 3
        protocol = "stomp-ws"
        auth = "register"
        room = "r-{n / 2}"
        slow = true

        [slo]
        max_p99 = "250ms"
        max_errors = 0
        min_delivered_per_s = 5.5
        max_change_p99 = "1s"
    "#;

    #[test]
    fn parses_every_field() {
        let s = Scenario::parse(FULL).unwrap();
        assert_eq!(s.name, "t");
        assert_eq!(s.duration, Duration::from_secs(5));
        assert_eq!(s.warmup, Duration::from_millis(500));
        assert_eq!(s.drain, Duration::from_secs(1));
        assert_eq!(s.bot_count(), 6);
        let g = &s.groups[0];
        assert_eq!(g.protocol, Protocol::StompTcp);
        assert_eq!(g.auth, AuthMode::Token);
        assert_eq!(g.rate, Rate::PerSecond(10.0));
        assert_eq!(g.churn, Some(Duration::from_secs(2)));
        assert_eq!((g.edit_rate, g.react_rate), (0.5, 2.0));
        assert!(g.changes() && !s.groups[1].changes());
        assert_eq!(g.room_pattern().unwrap().expand(3), "r-1");
        assert_eq!(s.groups[1].rate, Rate::Max);
        assert_eq!(s.groups[1].auth, AuthMode::Guest);
        assert_eq!(s.groups[1].in_flight, 16);
        assert_eq!(s.groups[2].rate, Rate::Listen);
        assert!(s.groups[2].slow);
        assert_eq!(s.slo.max_p99, Some(Duration::from_millis(250)));
        assert_eq!(s.slo.max_errors, Some(0));
        assert_eq!(s.slo.min_delivered_per_s, Some(5.5));
        assert_eq!(s.slo.max_change_p99, Some(Duration::from_secs(1)));
    }

    #[test]
    fn refuses_mistakes() {
        let cases = [
            ("rate = 10", "rate = -1"),
            ("rate = 10", "rate = \"fast\""),
            ("protocol = \"raw\"", "protocol = \"mqtt\""),
            ("jitter = 0.5", "jitter = 2"),
            ("size = 128", "size = 1000000"),
            ("size = 128", "size = 3"),
            ("in_flight = 4", "in_flight = 0"),
            ("name = \"pub\"", "name = \"guest\""),
            ("name = \"pub\"", "name = \"sub\""),
            ("room = \"r-{n % 2}\"", "room = \"r.{n}\""),
            ("churn = \"2s\"", "churn = \"1ms\""),
            ("slow = true", "slow = true\nrate = 1"),
            ("max_errors = 0", "max_errrors = 0"),
            ("count = 2", "count = 0"),
            ("edit_rate = 0.5", "edit_rate = -1"),
            ("rate = 10", "rate = 0"),
            ("duration = \"5s\"", "duration = \"0s\""),
        ];
        for (from, to) in cases {
            assert!(FULL.contains(from), "{from}");
            let text = FULL.replacen(from, to, 1);
            assert!(Scenario::parse(&text).is_err(), "{to:?} should be refused");
        }
    }

    #[test]
    fn protocols_by_name() {
        for (p, name) in Protocol::ALL {
            assert_eq!(Protocol::from_name(name).unwrap(), p);
            let text = FULL.replacen("protocol = \"raw\"", &format!("protocol = \"{name}\""), 1);
            assert_eq!(Scenario::parse(&text).unwrap().groups[1].protocol, p);
        }
        assert!(Protocol::from_name("mqtt").is_err());
        assert!(Protocol::WsBroadcast.acks_by_echo() && !Protocol::SocketIo.acks_by_echo());
        // No direct messages over a broadcast server.
        let text = FULL.replacen("protocol = \"stomp-tcp\"", "protocol = \"ws-broadcast\"", 1);
        assert!(Scenario::parse(&text).is_err());
    }

    #[test]
    fn long_bot_names_are_refused() {
        let text = FULL.replacen(
            "name = \"fast\"\n        count = 1",
            "name = \"a-very-long-group-name-indeed\"\n        count = 1000",
            1,
        );
        assert!(Scenario::parse(&text).is_err());
    }

    #[test]
    fn every_shipped_scenario_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                seen.push(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "churn",
                "conversations",
                "failover",
                "fallback",
                "fanout",
                "idle",
                "many-rooms",
                "slow-consumer",
                "smoke",
                "soak",
                "socketio"
            ]
        );
    }
}
