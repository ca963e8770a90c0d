//! Settings of watching a node: the Prometheus metrics listener and the log format; flags, or
//! the `[operations]` table of the config file.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde::Deserialize;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of metrics and logs; in the config file they sit under `[operations]`.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OperationsArgs {
    /// Serve Prometheus metrics at `http://ADDR/metrics` on a listener of their own, apart
    /// from the public port; `off` for none [default: off].
    #[arg(long, env = "PARLEY_METRICS")]
    pub metrics: Option<String>,

    /// Log lines as `text` or `json` (one object per line, with the connection's id, user,
    /// room and protocol where known) [default: text].
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Resolved operations settings.
#[derive(Clone, Debug, Default)]
pub struct Operations {
    /// Where `/metrics` is served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The log format.
    pub log_format: LogFormat,
}

impl OperationsArgs {
    /// Flags over the config file's `[operations]` table.
    pub fn resolve(self, file: OperationsArgs) -> anyhow::Result<Operations> {
        let metrics = match self.metrics.or(file.metrics).as_deref() {
            None | Some("off") => None,
            Some(addr) => Some(addr.parse().with_context(|| {
                format!("--metrics {addr:?}: expected ADDR:PORT (e.g. 127.0.0.1:9090) or off")
            })?),
        };
        Ok(Operations {
            metrics,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
        })
    }
}
