//! Who may read and post in which room: every room's privacy and members, in memory.
//!
//! Checked on every SUBSCRIBE, SEND, join and history request, some of them under the broker's
//! lock, so a check is a hash lookup under a read lock and never touches storage. Changes are
//! written to storage first and then here (write-through), so a restart reloads the same rules.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use parley_stomp::destination::Destination;
use parley_stomp::session::{Access, Identity};

use crate::store::{Role, Store};

/// The rules of one room.
#[derive(Clone, Debug, Default)]
struct RoomRules {
    private: bool,
    members: HashMap<String, Role>,
}

/// Every known room's rules. A room nobody created yet is public.
#[derive(Default)]
pub struct Acl {
    /// Written by room creation and membership changes (REST, joins); read by every check.
    rooms: RwLock<HashMap<String, RoomRules>>,
}

/// Why something is refused; the wire answers say `forbidden: <reason>`.
pub type Denied = String;

impl Acl {
    /// Loads every room and membership from storage.
    pub fn load(store: &dyn Store) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            rooms: RwLock::new(Self::read_all(store)?),
        }))
    }

    /// Replaces every room's rules with storage's (cluster mode: after missing changes); the
    /// private rooms are returned, whose subscriptions need checking again.
    pub fn reload(&self, store: &dyn Store) -> anyhow::Result<Vec<String>> {
        let rooms = Self::read_all(store)?;
        let private = rooms
            .iter()
            .filter(|(_, r)| r.private)
            .map(|(name, _)| name.clone())
            .collect();
        *self.write() = rooms;
        Ok(private)
    }

    /// Replaces one room's rules with what storage holds.
    pub fn replace_room(&self, room: &str, private: bool, members: Vec<(String, Role)>) {
        self.write().insert(
            room.to_owned(),
            RoomRules {
                private,
                members: members.into_iter().collect(),
            },
        );
    }

    fn read_all(store: &dyn Store) -> anyhow::Result<HashMap<String, RoomRules>> {
        let mut rooms: HashMap<String, RoomRules> = store
            .rooms()?
            .into_iter()
            .map(|r| {
                (
                    r.name,
                    RoomRules {
                        private: r.private,
                        members: HashMap::new(),
                    },
                )
            })
            .collect();
        for (room, user, role) in store.memberships()? {
            rooms.entry(room).or_default().members.insert(user, role);
        }
        Ok(rooms)
    }

    /// Records a new room; `false` if it was known already (nothing changes then).
    pub fn create(&self, room: &str, private: bool, owner: Option<&str>) -> bool {
        // Called for every room message: the common case, a known room, takes the read lock only.
        if self.exists(room) {
            return false;
        }
        let mut rooms = self.write();
        if rooms.contains_key(room) {
            return false;
        }
        let members = owner
            .map(|o| HashMap::from([(o.to_owned(), Role::Owner)]))
            .unwrap_or_default();
        rooms.insert(room.to_owned(), RoomRules { private, members });
        true
    }

    /// True if the room was created (by REST or by a first join).
    pub fn exists(&self, room: &str) -> bool {
        self.read().contains_key(room)
    }

    /// True for a private room.
    pub fn is_private(&self, room: &str) -> bool {
        self.read().get(room).is_some_and(|r| r.private)
    }

    /// The role of `user` in `room`, if they are a member.
    pub fn role(&self, room: &str, user: &str) -> Option<Role> {
        self.read().get(room)?.members.get(user).copied()
    }

    /// Forgets a room whose creation could not be stored.
    pub fn forget(&self, room: &str) {
        self.write().remove(room);
    }

    /// Adds a member or changes their role.
    pub fn set_member(&self, room: &str, user: &str, role: Role) {
        self.write()
            .entry(room.to_owned())
            .or_default()
            .members
            .insert(user.to_owned(), role);
    }

    /// Removes a member.
    pub fn remove_member(&self, room: &str, user: &str) {
        if let Some(rules) = self.write().get_mut(room) {
            rules.members.remove(user);
        }
    }

    /// May `who` read `room` (join, subscribe, history, presence, typing) and post in it?
    /// Public rooms: anyone; private rooms: their members, never guests.
    pub fn may_use(&self, who: &Identity, room: &str) -> Result<(), Denied> {
        let rooms = self.read();
        match rooms.get(room) {
            Some(rules) if rules.private => {
                if !who.guest && rules.members.contains_key(&*who.name) {
                    Ok(())
                } else {
                    Err(format!("room {room:?} is private and you are not a member"))
                }
            }
            _ => Ok(()),
        }
    }

    /// Every room `who` may see, `(name, private)`, by name: the public ones and the private
    /// ones they belong to. `None`: an anonymous reader (public rooms only).
    pub fn rooms_visible_to(&self, who: Option<&Identity>) -> Vec<(String, bool)> {
        let mut rooms: Vec<(String, bool)> = self
            .read()
            .iter()
            .filter(|(_, r)| {
                !r.private || who.is_some_and(|w| !w.guest && r.members.contains_key(&*w.name))
            })
            .map(|(name, r)| (name.clone(), r.private))
            .collect();
        rooms.sort();
        rooms
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, RoomRules>> {
        // Updates are single inserts/removes: a panic cannot leave a half-written entry.
        self.rooms.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, RoomRules>> {
        self.rooms.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The room a topic belongs to: `general` for `/topic/general` and `/topic/general.typing`.
pub fn room_of_topic(topic: &str) -> &str {
    topic.split('.').next().unwrap_or(topic)
}

impl Access for Acl {
    fn subscribe(&self, who: &Identity, destination: &Destination) -> Result<(), String> {
        match destination {
            Destination::Topic(topic) => self.may_use(who, room_of_topic(topic)),
            // Queues are shared work lists; user queues are the subscriber's own (the broker
            // refuses anyone else's).
            Destination::Queue(_)
            | Destination::OwnUserQueue(_)
            | Destination::UserQueue { .. } => Ok(()),
        }
    }

    fn send(&self, who: &Identity, destination: &Destination) -> Result<(), String> {
        match destination {
            Destination::Topic(topic) if topic.ends_with(".presence") => {
                Err("presence is written by the server".into())
            }
            Destination::Topic(topic) => self.may_use(who, room_of_topic(topic)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str, guest: bool) -> Identity {
        Identity {
            name: name.into(),
            guest,
        }
    }

    #[test]
    fn private_rooms_admit_members_only_and_never_guests() {
        let acl = Acl::default();
        assert!(acl.create("plans", true, Some("alice")));
        assert!(!acl.create("plans", false, None), "created once");
        acl.set_member("plans", "bob", Role::Member);
        assert!(acl.may_use(&who("alice", false), "plans").is_ok());
        assert!(acl.may_use(&who("bob", false), "plans").is_ok());
        assert!(acl.may_use(&who("carol", false), "plans").is_err());
        assert!(
            acl.may_use(&who("bob", true), "plans").is_err(),
            "a guest named bob"
        );
        acl.remove_member("plans", "bob");
        assert!(acl.may_use(&who("bob", false), "plans").is_err());
        assert!(
            acl.may_use(&who("carol", true), "lobby").is_ok(),
            "unknown rooms are public"
        );
    }

    #[test]
    fn side_channels_follow_their_room_and_presence_is_read_only() {
        let acl = Acl::default();
        acl.create("plans", true, Some("alice"));
        let carol = who("carol", false);
        for topic in ["plans", "plans.typing", "plans.presence"] {
            let d = Destination::Topic(topic.into());
            assert!(acl.subscribe(&carol, &d).is_err(), "{topic}");
            assert!(acl.subscribe(&who("alice", false), &d).is_ok(), "{topic}");
        }
        let presence = Destination::Topic("lobby.presence".into());
        assert!(acl.send(&who("alice", false), &presence).is_err());
    }
}
