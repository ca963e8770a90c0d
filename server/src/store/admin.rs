//! Operating a server in storage: who the operators are, banned users, closed rooms and the
//! audit log of every admin call. The SQL is the same on SQLite and PostgreSQL (`$n`
//! parameters, numbered in order of appearance, read the same on both).

/// The tables, with the audit log's key type (`INTEGER`, SQLite's row id; `BIGSERIAL`) filled in.
/// A ban is keyed by the name in lower case ([`super::user_key`]): every spelling is banned.
macro_rules! admin_tables {
    ($serial:literal) => {
        concat!(
            "
    CREATE TABLE operators (
        username TEXT PRIMARY KEY,
        granted_by TEXT NOT NULL,
        granted_ms BIGINT NOT NULL
    );
    CREATE TABLE bans (
        user_key TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        reason TEXT NOT NULL,
        banned_by TEXT NOT NULL,
        banned_ms BIGINT NOT NULL
    );
    CREATE TABLE closed_rooms (
        room TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        closed_by TEXT NOT NULL,
        closed_ms BIGINT NOT NULL
    );
    CREATE TABLE audit (
        id ",
            $serial,
            " PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        node TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
"
        )
    };
}

/// The migration on SQLite.
pub(crate) const ADMIN_SQLITE: &str = admin_tables!("INTEGER");
/// The migration on PostgreSQL.
pub(crate) const ADMIN_POSTGRES: &str = admin_tables!("BIGSERIAL");

/// Makes `username` an operator unless it is one (then nothing changes).
pub(crate) const GRANT: &str = "INSERT INTO operators (username, granted_by, granted_ms)
    VALUES ($1, $2, $3) ON CONFLICT (username) DO NOTHING";
/// Ends `username`'s operator rights.
pub(crate) const REVOKE: &str = "DELETE FROM operators WHERE username = $1";
/// Operators after `$1` by name, at most `$2`.
pub(crate) const OPERATORS: &str = "SELECT username, '', granted_by, granted_ms FROM operators
    WHERE username > $1 ORDER BY username LIMIT $2";
/// Whether `$1` (as registered) is granted.
pub(crate) const IS_OPERATOR: &str = "SELECT username FROM operators WHERE username = $1";
/// Bans a user, or replaces the reason of a ban.
pub(crate) const BAN: &str = "INSERT INTO bans (user_key, username, reason, banned_by, banned_ms)
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_key) DO UPDATE SET
    username = excluded.username, reason = excluded.reason, banned_by = excluded.banned_by,
    banned_ms = excluded.banned_ms";
/// Lifts a ban.
pub(crate) const UNBAN: &str = "DELETE FROM bans WHERE user_key = $1";
/// Bans after key `$1` by name key, at most `$2`.
pub(crate) const BANS: &str = "SELECT username, reason, banned_by, banned_ms FROM bans
    WHERE user_key > $1 ORDER BY user_key LIMIT $2";
/// Closes a room, or replaces the reason it is closed for.
pub(crate) const CLOSE_ROOM: &str = "INSERT INTO closed_rooms (room, reason, closed_by, closed_ms)
    VALUES ($1, $2, $3, $4) ON CONFLICT (room) DO UPDATE SET reason = excluded.reason,
    closed_by = excluded.closed_by, closed_ms = excluded.closed_ms";
/// Opens a closed room again.
pub(crate) const REOPEN_ROOM: &str = "DELETE FROM closed_rooms WHERE room = $1";
/// Closed rooms after `$1` by name, at most `$2`.
pub(crate) const CLOSED_ROOMS: &str = "SELECT room, reason, closed_by, closed_ms FROM closed_rooms
    WHERE room > $1 ORDER BY room LIMIT $2";
/// Records one admin call.
pub(crate) const AUDIT: &str =
    "INSERT INTO audit (at_ms, actor, action, target, detail, node, outcome)
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// Deletes the audit rows older than `$1`.
pub(crate) const PURGE_AUDIT: &str = "DELETE FROM audit WHERE at_ms < $1";
/// A page of the audit log, newest first, older than `$1`.
pub(crate) const AUDIT_PAGE: &str = "SELECT id, at_ms, actor, action, target, detail, node, outcome
    FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2";

/// Most bans, or closed rooms, a node holds in memory: a reload reads at most this many (and
/// logs a warning when there are more).
pub const MAX_HELD: usize = 100_000;

/// An operator, a ban or a closed room: what or whom, why, by whom and when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminRecord {
    /// The user (operators, bans) or the room.
    pub name: String,
    /// Why (empty for operators).
    pub reason: String,
    /// The operator (or `cli`, `config`) who did it.
    pub by: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// One admin call as the audit log keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its place in the log (given by storage; ignored when recording).
    pub id: u64,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Who called (an operator, or `cli`).
    pub actor: String,
    /// What they asked for (`kick`, `ban`, `close_room`, ...).
    pub action: String,
    /// Whom or what it was about (a user, a room, a session); may be empty.
    pub target: String,
    /// Its details (a reason, a message id), as given.
    pub detail: String,
    /// The node that answered.
    pub node: String,
    /// `ok`, or why it was refused.
    pub outcome: String,
}
