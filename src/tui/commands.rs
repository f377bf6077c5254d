//! The composer's slash commands: `/add`, `/secret`, `/timer`, `/verify`, `/edit`, `/help`,
//! `/quit`.
//!
//! Owns their syntax and error messages. Pure: turns a line into a `Slash` or an error the
//! status line can show; the app decides what each one does.

use crate::timer;

/// A parsed slash command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slash {
    Add(String),
    Secret,
    /// Seconds; None: off.
    Timer(Option<u32>),
    Verify,
    /// Compose the message in `$EDITOR`.
    Edit,
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
        "/secret",
        "switch the open contact between its normal and secret thread",
    ),
    (
        "/timer 30s|5m|1h|1d|off",
        "disappearing-message timer of the open thread (5s to 24h)",
    ),
    ("/verify", "show the contact's safety number"),
    (
        "/edit",
        "write the message in $EDITOR (Ctrl-X too); Enter then sends it",
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
            [handle] if crate::wire::valid_handle(handle) => Ok(Slash::Add(handle.to_string())),
            [handle] => Err(format!(
                "{handle:?} is not a handle: 1 to 32 characters of a-z, 0-9, '_', '.', '-'"
            )),
            _ => Err("usage: /add HANDLE".into()),
        },
        "/secret" => no_args(Slash::Secret),
        "/timer" => match args.as_slice() {
            [value] => timer::parse(value)
                .map(Slash::Timer)
                .map_err(|e| e.to_string()),
            _ => Err("usage: /timer 30s|5m|1h|1d|off".into()),
        },
        "/verify" => no_args(Slash::Verify),
        "/edit" => no_args(Slash::Edit),
        "/help" => no_args(Slash::Help),
        "/quit" | "/q" => no_args(Slash::Quit),
        other => Err(format!("unknown command {other}; /help lists them")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse("/add bob"), Ok(Slash::Add("bob".into())));
        assert_eq!(parse("/secret"), Ok(Slash::Secret));
        assert_eq!(parse("/timer 5s"), Ok(Slash::Timer(Some(5))));
        assert_eq!(parse("/timer off"), Ok(Slash::Timer(None)));
        assert_eq!(parse("/quit"), Ok(Slash::Quit));
        assert_eq!(parse("/edit"), Ok(Slash::Edit));
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(parse("/timer 4s").unwrap_err().contains("5s to 24h"));
        assert!(parse("/timer 25h").unwrap_err().contains("5s to 24h"));
        assert!(parse("/timer abc").unwrap_err().contains("not a timer"));
        assert!(parse("/timer").unwrap_err().contains("usage"));
        assert!(parse("/add Bob!").unwrap_err().contains("not a handle"));
        assert!(parse("/secret now").unwrap_err().contains("no arguments"));
        assert!(
            parse("/frobnicate")
                .unwrap_err()
                .contains("unknown command /frobnicate")
        );
    }
}
