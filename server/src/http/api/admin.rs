//! The admin API (`/api/admin/…`), for operators only: who is connected, kicking sessions,
//! banning users, closing rooms, deleting messages, the slow consumers, the busiest rooms, the
//! counters the `/admin` page charts, and the audit log. Anonymous callers get 401, everyone
//! but an operator with a full-scope credential 403. Every call of a signed-in caller is logged
//! (`parley::audit`; refused ones too), and every operator's call that changes something (a
//! `POST` or `DELETE`) is also recorded in storage's audit log. See
//! `docs/operations.md#administer`.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use parley_stomp::destination::{valid_user, RoomName};
use parley_stomp::session::Identity;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error, refused, respond, storage_error, Api};
use crate::bus::AdminEvent;
use crate::clock::now_ms;
use crate::hub::{Connection, Eviction};
use crate::store::{AdminRecord, AuditEntry};

/// Longest reason of a kick, a ban or a closed room, in characters.
pub const MAX_REASON_CHARS: usize = 200;
/// Connections listed unless fewer are asked for.
const CONNECTION_PAGE: usize = 200;
/// Most connections, slow consumers, rooms, bans, operators or audit entries one answer lists.
const MAX_LISTED: usize = 5000;
/// Bans, closed rooms or operators listed unless fewer are asked for.
const RECORD_PAGE: usize = 1000;

type Answer = Response<Full<Bytes>>;

/// What one admin call did, for the audit log.
struct Done {
    answer: Answer,
    target: String,
    detail: String,
}

impl Done {
    fn new(answer: Answer, target: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            answer,
            target: target.into(),
            detail: detail.into(),
        }
    }
}

impl From<Answer> for Done {
    fn from(answer: Answer) -> Self {
        Self::new(answer, "", "")
    }
}

/// `POST kick`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Kick {
    user: Option<String>,
    session: Option<u64>,
    node: Option<String>,
    #[serde(default)]
    reason: String,
}

/// `POST bans`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBan {
    user: String,
    #[serde(default)]
    reason: String,
}

/// `POST rooms/<room>/close`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Close {
    #[serde(default)]
    reason: String,
}

impl Api<'_> {
    /// Serves `/api/admin/<path>`: checks the caller is an operator, answers, and audits.
    pub(super) async fn admin(&self, req: Request<Incoming>, path: &[&str]) -> Answer {
        let action = action_of(req.method(), path);
        // The page's poll (every few seconds) is logged only; every other call is stored too.
        let stored = action != "GET overview";
        let who = match self.caller(&req).await {
            Ok(Some(who)) => who,
            Ok(None) => return error(StatusCode::UNAUTHORIZED, "sign in first"),
            Err(answer) => return answer,
        };
        match self.hub.is_operator(&who).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(target: "parley::audit", actor = %who.name, %action,
                    peer = %self.peer, outcome = "forbidden", "admin call refused");
                return error(StatusCode::FORBIDDEN, "operators only");
            }
            Err(e) => return storage_error(&e),
        }
        let done = self.admin_call(req, path, &who).await;
        let status = done.answer.status();
        let outcome = if status.is_success() {
            "ok".to_owned()
        } else {
            status.as_u16().to_string()
        };
        tracing::info!(target: "parley::audit", actor = %who.name, %action, target = %done.target,
            detail = %done.detail, peer = %self.peer, %outcome, "admin call");
        if stored {
            let entry = AuditEntry {
                at_ms: now_ms(),
                actor: who.name.to_string(),
                action: action.clone(),
                target: done.target,
                detail: done.detail,
                node: self.hub.node().to_owned(),
                outcome,
                ..AuditEntry::default()
            };
            // The action happened: its answer stands even if its record cannot be written.
            if let Err(e) = crate::store::run(self.hub.store(), move |s| s.audit(&entry)).await {
                tracing::error!(target: "parley::audit", actor = %who.name, %action, error = %e,
                    "an admin call was carried out but could not be stored in the audit log");
            }
        }
        done.answer
    }

    /// Carries out one operator's call.
    async fn admin_call(&self, req: Request<Incoming>, path: &[&str], who: &Identity) -> Done {
        let query = req.uri().query().unwrap_or_default().to_owned();
        match (req.method().clone(), path) {
            (Method::GET, ["overview"]) => self.overview().into(),
            (Method::GET, ["connections"]) => self.connections(&query).into(),
            (Method::POST, ["kick"]) => match self.json_body::<Kick>(req).await {
                Ok(kick) => self.kick(kick),
                Err(answer) => answer.into(),
            },
            (Method::GET, ["bans"]) => self.bans(&query).await.into(),
            (Method::POST, ["bans"]) => match self.json_body::<NewBan>(req).await {
                Ok(ban) => self.ban(ban, who).await,
                Err(answer) => answer.into(),
            },
            (Method::DELETE, ["bans", user]) => self.unban(user).await,
            (Method::GET, ["operators"]) => self.operators(&query).await.into(),
            (Method::GET, ["rooms"]) => self.closed_rooms(&query).await.into(),
            (Method::POST, ["rooms", room, "close"]) => {
                let room = (*room).to_owned();
                match self.json_body_or_empty::<Close>(req).await {
                    Ok(close) => self.close_room(&room, close.reason, who).await,
                    Err(answer) => answer.into(),
                }
            }
            (Method::POST, ["rooms", room, "reopen"]) => self.reopen_room(room).await,
            (Method::DELETE, ["rooms", room, "messages", id]) => {
                self.operator_delete(who, room, id).await
            }
            (Method::GET, ["slow-consumers"]) => self.slow_consumers(&query).into(),
            (Method::GET, ["busiest-rooms"]) => self.busiest_rooms(&query).into(),
            (Method::GET, ["audit"]) => self.audit(&query).await.into(),
            (_, ["overview" | "connections" | "kick" | "bans" | "operators" | "rooms"])
            | (_, ["bans", _])
            | (_, ["rooms", _, "close" | "reopen"])
            | (_, ["rooms", _, "messages", _])
            | (_, ["slow-consumers" | "busiest-rooms" | "audit"]) => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into()
            }
            _ => error(StatusCode::NOT_FOUND, "not found").into(),
        }
    }

    /// `GET overview`: this node's counters now, for the page's charts.
    fn overview(&self) -> Answer {
        let s = &self.hub.stats;
        respond(
            StatusCode::OK,
            &json!({
                "node": self.hub.node(),
                "now_ms": now_ms(),
                "sessions": s.sessions.load(Ordering::Relaxed),
                "messages_in": s.messages_in.load(Ordering::Relaxed),
                "deliveries": s.deliveries.load(Ordering::Relaxed),
                "slow_consumers": s.slow_consumers.load(Ordering::Relaxed),
            }),
        )
    }

    /// `GET connections?user=&limit=`: this node's sessions, oldest first.
    fn connections(&self, query: &str) -> Answer {
        let user = param(query, "user");
        let limit = limit(query, CONNECTION_PAGE);
        let (list, total) = self.hub.connections(user.as_deref(), limit);
        respond(
            StatusCode::OK,
            &json!({
                "node": self.hub.node(),
                "total": total,
                "connections": list.iter().map(|c| connection(self.hub.node(), c)).collect::<Vec<_>>(),
            }),
        )
    }

    /// `POST kick {"user"}` (every session, every node) or `{"session","node"}` (one).
    fn kick(&self, kick: Kick) -> Done {
        let reason = match reason(&kick.reason) {
            Ok(r) => r,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why).into(),
        };
        let (event, target) = match (kick.user, kick.session) {
            (Some(user), None) => match valid_user(&user) {
                Some(user) => (
                    AdminEvent::KickUser {
                        user: user.clone(),
                        reason: reason.clone(),
                    },
                    user,
                ),
                None => return error(StatusCode::BAD_REQUEST, "not a user name").into(),
            },
            (None, Some(session)) => {
                let node = kick.node.unwrap_or_else(|| self.hub.node().to_owned());
                let target = format!("{node}/{session}");
                let event = AdminEvent::KickSession {
                    node,
                    session,
                    reason: reason.clone(),
                };
                (event, target)
            }
            _ => {
                let why = "give either user or session (with its node)";
                return error(StatusCode::BAD_REQUEST, why).into();
            }
        };
        let closed_here = self.hub.admin_everywhere(event);
        let answer = respond(StatusCode::OK, &json!({"closed_here": closed_here}));
        Done::new(answer, target, reason)
    }

    /// `GET bans?after=&limit=`: by name; `next` is the next page's `after`.
    async fn bans(&self, query: &str) -> Answer {
        let (after, limit) = (
            param(query, "after").unwrap_or_default(),
            limit(query, RECORD_PAGE),
        );
        match self.store(move |s| s.bans(&after, limit)).await {
            Ok(bans) => respond(StatusCode::OK, &page(&bans, limit, "bans", "user")),
            Err(answer) => answer,
        }
    }

    /// `POST bans {"user","reason"}`: refused credentials and closed sessions on every node.
    async fn ban(&self, ban: NewBan, who: &Identity) -> Done {
        let Some(user) = valid_user(&ban.user) else {
            return error(StatusCode::BAD_REQUEST, "not a user name").into();
        };
        if user.eq_ignore_ascii_case(&who.name) {
            return error(StatusCode::BAD_REQUEST, "operators cannot ban themselves").into();
        }
        let reason = match reason(&ban.reason) {
            Ok(r) => r,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why).into(),
        };
        let record = AdminRecord {
            name: user.clone(),
            reason: reason.clone(),
            by: who.name.to_string(),
            at_ms: now_ms(),
        };
        if let Err(answer) = self.store(move |s| s.ban(&record)).await {
            return Done::new(answer, user, reason);
        }
        let event = AdminEvent::Ban {
            user: user.clone(),
            reason: reason.clone(),
        };
        let closed_here = self.hub.admin_everywhere(event);
        let answer = respond(StatusCode::OK, &json!({"closed_here": closed_here}));
        Done::new(answer, user, reason)
    }

    /// `DELETE bans/<user>`.
    async fn unban(&self, user: &str) -> Done {
        let name = user.to_owned();
        let lifted = match self.store(move |s| s.unban(&name)).await {
            Ok(lifted) => lifted,
            Err(answer) => return Done::new(answer, user, ""),
        };
        if !lifted {
            return Done::new(error(StatusCode::NOT_FOUND, "not banned"), user, "");
        }
        self.hub.admin_everywhere(AdminEvent::Unban {
            user: user.to_owned(),
        });
        Done::new(super::no_content(), user, "")
    }

    /// `GET operators?after=&limit=`: by configuration, and granted in storage by name
    /// (`next` is the next page's `after`).
    async fn operators(&self, query: &str) -> Answer {
        let (after, limit) = (
            param(query, "after").unwrap_or_default(),
            limit(query, RECORD_PAGE),
        );
        match self.store(move |s| s.operators(&after, limit)).await {
            Ok(granted) => {
                let mut answer = page(&granted, limit, "granted", "user");
                answer["configured"] = json!(self.hub.configured_operators());
                respond(StatusCode::OK, &answer)
            }
            Err(answer) => answer,
        }
    }

    /// `GET rooms?after=&limit=`: the closed rooms by name; `next` is the next page's `after`.
    async fn closed_rooms(&self, query: &str) -> Answer {
        let (after, limit) = (
            param(query, "after").unwrap_or_default(),
            limit(query, RECORD_PAGE),
        );
        match self.store(move |s| s.closed_rooms(&after, limit)).await {
            Ok(rooms) => respond(StatusCode::OK, &page(&rooms, limit, "closed", "room")),
            Err(answer) => answer,
        }
    }

    /// `POST rooms/<room>/close {"reason"}`: subscriptions end and sends are refused on every
    /// node; the history stays readable.
    async fn close_room(&self, room: &str, reason: String, who: &Identity) -> Done {
        let Ok(room) = RoomName::parse(room).map(RoomName::into_string) else {
            return error(StatusCode::BAD_REQUEST, "not a room name").into();
        };
        let reason = match self::reason(&reason) {
            Ok(r) => r,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why).into(),
        };
        let record = AdminRecord {
            name: room.clone(),
            reason: reason.clone(),
            by: who.name.to_string(),
            at_ms: now_ms(),
        };
        if let Err(answer) = self.store(move |s| s.close_room(&record)).await {
            return Done::new(answer, room, reason);
        }
        let event = AdminEvent::CloseRoom {
            room: room.clone(),
            reason: reason.clone(),
        };
        let ended_here = self.hub.admin_everywhere(event);
        let answer = respond(StatusCode::OK, &json!({"ended_here": ended_here}));
        Done::new(answer, room, reason)
    }

    /// `POST rooms/<room>/reopen`.
    async fn reopen_room(&self, room: &str) -> Done {
        let name = room.to_owned();
        match self.store(move |s| s.reopen_room(&name)).await {
            Ok(true) => {}
            Ok(false) => return Done::new(error(StatusCode::NOT_FOUND, "not closed"), room, ""),
            Err(answer) => return Done::new(answer, room, ""),
        }
        self.hub.admin_everywhere(AdminEvent::ReopenRoom {
            room: room.to_owned(),
        });
        Done::new(super::no_content(), room, "")
    }

    /// `DELETE rooms/<room>/messages/<id>`: the deletion clients see for any deleted message.
    async fn operator_delete(&self, who: &Identity, room: &str, id: &str) -> Done {
        let Ok(id) = id.parse::<u64>() else {
            return Done::new(error(StatusCode::BAD_REQUEST, "bad message id"), room, id);
        };
        let answer = match self.hub.delete_as_operator(who, room, id).await {
            Ok(_) => super::no_content(),
            Err(refusal) => refused(&refusal),
        };
        Done::new(answer, room, id.to_string())
    }

    /// `GET slow-consumers?limit=`: the deepest outboxes now and the recent evictions.
    fn slow_consumers(&self, query: &str) -> Answer {
        let node = self.hub.node();
        let (deepest, evicted) = self.hub.slow_consumers(limit(query, 20));
        respond(
            StatusCode::OK,
            &json!({
                "node": node,
                "deepest": deepest.iter().map(|c| connection(node, c)).collect::<Vec<_>>(),
                "evicted": evicted.iter().map(eviction).collect::<Vec<_>>(),
            }),
        )
    }

    /// `GET busiest-rooms?limit=`: messages per room on this node lately.
    fn busiest_rooms(&self, query: &str) -> Answer {
        let (rooms, window_ms) = self.hub.busiest_rooms(limit(query, 10));
        let rooms: Vec<Value> = rooms
            .into_iter()
            .map(|(room, messages)| json!({"room": room, "messages": messages}))
            .collect();
        respond(
            StatusCode::OK,
            &json!({"node": self.hub.node(), "window_ms": window_ms, "rooms": rooms}),
        )
    }

    /// `GET audit?before=&limit=`: newest first; `next` is the next page's `before`.
    async fn audit(&self, query: &str) -> Answer {
        let before = param(query, "before").and_then(|b| b.parse().ok());
        let limit = limit(query, 100);
        let entries = match self.store(move |s| s.audit_page(before, limit)).await {
            Ok(entries) => entries,
            Err(answer) => return answer,
        };
        let next = (entries.len() == limit)
            .then(|| entries.last().map(|e| e.id))
            .flatten();
        let entries: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({"id": e.id, "at_ms": e.at_ms, "actor": e.actor, "action": e.action,
                    "target": e.target, "detail": e.detail, "node": e.node, "outcome": e.outcome})
            })
            .collect();
        respond(StatusCode::OK, &json!({"entries": entries, "next": next}))
    }
}

/// `GET connections` and the like, for the log: the method and the path without its values.
fn action_of(method: &Method, path: &[&str]) -> String {
    let shape: Vec<&str> = match path {
        ["bans", _] => vec!["bans", "<user>"],
        ["rooms", _, verb] => vec!["rooms", "<room>", verb],
        ["rooms", _, "messages", _] => vec!["rooms", "<room>", "messages", "<id>"],
        other if other.len() <= 4 => other.to_vec(),
        _ => vec!["…"],
    };
    format!("{method} {}", shape.join("/"))
}

/// A reason as given, trimmed: at most [`MAX_REASON_CHARS`] printable characters.
fn reason(reason: &str) -> Result<String, String> {
    let reason = reason.trim();
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(format!(
            "a reason is at most {MAX_REASON_CHARS} printable characters"
        ));
    }
    Ok(reason.to_owned())
}

/// Query parameter `name`, decoded.
fn param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `?limit=`, 1 to [`MAX_LISTED`], else `default`.
fn limit(query: &str, default: usize) -> usize {
    param(query, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .map_or(default, |l| l.clamp(1, MAX_LISTED))
}

fn connection(node: &str, c: &Connection) -> Value {
    json!({
        "node": node,
        "session": c.session,
        "user": c.user.as_deref(),
        "guest": c.guest,
        "protocol": c.protocol.name(),
        "transport": c.transport.name(),
        "address": c.address.to_string(),
        "since_ms": c.since_ms,
        "outbox": c.outbox,
        "outbox_bytes": c.outbox_bytes,
    })
}

fn eviction(e: &Eviction) -> Value {
    json!({
        "at_ms": e.at_ms,
        "session": e.session,
        "user": e.user.as_deref(),
        "protocol": e.protocol.name(),
        "address": e.address.to_string(),
        "reason": e.reason,
    })
}

/// A page of records under `key` (each's name under `name`), and `next`: the name to ask for
/// the page after (`?after=`), or null on the last.
fn page(list: &[AdminRecord], limit: usize, key: &str, name: &str) -> Value {
    let next = (list.len() == limit)
        .then(|| list.last().map(|r| r.name.clone()))
        .flatten();
    let mut page = json!({ "next": next });
    page[key] = json!(records(list, name));
    page
}

/// Records as JSON, the name under `name`.
fn records(records: &[AdminRecord], name: &str) -> Vec<Value> {
    records
        .iter()
        .map(|r| {
            let mut v = json!({"reason": r.reason, "by": r.by, "at_ms": r.at_ms});
            v[name] = json!(r.name);
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_name_the_call_without_its_values() {
        assert_eq!(
            action_of(&Method::DELETE, &["bans", "bob"]),
            "DELETE bans/<user>"
        );
        assert_eq!(
            action_of(&Method::DELETE, &["rooms", "x", "messages", "4"]),
            "DELETE rooms/<room>/messages/<id>"
        );
        assert_eq!(action_of(&Method::GET, &["overview"]), "GET overview");
    }

    #[test]
    fn reasons_and_limits_are_bounded() {
        assert_eq!(reason("  spam ").unwrap(), "spam");
        assert!(reason(&"x".repeat(MAX_REASON_CHARS + 1)).is_err());
        assert!(reason("a\u{7}").is_err());
        assert_eq!(limit("limit=0", 5), 1);
        assert_eq!(limit("limit=999999", 5), MAX_LISTED);
        assert_eq!(limit("", 5), 5);
        assert_eq!(param("user=a%20b", "user").as_deref(), Some("a b"));
    }
}
