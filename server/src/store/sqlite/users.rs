//! The account directory in SQLite: pages of account names by their case-insensitive key.

use rusqlite::{params, Connection};

use crate::store::{key_range, user_key, MAX_PAGE_ROWS};

/// Up to `limit` account names whose key starts with `prefix`'s and comes after `after`'s,
/// by key.
pub(super) fn page(
    conn: &Connection,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    let (low, high) = key_range(prefix);
    let after = after.map(user_key).unwrap_or_default();
    let limit = i64::try_from(limit.min(MAX_PAGE_ROWS)).unwrap_or(0);
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM users
         WHERE name_key >= ?1 AND name_key < ?2 AND name_key > ?3
         ORDER BY name_key LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![low, high, after, limit], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
