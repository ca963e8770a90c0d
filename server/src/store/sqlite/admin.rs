//! Operators, bans, closed rooms and the audit log in SQLite (the SQL is `store::admin`'s).

use rusqlite::{params, Connection, Row};

use crate::store::admin::{self, AdminRecord, AuditEntry};
use crate::store::{to_i64, to_u64, user_key};

fn record(row: &Row<'_>) -> rusqlite::Result<AdminRecord> {
    Ok(AdminRecord {
        name: row.get(0)?,
        reason: row.get(1)?,
        by: row.get(2)?,
        at_ms: to_u64(row.get(3)?),
    })
}

fn records(
    conn: &Connection,
    sql: &str,
    after: &str,
    limit: usize,
) -> anyhow::Result<Vec<AdminRecord>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![after, to_i64(limit as u64)], record)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn grant(conn: &Connection, r: &AdminRecord) -> anyhow::Result<bool> {
    Ok(conn.execute(admin::GRANT, params![r.name, r.by, to_i64(r.at_ms)])? > 0)
}

pub(super) fn revoke(conn: &Connection, name: &str) -> anyhow::Result<bool> {
    Ok(conn.execute(admin::REVOKE, params![name])? > 0)
}

pub(super) fn operators(
    conn: &Connection,
    after: &str,
    limit: usize,
) -> anyhow::Result<Vec<AdminRecord>> {
    records(conn, admin::OPERATORS, after, limit)
}

pub(super) fn is_operator(conn: &Connection, name: &str) -> anyhow::Result<bool> {
    let mut stmt = conn.prepare_cached(admin::IS_OPERATOR)?;
    Ok(stmt.exists(params![name])?)
}

pub(super) fn ban(conn: &Connection, r: &AdminRecord) -> anyhow::Result<()> {
    let key = user_key(&r.name);
    conn.execute(
        admin::BAN,
        params![key, r.name, r.reason, r.by, to_i64(r.at_ms)],
    )?;
    Ok(())
}

pub(super) fn unban(conn: &Connection, name: &str) -> anyhow::Result<bool> {
    Ok(conn.execute(admin::UNBAN, params![user_key(name)])? > 0)
}

pub(super) fn bans(
    conn: &Connection,
    after: &str,
    limit: usize,
) -> anyhow::Result<Vec<AdminRecord>> {
    records(conn, admin::BANS, &user_key(after), limit)
}

pub(super) fn close_room(conn: &Connection, r: &AdminRecord) -> anyhow::Result<()> {
    conn.execute(
        admin::CLOSE_ROOM,
        params![r.name, r.reason, r.by, to_i64(r.at_ms)],
    )?;
    Ok(())
}

pub(super) fn reopen_room(conn: &Connection, room: &str) -> anyhow::Result<bool> {
    Ok(conn.execute(admin::REOPEN_ROOM, params![room])? > 0)
}

pub(super) fn closed_rooms(
    conn: &Connection,
    after: &str,
    limit: usize,
) -> anyhow::Result<Vec<AdminRecord>> {
    records(conn, admin::CLOSED_ROOMS, after, limit)
}

pub(super) fn audit(conn: &Connection, e: &AuditEntry) -> anyhow::Result<()> {
    conn.execute(
        admin::AUDIT,
        params![
            to_i64(e.at_ms),
            e.actor,
            e.action,
            e.target,
            e.detail,
            e.node,
            e.outcome
        ],
    )?;
    Ok(())
}

pub(super) fn purge_audit(conn: &Connection, before_ms: u64) -> anyhow::Result<usize> {
    Ok(conn.execute(admin::PURGE_AUDIT, params![to_i64(before_ms)])?)
}

pub(super) fn audit_page(
    conn: &Connection,
    before: Option<u64>,
    limit: usize,
) -> anyhow::Result<Vec<AuditEntry>> {
    let before = before.map_or(i64::MAX, to_i64);
    let mut stmt = conn.prepare_cached(admin::AUDIT_PAGE)?;
    let rows = stmt.query_map(params![before, to_i64(limit as u64)], |row| {
        Ok(AuditEntry {
            id: to_u64(row.get(0)?),
            at_ms: to_u64(row.get(1)?),
            actor: row.get(2)?,
            action: row.get(3)?,
            target: row.get(4)?,
            detail: row.get(5)?,
            node: row.get(6)?,
            outcome: row.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
