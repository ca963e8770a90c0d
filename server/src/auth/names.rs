//! The rules for account and guest names: which names accounts may take, which are kept for
//! guests, and that names differing only by case are one name.

use parley_stomp::destination::valid_user;

use crate::store::user_key;

/// Names starting with this (in any case) are made up for guests, so accounts cannot take them.
pub const GUEST_PREFIX: &str = "guest-";

/// True if `name` starts with [`GUEST_PREFIX`] in any case: only the server gives such names.
pub fn reserved_for_guests(name: &str) -> bool {
    user_key(name).starts_with(GUEST_PREFIX)
}

/// Username and password rules for new accounts. (That the name is free, ignoring case, is
/// the store's to say.)
pub fn check_new_account(name: &str, password: &str) -> Result<(), &'static str> {
    check_account_name(name)?;
    let chars = password.chars().count();
    if !(8..=1024).contains(&chars) {
        return Err("password must be 8-1024 characters");
    }
    Ok(())
}

/// The username rule alone, for accounts that sign in through another site.
pub fn check_account_name(name: &str) -> Result<(), &'static str> {
    if valid_user(name).is_none() {
        return Err("username must be 1-32 of letters, digits, _ - .");
    }
    if reserved_for_guests(name) {
        return Err("usernames starting with guest- are reserved for guests");
    }
    Ok(())
}

/// A provider's display name made into a name Parley allows, where one can be: spaces become
/// `-`, other characters outside the rule go, at most 32 are kept.
pub fn name_from_profile(suggested: &str) -> Option<String> {
    let name: String = suggested
        .trim()
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(32)
        .collect();
    check_account_name(&name).ok().map(|()| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_rules() {
        assert!(check_new_account("alice", "correct horse").is_ok());
        assert!(check_new_account("", "correct horse").is_err());
        assert!(check_new_account("a b", "correct horse").is_err());
        assert!(check_new_account(&"a".repeat(33), "correct horse").is_err());
        assert!(check_new_account("alice", "short").is_err());
        assert!(
            check_new_account("alice", &"é".repeat(1024)).is_ok(),
            "counted in chars"
        );
        assert!(check_new_account("alice", &"x".repeat(1025)).is_err());
    }

    #[test]
    fn profile_names_become_allowed_names_or_none() {
        assert_eq!(
            name_from_profile("Ada Lovelace").as_deref(),
            Some("Ada-Lovelace")
        );
        assert_eq!(name_from_profile("zoé").as_deref(), Some("zo"));
        assert_eq!(
            name_from_profile(&"x".repeat(40)).map(|n| n.len()),
            Some(32)
        );
        assert_eq!(name_from_profile("山田"), None);
        assert_eq!(name_from_profile("guest-7"), None);
    }

    #[test]
    fn the_guest_prefix_is_reserved_in_any_case() {
        for name in ["guest-1", "Guest-1", "GUEST-x", "gUeSt-"] {
            assert!(reserved_for_guests(name), "{name}");
            assert!(check_new_account(name, "correct horse").is_err(), "{name}");
        }
        for name in ["guest", "guests-1", "my-guest-1", "alice"] {
            assert!(!reserved_for_guests(name), "{name}");
        }
        assert_eq!(user_key("ALICE"), user_key("alice"));
    }
}
