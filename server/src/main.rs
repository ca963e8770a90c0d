//! `parley`: the Parley chat server binary — its command line over the `parley_server` library,
//! whose `serve` wires and runs the server.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use parley_server::{check_new_account, hash_now, open_store, reserved_for_guests, serve};
use parley_server::{AdminRecord, AuditEntry, Keys, LogFormat, ServeArgs, WithConn};
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::EnvFilter;

/// Parley: a realtime chat server speaking WebSocket and STOMP.
#[derive(Parser)]
#[command(name = "parley", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage accounts (on the server's data directory).
    #[command(subcommand)]
    User(UserCommand),
    /// Make accounts operators, or no longer (on the server's storage; takes effect at once).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print an access token for NAME, signed with the key `parley serve` uses (same options).
    Token {
        /// The user name the token is for.
        name: String,
        /// How long the token is valid.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; the password is read from the terminal, or from stdin.
    Add {
        /// The user name.
        name: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Change an account's password; read from the terminal, or from stdin.
    Passwd {
        /// The user name.
        name: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Make account NAME an operator: it may use the admin API and the /admin page.
    Grant {
        /// The account.
        name: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// End account NAME's operator rights (those granted here; not `--operator`'s).
    Revoke {
        /// The account.
        name: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

/// Set once logs are JSON: a fatal error is then one more JSON line, not free text.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(error = %format!("{error:#}"), "exiting");
            } else {
                eprintln!("Error: {error:?}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let settings = args.resolve()?;
            init_logging(settings.operations.log_format);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?
                .block_on(serve(settings))
        }
        Command::Token { name, ttl, serve } => {
            let settings = serve.resolve()?;
            init_logging(settings.operations.log_format);
            if parley_stomp::destination::valid_user(&name).is_none() {
                anyhow::bail!("{name:?} is not a user name: 1-32 of letters, digits, _ - .");
            }
            if reserved_for_guests(&name) {
                anyhow::bail!("{name:?} is reserved for guests: names starting with guest- (in any case) are given by the server");
            }
            let token = Keys::load(&settings.auth.keys)?.mint(&name, ttl)?;
            println!("{token}");
            Ok(())
        }
        Command::Admin(command) => admin(command),
        Command::User(UserCommand::Add { name, serve }) => {
            let settings = serve.resolve()?;
            init_logging(settings.operations.log_format);
            let store = open_store(&settings)?;
            let password = read_password(true)?;
            check_new_account(&name, &password).map_err(anyhow::Error::msg)?;
            let hash = hash_now(&password).map_err(anyhow::Error::msg)?;
            if !store.create_user(&name, &hash)? {
                anyhow::bail!("user {name:?} already exists");
            }
            eprintln!("created user {name}");
            Ok(())
        }
        Command::User(UserCommand::Passwd { name, serve }) => {
            let settings = serve.resolve()?;
            init_logging(settings.operations.log_format);
            let store = open_store(&settings)?;
            let password = read_password(true)?;
            check_new_account(&name, &password).map_err(anyhow::Error::msg)?;
            let hash = hash_now(&password).map_err(anyhow::Error::msg)?;
            if !store.set_password(&name, &hash)? {
                anyhow::bail!("no user {name:?}");
            }
            eprintln!("password of {name} changed");
            Ok(())
        }
    }
}

/// Logs to stderr as `format` says, at the level `RUST_LOG` gives (default `info`). JSON lines
/// carry the spans they happen in (a connection's id, its peer, protocol, user), outermost
/// first.
fn init_logging(kind: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The PostgreSQL client logs every statement's parameters at debug (password hashes, token
    // hashes, messages): never, unless RUST_LOG names it.
    if !std::env::var("RUST_LOG").is_ok_and(|l| l.contains("tokio_postgres")) {
        // A literal directive: it parses.
        filter = filter.add_directive("tokio_postgres=info".parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A connection's lines carry its `conn` span, kept by the connection, not by tracing.
    let format = tracing_subscriber::fmt::format();
    match kind {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .event_format(WithConn::text(format))
            .init(),
        LogFormat::Json => {
            let json = format
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true);
            builder
                .fmt_fields(JsonFields::new())
                .event_format(WithConn::json(json))
                .init();
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// `parley admin grant|revoke NAME`: changes storage and records it in the audit log.
fn admin(command: AdminCommand) -> anyhow::Result<()> {
    let (grant, name, serve) = match command {
        AdminCommand::Grant { name, serve } => (true, name, serve),
        AdminCommand::Revoke { name, serve } => (false, name, serve),
    };
    let settings = serve.resolve()?;
    let store = open_store(&settings)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX);
    let account = store.account_like(&name)?;
    let (action, changed) = if grant {
        let Some(account) = account else {
            anyhow::bail!("no account {name:?}: create it first (parley user add)");
        };
        let record = AdminRecord {
            name: account,
            by: "cli".to_owned(),
            at_ms: now_ms,
            ..AdminRecord::default()
        };
        ("grant_operator", store.grant_operator(&record)?)
    } else {
        let account = account.unwrap_or_else(|| name.clone());
        ("revoke_operator", store.revoke_operator(&account)?)
    };
    store.audit(&AuditEntry {
        at_ms: now_ms,
        actor: "cli".to_owned(),
        action: action.to_owned(),
        target: name.clone(),
        node: "cli".to_owned(),
        outcome: if changed { "ok" } else { "unchanged" }.to_owned(),
        ..AuditEntry::default()
    })?;
    match (grant, changed) {
        (true, true) => eprintln!("{name} is an operator"),
        (true, false) => eprintln!("{name} was an operator already"),
        (false, true) => eprintln!("{name} is no longer an operator"),
        (false, false) => anyhow::bail!("{name:?} was not an operator (by `parley admin grant`)"),
    }
    Ok(())
}

/// A new password: typed twice without echo on a terminal, else the first line of stdin.
fn read_password(confirm: bool) -> anyhow::Result<String> {
    use std::io::{BufRead as _, IsTerminal as _};
    if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password("Password: ")?;
        if confirm && rpassword::prompt_password("Again: ")? != password {
            anyhow::bail!("the passwords differ");
        }
        Ok(password)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    }
}
