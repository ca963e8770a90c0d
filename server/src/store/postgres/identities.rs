//! Identities from other sites and used login states, in PostgreSQL.

use postgres::{Client, Transaction};

use crate::clock::now_ms;
use crate::store::identities::{Link, LinkedIdentity, Unlink};
use crate::store::{to_i64, to_u64, user_key};

pub(super) fn user_of(
    conn: &mut Client,
    provider: &str,
    subject: &str,
) -> anyhow::Result<Option<String>> {
    Ok(conn
        .query_opt(
            "SELECT username FROM identities WHERE provider = $1 AND subject = $2",
            &[&provider, &subject],
        )?
        .map(|r| r.get(0)))
}

pub(super) fn create_user(
    tx: &mut Transaction<'_>,
    name: &str,
    provider: &str,
    subject: &str,
) -> anyhow::Result<bool> {
    let now = to_i64(now_ms());
    // No password: the empty hash matches none (see Auth::check_password).
    let created = tx.execute(
        "INSERT INTO users (name, name_key, password_hash, created_ms)
         VALUES ($1, $2, '', $3) ON CONFLICT DO NOTHING",
        &[&name, &user_key(name), &now],
    )? == 1;
    if created {
        tx.execute(
            "INSERT INTO identities (provider, subject, username, linked_ms)
             VALUES ($1, $2, $3, $4)",
            &[&provider, &subject, &name, &now],
        )?;
    }
    Ok(created)
}

pub(super) fn link(
    tx: &mut Transaction<'_>,
    user: &str,
    provider: &str,
    subject: &str,
) -> anyhow::Result<Link> {
    let owner: Option<String> = tx
        .query_opt(
            "SELECT username FROM identities WHERE provider = $1 AND subject = $2",
            &[&provider, &subject],
        )?
        .map(|r| r.get(0));
    if let Some(owner) = owner {
        return Ok(if owner == user {
            Link::Linked
        } else {
            Link::OtherUser
        });
    }
    // Two nodes linking at once: the unique indexes decide, and the loser sees a conflict.
    let inserted = tx.execute(
        "INSERT INTO identities (provider, subject, username, linked_ms)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[&provider, &subject, &user, &to_i64(now_ms())],
    )?;
    Ok(if inserted == 1 {
        Link::Linked
    } else {
        Link::ProviderTaken
    })
}

pub(super) fn of_user(conn: &mut Client, user: &str) -> anyhow::Result<Vec<LinkedIdentity>> {
    let rows = conn.query(
        "SELECT provider, linked_ms FROM identities WHERE username = $1 ORDER BY provider",
        &[&user],
    )?;
    Ok(rows
        .iter()
        .map(|r| LinkedIdentity {
            provider: r.get(0),
            linked_ms: to_u64(r.get(1)),
        })
        .collect())
}

pub(super) fn unlink(
    tx: &mut Transaction<'_>,
    user: &str,
    provider: &str,
) -> anyhow::Result<Unlink> {
    // The account's row, locked: two unlinks at once cannot both leave it without a way in.
    let password: Option<bool> = tx
        .query_opt(
            "SELECT password_hash <> '' FROM users WHERE name = $1 FOR UPDATE",
            &[&user],
        )?
        .map(|r| r.get(0));
    let row = tx.query_one(
        "SELECT COUNT(*) FILTER (WHERE provider = $2), COUNT(*) FILTER (WHERE provider <> $2)
         FROM identities WHERE username = $1",
        &[&user, &provider],
    )?;
    let (linked, others): (i64, i64) = (row.get(0), row.get(1));
    if linked == 0 {
        return Ok(Unlink::NotLinked);
    }
    if !password.unwrap_or(false) && others == 0 {
        return Ok(Unlink::LastWay);
    }
    tx.execute(
        "DELETE FROM identities WHERE username = $1 AND provider = $2",
        &[&user, &provider],
    )?;
    Ok(Unlink::Unlinked)
}

pub(super) fn consume_state(
    tx: &mut Transaction<'_>,
    id: &str,
    expires_ms: u64,
    now_ms: u64,
) -> anyhow::Result<bool> {
    // Expired states can no longer be presented (their cookie says so): forget them here.
    tx.execute(
        "DELETE FROM login_states WHERE expires_ms < $1",
        &[&to_i64(now_ms)],
    )?;
    Ok(tx.execute(
        "INSERT INTO login_states (id, expires_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&id, &to_i64(expires_ms)],
    )? == 1)
}
