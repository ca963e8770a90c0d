//! Sign-in through other sites over the API: the providers offered, finishing a first sign-in
//! with a chosen name, and the providers linked to an account (listed, unlinked).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::account::{secure_cookies, set_cookie};
use super::{error, no_content, respond, storage_error, Api};
use crate::auth::oauth::state::SIGNUP_COOKIE;
use crate::auth::oauth::SignupError;
use crate::auth::{cookie, LoginError};
use crate::store::Unlink;

#[derive(Deserialize)]
struct ChosenName {
    name: String,
}

impl Api<'_> {
    /// `GET /api/auth/providers`.
    pub(super) fn auth_providers(&self) -> Response<Full<Bytes>> {
        let providers: Vec<_> = self
            .auth
            .sign_in()
            .providers()
            .into_iter()
            .map(|p| json!({"name": p.name, "label": p.label, "kind": p.kind}))
            .collect();
        respond(StatusCode::OK, &json!({ "providers": providers }))
    }

    /// `GET /api/auth/signup`: the sign-up waiting for a name, if any.
    pub(super) fn pending_signup(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        match self
            .auth
            .sign_in()
            .pending(cookie(req.headers(), SIGNUP_COOKIE))
        {
            Ok(p) => respond(
                StatusCode::OK,
                &json!({
                    "provider": p.provider,
                    "label": self.auth.sign_in().label(&p.provider),
                    "suggested": p.suggested,
                }),
            ),
            Err(e) => error(StatusCode::NOT_FOUND, &e.to_string()),
        }
    }

    /// `POST /api/auth/signup {"name"}`: the account, signed in (refresh token in the cookie).
    pub(super) async fn complete_signup(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let secure = secure_cookies(&req);
        let pending = cookie(req.headers(), SIGNUP_COOKIE).map(str::to_owned);
        let body: ChosenName = match self.json_body(req).await {
            Ok(body) => body,
            Err(resp) => return resp,
        };
        let user = match self
            .auth
            .sign_in()
            .complete(pending.as_deref(), &body.name)
            .await
        {
            Ok((user, _)) => user,
            Err(e) => return signup_refused(e),
        };
        match self.auth.start_session(&user).await {
            Ok(tokens) => {
                // Guests who held this name lose it: from now on it means the account.
                self.hub.evict_guests_named(&user);
                let mut resp = self.tokens(tokens, true, secure);
                set_cookie(&mut resp, &signup_cookie(""), secure);
                resp
            }
            Err(LoginError::Banned(why)) => error(StatusCode::FORBIDDEN, &why),
            Err(e) => storage_error(&anyhow::anyhow!(e)),
        }
    }

    /// `GET /api/account/identities`.
    pub(super) async fn identities(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let who = match self.account(req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        match self.auth.sign_in().identities(&who.name).await {
            Ok((linked, password)) => {
                let identities: Vec<_> = linked
                    .into_iter()
                    .map(|i| {
                        json!({
                            "provider": i.provider,
                            "label": self.auth.sign_in().label(&i.provider),
                            "linked_ms": i.linked_ms,
                        })
                    })
                    .collect();
                respond(
                    StatusCode::OK,
                    &json!({"password": password, "identities": identities}),
                )
            }
            Err(e) => storage_error(&e),
        }
    }

    /// `DELETE /api/account/identities/<provider>`.
    pub(super) async fn unlink(
        &self,
        req: &Request<Incoming>,
        provider: &str,
    ) -> Response<Full<Bytes>> {
        let who = match self.account(req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        match self.auth.sign_in().unlink(&who.name, provider).await {
            Ok(Unlink::Unlinked) => no_content(),
            Ok(Unlink::NotLinked) => error(StatusCode::NOT_FOUND, "that provider is not linked"),
            Ok(Unlink::LastWay) => error(
                StatusCode::CONFLICT,
                "this is the only way to sign in to your account; link another provider \
                 or set a password first",
            ),
            Err(e) => storage_error(&e),
        }
    }
}

/// Why a name was not taken, as the API says it.
fn signup_refused(e: SignupError) -> Response<Full<Bytes>> {
    let status = match e {
        SignupError::NoPending | SignupError::Expired => StatusCode::GONE,
        SignupError::Invalid(_) => StatusCode::BAD_REQUEST,
        SignupError::Taken => StatusCode::CONFLICT,
        SignupError::Closed => StatusCode::FORBIDDEN,
        SignupError::Storage(e) => return storage_error(&e),
    };
    error(status, &e.to_string())
}

/// The pending sign-up cookie, holding `sealed` (empty: cleared).
pub(in crate::http) fn signup_cookie(sealed: &str) -> String {
    // No Max-Age while set: the sealed expiry decides, so a late callback is told "expired".
    let max_age = if sealed.is_empty() { "; Max-Age=0" } else { "" };
    format!("{SIGNUP_COOKIE}={sealed}; HttpOnly; SameSite=Lax; Path=/api/auth/signup{max_age}")
}
