//! Personal access tokens in SQLite: their table (whose SQL PostgreSQL shares), creation
//! within the per-account bound, lookup by hash, listing and revocation.

use rusqlite::{params, Connection, OptionalExtension as _, Row};

use crate::store::{to_i64, to_u64, AccessToken, MAX_PAGE_ROWS};

/// Personal access tokens: only each token's SHA-256 (hex, so one `TEXT` column serves both
/// backends), a short public id to list and revoke it by, its account (exactly as registered),
/// label, scope and times. Revoking deletes the row. The same SQL runs on PostgreSQL.
pub(in crate::store) const ACCESS_TOKENS: &str = "
    CREATE TABLE access_tokens (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        username TEXT NOT NULL,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL
    );
    CREATE INDEX access_tokens_by_user ON access_tokens (username, expires_ms);
    CREATE INDEX access_tokens_by_expiry ON access_tokens (expires_ms);
";

/// The columns every read selects, in [`token`]'s order.
const COLUMNS: &str = "id, hash, username, name, scope, created_ms, expires_ms";

fn token(row: &Row<'_>) -> rusqlite::Result<AccessToken> {
    Ok(AccessToken {
        id: row.get(0)?,
        hash: row.get(1)?,
        user: row.get(2)?,
        name: row.get(3)?,
        scope: row.get(4)?,
        created_ms: to_u64(row.get(5)?),
        expires_ms: to_u64(row.get(6)?),
    })
}

/// Stores `t` unless its user holds `max` unexpired tokens; `conn` is the writer, whose lock
/// the caller holds, so no other creation runs between the count and the insert.
pub(super) fn insert(
    conn: &mut Connection,
    t: &AccessToken,
    max: usize,
    now_ms: u64,
) -> anyhow::Result<bool> {
    let tx = conn.transaction()?;
    let now = to_i64(now_ms);
    tx.execute(
        "DELETE FROM access_tokens WHERE username = ?1 AND expires_ms <= ?2",
        params![t.user, now],
    )?;
    let held: i64 = tx.query_row(
        "SELECT COUNT(*) FROM access_tokens WHERE username = ?1",
        params![t.user],
        |row| row.get(0),
    )?;
    if to_u64(held) >= max as u64 {
        return Ok(false);
    }
    tx.execute(
        &format!("INSERT INTO access_tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            t.id,
            t.hash,
            t.user,
            t.name,
            t.scope,
            to_i64(t.created_ms),
            to_i64(t.expires_ms)
        ],
    )?;
    tx.commit()?;
    Ok(true)
}

/// The token hashed `hash`.
pub(super) fn by_hash(conn: &Connection, hash: &str) -> anyhow::Result<Option<AccessToken>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM access_tokens WHERE hash = ?1"
    ))?;
    Ok(stmt.query_row(params![hash], token).optional()?)
}

/// `user`'s unexpired tokens, oldest first.
pub(super) fn of_user(
    conn: &Connection,
    user: &str,
    now_ms: u64,
) -> anyhow::Result<Vec<AccessToken>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM access_tokens WHERE username = ?1 AND expires_ms > ?2
         ORDER BY created_ms, id"
    ))?;
    let rows = stmt.query_map(params![user, to_i64(now_ms)], token)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes `user`'s token `id`.
pub(super) fn revoke(conn: &Connection, user: &str, id: &str) -> anyhow::Result<bool> {
    let changed = conn.execute(
        "DELETE FROM access_tokens WHERE username = ?1 AND id = ?2",
        params![user, id],
    )?;
    Ok(changed == 1)
}

/// Those of `ids` stored and unexpired.
pub(super) fn live(conn: &Connection, ids: &[String], now_ms: u64) -> anyhow::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT id FROM access_tokens WHERE id = ?1 AND expires_ms > ?2")?;
    let mut out = Vec::new();
    for id in ids.iter().take(MAX_PAGE_ROWS) {
        if let Some(id) = stmt
            .query_row(params![id, to_i64(now_ms)], |row| row.get(0))
            .optional()?
        {
            out.push(id);
        }
    }
    Ok(out)
}

/// Deletes every expired token.
pub(super) fn purge(conn: &Connection, now_ms: u64) -> anyhow::Result<usize> {
    Ok(conn.execute(
        "DELETE FROM access_tokens WHERE expires_ms <= ?1",
        params![to_i64(now_ms)],
    )?)
}
