//! PostgreSQL behind the [`Store`] trait, for several nodes sharing one database.
//!
//! The trait is synchronous, so this uses the blocking `postgres` client from a small pool.
//! That client runs its own little runtime, which must not be started from a thread of ours:
//! calls made on the async runtime (only at start-up) step out of it with `block_in_place`.

use std::collections::HashMap;

use anyhow::Context as _;
use postgres::{Client, NoTls, Transaction};
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;

mod admin;
mod identities;
mod reads;
mod stream;
mod tokens;
mod users;

use super::redact_url as redact;
use super::{to_i64, to_u64};
use super::{
    user_key, AccessToken, Conversation, Link, LinkedIdentity, ReadState, RefreshRecord, Role,
    Room, RoomRules, Rotation, SentId, Store, StoredMessage, Unlink,
};
use super::{AdminRecord, AuditEntry};
use crate::clock::now_ms;

/// Connections kept open per node: the journal's writer, history readers, auth.
const POOL_SIZE: u32 = 8;

/// Serialises migrations of nodes starting together (any constant shared by all nodes).
const MIGRATION_LOCK: i64 = 0x7061_726c_6579; // "parley"

/// Schema migrations, applied in order; `parley_migrations` records which ran.
pub(super) const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE rooms (
        name TEXT PRIMARY KEY,
        private BOOLEAN NOT NULL DEFAULT FALSE,
        created_ms BIGINT NOT NULL,
        -- The room's last message id: the counter every node numbers from (see append_numbered).
        last_id BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE messages (
        room TEXT NOT NULL,
        id BIGINT NOT NULL,
        sender TEXT NOT NULL,
        ts BIGINT NOT NULL,
        -- Bytes, not TEXT: a chat body may hold NUL, which PostgreSQL text refuses.
        body BYTEA NOT NULL,
        guest BOOLEAN NOT NULL DEFAULT FALSE,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (room, id)
    );
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE refresh_tokens (
        hash BYTEA PRIMARY KEY,
        family TEXT NOT NULL,
        username TEXT NOT NULL,
        expires_ms BIGINT NOT NULL,
        revoked BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
    CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_ms);
    CREATE INDEX refresh_tokens_by_user ON refresh_tokens (username);
    CREATE TABLE room_members (
        room TEXT NOT NULL,
        username TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (room, username)
    );
",
    super::sqlite::USER_KEYS,
    super::sqlite::STREAM_EVENTS,
    super::identities::IDENTITIES,
    super::sqlite::ACCESS_TOKENS,
    super::admin::ADMIN_POSTGRES,
];

/// A pool of connections to one PostgreSQL database.
pub struct PgStore {
    /// Always `Some` but while dropping (see the `Drop` impl).
    pool: Option<Pool<PostgresConnectionManager<NoTls>>>,
}

/// The blocking client closes its connections on a little runtime of its own, which must not
/// start on a thread of ours: the last owner may drop the store anywhere (a task ending with the
/// runtime, the async main), so the pool is dropped on a thread of its own.
impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and runs pending migrations.
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        off_runtime(|| {
            let config: postgres::Config = url.parse().context("parsing the database URL")?;
            let manager = PostgresConnectionManager::new(config, NoTls);
            let pool = Pool::builder()
                .max_size(POOL_SIZE)
                .connection_timeout(std::time::Duration::from_secs(10))
                .build(manager)
                .with_context(|| format!("connecting to {}", redact(url)))?;
            let store = Self { pool: Some(pool) };
            store.migrate()?;
            Ok(store)
        })
    }

    fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS parley_migrations (version INTEGER PRIMARY KEY)",
        )?;
        let done: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM parley_migrations",
                &[],
            )?
            .get(0);
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(done).unwrap_or(0))
        {
            let version = i32::try_from(i + 1)?;
            tx.batch_execute(sql)
                .with_context(|| format!("migration {version}"))?;
            tx.execute(
                "INSERT INTO parley_migrations (version) VALUES ($1)",
                &[&version],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn conn(&self) -> anyhow::Result<PooledConnection<PostgresConnectionManager<NoTls>>> {
        let pool = self.pool.as_ref().context("the store is closing")?;
        pool.get().context("no database connection")
    }

    /// Runs `f` on a pooled connection, off the async runtime.
    fn with<R>(&self, f: impl FnOnce(&mut Client) -> anyhow::Result<R>) -> anyhow::Result<R> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            f(&mut conn)
        })
    }

    /// Runs `f` in a transaction and commits it.
    fn in_tx<R>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> anyhow::Result<R>,
    ) -> anyhow::Result<R> {
        self.with(|conn| {
            let mut tx = conn.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

/// The blocking client may not run on a runtime thread; start-up code calls from one.
fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl Store for PgStore {
    fn ping(&self) -> anyhow::Result<()> {
        self.with(|c| Ok(c.simple_query("SELECT 1").map(drop)?))
    }

    fn append(&self, batch: &[StoredMessage]) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = batch.iter().map(|m| to_i64(m.id)).collect();
        let rooms: Vec<&str> = batch.iter().map(|m| m.room.as_str()).collect();
        let now = to_i64(now_ms());
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO rooms (name, private, created_ms)
                 SELECT DISTINCT r, FALSE, $2::bigint FROM UNNEST($1::text[]) AS r
                 ON CONFLICT (name) DO NOTHING",
                &[&rooms, &now],
            )?;
            stream::insert(tx, batch, &ids)?;
            // Keep the shared counter ahead of ids given here, should the node join a cluster.
            tx.execute(
                "UPDATE rooms SET last_id = GREATEST(rooms.last_id, m.last)
                 FROM (SELECT r, MAX(i) AS last FROM UNNEST($1::text[], $2::bigint[]) AS t(r, i)
                       GROUP BY r) AS m
                 WHERE rooms.name = m.r",
                &[&rooms, &ids],
            )?;
            Ok(())
        })
    }

    fn append_numbered(&self, batch: &mut [StoredMessage]) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
        for m in batch.iter() {
            *counts.entry(m.room.clone()).or_default() += 1;
        }
        let now = to_i64(now_ms());
        let numbered = self.in_tx(|tx| {
            // Rooms in name order: nodes locking several counters never wait on each other in
            // a cycle.
            let mut next: HashMap<String, i64> = HashMap::with_capacity(counts.len());
            for (room, count) in &counts {
                tx.execute(
                    "INSERT INTO rooms (name, private, created_ms) VALUES ($1, FALSE, $2)
                     ON CONFLICT (name) DO NOTHING",
                    &[room, &now],
                )?;
                let last: i64 = tx
                    .query_one(
                        "UPDATE rooms SET last_id = last_id + $2 WHERE name = $1 RETURNING last_id",
                        &[room, count],
                    )?
                    .get(0);
                next.insert(room.clone(), last - count + 1);
            }
            let mut ids = Vec::with_capacity(batch.len());
            for m in batch.iter() {
                let id = next.get_mut(&m.room).expect("counted above");
                ids.push(*id);
                *id += 1;
            }
            stream::insert(tx, batch, &ids)?;
            Ok(ids)
        })?;
        for (m, id) in batch.iter_mut().zip(numbered) {
            m.id = to_u64(id);
        }
        Ok(())
    }

    fn room_rules(&self, room: &str) -> anyhow::Result<Option<RoomRules>> {
        self.with(|conn| {
            let Some(row) =
                conn.query_opt("SELECT private FROM rooms WHERE name = $1", &[&room])?
            else {
                return Ok(None);
            };
            let members = conn
                .query(
                    "SELECT username, role FROM room_members WHERE room = $1",
                    &[&room],
                )?
                .iter()
                .map(|r| {
                    let role: &str = r.get(1);
                    (r.get(0), Role::parse(role).unwrap_or(Role::Member))
                })
                .collect();
            Ok(Some((row.get(0), members)))
        })
    }

    fn last_ids_of(&self, rooms: &[String]) -> anyhow::Result<HashMap<String, u64>> {
        self.with(|conn| {
            let rows = conn.query(
                "SELECT name, last_id FROM rooms WHERE name = ANY($1)",
                &[&rooms],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), to_u64(r.get(1)))).collect())
        })
    }

    fn last_id(&self, room: &str) -> anyhow::Result<u64> {
        self.with(|conn| {
            let row = conn.query_opt("SELECT last_id FROM rooms WHERE name = $1", &[&room])?;
            Ok(row.map_or(0, |r| to_u64(r.get(0))))
        })
    }

    fn before(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<StoredMessage>> {
        self.with(|conn| stream::before(conn, room, before, limit))
    }

    fn after(&self, room: &str, after: u64, limit: usize) -> anyhow::Result<Vec<StoredMessage>> {
        self.with(|conn| stream::after(conn, room, after, limit))
    }

    fn message(&self, room: &str, id: u64) -> anyhow::Result<Option<StoredMessage>> {
        self.with(|conn| stream::message(conn, room, id))
    }

    fn recent_client_ids(&self, since_ms: u64, limit: usize) -> anyhow::Result<Vec<SentId>> {
        self.with(|conn| stream::recent_client_ids(conn, since_ms, limit))
    }

    fn conversations(&self, user: &str, limit: usize) -> anyhow::Result<Vec<Conversation>> {
        self.with(|conn| stream::conversations(conn, user, limit))
    }

    fn sent_id(&self, room: &str, sender: &str, client_id: &str) -> anyhow::Result<Option<u64>> {
        self.with(|conn| stream::sent_id(conn, room, sender, client_id))
    }

    fn last_ids(&self) -> anyhow::Result<HashMap<String, u64>> {
        self.with(|conn| {
            let rows = conn.query("SELECT room, MAX(id) FROM messages GROUP BY room", &[])?;
            Ok(rows.iter().map(|r| (r.get(0), to_u64(r.get(1)))).collect())
        })
    }

    fn create_room(&self, room: &Room) -> anyhow::Result<bool> {
        let now = to_i64(now_ms());
        self.in_tx(|tx| {
            let created = tx.execute(
                "INSERT INTO rooms (name, private, created_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&room.name, &room.private, &now],
            )? == 1;
            if let (true, Some(owner)) = (created, &room.owner) {
                tx.execute(
                    "INSERT INTO room_members (room, username, role) VALUES ($1, $2, 'owner')
                     ON CONFLICT (room, username) DO UPDATE SET role = 'owner'",
                    &[&room.name, owner],
                )?;
            }
            Ok(created)
        })
    }

    fn rooms(&self) -> anyhow::Result<Vec<Room>> {
        self.with(|conn| {
            let rows = conn.query(
                "SELECT name, private,
                        (SELECT username FROM room_members m
                         WHERE m.room = rooms.name AND m.role = 'owner' LIMIT 1)
                 FROM rooms ORDER BY name",
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|r| Room {
                    name: r.get(0),
                    private: r.get(1),
                    owner: r.get(2),
                })
                .collect())
        })
    }

    fn memberships(&self) -> anyhow::Result<Vec<(String, String, Role)>> {
        self.with(|conn| {
            let rows = conn.query("SELECT room, username, role FROM room_members", &[])?;
            Ok(rows
                .iter()
                .map(|r| {
                    let role: &str = r.get(2);
                    (
                        r.get(0),
                        r.get(1),
                        Role::parse(role).unwrap_or(Role::Member),
                    )
                })
                .collect())
        })
    }

    fn set_member(&self, room: &str, user: &str, role: Role) -> anyhow::Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO room_members (room, username, role) VALUES ($1, $2, $3)
                 ON CONFLICT (room, username) DO UPDATE SET role = EXCLUDED.role",
                &[&room, &user, &role.as_str()],
            )?;
            Ok(())
        })
    }

    fn remove_member(&self, room: &str, user: &str) -> anyhow::Result<bool> {
        self.with(|conn| {
            Ok(conn.execute(
                "DELETE FROM room_members WHERE room = $1 AND username = $2",
                &[&room, &user],
            )? == 1)
        })
    }

    fn create_user(&self, name: &str, password_hash: &str) -> anyhow::Result<bool> {
        let now = to_i64(now_ms());
        self.with(|conn| {
            Ok(conn.execute(
                // No conflict target: a clash on either the name or its key means taken.
                "INSERT INTO users (name, name_key, password_hash, created_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&name, &user_key(name), &password_hash, &now],
            )? == 1)
        })
    }

    fn account_like(&self, name: &str) -> anyhow::Result<Option<String>> {
        self.with(|conn| {
            Ok(conn
                .query_opt(
                    "SELECT name FROM users WHERE name_key = $1",
                    &[&user_key(name)],
                )?
                .map(|r| r.get(0)))
        })
    }

    fn users_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<String>> {
        self.with(|conn| users::page(conn, prefix, after, limit))
    }

    fn password_hash(&self, name: &str) -> anyhow::Result<Option<String>> {
        self.with(|conn| {
            Ok(conn
                .query_opt("SELECT password_hash FROM users WHERE name = $1", &[&name])?
                .map(|r| r.get(0)))
        })
    }

    fn set_password(&self, name: &str, password_hash: &str) -> anyhow::Result<bool> {
        self.in_tx(|tx| {
            let changed = tx.execute(
                "UPDATE users SET password_hash = $2 WHERE name = $1",
                &[&name, &password_hash],
            )?;
            // Whoever knew the old password may hold a session: every one of them ends.
            tx.execute(
                "UPDATE refresh_tokens SET revoked = TRUE WHERE username = $1",
                &[&name],
            )?;
            Ok(changed == 1)
        })
    }

    fn insert_refresh(&self, token: &RefreshRecord) -> anyhow::Result<()> {
        let expires = to_i64(token.expires_ms);
        self.with(|conn| {
            conn.execute(
                "INSERT INTO refresh_tokens (hash, family, username, expires_ms)
                 VALUES ($1, $2, $3, $4)",
                &[&&token.hash[..], &token.family, &token.user, &expires],
            )?;
            Ok(())
        })
    }

    fn rotate_refresh(
        &self,
        old: &[u8; 32],
        new: &RefreshRecord,
        now_ms: u64,
    ) -> anyhow::Result<Rotation> {
        let now = to_i64(now_ms);
        let new_expires = to_i64(new.expires_ms);
        self.in_tx(|tx| {
            // FOR UPDATE: two nodes rotating the same token at once queue here, and the second
            // sees it revoked (a reuse), as on a single node.
            let found = tx.query_opt(
                "SELECT family, username, expires_ms, revoked FROM refresh_tokens
                 WHERE hash = $1 FOR UPDATE",
                &[&&old[..]],
            )?;
            let Some(row) = found else {
                return Ok(Rotation::Invalid);
            };
            let (family, user, expires, revoked): (String, String, i64, bool) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if revoked {
                // A rotated token presented again: two parties hold the family. End it.
                tx.execute(
                    "UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1",
                    &[&family],
                )?;
                return Ok(Rotation::Reused);
            }
            if expires <= now {
                return Ok(Rotation::Invalid);
            }
            tx.execute(
                "UPDATE refresh_tokens SET revoked = TRUE WHERE hash = $1",
                &[&&old[..]],
            )?;
            tx.execute(
                "INSERT INTO refresh_tokens (hash, family, username, expires_ms)
                 VALUES ($1, $2, $3, $4)",
                &[&&new.hash[..], &family, &user, &new_expires],
            )?;
            Ok(Rotation::Rotated { user })
        })
    }

    fn refresh_user(&self, hash: &[u8; 32], now_ms: u64) -> anyhow::Result<Option<String>> {
        let now = to_i64(now_ms);
        self.with(|conn| {
            Ok(conn
                .query_opt(
                    "SELECT username FROM refresh_tokens
                     WHERE hash = $1 AND NOT revoked AND expires_ms > $2",
                    &[&&hash[..], &now],
                )?
                .map(|r| r.get(0)))
        })
    }

    fn revoke_family(&self, hash: &[u8; 32]) -> anyhow::Result<bool> {
        self.with(|conn| {
            Ok(conn.execute(
                "UPDATE refresh_tokens SET revoked = TRUE
                 WHERE family = (SELECT family FROM refresh_tokens WHERE hash = $1)",
                &[&&hash[..]],
            )? > 0)
        })
    }

    fn purge_refresh(&self, now_ms: u64) -> anyhow::Result<usize> {
        let now = to_i64(now_ms);
        self.with(|conn| {
            let purged =
                conn.execute("DELETE FROM refresh_tokens WHERE expires_ms <= $1", &[&now])?;
            Ok(usize::try_from(purged).unwrap_or(usize::MAX))
        })
    }

    fn set_read(&self, user: &str, room: &str, id: u64) -> anyhow::Result<u64> {
        self.with(|conn| reads::set_read(conn, user, room, id))
    }

    fn unread(&self, user: &str, rooms: &[String]) -> anyhow::Result<HashMap<String, ReadState>> {
        self.with(|conn| reads::unread(conn, user, rooms))
    }

    fn read_rooms(&self, user: &str) -> anyhow::Result<Vec<String>> {
        self.with(|conn| reads::read_rooms(conn, user))
    }
    fn identity_user(&self, provider: &str, subject: &str) -> anyhow::Result<Option<String>> {
        self.with(|conn| identities::user_of(conn, provider, subject))
    }

    fn create_identity_user(
        &self,
        name: &str,
        provider: &str,
        subject: &str,
    ) -> anyhow::Result<bool> {
        self.in_tx(|tx| identities::create_user(tx, name, provider, subject))
    }

    fn link_identity(&self, user: &str, provider: &str, subject: &str) -> anyhow::Result<Link> {
        self.in_tx(|tx| identities::link(tx, user, provider, subject))
    }

    fn identities(&self, user: &str) -> anyhow::Result<Vec<LinkedIdentity>> {
        self.with(|conn| identities::of_user(conn, user))
    }

    fn unlink_identity(&self, user: &str, provider: &str) -> anyhow::Result<Unlink> {
        self.in_tx(|tx| identities::unlink(tx, user, provider))
    }

    fn consume_login_state(&self, id: &str, expires_ms: u64, now_ms: u64) -> anyhow::Result<bool> {
        self.in_tx(|tx| identities::consume_state(tx, id, expires_ms, now_ms))
    }

    fn insert_access_token(&self, t: &AccessToken, max: usize, now: u64) -> anyhow::Result<bool> {
        self.in_tx(|tx| tokens::insert(tx, t, max, now))
    }

    fn access_token(&self, hash: &str) -> anyhow::Result<Option<AccessToken>> {
        self.with(|conn| tokens::by_hash(conn, hash))
    }

    fn access_tokens(&self, user: &str, now_ms: u64) -> anyhow::Result<Vec<AccessToken>> {
        self.with(|conn| tokens::of_user(conn, user, now_ms))
    }

    fn revoke_access_token(&self, user: &str, id: &str) -> anyhow::Result<bool> {
        self.with(|conn| tokens::revoke(conn, user, id))
    }

    fn live_access_tokens(&self, ids: &[String], now_ms: u64) -> anyhow::Result<Vec<String>> {
        self.with(|conn| tokens::live(conn, ids, now_ms))
    }

    fn purge_access_tokens(&self, now_ms: u64) -> anyhow::Result<usize> {
        self.with(|conn| tokens::purge(conn, now_ms))
    }

    fn grant_operator(&self, op: &AdminRecord) -> anyhow::Result<bool> {
        self.with(|conn| admin::grant(conn, op))
    }

    fn revoke_operator(&self, name: &str) -> anyhow::Result<bool> {
        self.with(|conn| admin::revoke(conn, name))
    }

    fn operators(&self, after: &str, limit: usize) -> anyhow::Result<Vec<AdminRecord>> {
        self.with(|conn| admin::operators(conn, after, limit))
    }

    fn is_operator(&self, name: &str) -> anyhow::Result<bool> {
        self.with(|conn| admin::is_operator(conn, name))
    }

    fn ban(&self, ban: &AdminRecord) -> anyhow::Result<()> {
        self.with(|conn| admin::ban(conn, ban))
    }

    fn unban(&self, name: &str) -> anyhow::Result<bool> {
        self.with(|conn| admin::unban(conn, name))
    }

    fn bans(&self, after: &str, limit: usize) -> anyhow::Result<Vec<AdminRecord>> {
        self.with(|conn| admin::bans(conn, after, limit))
    }

    fn close_room(&self, closed: &AdminRecord) -> anyhow::Result<()> {
        self.with(|conn| admin::close_room(conn, closed))
    }

    fn reopen_room(&self, room: &str) -> anyhow::Result<bool> {
        self.with(|conn| admin::reopen_room(conn, room))
    }

    fn closed_rooms(&self, after: &str, limit: usize) -> anyhow::Result<Vec<AdminRecord>> {
        self.with(|conn| admin::closed_rooms(conn, after, limit))
    }

    fn audit(&self, entry: &AuditEntry) -> anyhow::Result<()> {
        self.with(|conn| admin::audit(conn, entry))
    }

    fn audit_page(&self, before: Option<u64>, limit: usize) -> anyhow::Result<Vec<AuditEntry>> {
        self.with(|conn| admin::audit_page(conn, before, limit))
    }

    fn purge_audit(&self, before_ms: u64) -> anyhow::Result<usize> {
        self.with(|conn| admin::purge_audit(conn, before_ms))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A database of its own for one test, dropped afterwards.
    pub(crate) struct FreshDatabase {
        admin: String,
        name: String,
        /// Where the test's store connects.
        pub(crate) url: String,
    }

    /// A new empty database on the server `PARLEY_TEST_DATABASE` names (a
    /// `postgres://…/db` URL), or `None` when it is not set.
    pub(crate) fn fresh_database(test: &str) -> Option<FreshDatabase> {
        let admin = std::env::var("PARLEY_TEST_DATABASE").ok()?;
        let name = format!("parley_unit_{test}_{}", std::process::id());
        let mut client = Client::connect(&admin, NoTls).expect("PARLEY_TEST_DATABASE reachable");
        // One statement each: DROP/CREATE DATABASE refuse to run inside a transaction.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            client
                .batch_execute(&sql)
                .expect("creating a test database");
        }
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(FreshDatabase { admin, name, url })
    }

    impl Drop for FreshDatabase {
        fn drop(&mut self) {
            if let Ok(mut client) = Client::connect(&self.admin, NoTls) {
                let _ = client.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://parley:s3cret@db:5432/chat"),
            "postgres://parley@db:5432/chat"
        );
        assert_eq!(redact("postgres://db/chat"), "postgres://db/chat");
    }
}
