//! Redis for the cluster suites: a standalone `redis-server`, or a Redis Cluster of three
//! primaries (`--cluster-enabled yes`, made with `redis-cli --cluster create`), on free loopback
//! ports, without persistence, killed when dropped. Nodes are given the URL of one server
//! (`redis://127.0.0.1:PORT`), as an operator would give them one node of a cluster.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fresh_data_dir;

/// Which Redis a cluster of nodes shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisKind {
    /// One `redis-server`.
    Standalone,
    /// A Redis Cluster of three shards.
    Cluster,
}

impl RedisKind {
    /// What `PARLEY_TEST_REDIS` asks for (`cluster`, else standalone): the suites that take
    /// the default run on a Redis Cluster when CI sets it.
    pub fn from_env() -> RedisKind {
        match std::env::var("PARLEY_TEST_REDIS").as_deref() {
            Ok("cluster") => RedisKind::Cluster,
            _ => RedisKind::Standalone,
        }
    }
}

/// A test's own Redis.
pub struct Redis {
    kind: RedisKind,
    servers: Vec<Server>,
    /// Cluster config files (`nodes-PORT.conf`).
    dir: PathBuf,
}

struct Server {
    port: u16,
    /// The cluster bus port (cluster mode only).
    bus_port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts one (or three for a cluster, then creates the cluster and waits until it is
    /// `cluster_state:ok`).
    pub fn start(kind: RedisKind) -> Redis {
        let count = match kind {
            RedisKind::Standalone => 1,
            RedisKind::Cluster => 3,
        };
        let servers = (0..count)
            .map(|_| Server {
                port: free_addr().port(),
                bus_port: free_addr().port(),
                child: None,
            })
            .collect();
        let dir = fresh_data_dir().with_extension("redis");
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = Redis { kind, servers, dir };
        redis.launch();
        if kind == RedisKind::Cluster {
            let mut create = Command::new("redis-cli");
            create.arg("--cluster").arg("create");
            for s in &redis.servers {
                create.arg(format!("127.0.0.1:{}", s.port));
            }
            let out = create
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .output()
                .expect("these suites need redis-cli (tests/run.sh installs it)");
            assert!(
                out.status.success(),
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            redis.wait_cluster_ok();
        }
        redis
    }

    /// Which kind it is.
    pub fn kind(&self) -> RedisKind {
        self.kind
    }

    /// `redis://127.0.0.1:PORT` of the first server (any node of a cluster would do).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.servers[0].port)
    }

    /// Kills every server (SIGKILL: nothing kept).
    pub fn stop(&mut self) {
        for s in &mut self.servers {
            kill(&mut s.child);
        }
    }

    /// Kills server `i` alone (a cluster's shard).
    pub fn stop_one(&mut self, i: usize) {
        kill(&mut self.servers[i].child);
    }

    /// Starts every stopped server again on its ports, empty (a cluster's nodes keep their
    /// cluster configuration, as a restarted node does), and waits for a cluster to be ok.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
        if self.kind == RedisKind::Cluster {
            self.wait_cluster_ok();
        }
    }

    /// Restarts server `i` alone, empty, and waits for a cluster to be ok again.
    pub fn restart_one(&mut self, i: usize) {
        self.stop_one(i);
        self.launch();
        if self.kind == RedisKind::Cluster {
            self.wait_cluster_ok();
        }
    }

    /// Runs `redis-cli -p PORT ARGS` against server `i`; its output, trimmed.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.servers[i].port.to_string()])
            .args(args)
            .output()
            .expect("these suites need redis-cli (tests/run.sh installs it)");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The server (index) whose slots hold `key` in a cluster (`CLUSTER KEYSLOT`, then which
    /// node's `myself` line in `CLUSTER NODES` covers the slot).
    pub fn shard_of(&self, key: &str) -> usize {
        let slot: u32 = (self.cli(0, &["cluster", "keyslot", key]).parse())
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT {key}: {e}"));
        (0..self.servers.len())
            .find(|&i| {
                let nodes = self.cli(i, &["cluster", "nodes"]);
                let mine = nodes.lines().find(|l| l.contains("myself")).unwrap_or("");
                mine.split_whitespace().skip(8).any(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    matches!((a.parse::<u32>(), b.parse::<u32>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
                })
            })
            .unwrap_or_else(|| panic!("no node serves slot {slot} of {key}"))
    }

    /// Starts the servers that are not running.
    fn launch(&mut self) {
        for s in &mut self.servers {
            if s.child.is_some() {
                continue;
            }
            let mut command = Command::new("redis-server");
            command
                .args(["--port", &s.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"]);
            if self.kind == RedisKind::Cluster {
                let conf = self.dir.join(format!("nodes-{}.conf", s.port));
                command
                    .args(["--cluster-enabled", "yes", "--cluster-port"])
                    .arg(s.bus_port.to_string())
                    .arg("--cluster-config-file")
                    .arg(conf)
                    .arg("--dir")
                    .arg(&self.dir);
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], s.port));
            s.child = Some(spawn_listening(&mut command, addr, "redis-server"));
        }
    }

    /// Waits (20 s at most) until every node says `cluster_state:ok`.
    fn wait_cluster_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..self.servers.len() {
            while !self
                .cli(i, &["cluster", "info"])
                .contains("cluster_state:ok")
            {
                assert!(Instant::now() < deadline, "the Redis Cluster never got ok");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A free loopback address (the port is free the moment this returns).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Spawns `command` (output discarded) and waits until something listens on `addr`; panics
/// if `what` is missing, exits, or does not listen within 10 s.
pub fn spawn_listening(command: &mut Command, addr: SocketAddr, what: &str) -> Child {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("these suites need {what} (tests/run.sh installs it): {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status})");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}
