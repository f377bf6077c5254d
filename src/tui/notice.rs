//! Status-line notices: which thread each belongs to, and when it stops being true.
//!
//! A notice about a contact is shown only while no thread or one of that contact's threads is
//! open, one about a thread only while no thread or that one is open; otherwise it is held
//! until its thread opens. Whom a notice is about comes with it (the manager's warnings carry
//! their contact), never from reading its text. A notice raised because the relay was out
//! of reach goes when the connection is back; a key-change warning goes once the new key is
//! accepted. Pure state on `App`; never decides what a notice says.

use super::app::{App, ThreadKey};

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

/// Whom a notice is about: a contact (either of their threads), or one of their threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About {
    pub handle: String,
    /// Which thread (`true`: the secret one); None: the contact as a whole.
    pub secret: Option<bool>,
}

impl About {
    pub fn contact(handle: impl Into<String>) -> About {
        About {
            handle: handle.into(),
            secret: None,
        }
    }

    pub fn thread(handle: impl Into<String>, secret: bool) -> About {
        About {
            handle: handle.into(),
            secret: Some(secret),
        }
    }

    /// Whether a notice about this belongs on screen while `open` is the open thread.
    fn fits(&self, open: &ThreadKey) -> bool {
        self.handle == open.handle && self.secret.is_none_or(|s| s == open.secret)
    }
}

/// A line for the status bar; `error` ones are marked with `!`, not by colour alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
    /// Whose thread it belongs to; None: about no thread in particular.
    pub about: Option<About>,
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

    pub fn about(mut self, about: Option<About>) -> Status {
        self.about = about;
        self
    }

    pub fn expires(mut self, expires: Expiry) -> Status {
        self.expires = expires;
        self
    }
}

impl App {
    /// Shows `s` now if it belongs to the open thread (or to none), else holds it for when
    /// its thread opens; a held notice replaces an older one about the same contact or thread.
    pub(super) fn notify(&mut self, s: Status) {
        match (&s.about, &self.open) {
            (Some(about), Some(open)) if !about.fits(open) => {
                self.held.retain(|h| h.about != s.about);
                self.held.push(s);
            }
            _ => self.status = Some(s),
        }
    }

    /// The open thread changed: a notice about another contact or thread is held, and one
    /// held for the newly open thread is shown.
    pub(super) fn notices_follow_open(&mut self) {
        let Some(open) = self.open.clone() else {
            return;
        };
        if let Some(s) = self
            .status
            .take_if(|s| s.about.as_ref().is_some_and(|a| !a.fits(&open)))
        {
            self.held.retain(|h| h.about != s.about);
            self.held.push(s);
        }
        if let Some(i) = self
            .held
            .iter()
            .position(|h| h.about.as_ref().is_some_and(|a| a.fits(&open)))
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
