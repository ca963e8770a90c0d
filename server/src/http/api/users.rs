//! People over HTTP: the directory of accounts (`GET /api/users`) with who of them is online,
//! and everyone online now (`GET /api/users/online`), on every node.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{error, respond, Api};

/// Directory entries per page unless asked.
pub const USER_PAGE: usize = 50;
/// Most directory entries per page.
pub const MAX_USER_PAGE: usize = 200;
/// Online users listed unless asked.
pub const ONLINE_PAGE: usize = 100;
/// Most online users listed.
pub const MAX_ONLINE_PAGE: usize = 500;
/// Longest `prefix` or `after`: a user name's.
const MAX_NAME: usize = 32;

/// `?prefix=&after=&limit=` of a people request.
struct Query {
    prefix: String,
    after: Option<String>,
    limit: usize,
}

impl Api<'_> {
    /// `GET /api/users?prefix=&limit=&after=`: a page of accounts by name ignoring case,
    /// `{"users":[{"name","online","away"}],"next":<cursor or null>}`.
    pub(super) async fn users(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if let Err(resp) = self.caller_or_guest(req).await {
            return resp;
        }
        let q = match query(req.uri().query(), USER_PAGE, MAX_USER_PAGE) {
            Ok(q) => q,
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        };
        let (prefix, after, limit) = (q.prefix, q.after, q.limit);
        // One more than asked tells whether another page follows.
        let names = match self
            .store(move |s| s.users_page(&prefix, after.as_deref(), limit + 1))
            .await
        {
            Ok(names) => names,
            Err(resp) => return resp,
        };
        let more = names.len() > limit;
        let names: Vec<String> = names.into_iter().take(limit).collect();
        let states = self.hub.online_states(&names).await;
        let next = more.then(|| names.last().cloned()).flatten();
        let users: Vec<Value> = names
            .iter()
            .zip(states)
            .map(|(name, state)| {
                json!({"name": name, "online": state.is_some(), "away": state == Some(true)})
            })
            .collect();
        respond(StatusCode::OK, &json!({"users": users, "next": next}))
    }

    /// `GET /api/users/online?limit=&prefix=`: who is online now on any node, by name ignoring
    /// case, `{"users":[{"name","online","guest","away"}],"total":<n>,"next":<cursor or null>}`.
    pub(super) async fn online(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if let Err(resp) = self.caller_or_guest(req).await {
            return resp;
        }
        let q = match query(req.uri().query(), ONLINE_PAGE, MAX_ONLINE_PAGE) {
            Ok(q) => q,
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        };
        let prefix = q.prefix.to_ascii_lowercase();
        let after = q.after.map(|a| a.to_ascii_lowercase());
        let matching: Vec<_> = self
            .hub
            .online_users()
            .await
            .into_iter()
            .filter(|u| {
                let key = u.name.to_ascii_lowercase();
                key.starts_with(&prefix) && after.as_ref().is_none_or(|a| key > *a)
            })
            .collect();
        let total = matching.len();
        let next = (total > q.limit)
            .then(|| matching.get(q.limit - 1).map(|u| u.name.clone()))
            .flatten();
        let users: Vec<Value> = matching
            .into_iter()
            .take(q.limit)
            .map(|u| json!({"name": u.name, "online": true, "guest": u.guest, "away": u.away}))
            .collect();
        respond(
            StatusCode::OK,
            &json!({"users": users, "total": total, "next": next}),
        )
    }
}

/// Parses `?prefix=&after=&limit=`: names need no percent-encoding, so values are taken as they
/// are and must be made of name characters (at most 32).
fn query(raw: Option<&str>, default: usize, max: usize) -> Result<Query, &'static str> {
    let mut q = Query {
        prefix: String::new(),
        after: None,
        limit: default,
    };
    let name_like = |v: &str| {
        v.len() <= MAX_NAME
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("limit", v)) => q.limit = v.parse().map_err(|_| "limit must be a number")?,
            Some(("prefix", v)) if name_like(v) => q.prefix = v.to_owned(),
            Some(("after", v)) if name_like(v) => {
                q.after = Some(v.to_owned()).filter(|a| !a.is_empty())
            }
            Some(("prefix" | "after", _)) => {
                return Err("prefix and after are 0-32 of letters, digits, _ - .")
            }
            _ => {}
        }
    }
    q.limit = q.limit.clamp(1, max);
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_bounded() {
        let q = query(Some("prefix=Al&limit=9999&after=al.x"), 50, 200).unwrap();
        assert_eq!(
            (q.prefix.as_str(), q.after.as_deref(), q.limit),
            ("Al", Some("al.x"), 200)
        );
        assert_eq!(query(None, 50, 200).unwrap().limit, 50);
        assert!(query(Some("limit=x"), 50, 200).is_err());
        assert!(query(Some("prefix=%20"), 50, 200).is_err());
        assert!(query(Some(&format!("prefix={}", "a".repeat(33))), 50, 200).is_err());
        assert_eq!(query(Some("limit=0"), 50, 200).unwrap().limit, 1);
    }
}
