//! Why a sign-in through another site failed, in words the person reads, with the HTTP status
//! of the page saying it; and why choosing a name failed.

/// Why a sign-in through a provider failed, in words for the person.
#[derive(Clone, Debug)]
pub enum Failure {
    /// No such provider here.
    UnknownProvider,
    /// No (genuine) state cookie, a state that does not match it, or one already used.
    NotStartedHere,
    /// The state cookie's life ran out.
    Expired,
    /// The person said no at the provider.
    Declined(String),
    /// The provider did not answer in time.
    Timeout(String),
    /// The provider could not be reached.
    Unreachable(String),
    /// The provider answered with an error or something unusable.
    ProviderError(String, String),
    /// The authorization code was already used (or expired).
    CodeUsed(String),
    /// The ID token failed a check.
    Unverified(String, String),
    /// Linking: that provider account belongs to another Parley account.
    AlreadyLinked(String),
    /// Linking: this account has another account of that provider.
    ProviderTaken(String),
    /// Linking needs a signed-in account.
    SignInFirst,
    /// No new accounts here.
    RegistrationClosed,
    /// Too many new accounts from this address lately.
    Throttled,
    /// Too many sign-ins from this address lately.
    TooManySignIns,
    /// An operator banned the account (`banned: <reason>`).
    Banned(String),
    /// Storage failed.
    Storage,
}

impl Failure {
    /// What the page says.
    pub fn words(&self) -> String {
        match self {
            Self::UnknownProvider => "There is no such sign-in provider here.".into(),
            Self::NotStartedHere => "This sign-in did not start here, or it was already \
                finished. Please start again."
                .into(),
            Self::Expired => "This sign-in took too long and expired. Please start again.".into(),
            Self::Declined(p) => {
                format!("You declined to sign in with {p}, so you are not signed in.")
            }
            Self::Timeout(p) => format!("{p} did not answer in time. Please try again later."),
            Self::Unreachable(p) => format!("{p} could not be reached. Please try again later."),
            Self::ProviderError(p, why) => format!("{p} could not sign you in ({why})."),
            Self::CodeUsed(p) => format!(
                "The sign-in code from {p} was already used or has expired. Please start again."
            ),
            Self::Unverified(p, why) => {
                format!("The answer from {p} could not be verified: {why}.")
            }
            Self::AlreadyLinked(p) => {
                format!("This {p} account is already linked to another Parley account.")
            }
            Self::ProviderTaken(p) => {
                format!("Your account is already linked to another {p} account; unlink it first.")
            }
            Self::SignInFirst => "Sign in to Parley first, then link the provider.".into(),
            Self::RegistrationClosed => "This server does not take new accounts.".into(),
            Self::Throttled => "Too many new accounts from your address lately; try later.".into(),
            Self::TooManySignIns => {
                "Too many sign-ins from your address lately; try again in a minute.".into()
            }
            Self::Banned(why) => format!("This account cannot sign in: {why}."),
            Self::Storage => "Parley could not finish the sign-in (storage error).".into(),
        }
    }

    /// The HTTP status of the page saying it.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownProvider => 404,
            Self::Timeout(_) | Self::Unreachable(_) | Self::ProviderError(..) => 502,
            Self::Throttled | Self::TooManySignIns => 429,
            Self::Banned(_) => 403,
            Self::Storage => 503,
            _ => 400,
        }
    }
}

/// Why choosing a name failed.
#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    /// No pending sign-up (or an altered one).
    #[error("no sign-up is waiting for a name; sign in again")]
    NoPending,
    /// It expired.
    #[error("the sign-up expired; sign in again")]
    Expired,
    /// The name breaks a rule.
    #[error("{0}")]
    Invalid(&'static str),
    /// The name is taken.
    #[error("username taken")]
    Taken,
    /// Registration is closed.
    #[error("registration is closed")]
    Closed,
    /// Storage failed.
    #[error("storage error")]
    Storage(#[from] anyhow::Error),
}
