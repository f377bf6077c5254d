//! The composer's slash commands: `/add`, `/attach`, `/secret`, `/timer`, `/verify`,
//! `/block`, `/unblock`, `/remove`, `/retry`, `/edit`, `/search`, `/group` (its words:
//! `group_commands`), `/help`, `/quit`.
//!
//! Owns their syntax and error messages. Pure: turns a line into a `Slash` or an error the
//! status line can show; the app decides what each one does.

use crate::timer;

/// A parsed slash command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slash {
    Add(String),
    /// Send a file: its path as typed (`~` not yet expanded), and a caption.
    Attach {
        path: String,
        caption: Option<String>,
    },
    Secret,
    /// Seconds; None: off.
    Timer(Option<u32>),
    Verify,
    /// A handle, or None: the open contact.
    Block(Option<String>),
    Unblock(String),
    /// Removing needs the handle typed out, even for the open contact: it cannot be undone.
    Remove(String),
    /// Send the open thread's newest failed message again.
    Retry,
    /// Compose the message in `$EDITOR`.
    Edit,
    /// Search every thread for these words (may be empty: the overlay opens to type them).
    Search(String),
    /// Create a group, or change or list the open one.
    Group(super::group_commands::GroupSlash),
    Help,
    Quit,
}

/// Every command with its one-line help, for the help overlay.
pub const HELP: &[(&str, &str)] = &[
    (
        "/add HANDLE",
        "look a handle up at the relay and add it as a contact",
    ),
    (
        "/attach PATH [CAPTION]",
        "send a file to the open thread (Tab completes the path; quotes or \\ for spaces; pasting a file's path offers it too)",
    ),
    (
        "/secret",
        "switch the open contact between its normal and secret thread",
    ),
    (
        "/timer 30s|5m|1h|1d|off",
        "disappearing-message timer of the open thread (5s to 24h)",
    ),
    ("/verify", "show the contact's safety number"),
    (
        "/block [HANDLE]",
        "drop everything HANDLE (or the open contact) sends and hide them",
    ),
    ("/unblock HANDLE", "let a blocked contact reach you again"),
    (
        "/remove HANDLE",
        "delete a contact with both threads (they can write again)",
    ),
    (
        "/retry",
        "send the open thread's newest failed message again",
    ),
    (
        "/edit",
        "write the message in $EDITOR (Ctrl-X too); Enter then sends it",
    ),
    (
        "/search [WORDS]",
        "search every thread (Ctrl-F: the open one); Enter opens a result",
    ),
    (
        "/group new NAME HANDLE…",
        "start a group with these contacts (its threads are #NAME; Ctrl-S switches to secret)",
    ),
    (
        "/group add|remove HANDLE",
        "change the open group's members (admins only)",
    ),
    (
        "/group leave|rename NAME|members",
        "leave the open group, rename it (admins), or list its members",
    ),
    ("/help", "this help"),
    ("/quit", "leave sotto"),
];

/// Parses a composer line that starts with `/`.
pub fn parse(line: &str) -> Result<Slash, String> {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or("/");
    let args: Vec<&str> = words.collect();
    let no_args = |cmd: Slash| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(format!("{name} takes no arguments"))
        }
    };
    match name {
        "/add" => match args.as_slice() {
            [handle] => handle_arg(handle).map(Slash::Add),
            _ => Err("usage: /add HANDLE".into()),
        },
        "/attach" => {
            let rest = &line.trim_start()[name.len()..];
            super::paths::attach_args(rest)
                .map(|(path, caption)| Slash::Attach { path, caption })
                .ok_or_else(|| "usage: /attach PATH [CAPTION] (Tab completes the path)".into())
        }
        "/secret" => no_args(Slash::Secret),
        "/timer" => match args.as_slice() {
            [value] => timer::parse(value)
                .map(Slash::Timer)
                .map_err(|e| e.to_string()),
            _ => Err("usage: /timer 30s|5m|1h|1d|off".into()),
        },
        "/verify" => no_args(Slash::Verify),
        "/block" => match args.as_slice() {
            [] => Ok(Slash::Block(None)),
            [handle] => handle_arg(handle).map(|h| Slash::Block(Some(h))),
            _ => Err("usage: /block [HANDLE]".into()),
        },
        "/unblock" => match args.as_slice() {
            [handle] => handle_arg(handle).map(Slash::Unblock),
            _ => Err("usage: /unblock HANDLE".into()),
        },
        "/remove" => match args.as_slice() {
            [handle] => handle_arg(handle).map(Slash::Remove),
            _ => Err("usage: /remove HANDLE (typed out: it deletes both threads for good)".into()),
        },
        "/retry" => no_args(Slash::Retry),
        "/edit" => no_args(Slash::Edit),
        "/search" => Ok(Slash::Search(args.join(" "))),
        "/group" => super::group_commands::parse(&args).map(Slash::Group),
        "/help" => no_args(Slash::Help),
        "/quit" | "/q" => no_args(Slash::Quit),
        other => Err(format!("unknown command {other}; /help lists them")),
    }
}

pub(super) fn handle_arg(handle: &str) -> Result<String, String> {
    if crate::wire::valid_handle(handle) {
        Ok(handle.to_string())
    } else {
        Err(format!(
            "{handle:?} is not a handle: 1 to 32 characters of a-z, 0-9, '_', '.', '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse("/add bob"), Ok(Slash::Add("bob".into())));
        assert_eq!(parse("/secret"), Ok(Slash::Secret));
        assert_eq!(
            parse(r#"/attach "a b.png"  two  words "#),
            Ok(Slash::Attach {
                path: "a b.png".into(),
                caption: Some("two  words".into())
            })
        );
        assert!(parse("/attach").unwrap_err().contains("usage"));
        assert_eq!(parse("/timer 5s"), Ok(Slash::Timer(Some(5))));
        assert_eq!(parse("/timer off"), Ok(Slash::Timer(None)));
        assert_eq!(parse("/quit"), Ok(Slash::Quit));
        assert_eq!(parse("/block"), Ok(Slash::Block(None)));
        assert_eq!(
            parse("/block carol"),
            Ok(Slash::Block(Some("carol".into())))
        );
        assert_eq!(parse("/unblock carol"), Ok(Slash::Unblock("carol".into())));
        assert_eq!(parse("/remove carol"), Ok(Slash::Remove("carol".into())));
        assert_eq!(parse("/retry"), Ok(Slash::Retry));
        assert_eq!(parse("/edit"), Ok(Slash::Edit));
        assert_eq!(
            parse("/search  meet  noon"),
            Ok(Slash::Search("meet noon".into()))
        );
        assert_eq!(parse("/search"), Ok(Slash::Search(String::new())));
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(parse("/timer 4s").unwrap_err().contains("5s to 24h"));
        assert!(parse("/timer 25h").unwrap_err().contains("5s to 24h"));
        assert!(parse("/timer abc").unwrap_err().contains("not a timer"));
        assert!(parse("/timer").unwrap_err().contains("usage"));
        assert!(parse("/add Bob!").unwrap_err().contains("not a handle"));
        assert!(parse("/secret now").unwrap_err().contains("no arguments"));
        assert!(parse("/remove").unwrap_err().contains("typed out"));
        assert!(parse("/unblock").unwrap_err().contains("usage"));
        assert!(
            parse("/frobnicate")
                .unwrap_err()
                .contains("unknown command /frobnicate")
        );
    }
}
