//! Personal access tokens over HTTP (`/api/tokens`): an account makes, lists and revokes its
//! tokens for programs. Only a session cookie or a Parley access token may: a leaked personal
//! access token must not mint more. See `docs/auth.md` ("Tokens for programs").

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error, no_content, respond, storage_error, Api, Refused};
use crate::auth::TokenError;
use crate::store::AccessToken;

/// `POST /api/tokens`.
#[derive(Deserialize)]
struct NewToken {
    name: String,
    #[serde(default = "all")]
    scope: String,
    expires_in_days: Option<u64>,
}

fn all() -> String {
    "all".to_owned()
}

impl Api<'_> {
    /// `POST /api/tokens {"name","scope","expires_in_days"}`: `201` with the token, shown only
    /// here.
    pub(super) async fn create_token(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let user = match self.token_manager(&req).await {
            Ok(user) => user,
            Err(resp) => return resp,
        };
        let new: NewToken = match self.json_body(req).await {
            Ok(new) => new,
            Err(resp) => return resp,
        };
        let created = self
            .auth
            .create_token(&user, &new.name, &new.scope, new.expires_in_days)
            .await;
        match created {
            Ok((token, record)) => {
                let mut body = listed(&record);
                body["token"] = Value::String(token);
                respond(StatusCode::CREATED, &body)
            }
            Err(TokenError::Invalid(why)) => error(StatusCode::BAD_REQUEST, &why),
            Err(e @ TokenError::TooMany) => error(StatusCode::CONFLICT, &e.to_string()),
            Err(TokenError::Storage(e)) => storage_error(&e),
        }
    }

    /// `GET /api/tokens`: `{"tokens":[{"id","name","scope","created_ms","expires_ms"}]}`, the
    /// live ones, oldest first; never a token or its hash.
    pub(super) async fn list_tokens(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let user = match self.token_manager(req).await {
            Ok(user) => user,
            Err(resp) => return resp,
        };
        match self.auth.tokens(&user).await {
            Ok(tokens) => {
                let tokens: Vec<Value> = tokens.iter().map(listed).collect();
                respond(StatusCode::OK, &json!({ "tokens": tokens }))
            }
            Err(e) => storage_error(&e),
        }
    }

    /// `DELETE /api/tokens/<id>`: `204`; `404` unless it is the caller's. Sessions it opened end.
    pub(super) async fn revoke_token(
        &self,
        req: &Request<Incoming>,
        id: &str,
    ) -> Response<Full<Bytes>> {
        let user = match self.token_manager(req).await {
            Ok(user) => user,
            Err(resp) => return resp,
        };
        match self.auth.revoke_token(&user, id).await {
            Ok(true) => no_content(),
            Ok(false) => error(StatusCode::NOT_FOUND, "no such token"),
            Err(e) => storage_error(&e),
        }
    }

    /// The account managing its tokens: signed in by cookie or a Parley access token, never a
    /// guest, never by a personal access token.
    async fn token_manager(&self, req: &Request<Incoming>) -> Result<String, Refused> {
        match self.authenticated(req, None).await? {
            Some(who) if who.by_personal_token() => Err(error(
                StatusCode::FORBIDDEN,
                "a personal access token cannot manage tokens; sign in",
            )),
            Some(who) if !who.identity.guest => Ok(who.identity.name.to_string()),
            Some(_) => Err(error(StatusCode::FORBIDDEN, "guests have no access tokens")),
            None => Err(error(StatusCode::UNAUTHORIZED, "sign in first")),
        }
    }
}

/// A token as listed: everything but the token and its hash.
fn listed(t: &AccessToken) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "scope": t.scope,
        "created_ms": t.created_ms,
        "expires_ms": t.expires_ms,
    })
}
