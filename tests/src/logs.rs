//! Debug logs kept for a secret scan: with `PARLEY_TEST_LOG_DIR=DIR`, every server the harness
//! starts runs at `RUST_LOG=debug` — every other one with `--log-format json`, the rest in text
//! — and its stderr is kept in `DIR`; the helpers note every credential they send or receive
//! (passwords, access and refresh tokens, session cookies, personal access tokens, sign-in
//! states) in `DIR/secrets-<pid>.txt`. [`scan`] then finds any of them, or anything shaped
//! like a JWT, a personal access token or a password hash, in any log, and any JSON log line that does not
//! parse. `.ci/run` runs the auth suites so and scans (`tests/tests/logs.rs`).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// The variable naming the folder of kept logs.
pub const LOG_DIR_VAR: &str = "PARLEY_TEST_LOG_DIR";

/// JSON keys and headers whose string values are credentials, in requests and answers alike.
const SECRET_KEYS: &[&str] = &[
    "password",
    "new_password",
    "current_password",
    "access_token",
    "refresh_token",
    "token",
    "passcode",
    "client_secret",
];

/// Query parameters whose values are credentials: those, and a sign-in's code and state (in
/// JSON, `code` is an error's name).
const SECRET_PARAMS: &[&str] = &["access_token", "token", "code", "state"];

/// Shorter values are not noted: too likely to occur in a log by chance (a test's deliberately
/// short password, a two-letter code).
const MIN_SECRET: usize = 8;

/// The folder of kept logs, if the run keeps them.
pub fn log_dir() -> Option<PathBuf> {
    std::env::var_os(LOG_DIR_VAR)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// When logs are kept: sets `RUST_LOG=debug` on `command` and (unless `args` choose one) a log
/// format, alternating JSON and text; returns the file its stderr is to go to, and its path.
pub fn debug_log(command: &mut Command, args: &[&str]) -> Option<(PathBuf, File)> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = log_dir()?;
    std::fs::create_dir_all(&dir).expect("create PARLEY_TEST_LOG_DIR");
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let chosen = args
        .iter()
        .position(|a| *a == "--log-format")
        .and_then(|i| args.get(i + 1))
        .copied();
    let format = chosen.unwrap_or(if n % 2 == 0 { "json" } else { "text" });
    if chosen.is_none() {
        command.args(["--log-format", format]);
    }
    command.env("RUST_LOG", "debug");
    let path = dir.join(format!("server-{}-{n}.{format}.log", std::process::id()));
    let file = File::create(&path).expect("create a kept log");
    Some((path, file))
}

/// Notes `secret` as a credential a test used (when logs are kept).
pub fn remember(secret: &str) {
    static SEEN: OnceLock<Mutex<(HashSet<String>, Option<File>)>> = OnceLock::new();
    let Some(dir) = log_dir() else { return };
    if secret.len() < MIN_SECRET || secret.contains(['\n', '\r']) {
        return;
    }
    let seen = SEEN.get_or_init(Mutex::default);
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.0.insert(secret.to_owned()) {
        return;
    }
    if seen.1.is_none() {
        std::fs::create_dir_all(&dir).expect("create PARLEY_TEST_LOG_DIR");
        let path = dir.join(format!("secrets-{}.txt", std::process::id()));
        let file = OpenOptions::new().create(true).append(true).open(path);
        seen.1 = Some(file.expect("open the secrets file"));
    }
    if let Some(file) = &mut seen.1 {
        let _ = writeln!(file, "{secret}");
    }
}

/// Notes the credentials in a JSON value: strings under [`SECRET_KEYS`], at any depth.
pub fn note_json(value: &Value) {
    if log_dir().is_none() {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v {
                    Value::String(s) if SECRET_KEYS.contains(&key.as_str()) => remember(s),
                    _ => note_json(v),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(note_json),
        _ => {}
    }
}

/// Notes the credentials in a JSON body, if it is one.
pub fn note_body(body: &[u8]) {
    if log_dir().is_some() {
        if let Ok(value) = serde_json::from_slice::<Value>(body) {
            note_json(&value);
        }
    }
}

/// Notes the credentials in request or response headers: `Authorization` (its token),
/// `Cookie` and `Set-Cookie` values of Parley's cookies, a STOMP `passcode`, and those in a
/// `Location`'s query.
pub fn note_headers(headers: &[(&str, &str)]) {
    if log_dir().is_none() {
        return;
    }
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "authorization" => {
                remember(value);
                if let Some((_, token)) = value.split_once(' ') {
                    remember(token.trim());
                }
            }
            "cookie" | "set-cookie" => {
                for pair in value.split(';') {
                    if let Some((n, v)) = pair.trim().split_once('=') {
                        if n.starts_with("parley") {
                            remember(v);
                        }
                    }
                }
            }
            "location" => note_path(value),
            _ if SECRET_KEYS.contains(&name.as_str()) => remember(value),
            _ => {}
        }
    }
}

/// Notes the credentials in a request target's query string.
pub fn note_path(path: &str) {
    if log_dir().is_none() {
        return;
    }
    let Some((_, query)) = path.split_once('?') else {
        return;
    };
    for pair in query.split('&') {
        if let Some((key, value)) = pair.split_once('=') {
            if SECRET_PARAMS.contains(&key) {
                remember(value);
            }
        }
    }
}

/// What a scan of kept logs found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Log files read.
    pub files: usize,
    /// Lines read.
    pub lines: usize,
    /// Credentials the tests noted.
    pub secrets: usize,
    /// What should not be there: `file:line: what`.
    pub findings: Vec<String>,
}

/// Scans every `*.log` in `dir` for the noted credentials (`secrets-*.txt`), for JWT- and
/// personal-access-token-shaped strings, and checks every line of a `*.json.log` is a JSON
/// object with `timestamp`, `level` and `target`.
pub fn scan(dir: &Path) -> Scan {
    let mut result = Scan::default();
    let mut secrets: Vec<String> = Vec::new();
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the log folder") {
        let path = entry.expect("a folder entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("secrets-") {
            let text = std::fs::read_to_string(&path).expect("read a secrets file");
            secrets.extend(text.lines().map(str::to_owned));
        } else if name.ends_with(".log") {
            logs.push(path);
        }
    }
    secrets.sort();
    secrets.dedup();
    result.secrets = secrets.len();
    logs.sort();
    for path in logs {
        result.files += 1;
        let text = std::fs::read_to_string(&path).expect("read a kept log");
        let json = path.to_string_lossy().ends_with(".json.log");
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        for (i, line) in text.lines().enumerate() {
            result.lines += 1;
            let at = format!("{name}:{}", i + 1);
            if json {
                if let Some(why) = bad_json_line(line) {
                    result.findings.push(format!("{at}: {why}: {line}"));
                }
            }
            for secret in &secrets {
                if line.contains(secret.as_str()) {
                    result
                        .findings
                        .push(format!("{at}: a credential a test used ({secret}): {line}"));
                }
            }
            for shape in shaped_secrets(line) {
                result.findings.push(format!("{at}: {shape}: {line}"));
            }
        }
    }
    result
}

/// Why `line` is not a well-formed JSON log line, if it is not: not a JSON object, without a
/// string `timestamp`, `level` or `target`, or with one of those (or `message`) twice.
pub fn bad_json_line(line: &str) -> Option<String> {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Some(format!("not JSON ({e})")),
    };
    let Some(object) = value.as_object() else {
        return Some("not a JSON object".to_owned());
    };
    // A key written twice parses (the last one wins): look for it in the text, where a key's
    // quotes are bare and those inside strings escaped.
    for key in ["timestamp", "level", "target", "message", "spans"] {
        if line.matches(&format!("\"{key}\":")).count() > 1 {
            return Some(format!("{key:?} twice"));
        }
    }
    ["timestamp", "level", "target"]
        .iter()
        .find(|key| !object.get(**key).is_some_and(Value::is_string))
        .map(|key| format!("no string {key:?}"))
}

/// What in `line` is shaped like a credential: a JWT (`eyJ…` three base64url parts), a
/// personal access token (`pat_` and 20 or more base64url characters), a password hash.
pub fn shaped_secrets(line: &str) -> Vec<String> {
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut found = Vec::new();
    for (at, _) in line.match_indices("eyJ") {
        let run: String = line[at..]
            .chars()
            .take_while(|&c| b64(c) || c == '.')
            .collect();
        let parts: Vec<&str> = run.split('.').collect();
        if parts.len() >= 3 && parts[..3].iter().all(|p| p.len() >= 4) {
            found.push(format!("a JWT ({run})"));
        }
    }
    if line.contains("$argon2") {
        found.push("a password hash".to_owned());
    }
    for (at, _) in line.match_indices("pat_") {
        let tail = line[at + 4..].chars().take_while(|&c| b64(c)).count();
        if tail >= 20 {
            found.push("a personal access token".to_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_found() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        assert_eq!(
            shaped_secrets(&format!("uri=/ws?access_token={jwt}")).len(),
            1
        );
        assert_eq!(
            shaped_secrets("pat_0123456789abcdefghijABCDEFGHIJ_-xyz").len(),
            1
        );
        assert_eq!(
            shaped_secrets(r#"["alice", "$argon2id$v=19$m=19456"]"#).len(),
            1
        );
        assert!(shaped_secrets("eyJ alone, pat_short, argon2, ordinary words").is_empty());
    }

    #[test]
    fn json_lines_are_checked() {
        let good = r#"{"timestamp":"t","level":"INFO","target":"parley","message":"hi"}"#;
        assert_eq!(bad_json_line(good), None);
        assert!(bad_json_line("INFO parley: hi").is_some());
        assert!(bad_json_line(r#"{"level":"INFO","target":"x"}"#).is_some());
        let twice = r#"{"timestamp":"t","level":"DEBUG","message":"a","message":"b","target":"x"}"#;
        assert!(bad_json_line(twice).is_some());
        let quoted =
            r#"{"timestamp":"t","level":"DEBUG","message":"a \"message\": b","target":"x"}"#;
        assert_eq!(bad_json_line(quoted), None);
    }
}
