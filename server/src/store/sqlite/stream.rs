//! A room's stream in SQLite: messages and events written together (each event applied to its
//! message in the same transaction), history pages with reactions, catch-up reads.

use rusqlite::{params, Connection, OptionalExtension as _, Transaction};

use crate::store::to_i64;
use crate::store::{
    attach_reactions, participants, user_key, Conversation, Kind, SentId, StoredMessage,
};

const COLUMNS: &str =
    "room, id, sender, ts, body, guest, deleted, kind, target, reply_to, client_id, edited";

fn row_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let kind: String = row.get(7)?;
    Ok(StoredMessage {
        room: row.get(0)?,
        id: row.get::<_, i64>(1)? as u64,
        from: row.get(2)?,
        ts: row.get::<_, i64>(3)? as u64,
        body: row.get(4)?,
        guest: row.get(5)?,
        deleted: row.get(6)?,
        kind: Kind::parse(&kind).unwrap_or_default(),
        target: row.get::<_, Option<i64>>(8)?.map(|n| n as u64),
        reply_to: row.get::<_, Option<i64>>(9)?.map(|n| n as u64),
        client_id: row.get(10)?,
        edited: row.get(11)?,
        ..StoredMessage::default()
    })
}

/// Inserts `batch` and applies its events, in order.
pub(super) fn append(tx: &Transaction<'_>, batch: &[StoredMessage]) -> anyhow::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO messages (room, id, sender, ts, body, guest, kind, target, reply_to, client_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
            m.guest,
            m.kind.as_str(),
            m.target.map(to_i64),
            m.reply_to.map(to_i64),
            m.client_id,
        ])?;
        apply(tx, m)?;
    }
    Ok(())
}

/// What an event does to its message (and a message's mentions). An event for a message that
/// is not there, or deleted, changes nothing: the order of the stream decides.
fn apply(tx: &Transaction<'_>, m: &StoredMessage) -> anyhow::Result<()> {
    let (room, id) = (&m.room, to_i64(m.id));
    let Some(target) = m.target.map(to_i64) else {
        let mut mention = tx.prepare_cached(
            "INSERT OR IGNORE INTO mentions (user_key, room, id) VALUES (?1, ?2, ?3)",
        )?;
        for name in &m.mentions {
            mention.execute(params![user_key(name), room, id])?;
        }
        let mut listed = tx.prepare_cached(
            "INSERT INTO conversations (user_key, room, peer, last_ts) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_key, room) DO UPDATE SET last_ts = excluded.last_ts",
        )?;
        for (user, peer) in participants(room) {
            listed.execute(params![user_key(user), room, peer, to_i64(m.ts)])?;
        }
        return Ok(());
    };
    match m.kind {
        Kind::Message => {}
        Kind::Edit => {
            tx.prepare_cached(
                "UPDATE messages SET body = ?3, edited = 1
                 WHERE room = ?1 AND id = ?2 AND kind = '' AND deleted = 0",
            )?
            .execute(params![room, target, m.body])?;
        }
        Kind::Delete => {
            // The text goes everywhere it was kept: the message and its edits.
            tx.prepare_cached(
                "UPDATE messages SET body = '', deleted = 1 WHERE room = ?1 AND id = ?2 AND kind = ''",
            )?
            .execute(params![room, target])?;
            tx.prepare_cached(
                "UPDATE messages SET body = '' WHERE room = ?1 AND target = ?2 AND kind = 'edit'",
            )?
            .execute(params![room, target])?;
            tx.prepare_cached("DELETE FROM reactions WHERE room = ?1 AND id = ?2")?
                .execute(params![room, target])?;
            tx.prepare_cached("DELETE FROM mentions WHERE room = ?1 AND id = ?2")?
                .execute(params![room, target])?;
        }
        Kind::React => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO reactions (room, id, emoji, username, ts)
                 SELECT ?1, ?2, ?3, ?4, ?5 FROM messages
                 WHERE room = ?1 AND id = ?2 AND kind = '' AND deleted = 0",
            )?
            .execute(params![room, target, m.body, m.from, to_i64(m.ts)])?;
        }
        Kind::Unreact => {
            tx.prepare_cached(
                "DELETE FROM reactions WHERE room = ?1 AND id = ?2 AND emoji = ?3 AND username = ?4",
            )?
            .execute(params![room, target, m.body, m.from])?;
        }
    }
    Ok(())
}

/// A page of chat messages (no events) before `before`, oldest first, with reactions.
pub(super) fn before(
    conn: &Connection,
    room: &str,
    before: Option<u64>,
    limit: usize,
) -> anyhow::Result<Vec<StoredMessage>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE room = ?1 AND id < ?2 AND kind = ''
         ORDER BY id DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(
        params![room, to_i64(before.unwrap_or(u64::MAX)), limit as i64],
        row_message,
    )?;
    let mut out = rows.collect::<Result<Vec<_>, _>>()?;
    out.reverse();
    add_reactions(conn, room, &mut out)?;
    Ok(out)
}

/// Fills in the reactions of `page` (ascending ids) with one range query.
fn add_reactions(conn: &Connection, room: &str, page: &mut [StoredMessage]) -> anyhow::Result<()> {
    let (Some(first), Some(last)) = (page.first(), page.last()) else {
        return Ok(());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT id, emoji, username FROM reactions WHERE room = ?1 AND id BETWEEN ?2 AND ?3
         ORDER BY id, ts, emoji, username",
    )?;
    let rows = stmt.query_map(params![room, to_i64(first.id), to_i64(last.id)], |row| {
        Ok((row.get::<_, i64>(0)? as u64, row.get(1)?, row.get(2)?))
    })?;
    let found = rows.collect::<Result<Vec<(u64, String, String)>, _>>()?;
    attach_reactions(page, found);
    Ok(())
}

/// Messages and events after `after`, oldest first.
pub(super) fn after(
    conn: &Connection,
    room: &str,
    after: u64,
    limit: usize,
) -> anyhow::Result<Vec<StoredMessage>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![room, to_i64(after), limit as i64], row_message)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// One message or event as it is now.
pub(super) fn message(
    conn: &Connection,
    room: &str,
    id: u64,
) -> anyhow::Result<Option<StoredMessage>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE room = ?1 AND id = ?2"
    ))?;
    Ok(stmt
        .query_row(params![room, to_i64(id)], row_message)
        .optional()?)
}

/// Client ids of messages sent since `since_ms`, newest first.
pub(super) fn recent_client_ids(
    conn: &Connection,
    since_ms: u64,
    limit: usize,
) -> anyhow::Result<Vec<SentId>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room, sender, client_id, id FROM messages
         WHERE client_id IS NOT NULL AND ts >= ?1 ORDER BY ts DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![to_i64(since_ms), limit as i64], |row| {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get::<_, i64>(3)? as u64,
        ))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A person's conversations, the latest first.
pub(super) fn conversations(
    conn: &Connection,
    user: &str,
    limit: usize,
) -> anyhow::Result<Vec<Conversation>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.room, c.peer, c.last_ts, (SELECT MAX(id) FROM messages m WHERE m.room = c.room)
         FROM conversations c WHERE c.user_key = ?1 ORDER BY c.last_ts DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![user_key(user), limit as i64], |row| {
        Ok(Conversation {
            room: row.get(0)?,
            peer: row.get(1)?,
            last_ts: row.get::<_, i64>(2)? as u64,
            last_id: row.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The id of `sender`'s message in `room` sent with `client_id`, if stored.
pub(super) fn sent_id(
    conn: &Connection,
    room: &str,
    sender: &str,
    client_id: &str,
) -> anyhow::Result<Option<u64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM messages WHERE room = ?1 AND sender = ?2 AND client_id = ?3 LIMIT 1",
    )?;
    let found: Option<i64> = stmt
        .query_row(params![room, sender, client_id], |row| row.get(0))
        .optional()?;
    Ok(found.map(|id| id as u64))
}
