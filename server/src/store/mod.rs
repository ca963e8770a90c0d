//! Durable storage of rooms, messages and accounts: a small trait, with SQLite (embedded, WAL;
//! the default) and PostgreSQL ([`postgres`], shared by several nodes) behind it.
//!
//! The trait is synchronous and called from a dedicated writer thread (see [`crate::journal`])
//! or `spawn_blocking`, never on the async runtime (start-up aside).

mod postgres;

pub use self::postgres::PgStore;

/// The store the settings name: PostgreSQL with `--database`, else SQLite in `--data`.
pub fn open(settings: &crate::config::Settings) -> anyhow::Result<Box<dyn Store>> {
    Ok(match &settings.database {
        Some(url) => Box::new(PgStore::connect(url)?),
        None => Box::new(SqliteStore::open(&settings.data)?),
    })
}

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use rusqlite::{params, Connection, OptionalExtension as _};

/// A stored room message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The room.
    pub room: String,
    /// Per-room, strictly increasing id.
    pub id: u64,
    /// The sender's user name.
    pub from: String,
    /// Server time in ms since the Unix epoch.
    pub ts: u64,
    /// The text (empty once deleted).
    pub body: String,
    /// Sent by a guest.
    pub guest: bool,
    /// Deleted by a room admin: a tombstone that keeps the id sequence gapless.
    pub deleted: bool,
}

/// A room's public description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    /// Its name.
    pub name: String,
    /// Private rooms are for their members only.
    pub private: bool,
    /// The account that created it, if any; recorded as its first member with role owner.
    pub owner: Option<String>,
}

/// What a member may do in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads and posts.
    Member,
    /// Also deletes messages and removes members.
    Admin,
    /// Also adds and removes admins; the creator.
    Owner,
}

impl Role {
    /// The name stored and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// Parses a stored or requested role.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
}

/// A refresh token as stored: only its hash, never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// The login it descends from; revoked as a whole on reuse or logout.
    pub family: String,
    /// Its user.
    pub user: String,
    /// Expiry, ms since the epoch.
    pub expires_ms: u64,
}

/// The outcome of presenting a refresh token for rotation.
/// A room's privacy and its members with their roles, as stored.
pub type RoomRules = (bool, Vec<(String, Role)>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// It was valid; it is now revoked and its successor stored.
    Rotated {
        /// Its user.
        user: String,
    },
    /// It had been rotated or revoked already: the whole family is now revoked.
    Reused,
    /// Unknown or expired.
    Invalid,
}

/// What Parley persists.
pub trait Store: Send + Sync {
    /// Stores messages in one transaction; when it returns `Ok`, they are durable.
    fn append(&self, batch: &[StoredMessage]) -> anyhow::Result<()>;
    /// Cluster mode: numbers the messages (each room's next ids, in batch order, shared by
    /// every node using this database) and stores them in one transaction; on `Ok` every
    /// message's `id` is set and they are durable.
    fn append_numbered(&self, batch: &mut [StoredMessage]) -> anyhow::Result<()> {
        let _ = batch;
        anyhow::bail!("this store cannot number messages for a cluster (use --database)")
    }
    /// The last id given to a message of `room` (0 if none).
    fn last_id(&self, room: &str) -> anyhow::Result<u64> {
        Ok(self.after(room, 0, usize::MAX)?.last().map_or(0, |m| m.id))
    }
    /// [`Store::last_id`] of several rooms at once (rooms without messages may be left out).
    fn last_ids_of(&self, rooms: &[String]) -> anyhow::Result<HashMap<String, u64>> {
        rooms
            .iter()
            .map(|r| Ok((r.clone(), self.last_id(r)?)))
            .collect()
    }
    /// A room's privacy and members, if the room exists.
    fn room_rules(&self, room: &str) -> anyhow::Result<Option<RoomRules>> {
        let Some(found) = self.rooms()?.into_iter().find(|r| r.name == room) else {
            return Ok(None);
        };
        let members = self
            .memberships()?
            .into_iter()
            .filter(|(r, _, _)| r == room)
            .map(|(_, user, role)| (user, role))
            .collect();
        Ok(Some((found.private, members)))
    }
    /// Up to `limit` messages of `room` with id below `before` (all if `None`), oldest first.
    fn before(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<StoredMessage>>;
    /// Up to `limit` messages of `room` with id above `after`, oldest first.
    fn after(&self, room: &str, after: u64, limit: usize) -> anyhow::Result<Vec<StoredMessage>>;
    /// The highest message id of every room, to continue numbering after a restart.
    fn last_ids(&self) -> anyhow::Result<HashMap<String, u64>>;
    /// Creates a room; `false` if it already exists.
    fn create_room(&self, room: &Room) -> anyhow::Result<bool>;
    /// Every room, by name.
    fn rooms(&self) -> anyhow::Result<Vec<Room>>;
    /// Turns a stored message into a tombstone; `false` if there is no such message.
    fn delete_message(&self, room: &str, id: u64) -> anyhow::Result<bool>;

    /// Every room membership: (room, user, role).
    fn memberships(&self) -> anyhow::Result<Vec<(String, String, Role)>>;
    /// Adds a member or changes their role.
    fn set_member(&self, room: &str, user: &str, role: Role) -> anyhow::Result<()>;
    /// Removes a member; `false` if they were not one.
    fn remove_member(&self, room: &str, user: &str) -> anyhow::Result<bool>;

    /// Creates an account; `false` if the name is taken.
    fn create_user(&self, name: &str, password_hash: &str) -> anyhow::Result<bool>;
    /// An account's password hash (PHC string), if the account exists.
    fn password_hash(&self, name: &str) -> anyhow::Result<Option<String>>;
    /// Replaces an account's password hash and revokes all its refresh tokens; `false` if there
    /// is no such account.
    fn set_password(&self, name: &str, password_hash: &str) -> anyhow::Result<bool>;

    /// Stores a new refresh token.
    fn insert_refresh(&self, token: &RefreshRecord) -> anyhow::Result<()>;
    /// Rotates the token hashed `old` into `new` (same family and user) in one transaction.
    fn rotate_refresh(
        &self,
        old: &[u8; 32],
        new: &RefreshRecord,
        now_ms: u64,
    ) -> anyhow::Result<Rotation>;
    /// The user of a valid (known, unrevoked, unexpired) refresh token.
    fn refresh_user(&self, hash: &[u8; 32], now_ms: u64) -> anyhow::Result<Option<String>>;
    /// Revokes the family of the token hashed `hash`; `false` if the token is unknown.
    fn revoke_family(&self, hash: &[u8; 32]) -> anyhow::Result<bool>;
    /// Deletes expired refresh tokens; returns how many.
    fn purge_refresh(&self, now_ms: u64) -> anyhow::Result<usize>;
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
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
];

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

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn row_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        room: row.get(0)?,
        id: row.get::<_, i64>(1)? as u64,
        from: row.get(2)?,
        ts: row.get::<_, i64>(3)? as u64,
        body: row.get(4)?,
        guest: row.get(5)?,
        deleted: row.get(6)?,
    })
}

const MESSAGE_COLUMNS: &str = "room, id, sender, ts, body, guest, deleted";

impl Store for SqliteStore {
    fn append(&self, batch: &[StoredMessage]) -> anyhow::Result<()> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (room, id, sender, ts, body, guest) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut room = tx.prepare_cached(
                "INSERT OR IGNORE INTO rooms (name, private, created_ms) VALUES (?1, 0, ?2)",
            )?;
            for m in batch {
                room.execute(params![m.room, to_i64(m.ts)])?;
                insert.execute(params![
                    m.room,
                    to_i64(m.id),
                    m.from,
                    to_i64(m.ts),
                    m.body,
                    m.guest
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn before(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<StoredMessage>> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![room, to_i64(before.unwrap_or(u64::MAX)), limit as i64],
            row_message,
        )?;
        let mut out = rows.collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    fn after(&self, room: &str, after: u64, limit: usize) -> anyhow::Result<Vec<StoredMessage>> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![room, to_i64(after), limit as i64], row_message)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
        let now = crate::stomp::now_ms();
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

    fn delete_message(&self, room: &str, id: u64) -> anyhow::Result<bool> {
        let conn = lock(&self.writer);
        let changed = conn.execute(
            "UPDATE messages SET body = '', deleted = 1 WHERE room = ?1 AND id = ?2",
            params![room, to_i64(id)],
        )?;
        Ok(changed == 1)
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
            "INSERT OR IGNORE INTO users (name, password_hash, created_ms) VALUES (?1, ?2, ?3)",
            params![name, password_hash, to_i64(crate::stomp::now_ms())],
        )?;
        Ok(changed == 1)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("parley-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn msg(room: &str, id: u64) -> StoredMessage {
        StoredMessage {
            room: room.into(),
            id,
            from: "alice".into(),
            ts: 1000 + id,
            body: format!("m{id}"),
            guest: id % 2 == 0,
            deleted: false,
        }
    }

    /// Opens the store under test, again on the same data when called again.
    type Opener = Box<dyn Fn() -> Box<dyn Store>>;

    /// Runs `check` on SQLite, then on PostgreSQL when `PARLEY_TEST_DATABASE` names a server
    /// (CI sets it): both backends must behave the same.
    fn on_every_backend(name: &str, check: impl Fn(&Opener)) {
        let dir = temp_dir(name);
        let sqlite: Opener = Box::new(move || Box::new(SqliteStore::open(&dir).unwrap()));
        check(&sqlite);
        if let Some(db) = postgres::tests::fresh_database(name) {
            let url = db.url.clone();
            let pg: Opener = Box::new(move || Box::new(PgStore::connect(&url).unwrap()));
            check(&pg);
        }
    }

    #[test]
    fn nodes_sharing_a_database_number_each_room_consecutively() {
        let Some(db) = postgres::tests::fresh_database("numbering") else {
            return; // PostgreSQL only: SQLite serves one node.
        };
        let a = PgStore::connect(&db.url).unwrap();
        let b = PgStore::connect(&db.url).unwrap();
        // Single-node ids first: the shared counter continues after them.
        a.append(&[msg("r", 1), msg("r", 2)]).unwrap();
        let threads: Vec<_> = [a, b]
            .into_iter()
            .map(|store| {
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    for _ in 0..20 {
                        let mut batch = vec![msg("r", 0), msg("s", 0), msg("r", 0)];
                        store.append_numbered(&mut batch).unwrap();
                        ids.extend(batch.iter().map(|m| (m.room.clone(), m.id)));
                    }
                    ids
                })
            })
            .collect();
        let mut got: Vec<(String, u64)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        got.sort();
        let r: Vec<u64> = got
            .iter()
            .filter(|(room, _)| room == "r")
            .map(|p| p.1)
            .collect();
        let s: Vec<u64> = got
            .iter()
            .filter(|(room, _)| room == "s")
            .map(|p| p.1)
            .collect();
        assert_eq!(
            r,
            (3..=82).collect::<Vec<_>>(),
            "no gap, no duplicate across nodes"
        );
        assert_eq!(s, (1..=40).collect::<Vec<_>>());
        let store = PgStore::connect(&db.url).unwrap();
        assert_eq!(store.last_id("r").unwrap(), 82);
        assert_eq!(store.after("r", 80, 10).unwrap().len(), 2);
    }

    #[test]
    fn append_then_page_both_ways_and_survive_reopen() {
        on_every_backend("pages", append_then_page_both_ways_and_survive_reopen_on);
    }

    fn append_then_page_both_ways_and_survive_reopen_on(open: &Opener) {
        {
            let store = open();
            store
                .append(&(1..=10).map(|i| msg("general", i)).collect::<Vec<_>>())
                .unwrap();
            store.append(&[msg("other", 1)]).unwrap();
        }
        let store = open();
        let ids = |v: Vec<StoredMessage>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(store.before("general", None, 3).unwrap()), [8, 9, 10]);
        assert_eq!(ids(store.before("general", Some(8), 3).unwrap()), [5, 6, 7]);
        assert_eq!(ids(store.after("general", 7, 100).unwrap()), [8, 9, 10]);
        assert_eq!(
            store.last_ids().unwrap(),
            HashMap::from([("general".into(), 10), ("other".into(), 1)])
        );
        assert_eq!(
            store.before("general", None, 1).unwrap()[0],
            msg("general", 10)
        );
    }

    #[test]
    fn rooms_are_created_once_and_by_messages() {
        on_every_backend("rooms", |open| {
            rooms_are_created_once_and_by_messages_on(&*open())
        });
    }

    fn rooms_are_created_once_and_by_messages_on(store: &dyn Store) {
        assert!(store
            .create_room(&Room {
                name: "a".into(),
                private: true,
                owner: Some("alice".into()),
            })
            .unwrap());
        assert!(!store
            .create_room(&Room {
                name: "a".into(),
                private: false,
                owner: None,
            })
            .unwrap());
        store.append(&[msg("b", 1)]).unwrap();
        assert_eq!(
            store.rooms().unwrap(),
            [
                Room {
                    name: "a".into(),
                    private: true,
                    owner: Some("alice".into()),
                },
                Room {
                    name: "b".into(),
                    private: false,
                    owner: None,
                }
            ]
        );
        assert_eq!(
            store.memberships().unwrap(),
            [("a".into(), "alice".into(), Role::Owner)]
        );
    }

    #[test]
    fn any_body_round_trips_and_rules_and_last_ids_read_back() {
        on_every_backend("bodies", |open| any_body_round_trips_on(&*open()));
    }

    fn any_body_round_trips_on(store: &dyn Store) {
        let mut m = msg("odd", 1);
        m.body = "nul \0 inside, and ünïcödé".into();
        store.append(std::slice::from_ref(&m)).unwrap();
        assert_eq!(store.after("odd", 0, 10).unwrap(), [m]);
        assert!(store
            .create_room(&Room {
                name: "club".into(),
                private: true,
                owner: Some("alice".into()),
            })
            .unwrap());
        store.set_member("club", "bob", Role::Admin).unwrap();
        let (private, mut members) = store.room_rules("club").unwrap().expect("stored");
        members.sort();
        assert!(private);
        assert_eq!(
            members,
            [("alice".into(), Role::Owner), ("bob".into(), Role::Admin)]
        );
        assert_eq!(store.room_rules("nowhere").unwrap(), None);
        let last = store
            .last_ids_of(&["odd".into(), "club".into(), "nowhere".into()])
            .unwrap();
        assert_eq!(last.get("odd"), Some(&1));
        assert!(last.get("club").is_none_or(|&id| id == 0));
        assert!(last.get("nowhere").is_none_or(|&id| id == 0));
    }

    #[test]
    fn deleted_messages_become_tombstones() {
        on_every_backend("tombstones", |open| {
            deleted_messages_become_tombstones_on(&*open())
        });
    }

    fn deleted_messages_become_tombstones_on(store: &dyn Store) {
        store.append(&[msg("r", 1), msg("r", 2)]).unwrap();
        assert!(store.delete_message("r", 1).unwrap());
        assert!(!store.delete_message("r", 9).unwrap());
        let got = store.after("r", 0, 10).unwrap();
        assert!(got[0].deleted && got[0].body.is_empty());
        assert_eq!(got[1], msg("r", 2));
    }

    fn refresh(hash: u8, expires_ms: u64) -> RefreshRecord {
        RefreshRecord {
            hash: [hash; 32],
            family: "f1".into(),
            user: "alice".into(),
            expires_ms,
        }
    }

    #[test]
    fn refresh_tokens_rotate_once_and_reuse_revokes_the_family() {
        on_every_backend("refresh", |open| {
            refresh_tokens_rotate_once_and_reuse_revokes_the_family_on(&*open())
        });
    }

    fn refresh_tokens_rotate_once_and_reuse_revokes_the_family_on(store: &dyn Store) {
        store.insert_refresh(&refresh(1, 10_000)).unwrap();
        let rotated = store
            .rotate_refresh(&[1; 32], &refresh(2, 10_000), 5)
            .unwrap();
        assert_eq!(
            rotated,
            Rotation::Rotated {
                user: "alice".into()
            }
        );
        assert_eq!(
            store.refresh_user(&[2; 32], 5).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            store.refresh_user(&[1; 32], 5).unwrap(),
            None,
            "rotated away"
        );
        // The old one again: theft. The newest one dies with it.
        let reused = store
            .rotate_refresh(&[1; 32], &refresh(3, 10_000), 6)
            .unwrap();
        assert_eq!(reused, Rotation::Reused);
        assert_eq!(store.refresh_user(&[2; 32], 6).unwrap(), None);
        assert_eq!(
            store
                .rotate_refresh(&[9; 32], &refresh(4, 10_000), 6)
                .unwrap(),
            Rotation::Invalid
        );
        store.insert_refresh(&refresh(5, 100)).unwrap();
        assert_eq!(
            store
                .rotate_refresh(&[5; 32], &refresh(6, 10_000), 100)
                .unwrap(),
            Rotation::Invalid,
            "expired"
        );
        assert_eq!(store.purge_refresh(100).unwrap(), 1);
    }

    #[test]
    fn users_are_unique_and_passwords_change() {
        on_every_backend("users", |open| {
            users_are_unique_and_passwords_change_on(&*open())
        });
    }

    fn users_are_unique_and_passwords_change_on(store: &dyn Store) {
        assert!(store.create_user("alice", "h1").unwrap());
        assert!(!store.create_user("alice", "h2").unwrap());
        store
            .insert_refresh(&RefreshRecord {
                hash: [7; 32],
                family: "f".into(),
                user: "alice".into(),
                expires_ms: u64::MAX / 2,
            })
            .unwrap();
        assert!(store.set_password("alice", "h3").unwrap());
        assert_eq!(
            store.refresh_user(&[7; 32], 0).unwrap(),
            None,
            "sessions end"
        );
        assert!(!store.set_password("bob", "h3").unwrap());
        assert_eq!(store.password_hash("alice").unwrap().as_deref(), Some("h3"));
        assert_eq!(store.password_hash("bob").unwrap(), None);
    }

    #[test]
    fn a_duplicate_id_fails_the_whole_batch() {
        on_every_backend("dup", |open| {
            a_duplicate_id_fails_the_whole_batch_on(&*open())
        });
    }

    fn a_duplicate_id_fails_the_whole_batch_on(store: &dyn Store) {
        store.append(&[msg("r", 1)]).unwrap();
        assert!(store.append(&[msg("r", 2), msg("r", 1)]).is_err());
        assert_eq!(
            store.last_ids().unwrap()["r"],
            1,
            "nothing of the failed batch stayed"
        );
    }
}
