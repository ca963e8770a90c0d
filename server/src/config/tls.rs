//! TLS settings: the certificate and key files, STOMP over TLS, HSTS and how often the files are
//! looked at for a reload; flags, or the `[tls]` table of the config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use serde::Deserialize;

use crate::http::tls::TlsSettings;

/// Flags of TLS; in the config file they sit under `[tls]` as `cert`, `key`, `stomp-tls`,
/// `hsts-max-age` and `check-interval`.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsArgs {
    /// PEM certificate chain, leaf first. With --tls-key, --http serves HTTPS (and wss://)
    /// only, and STOMP over TLS listens on --stomp-tls. Reloaded on SIGHUP and when it changes.
    #[arg(long, env = "PARLEY_TLS_CERT")]
    #[serde(rename = "cert")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PARLEY_TLS_KEY")]
    #[serde(rename = "key")]
    pub tls_key: Option<PathBuf>,

    /// STOMP over TLS: an address, or `off`; needs --tls-cert [default with TLS:
    /// 127.0.0.1:61614].
    #[arg(long, env = "PARLEY_STOMP_TLS")]
    pub stomp_tls: Option<String>,

    /// `Strict-Transport-Security: max-age` on HTTPS answers; `0s` sends none [default: 365d].
    #[arg(long, env = "PARLEY_HSTS_MAX_AGE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub hsts_max_age: Option<Duration>,

    /// How often the certificate and key files are checked for a change (then reloaded);
    /// `0s`: only SIGHUP reloads [default: 5s].
    #[arg(long = "tls-check-interval", env = "PARLEY_TLS_CHECK_INTERVAL",
          value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub check_interval: Option<Duration>,
}

impl TlsArgs {
    /// Flags over the file's `[tls]`; `None` when TLS is off.
    pub fn resolve(self, file: TlsArgs) -> anyhow::Result<Option<TlsSettings>> {
        let stomp_tls = self.stomp_tls.or(file.stomp_tls);
        let (cert, key) = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) => {
                if stomp_tls.as_deref().is_some_and(|s| s != "off") {
                    bail!("--stomp-tls needs --tls-cert and --tls-key");
                }
                return Ok(None);
            }
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        Ok(Some(TlsSettings {
            cert,
            key,
            stomp_tls: stomp_address(stomp_tls.as_deref())?,
            hsts_max_age: self
                .hsts_max_age
                .or(file.hsts_max_age)
                .unwrap_or(Duration::from_secs(365 * 24 * 3600)),
            check_interval: self
                .check_interval
                .or(file.check_interval)
                .unwrap_or(Duration::from_secs(5)),
        }))
    }
}

/// `--stomp-tls`: an address, or `off`; the default is 127.0.0.1:61614 (RabbitMQ's port).
fn stomp_address(value: Option<&str>) -> anyhow::Result<Option<SocketAddr>> {
    match value {
        None => Ok(Some(([127, 0, 0, 1], 61614).into())),
        Some("off") => Ok(None),
        Some(addr) => Ok(Some(addr.parse().with_context(|| {
            format!("--stomp-tls {addr:?}: expected ADDR:PORT or off")
        })?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_off_without_a_certificate_and_needs_both_files() {
        assert!(TlsArgs::default()
            .resolve(TlsArgs::default())
            .unwrap()
            .is_none());
        let half = TlsArgs {
            tls_cert: Some("c.pem".into()),
            ..TlsArgs::default()
        };
        assert!(half.resolve(TlsArgs::default()).is_err());
        let stomp_only = TlsArgs {
            stomp_tls: Some("127.0.0.1:0".into()),
            ..TlsArgs::default()
        };
        assert!(stomp_only.resolve(TlsArgs::default()).is_err());
    }

    #[test]
    fn the_config_file_holds_a_tls_table() {
        let file: TlsArgs = toml::from_str(
            "cert = \"/etc/parley/cert.pem\"\nkey = \"/etc/parley/key.pem\"\n\
             hsts-max-age = \"0s\"\nstomp-tls = \"off\"\n",
        )
        .unwrap();
        let s = TlsArgs::default().resolve(file).unwrap().unwrap();
        assert_eq!(s.key, PathBuf::from("/etc/parley/key.pem"));
        assert_eq!(s.hsts_max_age, Duration::ZERO);
        assert_eq!(s.stomp_tls, None);
        assert_eq!(s.check_interval, Duration::from_secs(5));
        let flags = TlsArgs {
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            ..TlsArgs::default()
        };
        let s = flags.resolve(TlsArgs::default()).unwrap().unwrap();
        assert_eq!(s.stomp_tls, Some(([127, 0, 0, 1], 61614).into()));
    }
}
