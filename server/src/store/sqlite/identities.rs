//! Identities from other sites and used login states, in SQLite.

use rusqlite::{params, Connection, OptionalExtension as _};

use crate::clock::now_ms;
use crate::store::identities::{Link, LinkedIdentity, Unlink};
use crate::store::{to_i64, to_u64, user_key};

pub(super) fn user_of(
    conn: &Connection,
    provider: &str,
    subject: &str,
) -> anyhow::Result<Option<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT username FROM identities WHERE provider = ?1 AND subject = ?2")?;
    Ok(stmt
        .query_row(params![provider, subject], |row| row.get(0))
        .optional()?)
}

pub(super) fn create_user(
    conn: &mut Connection,
    name: &str,
    provider: &str,
    subject: &str,
) -> anyhow::Result<bool> {
    let tx = conn.transaction()?;
    let now = to_i64(now_ms());
    // No password: the empty hash matches none (see Auth::check_password).
    let created = tx.execute(
        "INSERT OR IGNORE INTO users (name, name_key, password_hash, created_ms)
         VALUES (?1, ?2, '', ?3)",
        params![name, user_key(name), now],
    )? == 1;
    if created {
        tx.execute(
            "INSERT INTO identities (provider, subject, username, linked_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![provider, subject, name, now],
        )?;
        tx.commit()?;
    }
    Ok(created)
}

pub(super) fn link(
    conn: &mut Connection,
    user: &str,
    provider: &str,
    subject: &str,
) -> anyhow::Result<Link> {
    let tx = conn.transaction()?;
    if let Some(owner) = user_of(&tx, provider, subject)? {
        return Ok(if owner == user {
            Link::Linked
        } else {
            Link::OtherUser
        });
    }
    let taken = tx
        .query_row(
            "SELECT 1 FROM identities WHERE username = ?1 AND provider = ?2",
            params![user, provider],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if taken {
        return Ok(Link::ProviderTaken);
    }
    tx.execute(
        "INSERT INTO identities (provider, subject, username, linked_ms) VALUES (?1, ?2, ?3, ?4)",
        params![provider, subject, user, to_i64(now_ms())],
    )?;
    tx.commit()?;
    Ok(Link::Linked)
}

pub(super) fn of_user(conn: &Connection, user: &str) -> anyhow::Result<Vec<LinkedIdentity>> {
    let mut stmt = conn.prepare_cached(
        "SELECT provider, linked_ms FROM identities WHERE username = ?1 ORDER BY provider",
    )?;
    let rows = stmt.query_map(params![user], |row| {
        Ok(LinkedIdentity {
            provider: row.get(0)?,
            linked_ms: to_u64(row.get(1)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn unlink(conn: &mut Connection, user: &str, provider: &str) -> anyhow::Result<Unlink> {
    let tx = conn.transaction()?;
    let (linked, others): (i64, i64) = tx.query_row(
        "SELECT COALESCE(SUM(provider = ?2), 0), COALESCE(SUM(provider <> ?2), 0)
         FROM identities WHERE username = ?1",
        params![user, provider],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if linked == 0 {
        return Ok(Unlink::NotLinked);
    }
    let password: bool = tx
        .query_row(
            "SELECT password_hash <> '' FROM users WHERE name = ?1",
            params![user],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(false);
    if !password && others == 0 {
        return Ok(Unlink::LastWay);
    }
    tx.execute(
        "DELETE FROM identities WHERE username = ?1 AND provider = ?2",
        params![user, provider],
    )?;
    tx.commit()?;
    Ok(Unlink::Unlinked)
}

pub(super) fn consume_state(
    conn: &mut Connection,
    id: &str,
    expires_ms: u64,
    now_ms: u64,
) -> anyhow::Result<bool> {
    let tx = conn.transaction()?;
    // Expired states can no longer be presented (their cookie says so): forget them here, so
    // the table holds at most the states of the last few minutes.
    tx.execute(
        "DELETE FROM login_states WHERE expires_ms < ?1",
        params![to_i64(now_ms)],
    )?;
    let fresh = tx.execute(
        "INSERT OR IGNORE INTO login_states (id, expires_ms) VALUES (?1, ?2)",
        params![id, to_i64(expires_ms)],
    )? == 1;
    tx.commit()?;
    Ok(fresh)
}
