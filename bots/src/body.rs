//! Message bodies: `<sender-id>:<seq>:<send-time-µs>:` then padding to the requested size.
//!
//! The stamp is all a receiver needs to check order and measure latency, so the check works
//! against any broker, without relying on Parley's message ids.

use std::fmt::Write;

/// The smallest `size` a scenario may ask for: enough for a short stamp.
pub const MIN_SIZE: usize = 8;

/// What a body says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The sending bot's global index.
    pub sender: u32,
    /// The sender's sequence number in this stream (room or DMs), from 1.
    pub seq: u64,
    /// Send time, µs since the Unix epoch.
    pub sent_us: u64,
}

/// Writes the body for `stamp` into `out` (cleared first), padded with `x` to `size` bytes;
/// a stamp longer than `size` is kept whole.
pub fn encode(out: &mut String, stamp: Stamp, size: usize) {
    encode_with(out, stamp, size, 'x');
}

/// Like [`encode`], padded with `pad` (an edit keeps its message's stamp, with other padding).
pub fn encode_with(out: &mut String, stamp: Stamp, size: usize, pad: char) {
    out.clear();
    // Writing into a String cannot fail.
    write!(out, "{}:{}:{}:", stamp.sender, stamp.seq, stamp.sent_us).expect("write to String");
    while out.len() < size {
        out.push(pad);
    }
}

/// Reads the stamp at the front of a body; `None` when it is not one of ours.
pub fn parse(body: &[u8]) -> Option<Stamp> {
    let mut fields = body.splitn(4, |b| *b == b':');
    let sender = number(fields.next()?)?;
    let seq = number(fields.next()?)?;
    let sent_us = number(fields.next()?)?;
    // The fourth piece (padding) must exist: the stamp ends with a colon.
    fields.next()?;
    Some(Stamp {
        sender: u32::try_from(sender).ok()?,
        seq,
        sent_us,
    })
}

/// A decimal number without sign, allocation-free.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, d| {
        let d = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Now, in µs since the Unix epoch (the same clock on every process of the machine).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp {
        sender: 17,
        seq: 42,
        sent_us: 1_732_800_000_123_456,
    };

    #[test]
    fn round_trips_padded_to_size() {
        let mut out = String::new();
        encode(&mut out, STAMP, 64);
        assert_eq!(out.len(), 64);
        assert!(out.starts_with("17:42:1732800000123456:xxx"));
        assert_eq!(parse(out.as_bytes()), Some(STAMP));
    }

    #[test]
    fn a_long_stamp_is_kept_whole() {
        let mut out = String::from("old contents");
        encode(&mut out, STAMP, MIN_SIZE);
        assert_eq!(out, "17:42:1732800000123456:");
        assert_eq!(parse(out.as_bytes()), Some(STAMP));
    }

    #[test]
    fn foreign_bodies_are_not_stamps() {
        for body in [
            &b""[..],
            b"hello",
            b"1:2:3",
            b"1:2:x:",
            b"-1:2:3:",
            b"1::3:",
            b"99999999999:1:1:",
            b"1:99999999999999999999999:1:",
        ] {
            assert_eq!(parse(body), None, "{:?}", String::from_utf8_lossy(body));
        }
    }
}
