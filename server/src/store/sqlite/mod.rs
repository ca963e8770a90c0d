//! SQLite storage (embedded, WAL): the default, for one node.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use rusqlite::{params, Connection, OptionalExtension as _};

mod admin;
mod identities;
mod reads;
mod stream;
mod tokens;
mod users;

pub(super) use tokens::ACCESS_TOKENS;

use super::to_i64;
use super::{
    user_key, AccessToken, Conversation, Link, LinkedIdentity, ReadState, RefreshRecord, Role,
    Room, Rotation, SentId, Store, StoredMessage, Unlink,
};
use super::{AdminRecord, AuditEntry};
use crate::clock::now_ms;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
pub(super) const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE rooms (
        name TEXT PRIMARY KEY,
        private INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE messages (
        room TEXT NOT NULL,
        id INTEGER NOT NULL,
        sender TEXT NOT NULL,
        ts INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (room, id)
    ) WITHOUT ROWID;
",
    "
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE refresh_tokens (
        hash BLOB PRIMARY KEY,
        family TEXT NOT NULL,
        user TEXT NOT NULL,
        expires_ms INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
    CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_ms);
    CREATE TABLE room_members (
        room TEXT NOT NULL,
        user TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (room, user)
    ) WITHOUT ROWID;
    ALTER TABLE messages ADD COLUMN guest INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
",
    USER_KEYS,
    STREAM_EVENTS,
    super::identities::IDENTITIES,
    ACCESS_TOKENS,
    super::admin::ADMIN_SQLITE,
];

/// Account names become unique ignoring case. Names an older database holds that differ only by
/// case all stay (each logs in by its exact name); the oldest of them holds the key, so no new
/// account can take any spelling of it. The same SQL runs on PostgreSQL.
pub(super) const USER_KEYS: &str = "
    ALTER TABLE users ADD COLUMN name_key TEXT;
    UPDATE users SET name_key = lower(name) WHERE NOT EXISTS (
        SELECT 1 FROM users AS older
        WHERE lower(older.name) = lower(users.name)
          AND (older.created_ms < users.created_ms
               OR (older.created_ms = users.created_ms AND older.name < users.name))
    );
    CREATE UNIQUE INDEX users_by_key ON users (name_key);
";

/// Rooms become streams of messages and events: edits, deletions and reactions take the room's
/// next id too; reactions, mentions and read state get tables of their own. Direct messages are
/// streams too (`dm:<a>:<b>`), listed per person in `conversations`. The same SQL runs on
/// PostgreSQL (hence `BIGINT`, `BOOLEAN` and no column named `user`).
pub(super) const STREAM_EVENTS: &str = "
    ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN target BIGINT;
    ALTER TABLE messages ADD COLUMN reply_to BIGINT;
    ALTER TABLE messages ADD COLUMN client_id TEXT;
    ALTER TABLE messages ADD COLUMN edited BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX messages_with_client_id ON messages (ts) WHERE client_id IS NOT NULL;
    CREATE INDEX messages_by_client_id ON messages (room, sender, client_id)
        WHERE client_id IS NOT NULL;
    CREATE INDEX messages_by_target ON messages (room, target) WHERE target IS NOT NULL;
    CREATE TABLE reactions (
        room TEXT NOT NULL,
        id BIGINT NOT NULL,
        emoji TEXT NOT NULL,
        username TEXT NOT NULL,
        ts BIGINT NOT NULL,
        PRIMARY KEY (room, id, emoji, username)
    );
    CREATE TABLE mentions (
        user_key TEXT NOT NULL,
        room TEXT NOT NULL,
        id BIGINT NOT NULL,
        PRIMARY KEY (user_key, room, id)
    );
    CREATE TABLE conversations (
        user_key TEXT NOT NULL,
        room TEXT NOT NULL,
        peer TEXT NOT NULL,
        last_ts BIGINT NOT NULL,
        PRIMARY KEY (user_key, room)
    );
    CREATE INDEX conversations_by_time ON conversations (user_key, last_ts);
    CREATE TABLE read_state (
        user_key TEXT NOT NULL,
        room TEXT NOT NULL,
        last_read BIGINT NOT NULL,
        PRIMARY KEY (user_key, room)
    );
";

/// SQLite in WAL mode: one connection for the writer, one for readers (WAL lets them overlap).
pub struct SqliteStore {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) `parley.db` in `dir` and runs pending migrations.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let path = dir.join("parley.db");
        let writer =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // WAL + synchronous=FULL: a committed transaction survives power loss and kill -9.
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "FULL")?;
        // Messages of thousands of rooms land on as many B-tree leaves: a larger page cache
        // keeps them from being read back for every insert, and checkpointing less often
        // copies a hot page into the database once instead of several times.
        writer.pragma_update(None, "cache_size", -32 * 1024)?;
        writer.pragma_update(None, "wal_autocheckpoint", 4000)?;
        writer.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&writer)?;
        let reader = Connection::open(&path)?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }
}

fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let done: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(done).unwrap_or(0))
    {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))
        .with_context(|| format!("migration {}", i + 1))?;
    }
    Ok(())
}

fn lock(m: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic mid-statement leaves the connection usable (SQLite rolls back the statement).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store for SqliteStore {
    fn ping(&self) -> anyhow::Result<()> {
        lock(&self.reader).query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn append(&self, batch: &[StoredMessage]) -> anyhow::Result<()> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        stream::append(&tx, batch)?;
        tx.commit()?;
        Ok(())
    }

    fn before(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<StoredMessage>> {
        stream::before(&lock(&self.reader), room, before, limit)
    }

    fn after(&self, room: &str, after: u64, limit: usize) -> anyhow::Result<Vec<StoredMessage>> {
        stream::after(&lock(&self.reader), room, after, limit)
    }

    fn message(&self, room: &str, id: u64) -> anyhow::Result<Option<StoredMessage>> {
        stream::message(&lock(&self.reader), room, id)
    }

    fn recent_client_ids(&self, since_ms: u64, limit: usize) -> anyhow::Result<Vec<SentId>> {
        stream::recent_client_ids(&lock(&self.reader), since_ms, limit)
    }

    fn conversations(&self, user: &str, limit: usize) -> anyhow::Result<Vec<Conversation>> {
        stream::conversations(&lock(&self.reader), user, limit)
    }

    fn sent_id(&self, room: &str, sender: &str, client_id: &str) -> anyhow::Result<Option<u64>> {
        stream::sent_id(&lock(&self.reader), room, sender, client_id)
    }

    fn last_id(&self, room: &str) -> anyhow::Result<u64> {
        let conn = lock(&self.reader);
        let last: Option<i64> = conn.query_row(
            "SELECT MAX(id) FROM messages WHERE room = ?1",
            params![room],
            |row| row.get(0),
        )?;
        Ok(last.map_or(0, |n| n as u64))
    }

    fn last_ids(&self) -> anyhow::Result<HashMap<String, u64>> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare("SELECT room, MAX(id) FROM messages GROUP BY room")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<HashMap<_, _>, _>>()?)
    }

    fn create_room(&self, room: &Room) -> anyhow::Result<bool> {
        let mut conn = lock(&self.writer);
        let now = now_ms();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "INSERT OR IGNORE INTO rooms (name, private, created_ms) VALUES (?1, ?2, ?3)",
            params![room.name, room.private, to_i64(now)],
        )?;
        if let (1, Some(owner)) = (changed, &room.owner) {
            tx.execute(
                "INSERT OR REPLACE INTO room_members (room, user, role) VALUES (?1, ?2, 'owner')",
                params![room.name, owner],
            )?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    fn rooms(&self) -> anyhow::Result<Vec<Room>> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare(
            "SELECT name, private, (SELECT user FROM room_members m WHERE m.room = rooms.name AND m.role = 'owner') FROM rooms ORDER BY name",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(Room {
                name: row.get(0)?,
                private: row.get(1)?,
                owner: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn memberships(&self) -> anyhow::Result<Vec<(String, String, Role)>> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare("SELECT room, user, role FROM room_members")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (room, user, role) = row?;
            out.push((room, user, Role::parse(&role).unwrap_or(Role::Member)));
        }
        Ok(out)
    }

    fn set_member(&self, room: &str, user: &str, role: Role) -> anyhow::Result<()> {
        lock(&self.writer).execute(
            "INSERT OR REPLACE INTO room_members (room, user, role) VALUES (?1, ?2, ?3)",
            params![room, user, role.as_str()],
        )?;
        Ok(())
    }

    fn remove_member(&self, room: &str, user: &str) -> anyhow::Result<bool> {
        let changed = lock(&self.writer).execute(
            "DELETE FROM room_members WHERE room = ?1 AND user = ?2",
            params![room, user],
        )?;
        Ok(changed == 1)
    }

    fn create_user(&self, name: &str, password_hash: &str) -> anyhow::Result<bool> {
        let changed = lock(&self.writer).execute(
            // Ignored on either unique column: the exact name or its key.
            "INSERT OR IGNORE INTO users (name, name_key, password_hash, created_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![name, user_key(name), password_hash, to_i64(now_ms())],
        )?;
        Ok(changed == 1)
    }

    fn account_like(&self, name: &str) -> anyhow::Result<Option<String>> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached("SELECT name FROM users WHERE name_key = ?1")?;
        Ok(stmt
            .query_row(params![user_key(name)], |row| row.get(0))
            .optional()?)
    }

    fn users_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<String>> {
        users::page(&lock(&self.reader), prefix, after, limit)
    }

    fn password_hash(&self, name: &str) -> anyhow::Result<Option<String>> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached("SELECT password_hash FROM users WHERE name = ?1")?;
        Ok(stmt.query_row(params![name], |row| row.get(0)).optional()?)
    }

    fn set_password(&self, name: &str, password_hash: &str) -> anyhow::Result<bool> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE users SET password_hash = ?2 WHERE name = ?1",
            params![name, password_hash],
        )?;
        // Whoever knew the old password may hold a session: every one of them ends.
        tx.execute(
            "UPDATE refresh_tokens SET revoked = 1 WHERE user = ?1",
            params![name],
        )?;
        tx.commit()?;
        Ok(changed == 1)
    }

    fn insert_refresh(&self, token: &RefreshRecord) -> anyhow::Result<()> {
        lock(&self.writer).execute(
            "INSERT INTO refresh_tokens (hash, family, user, expires_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                &token.hash[..],
                token.family,
                token.user,
                to_i64(token.expires_ms)
            ],
        )?;
        Ok(())
    }

    fn rotate_refresh(
        &self,
        old: &[u8; 32],
        new: &RefreshRecord,
        now_ms: u64,
    ) -> anyhow::Result<Rotation> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let found: Option<(String, String, i64, bool)> = tx
            .query_row(
                "SELECT family, user, expires_ms, revoked FROM refresh_tokens WHERE hash = ?1",
                params![&old[..]],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()?;
        let outcome = match found {
            None => Rotation::Invalid,
            Some((family, _, _, true)) => {
                // A rotated token presented again: two parties hold the family. End it.
                tx.execute(
                    "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
                    params![family],
                )?;
                Rotation::Reused
            }
            Some((_, _, expires, false)) if expires <= to_i64(now_ms) => Rotation::Invalid,
            Some((family, user, _, false)) => {
                tx.execute(
                    "UPDATE refresh_tokens SET revoked = 1 WHERE hash = ?1",
                    params![&old[..]],
                )?;
                tx.execute(
                    "INSERT INTO refresh_tokens (hash, family, user, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![&new.hash[..], family, user, to_i64(new.expires_ms)],
                )?;
                Rotation::Rotated { user }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn refresh_user(&self, hash: &[u8; 32], now_ms: u64) -> anyhow::Result<Option<String>> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(
            "SELECT user FROM refresh_tokens WHERE hash = ?1 AND revoked = 0 AND expires_ms > ?2",
        )?;
        Ok(stmt
            .query_row(params![&hash[..], to_i64(now_ms)], |row| row.get(0))
            .optional()?)
    }

    fn revoke_family(&self, hash: &[u8; 32]) -> anyhow::Result<bool> {
        let changed = lock(&self.writer).execute(
            "UPDATE refresh_tokens SET revoked = 1 WHERE family = (SELECT family FROM refresh_tokens WHERE hash = ?1)",
            params![&hash[..]],
        )?;
        Ok(changed > 0)
    }

    fn purge_refresh(&self, now_ms: u64) -> anyhow::Result<usize> {
        Ok(lock(&self.writer).execute(
            "DELETE FROM refresh_tokens WHERE expires_ms <= ?1",
            params![to_i64(now_ms)],
        )?)
    }

    fn set_read(&self, user: &str, room: &str, id: u64) -> anyhow::Result<u64> {
        reads::set_read(&lock(&self.writer), user, room, id)
    }

    fn unread(&self, user: &str, rooms: &[String]) -> anyhow::Result<HashMap<String, ReadState>> {
        reads::unread(&lock(&self.reader), user, rooms)
    }

    fn read_rooms(&self, user: &str) -> anyhow::Result<Vec<String>> {
        reads::read_rooms(&lock(&self.reader), user)
    }
    fn identity_user(&self, provider: &str, subject: &str) -> anyhow::Result<Option<String>> {
        identities::user_of(&lock(&self.reader), provider, subject)
    }

    fn create_identity_user(
        &self,
        name: &str,
        provider: &str,
        subject: &str,
    ) -> anyhow::Result<bool> {
        identities::create_user(&mut lock(&self.writer), name, provider, subject)
    }

    fn link_identity(&self, user: &str, provider: &str, subject: &str) -> anyhow::Result<Link> {
        identities::link(&mut lock(&self.writer), user, provider, subject)
    }

    fn identities(&self, user: &str) -> anyhow::Result<Vec<LinkedIdentity>> {
        identities::of_user(&lock(&self.reader), user)
    }

    fn unlink_identity(&self, user: &str, provider: &str) -> anyhow::Result<Unlink> {
        identities::unlink(&mut lock(&self.writer), user, provider)
    }

    fn consume_login_state(&self, id: &str, expires_ms: u64, now_ms: u64) -> anyhow::Result<bool> {
        identities::consume_state(&mut lock(&self.writer), id, expires_ms, now_ms)
    }

    fn insert_access_token(
        &self,
        token: &AccessToken,
        max: usize,
        now_ms: u64,
    ) -> anyhow::Result<bool> {
        tokens::insert(&mut lock(&self.writer), token, max, now_ms)
    }

    fn access_token(&self, hash: &str) -> anyhow::Result<Option<AccessToken>> {
        tokens::by_hash(&lock(&self.reader), hash)
    }

    fn access_tokens(&self, user: &str, now_ms: u64) -> anyhow::Result<Vec<AccessToken>> {
        tokens::of_user(&lock(&self.reader), user, now_ms)
    }

    fn revoke_access_token(&self, user: &str, id: &str) -> anyhow::Result<bool> {
        tokens::revoke(&lock(&self.writer), user, id)
    }

    fn live_access_tokens(&self, ids: &[String], now_ms: u64) -> anyhow::Result<Vec<String>> {
        tokens::live(&lock(&self.reader), ids, now_ms)
    }

    fn purge_access_tokens(&self, now_ms: u64) -> anyhow::Result<usize> {
        tokens::purge(&lock(&self.writer), now_ms)
    }

    fn grant_operator(&self, op: &AdminRecord) -> anyhow::Result<bool> {
        admin::grant(&lock(&self.writer), op)
    }

    fn revoke_operator(&self, name: &str) -> anyhow::Result<bool> {
        admin::revoke(&lock(&self.writer), name)
    }

    fn operators(&self, after: &str, limit: usize) -> anyhow::Result<Vec<AdminRecord>> {
        admin::operators(&lock(&self.reader), after, limit)
    }

    fn is_operator(&self, name: &str) -> anyhow::Result<bool> {
        admin::is_operator(&lock(&self.reader), name)
    }

    fn ban(&self, ban: &AdminRecord) -> anyhow::Result<()> {
        admin::ban(&lock(&self.writer), ban)
    }

    fn unban(&self, name: &str) -> anyhow::Result<bool> {
        admin::unban(&lock(&self.writer), name)
    }

    fn bans(&self, after: &str, limit: usize) -> anyhow::Result<Vec<AdminRecord>> {
        admin::bans(&lock(&self.reader), after, limit)
    }

    fn close_room(&self, closed: &AdminRecord) -> anyhow::Result<()> {
        admin::close_room(&lock(&self.writer), closed)
    }

    fn reopen_room(&self, room: &str) -> anyhow::Result<bool> {
        admin::reopen_room(&lock(&self.writer), room)
    }

    fn closed_rooms(&self, after: &str, limit: usize) -> anyhow::Result<Vec<AdminRecord>> {
        admin::closed_rooms(&lock(&self.reader), after, limit)
    }

    fn audit(&self, entry: &AuditEntry) -> anyhow::Result<()> {
        admin::audit(&lock(&self.writer), entry)
    }

    fn audit_page(&self, before: Option<u64>, limit: usize) -> anyhow::Result<Vec<AuditEntry>> {
        admin::audit_page(&lock(&self.reader), before, limit)
    }

    fn purge_audit(&self, before_ms: u64) -> anyhow::Result<usize> {
        admin::purge_audit(&lock(&self.writer), before_ms)
    }
}
