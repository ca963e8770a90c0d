//! Personal access tokens in PostgreSQL (the table is SQLite's `ACCESS_TOKENS`): creation within
//! the per-account bound, lookup by hash, listing and revocation.

use postgres::{Client, Row, Transaction};

use crate::store::{to_i64, to_u64, AccessToken, MAX_PAGE_ROWS};

/// The columns every read selects, in [`token`]'s order.
const COLUMNS: &str = "id, hash, username, name, scope, created_ms, expires_ms";

fn token(row: &Row) -> AccessToken {
    AccessToken {
        id: row.get(0),
        hash: row.get(1),
        user: row.get(2),
        name: row.get(3),
        scope: row.get(4),
        created_ms: to_u64(row.get(5)),
        expires_ms: to_u64(row.get(6)),
    }
}

/// Stores `t` unless its user holds `max` unexpired tokens. The account's row is locked first:
/// two nodes creating tokens for one account at once queue there, so the bound holds.
pub(super) fn insert(
    tx: &mut Transaction<'_>,
    t: &AccessToken,
    max: usize,
    now_ms: u64,
) -> anyhow::Result<bool> {
    let now = to_i64(now_ms);
    tx.execute("SELECT 1 FROM users WHERE name = $1 FOR UPDATE", &[&t.user])?;
    tx.execute(
        "DELETE FROM access_tokens WHERE username = $1 AND expires_ms <= $2",
        &[&t.user, &now],
    )?;
    let held: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM access_tokens WHERE username = $1",
            &[&t.user],
        )?
        .get(0);
    if to_u64(held) >= max as u64 {
        return Ok(false);
    }
    tx.execute(
        &format!("INSERT INTO access_tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        &[
            &t.id,
            &t.hash,
            &t.user,
            &t.name,
            &t.scope,
            &to_i64(t.created_ms),
            &to_i64(t.expires_ms),
        ],
    )?;
    Ok(true)
}

/// The token hashed `hash`.
pub(super) fn by_hash(conn: &mut Client, hash: &str) -> anyhow::Result<Option<AccessToken>> {
    let sql = format!("SELECT {COLUMNS} FROM access_tokens WHERE hash = $1");
    Ok(conn.query_opt(&sql, &[&hash])?.as_ref().map(token))
}

/// `user`'s unexpired tokens, oldest first.
pub(super) fn of_user(
    conn: &mut Client,
    user: &str,
    now_ms: u64,
) -> anyhow::Result<Vec<AccessToken>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM access_tokens WHERE username = $1 AND expires_ms > $2
         ORDER BY created_ms, id"
    );
    Ok(conn
        .query(&sql, &[&user, &to_i64(now_ms)])?
        .iter()
        .map(token)
        .collect())
}

/// Deletes `user`'s token `id`.
pub(super) fn revoke(conn: &mut Client, user: &str, id: &str) -> anyhow::Result<bool> {
    let changed = conn.execute(
        "DELETE FROM access_tokens WHERE username = $1 AND id = $2",
        &[&user, &id],
    )?;
    Ok(changed == 1)
}

/// Those of `ids` stored and unexpired.
pub(super) fn live(conn: &mut Client, ids: &[String], now_ms: u64) -> anyhow::Result<Vec<String>> {
    let ids: Vec<&str> = ids.iter().take(MAX_PAGE_ROWS).map(String::as_str).collect();
    let rows = conn.query(
        "SELECT id FROM access_tokens WHERE id = ANY($1) AND expires_ms > $2",
        &[&ids, &to_i64(now_ms)],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes every expired token.
pub(super) fn purge(conn: &mut Client, now_ms: u64) -> anyhow::Result<usize> {
    let purged = conn.execute(
        "DELETE FROM access_tokens WHERE expires_ms <= $1",
        &[&to_i64(now_ms)],
    )?;
    Ok(usize::try_from(purged).unwrap_or(usize::MAX))
}
