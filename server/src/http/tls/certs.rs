//! The certificate new TLS handshakes present: read from PEM files, checked (the key matches the
//! leaf, the leaf is valid now), and swapped whole on reload, so connections already open keep
//! the session they made and only later handshakes see the new pair.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate this close to its end is loaded with a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The served certificate and where it comes from.
#[derive(Debug)]
pub(super) struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    /// What new handshakes get. Written only by a reload that checked the new pair; a
    /// handshake holds the read lock just long enough to clone the `Arc`, so a swap never
    /// waits on a handshake and open connections are not touched.
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps when last read (checked or refused), so the watcher reloads only on
    /// a change and says why a bad pair was refused once, not at every look.
    seen: Mutex<Option<Stamps>>,
}

/// Modification time and length of the certificate and key files.
type Stamps = [(SystemTime, u64); 2];

/// What a load found: the checked pair and when the leaf stops being valid.
pub(super) struct Loaded {
    key: Arc<CertifiedKey>,
    pub(super) not_after: SystemTime,
}

impl Certificates {
    /// Reads and checks the pair at start (blocking: before anyone connects).
    pub(super) fn load(
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<(Self, SystemTime)> {
        let stamps = stamps(&cert, &key);
        let loaded = read_pair(&cert, &key, &provider, SystemTime::now())?;
        Ok((
            Self {
                cert,
                key,
                provider,
                current: RwLock::new(loaded.key),
                seen: Mutex::new(stamps),
            },
            loaded.not_after,
        ))
    }

    /// Reads and checks the files again (blocking: run it off the runtime). On success new
    /// handshakes get the new pair; on failure the served one stays.
    /// Reloads run one at a time (SIGHUP and the file watcher may ask at once): the stamps
    /// lock is held throughout, so an older read can never be installed after a newer one.
    pub(super) fn reload(&self) -> anyhow::Result<SystemTime> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        *seen = stamps(&self.cert, &self.key);
        let loaded = read_pair(&self.cert, &self.key, &self.provider, SystemTime::now())?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded.key;
        drop(seen);
        Ok(loaded.not_after)
    }

    /// Whether either file changed since it was last read (blocking: two `stat`s).
    pub(super) fn changed(&self) -> bool {
        let now = stamps(&self.cert, &self.key);
        // A file missing for a moment (replaced by a rename) is no change yet.
        now.is_some() && now != *self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

fn stamps(cert: &Path, key: &Path) -> Option<Stamps> {
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    Some([stamp(cert)?, stamp(key)?])
}

/// The chain and key in `cert` and `key`, refused unless the key belongs to the leaf and the
/// leaf is valid at `now`.
fn read_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
    now: SystemTime,
) -> anyhow::Result<Loaded> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    let Some(leaf) = chain.first() else {
        bail!("{}: no certificate in it", cert.display());
    };
    let (not_before, not_after) = validity(leaf)
        .with_context(|| format!("{}: cannot read the validity dates", cert.display()))?;
    if now < not_before {
        bail!(
            "{}: not valid before {}",
            cert.display(),
            httpdate::fmt_http_date(not_before)
        );
    }
    if now > not_after {
        bail!(
            "{}: expired on {}",
            cert.display(),
            httpdate::fmt_http_date(not_after)
        );
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key from {}", key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .with_context(|| format!("{}: unusable private key", key.display()))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) => {}
        // Key types whose public half the provider cannot derive: the handshake will tell.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => bail!(
            "{} does not belong to the certificate in {}: {e}",
            key.display(),
            cert.display()
        ),
    }
    if not_after.duration_since(now).unwrap_or_default() < EXPIRY_WARNING {
        tracing::warn!(
            cert = %cert.display(),
            not_after = %httpdate::fmt_http_date(not_after),
            "the TLS certificate expires within two weeks"
        );
    }
    Ok(Loaded {
        key: Arc::new(pair),
        not_after,
    })
}

/// A certificate's `notBefore` and `notAfter` (RFC 5280 §4.1): a walk of the few DER elements
/// in front of them, so no X.509 parser is needed for two dates.
fn validity(cert: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, certificate, _) = element(cert, SEQUENCE)?;
    let (_, tbs, _) = element(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = element(rest, 0xa0)?.2; // [0] version
    }
    let (_, _, rest) = element(rest, INTEGER)?; // serialNumber
    let (_, _, rest) = element(rest, SEQUENCE)?; // signature
    let (_, _, rest) = element(rest, SEQUENCE)?; // issuer
    let (_, validity, _) = element(rest, SEQUENCE)?;
    let (tag, not_before, rest) = any_element(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = any_element(rest)?;
    Some((not_before, time(tag, not_after)?))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The element at the start of `der` if its tag is `tag`: (tag, contents, what follows).
fn element(der: &[u8], tag: u8) -> Option<(u8, &[u8], &[u8])> {
    any_element(der).filter(|e| e.0 == tag)
}

fn any_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, value: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        GENERALIZED_TIME => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Two ASCII digits each, checked above.
    let field = |i: usize| rest[i..i + 2].parse::<i64>().unwrap_or_default();
    let (month, day) = (field(0), field(2));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + field(4) * 3600 + field(6) * 60 + field(8);
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs())),
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_times_read_as_unix_seconds() {
        let at = |tag, s: &str| {
            time(tag, s.as_bytes())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        };
        assert_eq!(at(UTC_TIME, "700101000000Z"), Some(0));
        assert_eq!(at(UTC_TIME, "000229120000Z"), Some(951_825_600));
        assert_eq!(at(GENERALIZED_TIME, "20380119031408Z"), Some(2_147_483_648));
        assert_eq!(at(UTC_TIME, "491231235959Z"), Some(2_524_607_999));
        assert!(time(UTC_TIME, b"701301000000Z").is_none(), "month 13");
        assert!(time(UTC_TIME, b"7001010000Z").is_none(), "no seconds");
        assert!(time(GENERALIZED_TIME, b"19700101000000.5Z").is_none());
        assert!(time(INTEGER, b"700101000000Z").is_none());
    }

    #[test]
    fn truncated_der_is_none_not_a_panic() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x82, 0xff],
        ] {
            assert!(validity(bad).is_none());
        }
        // A certificate whose TBS ends before its validity.
        assert!(validity(&[0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x01]).is_none());
    }
}
