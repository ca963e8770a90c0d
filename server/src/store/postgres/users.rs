//! The account directory in PostgreSQL: pages of account names by their case-insensitive key,
//! compared bytewise (`COLLATE "C"`) so the order and the prefix match SQLite's.

use postgres::Client;

use crate::store::{key_range, user_key, MAX_PAGE_ROWS};

/// Up to `limit` account names whose key starts with `prefix`'s and comes after `after`'s,
/// by key.
pub(super) fn page(
    conn: &mut Client,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    let (low, high) = key_range(prefix);
    let after = after.map(user_key).unwrap_or_default();
    let limit = i64::try_from(limit.min(MAX_PAGE_ROWS)).unwrap_or(0);
    let rows = conn.query(
        r#"SELECT name FROM users
           WHERE name_key COLLATE "C" >= $1 AND name_key COLLATE "C" < $2
             AND name_key COLLATE "C" > $3
           ORDER BY name_key COLLATE "C" LIMIT $4"#,
        &[&low, &high, &after, &limit],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
