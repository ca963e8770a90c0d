//! Durable storage of rooms and messages: a small trait, and SQLite (embedded, WAL) behind it.
//!
//! The trait is synchronous and called from a dedicated writer thread (see [`crate::journal`])
//! or `spawn_blocking`, never on the async runtime; a later PostgreSQL implementation can sit
//! behind the same calls.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use rusqlite::{params, Connection};

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
    /// The text.
    pub body: String,
}

/// A room's public description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    /// Its name.
    pub name: String,
    /// Private rooms are not listed to everyone (authorization arrives with accounts).
    pub private: bool,
}

/// What Parley persists.
pub trait Store: Send + Sync {
    /// Stores messages in one transaction; when it returns `Ok`, they are durable.
    fn append(&self, batch: &[StoredMessage]) -> anyhow::Result<()>;
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
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &["
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
"];

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
    })
}

impl Store for SqliteStore {
    fn append(&self, batch: &[StoredMessage]) -> anyhow::Result<()> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (room, id, sender, ts, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut room = tx.prepare_cached(
                "INSERT OR IGNORE INTO rooms (name, private, created_ms) VALUES (?1, 0, ?2)",
            )?;
            for m in batch {
                room.execute(params![m.room, to_i64(m.ts)])?;
                insert.execute(params![m.room, to_i64(m.id), m.from, to_i64(m.ts), m.body])?;
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
        let mut stmt = conn.prepare_cached(
            "SELECT room, id, sender, ts, body FROM messages WHERE room = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
        )?;
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
        let mut stmt = conn.prepare_cached(
            "SELECT room, id, sender, ts, body FROM messages WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![room, to_i64(after), limit as i64], row_message)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
        let conn = lock(&self.writer);
        let now = crate::stomp::now_ms();
        let changed = conn.execute(
            "INSERT OR IGNORE INTO rooms (name, private, created_ms) VALUES (?1, ?2, ?3)",
            params![room.name, room.private, to_i64(now)],
        )?;
        Ok(changed == 1)
    }

    fn rooms(&self) -> anyhow::Result<Vec<Room>> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare("SELECT name, private FROM rooms ORDER BY name")?;
        let rows = stmt.query_map([], |row| {
            Ok(Room {
                name: row.get(0)?,
                private: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
        }
    }

    #[test]
    fn append_then_page_both_ways_and_survive_reopen() {
        let dir = temp_dir("pages");
        {
            let store = SqliteStore::open(&dir).unwrap();
            store
                .append(&(1..=10).map(|i| msg("general", i)).collect::<Vec<_>>())
                .unwrap();
            store.append(&[msg("other", 1)]).unwrap();
        }
        let store = SqliteStore::open(&dir).unwrap();
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
        let store = SqliteStore::open(&temp_dir("rooms")).unwrap();
        assert!(store
            .create_room(&Room {
                name: "a".into(),
                private: true
            })
            .unwrap());
        assert!(!store
            .create_room(&Room {
                name: "a".into(),
                private: false
            })
            .unwrap());
        store.append(&[msg("b", 1)]).unwrap();
        assert_eq!(
            store.rooms().unwrap(),
            [
                Room {
                    name: "a".into(),
                    private: true
                },
                Room {
                    name: "b".into(),
                    private: false
                }
            ]
        );
    }

    #[test]
    fn a_duplicate_id_fails_the_whole_batch() {
        let store = SqliteStore::open(&temp_dir("dup")).unwrap();
        store.append(&[msg("r", 1)]).unwrap();
        assert!(store.append(&[msg("r", 2), msg("r", 1)]).is_err());
        assert_eq!(
            store.last_ids().unwrap()["r"],
            1,
            "nothing of the failed batch stayed"
        );
    }
}
