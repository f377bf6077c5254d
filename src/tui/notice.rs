//! Status-line notices: which thread each belongs to, and when it stops being true.
//!
//! A notice about a contact is shown only while no thread or that contact's thread is open;
//! otherwise it is held until their thread opens. A notice raised because the relay was out
//! of reach goes when the connection is back; a key-change warning goes once the new key is
//! accepted. Pure state on `App`; never decides what a notice says.

use super::app::App;

/// What makes a notice stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// It stays until dismissed (Esc, sending a message) or replaced.
    Dismissed,
    /// It was about the relay being out of reach: gone when the connection is online.
    Online,
    /// It was about a changed key of its contact: gone when that key is accepted.
    KeyAccepted,
}

/// A line for the status bar; `error` ones are marked with `!`, not by colour alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
    /// The contact it is about; None: about no thread in particular.
    pub about: Option<String>,
    pub expires: Expiry,
}

impl Status {
    pub fn info(text: impl Into<String>) -> Status {
        Status {
            text: text.into(),
            error: false,
            about: None,
            expires: Expiry::Dismissed,
        }
    }

    pub fn error(text: impl Into<String>) -> Status {
        Status {
            error: true,
            ..Status::info(text)
        }
    }

    pub fn about(mut self, handle: Option<String>) -> Status {
        self.about = handle;
        self
    }

    pub fn expires(mut self, expires: Expiry) -> Status {
        self.expires = expires;
        self
    }
}

/// Whether `handle` appears in `text` as a whole word (handles are a-z, 0-9, `_ . -`).
fn names(text: &str, handle: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    text.match_indices(handle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + handle.len()..].chars().next();
        // A trailing '.' ends a sentence rather than continuing a handle.
        let after_ok = match after {
            Some('.') => text[at + handle.len() + 1..]
                .chars()
                .next()
                .is_none_or(|c| !part(c)),
            Some(c) => !part(c),
            None => true,
        };
        before.is_none_or(|c| !part(c)) && after_ok
    })
}

impl App {
    /// Shows `s` now if it belongs to the open thread (or to none), else holds it for when
    /// its contact's thread opens; a held notice replaces an older one about the same contact.
    pub(super) fn notify(&mut self, s: Status) {
        match (&s.about, &self.open) {
            (Some(about), Some(open)) if *about != open.handle => {
                self.held.retain(|h| h.about != s.about);
                self.held.push(s);
            }
            _ => self.status = Some(s),
        }
    }

    /// The contact a manager's warning is about: the first contact it names.
    pub(super) fn named_contact(&self, text: &str) -> Option<String> {
        self.contacts
            .iter()
            .find(|c| names(text, &c.handle))
            .map(|c| c.handle.clone())
    }

    /// The open thread changed: a notice about another contact is held, and one held for the
    /// newly open contact is shown.
    pub(super) fn notices_follow_open(&mut self) {
        let Some(open) = self.open.as_ref().map(|o| o.handle.clone()) else {
            return;
        };
        if let Some(s) = self
            .status
            .take_if(|s| s.about.as_ref().is_some_and(|a| *a != open))
        {
            self.held.retain(|h| h.about != s.about);
            self.held.push(s);
        }
        if let Some(i) = self
            .held
            .iter()
            .position(|h| h.about.as_ref() == Some(&open))
        {
            self.status = Some(self.held.remove(i));
        }
    }

    /// Drops every notice that `stale` says is no longer true.
    pub(super) fn expire(&mut self, stale: impl Fn(&Status) -> bool) {
        self.status.take_if(|s| stale(s));
        self.held.retain(|s| !stale(s));
    }
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn handles_are_found_as_whole_words_only() {
        assert!(names("a message from bob was unreadable", "bob"));
        assert!(names("bob's safety number changed", "bob"));
        assert!(names("bob: refused", "bob"));
        assert!(names("ask bob.", "bob"));
        assert!(!names("a message from bobby", "bob"));
        assert!(!names("ask bob.x", "bob"));
        assert!(!names("jim-bob said", "bob"));
    }
}
