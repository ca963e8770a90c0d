//! Settings of operating the server: which accounts are operators by configuration (besides
//! those granted in storage with `parley admin grant`) and how long the audit log keeps its
//! rows. Flags, or the `[admin]` table of the config file.

use std::time::Duration;

use clap::Args;
use parley_stomp::destination::valid_user;
use serde::Deserialize;

/// How long audit rows are kept unless `--audit-retention` says otherwise: 90 days.
pub const AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Flags of operating the server; in the config file they sit under `[admin]`.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminArgs {
    /// An account that is an operator (repeatable, or comma-separated), besides those granted
    /// with `parley admin grant NAME`. In the config file: `[admin] operators = ["alice"]`.
    /// Create the account first (`parley user add`): until it exists, whoever registers the
    /// name becomes an operator.
    #[arg(long = "operator", env = "PARLEY_OPERATOR", value_delimiter = ',')]
    #[serde(default)]
    pub operators: Vec<String>,
    /// How long rows of the audit log are kept; older ones are deleted hourly [default: 90days].
    #[arg(long, env = "PARLEY_AUDIT_RETENTION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub audit_retention: Option<Duration>,
}

/// Operating the server, resolved.
#[derive(Clone, Debug)]
pub struct AdminSettings {
    /// Accounts that are operators by configuration (`--operator`), each a valid name.
    pub operators: Vec<String>,
    /// How long audit rows are kept.
    pub audit_retention: Duration,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            operators: Vec::new(),
            audit_retention: AUDIT_RETENTION,
        }
    }
}

impl AdminArgs {
    /// Flags (or the environment) over the file over the defaults; operators' names checked.
    pub fn resolve(self, file: AdminArgs) -> anyhow::Result<AdminSettings> {
        let names = if self.operators.is_empty() {
            file.operators
        } else {
            self.operators
        };
        let operators = names
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(|n| {
                valid_user(n)
                    .ok_or_else(|| anyhow::anyhow!("--operator {n:?}: not a valid user name"))
            })
            .collect::<anyhow::Result<_>>()?;
        let audit_retention = self
            .audit_retention
            .or(file.audit_retention)
            .unwrap_or(AUDIT_RETENTION);
        if audit_retention.is_zero() {
            anyhow::bail!("--audit-retention must be more than 0");
        }
        Ok(AdminSettings {
            operators,
            audit_retention,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_names_are_checked() {
        let flags = AdminArgs {
            operators: vec!["alice".into(), " bob ".into()],
            ..AdminArgs::default()
        };
        let file = AdminArgs {
            operators: vec!["carol".into()],
            audit_retention: Some(Duration::from_secs(3600)),
        };
        let resolved = flags.resolve(file.clone()).unwrap();
        assert_eq!(resolved.operators, ["alice", "bob"]);
        assert_eq!(resolved.audit_retention, Duration::from_secs(3600));
        let resolved = AdminArgs::default().resolve(file).unwrap();
        assert_eq!(resolved.operators, ["carol"]);
        let defaults = AdminArgs::default().resolve(AdminArgs::default()).unwrap();
        assert_eq!(defaults.audit_retention, AUDIT_RETENTION);
        let bad = AdminArgs {
            operators: vec!["no spaces".into()],
            ..AdminArgs::default()
        };
        assert!(bad.resolve(AdminArgs::default()).is_err());
        let none = AdminArgs {
            audit_retention: Some(Duration::ZERO),
            ..AdminArgs::default()
        };
        assert!(none.resolve(AdminArgs::default()).is_err());
    }
}
