//! The browser's side of signing in with another site: `/auth/<provider>/login` sends the
//! person to the provider with a state cookie, `/auth/<provider>/callback` finishes and sends
//! them back into the page — signed in, linked, asked for a name, or told in words what went
//! wrong.

use std::net::IpAddr;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::api::{secure_cookies, set_cookie, set_session_cookie, signup_cookie};
use super::response::Body;
use super::tls::OverTls;
use crate::auth::oauth::state::STATE_COOKIE;
use crate::auth::oauth::{Failure, Finished};
use crate::auth::{cookie, session_cookie, Auth, LoginError};
use crate::hub::Hub;

/// Serves `/auth/<provider>/login` and `/auth/<provider>/callback`; `None` for other paths.
pub(super) async fn handle(
    auth: &Auth,
    hub: &Hub,
    req: &Request<Incoming>,
    client: IpAddr,
) -> Option<Response<Body>> {
    let rest = req.uri().path().strip_prefix("/auth/")?;
    let (provider, step) = rest.split_once('/')?;
    let query = req.uri().query().unwrap_or("");
    let secure = secure_cookies(req);
    let resp = match step {
        "login" => login(auth, req, provider, query, secure).await,
        "callback" => {
            let state = cookie(req.headers(), STATE_COOKIE);
            let finished = auth.sign_in().finish(provider, query, state, client).await;
            let mut resp = callback(auth, hub, finished, secure).await;
            // Whatever happened, this state is spent.
            set_cookie(&mut resp, &state_cookie(""), secure);
            resp
        }
        _ => return None,
    };
    Some(no_store(resp))
}

async fn login(
    auth: &Auth,
    req: &Request<Incoming>,
    provider: &str,
    query: &str,
    secure: bool,
) -> Response<Body> {
    let param = |key: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let link_user = if param("link").is_some_and(|v| v == "1") {
        let user = match session_cookie(req.headers()) {
            Some(token) => auth.cookie_user(token).await.ok().flatten(),
            None => None,
        };
        match user {
            Some(user) => Some(user),
            None => return failure(&Failure::SignInFirst),
        }
    } else {
        None
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let origin = format!(
        "{}://{host}",
        if secure_scheme(req) { "https" } else { "http" }
    );
    let return_to = param("return_to");
    match auth
        .sign_in()
        .start(provider, &origin, return_to.as_deref(), link_user)
        .await
    {
        Ok(started) => {
            let mut resp = redirect(&started.location);
            set_cookie(&mut resp, &state_cookie(&started.cookie), secure);
            resp
        }
        Err(e) => failure(&e),
    }
}

async fn callback(
    auth: &Auth,
    hub: &Hub,
    finished: Result<Finished, Failure>,
    secure: bool,
) -> Response<Body> {
    match finished {
        Ok(Finished::SignedIn {
            user,
            return_to,
            created,
        }) => {
            let tokens = match auth.start_session(&user).await {
                Ok(tokens) => tokens,
                Err(LoginError::Banned(why)) => {
                    tracing::info!(%user, "a sign-in through a provider refused: {why}");
                    return failure(&Failure::Banned(why));
                }
                Err(_) => return failure(&Failure::Storage),
            };
            if created {
                // Guests who held this name lose it: from now on it means the account.
                hub.evict_guests_named(&user);
            }
            tracing::info!(%user, created, "signed in through a provider");
            let mut resp = redirect(&return_to);
            let max_age = auth.settings().refresh_ttl.as_secs();
            set_session_cookie(&mut resp, &tokens.refresh_token, max_age, secure);
            resp
        }
        Ok(Finished::Linked { return_to }) => redirect(&return_to),
        Ok(Finished::ChooseName { cookie }) => {
            let mut resp = redirect("/?signup");
            set_cookie(&mut resp, &signup_cookie(&cookie), secure);
            resp
        }
        Err(e) => {
            tracing::info!(reason = %e.words(), "a sign-in through a provider failed");
            failure(&e)
        }
    }
}

/// The login state cookie, holding `sealed` (empty: cleared). `Lax`: it must come back with
/// the provider's redirect, a top-level navigation from another site.
fn state_cookie(sealed: &str) -> String {
    // No Max-Age while set: the sealed expiry decides, so a late callback is told "expired".
    let max_age = if sealed.is_empty() { "; Max-Age=0" } else { "" };
    format!("{STATE_COOKIE}={sealed}; HttpOnly; SameSite=Lax; Path=/auth/{max_age}")
}

/// Served over TLS, or behind a proxy that says the page is https.
fn secure_scheme(req: &Request<Incoming>) -> bool {
    req.extensions().get::<OverTls>().is_some()
        || req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = header::HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, value);
    }
    resp
}

/// A page saying what went wrong, with a way back.
fn failure(e: &Failure) -> Response<Body> {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign-in failed · Parley</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/style.css\">\
         </head><body class=\"auth-failure\"><main><h1>Sign-in did not work</h1>\
         <p id=\"auth-error\">{}</p><p><a href=\"/\">Back to Parley</a></p></main></body></html>\n",
        escape(&e.words())
    );
    let mut resp = Response::new(Body::from(page));
    *resp.status_mut() = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

fn no_store(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}
