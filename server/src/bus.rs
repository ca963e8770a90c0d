//! The cluster bus (`--cluster redis://…`): nodes share rooms through Redis sharded pub/sub, with
//! PostgreSQL as the one store and the one source of message ids. It calls the hub back only
//! through [`BusEvents`], so it depends on nothing above it.
//!
//! A room message is numbered and stored first (one transaction: the room's counter and the
//! row), then its node delivers it to its own clients and publishes it on the room's shard
//! channel; every other node watching the room delivers it when it arrives. Each node hands a
//! room's messages to its clients in id order, and ids are consecutive, so a message ahead of
//! the next expected id shows a gap: it waits while the missing ones are read from storage,
//! where they always are (they were committed before their id's successor could be given).
//! Redis keeps nothing: losing it (or a message in it) costs latency, never a message.
//!
//! Side channels (`<room>.typing`, `<room>.presence`) travel on their room's channel and user
//! destinations on the user's channel, neither numbered nor stored. `/queue/` destinations
//! stay on the node where they were sent.

mod admin;
mod connect;
mod online;

pub use self::admin::AdminEvent;
pub use self::online::{OnlineMap, Seen};

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{EventInterface as _, HashesInterface as _, PubsubInterface as _};
use parley_stomp::broker::Forwarded;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::clock::now_ms;

/// Messages waiting to be published; beyond this they are dropped (other nodes then read them
/// from storage when the next one shows the gap).
const OUTGOING_CAPACITY: usize = 65_536;

/// Pub/sub messages buffered between the Redis connection and the hub; a lagging hub loses
/// some and resynchronises from storage.
const INCOMING_CAPACITY: usize = 65_536;

/// The shard channel carrying a fan-out key's messages: a room and its side channels share
/// one, a user's destinations another. The `{…}` hash tag keeps a room on one Redis Cluster
/// shard.
pub fn channel_of(key: &str) -> Option<String> {
    if let Some(topic) = key.strip_prefix("/topic/") {
        let room = topic.split('.').next().unwrap_or(topic);
        return Some(format!("parley:{{{room}}}"));
    }
    let user = key.strip_prefix("/user/")?.split('/').next()?;
    Some(format!("parley:user:{{{user}}}"))
}

/// The room whose messages a channel carries, if it is a room channel.
fn room_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("parley:{")?.strip_suffix('}')
}

/// What the bus asks of the hub: delivering what other nodes sent, and catching up from
/// storage when the bus may have lost something.
pub trait BusEvents: Send + Sync {
    /// A message from another node (or numbered here), to deliver to this node's subscribers.
    fn accept_forwarded(&self, message: Forwarded);
    /// `room`'s rules changed on another node: read them back from storage.
    fn reload_room_rules(&self, room: String);
    /// Every room's rules may have changed unseen: read them all back from storage.
    fn reload_acl(&self);
    /// Deliver what storage holds of `room` beyond what this node delivered.
    fn resync_room(&self, room: String);
    /// [`BusEvents::resync_room`] for every room this node watches.
    fn resync_rooms(&self);
    /// Rooms with a subscriber on this node.
    fn watched_rooms(&self) -> Vec<String>;
    /// `user` has a subscription to `room` on this node.
    fn is_present_here(&self, room: &str, user: &str) -> bool;
    /// `user` left `room` because the node they were on is gone.
    fn announce_gone(&self, room: &str, user: &str, guest: bool);
    /// An operator on another node did `event`: carry it out here.
    fn admin(&self, event: AdminEvent);
}

/// A message on the bus: `P1` line, JSON envelope line, then the body as it is.
#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    key: String,
    shown: String,
    room: Option<String>,
    id: u64,
    sender: String,
    guest: bool,
    ts: u64,
    headers: Vec<(String, String)>,
}

fn encode(node: &str, m: &Forwarded) -> Bytes {
    let envelope = Envelope {
        node: node.to_owned(),
        key: m.key.clone(),
        shown: m.shown.clone(),
        room: m.room.clone(),
        id: m.id,
        sender: m.sender.clone(),
        guest: m.guest,
        ts: m.now_ms,
        headers: m.headers.clone(),
    };
    let json = serde_json::to_vec(&envelope).unwrap_or_default();
    let mut out = BytesMut::with_capacity(json.len() + m.body.len() + 4);
    out.put_slice(b"P1\n");
    out.put_slice(&json);
    out.put_u8(b'\n');
    out.put_slice(&m.body);
    out.freeze()
}

/// The sending node and the message, or `None` for something that is not ours.
fn decode(payload: &[u8]) -> Option<(String, Forwarded)> {
    let rest = payload.strip_prefix(b"P1\n")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let envelope: Envelope = serde_json::from_slice(&rest[..end]).ok()?;
    let message = Forwarded {
        key: envelope.key,
        shown: envelope.shown,
        room: envelope.room,
        id: envelope.id,
        sender: envelope.sender,
        guest: envelope.guest,
        now_ms: envelope.ts,
        headers: envelope.headers,
        body: Bytes::copy_from_slice(&rest[end + 1..]),
        also: None,
    };
    Some((envelope.node, message))
}

/// The channel every node receives room-rule changes on.
const ACL_CHANNEL: &str = "parley:acl";

/// "The rules of this room changed" (storage holds what they are now).
#[derive(Serialize, Deserialize)]
struct RulesChanged {
    node: String,
    room: String,
}

/// A change of this node's presence in a room, for the shared presence hash.
enum PresenceOp {
    Joined {
        room: String,
        user: String,
        guest: bool,
    },
    Left {
        room: String,
        user: String,
    },
}

/// The Redis hash of who is in `room`: field `user\nnode`, value `expiry_ms guest(0|1)`.
fn presence_key(room: &str) -> String {
    format!("parley:{{{room}}}:present")
}

/// What the hub asks of the bus.
enum Command {
    /// Start receiving a channel; `live` turns true once messages on it reach this node.
    Watch(String, watch::Sender<bool>),
    /// Stop receiving a channel.
    Unwatch(String),
}

/// This node's connection to the others.
pub struct Bus {
    /// This node's random id: a node ignores its own messages coming back.
    node: String,
    outgoing: mpsc::Sender<(String, Bytes)>,
    commands: mpsc::UnboundedSender<Command>,
    presence: mpsc::Sender<PresenceOp>,
    /// For reading the presence hashes.
    reader: Client,
    /// Presence entries expire this long after their last refresh.
    presence_ttl: Duration,
    /// Parts started by [`Bus::start`].
    parts: Mutex<Option<Parts>>,
    /// Who is online on any node.
    online: online::OnlineShare,
    /// Both connections, for [`Bus::probe`].
    clients: connect::Clients,
    /// Subscriptions Redis refuses at the moment (each retried until taken).
    failing_subscriptions: Arc<AtomicUsize>,
}

struct Parts {
    publisher: Client,
    subscriber: SubscriberClient,
    outgoing: mpsc::Receiver<(String, Bytes)>,
    commands: mpsc::UnboundedReceiver<Command>,
    presence: mpsc::Receiver<PresenceOp>,
}

impl Bus {
    /// Connects to Redis at `url` (`redis://host:port` of a standalone Redis or of any node of
    /// a Redis Cluster, or `redis-cluster://…`); fails if it cannot within 10 s. A node's
    /// presence entries expire `presence_ttl` after their last refresh.
    pub async fn connect(url: &str, presence_ttl: Duration) -> anyhow::Result<Arc<Self>> {
        let clients = connect::connect(url, INCOMING_CAPACITY).await?;
        let (publisher, subscriber) = (clients.publisher.clone(), clients.subscriber.clone());
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("random node id: {e}"))?;
        let node = id.iter().map(|b| format!("{b:02x}")).collect();
        let (outgoing_tx, outgoing) = mpsc::channel(OUTGOING_CAPACITY);
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (presence_tx, presence) = mpsc::channel(OUTGOING_CAPACITY);
        info!(%node, "joined the cluster");
        Ok(Arc::new(Self {
            node,
            outgoing: outgoing_tx,
            commands: commands_tx,
            presence: presence_tx,
            reader: publisher.clone(),
            online: online::OnlineShare::new(publisher.clone()),
            presence_ttl,
            clients,
            failing_subscriptions: Arc::new(AtomicUsize::new(0)),
            parts: Mutex::new(Some(Parts {
                publisher,
                subscriber,
                outgoing,
                commands,
                presence,
            })),
        }))
    }

    /// Starts the tasks that publish, receive and manage subscriptions for `hub`.
    pub fn start(&self, hub: Weak<dyn BusEvents>) {
        let Some(parts) = self.parts.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        let Parts {
            publisher,
            subscriber,
            outgoing,
            commands,
            presence,
        } = parts;
        self.online.start(self.node.clone(), self.presence_ttl);
        tokio::spawn(presence_loop(
            publisher.clone(),
            self.node.clone(),
            self.presence_ttl,
            presence,
            hub.clone(),
        ));
        tokio::spawn(publish_loop(publisher, outgoing));
        let _resubscribe = subscriber.manage_subscriptions();
        let (always, rules_hub) = (subscriber.clone(), hub.clone());
        let failing = self.failing_subscriptions.clone();
        tokio::spawn(async move {
            subscribe_until_done(&always, ACL_CHANNEL, &failing).await;
            // Changes made between loading the rules at start and now came on no channel.
            if let Some(hub) = rules_hub.upgrade() {
                hub.reload_acl();
            }
        });
        tokio::spawn(receive_loop(
            subscriber.clone(),
            self.node.clone(),
            hub.clone(),
        ));
        let failing = self.failing_subscriptions.clone();
        tokio::spawn(watch_loop(subscriber, commands, hub, failing));
    }

    /// Sends `message` (numbered if it is a room's) to every other node; never blocks. A
    /// message for a second key ([`Forwarded::also`]: a DM's copy for its sender) goes on that
    /// key's channel too, as a message for that key alone.
    pub fn publish(&self, message: &Forwarded) {
        if let Some(also) = &message.also {
            let copy = Forwarded {
                key: also.clone(),
                also: None,
                ..message.clone()
            };
            self.publish_one(&copy);
            let original = Forwarded {
                also: None,
                ..message.clone()
            };
            return self.publish_one(&original);
        }
        self.publish_one(message);
    }

    fn publish_one(&self, message: &Forwarded) {
        let Some(channel) = channel_of(&message.key) else {
            return;
        };
        if self
            .outgoing
            .try_send((channel, encode(&self.node, message)))
            .is_err()
        {
            crate::metrics::handles().bus_dropped.increment(1);
            warn!("cluster bus backlog full: a message goes to other nodes through storage only");
        }
    }

    /// Records in the shared presence hash that `user` joined or left `room` on this node.
    pub fn presence_changed(&self, room: &str, user: &str, guest: bool, joined: bool) {
        let op = if joined {
            PresenceOp::Joined {
                room: room.to_owned(),
                user: user.to_owned(),
                guest,
            }
        } else {
            PresenceOp::Left {
                room: room.to_owned(),
                user: user.to_owned(),
            }
        };
        if self.presence.try_send(op).is_err() {
            warn!("presence backlog full: a presence change was not shared");
        }
    }

    /// Records that `user` is online on this node (`Some`: and whether away) or no longer.
    pub fn online_changed(&self, user: &str, seen: Option<Seen>) {
        self.online.changed(user, seen);
    }

    /// Who is online on any node (read at most a second ago); empty if Redis cannot say.
    pub async fn online(&self) -> OnlineMap {
        self.online.everyone().await
    }

    /// Who is in `room` on any node (entries not expired); empty if Redis cannot say.
    pub async fn present(&self, room: &str) -> Vec<String> {
        let read = tokio::time::timeout(
            Duration::from_secs(2),
            self.reader
                .hgetall::<HashMap<String, String>, _>(presence_key(room)),
        )
        .await;
        let Ok(Ok(entries)) = read else {
            return Vec::new();
        };
        let now = now_ms();
        let mut users: Vec<String> = entries
            .iter()
            .filter(|(_, value)| parse_presence(value).is_some_and(|(expiry, _)| expiry > now))
            .filter_map(|(field, _)| field.split('\n').next().map(str::to_owned))
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// Tells the other nodes that `room`'s rules changed: they read them back from storage.
    pub fn publish_rules_changed(&self, room: &str) {
        let envelope = RulesChanged {
            node: self.node.clone(),
            room: room.to_owned(),
        };
        let mut payload = b"A1\n".to_vec();
        payload.extend(serde_json::to_vec(&envelope).unwrap_or_default());
        if self
            .outgoing
            .try_send((ACL_CHANNEL.to_owned(), Bytes::from(payload)))
            .is_err()
        {
            warn!("cluster bus backlog full: a room-rule change did not reach other nodes");
        }
    }

    /// This node's id in the cluster.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Tells the other nodes what an operator did here; each carries it out.
    pub fn publish_admin(&self, event: &AdminEvent) {
        let payload = admin::encode(&self.node, event);
        if self
            .outgoing
            .try_send((ACL_CHANNEL.to_owned(), payload))
            .is_err()
        {
            // They read bans and closed rooms back from storage every 30 s (hub/admin.rs).
            warn!(
                ?event,
                "cluster bus backlog full: an operator's action did not reach other \
                nodes (they catch up on bans and closed rooms from storage; a kick is lost)"
            );
        }
    }

    /// Starts receiving `channel`; `live` turns true once it is subscribed and caught up.
    pub fn watch(&self, channel: String, live: watch::Sender<bool>) {
        let _ = self.commands.send(Command::Watch(channel, live));
    }

    /// Stops receiving `channel`.
    pub fn unwatch(&self, channel: String) {
        let _ = self.commands.send(Command::Unwatch(channel));
    }

    /// Whether this node can publish and receive now: connected for both, every Redis server
    /// (each primary of a cluster) answering within `limit`, no subscription refused. `Err`
    /// says what is wrong.
    pub async fn probe(&self, limit: Duration) -> Result<(), String> {
        connect::probe(&self.clients, limit).await?;
        match self.failing_subscriptions.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(format!("Redis refuses {n} subscription(s)")),
        }
    }
}

/// `expiry_ms guest` from a presence hash value.
fn parse_presence(value: &str) -> Option<(u64, bool)> {
    let (expiry, guest) = value.split_once(' ')?;
    Some((expiry.parse().ok()?, guest == "1"))
}

/// Keeps this node's entries in the presence hashes (written on join and leave, refreshed every
/// quarter of the TTL, so they come back after a Redis restart too), and removes other nodes'
/// expired ones from the rooms this node serves, announcing those users' departure: a crashed
/// node's users leave within about the TTL.
async fn presence_loop(
    client: Client,
    node: String,
    ttl: Duration,
    mut ops: mpsc::Receiver<PresenceOp>,
    hub: Weak<dyn BusEvents>,
) {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let entry = |user: &str| format!("{user}\n{node}");
    let value = |guest: bool| {
        let expiry = now_ms().saturating_add(ttl_ms);
        format!("{expiry} {}", u8::from(guest))
    };
    let mut mine: HashMap<(String, String), bool> = HashMap::new();
    let mut tick = tokio::time::interval((ttl / 4).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            op = ops.recv() => match op {
                None => return,
                Some(PresenceOp::Joined { room, user, guest }) => {
                    let field = entry(&user);
                    let write = client.hset::<(), _, _>(presence_key(&room), vec![(field, value(guest))]);
                    mine.insert((room, user), guest);
                    if let Err(error) = write.await {
                        debug!(%error, "presence not written; the next refresh retries");
                    }
                }
                Some(PresenceOp::Left { room, user }) => {
                    let field = entry(&user);
                    mine.remove(&(room.clone(), user));
                    if let Err(error) = client.hdel::<i64, _, _>(presence_key(&room), field).await {
                        debug!(%error, "presence not removed; it expires");
                    }
                }
            },
            _ = tick.tick() => {
                let pipeline = client.pipeline();
                for ((room, user), guest) in &mine {
                    let _ = pipeline
                        .hset::<(), _, _>(presence_key(room), vec![(entry(user), value(*guest))])
                        .await;
                }
                if !mine.is_empty() {
                    if let Err(error) = pipeline.all::<Vec<fred::types::Value>>().await {
                        debug!(%error, "refreshing presence failed; retried next time");
                    }
                }
                let Some(hub) = hub.upgrade() else { return };
                for room in hub.watched_rooms() {
                    sweep(&client, &node, &room, &*hub).await;
                }
                // A message the bus lost in a room where nobody speaks next shows no gap:
                // compare with storage now and then.
                hub.resync_rooms();
            }
        }
    }
}

/// Removes expired presence entries of other nodes in `room`; whoever removes one announces
/// that user's departure, unless they are still present through another node.
async fn sweep(client: &Client, node: &str, room: &str, hub: &dyn BusEvents) {
    let key = presence_key(room);
    let Ok(entries) = client.hgetall::<HashMap<String, String>, _>(&key).await else {
        return;
    };
    let now = now_ms();
    let live_users: std::collections::HashSet<&str> = entries
        .iter()
        .filter(|(_, v)| parse_presence(v).is_some_and(|(expiry, _)| expiry > now))
        .filter_map(|(f, _)| f.split('\n').next())
        .collect();
    for (field, value) in &entries {
        let Some((user, owner)) = field.split_once('\n') else {
            continue;
        };
        let Some((expiry, guest)) = parse_presence(value) else {
            continue;
        };
        if expiry > now || owner == node {
            continue;
        }
        // HDEL decides which node announces it: the one whose delete removed the entry.
        if matches!(client.hdel::<i64, _, _>(&key, field.as_str()).await, Ok(1))
            && !live_users.contains(user)
            && !hub.is_present_here(room, user)
        {
            info!(%room, %user, "presence expired: its node is gone");
            hub.announce_gone(room, user, guest);
        }
    }
}

/// Publishes in order, many commands in flight on one connection.
async fn publish_loop(publisher: Client, mut outgoing: mpsc::Receiver<(String, Bytes)>) {
    let mut batch = Vec::with_capacity(256);
    let mut failing = false;
    while outgoing.recv_many(&mut batch, 256).await > 0 {
        // One pipeline per batch: written in order, one round trip for all of them.
        let pipeline = publisher.pipeline();
        for (channel, payload) in batch.drain(..) {
            let _ = pipeline.spublish::<(), _, _>(channel, payload).await;
        }
        match pipeline.all::<Vec<fred::types::Value>>().await {
            Ok(_) => failing = false,
            Err(error) if !failing => {
                failing = true;
                warn!(%error, "publishing to Redis failed; other nodes catch up from storage");
            }
            Err(_) => {}
        }
    }
}

/// Hands every message from other nodes to the hub; after a reconnect or a lag, resynchronises
/// every watched room from storage.
async fn receive_loop(subscriber: SubscriberClient, node: String, hub: Weak<dyn BusEvents>) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        tokio::select! {
            received = messages.recv() => match received {
                Ok(message) => {
                    let Some(hub) = hub.upgrade() else { return };
                    let Some(payload) = message.value.as_bytes() else { continue };
                    if let Some(decoded) = admin::decode(payload) {
                        match decoded {
                            Ok((from, event)) if from != node => hub.admin(event),
                            Ok(_) => {}
                            Err(error) => debug!(%error, "ignoring a malformed admin event"),
                        }
                        continue;
                    }
                    if let Some(json) = payload.strip_prefix(b"A1\n") {
                        match serde_json::from_slice::<RulesChanged>(json) {
                            Ok(e) if e.node != node => hub.reload_room_rules(e.room),
                            Ok(_) => {}
                            Err(error) => debug!(%error, "ignoring a malformed room-rule change"),
                        }
                        continue;
                    }
                    match decode(payload) {
                        Some((from, _)) if from == node => {} // delivered here already
                        Some((_, forwarded)) => {
                            let lag = now_ms().saturating_sub(forwarded.now_ms);
                            crate::metrics::handles().bus_lag.record(lag as f64 / 1000.0);
                            hub.accept_forwarded(forwarded);
                        }
                        None => debug!(channel = %message.channel, "ignoring a foreign message"),
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(lost)) => {
                    warn!(lost, "fell behind the cluster bus; catching up from storage");
                    let Some(hub) = hub.upgrade() else { return };
                    hub.resync_rooms();
                    hub.reload_acl();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            reconnected = reconnects.recv() => {
                if reconnected.is_ok() {
                    crate::metrics::handles().bus_reconnects.increment(1);
                    info!("reconnected to Redis; catching up from storage");
                    let Some(hub) = hub.upgrade() else { return };
                    hub.resync_rooms();
                    // Once more when the resubscriptions surely went through: what was sent
                    // in between came on no channel.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        hub.resync_rooms();
                        hub.reload_acl();
                    });
                }
            }
        }
    }
}

/// Subscribes to `channel`, trying again every half second until Redis takes it (fred only
/// resubscribes after a reconnect what was subscribed successfully once).
/// `failing` counts it while it fails.
async fn subscribe_until_done(subscriber: &SubscriberClient, channel: &str, failing: &AtomicUsize) {
    let mut warned = false;
    while let Err(error) = subscriber.ssubscribe(channel.to_owned()).await {
        if !warned {
            warn!(%error, %channel, "subscribing failed; trying again until Redis takes it");
            warned = true;
            failing.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if warned {
        failing.fetch_sub(1, Ordering::Relaxed);
        info!(%channel, "subscribed after all");
    }
}

/// Subscribes and unsubscribes channels as the hub asks, in order.
async fn watch_loop(
    subscriber: SubscriberClient,
    mut commands: mpsc::UnboundedReceiver<Command>,
    hub: Weak<dyn BusEvents>,
    failing: Arc<AtomicUsize>,
) {
    while let Some(command) = commands.recv().await {
        match command {
            Command::Watch(channel, live) => {
                subscribe_until_done(&subscriber, &channel, &failing).await;
                // Messages committed while subscribing did not come on the channel: read them.
                if let (Some(room), Some(hub)) = (room_of_channel(&channel), hub.upgrade()) {
                    hub.resync_room(room.to_owned());
                }
                let _ = live.send(true);
            }
            Command::Unwatch(channel) => {
                if let Err(error) = subscriber.sunsubscribe(channel.clone()).await {
                    debug!(%error, %channel, "unsubscribing failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_and_their_side_channels_share_a_channel() {
        assert_eq!(
            channel_of("/topic/general").as_deref(),
            Some("parley:{general}")
        );
        assert_eq!(
            channel_of("/topic/general.typing").as_deref(),
            Some("parley:{general}")
        );
        assert_eq!(
            channel_of("/user/alice/queue/dm").as_deref(),
            Some("parley:user:{alice}")
        );
        assert_eq!(channel_of("/queue/jobs"), None);
        assert_eq!(room_of_channel("parley:{general}"), Some("general"));
        assert_eq!(room_of_channel("parley:user:{alice}"), None);
    }

    #[test]
    fn envelopes_round_trip_with_any_body() {
        let message = Forwarded {
            key: "/topic/r".into(),
            shown: "/topic/r".into(),
            room: Some("r".into()),
            id: 7,
            sender: "alice".into(),
            guest: true,
            now_ms: 1234,
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: Bytes::from_static(b"\x00\n\xffbinary\n"),
            also: None,
        };
        let (node, back) = decode(&encode("n1", &message)).unwrap();
        assert_eq!(node, "n1");
        assert_eq!(back, message);
        assert!(decode(b"something else").is_none());
    }
}
