//! Accounts and tokens over HTTP: registration, login (tokens in the body or the session
//! cookie), refresh-token rotation and logout.

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::IpAddr;

use super::{busy, error, no_content, respond, storage_error};
use super::{Api, Refused};
use crate::auth::{
    session_cookie, LoginError, RefreshError, RegisterError, TokenPair, SESSION_COOKIE,
};
use crate::http::tls::OverTls;

/// A username and password, as registration and login take them.
#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
    #[serde(default)]
    cookie: bool,
}

#[derive(Deserialize, Default)]
struct RefreshBody {
    refresh_token: Option<String>,
}

impl Api<'_> {
    pub(super) async fn register(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let creds: LoginBody = match self.json_body(req).await {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        match self
            .auth
            .register(&creds.username, &creds.password, self.peer)
            .await
        {
            Ok(()) => {
                // Guests who held this name lose it: from now on it means the account.
                self.hub.evict_guests_named(&creds.username);
                respond(StatusCode::CREATED, &json!({"username": creds.username}))
            }
            Err(e @ RegisterError::Invalid(_)) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            Err(e @ RegisterError::Taken) => error(StatusCode::CONFLICT, &e.to_string()),
            Err(e @ RegisterError::Closed) => error(StatusCode::FORBIDDEN, &e.to_string()),
            Err(e @ RegisterError::Throttled(wait)) => throttled(&e.to_string(), wait),
            Err(RegisterError::Storage(e)) => storage_error(&e),
            Err(e @ RegisterError::Busy(_)) => busy(&e.to_string()),
        }
    }

    pub(super) async fn login(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let secure = secure_cookies(&req);
        let creds: LoginBody = match self.json_body(req).await {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        match self
            .auth
            .login(&creds.username, &creds.password, self.peer)
            .await
        {
            Ok(pair) => self.tokens(pair, creds.cookie, secure),
            Err(LoginError::Invalid) => {
                error(StatusCode::UNAUTHORIZED, "invalid username or password")
            }
            Err(e @ LoginError::Throttled(wait)) => throttled(&e.to_string(), wait),
            Err(LoginError::Storage(e)) => storage_error(&e),
            Err(e @ LoginError::Busy(_)) => busy(&e.to_string()),
            Err(LoginError::Banned(why)) => error(StatusCode::FORBIDDEN, &why),
        }
    }

    pub(super) async fn refresh(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (token, from_cookie, secure) = match self.refresh_token(req).await {
            Ok(found) => found,
            Err(resp) => return resp,
        };
        match self.auth.refresh(&token).await {
            Ok(pair) => self.tokens(pair, from_cookie, secure),
            Err(e @ (RefreshError::Invalid | RefreshError::Reused)) => {
                let mut resp = error(StatusCode::UNAUTHORIZED, &e.to_string());
                if from_cookie {
                    clear_cookie(&mut resp, secure);
                }
                resp
            }
            Err(RefreshError::Storage(e)) => storage_error(&e),
            // The cookie stays: its token was not used up, and works again once the ban is
            // lifted.
            Err(RefreshError::Banned(why)) => error(StatusCode::FORBIDDEN, &why),
        }
    }

    pub(super) async fn logout(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (token, from_cookie, secure) = match self.refresh_token(req).await {
            Ok(found) => found,
            Err(resp) => return resp,
        };
        if let Err(e) = self.auth.logout(&token).await {
            return storage_error(&e);
        }
        let mut resp = no_content();
        if from_cookie {
            clear_cookie(&mut resp, secure);
        }
        resp
    }

    /// The refresh token of a refresh or logout: from the body, else the cookie (which must
    /// come with an allowed `Origin`: CSRF). Also says whether it came from the cookie, and
    /// whether cookies are `Secure` here.
    async fn refresh_token(&self, req: Request<Incoming>) -> Result<(String, bool, bool), Refused> {
        let secure = secure_cookies(&req);
        let cookie = session_cookie(req.headers()).map(str::to_owned);
        let csrf_ok = self.cookie_origin_ok(req.headers(), true);
        let body: RefreshBody = self.json_body_or_empty(req).await?;
        if let Some(token) = body.refresh_token.filter(|t| !t.is_empty()) {
            return Ok((token, false, secure));
        }
        match cookie {
            Some(_) if !csrf_ok => Err(error(
                StatusCode::FORBIDDEN,
                "cookie requests need an allowed Origin",
            )),
            Some(token) => Ok((token, true, secure)),
            None => Err(error(StatusCode::UNAUTHORIZED, "no refresh token")),
        }
    }

    /// A token pair as JSON; with `cookie`, the refresh token goes into the session cookie.
    pub(super) fn tokens(
        &self,
        pair: TokenPair,
        cookie: bool,
        secure: bool,
    ) -> Response<Full<Bytes>> {
        let mut body = json!({
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in,
        });
        if !cookie {
            body["refresh_token"] = Value::from(pair.refresh_token.as_str());
        }
        let mut resp = respond(StatusCode::OK, &body);
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        if cookie {
            let max_age = self.auth.settings().refresh_ttl.as_secs();
            set_session_cookie(&mut resp, &pair.refresh_token, max_age, secure);
        }
        resp
    }
}

/// Puts `refresh_token` in the session cookie.
pub(in crate::http) fn set_session_cookie<B>(
    resp: &mut Response<B>,
    refresh_token: &str,
    max_age: u64,
    secure: bool,
) {
    set_cookie(
        resp,
        &format!(
            "{SESSION_COOKIE}={refresh_token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
        ),
        secure,
    );
}

/// Appends a `Set-Cookie`, `Secure` when `secure`.
pub(in crate::http) fn set_cookie<B>(resp: &mut Response<B>, cookie: &str, secure: bool) {
    let value = format!("{cookie}{}", if secure { "; Secure" } else { "" });
    if let Ok(value) = header::HeaderValue::from_str(&value) {
        resp.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// `429` with `Retry-After` in whole seconds (rounded up, at least 1).
fn throttled(why: &str, wait: std::time::Duration) -> Response<Full<Bytes>> {
    let mut resp = error(StatusCode::TOO_MANY_REQUESTS, why);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
    resp
}

/// Cookies are `Secure` unless the page is plain http on this machine (development): always
/// when the request came over TLS. `X-Forwarded-Proto: https` counts from anyone, as it can
/// only add `Secure`.
pub(in crate::http) fn secure_cookies<B>(req: &Request<B>) -> bool {
    req.extensions().get::<OverTls>().is_some() || secure_by_headers(req.headers())
}

fn secure_by_headers(headers: &http::HeaderMap) -> bool {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let hostname = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let loopback = hostname == "localhost"
        || hostname
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    https || !loopback
}

fn clear_cookie(resp: &mut Response<Full<Bytes>>, secure: bool) {
    set_cookie(
        resp,
        &format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        secure,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn cookies_drop_secure_only_for_plain_http_on_this_machine() {
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "127.0.0.1",
        ] {
            assert!(!secure_by_headers(&headers(&[("host", host)])), "{host}");
        }
        assert!(secure_by_headers(&headers(&[("host", "chat.example")])));
        assert!(secure_by_headers(&headers(&[("host", "10.0.0.5:8080")])));
        assert!(secure_by_headers(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-proto", "https")
        ])));
        assert!(secure_by_headers(&headers(&[])), "no Host: stay safe");
        let mut over_tls = Request::new(());
        over_tls
            .headers_mut()
            .insert(header::HOST, "127.0.0.1:8443".parse().unwrap());
        assert!(!secure_cookies(&over_tls));
        over_tls.extensions_mut().insert(OverTls);
        assert!(secure_cookies(&over_tls), "TLS on this machine too");
    }
}
