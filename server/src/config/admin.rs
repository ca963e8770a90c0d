//! Settings of operating the server: which accounts are operators by configuration (besides
//! those granted in storage with `parley admin grant`). Flags, or the `[admin]` table of the
//! config file.

use clap::Args;
use parley_stomp::destination::valid_user;
use serde::Deserialize;

/// Flags of operating the server; in the config file they sit under `[admin]`.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminArgs {
    /// An account that is an operator (repeatable, or comma-separated), besides those granted
    /// with `parley admin grant NAME`. In the config file: `[admin] operators = ["alice"]`.
    #[arg(long = "operator", env = "PARLEY_OPERATOR", value_delimiter = ',')]
    #[serde(default)]
    pub operators: Vec<String>,
}

impl AdminArgs {
    /// The operators named by flags (or the environment), else by the file; each a valid name.
    pub fn resolve(self, file: AdminArgs) -> anyhow::Result<Vec<String>> {
        let names = if self.operators.is_empty() {
            file.operators
        } else {
            self.operators
        };
        names
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(|n| {
                valid_user(n)
                    .ok_or_else(|| anyhow::anyhow!("--operator {n:?}: not a valid user name"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_names_are_checked() {
        let flags = AdminArgs {
            operators: vec!["alice".into(), " bob ".into()],
        };
        let file = AdminArgs {
            operators: vec!["carol".into()],
        };
        assert_eq!(flags.resolve(file.clone()).unwrap(), ["alice", "bob"]);
        assert_eq!(AdminArgs::default().resolve(file).unwrap(), ["carol"]);
        let bad = AdminArgs {
            operators: vec!["no spaces".into()],
        };
        assert!(bad.resolve(AdminArgs::default()).is_err());
    }
}
