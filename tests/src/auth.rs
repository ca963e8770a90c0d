//! Helpers for the authentication and permission suites: accounts and tokens over the REST API,
//! the `parley token` / `parley user` commands, raw `/ws` and STOMP (TCP and `/stomp`) clients
//! that choose their own credentials, a server launcher with a chosen environment and log level,
//! and key generation with the `openssl` CLI.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::http::{self, Response};
use crate::stomp::Frame;
use crate::{fresh_data_dir, parley_binary, LISTENING_PREFIX, STOMP_LISTENING_PREFIX};

/// Bound for one network wait in these helpers.
pub const WAIT: Duration = Duration::from_secs(10);

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "parley_session";

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The password the helpers give user `name` (≥ 8 characters, unique per user).
pub fn password_for(name: &str) -> String {
    let password = format!("pw-{name}-correct-horse");
    crate::logs::remember(&password);
    password
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The server's own origin, `http://<addr>` (the test clients send `Host: <addr>`).
pub fn same_origin(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

// ---------------------------------------------------------------------------------------------
// REST: accounts and tokens
// ---------------------------------------------------------------------------------------------

/// `POST /api/register {"username","password"}`.
pub async fn register(addr: SocketAddr, username: &str, password: &str) -> Response {
    http::post_json(
        addr,
        "/api/register",
        &[],
        &json!({"username": username, "password": password}),
    )
    .await
}

/// Registers `username` with [`password_for`], asserting `201 {"username"}`.
pub async fn register_ok(addr: SocketAddr, username: &str) {
    let r = register(addr, username, &password_for(username)).await;
    r.assert_status(201, &format!("register {username}"));
    assert_eq!(r.json()["username"], username, "201 body names the user");
}

/// `POST /api/login {"username","password"}`.
pub async fn login(addr: SocketAddr, username: &str, password: &str) -> Response {
    http::post_json(
        addr,
        "/api/login",
        &[],
        &json!({"username": username, "password": password}),
    )
    .await
}

/// An access token and refresh token pair.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The JWT.
    pub access: String,
    /// The opaque refresh token.
    pub refresh: String,
    /// `expires_in` as answered.
    pub expires_in: u64,
}

impl Tokens {
    /// Reads a 200 login/refresh answer that returns both tokens in the body.
    #[track_caller]
    pub fn from_response(r: &Response) -> Tokens {
        r.assert_status(200, "token pair");
        let v = r.json();
        Tokens {
            access: v["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("no access_token in {v}"))
                .to_string(),
            refresh: v["refresh_token"]
                .as_str()
                .unwrap_or_else(|| panic!("no refresh_token in {v}"))
                .to_string(),
            expires_in: v["expires_in"]
                .as_u64()
                .unwrap_or_else(|| panic!("no numeric expires_in in {v}")),
        }
    }
}

/// Logs in with [`password_for`], asserting 200.
pub async fn login_ok(addr: SocketAddr, username: &str) -> Tokens {
    Tokens::from_response(&login(addr, username, &password_for(username)).await)
}

/// Registers `username` and logs in; returns the access token.
pub async fn account(addr: SocketAddr, username: &str) -> String {
    register_ok(addr, username).await;
    login_ok(addr, username).await.access
}

/// The result of a cookie login.
#[derive(Debug, Clone)]
pub struct CookieLogin {
    /// The whole response.
    pub response: Response,
    /// The access token from the body.
    pub access: String,
    /// The `parley_session` cookie's value.
    pub cookie: String,
}

/// `POST /api/login` with `"cookie":true`, asserting 200 and a session cookie.
pub async fn login_cookie(addr: SocketAddr, username: &str) -> CookieLogin {
    let response = http::post_json(
        addr,
        "/api/login",
        &[],
        &json!({"username": username, "password": password_for(username), "cookie": true}),
    )
    .await;
    response.assert_status(200, "cookie login");
    let access = response.json()["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {:?}", response.text()))
        .to_string();
    let cookie = response
        .set_cookie(SESSION_COOKIE)
        .unwrap_or_else(|| panic!("no {SESSION_COOKIE} cookie set: {:?}", response.headers))
        .value;
    CookieLogin {
        response,
        access,
        cookie,
    }
}

/// `Cookie: parley_session=<value>`.
pub fn cookie_header(value: &str) -> String {
    format!("{SESSION_COOKIE}={value}")
}

/// `POST /api/token/refresh {"refresh_token"}`.
pub async fn refresh(addr: SocketAddr, refresh_token: &str) -> Response {
    http::post_json(
        addr,
        "/api/token/refresh",
        &[],
        &json!({"refresh_token": refresh_token}),
    )
    .await
}

/// `POST /api/token/refresh` with the session cookie, an empty body and `origin` if given.
pub async fn refresh_cookie(addr: SocketAddr, cookie: &str, origin: Option<&str>) -> Response {
    let cookie = cookie_header(cookie);
    let mut headers = vec![("Cookie", cookie.as_str())];
    if let Some(origin) = origin {
        headers.push(("Origin", origin));
    }
    http::request(addr, "POST", "/api/token/refresh", &headers, Some(b"")).await
}

/// `POST /api/logout {"refresh_token"}`.
pub async fn logout(addr: SocketAddr, refresh_token: &str) -> Response {
    http::post_json(
        addr,
        "/api/logout",
        &[],
        &json!({"refresh_token": refresh_token}),
    )
    .await
}

/// `GET /api/me` with `Authorization: Bearer <token>`.
pub async fn me(addr: SocketAddr, token: &str) -> Response {
    let auth = bearer(token);
    http::get(addr, "/api/me", &[("Authorization", &auth)]).await
}

/// `GET path` with a bearer token.
pub async fn get_as(addr: SocketAddr, path: &str, token: &str) -> Response {
    let auth = bearer(token);
    http::get(addr, path, &[("Authorization", &auth)]).await
}

/// `POST path` with a JSON body and a bearer token.
pub async fn post_as(addr: SocketAddr, path: &str, token: &str, body: &Value) -> Response {
    let auth = bearer(token);
    http::post_json(addr, path, &[("Authorization", &auth)], body).await
}

/// `DELETE path` with a bearer token.
pub async fn delete_as(addr: SocketAddr, path: &str, token: &str) -> Response {
    let auth = bearer(token);
    http::delete(addr, path, &[("Authorization", &auth)]).await
}

// ---------------------------------------------------------------------------------------------
// JWT inspection (no verification)
// ---------------------------------------------------------------------------------------------

/// base64url without padding, as JWTs use it.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url with or without padding.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

fn segment(token: &str, i: usize) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three segments: {token:?}");
    let bytes = b64url_decode(parts[i]).unwrap_or_else(|| panic!("segment {i} not base64url"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("segment {i} not JSON: {e}"))
}

/// A JWT's header, unverified.
pub fn jwt_header(token: &str) -> Value {
    segment(token, 0)
}

/// A JWT's claims, unverified.
pub fn jwt_claims(token: &str) -> Value {
    segment(token, 1)
}

// ---------------------------------------------------------------------------------------------
// The `parley` command line
// ---------------------------------------------------------------------------------------------

/// Runs `parley ARGS` with `stdin` written to it and `env` added; bounded by 60 s.
pub fn run_parley(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let bin = parley_binary();
    // `parley user …` must write where the servers of this run read (see `database_for`).
    let data = args
        .iter()
        .position(|a| *a == "--data")
        .and_then(|i| args.get(i + 1));
    let database = data.and_then(|d| crate::database_for(Path::new(d)));
    let mut child = Command::new(bin)
        .args(args)
        .args(database.iter().flat_map(|url| ["--database", url.as_str()]))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn parley {args:?}: {e}"));
    let mut pipe = child.stdin.take().expect("stdin is piped");
    if let Some(input) = stdin {
        // A command that does not read stdin may close it first: ignore EPIPE.
        let _ = pipe.write_all(input.as_bytes());
    }
    drop(pipe);
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap_or_else(|e| panic!("parley {args:?}: {e}")),
        Err(_) => {
            // Kill only the child we started, by its pid.
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            panic!("parley {args:?} did not finish within 60 s")
        }
    }
}

/// `parley token NAME --data DATA EXTRA...`: asserts success and that stdout is exactly one
/// token (three base64url segments) and nothing else; returns it.
pub fn mint_token(data: &Path, name: &str, extra: &[&str]) -> String {
    mint_token_env(data, name, extra, &[])
}

/// [`mint_token`] with environment variables.
pub fn mint_token_env(data: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> String {
    let data = data.to_str().expect("utf-8 path");
    let mut args = vec!["token", name, "--data", data];
    args.extend_from_slice(extra);
    let out = run_parley(&args, None, env);
    assert!(
        out.status.success(),
        "parley {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("token output is UTF-8");
    let token = stdout.trim();
    assert!(
        !token.is_empty() && token.lines().count() == 1,
        "stdout must be the token and nothing else: {stdout:?}"
    );
    let parts: Vec<&str> = token.split('.').collect();
    assert!(
        parts.len() == 3
            && parts.iter().all(|p| !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')),
        "stdout is not a compact JWT: {stdout:?}"
    );
    token.to_string()
}

/// `parley user add NAME --data DATA` with the password on stdin.
pub fn user_add(data: &Path, name: &str, password: &str) -> Output {
    let data = data.to_str().expect("utf-8 path");
    run_parley(
        &["user", "add", name, "--data", data],
        Some(&format!("{password}\n")),
        &[],
    )
}

/// `parley user passwd NAME --data DATA` with the password on stdin.
pub fn user_passwd(data: &Path, name: &str, password: &str) -> Output {
    let data = data.to_str().expect("utf-8 path");
    run_parley(
        &["user", "passwd", name, "--data", data],
        Some(&format!("{password}\n")),
        &[],
    )
}

/// A fresh, existing scratch directory (for keys and secret files).
pub fn scratch_dir() -> PathBuf {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Runs the openssl CLI with `args`, failing the test if it fails.
pub(crate) fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generates an RSA key pair of `bits` in `dir`: (PKCS#8 private PEM, SPKI public PEM).
pub fn rsa_keys(dir: &Path, bits: u32) -> (PathBuf, PathBuf) {
    key_pair(
        dir,
        &format!("rsa{bits}"),
        "RSA",
        &format!("rsa_keygen_bits:{bits}"),
    )
}

/// Generates a P-256 key pair in `dir`: (PKCS#8 private PEM, SPKI public PEM).
pub fn ec_keys(dir: &Path) -> (PathBuf, PathBuf) {
    key_pair(dir, "ec", "EC", "ec_paramgen_curve:P-256")
}

/// `openssl genpkey -algorithm ALGORITHM -pkeyopt OPTION` into `dir/NAME.key`, and its public
/// half into `dir/NAME.pub`.
fn key_pair(dir: &Path, name: &str, algorithm: &str, option: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let (key_path, public_path) = (key.to_str().unwrap(), public.to_str().unwrap());
    openssl(&[
        "genpkey",
        "-algorithm",
        algorithm,
        "-pkeyopt",
        option,
        "-out",
        key_path,
    ]);
    openssl(&["pkey", "-in", key_path, "-pubout", "-out", public_path]);
    (key, public)
}

// ---------------------------------------------------------------------------------------------
// A server launched with a chosen environment and log level
// ---------------------------------------------------------------------------------------------

/// `parley serve` started with extra environment variables and `RUST_LOG` of our choosing, its
/// stderr kept in a file. Killed when dropped.
pub struct SpawnedServer {
    child: Child,
    addr: SocketAddr,
    stomp_addr: SocketAddr,
    log: PathBuf,
}

impl SpawnedServer {
    /// Starts `parley serve --data DATA --http 127.0.0.1:0 --stomp-tcp 127.0.0.1:0 ARGS` with
    /// `env` (`RUST_LOG=warn` unless `env` sets it); panics if it does not come up.
    pub fn start(data: &Path, args: &[&str], env: &[(&str, &str)]) -> SpawnedServer {
        Self::try_start(data, args, env)
            .unwrap_or_else(|log| panic!("parley serve {args:?} did not start:\n{log}"))
    }

    /// Like [`SpawnedServer::start`]; `Err(stderr)` if the server exits or prints no listening
    /// lines within 15 s.
    pub fn try_start(
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<SpawnedServer, String> {
        let mut cmd = Command::new(parley_binary());
        cmd.arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--http", "127.0.0.1:0", "--stomp-tcp", "127.0.0.1:0"])
            .args(
                crate::database_for(data)
                    .into_iter()
                    .flat_map(|url| ["--database".to_owned(), url]),
            )
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied());
        // PARLEY_TEST_LOG_DIR: the log is kept there, at debug level, for the secret scan.
        let (log, log_file) = crate::logs::debug_log(&mut cmd, args).unwrap_or_else(|| {
            let log = scratch_dir().join("stderr.log");
            let file = File::create(&log).expect("create the log file");
            (log, file)
        });
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let mut child = cmd.spawn().expect("spawn parley serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            for _ in 0..2 {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(n) if n > 0 => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut lines = Vec::new();
        while lines.len() < 2 {
            match rx.recv_timeout(Duration::from_secs(15)) {
                Ok(line) => lines.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!(
                        "exit {status:?}; stdout {lines:?}; stderr:\n{stderr}"
                    ));
                }
            }
        }
        let parse = |line: &str, prefix: &str| -> SocketAddr {
            line.trim()
                .strip_prefix(prefix)
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("unexpected listening line {line:?}"))
        };
        let addr = parse(&lines[0], LISTENING_PREFIX);
        let stomp_addr = parse(&lines[1], STOMP_LISTENING_PREFIX);
        Ok(SpawnedServer {
            child,
            addr,
            stomp_addr,
            log,
        })
    }

    /// The HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The STOMP-over-TCP address.
    pub fn stomp_addr(&self) -> SocketAddr {
        self.stomp_addr
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server and waits for it (so its log is complete).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("---- parley stderr ({}) ----\n{}", self.addr, self.log());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket (/ws and /stomp upgrades) with chosen headers
// ---------------------------------------------------------------------------------------------

/// Upgrades to `ws://addr{path}` with extra `headers`; `Err(status, body)` when refused.
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String)> {
    crate::logs::note_path(path);
    crate::logs::note_headers(headers);
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("valid ws url");
    for (name, value) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName =
            name.parse().expect("valid header name");
        request.headers_mut().append(
            name,
            HeaderValue::from_str(value).expect("valid header value"),
        );
    }
    match timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
        Err(_) => panic!("WebSocket handshake with {path} timed out"),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Ok(Err(e)) => panic!("WebSocket handshake with {path} failed: {e}"),
    }
}

/// Upgrades, panicking with the status when refused.
pub async fn ws_connect_ok(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Ws {
    ws_connect(addr, path, headers)
        .await
        .unwrap_or_else(|(status, body)| panic!("upgrade to {path} refused: {status} {body:?}"))
}

/// Raw `/ws` with `Authorization: Bearer <token>`.
pub async fn ws_bearer(addr: SocketAddr, token: &str) -> Ws {
    let auth = bearer(token);
    ws_connect_ok(addr, "/ws", &[("Authorization", &auth)]).await
}

/// The status of an upgrade that is expected to fail (`101` if it succeeded).
pub async fn ws_status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    match ws_connect(addr, path, headers).await {
        Ok(mut ws) => {
            let _ = ws.close(None).await;
            101
        }
        Err((status, _)) => status,
    }
}

/// Sends one JSON message.
pub async fn ws_send(ws: &mut Ws, value: &Value) {
    crate::logs::note_json(value);
    timeout(WAIT, ws.send(Message::text(value.to_string())))
        .await
        .expect("send timed out")
        .expect("send");
}

/// What a bounded wait on a WebSocket saw.
#[derive(Debug)]
pub enum WsEvent {
    /// A JSON text message.
    Json(Value),
    /// A close frame (or `None` for a bare end of stream / error).
    Closed(Option<CloseFrame>),
    /// Nothing within the bound.
    Timeout,
}

/// The next JSON message, close or timeout within `limit` (pings and pongs skipped).
pub async fn ws_next(ws: &mut Ws, limit: Duration) -> WsEvent {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return WsEvent::Timeout,
            Ok(None) | Ok(Some(Err(_))) => return WsEvent::Closed(None),
            Ok(Some(Ok(Message::Close(frame)))) => return WsEvent::Closed(frame),
            Ok(Some(Ok(Message::Text(t)))) => {
                return WsEvent::Json(
                    serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {t}")),
                )
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
        }
    }
}

/// The next JSON message within [`WAIT`]; panics on close or timeout.
pub async fn ws_recv(ws: &mut Ws) -> Value {
    match ws_next(ws, WAIT).await {
        WsEvent::Json(v) => v,
        other => panic!("expected a JSON message, got {other:?}"),
    }
}

/// Receives until `pred` holds (skipping other messages), within [`WAIT`] in all.
pub async fn ws_recv_until(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws_next(ws, left).await {
            WsEvent::Json(v) if pred(&v) => return v,
            WsEvent::Json(_) => {}
            other => panic!("expected a matching JSON message, got {other:?}"),
        }
    }
}

/// Joins `room` and returns the first answer that is `joined` or `error`.
pub async fn ws_join(ws: &mut Ws, room: &str) -> Value {
    ws_send(ws, &json!({"type": "join", "room": room})).await;
    ws_recv_until(ws, |v| v["type"] == "joined" || v["type"] == "error").await
}

/// Joins `room`, asserting `joined`.
pub async fn ws_join_ok(ws: &mut Ws, room: &str) -> Value {
    let v = ws_join(ws, room).await;
    assert_eq!(v["type"], "joined", "join {room}: {v}");
    v
}

/// Sends `body` to `room` and waits for its ack; returns the message id as a string.
pub async fn ws_post(ws: &mut Ws, room: &str, body: &str) -> String {
    let r = format!("r-{body}");
    ws_send(
        ws,
        &json!({"type": "send", "room": room, "body": body, "ref": r}),
    )
    .await;
    let ack = ws_recv_until(ws, |v| {
        (v["type"] == "ack" || v["type"] == "error") && v["ref"] == r.as_str()
    })
    .await;
    assert_eq!(ack["type"], "ack", "send to {room}: {ack}");
    id_string(&ack["id"])
}

/// A message id as a string whether the server sent `"42"` or `42`.
pub fn id_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not an id: {other}"),
    }
}

/// Asserts nothing but pings arrives for `limit` except messages `ignore` accepts.
pub async fn ws_quiet(ws: &mut Ws, limit: Duration, ignore: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws_next(ws, left).await {
            WsEvent::Timeout | WsEvent::Closed(_) => return,
            WsEvent::Json(v) if ignore(&v) => {}
            WsEvent::Json(v) => panic!("expected nothing, got {v}"),
        }
    }
}

/// Asserts the connection is alive: `ping` answered with `pong`.
pub async fn ws_ping(ws: &mut Ws) {
    ws_send(ws, &json!({"type": "ping"})).await;
    ws_recv_until(ws, |v| v["type"] == "pong").await;
}

// ---------------------------------------------------------------------------------------------
// STOMP over TCP or WebSocket with chosen CONNECT headers
// ---------------------------------------------------------------------------------------------

enum StompIo {
    Tcp(TcpStream),
    Ws(Box<Ws>),
}

/// What a bounded wait on a STOMP connection saw.
#[derive(Debug)]
pub enum StompEvent {
    /// A frame.
    Frame(Frame),
    /// The server closed the connection.
    Closed,
    /// Nothing within the bound.
    Timeout,
}

/// A STOMP 1.2 connection that has not necessarily sent CONNECT yet.
pub struct Stomp {
    io: StompIo,
    buf: Vec<u8>,
    closed: bool,
}

impl Stomp {
    /// Opens a TCP connection (no frame sent).
    pub async fn tcp(addr: SocketAddr) -> Stomp {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Stomp {
            io: StompIo::Tcp(stream),
            buf: Vec::new(),
            closed: false,
        }
    }

    /// Upgrades to `/stomp` (subprotocol `v12.stomp`) with extra `headers`.
    pub async fn ws(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<Stomp, (u16, String)> {
        let mut all = vec![("Sec-WebSocket-Protocol", "v12.stomp")];
        all.extend_from_slice(headers);
        let ws = ws_connect(addr, "/stomp", &all).await?;
        Ok(Stomp {
            io: StompIo::Ws(Box::new(ws)),
            buf: Vec::new(),
            closed: false,
        })
    }

    /// Opens TCP and sends CONNECT with `headers`; returns the answer (CONNECTED or ERROR).
    pub async fn tcp_connect(addr: SocketAddr, headers: &[(&str, &str)]) -> (Stomp, Frame) {
        let mut s = Stomp::tcp(addr).await;
        let f = s.connect(headers).await;
        (s, f)
    }

    /// Opens TCP and CONNECTs, asserting CONNECTED with `user-name` = `user`.
    pub async fn tcp_connected(addr: SocketAddr, headers: &[(&str, &str)], user: &str) -> Stomp {
        let (s, f) = Stomp::tcp_connect(addr, headers).await;
        assert_eq!(f.command, "CONNECTED", "CONNECT {headers:?}: {f:?}");
        assert_eq!(f.header("user-name"), user, "{f:?}");
        s
    }

    /// Opens TCP and CONNECTs with `passcode:<token>`, asserting CONNECTED as `user`.
    pub async fn with_token(addr: SocketAddr, token: &str, user: &str) -> Stomp {
        Stomp::tcp_connected(addr, &[("passcode", token)], user).await
    }

    /// Sends `CONNECT accept-version:1.2 host:/ HEADERS` and returns the first frame.
    pub async fn connect(&mut self, headers: &[(&str, &str)]) -> Frame {
        let mut all = vec![("accept-version", "1.2"), ("host", "/")];
        all.extend_from_slice(headers);
        self.send("CONNECT", &all, b"").await;
        self.recv()
            .await
            .unwrap_or_else(|| panic!("closed without answering CONNECT {headers:?}"))
    }

    /// Sends a frame (headers verbatim, `content-length` added for a non-empty body).
    pub async fn send(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        crate::logs::note_headers(headers);
        let mut out = format!("{command}\n").into_bytes();
        for (k, v) in headers {
            out.extend_from_slice(format!("{k}:{v}\n").as_bytes());
        }
        if !body.is_empty() {
            out.extend_from_slice(format!("content-length:{}\n", body.len()).as_bytes());
        }
        out.extend_from_slice(b"\n");
        out.extend_from_slice(body);
        out.push(0);
        match &mut self.io {
            StompIo::Tcp(s) => {
                let _ = timeout(WAIT, s.write_all(&out))
                    .await
                    .expect("write timed out");
            }
            StompIo::Ws(ws) => {
                let msg = match String::from_utf8(out) {
                    Ok(text) => Message::text(text),
                    Err(e) => Message::binary(e.into_bytes()),
                };
                let _ = timeout(WAIT, ws.send(msg)).await.expect("send timed out");
            }
        }
    }

    /// The next frame within [`WAIT`]; `None` when the server closed. Panics on timeout.
    pub async fn recv(&mut self) -> Option<Frame> {
        match self.next(WAIT).await {
            StompEvent::Frame(f) => Some(f),
            StompEvent::Closed => None,
            StompEvent::Timeout => panic!("no STOMP frame within {WAIT:?}"),
        }
    }

    /// The next frame, close or timeout within `limit` (heart-beats skipped).
    pub async fn next(&mut self, limit: Duration) -> StompEvent {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while self.buf.first().is_some_and(|&b| b == b'\n' || b == b'\r') {
                self.buf.remove(0);
            }
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return StompEvent::Frame(frame);
            }
            if self.closed {
                return StompEvent::Closed;
            }
            match &mut self.io {
                StompIo::Tcp(s) => {
                    let mut chunk = vec![0u8; 16 * 1024];
                    match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                        Err(_) => return StompEvent::Timeout,
                        Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                        Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                    }
                }
                StompIo::Ws(ws) => match tokio::time::timeout_at(deadline, ws.next()).await {
                    Err(_) => return StompEvent::Timeout,
                    Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                        self.closed = true
                    }
                    Ok(Some(Ok(Message::Text(t)))) => self.buf.extend_from_slice(t.as_bytes()),
                    Ok(Some(Ok(Message::Binary(b)))) => self.buf.extend_from_slice(&b),
                    Ok(Some(Ok(_))) => {}
                },
            }
        }
    }

    /// SUBSCRIBE `destination` as `id` with `extra` headers and a receipt; returns the answer
    /// (RECEIPT, or ERROR), skipping MESSAGEs that arrive first (e.g. a catch-up).
    pub async fn subscribe(
        &mut self,
        id: &str,
        destination: &str,
        extra: &[(&str, &str)],
    ) -> Frame {
        let receipt = format!("sub-{id}");
        let mut headers = vec![
            ("id", id),
            ("destination", destination),
            ("receipt", receipt.as_str()),
        ];
        headers.extend_from_slice(extra);
        self.send("SUBSCRIBE", &headers, b"").await;
        loop {
            let f = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("closed without answering SUBSCRIBE {destination}"));
            if f.command != "MESSAGE" {
                return f;
            }
        }
    }

    /// SUBSCRIBE, asserting its RECEIPT.
    pub async fn subscribe_ok(&mut self, id: &str, destination: &str) {
        let f = self.subscribe(id, destination, &[]).await;
        assert_eq!(f.command, "RECEIPT", "SUBSCRIBE {destination}: {f:?}");
    }

    /// SEND with a receipt; returns the answer (RECEIPT or ERROR), skipping MESSAGEs.
    pub async fn send_receipt(&mut self, headers: &[(&str, &str)], body: &[u8]) -> Frame {
        let mut all = headers.to_vec();
        all.push(("receipt", "send-receipt"));
        self.send("SEND", &all, body).await;
        loop {
            let f = self.recv().await.expect("closed without answering SEND");
            if f.command != "MESSAGE" {
                return f;
            }
        }
    }

    /// Asserts the connection is alive and authorized: a SEND to our own DM queue is answered
    /// with its RECEIPT.
    pub async fn alive(&mut self, user: &str) {
        let dest = format!("/user/{user}/queue/alive");
        let f = self
            .send_receipt(&[("destination", dest.as_str())], b"ping")
            .await;
        assert_eq!(
            f.command, "RECEIPT",
            "connection is no longer usable: {f:?}"
        );
    }
}

/// Parses one STOMP frame from the front of `buf`: `(frame, bytes used)`.
pub fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let head_end = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, p + 2))
        .into_iter()
        .chain(
            buf.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| (p, p + 4)),
        )
        .min_by_key(|(p, _)| *p)?;
    let head = std::str::from_utf8(&buf[..head_end.0]).ok()?;
    let mut lines = head.lines();
    let command = lines.next()?.trim_end_matches('\r').to_owned();
    let mut headers = BTreeMap::new();
    for line in lines {
        let line = line.trim_end_matches('\r');
        let (k, v) = line.split_once(':')?;
        headers.entry(unescape(k)).or_insert_with(|| unescape(v));
    }
    let start = head_end.1;
    let (body_end, used) = match headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(len) if buf.len() > start + len => (start + len, start + len + 1),
        Some(_) => return None,
        None => {
            let nul = buf[start..].iter().position(|&b| b == 0)? + start;
            (nul, nul + 1)
        }
    };
    Some((
        Frame {
            command,
            headers,
            body: buf[start..body_end].to_vec(),
        },
        used,
    ))
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('c') => out.push(':'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}
