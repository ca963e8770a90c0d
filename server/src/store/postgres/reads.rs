//! Read state in PostgreSQL: each account's last read message per room, and the unread and
//! mention counts after it (capped, so a huge room costs no more than a small one).

use std::collections::HashMap;

use postgres::Client;

use crate::store::{to_i64, to_u64, user_key, ReadState, UNREAD_CAP};

/// Moves `user`'s read mark in `room` forward to `id` (never back); the mark now stored.
pub(super) fn set_read(conn: &mut Client, user: &str, room: &str, id: u64) -> anyhow::Result<u64> {
    let row = conn.query_one(
        "INSERT INTO read_state (user_key, room, last_read) VALUES ($1, $2, $3)
         ON CONFLICT (user_key, room)
         DO UPDATE SET last_read = GREATEST(read_state.last_read, excluded.last_read)
         RETURNING last_read",
        &[&user_key(user), &room, &to_i64(id)],
    )?;
    Ok(to_u64(row.get(0)))
}

/// `user`'s read state in every room of `rooms`, in one statement; each count stops at
/// [`UNREAD_CAP`] rows.
pub(super) fn unread(
    conn: &mut Client,
    user: &str,
    rooms: &[String],
) -> anyhow::Result<HashMap<String, ReadState>> {
    if rooms.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = conn.query(
        "WITH marks AS (
             SELECT asked.room, COALESCE(r.last_read, 0) AS last_read
             FROM (SELECT DISTINCT unnest($2::text[]) AS room) asked
             LEFT JOIN read_state r ON r.user_key = $1 AND r.room = asked.room)
         SELECT marks.room, marks.last_read, u.n, c.n FROM marks
         CROSS JOIN LATERAL (SELECT COUNT(*) AS n FROM (
             SELECT 1 FROM messages m
             WHERE m.room = marks.room AND m.id > marks.last_read AND m.kind = ''
               AND NOT m.deleted AND lower(m.sender) <> $1
             LIMIT $3) capped) u
         CROSS JOIN LATERAL (SELECT COUNT(*) AS n FROM (
             SELECT 1 FROM mentions n JOIN messages m ON m.room = n.room AND m.id = n.id
             WHERE n.user_key = $1 AND n.room = marks.room AND n.id > marks.last_read
               AND lower(m.sender) <> $1
             LIMIT $3) capped) c",
        &[&user_key(user), &rooms, &to_i64(UNREAD_CAP)],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let state = ReadState {
                last_read: to_u64(r.get(1)),
                unread: to_u64(r.get(2)),
                mentions: to_u64(r.get(3)),
            };
            (r.get(0), state)
        })
        .collect())
}

/// The rooms `user` has a read mark in, by name.
pub(super) fn read_rooms(conn: &mut Client, user: &str) -> anyhow::Result<Vec<String>> {
    let rows = conn.query(
        "SELECT room FROM read_state WHERE user_key = $1 ORDER BY room",
        &[&user_key(user)],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
