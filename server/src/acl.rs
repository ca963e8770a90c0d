//! Who may read, post in and create which room: every room's privacy and members, in memory,
//! and how many rooms each account created.
//!
//! Checked on every SUBSCRIBE, SEND, join and history request, some of them under the broker's
//! lock, so a check is a lookup under a read lock and never touches storage. Changes are
//! written to storage first and then here (write-through), so a restart reloads the same rules.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};

use parley_stomp::destination::RoomName;
use parley_stomp::session::Identity;

use crate::store::{Role, Store};

/// Who may create rooms. Passed in at start; see docs/security.md ("Rooms").
#[derive(Clone, Debug)]
pub struct RoomLimits {
    /// Rooms one account may create (`--max-rooms-per-account`); 0: no limit.
    pub max_per_account: usize,
    /// Guests may create public rooms, owned by nobody, as accounts do
    /// (`--guests-create-rooms`): for load tests and trusted networks.
    pub guests_create: bool,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self {
            max_per_account: 50,
            guests_create: false,
        }
    }
}

/// Why a room may not be used or created; each maps to a wire answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A private room, and the caller is not a member.
    Private(String),
    /// No such room, and the caller (a guest) may not create it.
    NoSuchRoom(String),
    /// The account created its quota of rooms already.
    Quota(usize),
    /// The credential's scope does not allow it (a read-only or one-room access token).
    Scope(String),
    /// An operator closed the room (its history stays readable): the room and why.
    Closed(String, String),
}

impl Refused {
    /// The raw protocol's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Private(_) | Self::Scope(_) => "forbidden",
            Self::NoSuchRoom(_) => "no_such_room",
            Self::Quota(_) => "room_quota",
            Self::Closed(..) => "room_closed",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Private(room) => write!(f, "room {room:?} is private and you are not a member"),
            Self::NoSuchRoom(room) => {
                write!(f, "no room {room:?}: guests cannot create rooms")
            }
            Self::Quota(max) => write!(f, "room quota reached: an account may create {max} rooms"),
            Self::Scope(why) => f.write_str(why),
            Self::Closed(room, why) => write!(f, "room {room:?} is closed: {why}"),
        }
    }
}

/// The rules of one room.
#[derive(Clone, Debug, Default)]
struct RoomRules {
    private: bool,
    members: HashMap<String, Role>,
    /// The account it counts against: its owner, or (cluster mode) the account that created it
    /// here while storage decides who owns it.
    creator: Option<String>,
}

/// What the lock guards: the rules, and each account's count of rooms created.
#[derive(Default)]
struct Rooms {
    /// By name, so the room list pages in order.
    rules: BTreeMap<String, RoomRules>,
    created: HashMap<String, usize>,
}

impl Rooms {
    /// Adds or replaces a room's rules, keeping the creators' counts.
    fn put(&mut self, room: String, rules: RoomRules) {
        if let Some(creator) = &rules.creator {
            *self.created.entry(creator.clone()).or_default() += 1;
        }
        if let Some(old) = self.rules.insert(room, rules) {
            self.uncount(old.creator);
        }
    }

    fn remove(&mut self, room: &str) {
        if let Some(old) = self.rules.remove(room) {
            self.uncount(old.creator);
        }
    }

    fn uncount(&mut self, creator: Option<String>) {
        if let Some(creator) = creator {
            if let Some(n) = self.created.get_mut(&creator) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.created.remove(&creator);
                }
            }
        }
    }
}

/// Rooms on a page of the room list unless the client asks for fewer.
pub const ROOM_PAGE: usize = 100;
/// Most rooms on one page, whatever the client asks.
pub const MAX_ROOM_PAGE: usize = 500;

/// Which page of the room list: names after `after` (exclusive) starting with `prefix`, at most
/// `limit` of them.
#[derive(Clone, Debug, Default)]
pub struct RoomQuery {
    /// The `next` cursor of the previous page: the last name it held.
    pub after: Option<String>,
    /// Only names starting with this.
    pub prefix: String,
    /// Most rooms on the page.
    pub limit: usize,
}

/// One page of the room list: `(name, private)` by name, and the cursor of the next page.
pub type RoomPage = (Vec<(String, bool)>, Option<String>);

/// Every known room's rules. A room nobody created yet is public.
#[derive(Default)]
pub struct Acl {
    /// Written by room creation and membership changes (REST, joins); read by every check.
    rooms: RwLock<Rooms>,
    limits: RoomLimits,
}

/// Why something is refused; the wire answers say `forbidden: <reason>`.
pub type Denied = String;

impl Acl {
    /// Loads every room and membership from storage.
    pub fn load(store: &dyn Store, limits: RoomLimits) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            rooms: RwLock::new(Self::read_all(store)?),
            limits,
        }))
    }

    /// Who may create rooms.
    pub fn limits(&self) -> &RoomLimits {
        &self.limits
    }

    /// Replaces every room's rules with storage's (cluster mode: after missing changes); the
    /// private rooms are returned, whose subscriptions need checking again.
    pub fn reload(&self, store: &dyn Store) -> anyhow::Result<Vec<String>> {
        let rooms = Self::read_all(store)?;
        let private = rooms
            .rules
            .iter()
            .filter(|(_, r)| r.private)
            .map(|(name, _)| name.clone())
            .collect();
        *self.write() = rooms;
        Ok(private)
    }

    /// Replaces one room's rules with what storage holds.
    pub fn replace_room(&self, room: &str, private: bool, members: Vec<(String, Role)>) {
        let members: HashMap<String, Role> = members.into_iter().collect();
        let creator = owner_of(&members);
        self.write().put(
            room.to_owned(),
            RoomRules {
                private,
                members,
                creator,
            },
        );
    }

    fn read_all(store: &dyn Store) -> anyhow::Result<Rooms> {
        let mut rules: BTreeMap<String, RoomRules> = store
            .rooms()?
            .into_iter()
            // Conversations (`dm:a:b`) are stored like rooms but are not rooms.
            .filter(|r| RoomName::parse(&r.name).is_ok())
            .map(|r| {
                let rules = RoomRules {
                    private: r.private,
                    ..RoomRules::default()
                };
                (r.name, rules)
            })
            .collect();
        for (room, user, role) in store.memberships()? {
            rules.entry(room).or_default().members.insert(user, role);
        }
        let mut rooms = Rooms::default();
        for (name, mut room) in rules {
            room.creator = owner_of(&room.members);
            rooms.put(name, room);
        }
        Ok(rooms)
    }

    /// Records a new room; `false` if it was known already (nothing changes then). No rule is
    /// checked: for rooms that exist elsewhere (storage, another node).
    pub fn create(&self, room: &str, private: bool, owner: Option<&str>) -> bool {
        // Called for every room message: the common case, a known room, takes the read lock only.
        if self.exists(room) {
            return false;
        }
        let mut rooms = self.write();
        if rooms.rules.contains_key(room) {
            return false;
        }
        rooms.put(room.to_owned(), new_room(private, owner, owner));
        true
    }

    /// Creates `room` for `who` if the rules let them: never a guest (unless
    /// [`RoomLimits::guests_create`]), an account within its quota. `Ok(false)` if it exists.
    /// The account owns it at once, or with `owner_now` false (cluster mode) only counts it
    /// until storage says who owns it.
    pub fn create_for(
        &self,
        who: &Identity,
        room: &str,
        private: bool,
        owner_now: bool,
    ) -> Result<bool, Refused> {
        if self.exists(room) {
            return Ok(false);
        }
        who.scope.creates_rooms().map_err(Refused::Scope)?;
        let mut rooms = self.write();
        if rooms.rules.contains_key(room) {
            return Ok(false);
        }
        if who.guest {
            if !self.limits.guests_create || private {
                return Err(Refused::NoSuchRoom(room.to_owned()));
            }
            rooms.put(room.to_owned(), new_room(false, None, None));
            return Ok(true);
        }
        let max = self.limits.max_per_account;
        if max > 0 && rooms.created.get(&*who.name).copied().unwrap_or(0) >= max {
            return Err(Refused::Quota(max));
        }
        let name = Some(&*who.name);
        let owner = if owner_now { name } else { None };
        rooms.put(room.to_owned(), new_room(private, owner, name));
        Ok(true)
    }

    /// Lets `who` use `room` (join, subscribe, send), creating it for them first if it does
    /// not exist and [`Acl::create_for`] allows. `Ok(true)` when it was created.
    pub fn enter(&self, who: &Identity, room: &str, owner_now: bool) -> Result<bool, Refused> {
        // Called for every STOMP SEND to a room: a known room costs one read lock.
        who.scope.reads(Some(room)).map_err(Refused::Scope)?;
        if let Some(rules) = self.read().rules.get(room) {
            return if admits(rules, who) {
                Ok(false)
            } else {
                Err(Refused::Private(room.to_owned()))
            };
        }
        self.create_for(who, room, false, owner_now)
    }

    /// Would [`Acl::enter`] let `who` use every one of `rooms`, creating the unknown ones (within
    /// the quota all together)? Creates nothing: a SEND creates its room only once accepted.
    pub fn may_enter(&self, who: &Identity, rooms: &[&str]) -> Result<(), Refused> {
        let known = self.read();
        let mut new: Vec<&str> = Vec::new();
        for &room in rooms {
            who.scope.reads(Some(room)).map_err(Refused::Scope)?;
            match known.rules.get(room) {
                Some(rules) if !admits(rules, who) => {
                    return Err(Refused::Private(room.to_owned()))
                }
                Some(_) => {}
                None if !new.contains(&room) => new.push(room),
                None => {}
            }
        }
        let Some(&first) = new.first() else {
            return Ok(());
        };
        who.scope.creates_rooms().map_err(Refused::Scope)?;
        if who.guest {
            return match self.limits.guests_create {
                true => Ok(()),
                false => Err(Refused::NoSuchRoom(first.to_owned())),
            };
        }
        let max = self.limits.max_per_account;
        let created = known.created.get(&*who.name).copied().unwrap_or(0);
        if max > 0 && created + new.len() > max {
            return Err(Refused::Quota(max));
        }
        Ok(())
    }

    /// May `who` use a side channel (`<room>.typing`, `<room>.presence`, `<room>.x`) of `room`?
    /// Of a room that exists: as the room. Of an unknown room: accounts may listen (the channel
    /// creates nothing, and a private room made later ends what others hold); guests not.
    pub fn may_use_side_channel(&self, who: &Identity, room: &str) -> Result<(), Refused> {
        who.scope.reads(Some(room)).map_err(Refused::Scope)?;
        if self.exists(room) {
            self.may_use(who, room)
                .map_err(|_| Refused::Private(room.to_owned()))
        } else if who.guest && !self.limits.guests_create {
            Err(Refused::NoSuchRoom(room.to_owned()))
        } else {
            Ok(())
        }
    }

    /// True if the room was created (by REST or by a first join).
    pub fn exists(&self, room: &str) -> bool {
        self.read().rules.contains_key(room)
    }

    /// True for a private room.
    pub fn is_private(&self, room: &str) -> bool {
        self.read().rules.get(room).is_some_and(|r| r.private)
    }

    /// The role of `user` in `room`, if they are a member.
    pub fn role(&self, room: &str, user: &str) -> Option<Role> {
        self.read().rules.get(room)?.members.get(user).copied()
    }

    /// The stored members of `room` and their roles, by name (none for an unknown room).
    pub fn members_of(&self, room: &str) -> Vec<(String, Role)> {
        let mut members: Vec<(String, Role)> = self
            .read()
            .rules
            .get(room)
            .map(|r| {
                r.members
                    .iter()
                    .map(|(u, role)| (u.clone(), *role))
                    .collect()
            })
            .unwrap_or_default();
        members.sort();
        members
    }

    /// Forgets a room whose creation could not be stored.
    pub fn forget(&self, room: &str) {
        self.write().remove(room);
    }

    /// Adds a member or changes their role.
    pub fn set_member(&self, room: &str, user: &str, role: Role) {
        self.write()
            .rules
            .entry(room.to_owned())
            .or_default()
            .members
            .insert(user.to_owned(), role);
    }

    /// Removes a member.
    pub fn remove_member(&self, room: &str, user: &str) {
        if let Some(rules) = self.write().rules.get_mut(room) {
            rules.members.remove(user);
        }
    }

    /// May `who` read `room` (join, subscribe, history, presence, typing) and post in it?
    /// Public rooms: anyone; private rooms: their members, never guests. A one-room credential:
    /// that room only. (Whether it may write is [`Acl::may_post`].)
    pub fn may_use(&self, who: &Identity, room: &str) -> Result<(), Denied> {
        who.scope.reads(Some(room))?;
        match self.read().rules.get(room) {
            Some(rules) if !admits(rules, who) => {
                Err(Refused::Private(room.to_owned()).to_string())
            }
            _ => Ok(()),
        }
    }

    /// May `who` write in `room` (post, edit, react, type, change members)? [`Acl::may_use`]
    /// and the credential's scope ([`parley_stomp::session::Scope::writes`]).
    pub fn may_post(&self, who: &Identity, room: &str) -> Result<(), Denied> {
        who.scope.writes(Some(room))?;
        self.may_use(who, room)
    }

    /// One page of the rooms `who` may see, by name: the public ones and the private ones they
    /// belong to. `None`: an anonymous reader (public rooms only). The page's last name is the
    /// next page's cursor when more may follow.
    pub fn rooms_visible_to(&self, who: Option<&Identity>, query: &RoomQuery) -> RoomPage {
        use std::ops::Bound;
        let start = match &query.after {
            Some(after) if **after >= *query.prefix => Bound::Excluded(after.as_str()),
            _ => Bound::Included(query.prefix.as_str()),
        };
        let rooms = self.read();
        let mut page = Vec::new();
        let visible = rooms
            .rules
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(&query.prefix))
            .filter(|(_, r)| !r.private || who.is_some_and(|w| admits(r, w)))
            .filter(|(name, _)| who.is_none_or(|w| w.scope.reads(Some(name)).is_ok()));
        for (name, r) in visible {
            if page.len() == query.limit {
                let next = page.last().map(|(name, _): &(String, bool)| name.clone());
                return (page, next);
            }
            page.push((name.clone(), r.private));
        }
        (page, None)
    }

    /// How many rooms exist.
    pub fn room_count(&self) -> usize {
        self.read().rules.len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Rooms> {
        // Updates are single inserts/removes: a panic cannot leave a half-written entry.
        self.rooms.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Rooms> {
        self.rooms.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A new room's rules: `owner` its owner (a member now), `creator` who it counts against.
fn new_room(private: bool, owner: Option<&str>, creator: Option<&str>) -> RoomRules {
    RoomRules {
        private,
        members: owner
            .map(|o| HashMap::from([(o.to_owned(), Role::Owner)]))
            .unwrap_or_default(),
        creator: creator.map(str::to_owned),
    }
}

/// Does a room with `rules` admit `who`? Public rooms: anyone; private rooms: their members,
/// never guests.
fn admits(rules: &RoomRules, who: &Identity) -> bool {
    !rules.private || (!who.guest && rules.members.contains_key(&*who.name))
}

/// The member with role owner, if any.
fn owner_of(members: &HashMap<String, Role>) -> Option<String> {
    members
        .iter()
        .find(|(_, role)| **role == Role::Owner)
        .map(|(user, _)| user.clone())
}

/// The room a topic belongs to: `general` for `/topic/general` and `/topic/general.typing`.
pub fn room_of_topic(topic: &str) -> &str {
    topic.split('.').next().unwrap_or(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str, guest: bool) -> Identity {
        Identity::new(name, guest)
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
    fn scoped_credentials_read_or_stay_in_their_room() {
        use parley_stomp::session::Scope;
        let acl = Acl::default();
        acl.create("lobby", false, None);
        acl.create("other", false, None);
        let mut reader = who("bob", false);
        reader.scope = Scope::Read;
        assert!(acl.may_use(&reader, "lobby").is_ok());
        assert_eq!(
            acl.may_post(&reader, "lobby"),
            Err("this token is read-only".into())
        );
        assert!(matches!(
            acl.enter(&reader, "new", true),
            Err(Refused::Scope(_))
        ));
        let mut one = who("bob", false);
        one.scope = Scope::Room("lobby".into());
        assert!(acl.may_post(&one, "lobby").is_ok());
        assert!(acl.may_use(&one, "other").is_err());
        assert!(acl.may_use_side_channel(&one, "other").is_err());
        assert!(matches!(
            acl.enter(&one, "fresh", true),
            Err(Refused::Scope(_))
        ));
        let query = RoomQuery {
            limit: 10,
            ..RoomQuery::default()
        };
        assert_eq!(
            acl.rooms_visible_to(Some(&one), &query).0,
            [("lobby".to_owned(), false)]
        );
    }

    #[test]
    fn side_channels_follow_their_room_and_create_nothing() {
        let acl = Acl::default();
        acl.create("plans", true, Some("alice"));
        assert!(acl
            .may_use_side_channel(&who("carol", false), "plans")
            .is_err());
        assert!(acl
            .may_use_side_channel(&who("alice", false), "plans")
            .is_ok());
        assert!(acl
            .may_use_side_channel(&who("carol", false), "free")
            .is_ok());
        assert_eq!(
            acl.may_use_side_channel(&who("carol", true), "free"),
            Err(Refused::NoSuchRoom("free".into()))
        );
        assert!(!acl.exists("free"), "listening creates nothing");
    }

    #[test]
    fn guests_never_create_and_accounts_create_their_quota() {
        let acl = Acl {
            limits: RoomLimits {
                max_per_account: 2,
                guests_create: false,
            },
            ..Acl::default()
        };
        let (guest, bob) = (who("visitor", true), who("bob", false));
        assert_eq!(
            acl.enter(&guest, "a", true),
            Err(Refused::NoSuchRoom("a".into()))
        );
        assert_eq!(acl.enter(&bob, "a", true), Ok(true));
        assert_eq!(acl.role("a", "bob"), Some(Role::Owner));
        assert_eq!(acl.enter(&guest, "a", true), Ok(false), "guests use it");
        assert_eq!(acl.create_for(&bob, "b", true, false), Ok(true));
        assert_eq!(acl.role("b", "bob"), None, "counted, not owned yet");
        assert_eq!(acl.enter(&bob, "c", true), Err(Refused::Quota(2)));
        acl.forget("b");
        assert_eq!(
            acl.enter(&bob, "c", true),
            Ok(true),
            "a forgotten room is uncounted"
        );
        acl.replace_room("c", false, vec![("alice".into(), Role::Owner)]);
        assert_eq!(
            acl.enter(&bob, "d", true),
            Ok(true),
            "storage said alice owns c"
        );
    }

    #[test]
    fn the_room_list_pages_by_name_from_a_cursor_and_a_prefix() {
        let acl = Acl::default();
        for room in ["a1", "a2", "a3", "b1", "b2"] {
            acl.create(room, false, None);
        }
        acl.create("a0", true, Some("alice"));
        let page = |after: Option<&str>, prefix: &str, limit| {
            let query = RoomQuery {
                after: after.map(str::to_owned),
                prefix: prefix.to_owned(),
                limit,
            };
            let (rooms, next) = acl.rooms_visible_to(Some(&who("bob", false)), &query);
            let names: Vec<String> = rooms.into_iter().map(|(n, _)| n).collect();
            (names, next)
        };
        assert_eq!(
            page(None, "", 2),
            (vec!["a1".into(), "a2".into()], Some("a2".into()))
        );
        assert_eq!(
            page(Some("a2"), "", 2),
            (vec!["a3".into(), "b1".into()], Some("b1".into()))
        );
        assert_eq!(page(Some("b1"), "", 2), (vec!["b2".into()], None));
        assert_eq!(page(None, "b", 5), (vec!["b1".into(), "b2".into()], None));
        assert_eq!(
            page(Some("a"), "b", 5).0.len(),
            2,
            "a cursor before the prefix"
        );
        assert_eq!(
            page(None, "a", 3),
            (vec!["a1".into(), "a2".into(), "a3".into()], None)
        );
    }
}
