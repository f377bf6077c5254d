//! Notifications for messages that arrive in a thread the user is not looking at: which ones
//! notify (the `notify` config key), what they say, and the terminal sequence that asks the
//! terminal emulator to show one (OSC 9).
//!
//! Pure: decides and formats; the terminal loop writes the sequence. A secret message's text
//! never leaves here: its notification names only the sender.

use std::str::FromStr;

use crate::client::store::Message;

/// Characters of a normal message shown in its notification.
const PREVIEW_CHARS: usize = 100;

/// Which arriving messages notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every message: a normal one with a preview, a secret one with only its sender.
    #[default]
    All,
    /// Normal messages only; secret ones do not notify at all.
    SecretHidden,
    Off,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "all" => Ok(Mode::All),
            "secret-hidden" => Ok(Mode::SecretHidden),
            "off" => Ok(Mode::Off),
            other => Err(format!(
                "notify = {other:?} is not a choice: use \"all\", \"secret-hidden\" or \"off\""
            )),
        }
    }
}

/// What one notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub text: String,
}

/// The notification for an arriving message `m` under `mode`, if any.
pub fn for_message(mode: Mode, m: &Message) -> Option<Notification> {
    let text = match (mode, m.secret) {
        (Mode::Off, _) | (Mode::SecretHidden, true) => return None,
        (_, true) => format!("new secret message from {}", m.contact),
        (_, false) => {
            let preview: String = m.text.chars().take(PREVIEW_CHARS).collect();
            let more = if m.text.chars().count() > PREVIEW_CHARS {
                "…"
            } else {
                ""
            };
            format!("{}: {preview}{more}", m.contact)
        }
    };
    Some(Notification {
        text: printable(&text),
    })
}

/// `text` with every control character (C0, DEL, C1: newlines, escapes, BEL) made a space: a
/// peer's message must not end the sequence early and write to the terminal itself.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The OSC 9 sequence that asks the terminal to show `n` (iTerm2, WezTerm, Windows Terminal,
/// kitty, foot, Ghostty; other terminals ignore it).
pub fn osc(n: &Notification) -> String {
    format!("\x1b]9;sotto · {}\x1b\\", n.text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::store::{MessageKind, MessageState};

    fn msg(secret: bool, text: &str) -> Message {
        Message {
            seq: 1,
            id: "m".into(),
            contact: "bob".into(),
            secret,
            outgoing: false,
            text: text.into(),
            sent_at: 0,
            state: MessageState::Received,
            kind: MessageKind::Text,
            timer: None,
            expires_at: None,
            reply: None,
            reactions: Vec::new(),
            edited: false,
            deleted: false,
            attachment: None,
            author: None,
        }
    }

    #[test]
    fn a_secret_message_notifies_without_its_text() {
        let n = for_message(Mode::All, &msg(true, "the vault code is 1234")).unwrap();
        assert_eq!(n.text, "new secret message from bob");
        assert_eq!(for_message(Mode::SecretHidden, &msg(true, "x")), None);
        assert_eq!(for_message(Mode::Off, &msg(true, "x")), None);
    }

    #[test]
    fn a_normal_message_shows_a_short_preview_without_control_characters() {
        let n = for_message(Mode::SecretHidden, &msg(false, "hi\x1b]0;pwned\x07\nthere")).unwrap();
        assert_eq!(n.text, "bob: hi ]0;pwned  there");
        let osc = osc(&n);
        assert_eq!(
            osc.matches('\x1b').count(),
            2,
            "only the sequence's own escapes"
        );
        assert!(!osc.contains('\x07'));
        let long = for_message(Mode::All, &msg(false, &"x".repeat(300))).unwrap();
        assert_eq!(long.text.chars().count(), "bob: ".len() + PREVIEW_CHARS + 1);
        assert_eq!(for_message(Mode::Off, &msg(false, "hi")), None);
    }

    #[test]
    fn modes_parse_and_mistakes_are_explained() {
        assert_eq!("all".parse(), Ok(Mode::All));
        assert_eq!("secret-hidden".parse(), Ok(Mode::SecretHidden));
        assert_eq!("off".parse(), Ok(Mode::Off));
        assert!("loud".parse::<Mode>().unwrap_err().contains("\"all\""));
    }
}
