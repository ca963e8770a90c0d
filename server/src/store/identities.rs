//! Sign-ins through other sites in storage: which Parley account a provider's subject is,
//! and which login states were already used. The SQL is the same on SQLite and PostgreSQL.

/// The tables: an identity is one (provider, subject) pair of one account, one per provider per
/// account; a login state is recorded when its callback arrives, so it works once.
pub(crate) const IDENTITIES: &str = "
    CREATE TABLE identities (
        provider TEXT NOT NULL,
        subject TEXT NOT NULL,
        username TEXT NOT NULL,
        linked_ms BIGINT NOT NULL,
        PRIMARY KEY (provider, subject)
    );
    CREATE UNIQUE INDEX identities_by_user ON identities (username, provider);
    CREATE TABLE login_states (
        id TEXT PRIMARY KEY,
        expires_ms BIGINT NOT NULL
    );
    CREATE INDEX login_states_by_expiry ON login_states (expires_ms);
";

/// A provider account linked to a Parley account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedIdentity {
    /// The provider's configured name.
    pub provider: String,
    /// When it was linked (ms since the epoch).
    pub linked_ms: u64,
}

/// What linking a provider account to a Parley account did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Linked now, or it already was to this account.
    Linked,
    /// That provider account signs in to another Parley account.
    OtherUser,
    /// This account already has another account of that provider.
    ProviderTaken,
}

/// What unlinking did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unlink {
    /// Gone.
    Unlinked,
    /// The account has no identity of that provider.
    NotLinked,
    /// Refused: it is the account's only way to sign in (no password, no other provider).
    LastWay,
}
