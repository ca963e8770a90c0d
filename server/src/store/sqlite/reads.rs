//! Read state in SQLite: each account's last read message per room, and the unread and mention
//! counts after it (capped, so a huge room costs no more than a small one).

use std::collections::HashMap;

use rusqlite::{params, Connection};

use crate::store::{to_i64, user_key, ReadState, UNREAD_CAP};

/// Moves `user`'s read mark in `room` forward to `id` (never back); the mark now stored.
pub(super) fn set_read(conn: &Connection, user: &str, room: &str, id: u64) -> anyhow::Result<u64> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO read_state (user_key, room, last_read) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_key, room) DO UPDATE SET last_read = MAX(last_read, excluded.last_read)
         RETURNING last_read",
    )?;
    let last: i64 = stmt.query_row(params![user_key(user), room, to_i64(id)], |row| row.get(0))?;
    Ok(last as u64)
}

/// `user`'s read state in every room of `rooms`, in one statement: the rooms come in as a JSON
/// array, and each count stops at [`UNREAD_CAP`] rows.
pub(super) fn unread(
    conn: &Connection,
    user: &str,
    rooms: &[String],
) -> anyhow::Result<HashMap<String, ReadState>> {
    if rooms.is_empty() {
        return Ok(HashMap::new());
    }
    let mut stmt = conn.prepare_cached(
        "WITH asked(room) AS (SELECT DISTINCT value FROM json_each(?2)),
              marks(room, last_read) AS (
                  SELECT asked.room, COALESCE(r.last_read, 0) FROM asked
                  LEFT JOIN read_state r ON r.user_key = ?1 AND r.room = asked.room)
         SELECT room, last_read,
             (SELECT COUNT(*) FROM (
                 SELECT 1 FROM messages m
                 WHERE m.room = marks.room AND m.id > marks.last_read AND m.kind = ''
                   AND m.deleted = 0 AND lower(m.sender) <> ?1
                 LIMIT ?3)),
             (SELECT COUNT(*) FROM (
                 SELECT 1 FROM mentions n JOIN messages m ON m.room = n.room AND m.id = n.id
                 WHERE n.user_key = ?1 AND n.room = marks.room AND n.id > marks.last_read
                   AND lower(m.sender) <> ?1
                 LIMIT ?3))
         FROM marks",
    )?;
    let asked = serde_json::to_string(rooms)?;
    let rows = stmt.query_map(params![user_key(user), asked, to_i64(UNREAD_CAP)], |row| {
        Ok((
            row.get::<_, String>(0)?,
            ReadState {
                last_read: row.get::<_, i64>(1)? as u64,
                unread: row.get::<_, i64>(2)? as u64,
                mentions: row.get::<_, i64>(3)? as u64,
            },
        ))
    })?;
    Ok(rows.collect::<Result<HashMap<_, _>, _>>()?)
}

/// The rooms `user` has a read mark in, by name.
pub(super) fn read_rooms(conn: &Connection, user: &str) -> anyhow::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT room FROM read_state WHERE user_key = ?1 ORDER BY room")?;
    let rows = stmt.query_map(params![user_key(user)], |row| row.get(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
