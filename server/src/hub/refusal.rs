//! A refused chat command as every protocol reports it: a machine-readable code and a message.

use parley_stomp::broker::BrokerError;

/// A refused command: a machine-readable code and a human-readable message.
#[derive(Debug)]
pub struct Refusal {
    /// E.g. `forbidden`, `not_joined`, `rate_limited`, `storage_unavailable`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        crate::metrics::refused(code);
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A refused publish: `busy` (retry later) when the server's memory budget is spent.
pub fn publish_refusal(e: BrokerError) -> Refusal {
    match e {
        BrokerError::Busy => Refusal::new("busy", e.to_string()),
        BrokerError::StorageUnavailable => Refusal::new("storage_unavailable", e.to_string()),
        e => Refusal::new("send_failed", e.to_string()),
    }
}
