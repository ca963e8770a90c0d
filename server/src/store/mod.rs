//! Durable storage of rooms, messages and accounts: a small trait, with SQLite (embedded, WAL;
//! the default) and PostgreSQL ([`postgres`], shared by several nodes) behind it.
//!
//! The trait is synchronous and called from the journal's writer thread or through [`run`],
//! never on the async runtime (start-up aside).

pub mod admin;
pub mod identities;
mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

pub use self::admin::{AdminRecord, AuditEntry, MAX_HELD};
pub use self::identities::{Link, LinkedIdentity, Unlink};
pub use self::postgres::PgStore;
pub use self::sqlite::SqliteStore;

/// Runs a storage call on tokio's blocking pool: the one way async code reaches the store
/// (besides the journal's own thread), so a slow query never holds up a runtime worker.
pub async fn run<T: Send + 'static>(
    store: &Arc<dyn Store>,
    call: impl FnOnce(&dyn Store) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || call(&*store)).await?
}

/// An id, count or time as SQL's signed 64-bit integer (saturating: ids never get that far).
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored signed integer as the unsigned one it was written from (a negative one is 0).
pub(crate) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The key account names are unique by: the name in ASCII lower case. Names are ASCII (letters,
/// digits, `_ - .`), so Unicode NFKC normalisation would change nothing and case folding is all
/// it takes for `ALICE` and `alice` to be one name. Both backends store it (`users.name_key`).
pub fn user_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Most rows one directory page reads, whatever is asked.
pub const MAX_PAGE_ROWS: usize = 1000;

/// The keys starting with `prefix`'s key: `[low, high)`. Keys are ASCII below `~`, so `low`
/// followed by `~` is past every one of them.
pub(crate) fn key_range(prefix: &str) -> (String, String) {
    let low = user_key(prefix);
    let high = format!("{low}~");
    (low, high)
}

/// A stored room message, or an event about an earlier one (an edit, a deletion, a reaction):
/// both take the room's next id, so catch-up replays them in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredMessage {
    /// The room.
    pub room: String,
    /// Per-room, strictly increasing id.
    pub id: u64,
    /// The sender's user name.
    pub from: String,
    /// Server time in ms since the Unix epoch.
    pub ts: u64,
    /// The text (empty once deleted); an edit's new text; a reaction's emoji.
    pub body: String,
    /// Sent by a guest.
    pub guest: bool,
    /// Deleted: a tombstone that keeps the id sequence gapless.
    pub deleted: bool,
    /// A message, or which event.
    pub kind: Kind,
    /// An event's message: the one it edits, deletes or reacts to.
    pub target: Option<u64>,
    /// The message this one replies to.
    pub reply_to: Option<u64>,
    /// The sender's own id for it, which makes a retried send find the first one.
    pub client_id: Option<String>,
    /// The users it mentions (`@name`), written with it and counted per user.
    pub mentions: Vec<String>,
    /// Read back: edited since it was sent.
    pub edited: bool,
    /// Read back: its reactions, by emoji in first-reaction order, each with its users.
    pub reactions: Vec<Reaction>,
}

/// The users who reacted to a message with one emoji.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reaction {
    /// The emoji.
    pub emoji: String,
    /// Who reacted with it.
    pub users: Vec<String>,
}

/// Attaches `(id, emoji, user)` rows, ordered by id then first reaction, to the messages of
/// `page` (ascending ids): each emoji once, in the order it was first used.
pub(crate) fn attach_reactions(page: &mut [StoredMessage], rows: Vec<(u64, String, String)>) {
    for (id, emoji, user) in rows {
        let Ok(at) = page.binary_search_by_key(&id, |m| m.id) else {
            continue;
        };
        let reactions = &mut page[at].reactions;
        match reactions.iter_mut().find(|r| r.emoji == emoji) {
            Some(reaction) => reaction.users.push(user),
            None => reactions.push(Reaction {
                emoji,
                users: vec![user],
            }),
        }
    }
}

/// What a row of a room's stream is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// A chat message.
    #[default]
    Message,
    /// Replaces the text of `target` (its author's).
    Edit,
    /// Deletes `target`: it becomes a tombstone.
    Delete,
    /// Adds the sender's reaction `body` (an emoji) to `target`.
    React,
    /// Takes it back.
    Unreact,
}

impl Kind {
    /// The name stored, and carried in the `kind` header of live events (`""` for messages).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "",
            Self::Edit => "edit",
            Self::Delete => "delete",
            Self::React => "react",
            Self::Unreact => "unreact",
        }
    }

    /// Parses a stored or received kind; unknown ones are `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "message" => Self::Message,
            "edit" => Self::Edit,
            "delete" => Self::Delete,
            "react" => Self::React,
            "unreact" => Self::Unreact,
            _ => return None,
        })
    }
}

/// Most unread messages (and mentions) counted per room: past it a client shows "999+", and a
/// huge room costs no more than this to count.
pub const UNREAD_CAP: u64 = 1_000;

/// A user's read state in one room: what they read last, and what came after.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadState {
    /// The last message id the user has read (0: none).
    pub last_read: u64,
    /// Chat messages after it from others, not deleted, at most [`UNREAD_CAP`].
    pub unread: u64,
    /// Those of them that mention the user, at most [`UNREAD_CAP`].
    pub mentions: u64,
}

/// A room's public description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    /// Its name.
    pub name: String,
    /// Private rooms are for their members only.
    pub private: bool,
    /// The account that created it, if any; recorded as its first member with role owner.
    pub owner: Option<String>,
}

/// What a member may do in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads and posts.
    Member,
    /// Also deletes messages and removes members.
    Admin,
    /// Also adds and removes admins; the creator.
    Owner,
}

impl Role {
    /// The name stored and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// Parses a stored or requested role.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
}

/// A refresh token as stored: only its hash, never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// The login it descends from; revoked as a whole on reuse or logout.
    pub family: String,
    /// Its user.
    pub user: String,
    /// Expiry, ms since the epoch.
    pub expires_ms: u64,
}

/// A personal access token as stored: only its hash, never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken {
    /// Its short public id, for listing and revoking.
    pub id: String,
    /// SHA-256 of the token, in lower-case hex (one SQL type on both backends).
    pub hash: String,
    /// The account it acts for, exactly as registered.
    pub user: String,
    /// Its owner's label for it.
    pub name: String,
    /// What it allows (`all`, `read`, `room:<room>`).
    pub scope: String,
    /// When it was made, ms since the epoch.
    pub created_ms: u64,
    /// When it stops working, ms since the epoch.
    pub expires_ms: u64,
}

/// One person's direct-message conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// Its stream (`dm:<a>:<b>`).
    pub room: String,
    /// The other person (the person themself for notes to self).
    pub peer: String,
    /// When its last message was sent.
    pub last_ts: u64,
    /// Its last id.
    pub last_id: u64,
}

/// The two people of conversation stream `room` (`dm:<a>:<b>`), each with the other; empty for
/// a room. Names hold no `:`, so the split is unambiguous.
pub fn participants(room: &str) -> Vec<(&str, &str)> {
    let Some((a, b)) = room.strip_prefix("dm:").and_then(|r| r.split_once(':')) else {
        return Vec::new();
    };
    if a == b {
        vec![(a, b)]
    } else {
        vec![(a, b), (b, a)]
    }
}

/// A room message's client id: (room, sender, client id, id).
pub type SentId = (String, String, String, u64);

/// A room's privacy and its members with their roles, as stored.
pub type RoomRules = (bool, Vec<(String, Role)>);

/// The outcome of presenting a refresh token for rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// It was valid; it is now revoked and its successor stored.
    Rotated {
        /// Its user.
        user: String,
    },
    /// It had been rotated or revoked already: the whole family is now revoked.
    Reused,
    /// Unknown or expired.
    Invalid,
}

/// What Parley persists.
pub trait Store: Send + Sync {
    /// Stores messages and events in one transaction, applying each event to its message and
    /// recording mentions; when it returns `Ok`, they are durable.
    fn append(&self, batch: &[StoredMessage]) -> anyhow::Result<()>;
    /// Cluster mode: numbers the messages (each room's next ids, in batch order, shared by
    /// every node using this database) and stores them in one transaction; on `Ok` every
    /// message's `id` is set and they are durable.
    fn append_numbered(&self, batch: &mut [StoredMessage]) -> anyhow::Result<()> {
        let _ = batch;
        anyhow::bail!("this store cannot number messages for a cluster (use --database)")
    }
    /// The last id given to a message of `room` (0 if none).
    fn last_id(&self, room: &str) -> anyhow::Result<u64> {
        Ok(self.after(room, 0, usize::MAX)?.last().map_or(0, |m| m.id))
    }
    /// [`Store::last_id`] of several rooms at once (rooms without messages may be left out).
    fn last_ids_of(&self, rooms: &[String]) -> anyhow::Result<HashMap<String, u64>> {
        rooms
            .iter()
            .map(|r| Ok((r.clone(), self.last_id(r)?)))
            .collect()
    }
    /// A room's privacy and members, if the room exists.
    fn room_rules(&self, room: &str) -> anyhow::Result<Option<RoomRules>> {
        let Some(found) = self.rooms()?.into_iter().find(|r| r.name == room) else {
            return Ok(None);
        };
        let members = self
            .memberships()?
            .into_iter()
            .filter(|(r, _, _)| r == room)
            .map(|(_, user, role)| (user, role))
            .collect();
        Ok(Some((found.private, members)))
    }
    /// Up to `limit` chat messages of `room` with id below `before` (all if `None`), oldest
    /// first, as they are now: edited, deleted, with their reactions; events left out.
    fn before(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<StoredMessage>>;
    /// Up to `limit` messages and events of `room` with id above `after`, oldest first (what
    /// catch-up replays).
    fn after(&self, room: &str, after: u64, limit: usize) -> anyhow::Result<Vec<StoredMessage>>;
    /// The highest message id of every room, to continue numbering after a restart.
    fn last_ids(&self) -> anyhow::Result<HashMap<String, u64>>;
    /// Creates a room; `false` if it already exists.
    fn create_room(&self, room: &Room) -> anyhow::Result<bool>;
    /// Every room, by name.
    fn rooms(&self) -> anyhow::Result<Vec<Room>>;
    /// Room messages sent with a client id since `since_ms`, newest first, at most `limit`:
    /// (room, sender, client id, id).
    fn recent_client_ids(&self, since_ms: u64, limit: usize) -> anyhow::Result<Vec<SentId>>;
    /// The id of `sender`'s message in `room` (a room or conversation) sent with `client_id`.
    fn sent_id(&self, room: &str, sender: &str, client_id: &str) -> anyhow::Result<Option<u64>>;
    /// `user`'s direct-message conversations, the latest first, at most `limit`.
    fn conversations(&self, user: &str, limit: usize) -> anyhow::Result<Vec<Conversation>>;
    /// Message `id` of `room` as it is now (edited, deleted; reactions left out), if stored.
    fn message(&self, room: &str, id: u64) -> anyhow::Result<Option<StoredMessage>>;

    /// Every room membership: (room, user, role).
    fn memberships(&self) -> anyhow::Result<Vec<(String, String, Role)>>;
    /// Adds a member or changes their role.
    fn set_member(&self, room: &str, user: &str, role: Role) -> anyhow::Result<()>;
    /// Removes a member; `false` if they were not one.
    fn remove_member(&self, room: &str, user: &str) -> anyhow::Result<bool>;

    /// Creates an account; `false` if the name is taken, ignoring case ([`user_key`]).
    fn create_user(&self, name: &str, password_hash: &str) -> anyhow::Result<bool>;
    /// The account whose name equals `name` ignoring case, as it is spelt. (A database from
    /// before names were unique ignoring case may hold several: the oldest is answered.)
    fn account_like(&self, name: &str) -> anyhow::Result<Option<String>>;
    /// The directory: up to `limit` account names (at most [`MAX_PAGE_ROWS`]) whose
    /// [`user_key`] starts with `prefix`'s and comes after `after`'s, in key order.
    fn users_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<String>>;
    /// An account's password hash (PHC string), if the account exists.
    fn password_hash(&self, name: &str) -> anyhow::Result<Option<String>>;
    /// Replaces an account's password hash and revokes all its refresh tokens; `false` if there
    /// is no such account.
    fn set_password(&self, name: &str, password_hash: &str) -> anyhow::Result<bool>;

    /// Stores a new refresh token.
    fn insert_refresh(&self, token: &RefreshRecord) -> anyhow::Result<()>;
    /// Rotates the token hashed `old` into `new` (same family and user) in one transaction.
    fn rotate_refresh(
        &self,
        old: &[u8; 32],
        new: &RefreshRecord,
        now_ms: u64,
    ) -> anyhow::Result<Rotation>;
    /// The user of a valid (known, unrevoked, unexpired) refresh token.
    fn refresh_user(&self, hash: &[u8; 32], now_ms: u64) -> anyhow::Result<Option<String>>;
    /// Revokes the family of the token hashed `hash`; `false` if the token is unknown.
    fn revoke_family(&self, hash: &[u8; 32]) -> anyhow::Result<bool>;
    /// Deletes expired refresh tokens; returns how many.
    fn purge_refresh(&self, now_ms: u64) -> anyhow::Result<usize>;

    /// Records that `user` (an account, by [`user_key`]) read `room` up to `id`; never goes
    /// backwards. Returns the last read id now stored.
    fn set_read(&self, user: &str, room: &str, id: u64) -> anyhow::Result<u64>;
    /// `user`'s read state in each of `rooms` (every one answered; a room never read counts
    /// from 0), in one query.
    fn unread(&self, user: &str, rooms: &[String]) -> anyhow::Result<HashMap<String, ReadState>>;
    /// The rooms `user` has read state in, by name.
    fn read_rooms(&self, user: &str) -> anyhow::Result<Vec<String>>;

    /// The account a provider's subject signs in to.
    fn identity_user(&self, provider: &str, subject: &str) -> anyhow::Result<Option<String>>;
    /// Creates account `name` without a password, signing in through (`provider`, `subject`);
    /// `false` if the name (in any case) is taken.
    fn create_identity_user(
        &self,
        name: &str,
        provider: &str,
        subject: &str,
    ) -> anyhow::Result<bool>;
    /// Links (`provider`, `subject`) to account `user`.
    fn link_identity(&self, user: &str, provider: &str, subject: &str) -> anyhow::Result<Link>;
    /// The providers linked to account `user`.
    fn identities(&self, user: &str) -> anyhow::Result<Vec<LinkedIdentity>>;
    /// Unlinks `provider` from account `user` while another way to sign in remains.
    fn unlink_identity(&self, user: &str, provider: &str) -> anyhow::Result<Unlink>;
    /// Records login state `id` as used; `false` if it already was. Forgets expired ones.
    fn consume_login_state(&self, id: &str, expires_ms: u64, now_ms: u64) -> anyhow::Result<bool>;

    /// Stores a new personal access token unless its user holds `max` unexpired ones at
    /// `now_ms` already (`false`); the user's expired ones are deleted first. One transaction,
    /// so concurrent creations cannot pass the bound together.
    fn insert_access_token(
        &self,
        token: &AccessToken,
        max: usize,
        now_ms: u64,
    ) -> anyhow::Result<bool> {
        let _ = (token, max, now_ms);
        anyhow::bail!("this store keeps no access tokens")
    }
    /// The access token hashed `hash` (hex), expired or not.
    fn access_token(&self, hash: &str) -> anyhow::Result<Option<AccessToken>> {
        let _ = hash;
        anyhow::bail!("this store keeps no access tokens")
    }
    /// `user`'s access tokens unexpired at `now_ms`, oldest first.
    fn access_tokens(&self, user: &str, now_ms: u64) -> anyhow::Result<Vec<AccessToken>> {
        let _ = (user, now_ms);
        anyhow::bail!("this store keeps no access tokens")
    }
    /// Deletes `user`'s access token `id`; `false` if they have none so named.
    fn revoke_access_token(&self, user: &str, id: &str) -> anyhow::Result<bool> {
        let _ = (user, id);
        anyhow::bail!("this store keeps no access tokens")
    }
    /// Those of `ids` that are stored and unexpired at `now_ms` (at most
    /// [`MAX_PAGE_ROWS`] asked at once).
    fn live_access_tokens(&self, ids: &[String], now_ms: u64) -> anyhow::Result<Vec<String>> {
        let _ = (ids, now_ms);
        anyhow::bail!("this store keeps no access tokens")
    }
    /// Deletes expired access tokens; returns how many.
    fn purge_access_tokens(&self, now_ms: u64) -> anyhow::Result<usize> {
        let _ = now_ms;
        Ok(0)
    }
    /// The cheapest round trip that shows the database answers (readiness probes).
    fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Makes `op.name` an operator; `false` if it was one already.
    fn grant_operator(&self, op: &AdminRecord) -> anyhow::Result<bool> {
        let _ = op;
        anyhow::bail!("this store keeps no operators")
    }
    /// Ends `name`'s operator rights; `false` if it had none (in storage).
    fn revoke_operator(&self, name: &str) -> anyhow::Result<bool> {
        let _ = name;
        anyhow::bail!("this store keeps no operators")
    }
    /// The operators granted in storage, by name: at most `limit` after `after` (`""`: from
    /// the first).
    fn operators(&self, after: &str, limit: usize) -> anyhow::Result<Vec<AdminRecord>> {
        let _ = (after, limit);
        Ok(Vec::new())
    }
    /// Is `name` (spelt as registered) granted operator rights in storage?
    fn is_operator(&self, name: &str) -> anyhow::Result<bool> {
        let _ = name;
        Ok(false)
    }
    /// Bans `ban.name` (every spelling of it), or replaces the ban's reason.
    fn ban(&self, ban: &AdminRecord) -> anyhow::Result<()> {
        let _ = ban;
        anyhow::bail!("this store keeps no bans")
    }
    /// Lifts the ban of `name` (any spelling); `false` if there was none.
    fn unban(&self, name: &str) -> anyhow::Result<bool> {
        let _ = name;
        anyhow::bail!("this store keeps no bans")
    }
    /// Bans by name (in any case): at most `limit` after `after`'s (`""`: from the first).
    fn bans(&self, after: &str, limit: usize) -> anyhow::Result<Vec<AdminRecord>> {
        let _ = (after, limit);
        Ok(Vec::new())
    }
    /// Closes room `closed.name`, or replaces the reason it is closed for.
    fn close_room(&self, closed: &AdminRecord) -> anyhow::Result<()> {
        let _ = closed;
        anyhow::bail!("this store keeps no closed rooms")
    }
    /// Opens `room` again; `false` if it was not closed.
    fn reopen_room(&self, room: &str) -> anyhow::Result<bool> {
        let _ = room;
        anyhow::bail!("this store keeps no closed rooms")
    }
    /// Closed rooms by name: at most `limit` after `after` (`""`: from the first).
    fn closed_rooms(&self, after: &str, limit: usize) -> anyhow::Result<Vec<AdminRecord>> {
        let _ = (after, limit);
        Ok(Vec::new())
    }
    /// Appends one admin call to the audit log (its `id` is given by storage).
    fn audit(&self, entry: &AuditEntry) -> anyhow::Result<()> {
        let _ = entry;
        anyhow::bail!("this store keeps no audit log")
    }
    /// Deletes the audit entries made before `before_ms`; returns how many.
    fn purge_audit(&self, before_ms: u64) -> anyhow::Result<usize> {
        let _ = before_ms;
        Ok(0)
    }
    /// At most `limit` audit entries older than id `before` (`None`: the newest), newest first.
    fn audit_page(&self, before: Option<u64>, limit: usize) -> anyhow::Result<Vec<AuditEntry>> {
        let _ = (before, limit);
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests;

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
