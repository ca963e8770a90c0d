//! A room's stream in PostgreSQL: messages and events written together (each event applied to
//! its message in the same transaction), history pages with reactions, catch-up reads.

use postgres::{Client, Row, Transaction};

use crate::store::{
    attach_reactions, participants, user_key, Conversation, Kind, SentId, StoredMessage,
};
use crate::store::{to_i64, to_u64};

const COLUMNS: &str =
    "room, id, sender, ts, body, guest, deleted, kind, target, reply_to, client_id, edited";

fn row_message(row: &Row) -> StoredMessage {
    StoredMessage {
        room: row.get(0),
        id: to_u64(row.get(1)),
        from: row.get(2),
        ts: to_u64(row.get(3)),
        body: String::from_utf8_lossy(row.get::<_, &[u8]>(4)).into_owned(),
        guest: row.get(5),
        deleted: row.get(6),
        kind: Kind::parse(row.get(7)).unwrap_or_default(),
        target: row.get::<_, Option<i64>>(8).map(to_u64),
        reply_to: row.get::<_, Option<i64>>(9).map(to_u64),
        client_id: row.get(10),
        edited: row.get(11),
        ..StoredMessage::default()
    }
}

/// Inserts `batch` with `ids` in one statement (arrays in, rows out of UNNEST), then applies
/// its events and mentions in order.
pub(super) fn insert(
    tx: &mut Transaction<'_>,
    batch: &[StoredMessage],
    ids: &[i64],
) -> anyhow::Result<()> {
    let rooms: Vec<&str> = batch.iter().map(|m| m.room.as_str()).collect();
    let senders: Vec<&str> = batch.iter().map(|m| m.from.as_str()).collect();
    let ts: Vec<i64> = batch.iter().map(|m| to_i64(m.ts)).collect();
    let bodies: Vec<&[u8]> = batch.iter().map(|m| m.body.as_bytes()).collect();
    let guests: Vec<bool> = batch.iter().map(|m| m.guest).collect();
    let kinds: Vec<&str> = batch.iter().map(|m| m.kind.as_str()).collect();
    let targets: Vec<Option<i64>> = batch.iter().map(|m| m.target.map(to_i64)).collect();
    let replies: Vec<Option<i64>> = batch.iter().map(|m| m.reply_to.map(to_i64)).collect();
    let client_ids: Vec<Option<&str>> = batch.iter().map(|m| m.client_id.as_deref()).collect();
    tx.execute(
        "INSERT INTO messages (room, id, sender, ts, body, guest, kind, target, reply_to, client_id)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[],
                              $5::bytea[], $6::bool[], $7::text[], $8::bigint[], $9::bigint[],
                              $10::text[])",
        &[
            &rooms,
            &ids,
            &senders,
            &ts,
            &bodies,
            &guests,
            &kinds,
            &targets,
            &replies,
            &client_ids,
        ],
    )?;
    for (m, id) in batch.iter().zip(ids) {
        if m.target.is_some() || !m.mentions.is_empty() || !participants(&m.room).is_empty() {
            apply(tx, m, *id)?;
        }
    }
    Ok(())
}

/// What an event does to its message (and a message's mentions). An event for a message that
/// is not there, or deleted, changes nothing: the order of the stream decides.
fn apply(tx: &mut Transaction<'_>, m: &StoredMessage, id: i64) -> anyhow::Result<()> {
    let room = &m.room;
    let Some(target) = m.target.map(to_i64) else {
        for name in &m.mentions {
            tx.execute(
                "INSERT INTO mentions (user_key, room, id) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&user_key(name), room, &id],
            )?;
        }
        for (user, peer) in participants(room) {
            tx.execute(
                "INSERT INTO conversations (user_key, room, peer, last_ts) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_key, room) DO UPDATE SET last_ts = excluded.last_ts",
                &[&user_key(user), room, &peer, &to_i64(m.ts)],
            )?;
        }
        return Ok(());
    };
    match m.kind {
        Kind::Message => {}
        Kind::Edit => {
            tx.execute(
                "UPDATE messages SET body = $3, edited = TRUE
                 WHERE room = $1 AND id = $2 AND kind = '' AND NOT deleted",
                &[room, &target, &m.body.as_bytes()],
            )?;
        }
        Kind::Delete => {
            // The text goes everywhere it was kept: the message and its edits.
            tx.execute(
                "UPDATE messages SET body = ''::bytea, deleted = TRUE
                 WHERE room = $1 AND id = $2 AND kind = ''",
                &[room, &target],
            )?;
            tx.execute(
                "UPDATE messages SET body = ''::bytea
                 WHERE room = $1 AND target = $2 AND kind = 'edit'",
                &[room, &target],
            )?;
            tx.execute(
                "DELETE FROM reactions WHERE room = $1 AND id = $2",
                &[room, &target],
            )?;
            tx.execute(
                "DELETE FROM mentions WHERE room = $1 AND id = $2",
                &[room, &target],
            )?;
        }
        Kind::React => {
            tx.execute(
                "INSERT INTO reactions (room, id, emoji, username, ts)
                 SELECT $1, $2, $3, $4, $5 FROM messages
                 WHERE room = $1 AND id = $2 AND kind = '' AND NOT deleted
                 ON CONFLICT DO NOTHING",
                &[room, &target, &m.body, &m.from, &to_i64(m.ts)],
            )?;
        }
        Kind::Unreact => {
            tx.execute(
                "DELETE FROM reactions WHERE room = $1 AND id = $2 AND emoji = $3 AND username = $4",
                &[room, &target, &m.body, &m.from],
            )?;
        }
    }
    Ok(())
}

/// A page of chat messages (no events) before `before`, oldest first, with reactions.
pub(super) fn before(
    conn: &mut Client,
    room: &str,
    before: Option<u64>,
    limit: usize,
) -> anyhow::Result<Vec<StoredMessage>> {
    let before = to_i64(before.unwrap_or(u64::MAX));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn.query(
        &format!(
            "SELECT {COLUMNS} FROM messages WHERE room = $1 AND id < $2 AND kind = ''
             ORDER BY id DESC LIMIT $3"
        ),
        &[&room, &before, &limit],
    )?;
    let mut page: Vec<StoredMessage> = rows.iter().rev().map(row_message).collect();
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        let rows = conn.query(
            "SELECT id, emoji, username FROM reactions WHERE room = $1 AND id BETWEEN $2 AND $3
             ORDER BY id, ts, emoji, username",
            &[&room, &to_i64(first.id), &to_i64(last.id)],
        )?;
        let found = rows
            .iter()
            .map(|r| (to_u64(r.get(0)), r.get(1), r.get(2)))
            .collect();
        attach_reactions(&mut page, found);
    }
    Ok(page)
}

/// Messages and events after `after`, oldest first.
pub(super) fn after(
    conn: &mut Client,
    room: &str,
    after: u64,
    limit: usize,
) -> anyhow::Result<Vec<StoredMessage>> {
    let after = to_i64(after);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn.query(
        &format!("SELECT {COLUMNS} FROM messages WHERE room = $1 AND id > $2 ORDER BY id LIMIT $3"),
        &[&room, &after, &limit],
    )?;
    Ok(rows.iter().map(row_message).collect())
}

/// One message or event as it is now.
pub(super) fn message(
    conn: &mut Client,
    room: &str,
    id: u64,
) -> anyhow::Result<Option<StoredMessage>> {
    let row = conn.query_opt(
        &format!("SELECT {COLUMNS} FROM messages WHERE room = $1 AND id = $2"),
        &[&room, &to_i64(id)],
    )?;
    Ok(row.as_ref().map(row_message))
}

/// Client ids of messages sent since `since_ms`, newest first.
pub(super) fn recent_client_ids(
    conn: &mut Client,
    since_ms: u64,
    limit: usize,
) -> anyhow::Result<Vec<SentId>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn.query(
        "SELECT room, sender, client_id, id FROM messages
         WHERE client_id IS NOT NULL AND ts >= $1 ORDER BY ts DESC LIMIT $2",
        &[&to_i64(since_ms), &limit],
    )?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), to_u64(r.get(3))))
        .collect())
}

/// A person's conversations, the latest first.
pub(super) fn conversations(
    conn: &mut Client,
    user: &str,
    limit: usize,
) -> anyhow::Result<Vec<Conversation>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn.query(
        "SELECT c.room, c.peer, c.last_ts, (SELECT MAX(id) FROM messages m WHERE m.room = c.room)
         FROM conversations c WHERE c.user_key = $1 ORDER BY c.last_ts DESC LIMIT $2",
        &[&user_key(user), &limit],
    )?;
    Ok(rows
        .iter()
        .map(|r| Conversation {
            room: r.get(0),
            peer: r.get(1),
            last_ts: to_u64(r.get(2)),
            last_id: r.get::<_, Option<i64>>(3).map_or(0, to_u64),
        })
        .collect())
}

/// The id of `sender`'s message in `room` sent with `client_id`, if stored.
pub(super) fn sent_id(
    conn: &mut Client,
    room: &str,
    sender: &str,
    client_id: &str,
) -> anyhow::Result<Option<u64>> {
    let row = conn.query_opt(
        "SELECT id FROM messages WHERE room = $1 AND sender = $2 AND client_id = $3 LIMIT 1",
        &[&room, &sender, &client_id],
    )?;
    Ok(row.map(|r| to_u64(r.get(0))))
}
