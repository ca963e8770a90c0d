//! A room's people over HTTP: the member list with roles and who is online
//! (`GET /api/rooms/<room>/members?detail=1`), and leaving a room yourself.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use parley_stomp::session::Identity;
use serde_json::{json, Value};

use super::{error, no_content, respond, Api};
use crate::store::Role;

/// Most entries in a detailed member list.
pub const MAX_MEMBER_LIST: usize = 1000;

impl Api<'_> {
    /// `?detail=1`: `{"room","private","members":[{"name","role","present","online","away"}],
    /// "truncated"}` — the stored members with their roles (owner first, then admins, then
    /// members) and whoever else is in the room now (`role` null), each with their online state.
    pub(super) async fn member_details(&self, room: &str) -> Response<Full<Bytes>> {
        let acl = self.hub.acl();
        let present = self.hub.present(room).await;
        let mut stored = acl.members_of(room);
        stored.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut people: Vec<(String, Option<Role>)> =
            stored.into_iter().map(|(u, r)| (u, Some(r))).collect();
        for user in &present {
            if !people.iter().any(|(u, _)| u == user) {
                people.push((user.clone(), None));
            }
        }
        let truncated = people.len() > MAX_MEMBER_LIST;
        people.truncate(MAX_MEMBER_LIST);
        let names: Vec<String> = people.iter().map(|(u, _)| u.clone()).collect();
        let states = self.hub.online_states(&names).await;
        let members: Vec<Value> = people
            .iter()
            .zip(states)
            .map(|((name, role), state)| {
                json!({
                    "name": name,
                    "role": role.map(Role::as_str),
                    "present": present.contains(name),
                    "online": state.is_some(),
                    "away": state == Some(true),
                })
            })
            .collect();
        respond(
            StatusCode::OK,
            &json!({
                "room": room,
                "private": acl.is_private(room),
                "members": members,
                "truncated": truncated,
            }),
        )
    }

    /// `DELETE /api/rooms/<room>/members/<me>`: a member or admin leaves; the owner cannot (the
    /// room would have nobody to run it): `409`.
    pub(super) async fn leave(&self, room: &str, who: &Identity) -> Response<Full<Bytes>> {
        let acl = self.hub.acl();
        match acl.role(room, &who.name) {
            Some(Role::Member | Role::Admin) => {}
            Some(Role::Owner) => {
                return error(StatusCode::CONFLICT, "the owner cannot leave their room")
            }
            None => return error(StatusCode::NOT_FOUND, "not a member"),
        }
        let (r, u) = (room.to_owned(), who.name.to_string());
        if let Err(resp) = self.store(move |store| store.remove_member(&r, &u)).await {
            return resp;
        }
        acl.remove_member(room, &who.name);
        if acl.is_private(room) {
            self.hub.revoke_room(&who.name, room);
        }
        self.hub.acl_changed(room);
        no_content()
    }
}
