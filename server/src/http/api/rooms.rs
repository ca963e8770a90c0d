//! Rooms over HTTP: listing and creating them, their members, and their history.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use parley_stomp::destination::RoomName;
use parley_stomp::session::Identity;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error, no_content, respond, storage_error, Api, Refused};
use crate::acl::{RoomQuery, MAX_ROOM_PAGE, ROOM_PAGE};
use crate::endpoints::raw::wire::MessageJson;
use crate::hub::{DEFAULT_PAGE, MAX_PAGE};
use crate::store::{Role, Room};

impl Api<'_> {
    /// A page of the rooms the caller may see, public ones and private ones they belong to:
    /// `?limit=&after=&prefix=`, answered `{"rooms":[…],"next":<cursor or null>}`; an account's
    /// entries carry its read state (`last_read`, `unread`, `mentions`).
    pub(super) async fn list_rooms(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let who = match self.caller_or_guest(req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        let query = match room_query(req.uri().query()) {
            Ok(query) => query,
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        };
        // From memory: a room created by a join a moment ago is listed before it is stored.
        let (rooms, next) = self.hub.acl().rooms_visible_to(who.as_ref(), &query);
        let mut rooms: Vec<Value> = rooms
            .into_iter()
            .map(|(name, private)| json!({"name": name, "private": private}))
            .collect();
        self.with_counts(who.as_ref(), &mut rooms).await;
        respond(StatusCode::OK, &json!({"rooms": rooms, "next": next}))
    }

    /// Who is in `room` (on every node); with `?detail=1` members, roles and online states.
    pub(super) async fn members(
        &self,
        req: &Request<Incoming>,
        room: &str,
    ) -> Response<Full<Bytes>> {
        if let Err(resp) = self.reader(req, room).await {
            return resp;
        }
        if req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "detail=1"))
        {
            return self.member_details(room).await;
        }
        respond(StatusCode::OK, &json!(self.hub.present(room).await))
    }

    /// A page of `room`'s history: `?before=<id>&limit=<n>`.
    pub(super) async fn messages(
        &self,
        req: &Request<Incoming>,
        room: &str,
    ) -> Response<Full<Bytes>> {
        if let Err(resp) = self.reader(req, room).await {
            return resp;
        }
        let (before, limit) = match page(req.uri().query()) {
            Ok(page) => page,
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        };
        match self.hub.history(room.to_owned(), before, limit).await {
            Ok(messages) => {
                let messages: Vec<MessageJson<'_>> =
                    messages.iter().map(MessageJson::from).collect();
                respond(StatusCode::OK, &json!({"room": room, "messages": messages}))
            }
            Err(e) => storage_error(&e),
        }
    }

    /// Checks that the caller may read `room`: members of private rooms; anyone signed in for
    /// public ones (and anyone at all when guests are allowed).
    async fn reader(&self, req: &Request<Incoming>, room: &str) -> Result<(), Refused> {
        if RoomName::parse(room).is_err() {
            return Err(error(StatusCode::BAD_REQUEST, "invalid room name"));
        }
        let who = self
            .caller_or_guest(req)
            .await?
            .unwrap_or(Identity::new("", true));
        self.hub
            .acl()
            .may_use(&who, room)
            .map_err(|why| error(StatusCode::FORBIDDEN, &why))
    }

    pub(super) async fn create_room(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        #[derive(Deserialize)]
        struct NewRoom {
            name: String,
            #[serde(default)]
            private: bool,
        }
        let who = match self.account(&req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        let new: NewRoom = match self.json_body(req).await {
            Ok(new) => new,
            Err(resp) => return resp,
        };
        if let Err(invalid) = RoomName::parse(&new.name) {
            return error(StatusCode::BAD_REQUEST, &invalid.to_string());
        }
        let room = Room {
            name: new.name,
            private: new.private,
            owner: Some(who.name.to_string()),
        };
        // The name is taken in memory first, under the broker's lock, so no join can create it
        // meanwhile and nobody who is not a member keeps a subscription made while it was free.
        match self.hub.claim_room(&room.name, room.private, &who) {
            Ok(true) => {}
            Ok(false) => return error(StatusCode::CONFLICT, "room exists"),
            Err(refused) => return error(StatusCode::FORBIDDEN, &refused.to_string()),
        }
        let answer = json!({"name": room.name, "private": room.private, "owner": &*who.name});
        let stored = room.clone();
        match self.store(move |store| store.create_room(&stored)).await {
            Ok(true) => {
                self.hub.acl_changed(&room.name);
                respond(StatusCode::CREATED, &answer)
            }
            // Stored earlier without being known here (a message sent before any join).
            Ok(false) => {
                self.hub.acl().forget(&room.name);
                error(StatusCode::CONFLICT, "room exists")
            }
            Err(resp) => {
                self.hub.acl().forget(&room.name);
                resp
            }
        }
    }

    pub(super) async fn add_member(
        &self,
        req: Request<Incoming>,
        room: &str,
    ) -> Response<Full<Bytes>> {
        #[derive(Deserialize)]
        struct NewMember {
            user: String,
            role: Option<String>,
        }
        let who = match self.account(&req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        if let Err(why) = who.scope.writes(Some(room)) {
            return error(StatusCode::FORBIDDEN, &why);
        }
        if self.hub.acl().role(room, &who.name) != Some(Role::Owner) {
            return error(StatusCode::FORBIDDEN, "only the room's owner adds members");
        }
        let new: NewMember = match self.json_body(req).await {
            Ok(new) => new,
            Err(resp) => return resp,
        };
        let role = match new.role.as_deref().map(Role::parse) {
            None => Role::Member,
            Some(Some(role @ (Role::Member | Role::Admin))) => role,
            Some(_) => return error(StatusCode::BAD_REQUEST, "role is member or admin"),
        };
        if new.user == *who.name {
            // An owner demoting themselves would leave the room with nobody to run it.
            return error(StatusCode::BAD_REQUEST, "the owner's role cannot change");
        }
        match self.auth.is_registered(&new.user).await {
            Ok(true) => {}
            Ok(false) => return error(StatusCode::NOT_FOUND, "no such user"),
            Err(e) => return storage_error(&e),
        }
        let (r, u) = (room.to_owned(), new.user.clone());
        if let Err(resp) = self
            .store(move |store| store.set_member(&r, &u, role))
            .await
        {
            return resp;
        }
        self.hub.acl().set_member(room, &new.user, role);
        self.hub.acl_changed(room);
        no_content()
    }

    pub(super) async fn remove_member(
        &self,
        req: &Request<Incoming>,
        room: &str,
        user: &str,
    ) -> Response<Full<Bytes>> {
        let who = match self.account(req).await {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        if let Err(why) = who.scope.writes(Some(room)) {
            return error(StatusCode::FORBIDDEN, &why);
        }
        if user == &*who.name {
            return self.leave(room, &who).await;
        }
        let acl = self.hub.acl();
        let (mine, theirs) = (acl.role(room, &who.name), acl.role(room, user));
        // Owners remove anyone but themselves; admins remove plain members.
        let allowed = match (mine, theirs) {
            (Some(Role::Owner), Some(Role::Member | Role::Admin)) => true,
            (Some(Role::Admin), Some(Role::Member)) => true,
            (Some(Role::Owner | Role::Admin), None) => {
                return error(StatusCode::NOT_FOUND, "not a member")
            }
            _ => false,
        };
        if !allowed {
            return error(StatusCode::FORBIDDEN, "you may not remove this member");
        }
        let (r, u) = (room.to_owned(), user.to_owned());
        if let Err(resp) = self.store(move |store| store.remove_member(&r, &u)).await {
            return resp;
        }
        acl.remove_member(room, user);
        if acl.is_private(room) {
            self.hub.revoke_room(user, room);
        }
        self.hub.acl_changed(room);
        no_content()
    }
}

/// `?limit=<n>&after=<name>&prefix=<start>` of a room list request. Room names need no
/// percent-encoding, so the values are taken as they are.
fn room_query(query: Option<&str>) -> Result<RoomQuery, &'static str> {
    let mut q = RoomQuery {
        limit: ROOM_PAGE,
        ..RoomQuery::default()
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("limit", v)) => {
                q.limit = v.parse().map_err(|_| "limit must be a number")?;
            }
            Some(("after", v)) if !v.is_empty() => q.after = Some(v.to_owned()),
            Some(("prefix", v)) => q.prefix = v.to_owned(),
            _ => {}
        }
    }
    q.limit = q.limit.clamp(1, MAX_ROOM_PAGE);
    Ok(q)
}

/// `?before=<id>&limit=<n>` of a history request.
pub(super) fn page(query: Option<&str>) -> Result<(Option<u64>, usize), &'static str> {
    let (mut before, mut limit) = (None, DEFAULT_PAGE);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("before", v)) => {
                before = Some(v.parse().map_err(|_| "before must be a message id")?)
            }
            Some(("limit", v)) => limit = v.parse().map_err(|_| "limit must be a number")?,
            _ => {}
        }
    }
    Ok((before, limit.clamp(1, MAX_PAGE)))
}
