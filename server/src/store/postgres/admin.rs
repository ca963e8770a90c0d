//! Operators, bans, closed rooms and the audit log in PostgreSQL (the SQL is `store::admin`'s).

use postgres::{Client, Row};

use crate::store::admin::{self, AdminRecord, AuditEntry};
use crate::store::{to_i64, to_u64, user_key};

fn record(row: &Row) -> AdminRecord {
    AdminRecord {
        name: row.get(0),
        reason: row.get(1),
        by: row.get(2),
        at_ms: to_u64(row.get(3)),
    }
}

fn records(
    conn: &mut Client,
    sql: &str,
    after: &str,
    limit: usize,
) -> anyhow::Result<Vec<AdminRecord>> {
    let rows = conn.query(sql, &[&after, &to_i64(limit as u64)])?;
    Ok(rows.iter().map(record).collect())
}

pub(super) fn grant(conn: &mut Client, r: &AdminRecord) -> anyhow::Result<bool> {
    Ok(conn.execute(admin::GRANT, &[&r.name, &r.by, &to_i64(r.at_ms)])? > 0)
}

pub(super) fn revoke(conn: &mut Client, name: &str) -> anyhow::Result<bool> {
    Ok(conn.execute(admin::REVOKE, &[&name])? > 0)
}

pub(super) fn operators(
    conn: &mut Client,
    after: &str,
    limit: usize,
) -> anyhow::Result<Vec<AdminRecord>> {
    records(conn, admin::OPERATORS, after, limit)
}

pub(super) fn is_operator(conn: &mut Client, name: &str) -> anyhow::Result<bool> {
    Ok(conn.query_opt(admin::IS_OPERATOR, &[&name])?.is_some())
}

pub(super) fn ban(conn: &mut Client, r: &AdminRecord) -> anyhow::Result<()> {
    let key = user_key(&r.name);
    conn.execute(
        admin::BAN,
        &[&key, &r.name, &r.reason, &r.by, &to_i64(r.at_ms)],
    )?;
    Ok(())
}

pub(super) fn unban(conn: &mut Client, name: &str) -> anyhow::Result<bool> {
    Ok(conn.execute(admin::UNBAN, &[&user_key(name)])? > 0)
}

pub(super) fn bans(
    conn: &mut Client,
    after: &str,
    limit: usize,
) -> anyhow::Result<Vec<AdminRecord>> {
    records(conn, admin::BANS, &user_key(after), limit)
}

pub(super) fn close_room(conn: &mut Client, r: &AdminRecord) -> anyhow::Result<()> {
    conn.execute(
        admin::CLOSE_ROOM,
        &[&r.name, &r.reason, &r.by, &to_i64(r.at_ms)],
    )?;
    Ok(())
}

pub(super) fn reopen_room(conn: &mut Client, room: &str) -> anyhow::Result<bool> {
    Ok(conn.execute(admin::REOPEN_ROOM, &[&room])? > 0)
}

pub(super) fn closed_rooms(
    conn: &mut Client,
    after: &str,
    limit: usize,
) -> anyhow::Result<Vec<AdminRecord>> {
    records(conn, admin::CLOSED_ROOMS, after, limit)
}

pub(super) fn audit(conn: &mut Client, e: &AuditEntry) -> anyhow::Result<()> {
    conn.execute(
        admin::AUDIT,
        &[
            &to_i64(e.at_ms),
            &e.actor,
            &e.action,
            &e.target,
            &e.detail,
            &e.node,
            &e.outcome,
        ],
    )?;
    Ok(())
}

pub(super) fn purge_audit(conn: &mut Client, before_ms: u64) -> anyhow::Result<usize> {
    Ok(conn.execute(admin::PURGE_AUDIT, &[&to_i64(before_ms)])? as usize)
}

pub(super) fn audit_page(
    conn: &mut Client,
    before: Option<u64>,
    limit: usize,
) -> anyhow::Result<Vec<AuditEntry>> {
    let before = before.map_or(i64::MAX, to_i64);
    let rows = conn.query(admin::AUDIT_PAGE, &[&before, &to_i64(limit as u64)])?;
    Ok(rows
        .iter()
        .map(|row| AuditEntry {
            id: to_u64(row.get(0)),
            at_ms: to_u64(row.get(1)),
            actor: row.get(2),
            action: row.get(3),
            target: row.get(4),
            detail: row.get(5),
            node: row.get(6),
            outcome: row.get(7),
        })
        .collect())
}
