//! Accounts, tokens and authenticated connections against the real binary (docs/auth.md):
//! registration and login, throttling, rotating refresh tokens and their reuse detection, the
//! browser session cookie and its CSRF rule, a JWT attack suite, key configurations, the
//! `parley token` / `parley user` commands, credentials on every transport, token expiry on live
//! connections, logs without credentials, and guests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parley_tests::auth::*;
use parley_tests::http;
use parley_tests::{fresh_data_dir, ServerProcess};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// A strict server (no guests) and its data directory.
fn strict(args: &[&str]) -> (ServerProcess, PathBuf) {
    let data = fresh_data_dir();
    (ServerProcess::start_strict_with_data(&data, args), data)
}

/// A known 48-byte HS256 secret, written to a file (no trailing newline).
const SECRET: &[u8] = b"test-secret-0123456789abcdefghijklmnopqrstuvwxyz!";

/// A strict server whose HS256 secret is [`SECRET`], via `--jwt-secret-file`.
fn with_known_secret() -> ServerProcess {
    let file = scratch_dir().join("jwt-secret");
    std::fs::write(&file, SECRET).unwrap();
    ServerProcess::start_strict(&["--jwt-secret-file", file.to_str().unwrap()])
}

/// Claims the server should accept: sub, iat, exp (+10 min), iss, aud, jti, typ.
fn good_claims(sub: &str) -> Value {
    let now = now_secs();
    json!({
        "sub": sub,
        "iat": now,
        "exp": now + 600,
        "iss": "parley",
        "aud": "parley",
        "jti": format!("test-{now}-{sub}"),
        "typ": "access",
    })
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign a test token")
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret).unwrap(),
        claims,
    )
}

/// An unsigned token: the given header JSON, the claims, and `signature` (usually empty).
fn unsigned(header: &str, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64url(header.as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// The token must be refused everywhere: `/api/me` 401, `/ws` upgrade 401, STOMP ERROR.
async fn assert_refused(server: &ServerProcess, token: &str, what: &str) {
    let r = me(server.addr(), token).await;
    assert_eq!(
        r.status,
        401,
        "{what}: GET /api/me answered {} {:?}",
        r.status,
        r.text()
    );
    let auth = bearer(token);
    let status = ws_status(server.addr(), "/ws", &[("Authorization", &auth)]).await;
    assert_eq!(status, 401, "{what}: /ws upgrade answered {status}");
    let (mut s, f) = Stomp::tcp_connect(server.stomp_addr(), &[("passcode", token)]).await;
    assert_eq!(f.command, "ERROR", "{what}: STOMP CONNECT accepted: {f:?}");
    if !token.is_empty() {
        assert!(
            f.header("message").contains("authentication failed"),
            "{what}: STOMP ERROR message should say `authentication failed`: {f:?}"
        );
    }
    assert!(s.recv().await.is_none(), "{what}: STOMP closes after ERROR");
}

/// The token must be accepted everywhere as `user`.
async fn assert_accepted(server: &ServerProcess, token: &str, user: &str, what: &str) {
    let r = me(server.addr(), token).await;
    r.assert_status(200, &format!("{what}: GET /api/me"));
    assert_eq!(
        r.json(),
        json!({"username": user, "guest": false}),
        "{what}"
    );
    let mut ws = ws_bearer(server.addr(), token).await;
    ws_ping(&mut ws).await;
    let mut s = Stomp::with_token(server.stomp_addr(), token, user).await;
    s.alive(user).await;
}

/// Joins `room`, posts, and returns our own message as the server echoes it.
async fn post_and_echo(ws: &mut Ws, room: &str, body: &str) -> Value {
    ws_join_ok(ws, room).await;
    ws_send(ws, &json!({"type": "send", "room": room, "body": body})).await;
    ws_recv_until(ws, |v| v["type"] == "message" && v["body"] == body).await
}

fn close_code(event: &WsEvent) -> (u16, String) {
    match event {
        WsEvent::Closed(Some(frame)) => (u16::from(frame.code), frame.reason.to_string()),
        other => panic!("expected a close frame with a code, got {other:?}"),
    }
}

fn write_secret(dir: &Path, bytes: &[u8]) -> PathBuf {
    let file = dir.join("shared-secret");
    std::fs::write(&file, bytes).unwrap();
    file
}

// ---------------------------------------------------------------------------------------------
// accounts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn register_answers_201_then_409_for_a_taken_name() {
    let (server, _) = strict(&[]);
    let r = register(server.addr(), "alice", &password_for("alice")).await;
    r.assert_status(201, "first registration");
    assert_eq!(r.json(), json!({"username": "alice"}));
    let r = register(server.addr(), "alice", "another-password").await;
    r.assert_status(409, "taken name");
}

#[tokio::test]
async fn register_rejects_bad_usernames_with_400() {
    let (server, _) = strict(&[]);
    let long = "a".repeat(33);
    for bad in [
        "",
        "has space",
        "slash/name",
        "colon:name",
        "semi;colon",
        "quote\"d",
        long.as_str(),
        "guest-bob",
        "guest-1",
    ] {
        let r = register(server.addr(), bad, "good-password").await;
        assert_eq!(
            r.status,
            400,
            "username {bad:?}: {} {:?}",
            r.status,
            r.text()
        );
        assert!(!r.body.is_empty(), "a 400 carries a reason: {bad:?}");
    }
    // Not JSON / missing fields.
    let r = http::request(
        server.addr(),
        "POST",
        "/api/register",
        &[("Content-Type", "application/json")],
        Some(b"{nope"),
    )
    .await;
    assert_eq!(r.status, 400, "bad JSON: {}", r.text());
    let r = http::post_json(
        server.addr(),
        "/api/register",
        &[],
        &json!({"username": "x"}),
    )
    .await;
    assert_eq!(r.status, 400, "missing password: {}", r.text());
    // The boundary: 32 characters of every allowed kind is fine.
    let ok = "Ab9_-.".repeat(5) + "zz";
    assert_eq!(ok.len(), 32);
    register(server.addr(), &ok, "good-password")
        .await
        .assert_status(201, "a 32-character name of letters, digits, _ - .");
}

#[tokio::test]
async fn register_requires_a_password_of_8_to_1024_characters() {
    let (server, _) = strict(&[]);
    for (name, password, status) in [
        ("p7", "1234567".to_string(), 400),
        ("p0", String::new(), 400),
        ("p1025", "x".repeat(1025), 400),
        ("p8", "12345678".to_string(), 201),
        ("p1024", "y".repeat(1024), 201),
    ] {
        let r = register(server.addr(), name, &password).await;
        assert_eq!(
            r.status,
            status,
            "password of {} characters: {:?}",
            password.len(),
            r.text()
        );
    }
    // The long password really is the password.
    login(server.addr(), "p1024", &"y".repeat(1024))
        .await
        .assert_status(200, "login with a 1024-character password");
}

#[tokio::test]
async fn registration_closed_answers_403_and_info_says_so() {
    let (server, data) = strict(&["--registration", "closed"]);
    let r = register(server.addr(), "alice", &password_for("alice")).await;
    r.assert_status(403, "registration closed");
    let info = http::get(server.addr(), "/api/info", &[]).await;
    info.assert_status(200, "GET /api/info");
    let info = info.json();
    assert_eq!(info["guests"], json!(false));
    assert_eq!(info["registration"], json!("closed"));
    // Operators still add accounts.
    let out = user_add(&data, "bob", &password_for("bob"));
    assert!(
        out.status.success(),
        "parley user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    login_ok(server.addr(), "bob").await;
}

#[tokio::test]
async fn api_info_tells_what_a_page_may_offer() {
    let (strict_server, _) = strict(&[]);
    let r = http::get(strict_server.addr(), "/api/info", &[]).await;
    r.assert_status(200, "GET /api/info without auth");
    let info = r.json();
    assert_eq!(info["guests"], json!(false));
    assert_eq!(info["registration"], json!("open"));
    // The rules a page checks before asking, and where STOMP over TCP really listens (the
    // tests bind port 0), so clients need no copy of either.
    assert_eq!(info["rooms"]["pattern"], json!("^[A-Za-z0-9_-]{1,128}$"));
    assert_eq!(info["rooms"]["max_length"], json!(128));
    assert_eq!(
        info["stomp_tcp"],
        json!(strict_server.stomp_addr().to_string())
    );
    let guests = ServerProcess::start(&[]);
    let r = http::get(guests.addr(), "/api/info", &[]).await;
    let info = r.json();
    assert_eq!(info["guests"], json!(true));
    assert_eq!(info["registration"], json!("open"));
}

#[tokio::test]
async fn parley_user_add_and_passwd_read_the_password_from_stdin() {
    let (server, data) = strict(&[]);
    let out = user_add(&data, "carol", "first-password-1");
    assert!(
        out.status.success(),
        "parley user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    login(server.addr(), "carol", "first-password-1")
        .await
        .assert_status(200, "login after `parley user add`");
    let out = user_passwd(&data, "carol", "second-password-2");
    assert!(
        out.status.success(),
        "parley user passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    login(server.addr(), "carol", "first-password-1")
        .await
        .assert_status(401, "the old password after `parley user passwd`");
    login(server.addr(), "carol", "second-password-2")
        .await
        .assert_status(200, "the new password after `parley user passwd`");
    // The web registration sees the name as taken.
    register(server.addr(), "carol", "whatever-password")
        .await
        .assert_status(409, "a name added by the operator is taken");
}

// ---------------------------------------------------------------------------------------------
// login, throttling
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn login_returns_a_bearer_token_pair() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let r = login(server.addr(), "alice", &password_for("alice")).await;
    r.assert_status(200, "login");
    let v = r.json();
    let obj = v.as_object().expect("a JSON object");
    assert_eq!(v["token_type"], "Bearer", "{v}");
    assert_eq!(v["expires_in"], 900, "default --access-ttl is 15 min: {v}");
    let access = v["access_token"].as_str().expect("access_token");
    let refresh_token = v["refresh_token"].as_str().expect("refresh_token");
    for field in ["access_token", "expires_in", "refresh_token", "token_type"] {
        assert!(obj.contains_key(field), "login answer lacks {field}: {v}");
    }
    // The refresh token: 256 random bits, base64url.
    let raw = b64url_decode(refresh_token)
        .unwrap_or_else(|| panic!("refresh_token is not base64url: {refresh_token:?}"));
    assert_eq!(raw.len(), 32, "256 bits: {refresh_token:?}");
    // The access token's claims.
    let header = jwt_header(access);
    assert_eq!(header["alg"], "HS256", "{header}");
    let c = jwt_claims(access);
    assert_eq!(c["sub"], "alice", "{c}");
    assert_eq!(c["iss"], "parley", "{c}");
    assert_eq!(c["aud"], "parley", "{c}");
    assert_eq!(c["typ"], "access", "{c}");
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()), "{c}");
    let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
    assert_eq!(exp - iat, 900, "{c}");
    assert!(iat.abs_diff(now_secs()) <= 5, "iat is now: {c}");
    // A second login is a different token.
    let again = login_ok(server.addr(), "alice").await;
    assert_ne!(jwt_claims(&again.access)["jti"], c["jti"], "jti is random");
    assert_ne!(again.refresh, refresh_token);
    me(server.addr(), access)
        .await
        .assert_status(200, "/api/me with the new token");
}

#[tokio::test]
async fn login_failure_is_401_with_one_body_for_unknown_user_and_wrong_password() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let wrong = login(server.addr(), "alice", "wrong-password").await;
    let unknown = login(server.addr(), "nobody", "wrong-password").await;
    wrong.assert_status(401, "wrong password");
    unknown.assert_status(401, "unknown user");
    assert_eq!(
        wrong.json(),
        json!({"error": "invalid username or password"})
    );
    assert_eq!(wrong.body, unknown.body, "the two failures look alike");
    // Missing credentials are not a 500.
    let r = http::post_json(server.addr(), "/api/login", &[], &json!({})).await;
    assert!(
        r.status == 400 || r.status == 401,
        "empty login body: {} {:?}",
        r.status,
        r.text()
    );
}

fn assert_retry_after(r: &http::Response, what: &str) {
    r.assert_status(429, what);
    let retry: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: 429 without Retry-After: {:?}", r.headers))
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After is not seconds: {:?}", r.headers));
    assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}");
}

#[tokio::test]
async fn sixth_failed_login_for_a_username_is_429_even_with_the_right_password() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    register_ok(server.addr(), "bob").await;
    for i in 1..=5 {
        login(server.addr(), "alice", "wrong-password")
            .await
            .assert_status(401, &format!("failure {i} of 5"));
    }
    assert_retry_after(
        &login(server.addr(), "alice", "wrong-password").await,
        "sixth failure",
    );
    assert_retry_after(
        &login(server.addr(), "alice", &password_for("alice")).await,
        "right password while throttled",
    );
    // Another username from the same address is not affected (5 < 20 per IP).
    login_ok(server.addr(), "bob").await;
}

#[tokio::test]
async fn failed_logins_per_ip_are_throttled_across_usernames() {
    let (server, _) = strict(&["--login-failures-per-ip", "3"]);
    register_ok(server.addr(), "alice").await;
    for name in ["u1", "u2", "u3"] {
        login(server.addr(), name, "wrong-password")
            .await
            .assert_status(401, &format!("failure for {name}"));
    }
    assert_retry_after(
        &login(server.addr(), "u4", "wrong-password").await,
        "fourth failure from one IP",
    );
    assert_retry_after(
        &login(server.addr(), "alice", &password_for("alice")).await,
        "a right password from a throttled IP",
    );
}

#[tokio::test]
async fn stomp_password_failures_share_the_login_throttle() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    for i in 1..=5 {
        let (_s, f) = Stomp::tcp_connect(
            server.stomp_addr(),
            &[("login", "alice"), ("passcode", "wrong-password")],
        )
        .await;
        assert_eq!(f.command, "ERROR", "STOMP failure {i}: {f:?}");
        assert!(
            f.header("message").contains("authentication failed"),
            "{f:?}"
        );
    }
    // Now the right password is refused on STOMP and over HTTP.
    let (_s, f) = Stomp::tcp_connect(
        server.stomp_addr(),
        &[("login", "alice"), ("passcode", &password_for("alice"))],
    )
    .await;
    assert_eq!(f.command, "ERROR", "throttled STOMP login: {f:?}");
    assert_retry_after(
        &login(server.addr(), "alice", &password_for("alice")).await,
        "HTTP login after 5 STOMP failures",
    );
}

// ---------------------------------------------------------------------------------------------
// refresh tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_rotates_the_pair_and_the_old_refresh_token_is_dead() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let first = login_ok(server.addr(), "alice").await;
    let r = refresh(server.addr(), &first.refresh).await;
    let second = Tokens::from_response(&r);
    assert_eq!(r.json()["token_type"], "Bearer");
    assert_ne!(second.refresh, first.refresh, "a new refresh token");
    assert_ne!(second.access, first.access, "a new access token");
    assert_eq!(jwt_claims(&second.access)["sub"], "alice");
    me(server.addr(), &second.access)
        .await
        .assert_status(200, "the new access token");
    refresh(server.addr(), &first.refresh)
        .await
        .assert_status(401, "the rotated refresh token");
    // Unknown and malformed tokens.
    refresh(server.addr(), &b64url(&[7u8; 32]))
        .await
        .assert_status(401, "an unknown refresh token");
    refresh(server.addr(), "")
        .await
        .assert_status(401, "an empty refresh token");
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let t1 = login_ok(server.addr(), "alice").await;
    // A second, independent login is another family.
    let other = login_ok(server.addr(), "alice").await;
    let t2 = Tokens::from_response(&refresh(server.addr(), &t1.refresh).await);
    let t3 = Tokens::from_response(&refresh(server.addr(), &t2.refresh).await);
    // The thief (or the victim) presents t1 again.
    refresh(server.addr(), &t1.refresh)
        .await
        .assert_status(401, "reuse of a rotated token");
    refresh(server.addr(), &t3.refresh).await.assert_status(
        401,
        "the newest token of a family whose old token was reused",
    );
    refresh(server.addr(), &t2.refresh)
        .await
        .assert_status(401, "a middle token of the revoked family");
    // Other families live on.
    refresh(server.addr(), &other.refresh)
        .await
        .assert_status(200, "another login's family");
}

#[tokio::test]
async fn logout_revokes_the_family() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let t1 = login_ok(server.addr(), "alice").await;
    let t2 = Tokens::from_response(&refresh(server.addr(), &t1.refresh).await);
    logout(server.addr(), &t2.refresh)
        .await
        .assert_status(204, "logout");
    refresh(server.addr(), &t2.refresh)
        .await
        .assert_status(401, "refresh after logout");
}

#[tokio::test]
async fn refresh_tokens_and_passwords_are_not_stored_in_plaintext() {
    let (server, data) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let t = login_ok(server.addr(), "alice").await;
    let t2 = Tokens::from_response(&refresh(server.addr(), &t.refresh).await);
    // Give a WAL checkpoint no chance to matter: search every file, WAL included.
    let secrets = [
        t.refresh.as_str(),
        t2.refresh.as_str(),
        &password_for("alice"),
    ]
    .map(str::to_string);
    let mut stack = vec![data.clone()];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            for secret in &secrets {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} contains a credential in plaintext",
                    path.display()
                );
            }
        }
    }
    assert!(files > 0, "the data directory holds the accounts");
}

// ---------------------------------------------------------------------------------------------
// browser session cookie
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cookie_login_sets_an_httponly_strict_session_cookie_and_no_refresh_token() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let login = login_cookie(server.addr(), "alice").await;
    let body = login.response.json();
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh_token in the body: {body}"
    );
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], 900, "{body}");
    let cookie = login.response.set_cookie(SESSION_COOKIE).unwrap();
    assert!(!cookie.value.is_empty());
    assert_eq!(cookie.attribute("HttpOnly"), Some(""), "{cookie:?}");
    assert!(
        cookie
            .attribute("SameSite")
            .is_some_and(|v| v.eq_ignore_ascii_case("strict")),
        "{cookie:?}"
    );
    assert_eq!(cookie.attribute("Path"), Some("/"), "{cookie:?}");
    assert_eq!(
        cookie.attribute("Max-Age"),
        Some("1209600"),
        "Max-Age is the refresh ttl (14 days): {cookie:?}"
    );
    me(server.addr(), &login.access)
        .await
        .assert_status(200, "the access token of a cookie login");
}

#[tokio::test]
async fn cookie_refresh_needs_an_allowed_origin() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let login = login_cookie(server.addr(), "alice").await;
    let origin = same_origin(server.addr());
    refresh_cookie(server.addr(), &login.cookie, None)
        .await
        .assert_status(403, "cookie refresh without Origin");
    refresh_cookie(server.addr(), &login.cookie, Some("https://evil.example"))
        .await
        .assert_status(403, "cookie refresh from another site");
    refresh_cookie(server.addr(), &login.cookie, Some("null"))
        .await
        .assert_status(403, "cookie refresh from an opaque origin");
    // The refused attempts changed nothing: the same-origin refresh works.
    let r = refresh_cookie(server.addr(), &login.cookie, Some(&origin)).await;
    r.assert_status(200, "same-origin cookie refresh");
    let body = r.json();
    assert!(body.get("refresh_token").is_none(), "{body}");
    let access = body["access_token"].as_str().expect("access_token");
    me(server.addr(), access)
        .await
        .assert_status(200, "the refreshed access token");
    let new_cookie = r
        .set_cookie(SESSION_COOKIE)
        .expect("a new session cookie on refresh");
    assert_ne!(new_cookie.value, login.cookie, "the cookie rotates");
    assert_eq!(new_cookie.attribute("HttpOnly"), Some(""));
    // The old cookie is a rotated token now: reuse revokes the family.
    refresh_cookie(server.addr(), &login.cookie, Some(&origin))
        .await
        .assert_status(401, "the rotated cookie");
    refresh_cookie(server.addr(), &new_cookie.value, Some(&origin))
        .await
        .assert_status(401, "the newest cookie after reuse");
}

#[tokio::test]
async fn cookie_logout_clears_the_cookie_and_revokes_it() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let login = login_cookie(server.addr(), "alice").await;
    let origin = same_origin(server.addr());
    let cookie = cookie_header(&login.cookie);
    let r = http::request(
        server.addr(),
        "POST",
        "/api/logout",
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
        Some(b""),
    )
    .await;
    r.assert_status(403, "cross-site cookie logout");
    let r = http::request(
        server.addr(),
        "POST",
        "/api/logout",
        &[("Cookie", &cookie), ("Origin", &origin)],
        Some(b""),
    )
    .await;
    r.assert_status(204, "cookie logout");
    let cleared = r
        .set_cookie(SESSION_COOKIE)
        .expect("logout clears the session cookie");
    assert!(
        cleared.value.is_empty()
            || cleared.attribute("Max-Age") == Some("0")
            || cleared.attribute("Expires").is_some(),
        "the cookie is cleared: {cleared:?}"
    );
    refresh_cookie(server.addr(), &login.cookie, Some(&origin))
        .await
        .assert_status(401, "refresh with the logged-out cookie");
}

#[tokio::test]
async fn api_me_answers_with_a_bearer_token_or_the_cookie() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let login = login_cookie(server.addr(), "alice").await;
    let r = me(server.addr(), &login.access).await;
    r.assert_status(200, "/api/me with bearer");
    assert_eq!(r.json(), json!({"username": "alice", "guest": false}));
    let cookie = cookie_header(&login.cookie);
    let origin = same_origin(server.addr());
    let r = http::get(
        server.addr(),
        "/api/me",
        &[("Cookie", &cookie), ("Origin", &origin)],
    )
    .await;
    r.assert_status(200, "/api/me with the cookie");
    assert_eq!(r.json(), json!({"username": "alice", "guest": false}));
    let r = http::get(
        server.addr(),
        "/api/me",
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
    )
    .await;
    r.assert_status(403, "/api/me with the cookie from another site");
    http::get(server.addr(), "/api/me", &[])
        .await
        .assert_status(401, "/api/me without credentials");
    http::get(
        server.addr(),
        "/api/me",
        &[("Authorization", "Basic YWxpY2U6eA==")],
    )
    .await
    .assert_status(401, "/api/me with Basic auth");
    let bogus = cookie_header("not-a-session");
    http::get(
        server.addr(),
        "/api/me",
        &[("Cookie", &bogus), ("Origin", &origin)],
    )
    .await
    .assert_status(401, "/api/me with an unknown cookie");
}

// ---------------------------------------------------------------------------------------------
// JWT attack suite
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_correctly_signed_token_is_accepted_including_within_the_leeway() {
    // Positive control for the attack suite: our own signing with the server's secret works.
    let server = with_known_secret();
    register_ok(server.addr(), "alice").await;
    let token = hs256(SECRET, &good_claims("alice"));
    assert_accepted(&server, &token, "alice", "a well-formed HS256 token").await;
    // Expired 10 s ago: still inside the 30 s leeway (checked on the API only, since a live
    // connection would be closed at exp at once).
    let mut claims = good_claims("alice");
    claims["exp"] = json!(now_secs() - 10);
    claims["iat"] = json!(now_secs() - 100);
    let r = me(server.addr(), &hs256(SECRET, &claims)).await;
    r.assert_status(200, "a token 10 s past exp (30 s leeway)");
}

#[tokio::test]
async fn alg_none_tokens_are_rejected() {
    let server = with_known_secret();
    let claims = good_claims("alice");
    let signed = hs256(SECRET, &claims);
    let real_signature = signed.rsplit('.').next().unwrap().to_string();
    for (header, signature) in [
        (r#"{"alg":"none","typ":"JWT"}"#, ""),
        (r#"{"alg":"none"}"#, ""),
        (r#"{"alg":"None","typ":"JWT"}"#, ""),
        (r#"{"alg":"NONE","typ":"JWT"}"#, ""),
        (r#"{"alg":"nOnE","typ":"JWT"}"#, ""),
        (r#"{"alg":"none","typ":"JWT"}"#, real_signature.as_str()),
        (r#"{"typ":"JWT"}"#, ""),
    ] {
        let token = unsigned(header, &claims, signature);
        assert_refused(
            &server,
            &token,
            &format!("header {header} sig {signature:?}"),
        )
        .await;
    }
    // Without the trailing dot.
    let token = format!(
        "{}.{}",
        b64url(br#"{"alg":"none"}"#),
        b64url(claims.to_string().as_bytes())
    );
    assert_refused(&server, &token, "alg none with two segments").await;
}

#[tokio::test]
async fn tampered_payload_is_rejected() {
    let server = with_known_secret();
    let token = hs256(SECRET, &good_claims("alice"));
    let parts: Vec<&str> = token.split('.').collect();
    for (field, value) in [
        ("sub", json!("admin")),
        ("exp", json!(now_secs() + 86_400 * 365)),
        ("aud", json!("other")),
    ] {
        let mut claims = good_claims("alice");
        claims[field] = value;
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64url(claims.to_string().as_bytes()),
            parts[2]
        );
        assert_refused(&server, &forged, &format!("payload with changed {field}")).await;
    }
    // A flipped signature byte.
    let mut sig = b64url_decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], b64url(&sig));
    assert_refused(&server, &forged, "a flipped signature bit").await;
    // The signature of another token.
    let other = hs256(SECRET, &good_claims("bob"));
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        other.rsplit('.').next().unwrap()
    );
    assert_refused(&server, &forged, "a signature from another token").await;
}

#[tokio::test]
async fn token_signed_with_another_secret_is_rejected() {
    let server = with_known_secret();
    let claims = good_claims("alice");
    assert_refused(
        &server,
        &hs256(b"another-secret-that-is-long-enough-0123456789", &claims),
        "another secret",
    )
    .await;
    assert_refused(&server, &hs256(b"x", &claims), "a one-byte secret").await;
    // The same secret under HS384/HS512 is not the configured algorithm.
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(alg, &EncodingKey::from_secret(SECRET).unwrap(), &claims);
        assert_refused(&server, &token, &format!("{alg:?} with the right secret")).await;
    }
}

#[tokio::test]
async fn expired_token_beyond_the_leeway_is_rejected() {
    let server = with_known_secret();
    let mut claims = good_claims("alice");
    claims["iat"] = json!(now_secs() - 3600);
    claims["exp"] = json!(now_secs() - 60);
    assert_refused(&server, &hs256(SECRET, &claims), "exp 60 s ago").await;
    let mut claims = good_claims("alice");
    claims.as_object_mut().unwrap().remove("exp");
    assert_refused(&server, &hs256(SECRET, &claims), "no exp").await;
    let mut claims = good_claims("alice");
    claims["exp"] = json!("never");
    assert_refused(&server, &hs256(SECRET, &claims), "exp not a number").await;
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_rejected() {
    let server = with_known_secret();
    for (field, value) in [
        ("iss", json!("someone-else")),
        ("aud", json!("someone-else")),
        ("iss", Value::Null),
        ("aud", Value::Null),
    ] {
        let mut claims = good_claims("alice");
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(field);
        } else {
            claims[field] = value.clone();
        }
        assert_refused(
            &server,
            &hs256(SECRET, &claims),
            &format!("{field} = {value}"),
        )
        .await;
    }
}

#[tokio::test]
async fn token_whose_sub_is_not_a_valid_user_name_is_rejected() {
    let server = with_known_secret();
    let long = "a".repeat(33);
    for sub in [
        json!(""),
        json!("has space"),
        json!(long),
        json!(42),
        Value::Null,
    ] {
        let mut claims = good_claims("x");
        if sub.is_null() {
            claims.as_object_mut().unwrap().remove("sub");
        } else {
            claims["sub"] = sub.clone();
        }
        assert_refused(&server, &hs256(SECRET, &claims), &format!("sub = {sub}")).await;
    }
}

#[tokio::test]
async fn malformed_tokens_are_rejected() {
    let server = with_known_secret();
    let good = hs256(SECRET, &good_claims("alice"));
    let with_extra = format!("{good}.extra");
    let padded = {
        let p: Vec<&str> = good.split('.').collect();
        format!("{}==.{}.{}", p[0], p[1], p[2])
    };
    let not_json = format!(
        "{}.{}.{}",
        b64url(b"not json"),
        b64url(b"{}"),
        b64url(b"sig")
    );
    let prefixed = format!("Bearer {good}");
    for token in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "...",
        "not a token at all",
        "%%%.%%%.%%%",
        with_extra.as_str(),
        padded.as_str(),
        not_json.as_str(),
        prefixed.as_str(),
    ] {
        assert_refused(&server, token, &format!("malformed {token:?}")).await;
    }
}

#[tokio::test]
async fn rs256_server_rejects_hs256_forged_with_its_public_key() {
    let dir = scratch_dir();
    let (key, public) = rsa_keys(&dir, 2048);
    let (other_key, _) = {
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        rsa_keys(&other, 2048)
    };
    let (ec_key, _) = ec_keys(&dir);
    let server = ServerProcess::start_strict(&[
        "--jwt-algorithm",
        "RS256",
        "--jwt-private-key",
        key.to_str().unwrap(),
        "--jwt-public-key",
        public.to_str().unwrap(),
    ]);
    register_ok(server.addr(), "alice").await;
    let claims = good_claims("alice");
    // Positive control: our RS256 signature with the server's private key is accepted.
    let private_pem = std::fs::read(&key).unwrap();
    let good = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&private_pem).unwrap(),
        &claims,
    );
    assert_accepted(&server, &good, "alice", "RS256 signed with the server key").await;
    // The classic confusion: HMAC keyed with the public key the attacker can read.
    let public_pem = std::fs::read(&public).unwrap();
    let trimmed = String::from_utf8(public_pem.clone()).unwrap();
    for (what, secret) in [
        ("the public PEM file", public_pem.as_slice()),
        ("the trimmed public PEM", trimmed.trim().as_bytes()),
    ] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let forged = sign(alg, &EncodingKey::from_secret(secret).unwrap(), &claims);
            assert_refused(&server, &forged, &format!("{alg:?} keyed with {what}")).await;
        }
    }
    assert_refused(
        &server,
        &unsigned(r#"{"alg":"none"}"#, &claims, ""),
        "alg none",
    )
    .await;
    let other_pem = std::fs::read(&other_key).unwrap();
    let forged = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&other_pem).unwrap(),
        &claims,
    );
    assert_refused(&server, &forged, "RS256 with another RSA key").await;
    let ec_pem = std::fs::read(&ec_key).unwrap();
    let forged = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&ec_pem).unwrap(),
        &claims,
    );
    assert_refused(&server, &forged, "ES256 on an RS256 server").await;
}

/// Logs in on an asymmetric server, verifies the token with the public key, and uses it.
async fn asymmetric_end_to_end(alg: Algorithm, name: &str, key: &Path, public: &Path) {
    let data = fresh_data_dir();
    let key_args = [
        "--jwt-algorithm",
        name,
        "--jwt-private-key",
        key.to_str().unwrap(),
        "--jwt-public-key",
        public.to_str().unwrap(),
    ];
    let server = ServerProcess::start_strict_with_data(&data, &key_args);
    register_ok(server.addr(), "alice").await;
    let tokens = login_ok(server.addr(), "alice").await;
    assert_eq!(jwt_header(&tokens.access)["alg"], name);
    let public_pem = std::fs::read(public).unwrap();
    let decoding = match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&public_pem).unwrap(),
        _ => DecodingKey::from_ec_pem(&public_pem).unwrap(),
    };
    let mut validation = Validation::new(alg);
    validation.set_audience(&["parley"]);
    validation.set_issuer(&["parley"]);
    let verified = jsonwebtoken::decode::<Value>(&tokens.access, &decoding, &validation)
        .unwrap_or_else(|e| panic!("{name} token does not verify with the public key: {e}"));
    assert_eq!(verified.claims["sub"], "alice");
    assert_accepted(
        &server,
        &tokens.access,
        "alice",
        &format!("{name} login token"),
    )
    .await;
    // A refreshed token is signed the same way.
    let again = Tokens::from_response(&refresh(server.addr(), &tokens.refresh).await);
    jsonwebtoken::decode::<Value>(&again.access, &decoding, &validation)
        .unwrap_or_else(|e| panic!("refreshed {name} token does not verify: {e}"));
    // `parley token` with the same key options.
    let minted = mint_token(&data, "alice", &key_args);
    jsonwebtoken::decode::<Value>(&minted, &decoding, &validation)
        .unwrap_or_else(|e| panic!("`parley token` {name} token does not verify: {e}"));
    assert_accepted(&server, &minted, "alice", &format!("{name} minted token")).await;
}

#[tokio::test]
async fn rs256_configuration_works_end_to_end() {
    let dir = scratch_dir();
    let (key, public) = rsa_keys(&dir, 2048);
    asymmetric_end_to_end(Algorithm::RS256, "RS256", &key, &public).await;
}

#[tokio::test]
async fn es256_configuration_works_end_to_end_and_rejects_forgeries() {
    let dir = scratch_dir();
    let (key, public) = ec_keys(&dir);
    asymmetric_end_to_end(Algorithm::ES256, "ES256", &key, &public).await;
    let server = ServerProcess::start_strict(&[
        "--jwt-algorithm",
        "ES256",
        "--jwt-private-key",
        key.to_str().unwrap(),
        "--jwt-public-key",
        public.to_str().unwrap(),
    ]);
    let claims = good_claims("alice");
    let public_pem = std::fs::read(&public).unwrap();
    let forged = hs256(&public_pem, &claims);
    assert_refused(&server, &forged, "HS256 keyed with the EC public PEM").await;
    assert_refused(
        &server,
        &unsigned(r#"{"alg":"none"}"#, &claims, ""),
        "alg none",
    )
    .await;
    assert_refused(&server, &hs256(SECRET, &claims), "an HS256 token").await;
}

#[tokio::test]
async fn weak_or_missing_keys_stop_the_server_from_starting() {
    let dir = scratch_dir();
    let short = write_secret(&dir, b"only-16-bytes!!!");
    let err = SpawnedServer::try_start(
        &fresh_data_dir(),
        &["--jwt-secret-file", short.to_str().unwrap()],
        &[],
    );
    assert!(err.is_err(), "a 16-byte --jwt-secret-file must be refused");
    let err = SpawnedServer::try_start(
        &fresh_data_dir(),
        &[],
        &[("PARLEY_JWT_SECRET", "too-short")],
    );
    assert!(err.is_err(), "a short PARLEY_JWT_SECRET must be refused");
    let (weak_key, weak_pub) = rsa_keys(&dir, 1024);
    let err = SpawnedServer::try_start(
        &fresh_data_dir(),
        &[
            "--jwt-algorithm",
            "RS256",
            "--jwt-private-key",
            weak_key.to_str().unwrap(),
            "--jwt-public-key",
            weak_pub.to_str().unwrap(),
        ],
        &[],
    );
    assert!(err.is_err(), "a 1024-bit RSA key must be refused");
    let err = SpawnedServer::try_start(&fresh_data_dir(), &["--jwt-algorithm", "RS256"], &[]);
    assert!(err.is_err(), "RS256 without keys must be refused");
}

// ---------------------------------------------------------------------------------------------
// keys on disk, `parley token`, shared secrets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn server_tokens_verify_with_the_generated_secret_file_of_mode_0600() {
    let (server, data) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let tokens = login_ok(server.addr(), "alice").await;
    let file = data.join("jwt-secret");
    let meta =
        std::fs::metadata(&file).unwrap_or_else(|e| panic!("{} should exist: {e}", file.display()));
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "DATA/jwt-secret must be readable by the owner only"
    );
    // The file's content is the HMAC key (a trailing newline aside): 64 random bytes, possibly
    // stored encoded (e.g. base64url) so that it is a text file.
    let mut secret = std::fs::read(&file).unwrap();
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    assert!(
        secret.len() >= 64,
        "at least 64 bytes of key: {}",
        secret.len()
    );
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&["parley"]);
    validation.set_issuer(&["parley"]);
    let data_token = jsonwebtoken::decode::<Value>(
        &tokens.access,
        &DecodingKey::from_secret(&secret).unwrap(),
        &validation,
    )
    .unwrap_or_else(|e| panic!("the login token does not verify with DATA/jwt-secret: {e}"));
    assert_eq!(data_token.header.alg, Algorithm::HS256);
    assert_eq!(data_token.claims["sub"], "alice");
    // The secret survives a restart: the old token is still good on a new process.
    drop(server);
    let again = ServerProcess::start_strict_with_data(&data, &[]);
    me(again.addr(), &tokens.access)
        .await
        .assert_status(200, "a token from before a restart");
    assert!(
        std::fs::read(&file).unwrap().starts_with(&secret),
        "the secret is kept across restarts"
    );
}

#[tokio::test]
async fn parley_token_prints_only_a_token_the_server_accepts() {
    let (server, data) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let token = mint_token(&data, "alice", &[]);
    let c = jwt_claims(&token);
    assert_eq!(
        (&c["sub"], &c["iss"], &c["aud"], &c["typ"]),
        (
            &json!("alice"),
            &json!("parley"),
            &json!("parley"),
            &json!("access")
        ),
        "{c}"
    );
    assert_accepted(&server, &token, "alice", "`parley token alice`").await;
    let hour = mint_token(&data, "alice", &["--ttl", "1h"]);
    let c = jwt_claims(&hour);
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        3600,
        "--ttl 1h: {c}"
    );
    me(server.addr(), &hour)
        .await
        .assert_status(200, "`parley token --ttl 1h`");
    // Another data directory has another secret.
    let (other, _) = strict(&[]);
    assert_refused(&other, &token, "a token of another deployment").await;
}

#[tokio::test]
async fn server_minted_token_expires_after_its_ttl_plus_the_leeway() {
    let (server, data) = strict(&[]);
    let token = mint_token(&data, "alice", &["--ttl", "1s"]);
    let c = jwt_claims(&token);
    let exp = c["exp"].as_u64().unwrap();
    assert_eq!(exp - c["iat"].as_u64().unwrap(), 1, "--ttl 1s: {c}");
    me(server.addr(), &token)
        .await
        .assert_status(200, "a fresh 1 s token");
    // Wait until exp + 30 s leeway has certainly passed.
    let until = exp + 32;
    let wait = until.saturating_sub(now_secs());
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_refused(&server, &token, "a server-minted token past exp + leeway").await;
}

#[tokio::test]
async fn servers_sharing_a_secret_accept_each_others_tokens() {
    let dir = scratch_dir();
    let secret = "shared-secret-for-two-nodes-0123456789-abcdef";
    let file = write_secret(&dir, secret.as_bytes());
    let file = file.to_str().unwrap();
    let data_a = fresh_data_dir();
    let data_b = fresh_data_dir();
    let data_c = fresh_data_dir();
    let a = ServerProcess::start_strict_with_data(&data_a, &["--jwt-secret-file", file]);
    let b = ServerProcess::start_strict_with_data(&data_b, &["--jwt-secret-file", file]);
    let c = SpawnedServer::start(&data_c, &[], &[("PARLEY_JWT_SECRET", secret)]);
    register_ok(a.addr(), "alice").await;
    let token = login_ok(a.addr(), "alice").await.access;
    let r = me(b.addr(), &token).await;
    r.assert_status(200, "node B accepts node A's token");
    assert_eq!(r.json()["username"], "alice");
    me(c.addr(), &token).await.assert_status(
        200,
        "PARLEY_JWT_SECRET node accepts the secret-file node's token",
    );
    let mut ws = ws_bearer(b.addr(), &token).await;
    ws_ping(&mut ws).await;
    // `parley token` with the secret in the environment, accepted by the file-configured nodes.
    let minted = mint_token_env(&data_c, "bob", &[], &[("PARLEY_JWT_SECRET", secret)]);
    me(a.addr(), &minted)
        .await
        .assert_status(200, "node A accepts a token minted with PARLEY_JWT_SECRET");
    let minted = mint_token(&data_c, "bob", &["--jwt-secret-file", file]);
    me(b.addr(), &minted)
        .await
        .assert_status(200, "`parley token --jwt-secret-file`");
    // A node on its own generated secret does not.
    let (lonely, _) = strict(&[]);
    me(lonely.addr(), &token)
        .await
        .assert_status(401, "a node with another secret");
}

// ---------------------------------------------------------------------------------------------
// raw /ws credentials and origins
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ws_accepts_an_authorization_bearer_header() {
    let (server, _) = strict(&[]);
    let token = account(server.addr(), "alice").await;
    let mut ws = ws_bearer(server.addr(), &token).await;
    let own = post_and_echo(&mut ws, "lobby", "hello").await;
    assert_eq!(own["from"], "alice", "{own}");
    assert_ne!(own.get("guest"), Some(&json!(true)), "{own}");
}

#[tokio::test]
async fn ws_accepts_an_access_token_query_parameter() {
    let (server, _) = strict(&[]);
    let token = account(server.addr(), "alice").await;
    let mut ws = ws_connect_ok(server.addr(), &format!("/ws?access_token={token}"), &[]).await;
    let own = post_and_echo(&mut ws, "lobby", "hello").await;
    assert_eq!(own["from"], "alice", "{own}");
    // The name parameter cannot override the token's identity.
    let mut ws = ws_connect_ok(
        server.addr(),
        &format!("/ws?name=mallory&access_token={token}"),
        &[],
    )
    .await;
    let own = post_and_echo(&mut ws, "lobby2", "again").await;
    assert_eq!(own["from"], "alice", "{own}");
}

#[tokio::test]
async fn ws_accepts_the_session_cookie_with_the_same_origin_only() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let login = login_cookie(server.addr(), "alice").await;
    let cookie = cookie_header(&login.cookie);
    let origin = same_origin(server.addr());
    let mut ws = ws_connect_ok(
        server.addr(),
        "/ws",
        &[("Cookie", &cookie), ("Origin", &origin)],
    )
    .await;
    let own = post_and_echo(&mut ws, "lobby", "via cookie").await;
    assert_eq!(own["from"], "alice", "{own}");
    let status = ws_status(
        server.addr(),
        "/ws",
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403, "cookie from another site");
    let status = ws_status(server.addr(), "/ws", &[("Cookie", &cookie)]).await;
    assert_eq!(
        status, 403,
        "a cookie-authenticated request must carry an allowed Origin"
    );
}

#[tokio::test]
async fn strict_server_refuses_ws_without_credentials_with_401() {
    let (server, _) = strict(&[]);
    for path in ["/ws", "/ws?name=x", "/ws?name=alice"] {
        let status = ws_status(server.addr(), path, &[]).await;
        assert_eq!(status, 401, "{path} without credentials");
    }
    let status = ws_status(server.addr(), "/ws", &[("Authorization", "Bearer garbage")]).await;
    assert_eq!(status, 401, "a bad token");
}

#[tokio::test]
async fn a_bad_token_is_401_even_when_guests_are_allowed() {
    let server = ServerProcess::start(&[]);
    let status = ws_status(
        server.addr(),
        "/ws?name=visitor",
        &[("Authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(status, 401, "a bad token is never downgraded to a guest");
    let status = ws_status(server.addr(), "/ws?access_token=not.a.token", &[]).await;
    assert_eq!(
        status, 401,
        "a bad ?access_token is never downgraded to a guest"
    );
}

#[tokio::test]
async fn cross_origin_websocket_is_403_even_with_a_valid_token() {
    let (server, _) = strict(&[]);
    let token = account(server.addr(), "alice").await;
    let auth = bearer(&token);
    for origin in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        for path in ["/ws", "/stomp"] {
            let status = ws_status(
                server.addr(),
                path,
                &[("Authorization", &auth), ("Origin", origin)],
            )
            .await;
            assert_eq!(status, 403, "{path} from Origin {origin}");
        }
    }
    // Same origin and no origin are fine.
    let origin = same_origin(server.addr());
    let mut ws = ws_connect_ok(
        server.addr(),
        "/ws",
        &[("Authorization", &auth), ("Origin", &origin)],
    )
    .await;
    ws_ping(&mut ws).await;
}

#[tokio::test]
async fn allowed_origin_option_admits_the_listed_origins() {
    let (server, data) = strict(&[
        "--allowed-origin",
        "https://good.example",
        "--allowed-origin",
        "https://a.example,https://b.example",
    ]);
    register_ok(server.addr(), "alice").await;
    let token = mint_token(&data, "alice", &[]);
    let auth = bearer(&token);
    for origin in [
        "https://good.example",
        "https://a.example",
        "https://b.example",
    ] {
        let status = ws_status(
            server.addr(),
            "/ws",
            &[("Authorization", &auth), ("Origin", origin)],
        )
        .await;
        assert_eq!(status, 101, "allowed origin {origin}");
    }
    let status = ws_status(
        server.addr(),
        "/ws",
        &[("Authorization", &auth), ("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403, "an origin not listed");
    // `*` allows any.
    let (any, any_data) = strict(&["--allowed-origin", "*"]);
    let token = mint_token(&any_data, "alice", &[]);
    let auth = bearer(&token);
    let status = ws_status(
        any.addr(),
        "/ws",
        &[("Authorization", &auth), ("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 101, "--allowed-origin *");
}

// ---------------------------------------------------------------------------------------------
// STOMP credentials
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stomp_connect_with_a_jwt_passcode() {
    let (server, _) = strict(&[]);
    let token = account(server.addr(), "alice").await;
    let mut s = Stomp::tcp_connected(server.stomp_addr(), &[("passcode", &token)], "alice").await;
    s.alive("alice").await;
    let mut s = Stomp::tcp_connected(
        server.stomp_addr(),
        &[("login", "alice"), ("passcode", &token)],
        "alice",
    )
    .await;
    s.alive("alice").await;
}

#[tokio::test]
async fn stomp_connect_with_username_and_password() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let pw = password_for("alice");
    let mut s = Stomp::tcp_connected(
        server.stomp_addr(),
        &[("login", "alice"), ("passcode", &pw)],
        "alice",
    )
    .await;
    s.alive("alice").await;
}

#[tokio::test]
async fn stomp_wrong_password_is_an_authentication_failed_error_then_close() {
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    for (login, passcode) in [("alice", "wrong-password"), ("nobody", "wrong-password")] {
        let (mut s, f) = Stomp::tcp_connect(
            server.stomp_addr(),
            &[("login", login), ("passcode", passcode)],
        )
        .await;
        assert_eq!(f.command, "ERROR", "{login}: {f:?}");
        assert!(
            f.header("message").starts_with("authentication failed"),
            "{login}: {f:?}"
        );
        assert!(s.recv().await.is_none(), "closed after the ERROR");
    }
}

#[tokio::test]
async fn stomp_connect_with_an_authorization_bearer_header() {
    let (server, _) = strict(&[]);
    let token = account(server.addr(), "alice").await;
    let auth = bearer(&token);
    let mut s =
        Stomp::tcp_connected(server.stomp_addr(), &[("Authorization", &auth)], "alice").await;
    s.alive("alice").await;
    let (_, f) = Stomp::tcp_connect(
        server.stomp_addr(),
        &[("Authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(f.command, "ERROR", "{f:?}");
}

#[tokio::test]
async fn stomp_login_that_differs_from_the_token_subject_is_refused() {
    let (server, _) = strict(&[]);
    let token = account(server.addr(), "alice").await;
    register_ok(server.addr(), "bob").await;
    let (mut s, f) = Stomp::tcp_connect(
        server.stomp_addr(),
        &[("login", "bob"), ("passcode", &token)],
    )
    .await;
    assert_eq!(f.command, "ERROR", "login bob with alice's token: {f:?}");
    assert!(s.recv().await.is_none(), "closed after the ERROR");
}

#[tokio::test]
async fn stomp_over_websocket_authenticates_on_the_upgrade_or_in_connect() {
    let (server, _) = strict(&[]);
    let token = account(server.addr(), "alice").await;
    let auth = bearer(&token);
    // Credentials on the upgrade; CONNECT carries none.
    let mut s = Stomp::ws(server.addr(), &[("Authorization", &auth)])
        .await
        .expect("upgrade with a bearer token");
    let f = s.connect(&[]).await;
    assert_eq!(
        (f.command.as_str(), f.header("user-name")),
        ("CONNECTED", "alice"),
        "{f:?}"
    );
    s.alive("alice").await;
    // ?access_token on the upgrade.
    let ws = ws_connect(
        server.addr(),
        &format!("/stomp?access_token={token}"),
        &[("Sec-WebSocket-Protocol", "v12.stomp")],
    )
    .await;
    assert!(ws.is_ok(), "?access_token on /stomp: {:?}", ws.err());
    // No credentials on the upgrade: CONNECT authenticates.
    let mut s = Stomp::ws(server.addr(), &[])
        .await
        .expect("a STOMP upgrade without credentials is allowed: CONNECT carries them");
    let f = s.connect(&[("passcode", &token)]).await;
    assert_eq!(
        (f.command.as_str(), f.header("user-name")),
        ("CONNECTED", "alice"),
        "{f:?}"
    );
    s.alive("alice").await;
    let mut s = Stomp::ws(server.addr(), &[]).await.expect("upgrade");
    let pw = password_for("alice");
    let f = s.connect(&[("login", "alice"), ("passcode", &pw)]).await;
    assert_eq!(f.command, "CONNECTED", "password over /stomp: {f:?}");
    // A bad token on the upgrade is 401 before the upgrade.
    let status = ws_status(
        server.addr(),
        "/stomp",
        &[
            ("Authorization", "Bearer not.a.token"),
            ("Sec-WebSocket-Protocol", "v12.stomp"),
        ],
    )
    .await;
    assert_eq!(status, 401, "/stomp upgrade with a bad token");
    // A bad passcode in CONNECT over WebSocket.
    let mut s = Stomp::ws(server.addr(), &[]).await.expect("upgrade");
    let f = s.connect(&[("passcode", "not.a.token")]).await;
    assert_eq!(f.command, "ERROR", "{f:?}");
    assert!(
        f.header("message").contains("authentication failed"),
        "{f:?}"
    );
}

#[tokio::test]
async fn strict_server_refuses_stomp_guests() {
    let (server, _) = strict(&[]);
    for headers in [vec![], vec![("login", "visitor")]] {
        let (mut s, f) = Stomp::tcp_connect(server.stomp_addr(), &headers).await;
        assert_eq!(f.command, "ERROR", "guest CONNECT {headers:?}: {f:?}");
        assert!(s.recv().await.is_none(), "closed after the ERROR");
    }
}

// ---------------------------------------------------------------------------------------------
// expiry on live connections
// ---------------------------------------------------------------------------------------------

/// Mints a token for `name` with `ttl`; returns it and its `exp`.
fn short_token(data: &Path, name: &str, ttl: &str) -> (String, u64) {
    let token = mint_token(data, name, &["--ttl", ttl]);
    let exp = jwt_claims(&token)["exp"].as_u64().unwrap();
    (token, exp)
}

#[tokio::test]
async fn raw_connection_is_closed_4401_token_expired_at_exp() {
    let (server, data) = strict(&[]);
    let (token, exp) = short_token(&data, "alice", "3s");
    let mut ws = ws_bearer(server.addr(), &token).await;
    ws_ping(&mut ws).await;
    let event = loop {
        match ws_next(&mut ws, Duration::from_secs(10)).await {
            WsEvent::Json(_) => continue,
            other => break other,
        }
    };
    let closed_at = now_secs();
    assert!(
        !matches!(event, WsEvent::Timeout),
        "the connection outlived its token by far (exp {exp}, now {closed_at})"
    );
    let (code, reason) = close_code(&event);
    assert_eq!(code, 4401, "close code (reason {reason:?})");
    assert!(reason.contains("expired"), "close reason {reason:?}");
    assert!(
        closed_at + 1 >= exp,
        "closed before exp: {closed_at} < {exp}"
    );
}

#[tokio::test]
async fn raw_in_band_auth_keeps_the_connection_past_the_first_exp() {
    let (server, data) = strict(&[]);
    let (first, exp) = short_token(&data, "alice", "3s");
    let mut ws = ws_bearer(server.addr(), &first).await;
    let fresh = mint_token(&data, "alice", &["--ttl", "1h"]);
    ws_send(&mut ws, &json!({"type": "auth", "access_token": fresh})).await;
    let authed = ws_recv_until(&mut ws, |v| v["type"] == "authed" || v["type"] == "error").await;
    assert_eq!(authed["type"], "authed", "{authed}");
    let expires_in = authed["expires_in"].as_u64().expect("expires_in");
    assert!((3500..=3600).contains(&expires_in), "{authed}");
    // Past the first token's exp (plus margin) the connection still works.
    let wait = (exp + 2).saturating_sub(now_secs());
    tokio::time::sleep(Duration::from_secs(wait)).await;
    ws_ping(&mut ws).await;
    let own = post_and_echo(&mut ws, "lobby", "still here").await;
    assert_eq!(own["from"], "alice");
}

#[tokio::test]
async fn raw_in_band_auth_with_another_users_or_a_bad_token_is_refused() {
    let (server, data) = strict(&[]);
    let alice = mint_token(&data, "alice", &[]);
    let bob = mint_token(&data, "bob", &[]);
    for (what, token) in [("bob's token", bob.as_str()), ("garbage", "not.a.token")] {
        let mut ws = ws_bearer(server.addr(), &alice).await;
        ws_send(&mut ws, &json!({"type": "auth", "access_token": token})).await;
        match ws_next(&mut ws, WAIT).await {
            WsEvent::Json(v) => {
                assert_eq!(v["type"], "error", "{what}: {v}");
                // Still alice.
                let own = post_and_echo(&mut ws, "lobby", what).await;
                assert_eq!(own["from"], "alice", "{what}: {own}");
            }
            WsEvent::Closed(_) => {}
            WsEvent::Timeout => panic!("{what}: no answer to auth"),
        }
    }
}

#[tokio::test]
async fn stomp_connection_gets_token_expired_error_at_exp() {
    let (server, data) = strict(&[]);
    let (token, exp) = short_token(&data, "alice", "3s");
    let mut s = Stomp::with_token(server.stomp_addr(), &token, "alice").await;
    let f = match s.next(Duration::from_secs(10)).await {
        StompEvent::Frame(f) => f,
        other => panic!("expected ERROR token expired (exp {exp}), got {other:?}"),
    };
    assert_eq!(
        (f.command.as_str(), f.header("message")),
        ("ERROR", "token expired"),
        "{f:?}"
    );
    assert!(now_secs() + 1 >= exp, "expired early");
    assert!(
        matches!(s.next(WAIT).await, StompEvent::Closed),
        "closed after the ERROR"
    );
}

#[tokio::test]
async fn stomp_in_band_auth_with_receipt_keeps_the_connection() {
    let (server, data) = strict(&[]);
    let (first, exp) = short_token(&data, "alice", "3s");
    let fresh = mint_token(&data, "alice", &["--ttl", "1h"]);
    // Header form over TCP.
    let mut tcp = Stomp::with_token(server.stomp_addr(), &first, "alice").await;
    let f = tcp
        .send_receipt(
            &[("destination", "/app/auth"), ("access-token", &fresh)],
            b"",
        )
        .await;
    assert_eq!(f.command, "RECEIPT", "SEND /app/auth: {f:?}");
    // Body form over WebSocket.
    let mut ws = Stomp::ws(server.addr(), &[]).await.expect("upgrade");
    let f = ws.connect(&[("passcode", &first)]).await;
    assert_eq!(f.command, "CONNECTED", "{f:?}");
    let f = ws
        .send_receipt(&[("destination", "/app/auth")], fresh.as_bytes())
        .await;
    assert_eq!(
        f.command, "RECEIPT",
        "SEND /app/auth with the token as body: {f:?}"
    );
    let wait = (exp + 2).saturating_sub(now_secs());
    tokio::time::sleep(Duration::from_secs(wait)).await;
    tcp.alive("alice").await;
    ws.alive("alice").await;
}

#[tokio::test]
async fn stomp_in_band_auth_for_another_user_is_refused() {
    let (server, data) = strict(&[]);
    let alice = mint_token(&data, "alice", &[]);
    let bob = mint_token(&data, "bob", &[]);
    let mut s = Stomp::with_token(server.stomp_addr(), &alice, "alice").await;
    let f = s
        .send_receipt(&[("destination", "/app/auth"), ("access-token", &bob)], b"")
        .await;
    assert_eq!(
        f.command, "ERROR",
        "a token naming bob on alice's connection: {f:?}"
    );
}

#[tokio::test]
async fn password_sessions_live_for_the_access_ttl_too() {
    let (server, _) = strict(&["--access-ttl", "3s"]);
    register_ok(server.addr(), "alice").await;
    let t = login_ok(server.addr(), "alice").await;
    assert_eq!(t.expires_in, 3, "--access-ttl 3s");
    let start = Instant::now();
    let pw = password_for("alice");
    let mut s = Stomp::tcp_connected(
        server.stomp_addr(),
        &[("login", "alice"), ("passcode", &pw)],
        "alice",
    )
    .await;
    let f = match s.next(Duration::from_secs(10)).await {
        StompEvent::Frame(f) => f,
        other => panic!("a password session must expire with the access ttl, got {other:?}"),
    };
    assert_eq!(
        (f.command.as_str(), f.header("message")),
        ("ERROR", "token expired"),
        "{f:?}"
    );
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "expired too early"
    );
}

// ---------------------------------------------------------------------------------------------
// logs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn credentials_never_appear_in_the_logs() {
    let data = fresh_data_dir();
    let mut server = SpawnedServer::start(&data, &[], &[("RUST_LOG", "debug")]);
    let addr = server.addr();
    let password = "Pa55word-that-must-not-be-logged";
    let wrong = "Wr0ng-password-that-must-not-be-logged";
    register(addr, "alice", password)
        .await
        .assert_status(201, "register");
    login(addr, "alice", wrong)
        .await
        .assert_status(401, "wrong password");
    let t = Tokens::from_response(&login(addr, "alice", password).await);
    let t2 = Tokens::from_response(&refresh(addr, &t.refresh).await);
    me(addr, &t2.access).await.assert_status(200, "me");
    let mut ws = ws_bearer(addr, &t2.access).await;
    ws_ping(&mut ws).await;
    let mut ws2 = ws_connect_ok(addr, &format!("/ws?access_token={}", t2.access), &[]).await;
    ws_ping(&mut ws2).await;
    ws_send(&mut ws, &json!({"type": "auth", "access_token": t.access})).await;
    ws_recv_until(&mut ws, |v| v["type"] == "authed" || v["type"] == "error").await;
    let mut s = Stomp::with_token(server.stomp_addr(), &t2.access, "alice").await;
    s.alive("alice").await;
    let _ = Stomp::tcp_connected(
        server.stomp_addr(),
        &[("login", "alice"), ("passcode", password)],
        "alice",
    )
    .await;
    let (_, f) = Stomp::tcp_connect(
        server.stomp_addr(),
        &[("login", "alice"), ("passcode", wrong)],
    )
    .await;
    assert_eq!(f.command, "ERROR");
    let cookie_login = http::post_json(
        addr,
        "/api/login",
        &[],
        &json!({"username": "alice", "password": password, "cookie": true}),
    )
    .await;
    let cookie = cookie_login
        .set_cookie(SESSION_COOKIE)
        .map(|c| c.value)
        .unwrap_or_default();
    let origin = same_origin(addr);
    refresh_cookie(addr, &cookie, Some(&origin)).await;
    logout(addr, &t2.refresh).await;
    drop((ws, ws2, s));
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    let log = server.log();
    let signature = |jwt: &str| jwt.rsplit('.').next().unwrap_or_default().to_string();
    let mut secrets = vec![
        ("the password", password.to_string()),
        ("a wrong password", wrong.to_string()),
        ("an access token", t.access.clone()),
        ("an access token's signature", signature(&t.access)),
        ("a refreshed access token", t2.access.clone()),
        (
            "a refreshed access token's signature",
            signature(&t2.access),
        ),
        ("a refresh token", t.refresh.clone()),
        ("a rotated refresh token", t2.refresh.clone()),
    ];
    if !cookie.is_empty() {
        secrets.push(("the session cookie", cookie.clone()));
    }
    for (what, secret) in secrets {
        assert!(
            !log.contains(&secret),
            "{what} appears in the debug log:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// guests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn guests_cannot_take_a_registered_name() {
    let server = ServerProcess::start(&[]);
    register_ok(server.addr(), "alice").await;
    let status = ws_status(server.addr(), "/ws?name=alice", &[]).await;
    assert_eq!(status, 403, "a guest named like a registered user on /ws");
    let (mut s, f) = Stomp::tcp_connect(server.stomp_addr(), &[("login", "alice")]).await;
    assert_eq!(f.command, "ERROR", "{f:?}");
    assert!(
        f.header("message")
            .contains("the name \"alice\" belongs to a registered user"),
        "{f:?}"
    );
    assert!(s.recv().await.is_none(), "closed after the ERROR");
    // Guests may not use the reserved prefix's lookalikes of accounts either, but a free name
    // is fine.
    let mut ws = ws_connect_ok(server.addr(), "/ws?name=visitor", &[]).await;
    ws_ping(&mut ws).await;
}

#[tokio::test]
async fn guest_messages_and_presence_are_marked_on_raw() {
    let server = ServerProcess::start(&[]);
    let token = account(server.addr(), "alice").await;
    let mut alice = ws_bearer(server.addr(), &token).await;
    ws_join_ok(&mut alice, "lobby").await;
    let mut guest = ws_connect_ok(server.addr(), "/ws?name=visitor", &[]).await;
    ws_join_ok(&mut guest, "lobby").await;
    let p = ws_recv_until(&mut alice, |v| v["type"] == "presence").await;
    assert_eq!(
        (&p["user"], &p["event"], &p["guest"]),
        (&json!("visitor"), &json!("join"), &json!(true)),
        "{p}"
    );
    ws_send(
        &mut guest,
        &json!({"type": "send", "room": "lobby", "body": "from a guest"}),
    )
    .await;
    let m = ws_recv_until(&mut alice, |v| v["type"] == "message").await;
    assert_eq!(
        (&m["from"], &m["guest"]),
        (&json!("visitor"), &json!(true)),
        "{m}"
    );
    ws_send(
        &mut alice,
        &json!({"type": "send", "room": "lobby", "body": "from an account"}),
    )
    .await;
    let m = ws_recv_until(&mut guest, |v| {
        v["type"] == "message" && v["from"] == "alice"
    })
    .await;
    assert_ne!(m.get("guest"), Some(&json!(true)), "{m}");
    // Presence of a registered user is not marked either.
    let mut bob = ws_bearer(server.addr(), &account(server.addr(), "bob").await).await;
    ws_join_ok(&mut bob, "lobby").await;
    let p = ws_recv_until(&mut guest, |v| {
        v["type"] == "presence" && v["user"] == "bob"
    })
    .await;
    assert_ne!(p.get("guest"), Some(&json!(true)), "{p}");
}

#[tokio::test]
async fn guest_messages_and_presence_are_marked_on_stomp() {
    let server = ServerProcess::start(&[]);
    let token = account(server.addr(), "alice").await;
    let mut alice = Stomp::with_token(server.stomp_addr(), &token, "alice").await;
    alice.subscribe_ok("m", "/topic/lobby").await;
    alice.subscribe_ok("p", "/topic/lobby.presence").await;
    let mut guest =
        Stomp::tcp_connected(server.stomp_addr(), &[("login", "visitor")], "visitor").await;
    guest.subscribe_ok("m", "/topic/lobby").await;
    let p = alice.recv().await.expect("presence");
    assert_eq!(
        (p.header("user"), p.header("event"), p.header("guest")),
        ("visitor", "join", "true"),
        "{p:?}"
    );
    let f = guest
        .send_receipt(
            &[
                ("destination", "/topic/lobby"),
                ("content-type", "text/plain"),
            ],
            b"from a guest",
        )
        .await;
    assert_eq!(f.command, "RECEIPT", "{f:?}");
    let m = alice.recv().await.expect("MESSAGE");
    assert_eq!(
        (
            m.command.as_str(),
            m.header("sender"),
            m.header("sender-guest")
        ),
        ("MESSAGE", "visitor", "true"),
        "{m:?}"
    );
    let f = alice
        .send_receipt(
            &[
                ("destination", "/topic/lobby"),
                ("content-type", "text/plain"),
                ("sender-guest", "true"),
            ],
            b"from an account",
        )
        .await;
    assert_eq!(f.command, "RECEIPT", "{f:?}");
    let m = loop {
        let m = guest.recv().await.expect("MESSAGE");
        if m.header("sender") == "alice" {
            break m;
        }
    };
    assert_ne!(
        m.header("sender-guest"),
        "true",
        "an account's message is not marked as a guest's (nor can a client forge it): {m:?}"
    );
}

#[tokio::test]
async fn a_burst_of_concurrent_guesses_is_throttled_like_a_sequence() {
    let (server, _) = strict(&["--login-failures-per-ip", "1000"]);
    register_ok(server.addr(), "alice").await;
    // All at once: each attempt counts as it starts, so no more than 5 are checked.
    let guesses = (0..40).map(|i| {
        let addr = server.addr();
        async move {
            login(addr, "alice", &format!("wrong guess {i}"))
                .await
                .status
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, throttled), (5, 35), "{statuses:?}");
}

#[tokio::test]
async fn a_new_password_ends_every_session_of_the_account() {
    let (server, data) = strict(&[]);
    register_ok(server.addr(), "alice").await;
    let stolen = login_ok(server.addr(), "alice").await;
    let out = user_passwd(&data, "alice", "a brand new password");
    assert!(out.status.success(), "{out:?}");
    refresh(server.addr(), &stolen.refresh)
        .await
        .assert_status(401, "a session from before the password change");
}

#[tokio::test]
async fn login_from_another_site_is_refused() {
    // Login CSRF: a page elsewhere must not sign the browser in as someone else.
    let (server, _) = strict(&[]);
    register_ok(server.addr(), "mallory").await;
    let r = http::post_json(
        server.addr(),
        "/api/login",
        &[("Origin", "https://evil.example")],
        &json!({"username": "mallory", "password": password_for("mallory"), "cookie": true}),
    )
    .await;
    r.assert_status(403, "login from a foreign origin");
    assert!(r.set_cookie("parley_session").is_none());
    let origin = same_origin(server.addr());
    let r = http::post_json(
        server.addr(),
        "/api/login",
        &[("Origin", origin.as_str())],
        &json!({"username": "mallory", "password": password_for("mallory")}),
    )
    .await;
    r.assert_status(200, "login from our own page");
}

#[tokio::test]
async fn registering_a_name_ends_guest_sessions_that_used_it() {
    let server = ServerProcess::start(&[]);
    let (mut guest, _) = tokio_tungstenite::connect_async(server.ws_url("/ws?name=ceo"))
        .await
        .expect("a guest may use a free name");
    register_ok(server.addr(), "ceo").await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = futures_util::StreamExt::next(&mut guest).await {
            if let Ok(tokio_tungstenite::tungstenite::Message::Close(close)) = frame {
                return close.map(|c| u16::from(c.code));
            }
        }
        None
    })
    .await
    .expect("the guest is closed at once");
    assert_eq!(closed, Some(4401));
    // A guest cannot pick a server-made guest name either.
    let status = ws_status(server.addr(), "/ws?name=guest-1", &[]).await;
    assert_eq!(status, 403);
}
