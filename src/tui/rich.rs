//! Selection mode and what it leads to: replying to, reacting to, editing and deleting a
//! message of the open thread, and keeping the loaded thread in step with such changes.
//!
//! Owns the `Rich` part of the app's state. Pure like the rest of `App`: turns keys into
//! `Command`s and events into state, draws nothing. Must not touch the composer's history
//! or scrolling beyond keeping the selected message in view.

use super::app::App;
use crate::client::store::{Expired, Message};

/// Selection mode and what the composer is doing to a message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rich {
    /// The selected message's id; None: not selecting.
    pub selected: Option<String>,
    /// The message the composer answers: (id, excerpt).
    pub replying: Option<(String, String)>,
    /// The message of ours the composer edits.
    pub editing: Option<String>,
    /// The reaction picker is open on the selected message, with what is typed into it.
    pub picker: Option<String>,
    /// `D` asks whether to delete the selected message for everyone.
    pub confirm_delete: bool,
}

impl App {
    /// The id of the selected message, in selection mode.
    pub fn selected_message(&self) -> Option<&str> {
        self.rich.selected.as_deref()
    }

    /// A loaded message changed (a reaction, an edit, a deletion).
    pub(super) fn on_changed(&mut self, message: Message) {
        if !self.is_open_thread(&message.contact, message.secret) {
            return;
        }
        if let Some(m) = self.thread.messages.iter_mut().find(|m| m.id == message.id) {
            // The loaded copy keeps its place (`seq`) and countdown.
            let (seq, expires_at) = (m.seq, m.expires_at);
            *m = Message {
                seq,
                expires_at: expires_at.or(message.expires_at),
                ..message.clone()
            };
        }
        if message.deleted {
            self.quotes_gone(&[Expired {
                id: message.id,
                contact: message.contact,
                secret: message.secret,
            }]);
        }
    }

    /// Quotes of messages that are gone say so.
    pub(super) fn quotes_gone(&mut self, gone: &[Expired]) {
        for m in &mut self.thread.messages {
            if let Some(q) = &mut m.reply
                && gone
                    .iter()
                    .any(|g| g.id == q.id && g.contact == m.contact && g.secret == m.secret)
            {
                q.gone = true;
                q.excerpt.clear();
            }
        }
    }

    fn is_open_thread(&self, handle: &str, secret: bool) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| o.handle == handle && o.secret == secret)
    }
}
