//! Several `parley` nodes sharing Redis and PostgreSQL, for the cluster suites.
//!
//! Each suite gets its own Redis (`redis.rs`: a `redis-server`, or a three-shard Redis Cluster,
//! on free loopback ports, so a test may stop and restart it) and its own PostgreSQL database on the server `PARLEY_TEST_DATABASE` names, or
//! `postgres://postgres@127.0.0.1:5432/test` (the machine's) when it is unset.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::redis::{free_addr, spawn_listening, Redis, RedisKind};
use crate::{fresh_data_dir, ServerProcess};

/// The PostgreSQL server holding the cluster suites' databases.
fn admin_url() -> String {
    std::env::var("PARLEY_TEST_DATABASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database of its own for one cluster, dropped afterwards.
pub struct SharedDatabase {
    admin: String,
    name: String,
    /// What the nodes pass as `--database`.
    pub url: String,
}

impl SharedDatabase {
    /// Creates an empty database named after `test`.
    pub fn create(test: &str) -> SharedDatabase {
        let admin = admin_url();
        let name = format!("parley_e2e_cluster_{test}_{}", std::process::id());
        let (a, n) = (admin.clone(), name.clone());
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&a, postgres::NoTls).unwrap_or_else(|e| {
                panic!("the cluster suites need PostgreSQL at {a} (PARLEY_TEST_DATABASE): {e}")
            });
            // One statement each: DROP/CREATE DATABASE refuse to run inside a transaction.
            for sql in [
                format!("DROP DATABASE IF EXISTS {n}"),
                format!("CREATE DATABASE {n}"),
            ] {
                client
                    .batch_execute(&sql)
                    .expect("creating the cluster's database");
            }
        })
        .join()
        .expect("creating the cluster's database panicked");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        SharedDatabase { admin, name, url }
    }
}

impl Drop for SharedDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(mut client) = postgres::Client::connect(&admin, postgres::NoTls) {
                let _ =
                    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// Nodes of one cluster, each with its own data directory.
pub struct Cluster {
    /// The nodes, in start order.
    pub nodes: Vec<ServerProcess>,
    data: Vec<PathBuf>,
    args: Vec<String>,
    /// Their Redis.
    pub redis: Redis,
    /// Their database (kept until the cluster is dropped).
    pub database: SharedDatabase,
}

impl Cluster {
    /// `count` nodes allowing guests, on a fresh Redis (of the kind `PARLEY_TEST_REDIS` asks
    /// for, standalone by default) and database, with `extra` flags.
    pub fn start(test: &str, count: usize, extra: &[&str]) -> Cluster {
        Self::start_on(RedisKind::from_env(), test, count, extra)
    }

    /// [`Cluster::start`] on a Redis of `kind`, given to the nodes as one server's
    /// `redis://` URL.
    pub fn start_on(kind: RedisKind, test: &str, count: usize, extra: &[&str]) -> Cluster {
        let redis = Redis::start(kind);
        let database = SharedDatabase::create(test);
        // One JWT secret for all: a token from one node is good on every node.
        let secret = fresh_data_dir().with_extension("jwt-secret");
        std::fs::write(
            &secret,
            format!("cluster-test-secret-{test}-0123456789abcdef0123456789"),
        )
        .expect("writing the shared JWT secret");
        let mut args: Vec<String> = vec![
            "--cluster".into(),
            redis.url(),
            "--database".into(),
            database.url.clone(),
            "--jwt-secret-file".into(),
            secret.display().to_string(),
            // The shipped balancer configurations (Nginx, Haproxy below) name clients with
            // X-Forwarded-For and the PROXY protocol, believed from their address only.
            "--trusted-proxy".into(),
            "127.0.0.1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let data: Vec<PathBuf> = (0..count).map(|_| fresh_data_dir()).collect();
        let nodes = data
            .iter()
            .map(|d| {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                ServerProcess::start_with_data(d, &a)
            })
            .collect();
        Cluster {
            nodes,
            data,
            args,
            redis,
            database,
        }
    }

    /// Starts node `i` again (after it exited) on its data directory and its addresses.
    pub fn restart(&mut self, i: usize) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let a = crate::chat_suite_args(&args);
        let (http, stomp) = (
            self.nodes[i].addr().to_string(),
            self.nodes[i].stomp_addr().to_string(),
        );
        self.nodes[i] = ServerProcess::start_at(&self.data[i], &http, &stomp, &a);
    }
}

/// nginx running `deploy/nginx.conf` in front of a cluster's nodes: the shipped configuration,
/// with the nodes' and its own addresses put in and its files in a scratch directory.
pub struct Nginx {
    child: Child,
    /// Where clients reach the nodes over HTTP and WebSocket.
    pub http: SocketAddr,
    /// Where clients reach the nodes' STOMP over TCP.
    pub stomp: SocketAddr,
}

impl Nginx {
    /// Starts nginx for `nodes` (three at most, as in the shipped file).
    pub fn start(nodes: &[&ServerProcess]) -> Nginx {
        let (http, stomp) = (free_addr(), free_addr());
        let conf = shipped_for("deploy/nginx.conf", nodes)
            .replace("listen 8080;", &format!("listen {http};"))
            .replace("listen 61610;", &format!("listen {stomp};"))
            .replace("pid /tmp/parley-nginx.pid;", "pid nginx.pid;");
        let prefix = fresh_data_dir().with_extension("nginx");
        std::fs::create_dir_all(&prefix).expect("nginx prefix");
        // Debian builds the stream module as a dynamic module (libnginx-mod-stream).
        let modules = ["/usr/lib/nginx/modules/ngx_stream_module.so"]
            .iter()
            .filter(|m| std::path::Path::new(m).exists())
            .map(|m| format!("load_module {m};\n"))
            .collect::<String>();
        let path = prefix.join("nginx.conf");
        std::fs::write(&path, format!("{modules}{conf}")).expect("writing nginx.conf");
        let mut command = Command::new(nginx_binary());
        command
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"]);
        let child = spawn_listening(&mut command, http, "nginx (with libnginx-mod-stream)");
        Nginx { child, http, stomp }
    }
}

fn nginx_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master takes its workers down with it (SIGKILL would orphan them).
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own
            // unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// haproxy running `deploy/haproxy.cfg` in front of a cluster's nodes (HTTP at L7, STOMP over
/// TCP at L4, both checking `/readyz`), with the nodes' and its own addresses put in.
pub struct Haproxy {
    child: Child,
    /// Where clients reach the nodes over HTTP and WebSocket.
    pub http: SocketAddr,
    /// Where clients reach the nodes' STOMP over TCP.
    pub stomp: SocketAddr,
}

impl Haproxy {
    /// Starts haproxy for `nodes` (three at most, as in the shipped file).
    pub fn start(nodes: &[&ServerProcess]) -> Haproxy {
        let (http, stomp) = (free_addr(), free_addr());
        let conf = shipped_for("deploy/haproxy.cfg", nodes)
            .replace("bind :8080", &format!("bind {http}"))
            .replace("bind :61610", &format!("bind {stomp}"))
            // The test process's file limit is lower than a production haproxy's.
            .replace("maxconn 100000", "maxconn 2000");
        let dir = fresh_data_dir().with_extension("haproxy");
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, conf).expect("writing haproxy.cfg");
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&path);
        let child = spawn_listening(&mut command, http, "haproxy");
        Haproxy { child, http, stomp }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped balancer configuration at `path` with the nodes' addresses in place of the
/// example ones (127.0.0.1:8081-8083 for HTTP, 127.0.0.1:61611-61613 for STOMP).
fn shipped_for(path: &str, nodes: &[&ServerProcess]) -> String {
    let mut conf = std::fs::read_to_string(crate::workspace_root().join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    for i in 0..3 {
        let node = nodes.get(i).unwrap_or(&nodes[0]);
        conf = conf
            .replace(&format!("127.0.0.1:808{}", i + 1), &node.addr().to_string())
            .replace(
                &format!("check port 808{}", i + 1),
                &format!("check port {}", node.addr().port()),
            )
            .replace(
                &format!("127.0.0.1:6161{}", i + 1),
                &node.stomp_addr().to_string(),
            );
    }
    conf
}
