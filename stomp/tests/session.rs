//! Session rules, driven frame by frame through `Session::handle` against a real `Broker`.
//!
//! Replies and deliveries are decoded the way a client would read them, with the negotiated
//! version's escaping.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parley_stomp::broker::{Broker, BrokerError, BrokerEvent, BrokerLimits, Publish, SessionId};
use parley_stomp::budget::MemoryBudget;
use parley_stomp::codec;
use parley_stomp::destination::{valid_user, Destination};
use parley_stomp::session::{
    Access, AccessPolicy, Flow, HeartBeat, Identity, Session, SessionConfig,
};
use parley_stomp::{Command, Decoder, Frame, Limits, StompError, Version};

const NOW: u64 = 1_700_000_000_123;

/// Decodes every frame in `bytes`, which must hold nothing else.
fn decode_all(bytes: &[u8], version: Version) -> Vec<Frame> {
    let mut decoder = Decoder::new(Limits::default());
    decoder.set_version(version);
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(f) = decoder
        .decode(&mut buf)
        .expect("the server writes valid frames")
    {
        frames.push(f);
    }
    assert!(buf.is_empty(), "trailing bytes: {buf:?}");
    frames
}

/// Decodes client text, as a connection's decoder would for `version`.
fn parse(text: &str, version: Version) -> Frame {
    let frames = decode_all(text.as_bytes(), version);
    assert_eq!(frames.len(), 1);
    frames.into_iter().next().unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A MESSAGE as one session received it: the raw bytes and their decoding.
struct Received {
    raw: Bytes,
    frames: Vec<Frame>,
}

impl Received {
    fn frame(&self) -> &Frame {
        assert_eq!(
            self.frames.len(),
            1,
            "one delivery, one frame: {:?}",
            self.frames
        );
        &self.frames[0]
    }
}

/// A broker with sessions around it, routing deliveries the way a server would.
struct World {
    broker: Broker,
    config: Arc<SessionConfig>,
    sessions: BTreeMap<SessionId, Session>,
    inbox: BTreeMap<SessionId, Vec<Received>>,
    evicted: Vec<SessionId>,
}

impl World {
    fn new() -> Self {
        // Sessions without a login are guests here; the queue tests are about queues, not access.
        let mut config = SessionConfig::default();
        config.guest_queues = true;
        Self::with(BrokerLimits::default(), config)
    }

    fn with(limits: BrokerLimits, config: SessionConfig) -> Self {
        Self {
            broker: Broker::new(limits),
            config: Arc::new(config),
            sessions: BTreeMap::new(),
            inbox: BTreeMap::new(),
            evicted: Vec::new(),
        }
    }

    fn session(&self, id: SessionId) -> &Session {
        &self.sessions[&id]
    }

    /// Feeds one frame to session `id` (created on first use); returns the flow and the decoded
    /// replies.
    fn handle(&mut self, id: SessionId, frame: Frame) -> (Flow, Vec<Frame>) {
        let config = self.config.clone();
        let session = self
            .sessions
            .entry(id)
            .or_insert_with(|| Session::new(id, config));
        // The server authenticates before CONNECT reaches the session; this world trusts `login`
        // (no login: a guest), and an invalid name gets no identity, so CONNECT is refused.
        if matches!(frame.command, Command::Connect | Command::Stomp)
            && session.identity().is_none()
        {
            match frame.get("login").filter(|l| !l.is_empty()) {
                Some(login) => {
                    if let Some(name) = valid_user(login) {
                        session.authenticate(Identity::new(name, false));
                    }
                }
                None => session.authenticate(Identity::new(format!("guest-{id}"), true)),
            }
        }
        let mut replies = Vec::new();
        let mut events = Vec::new();
        let flow = session.handle(frame, &mut self.broker, NOW, &mut replies, &mut |e| {
            events.push(e)
        });
        let version = session.version();
        // Storage is the server's business: a RECEIPT deferred until a room message is durable
        // is produced here at once, as if the store had just committed.
        for e in &events {
            if let BrokerEvent::Store {
                session: Some(s),
                id: message_id,
                receipt: Some(r),
                ..
            } = e
            {
                if *s == id {
                    replies.push((r.0)(*message_id));
                }
            }
        }
        let frames = decode_all(&replies.concat(), version);
        self.route(events);
        (flow, frames)
    }

    /// Like [`World::handle`], for a frame that must be accepted without any reply.
    fn ok(&mut self, id: SessionId, frame: Frame) {
        let (flow, replies) = self.handle(id, frame);
        assert_eq!((flow, replies), (Flow::Continue, vec![]));
    }

    /// Connects session `id` with `accept-version` and `login`; returns the CONNECTED frame.
    fn connect(&mut self, id: SessionId, accept: Option<&str>, login: Option<&str>) -> Frame {
        let (flow, replies) = self.handle(id, connect_frame(accept, login));
        assert_eq!(flow, Flow::Continue, "{replies:?}");
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].command, Command::Connected, "{replies:?}");
        replies.into_iter().next().unwrap()
    }

    fn route(&mut self, events: Vec<BrokerEvent>) {
        for event in events {
            match event {
                BrokerEvent::Deliver(d) => {
                    let session = &self.sessions[&d.session];
                    let raw = Bytes::from(
                        session
                            .message_parts(&d.subscription, d.ack, &d.message)
                            .concat(),
                    );
                    let frames = decode_all(&raw, session.version());
                    self.inbox
                        .entry(d.session)
                        .or_default()
                        .push(Received { raw, frames });
                }
                BrokerEvent::Evict { session, .. } => self.evicted.push(session),
                BrokerEvent::Joined { .. }
                | BrokerEvent::Left { .. }
                | BrokerEvent::Store { .. } => {}
                other => panic!("no cluster events without forwarding: {other:?}"),
            }
        }
    }

    /// Takes the MESSAGEs session `id` received.
    fn received(&mut self, id: SessionId) -> Vec<Received> {
        self.inbox.remove(&id).unwrap_or_default()
    }

    /// Takes the decoded MESSAGEs session `id` received.
    fn messages(&mut self, id: SessionId) -> Vec<Frame> {
        self.received(id)
            .iter()
            .map(|r| r.frame().clone())
            .collect()
    }

    fn bodies(&mut self, id: SessionId) -> Vec<String> {
        self.messages(id)
            .iter()
            .map(|f| String::from_utf8(f.body.to_vec()).unwrap())
            .collect()
    }

    /// True when the broker no longer knows session `id`.
    fn gone_from_broker(&mut self, id: SessionId) -> bool {
        let publish = Publish {
            headers: vec![],
            body: Bytes::new(),
            now_ms: 0,
            ..Publish::default()
        };
        let to = Destination::parse("/topic/probe").unwrap();
        self.broker
            .publish(id, &to, publish, &mut |_| {})
            .map(|p| p.id)
            == Err(BrokerError::UnknownSession)
    }
}

fn connect_frame(accept: Option<&str>, login: Option<&str>) -> Frame {
    let mut f = Frame::new(Command::Connect).header("host", "parley");
    if let Some(a) = accept {
        f = f.header("accept-version", a);
    }
    if let Some(l) = login {
        f = f.header("login", l).header("passcode", "secret");
    }
    f
}

fn send(to: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", to)
        .body(Bytes::from(body.to_owned()))
}

fn subscribe(id: &str, to: &str, ack: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .header("id", id)
        .header("destination", to)
        .header("ack", ack)
}

fn tx_frame(command: Command, tx: &str) -> Frame {
    Frame::new(command).header("transaction", tx)
}

/// Asserts `replies` is exactly one RECEIPT for `id`.
fn assert_receipt(replies: &[Frame], id: &str) {
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].command, Command::Receipt, "{replies:?}");
    assert_eq!(replies[0].get("receipt-id"), Some(id));
}

/// Asserts an ERROR with a `message` and, when given, the `receipt-id`.
fn assert_error(flow: Flow, replies: &[Frame], receipt: Option<&str>) {
    assert_eq!(flow, Flow::Close, "{replies:?}");
    assert_eq!(replies.len(), 1, "{replies:?}");
    let e = &replies[0];
    assert_eq!(e.command, Command::Error, "{replies:?}");
    assert!(e.get("message").is_some_and(|m| !m.is_empty()), "{e:?}");
    assert_eq!(e.get("receipt-id"), receipt, "{e:?}");
}

fn v(version: Version) -> Option<&'static str> {
    Some(version.as_str())
}

// ---------------------------------------------------------------------------------------------
// CONNECT

#[test]
fn version_is_negotiated_from_accept_version() {
    let cases = [
        (None, Version::V1_0),
        (Some("1.0"), Version::V1_0),
        (Some("1.1"), Version::V1_1),
        (Some("1.2"), Version::V1_2),
        (Some("1.0,1.1,1.2"), Version::V1_2),
        (Some("1.2,1.0"), Version::V1_2),
        (Some("1.0,1.1"), Version::V1_1),
        (Some("1.1,2.0"), Version::V1_1),
    ];
    for (accept, expected) in cases {
        let mut w = World::new();
        let connected = w.connect(1, accept, None);
        assert_eq!(
            connected.get("version"),
            Some(expected.as_str()),
            "{accept:?}"
        );
        assert_eq!(w.session(1).version(), expected, "{accept:?}");
        assert!(w.session(1).is_connected());
    }
}

#[test]
fn no_common_version_is_an_error() {
    for accept in ["2.0", "2.0,3.1", "", "1.3"] {
        let mut w = World::new();
        let (flow, replies) = w.handle(1, connect_frame(Some(accept), Some("alice")));
        assert_error(flow, &replies, None);
        assert!(!w.session(1).is_connected());
        assert!(w.gone_from_broker(1));
        // Closed for good.
        assert_eq!(
            w.handle(1, connect_frame(Some("1.2"), None)),
            (Flow::Close, vec![])
        );
    }
}

#[test]
fn stomp_command_connects_like_connect() {
    let mut w = World::new();
    let (flow, replies) = w.handle(
        1,
        Frame::new(Command::Stomp)
            .header("accept-version", "1.2")
            .header("host", "h"),
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(replies[0].command, Command::Connected);
    assert_eq!(replies[0].get("version"), Some("1.2"));
}

#[test]
fn connected_has_version_server_session_heart_beat_and_user_name() {
    let mut config = SessionConfig::default();
    config.server = "parley/9.9".into();
    config.heart_beat = (5_000, 7_000);
    let mut w = World::with(BrokerLimits::default(), config);
    let connected = w.connect(42, Some("1.1,1.2"), Some("alice"));
    assert_eq!(connected.get("version"), Some("1.2"));
    assert_eq!(connected.get("server"), Some("parley/9.9"));
    assert_eq!(connected.get("session"), Some("42"));
    assert_eq!(connected.get("heart-beat"), Some("5000,7000"));
    assert_eq!(connected.get("user-name"), Some("alice"));
}

#[test]
fn heart_beats_are_negotiated() {
    let ms = |n: u64| Some(Duration::from_millis(n));
    // Server (5000, 7000): it can send every 5 s and wants to hear from the client every 7 s.
    let cases: [(Option<&str>, Option<Duration>, Option<Duration>); 7] = [
        (None, None, None),
        (Some("0,0"), None, None),
        (Some("1000,2000"), ms(5_000), ms(14_000)),
        (Some("10000,20000"), ms(20_000), ms(20_000)),
        (Some("0,3000"), ms(5_000), None),
        (Some("3000,0"), None, ms(14_000)),
        (Some(" 8000 , 6000 "), ms(6_000), ms(16_000)),
    ];
    for (header, send_every, expect_within) in cases {
        let mut config = SessionConfig::default();
        config.heart_beat = (5_000, 7_000);
        let mut w = World::with(BrokerLimits::default(), config);
        let mut connect = connect_frame(Some("1.2"), None);
        if let Some(h) = header {
            connect = connect.header("heart-beat", h);
        }
        let (flow, replies) = w.handle(1, connect);
        assert_eq!(flow, Flow::Continue, "{header:?}: {replies:?}");
        assert_eq!(replies[0].get("heart-beat"), Some("5000,7000"));
        assert_eq!(
            w.session(1).heart_beat(),
            HeartBeat {
                send_every,
                expect_within
            },
            "{header:?}"
        );
    }

    // A server that does not heart-beat at all.
    let mut config = SessionConfig::default();
    config.heart_beat = (0, 0);
    let mut w = World::with(BrokerLimits::default(), config);
    let connected = w.connect(1, Some("1.2"), None);
    assert_eq!(connected.get("heart-beat"), Some("0,0"));
    assert_eq!(
        w.session(1).heart_beat(),
        HeartBeat {
            send_every: None,
            expect_within: None
        }
    );
    let (flow, _) = w.handle(
        2,
        connect_frame(Some("1.2"), None).header("heart-beat", "1000,1000"),
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(w.session(2).heart_beat(), HeartBeat::default());
}

#[test]
fn invalid_heart_beat_is_an_error() {
    for hb in ["x", "1000", "1000,", "-1,0", "1,2,3"] {
        let mut w = World::new();
        let (flow, replies) =
            w.handle(1, connect_frame(Some("1.2"), None).header("heart-beat", hb));
        assert_error(flow, &replies, None);
    }
}

#[test]
fn login_becomes_the_user_name() {
    let mut w = World::new();
    assert_eq!(
        w.connect(1, Some("1.2"), Some("alice")).get("user-name"),
        Some("alice")
    );
    assert_eq!(w.session(1).user().map(|u| &**u), Some("alice"));
    assert_eq!(
        w.connect(7, Some("1.2"), None).get("user-name"),
        Some("guest-7")
    );
    assert_eq!(w.session(7).user().map(|u| &**u), Some("guest-7"));
    let (_, replies) = w.handle(
        8,
        Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("login", ""),
    );
    assert_eq!(
        replies[0].get("user-name"),
        Some("guest-8"),
        "an empty login is no login"
    );

    // The name is what the broker routes user destinations by.
    w.ok(1, subscribe("in", "/user/queue/inbox", "auto"));
    w.ok(7, send("/user/alice/queue/inbox", "hi"));
    let got = w.messages(1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].get("sender"), Some("guest-7"));
    assert_eq!(got[0].get("destination"), Some("/user/queue/inbox"));

    let (flow, replies) = w.handle(9, connect_frame(Some("1.2"), Some("not a valid name!")));
    assert_error(flow, &replies, None);
}

#[test]
fn connect_without_authentication_is_refused() {
    let mut session = Session::new(1, Arc::new(SessionConfig::default()));
    let mut broker = Broker::new(BrokerLimits::default());
    let mut replies = Vec::new();
    let flow = session.handle(
        connect_frame(Some("1.2"), Some("alice")),
        &mut broker,
        NOW,
        &mut replies,
        &mut |_| {},
    );
    let frames = decode_all(&replies.concat(), Version::V1_2);
    assert_error(flow, &frames, None);
    assert_eq!(frames[0].get("message"), Some("authentication required"));
}

#[test]
fn guests_are_marked_and_cannot_forge_the_mark() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), None);
    w.ok(1, subscribe("r", "/topic/general", "auto"));
    w.ok(2, send("/topic/general", "from a guest"));
    w.ok(
        1,
        send("/topic/general", "from alice").header("sender-guest", "true"),
    );
    let got = w.messages(1);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].get("sender"), Some("guest-2"));
    assert_eq!(got[0].get("sender-guest"), Some("true"));
    assert_eq!(got[1].get("sender"), Some("alice"));
    assert_eq!(
        got[1].get("sender-guest"),
        None,
        "a forged guest mark is dropped"
    );
}

/// Rules like the server's: `secret` rooms are for alice only; nobody sends to `.presence`.
struct Rules;

impl Access for Rules {
    fn subscribe(&self, who: &Identity, destination: &Destination) -> Result<(), String> {
        match destination {
            Destination::Topic(t)
                if t.split('.').next() == Some("secret") && &*who.name != "alice" =>
            {
                Err("not a member of secret".into())
            }
            _ => Ok(()),
        }
    }

    fn send(&self, who: &Identity, destination: &Destination) -> Result<(), String> {
        if matches!(destination, Destination::Topic(t) if t.ends_with(".presence")) {
            return Err("the server writes presence".into());
        }
        self.subscribe(who, destination)
    }
}

#[test]
fn access_rules_refuse_subscribe_and_send_with_an_error() {
    let mut config = SessionConfig::default();
    config.access = AccessPolicy(Arc::new(Rules));
    let mut w = World::with(BrokerLimits::default(), config);
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(1, subscribe("s", "/topic/secret", "auto"));
    for dest in [
        "/topic/secret",
        "/topic/secret.typing",
        "/topic/secret.presence",
    ] {
        let (flow, replies) = w.handle(2, subscribe("x", dest, "auto"));
        assert_error(flow, &replies, None);
        assert!(
            replies[0]
                .get("message")
                .unwrap()
                .starts_with("forbidden: "),
            "{replies:?}"
        );
        w.sessions.remove(&2);
        w.connect(2, Some("1.2"), Some("bob"));
    }
    let (flow, replies) = w.handle(2, send("/topic/secret", "let me in"));
    assert_error(flow, &replies, None);
    assert!(w.messages(1).is_empty(), "a refused SEND reaches nobody");
    let (flow, replies) = w.handle(1, send("/topic/general.presence", "forged"));
    assert_error(flow, &replies, None);
}

#[test]
fn frames_before_connect_are_refused() {
    for command in [
        Command::Send,
        Command::Subscribe,
        Command::Ack,
        Command::Begin,
        Command::Disconnect,
    ] {
        let mut w = World::new();
        let frame = Frame::new(command)
            .header("destination", "/topic/t")
            .header("receipt", "r-1");
        let (flow, replies) = w.handle(1, frame);
        assert_error(flow, &replies, Some("r-1"));
        assert!(!w.session(1).is_connected());
        assert_eq!(
            w.handle(1, connect_frame(Some("1.2"), None)),
            (Flow::Close, vec![]),
            "closed for good"
        );
    }
}

#[test]
fn a_second_connect_is_refused() {
    for second in [Command::Connect, Command::Stomp] {
        let mut w = World::new();
        w.connect(1, Some("1.2"), Some("alice"));
        let (flow, replies) = w.handle(1, Frame::new(second).header("accept-version", "1.2"));
        assert_error(flow, &replies, None);
        assert!(!w.session(1).is_connected());
        assert!(w.gone_from_broker(1));
    }
}

// ---------------------------------------------------------------------------------------------
// RECEIPT and ERROR

#[test]
fn frames_with_receipt_get_a_receipt_after_taking_effect() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));

    let (flow, replies) = w.handle(
        1,
        subscribe("s", "/topic/t", "auto").header("receipt", "sub-1"),
    );
    assert_eq!(flow, Flow::Continue);
    assert_receipt(&replies, "sub-1");

    let (_, replies) = w.handle(2, send("/topic/t", "hello").header("receipt", "send:1\n"));
    assert_receipt(&replies, "send:1\n"); // escaped on the wire, decoded back
    assert_eq!(
        w.bodies(1),
        ["hello"],
        "the subscription was in effect, the SEND happened"
    );

    let (_, replies) = w.handle(
        1,
        Frame::new(Command::Unsubscribe)
            .header("id", "s")
            .header("receipt", "u"),
    );
    assert_receipt(&replies, "u");
    w.ok(2, send("/topic/t", "nobody hears"));
    assert!(w.messages(1).is_empty());

    for (frame, receipt) in [
        (tx_frame(Command::Begin, "t1").header("receipt", "b"), "b"),
        (tx_frame(Command::Commit, "t1").header("receipt", "c"), "c"),
        (tx_frame(Command::Begin, "t2").header("receipt", "b2"), "b2"),
        (tx_frame(Command::Abort, "t2").header("receipt", "a"), "a"),
    ] {
        let (flow, replies) = w.handle(2, frame);
        assert_eq!(flow, Flow::Continue);
        assert_receipt(&replies, receipt);
    }
}

#[test]
fn disconnect_with_receipt_answers_then_closes() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(1, subscribe("s", "/queue/jobs", "client-individual"));
    w.ok(2, send("/queue/jobs", "job"));
    assert_eq!(w.bodies(1), ["job"]);

    let (flow, replies) = w.handle(1, parse("DISCONNECT\nreceipt:77\n\n\0", Version::V1_2));
    assert_eq!(flow, Flow::Close);
    assert_receipt(&replies, "77");
    assert!(!w.session(1).is_connected());
    assert!(w.gone_from_broker(1));
    // Its unacknowledged message is back in the queue.
    assert_eq!(w.broker.queue_depth("jobs"), 1);
    w.ok(2, subscribe("s", "/queue/jobs", "auto"));
    assert_eq!(w.bodies(2), ["job"]);
    // Nothing more is handled.
    assert_eq!(
        w.handle(1, send("/queue/jobs", "late")),
        (Flow::Close, vec![])
    );

    // Without a receipt, DISCONNECT closes silently.
    let (flow, replies) = w.handle(2, Frame::new(Command::Disconnect));
    assert_eq!((flow, replies), (Flow::Close, vec![]));
}

#[test]
fn refused_frames_get_an_error_with_receipt_id_and_close() {
    let cases: Vec<(&str, Frame)> = vec![
        (
            "subscribe without id",
            Frame::new(Command::Subscribe).header("destination", "/topic/t"),
        ),
        (
            "subscribe without destination",
            Frame::new(Command::Subscribe).header("id", "s"),
        ),
        (
            "subscribe to a bad destination",
            subscribe("s", "/exchange/x", "auto"),
        ),
        (
            "subscribe with a bad ack mode",
            subscribe("s", "/topic/t", "sometimes"),
        ),
        (
            "subscribe to a named user queue",
            subscribe("s", "/user/bob/queue/x", "auto"),
        ),
        (
            "duplicate subscription id",
            subscribe("dup", "/topic/t", "auto"),
        ),
        (
            "unsubscribe unknown id",
            Frame::new(Command::Unsubscribe).header("id", "nope"),
        ),
        (
            "ack of an unknown id",
            Frame::new(Command::Ack).header("id", "12345"),
        ),
        (
            "ack of a non-numeric id",
            Frame::new(Command::Ack).header("id", "abc"),
        ),
        (
            "ack without id",
            Frame::new(Command::Ack).header("message-id", "1"),
        ),
        (
            "nack of an unknown id",
            Frame::new(Command::Nack).header("id", "12345"),
        ),
        ("send without destination", Frame::new(Command::Send)),
        ("send to a bad destination", send("/topic/", "x")),
        ("send to /user/queue", send("/user/queue/x", "x")),
        (
            "send in an unknown transaction",
            send("/topic/t", "x").header("transaction", "nope"),
        ),
        (
            "ack in an unknown transaction",
            Frame::new(Command::Ack)
                .header("id", "1")
                .header("transaction", "nope"),
        ),
        (
            "commit of an unknown transaction",
            tx_frame(Command::Commit, "nope"),
        ),
        (
            "abort of an unknown transaction",
            tx_frame(Command::Abort, "nope"),
        ),
        ("begin without transaction", Frame::new(Command::Begin)),
        (
            "begin of an open transaction",
            tx_frame(Command::Begin, "open"),
        ),
        (
            "a server frame",
            Frame::new(Command::Message).header("destination", "/topic/t"),
        ),
    ];
    for (what, frame) in cases {
        let mut w = World::new();
        w.connect(1, Some("1.2"), Some("alice"));
        w.ok(1, subscribe("dup", "/topic/dup", "auto"));
        w.ok(1, tx_frame(Command::Begin, "open"));
        let (flow, replies) = w.handle(1, frame.header("receipt", "r:9"));
        assert_error(flow, &replies, Some("r:9"));
        assert!(!w.session(1).is_connected(), "{what}");
        assert!(w.gone_from_broker(1), "{what}");
    }
}

#[test]
fn subscribe_requires_an_id_from_1_1_on() {
    for version in [Version::V1_1, Version::V1_2] {
        let mut w = World::new();
        w.connect(1, v(version), None);
        let (flow, replies) = w.handle(
            1,
            Frame::new(Command::Subscribe).header("destination", "/topic/t"),
        );
        assert_error(flow, &replies, None);
    }
}

#[test]
fn error_frame_has_the_first_line_as_message_and_the_whole_text_as_body() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), None);
    let bytes = w
        .session(1)
        .error_frame("slow consumer: bye\nmore detail", Some("r".into()));
    let f = &decode_all(&bytes, Version::V1_2)[0];
    assert_eq!(f.command, Command::Error);
    assert_eq!(f.get("message"), Some("slow consumer: bye"));
    assert_eq!(f.get("receipt-id"), Some("r"));
    assert_eq!(&f.body[..], b"slow consumer: bye\nmore detail\n");
}

// ---------------------------------------------------------------------------------------------
// Versions: subscription ids and acknowledgement

#[test]
fn v1_0_subscribe_without_id_is_named_by_its_destination() {
    let mut w = World::new();
    w.connect(1, None, Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(
        1,
        parse(
            "SUBSCRIBE\ndestination:/topic/t\nack:client\n\n\0",
            Version::V1_0,
        ),
    );
    w.ok(2, send("/topic/t", "one"));
    let got = w.received(1);
    let m = got[0].frame();
    assert_eq!(m.get("subscription"), Some("/topic/t"));
    assert_eq!(m.get("destination"), Some("/topic/t"));
    assert_eq!(m.get("ack"), None, "1.0 acknowledges by message-id");
    assert!(!contains(&got[0].raw, b"\nack:"));
    let message_id = m.get("message-id").unwrap().to_owned();

    let (flow, replies) = w.handle(
        1,
        Frame::new(Command::Ack)
            .header("message-id", &*message_id)
            .header("receipt", "a"),
    );
    assert_eq!(flow, Flow::Continue);
    assert_receipt(&replies, "a");

    // UNSUBSCRIBE by destination too.
    w.ok(
        1,
        Frame::new(Command::Unsubscribe).header("destination", "/topic/t"),
    );
    w.ok(2, send("/topic/t", "two"));
    assert!(w.messages(1).is_empty());
}

#[test]
fn v1_1_acks_by_message_id_and_subscription() {
    let mut w = World::new();
    w.connect(1, Some("1.1"), Some("alice"));
    w.connect(2, Some("1.1"), Some("bob"));
    w.connect(3, Some("1.2"), Some("carol"));
    w.ok(1, subscribe("s1", "/queue/jobs", "client-individual"));
    w.ok(3, send("/queue/jobs", "a"));
    w.ok(3, send("/queue/jobs", "b"));
    let got = w.messages(1);
    assert_eq!(got.len(), 2);
    for m in &got {
        assert_eq!(m.get("subscription"), Some("s1"));
        assert_eq!(m.get("ack"), None, "1.1 has no ack header");
    }
    let id_a = got[0].get("message-id").unwrap();
    let id_b = got[1].get("message-id").unwrap();

    let ack = |id: &str| {
        Frame::new(Command::Ack)
            .header("message-id", id)
            .header("subscription", "s1")
    };
    let (_, replies) = w.handle(1, ack(id_a).header("receipt", "r"));
    assert_receipt(&replies, "r");

    // NACK by message-id + subscription: redelivered (to the only consumer), same message-id.
    let nack = Frame::new(Command::Nack)
        .header("message-id", id_b)
        .header("subscription", "s1");
    w.ok(1, nack);
    let again = w.messages(1);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].get("message-id"), Some(id_b));
    assert_eq!(again[0].get("subscription"), Some("s1"));
    assert_eq!(again[0].get("ack"), None);

    // Acknowledging an already settled message is an error.
    let (flow, replies) = w.handle(1, ack(id_a));
    assert_error(flow, &replies, None);

    // The subscription must match the delivery's. (Alice's ERROR put "b" back in the queue.)
    w.ok(2, subscribe("s2", "/queue/jobs", "client-individual"));
    w.ok(3, send("/queue/jobs", "c"));
    let got = w.messages(2);
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [b"b", b"c"]);
    let message_id = got[1].get("message-id").unwrap();
    let (flow, replies) = w.handle(
        2,
        Frame::new(Command::Ack)
            .header("message-id", message_id)
            .header("subscription", "s1"),
    );
    assert_error(flow, &replies, None);

    // The subscription header is required in 1.1. (Bob's ERROR put "b" and "c" back.)
    w.connect(4, Some("1.1"), None);
    w.ok(4, subscribe("s4", "/queue/jobs", "client-individual"));
    let got = w.messages(4);
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [b"b", b"c"]);
    let message_id = got[0].get("message-id").unwrap();
    let (flow, replies) = w.handle(4, Frame::new(Command::Ack).header("message-id", message_id));
    assert_error(flow, &replies, None);
}

#[test]
fn v1_2_acks_by_the_message_ack_header() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    // Burn some message ids so ack ids and message ids differ (rooms number their own
    // messages, so use a side-channel topic, which shares the broker's counter with queues).
    for _ in 0..5 {
        w.ok(2, send("/topic/nobody.x", "x"));
    }
    w.ok(1, subscribe("s", "/queue/jobs", "client"));
    w.ok(2, send("/queue/jobs", "a"));
    w.ok(2, send("/queue/jobs", "b"));
    let got = w.messages(1);
    let ack_a = got[0]
        .get("ack")
        .expect("1.2 client mode has an ack header")
        .to_owned();
    let ack_b = got[1].get("ack").unwrap().to_owned();
    let message_id_b = got[1].get("message-id").unwrap().to_owned();
    assert_ne!(ack_a, ack_b);
    assert_ne!(message_id_b, ack_b);

    // The message-id is not an ack id.
    let (flow, replies) = w.handle(1, Frame::new(Command::Ack).header("id", &*message_id_b));
    assert_error(flow, &replies, None);

    // A fresh run: ACK id=<ack of b> settles a and b (client mode is cumulative).
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(1, subscribe("s", "/queue/jobs", "client"));
    w.ok(2, send("/queue/jobs", "a"));
    w.ok(2, send("/queue/jobs", "b"));
    let got = w.messages(1);
    let ack_b = got[1].get("ack").unwrap();
    let text = format!("ACK\nid:{ack_b}\nreceipt:done\n\n\0");
    let (_, replies) = w.handle(1, parse(&text, Version::V1_2));
    assert_receipt(&replies, "done");
    w.ok(2, subscribe("s", "/queue/jobs", "auto"));
    assert_eq!(
        w.handle(1, Frame::new(Command::Disconnect)),
        (Flow::Close, vec![])
    );
    assert!(
        w.messages(2).is_empty(),
        "both were settled, nothing to redeliver"
    );

    // In auto mode there is no ack header.
    w.connect(3, Some("1.2"), None);
    w.ok(3, subscribe("t", "/topic/t", "auto"));
    w.ok(2, send("/topic/t", "x"));
    assert_eq!(w.messages(3)[0].get("ack"), None);
}

// ---------------------------------------------------------------------------------------------
// Transactions

#[test]
fn commit_applies_buffered_sends_in_order() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(1, subscribe("s", "/topic/t", "auto"));
    w.ok(2, tx_frame(Command::Begin, "tx"));
    for body in ["1", "2", "3"] {
        w.ok(2, send("/topic/t", body).header("transaction", "tx"));
    }
    // Not part of the transaction: goes through now.
    w.ok(2, send("/topic/t", "now"));
    assert_eq!(w.bodies(1), ["now"]);

    w.ok(2, tx_frame(Command::Commit, "tx"));
    let got = w.messages(1);
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [b"1", b"2", b"3"]);
    assert!(
        got.iter().all(|m| m.get("transaction").is_none()),
        "the transaction header is not passed on"
    );

    // The transaction is over.
    let (flow, replies) = w.handle(2, tx_frame(Command::Commit, "tx"));
    assert_error(flow, &replies, None);
}

#[test]
fn transactions_end_one_by_one_and_the_others_keep_their_frames() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(1, subscribe("s", "/topic/t", "auto"));
    for tx in ["a", "b", "c"] {
        w.ok(2, tx_frame(Command::Begin, tx));
        w.ok(2, send("/topic/t", tx).header("transaction", tx));
    }
    w.ok(2, tx_frame(Command::Abort, "b"));
    w.ok(2, tx_frame(Command::Commit, "c"));
    assert_eq!(w.bodies(1), ["c"]);
    // The last one open, then none: a new one starts from nothing.
    w.ok(2, send("/topic/t", "a2").header("transaction", "a"));
    w.ok(2, tx_frame(Command::Commit, "a"));
    assert_eq!(w.bodies(1), ["a", "a2"]);
    let (flow, replies) = w.handle(2, send("/topic/t", "x").header("transaction", "a"));
    assert_error(flow, &replies, None);
    w.connect(3, Some("1.2"), Some("carol"));
    w.ok(3, tx_frame(Command::Begin, "a"));
    w.ok(3, send("/topic/t", "carol").header("transaction", "a"));
    w.ok(3, tx_frame(Command::Commit, "a"));
    assert_eq!(w.bodies(1), ["carol"]);
}

#[test]
fn abort_discards_buffered_sends() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.1"), Some("bob"));
    w.ok(1, subscribe("s", "/queue/q", "auto"));
    w.ok(2, tx_frame(Command::Begin, "tx"));
    w.ok(2, send("/queue/q", "1").header("transaction", "tx"));
    w.ok(2, send("/queue/q", "2").header("transaction", "tx"));
    w.ok(2, tx_frame(Command::Abort, "tx"));
    assert!(w.messages(1).is_empty());
    assert_eq!(w.broker.queue_depth("q"), 0);
    // The name can be reused.
    w.ok(2, tx_frame(Command::Begin, "tx"));
    w.ok(2, send("/queue/q", "3").header("transaction", "tx"));
    w.ok(2, tx_frame(Command::Commit, "tx"));
    assert_eq!(w.bodies(1), ["3"]);
}

#[test]
fn transactional_acks_wait_for_commit() {
    let mut limits = BrokerLimits::default();
    limits.max_unacked = 1;
    let mut w = World::with(limits, SessionConfig::default());
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(1, subscribe("s", "/queue/q", "client-individual"));
    w.ok(2, send("/queue/q", "a"));
    w.ok(2, send("/queue/q", "b"));
    let got = w.messages(1);
    assert_eq!(got.len(), 1, "paused at max_unacked");
    let ack_a = got[0].get("ack").unwrap().to_owned();

    // ACK inside a transaction that is aborted: never applied.
    w.ok(1, tx_frame(Command::Begin, "t1"));
    w.ok(
        1,
        Frame::new(Command::Ack)
            .header("id", &*ack_a)
            .header("transaction", "t1"),
    );
    w.ok(1, tx_frame(Command::Abort, "t1"));
    assert!(w.messages(1).is_empty());

    // ACK inside a transaction that is committed: applied at COMMIT, which frees the slot.
    w.ok(1, tx_frame(Command::Begin, "t2"));
    w.ok(
        1,
        Frame::new(Command::Ack)
            .header("id", &*ack_a)
            .header("transaction", "t2"),
    );
    assert!(w.messages(1).is_empty(), "not yet");
    w.ok(1, tx_frame(Command::Commit, "t2"));
    assert_eq!(w.bodies(1), ["b"]);
}

#[test]
fn transactional_nack_waits_for_commit() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(1, subscribe("s", "/queue/q", "client-individual"));
    w.ok(2, send("/queue/q", "a"));
    let ack = w.messages(1)[0].get("ack").unwrap().to_owned();
    w.ok(2, subscribe("s", "/queue/q", "auto"));
    w.ok(1, tx_frame(Command::Begin, "t"));
    w.ok(
        1,
        Frame::new(Command::Nack)
            .header("id", &*ack)
            .header("transaction", "t"),
    );
    assert!(w.messages(1).is_empty() && w.messages(2).is_empty());
    w.ok(1, tx_frame(Command::Commit, "t"));
    // Redelivered to one of the consumers (which one is the NACK rule's business).
    let mut again = w.bodies(1);
    again.extend(w.bodies(2));
    assert_eq!(again, ["a"]);
}

#[test]
fn closing_aborts_open_transactions() {
    // Closed by DISCONNECT, or by an ERROR.
    for last in [
        Frame::new(Command::Disconnect),
        Frame::new(Command::Ack).header("id", "999"),
    ] {
        let mut w = World::new();
        w.connect(1, Some("1.2"), Some("alice"));
        w.connect(2, Some("1.2"), Some("bob"));
        w.ok(1, subscribe("s", "/topic/t", "auto"));
        w.ok(2, tx_frame(Command::Begin, "tx"));
        w.ok(2, send("/topic/t", "never").header("transaction", "tx"));
        let (flow, _) = w.handle(2, last);
        assert_eq!(flow, Flow::Close);
        assert!(w.messages(1).is_empty());
        assert_eq!(
            w.handle(2, tx_frame(Command::Commit, "tx")),
            (Flow::Close, vec![])
        );
        assert!(w.messages(1).is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// MESSAGE frames

#[test]
fn message_parts_encode_headers_per_version() {
    message_parts_case("a:b\nc\\d", &[(1, Version::V1_1), (2, Version::V1_2)]);
    // 1.0 has no escaping: only values without line breaks are representable there.
    message_parts_case("a:b c\\d", &[(3, Version::V1_0)]);
}

fn message_parts_case(note: &str, subscribers: &[(SessionId, Version)]) {
    let mut w = World::new();
    w.connect(9, Some("1.2"), Some("alice"));
    for &(id, version) in subscribers {
        w.connect(id, v(version), None);
        w.ok(id, subscribe("s:1", "/topic/t", "client-individual"));
    }
    let send = send("/topic/t", "body\0with nul")
        .header("content-type", "text/plain;charset=utf-8")
        .header("x-note", note);
    w.ok(9, send);

    for &(id, version) in subscribers {
        let got = w.received(id);
        assert_eq!(got.len(), 1);
        let m = got[0].frame();
        let ctx = format!("{version:?}");
        assert_eq!(m.get("destination"), Some("/topic/t"), "{ctx}");
        assert_eq!(m.get("sender"), Some("alice"), "{ctx}");
        assert_eq!(m.get("timestamp"), Some(NOW.to_string().as_str()), "{ctx}");
        assert!(m.get("message-id").unwrap().parse::<u64>().is_ok(), "{ctx}");
        assert_eq!(
            m.get("content-type"),
            Some("text/plain;charset=utf-8"),
            "{ctx}"
        );
        assert_eq!(m.get("content-length"), Some("13"), "{ctx}");
        assert_eq!(&m.body[..], b"body\0with nul", "{ctx}");
        assert_eq!(m.get("subscription"), Some("s:1"), "{ctx}");
        assert_eq!(
            m.get("ack").is_some(),
            version == Version::V1_2,
            "{ctx}: ack header only in 1.2"
        );
        assert_eq!(m.get("x-note"), Some(note), "{ctx}");
        if version != Version::V1_0 {
            let raw = &got[0].raw[..];
            assert!(contains(raw, b"x-note:a\\cb\\nc\\\\d\n"), "{ctx}: {raw:?}");
            assert!(contains(raw, b"subscription:s\\c1\n"), "{ctx}: {raw:?}");
        }
    }
}

#[test]
fn carriage_return_is_escaped_in_1_2_only() {
    let mut w = World::new();
    w.connect(1, Some("1.1"), None);
    w.connect(2, Some("1.2"), None);
    for id in [1, 2] {
        w.ok(id, subscribe("s", "/topic/t", "auto"));
    }
    w.ok(2, send("/topic/t", "x").header("x-cr", "a\rb"));
    let v12 = w.received(2);
    assert!(contains(&v12[0].raw, b"x-cr:a\\rb\n"), "{:?}", v12[0].raw);
    assert_eq!(v12[0].frame().get("x-cr"), Some("a\rb"));
    let v11 = w.received(1);
    assert!(contains(&v11[0].raw, b"x-cr:a\rb\n"), "{:?}", v11[0].raw);
    assert_eq!(v11[0].frame().get("x-cr"), Some("a\rb"));
}

#[test]
fn sender_and_other_broker_headers_cannot_be_forged() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(1, subscribe("mine", "/topic/t", "client"));
    let forged = parse(
        "SEND\n\
         destination:/topic/t\n\
         destination:/topic/elsewhere\n\
         sender:mallory\n\
         message-id:999999\n\
         timestamp:0\n\
         subscription:theirs\n\
         ack:12345\n\
         content-length:5\n\
         x-custom:kept\n\
         x-custom:dropped\n\
         receipt:r\n\
         \n\
         hello\0",
        Version::V1_2,
    );
    let (_, replies) = w.handle(2, forged);
    assert_receipt(&replies, "r");
    let got = w.messages(1);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    let count = |name: &str| m.headers.iter().filter(|(n, _)| n == name).count();
    for name in [
        "destination",
        "sender",
        "message-id",
        "timestamp",
        "subscription",
        "ack",
        "content-length",
        "x-custom",
    ] {
        assert_eq!(count(name), 1, "exactly one {name} header: {m:?}");
    }
    assert_eq!(m.get("destination"), Some("/topic/t"));
    assert_eq!(m.get("sender"), Some("bob"));
    assert_ne!(m.get("message-id"), Some("999999"));
    assert_eq!(m.get("timestamp"), Some(NOW.to_string().as_str()));
    assert_eq!(m.get("subscription"), Some("mine"));
    assert_ne!(m.get("ack"), Some("12345"));
    assert_eq!(m.get("x-custom"), Some("kept"));
    assert_eq!(m.get("receipt"), None);
    assert_eq!(&m.body[..], b"hello");
}

/// A 1.1 client can put an escaped newline in a custom header value. A 1.0 subscriber's copy is
/// written without escaping (1.0 has none), so the raw newline ends the header line there: the
/// value can add headers, end the header block, and even (with a NUL) start a second, entirely
/// forged MESSAGE — here one "from" bob.
#[test]
fn header_values_cannot_inject_frames_into_a_1_0_subscription() {
    let mut w = World::new();
    w.connect(1, None, Some("old"));
    w.connect(2, Some("1.1"), Some("mallory"));
    w.ok(
        1,
        parse("SUBSCRIBE\ndestination:/topic/t\n\n\0", Version::V1_0),
    );

    // What mallory sends, as her 1.1 connection decodes it.
    // A NUL in a header is refused at the edge (clients split frames at NUL), so the attack
    // that is left is line breaks: they must not add headers or end the header block.
    let with_nul = codec::encode(&send("/topic/t", "x").header("x", "a\0b"), Version::V1_1);
    let mut d = Decoder::new(Limits::default());
    d.set_version(Version::V1_1);
    assert_eq!(
        d.decode(&mut BytesMut::from(&with_nul[..])),
        Err(StompError::NulInHeader)
    );
    let injected = "v\nsender:bob\n\nforged body";
    let wire = codec::encode(
        &send("/topic/t", "hello").header("x", injected),
        Version::V1_1,
    );
    let mut decoder = Decoder::new(Limits::default());
    decoder.set_version(Version::V1_1);
    let frame = decoder
        .decode(&mut BytesMut::from(&wire[..]))
        .unwrap()
        .unwrap();
    assert_eq!(frame.get("x"), Some(injected));
    w.ok(2, frame);

    let got = w.received(1);
    assert_eq!(got.len(), 1);
    let frames = &got[0].frames;
    assert_eq!(
        frames.len(),
        1,
        "one delivery must be one frame, got {frames:#?}"
    );
    let m = &frames[0];
    assert_eq!(m.get("sender"), Some("mallory"));
    assert_eq!(&m.body[..], b"hello");
    assert!(m
        .headers
        .iter()
        .all(|(n, v)| !n.contains('\n') && !v.contains('\n')));
}

#[test]
fn slow_topic_consumer_is_evicted_through_the_session() {
    let mut limits = BrokerLimits::default();
    limits.max_unacked = 2;
    let mut w = World::with(limits, SessionConfig::default());
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(1, subscribe("s", "/topic/t", "client"));
    for i in 0..3 {
        w.ok(2, send("/topic/t", &i.to_string()));
    }
    assert_eq!(w.bodies(1), ["0", "1"]);
    assert_eq!(w.evicted, [1]);
}

/// A RECEIPT waits for storage only for the SEND that carries it outside a transaction: a
/// COMMIT's own RECEIPT comes at once even when the SENDs it applies had receipts.
#[test]
fn commit_receipt_is_not_held_back_by_buffered_sends() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    let (_, replies) = w.handle(1, Frame::new(Command::Begin).header("transaction", "t"));
    assert!(replies.is_empty());
    let staged = send("/topic/room", "x")
        .header("transaction", "t")
        .header("receipt", "in-tx");
    let (_, replies) = w.handle(1, staged);
    assert_eq!(
        replies[0].get("receipt-id"),
        Some("in-tx"),
        "staged: receipt at once"
    );
    let commit = Frame::new(Command::Commit)
        .header("transaction", "t")
        .header("receipt", "c");
    let (flow, replies) = w.handle(1, commit);
    assert_eq!(flow, Flow::Continue);
    let ids: Vec<_> = replies.iter().filter_map(|f| f.get("receipt-id")).collect();
    assert_eq!(ids, ["c"]);
}

/// `since` (catch-up) is accepted on room topics with ack:auto and refused elsewhere.
#[test]
fn since_is_validated() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    let sub = |dest: &str, since: &str, ack: &str| {
        Frame::new(Command::Subscribe)
            .header("id", dest)
            .header("destination", dest)
            .header("since", since)
            .header("ack", ack)
    };
    w.ok(1, sub("/topic/room", "4", "auto"));
    assert_eq!(
        parley_stomp::session::catch_up(&sub("/topic/room", "4", "auto"), Version::V1_2),
        Some(("room".to_owned(), "/topic/room".to_owned(), 4))
    );
    for (dest, since, ack) in [
        ("/topic/r2", "x", "auto"),
        ("/queue/q", "1", "auto"),
        ("/topic/r.typing", "1", "auto"),
        ("/topic/r3", "1", "client"),
    ] {
        let mut w = World::new();
        w.connect(1, Some("1.2"), Some("alice"));
        let (flow, replies) = w.handle(1, sub(dest, since, ack));
        assert_error(flow, &replies, None);
    }
}

#[test]
fn room_body_limit_and_send_rate() {
    let mut config = SessionConfig::default();
    config.max_room_body = 4;
    config.rate_limit = 2;
    let mut w = World::with(BrokerLimits::default(), config);
    w.connect(1, Some("1.2"), Some("alice"));
    let (flow, replies) = w.handle(1, send("/topic/room", "12345"));
    assert_error(flow, &replies, None);
    let mut config = SessionConfig::default();
    config.rate_limit = 2;
    let mut w = World::with(BrokerLimits::default(), config);
    w.connect(1, Some("1.2"), Some("alice"));
    w.ok(1, send("/queue/q", "a long body is fine on a queue"));
    for _ in 0..3 {
        w.ok(1, send("/topic/room", "x"));
    }
    // A burst of twice the rate, then refused (the test clock does not move).
    let (flow, replies) = w.handle(1, send("/topic/room", "x"));
    assert_error(flow, &replies, None);
}

#[test]
fn a_commit_that_cannot_apply_every_frame_applies_none() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(1, subscribe("s", "/topic/t", "auto"));
    w.ok(2, tx_frame(Command::Begin, "tx"));
    w.ok(2, send("/topic/t", "before").header("transaction", "tx"));
    // Well-formed, but nothing of bob's awaits this acknowledgement.
    w.ok(
        2,
        Frame::new(Command::Ack)
            .header("id", "42")
            .header("transaction", "tx"),
    );
    let (flow, replies) = w.handle(2, tx_frame(Command::Commit, "tx").header("receipt", "c"));
    assert_error(flow, &replies, Some("c"));
    assert!(
        w.messages(1).is_empty(),
        "the SEND of the failed COMMIT went out"
    );
}

#[test]
fn transaction_bytes_are_capped_and_returned() {
    let mut config = SessionConfig::default();
    config.max_transaction_bytes = 4096;
    let mut w = World::with(BrokerLimits::default(), config);
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(2, tx_frame(Command::Begin, "tx"));
    let big = "x".repeat(1500);
    w.ok(2, send("/topic/t", &big).header("transaction", "tx"));
    w.ok(2, send("/topic/t", &big).header("transaction", "tx"));
    w.ok(2, tx_frame(Command::Abort, "tx"));
    // ABORT gave the bytes back: the same again fits.
    w.ok(2, tx_frame(Command::Begin, "tx"));
    w.ok(2, send("/topic/t", &big).header("transaction", "tx"));
    w.ok(2, send("/topic/t", &big).header("transaction", "tx"));
    let (flow, replies) = w.handle(2, send("/topic/t", &big).header("transaction", "tx"));
    assert_error(flow, &replies, None);
    assert!(
        replies[0]
            .get("message")
            .unwrap()
            .contains("transactions hold more than 4096 bytes"),
        "{replies:?}"
    );
}

/// A world whose transactions and broker charge one budget of `limit` bytes.
fn world_with_budget(limit: usize) -> (World, Arc<MemoryBudget>) {
    let budget = MemoryBudget::new(limit);
    let mut config = SessionConfig::default();
    config.budget = budget.clone();
    let mut w = World::with(BrokerLimits::default(), config);
    w.broker.set_budget(budget.clone());
    (w, budget)
}

#[test]
fn a_commit_reserves_the_budget_for_all_its_messages_or_applies_none() {
    // A message is charged about twice its body: bob's two SENDs of 2,000 bytes are about
    // 8,600 bytes once published, 4,400 while buffered.
    let bob_body = "b".repeat(2000);
    let bob_sends = |w: &mut World| {
        w.connect(2, Some("1.2"), Some("bob"));
        w.ok(2, tx_frame(Command::Begin, "tx"));
        w.ok(2, send("/queue/q", &bob_body).header("transaction", "tx"));
        w.ok(2, send("/queue/q", &bob_body).header("transaction", "tx"));
    };
    // Room for the whole COMMIT: its own first message, charged as it is made, passes the
    // limit together with the reservation, and must not refuse its second.
    let (mut w, budget) = world_with_budget(20_000);
    w.connect(1, Some("1.2"), Some("alice"));
    w.ok(1, send("/queue/held", &"a".repeat(4000)));
    bob_sends(&mut w);
    let before = budget.used();
    w.ok(2, tx_frame(Command::Commit, "tx"));
    assert_eq!(
        w.broker.queue_depth("q"),
        2,
        "a COMMIT that fits applies every SEND"
    );
    assert!(before < budget.used(), "{before} {}", budget.used());

    // No room: others filled the budget while the transaction was open. The old check (budget
    // not spent yet) let the first SEND go and refused the second.
    let (mut w, budget) = world_with_budget(20_000);
    w.connect(1, Some("1.2"), Some("alice"));
    bob_sends(&mut w);
    w.ok(1, send("/queue/held", &"a".repeat(4000)));
    w.ok(1, send("/queue/held", &"a".repeat(3800)));
    let held = budget.used();
    assert!((20_000..24_000).contains(&held), "{held}");
    let (flow, replies) = w.handle(2, tx_frame(Command::Commit, "tx"));
    assert_error(flow, &replies, None);
    let message = replies[0].get("message").unwrap_or_default();
    assert!(message.contains("server busy"), "{message}");
    assert_eq!(
        w.broker.queue_depth("q"),
        0,
        "a refused COMMIT applied a SEND"
    );
}
#[test]
fn a_commit_with_a_room_message_while_storage_fails_applies_none() {
    let mut w = World::new();
    w.connect(1, Some("1.2"), Some("alice"));
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(1, subscribe("s", "/topic/side.channel", "auto"));
    w.ok(2, tx_frame(Command::Begin, "tx"));
    w.ok(2, send("/queue/q", "queued").header("transaction", "tx"));
    w.ok(
        2,
        send("/topic/side.channel", "not a room").header("transaction", "tx"),
    );
    w.ok(
        2,
        send("/topic/room", "a room's").header("transaction", "tx"),
    );
    w.broker.set_storage_failing(true);
    let (flow, replies) = w.handle(2, tx_frame(Command::Commit, "tx"));
    assert_error(flow, &replies, None);
    let message = replies[0].get("message").unwrap_or_default();
    assert!(message.contains("storage unavailable"), "{message}");
    assert_eq!(w.broker.queue_depth("q"), 0, "the queue SEND went out");
    assert!(w.messages(1).is_empty(), "the side-channel SEND went out");
}

/// Rules that record what SENDs they were asked to accept (where a server creates rooms).
#[derive(Default)]
struct RecordsAccepted(std::sync::Mutex<Vec<String>>);

impl Access for RecordsAccepted {
    fn subscribe(&self, _: &Identity, _: &Destination) -> Result<(), String> {
        Ok(())
    }

    fn send(&self, _: &Identity, _: &Destination) -> Result<(), String> {
        Ok(())
    }

    fn accept(&self, _: &Identity, destination: &Destination) -> Result<(), String> {
        let mut accepted = self.0.lock().unwrap_or_else(|p| p.into_inner());
        accepted.push(destination.to_string());
        Ok(())
    }
}

#[test]
fn only_a_send_nothing_refuses_is_accepted() {
    let rules = Arc::new(RecordsAccepted::default());
    let mut config = SessionConfig::default();
    config.access = AccessPolicy(rules.clone());
    config.max_room_body = 10;
    let mut w = World::with(BrokerLimits::default(), config);
    let accepted = || rules.0.lock().map(|a| a.clone()).unwrap_or_default();
    w.connect(1, Some("1.2"), Some("alice"));
    let (flow, replies) = w.handle(1, send("/topic/big", &"x".repeat(11)));
    assert_error(flow, &replies, None);
    w.connect(2, Some("1.2"), Some("bob"));
    w.ok(2, tx_frame(Command::Begin, "tx"));
    w.ok(2, send("/topic/aborted", "x").header("transaction", "tx"));
    w.ok(2, tx_frame(Command::Abort, "tx"));
    w.broker.set_storage_failing(true);
    let (flow, replies) = w.handle(2, send("/topic/failing", "x"));
    assert_error(flow, &replies, None);
    assert!(accepted().is_empty(), "{:?}", accepted());
    w.broker.set_storage_failing(false);
    w.connect(3, Some("1.2"), Some("carol"));
    w.ok(3, tx_frame(Command::Begin, "tx"));
    w.ok(3, send("/topic/committed", "x").header("transaction", "tx"));
    assert!(accepted().is_empty(), "accepted before COMMIT");
    w.ok(3, tx_frame(Command::Commit, "tx"));
    w.ok(3, send("/topic/sent", "x"));
    assert_eq!(accepted(), ["/topic/committed", "/topic/sent"]);
}
