//! The `/group` command's syntax: `new`, `add`, `remove`, `leave`, `rename`, `members`.
//!
//! Owns the words after `/group` and their error messages. Pure: turns them into a
//! `GroupSlash` or a sentence for the status line; which group an action is about (the open
//! one) is the app's to decide.

/// A parsed `/group` command; the actions other than `New` are about the open group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSlash {
    New { name: String, members: Vec<String> },
    Add(String),
    Remove(String),
    Leave,
    Rename(String),
    Members,
}

pub const USAGE: &str =
    "usage: /group new NAME HANDLE… | add HANDLE | remove HANDLE | leave | rename NAME | members";

/// Parses the words after `/group`.
pub fn parse(args: &[&str]) -> Result<GroupSlash, String> {
    let one_handle = |h: &str, what| {
        super::commands::handle_arg(h).map_err(|e| format!("{e} (/group {what} HANDLE)"))
    };
    match args {
        ["new", name, members @ ..] => {
            let name = name.trim_start_matches('#');
            if !crate::client::valid_group_name(name) {
                return Err(format!(
                    "{name:?} cannot name a group: 1 to 31 characters of a-z, 0-9, '_', '.', '-'"
                ));
            }
            if members.is_empty() {
                return Err("name at least one member: /group new NAME HANDLE…".into());
            }
            let members = members
                .iter()
                .map(|h| super::commands::handle_arg(h))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(GroupSlash::New {
                name: name.to_string(),
                members,
            })
        }
        ["add", handle] => one_handle(handle, "add").map(GroupSlash::Add),
        ["remove", handle] => one_handle(handle, "remove").map(GroupSlash::Remove),
        ["leave"] => Ok(GroupSlash::Leave),
        ["rename", name] => {
            let name = name.trim_start_matches('#');
            if crate::client::valid_group_name(name) {
                Ok(GroupSlash::Rename(name.to_string()))
            } else {
                Err(format!(
                    "{name:?} cannot name a group: 1 to 31 characters of a-z, 0-9, '_', '.', '-'"
                ))
            }
        }
        ["members"] => Ok(GroupSlash::Members),
        _ => Err(USAGE.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_commands_parse() {
        assert_eq!(
            parse(&["new", "#friends", "bob", "carol"]),
            Ok(GroupSlash::New {
                name: "friends".into(),
                members: vec!["bob".into(), "carol".into()]
            })
        );
        assert_eq!(parse(&["add", "dave"]), Ok(GroupSlash::Add("dave".into())));
        assert_eq!(
            parse(&["remove", "dave"]),
            Ok(GroupSlash::Remove("dave".into()))
        );
        assert_eq!(parse(&["leave"]), Ok(GroupSlash::Leave));
        assert_eq!(
            parse(&["rename", "crew"]),
            Ok(GroupSlash::Rename("crew".into()))
        );
        assert_eq!(parse(&["members"]), Ok(GroupSlash::Members));
    }

    #[test]
    fn bad_group_commands_say_what_to_type() {
        assert!(
            parse(&["new", "friends"])
                .unwrap_err()
                .contains("at least one member")
        );
        assert!(
            parse(&["new", "Friends!", "bob"])
                .unwrap_err()
                .contains("cannot name")
        );
        assert!(
            parse(&["new", &"x".repeat(32), "bob"])
                .unwrap_err()
                .contains("cannot name")
        );
        assert!(
            parse(&["add", "Bob!"])
                .unwrap_err()
                .contains("not a handle")
        );
        assert_eq!(parse(&[]), Err(USAGE.into()));
        assert_eq!(parse(&["kick", "bob"]), Err(USAGE.into()));
    }
}
