//! Connecting the bus to Redis, standalone or Redis Cluster, and probing that connection.
//!
//! A `redis://` URL may name a standalone Redis or one node of a Redis Cluster: the node is
//! asked (`INFO cluster`), and a cluster node makes the bus connect in cluster mode seeded with
//! it (fred then discovers the other nodes and follows their slots). A centralized connection
//! to a cluster node would start fine and then fail every command on a key or channel of
//! another shard (`MOVED`). `redis-cluster://` says it outright and skips the question.

use std::time::Duration;

use anyhow::Context as _;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::ClientLike;
use fred::types::config::{ClusterDiscoveryPolicy, Config, ReconnectPolicy, ServerConfig};
use fred::types::{Builder, InfoKind};
use tracing::info;

/// Connecting to Redis at start-up, and each probe's wait for an answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the bus reaches Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One Redis server (or a proxy in front of several).
    Standalone,
    /// A Redis Cluster: commands and sharded channels go to the node owning their slot.
    Cluster,
}

/// The bus's two connections: commands and publishing, and the subscriptions.
pub struct Clients {
    /// Publishing, presence hashes, reads.
    pub publisher: Client,
    /// Sharded subscriptions (`SSUBSCRIBE`).
    pub subscriber: SubscriberClient,
    /// How they reach Redis.
    pub mode: Mode,
}

/// Connects to Redis at `url`, in cluster mode when the URL says so or the server it names is
/// a Redis Cluster node. Fails, saying why, when Redis cannot be reached within 10 s.
pub async fn connect(secret_url: &str, incoming_capacity: usize) -> anyhow::Result<Clients> {
    // What logs and errors show: without the password.
    let url = &crate::store::redact_url(secret_url);
    let mut config = Config::from_url(secret_url).with_context(|| format!("--cluster {url:?}"))?;
    let mode = match &config.server {
        ServerConfig::Clustered { .. } => Mode::Cluster,
        ServerConfig::Centralized { server } => {
            if is_cluster_node(&config, url).await? {
                if config.database.is_some_and(|db| db != 0) {
                    anyhow::bail!(
                        "--cluster {url:?} names a database, but {server} is a Redis Cluster node \
                         (a cluster has database 0 only): leave the database out of the URL"
                    );
                }
                config.database = None;
                config.server = ServerConfig::Clustered {
                    hosts: vec![server.clone()],
                    policy: ClusterDiscoveryPolicy::default(),
                };
                Mode::Cluster
            } else {
                Mode::Standalone
            }
        }
        _ => Mode::Standalone,
    };
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = Duration::from_secs(5);
        })
        .with_performance_config(|c| c.broadcast_channel_capacity = incoming_capacity)
        // Reconnect forever, every half second: Redis coming back is the normal case.
        .set_policy(ReconnectPolicy::new_constant(0, 500));
    let publisher = builder.build()?;
    let subscriber = builder.build_subscriber_client()?;
    init(&publisher, url).await?;
    init(&subscriber, url).await?;
    match mode {
        Mode::Standalone => info!(%url, "cluster bus: standalone Redis"),
        Mode::Cluster => info!(
            %url,
            nodes = publisher.active_connections().len(),
            "cluster bus: Redis Cluster (sharded channels go to the node owning their slot)"
        ),
    }
    Ok(Clients {
        publisher,
        subscriber,
        mode,
    })
}

/// Asks the server `config` names whether it is a Redis Cluster node, on a connection of its
/// own that does not retry: an unreachable Redis stops the start here.
async fn is_cluster_node(config: &Config, url: &str) -> anyhow::Result<bool> {
    let mut builder = Builder::from_config(config.clone());
    builder.with_connection_config(|c| {
        c.connection_timeout = Duration::from_secs(5);
        c.internal_command_timeout = Duration::from_secs(5);
    });
    let probe = builder.build()?;
    init(&probe, url).await?;
    let asked = tokio::time::timeout(
        CONNECT_TIMEOUT,
        probe.info::<String>(Some(InfoKind::Cluster)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer from Redis at {url} within 10 s"));
    let _ = probe.quit().await;
    let info = asked?.with_context(|| format!("asking Redis at {url} for INFO cluster"))?;
    Ok(cluster_enabled(&info))
}

/// `INFO cluster` says `cluster_enabled:1`.
fn cluster_enabled(info: &str) -> bool {
    info.lines().any(|line| line.trim() == "cluster_enabled:1")
}

/// Connects `client`, within [`CONNECT_TIMEOUT`].
async fn init(client: &impl ClientLike, url: &str) -> anyhow::Result<()> {
    tokio::time::timeout(CONNECT_TIMEOUT, client.init())
        .await
        .map_err(|_| anyhow::anyhow!("no answer from Redis at {url} within 10 s"))?
        .with_context(|| format!("connecting to Redis at {url}"))?;
    Ok(())
}

/// Whether both connections are up and every server the publisher reaches (each primary of a
/// Redis Cluster) answers a `PING` within `limit`; `Err` says what is wrong.
pub async fn probe(clients: &Clients, limit: Duration) -> Result<(), String> {
    if !clients.subscriber.is_connected() {
        return Err("not connected to Redis for subscribing".into());
    }
    if !clients.publisher.is_connected() {
        return Err("not connected to Redis for publishing".into());
    }
    let servers = match clients.mode {
        Mode::Standalone => vec![None],
        Mode::Cluster => (clients.publisher.active_connections().into_iter())
            .map(Some)
            .collect(),
    };
    for server in servers {
        let name =
            (server.as_ref()).map_or_else(|| "Redis".to_owned(), |s| format!("Redis node {s}"));
        let ping = async {
            match &server {
                Some(s) => {
                    (clients.publisher.with_cluster_node(s.clone()))
                        .ping::<String>(None)
                        .await
                }
                None => clients.publisher.ping::<String>(None).await,
            }
        };
        match tokio::time::timeout(limit, ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(format!("{name} fails: {error}")),
            Err(_) => return Err(format!("no answer from {name} within {limit:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_node_says_so_in_info_cluster() {
        assert!(cluster_enabled("# Cluster\r\ncluster_enabled:1\r\n"));
        assert!(!cluster_enabled("# Cluster\r\ncluster_enabled:0\r\n"));
        assert!(!cluster_enabled(""));
    }

    #[test]
    fn shown_urls_hold_no_password() {
        assert_eq!(
            crate::store::redact_url("redis://:hunter22@r:6379"),
            "redis://@r:6379"
        );
        assert_eq!(
            crate::store::redact_url("redis://u:hunter22@r/0"),
            "redis://u@r/0"
        );
        assert_eq!(crate::store::redact_url("redis://r:6379"), "redis://r:6379");
    }
}
