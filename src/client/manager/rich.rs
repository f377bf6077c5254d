//! The manager's replies, reactions, edits and deletions: checking who may change which
//! message, changing it in the store, and sending the change to the peer.
//!
//! Part of the manager (it works on `Manager`'s state). The rules live here: a change names a
//! message of the same thread (by contact AND secret); only its author edits it or deletes it
//! for everyone, within `CHANGE_WINDOW_MS`; only texts are quoted, reacted to or edited.
//! Whatever breaks them from the peer is ignored and logged without any text. Must not
//! decide how the screen shows anything.

use super::receive::Incoming;
use super::send::Sent;
use super::{ClientError, Event, Manager, describe};
use crate::client::content::{self, Body, Content};
use crate::client::store::StoreError;
use crate::client::store::{Contact, Expired, Message, MessageKind, MessageState, Quote};

/// How long after sending a message its author may edit it or delete it for everyone.
pub const CHANGE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// A quote shows this many characters of the original at most.
const EXCERPT_CHARS: usize = 60;
/// A reaction's emoji is at most this long (a flag or a family is several code points).
const MAX_EMOJI_BYTES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum RichError {
    #[error(
        "there is no message {0} in this thread; it may have disappeared or been deleted (message ids are in `sotto history HANDLE`)"
    )]
    NoSuchMessage(String),
    #[error("that message was deleted; there is nothing to change")]
    Deleted,
    #[error(
        "only your own messages can be edited or deleted for everyone; delete it for yourself instead"
    )]
    NotYours,
    #[error("only text messages can be answered, reacted to or edited")]
    NotText,
    #[error(
        "a message can be edited or deleted for everyone within 24 hours of sending it; this one is older (you can still delete it for yourself)"
    )]
    TooOld,
    #[error("a reaction is one emoji: no spaces, at most {MAX_EMOJI_BYTES} bytes")]
    BadEmoji,
}

/// What changed a message, for `Event::MessageChanged`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The reaction's, edit's or deletion's own id.
    pub id: String,
    /// `Reaction`, `Edit` or `Delete`.
    pub kind: MessageKind,
    /// We made the change (else the peer did).
    pub outgoing: bool,
    /// For a reaction: its emoji; None: a reaction was taken away.
    pub emoji: Option<String>,
    /// Unix ms at the one who made it.
    pub sent_at: u64,
}

/// The start of `text` on one line, as a quote shows it.
pub fn excerpt(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() <= EXCERPT_CHARS {
        return flat.to_string();
    }
    let mut short: String = flat.chars().take(EXCERPT_CHARS - 1).collect();
    short.push('…');
    short
}

fn check_emoji(e: &str) -> Result<(), RichError> {
    let bad = e.is_empty()
        || e.len() > MAX_EMOJI_BYTES
        || e.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        Err(RichError::BadEmoji)
    } else {
        Ok(())
    }
}

/// A change from the peer that breaks the rules: logged without ids or text, then dropped.
fn ignored(kind: &'static str, why: &'static str) {
    tracing::warn!(kind, why, "ignored a change to a message");
}

impl Manager {
    /// The message `id` of `contact`'s thread.
    fn target(&self, contact: &Contact, secret: bool, id: &str) -> Result<Message, ClientError> {
        self.store
            .thread_message(&contact.account_id, secret, id)?
            .ok_or_else(|| RichError::NoSuchMessage(id.to_string()).into())
    }

    /// A text of the thread that is still there: what replies and reactions may name.
    fn live_text(&self, contact: &Contact, secret: bool, id: &str) -> Result<Message, ClientError> {
        let m = self.target(contact, secret, id)?;
        if m.deleted {
            return Err(RichError::Deleted.into());
        }
        if !m.kind.is_text() {
            return Err(RichError::NotText.into());
        }
        Ok(m)
    }

    /// One of our texts that we may still change for everyone.
    fn own_recent(
        &self,
        contact: &Contact,
        secret: bool,
        id: &str,
    ) -> Result<Message, ClientError> {
        let m = self.live_text(contact, secret, id)?;
        if !m.outgoing {
            return Err(RichError::NotYours.into());
        }
        if self.clock.now_ms().saturating_sub(m.sent_at) > CHANGE_WINDOW_MS {
            return Err(RichError::TooOld.into());
        }
        Ok(m)
    }

    /// The quote of a reply we are about to send.
    pub(super) fn quote_for_reply(
        &self,
        contact: &Contact,
        secret: bool,
        target: &str,
    ) -> Result<Quote, ClientError> {
        let m = self.live_text(contact, secret, target)?;
        Ok(Quote {
            id: m.id,
            excerpt: excerpt(&m.text),
            gone: false,
        })
    }

    /// The quote of a reply that arrived: our own copy of the original's start (the
    /// sender's excerpt is not taken), "gone" if we do not hold it any more, and none if it
    /// names a message of the other thread or one that is no text.
    pub(super) fn quote_received(
        &self,
        contact: &Contact,
        secret: bool,
        target: &str,
    ) -> Result<Option<Quote>, StoreError> {
        let gone = || Quote {
            id: target.to_string(),
            excerpt: String::new(),
            gone: true,
        };
        match self
            .store
            .thread_message(&contact.account_id, secret, target)?
        {
            Some(m) if m.deleted => Ok(Some(gone())),
            Some(m) if m.kind.is_text() => Ok(Some(Quote {
                id: m.id,
                excerpt: excerpt(&m.text),
                gone: false,
            })),
            Some(_) => {
                ignored("reply", "quotes no text");
                Ok(None)
            }
            None if self
                .store
                .in_other_thread(&contact.account_id, secret, target)? =>
            {
                ignored("reply", "quotes the other thread");
                Ok(None)
            }
            None => Ok(Some(gone())),
        }
    }

    pub(super) async fn react(
        &mut self,
        id: String,
        handle: String,
        secret: bool,
        target: String,
        emoji: Option<String>,
    ) {
        let checked = (|| {
            let contact = self.sendable(&handle)?;
            self.live_text(&contact, secret, &target)?;
            let emoji = match emoji {
                Some(e) => {
                    check_emoji(&e)?;
                    let mine = self
                        .store
                        .my_reaction(&contact.account_id, secret, &target)?;
                    // The same one again takes it away.
                    (mine.as_deref() != Some(e.as_str())).then_some(e)
                }
                None => None,
            };
            Ok::<_, ClientError>((contact, emoji))
        })();
        let (contact, emoji) = match checked {
            Ok(c) => c,
            Err(e) => return self.action_failed(id, &e).await,
        };
        let sent_at = self.clock.now_ms();
        let body = Body::Reaction {
            id: id.clone(),
            target: target.clone(),
            emoji: emoji.clone(),
            sent_at,
        };
        let change = Change {
            id: id.clone(),
            kind: MessageKind::Reaction,
            outgoing: true,
            emoji: emoji.clone(),
            sent_at,
        };
        self.send_change(id, &contact, secret, &target, body, change, |store, c| {
            store.set_reaction(c, secret, &target, true, emoji.as_deref())
        })
        .await
    }

    pub(super) async fn edit(
        &mut self,
        id: String,
        handle: String,
        secret: bool,
        target: String,
        text: String,
    ) {
        let checked = (|| {
            if text.trim().is_empty() {
                return Err(ClientError::EmptyText);
            }
            if text.len() > content::MAX_TEXT_BYTES {
                return Err(ClientError::TooLong(text.len()));
            }
            let contact = self.sendable(&handle)?;
            self.own_recent(&contact, secret, &target)?;
            Ok(contact)
        })();
        let contact = match checked {
            Ok(c) => c,
            Err(e) => return self.action_failed(id, &e).await,
        };
        let sent_at = self.clock.now_ms();
        let body = Body::Edit {
            id: id.clone(),
            target: target.clone(),
            text: text.clone(),
            sent_at,
        };
        let change = Change {
            id: id.clone(),
            kind: MessageKind::Edit,
            outgoing: true,
            emoji: None,
            sent_at,
        };
        self.send_change(id, &contact, secret, &target, body, change, |store, c| {
            store.edit_text(c, secret, &target, &text).map(drop)
        })
        .await
    }

    pub(super) async fn delete(
        &mut self,
        id: String,
        handle: String,
        secret: bool,
        target: String,
        for_everyone: bool,
    ) {
        if !for_everyone {
            let done = (|| {
                let contact = self.known(&handle)?;
                if !self
                    .store
                    .delete_message(&contact.account_id, secret, &target)?
                {
                    return Err(RichError::NoSuchMessage(target.clone()).into());
                }
                self.store.truncate_wal()?;
                Ok::<_, ClientError>(contact)
            })();
            return match done {
                Ok(contact) => {
                    self.emit(Event::MessageRemoved(Expired {
                        id: target,
                        contact: contact.handle,
                        secret,
                    }))
                    .await
                }
                Err(e) => self.action_failed(id, &e).await,
            };
        }
        let checked = (|| {
            let contact = self.sendable(&handle)?;
            self.own_recent(&contact, secret, &target)?;
            Ok::<_, ClientError>(contact)
        })();
        let contact = match checked {
            Ok(c) => c,
            Err(e) => return self.action_failed(id, &e).await,
        };
        let sent_at = self.clock.now_ms();
        let body = Body::Delete {
            id: id.clone(),
            target: target.clone(),
            sent_at,
        };
        let change = Change {
            id: id.clone(),
            kind: MessageKind::Delete,
            outgoing: true,
            emoji: None,
            sent_at,
        };
        self.send_change(id, &contact, secret, &target, body, change, |store, c| {
            store.tombstone(c, secret, &target).map(drop)
        })
        .await
    }

    /// A contact we may send to.
    fn sendable(&self, handle: &str) -> Result<Contact, ClientError> {
        let contact = self.known(handle)?;
        if contact.blocked {
            return Err(ClientError::Blocked(contact.handle));
        }
        Ok(contact)
    }

    /// Hands a change to the relay and, once it is on its way, makes it here too (`apply`)
    /// and reports it. A change the relay could not take is not made here either, so trying
    /// again does the same thing. The relay's answer comes back as a `Sent` (see
    /// `action_answered`).
    #[allow(clippy::too_many_arguments)]
    async fn send_change(
        &mut self,
        id: String,
        contact: &Contact,
        secret: bool,
        target: &str,
        body: Body,
        change: Change,
        apply: impl FnOnce(&crate::client::store::Store, &str) -> Result<(), StoreError>,
    ) {
        let content = Content::of(body);
        let submitted = async {
            let out = self
                .prepare(&contact.handle, secret, &content, None)
                .await?;
            Ok::<_, ClientError>(self.submit(out, false).await?)
        }
        .await;
        let reply = match submitted {
            Ok(r) => r,
            Err(e) => return self.action_failed(id, &e).await,
        };
        self.actions.insert(id.clone());
        let done = self.sent.clone();
        let (sent_id, handle) = (id.clone(), contact.handle.clone());
        tokio::spawn(async move {
            let result = reply.answer().await;
            let _ = done.send(Sent {
                id: sent_id,
                handle,
                secret,
                result,
            });
        });
        let changed = apply(&self.store, &contact.account_id).and_then(|()| {
            if change.kind != MessageKind::Reaction {
                // The old text must not stay in the WAL.
                self.store.truncate_wal()?;
            }
            self.store
                .thread_message(&contact.account_id, secret, target)
        });
        match changed {
            Ok(Some(message)) => {
                self.emit(Event::MessageChanged {
                    message,
                    change: Box::new(change),
                })
                .await
            }
            Ok(None) => {}
            Err(e) => self.action_failed(id, &ClientError::from(e)).await,
        }
    }

    async fn action_failed(&self, id: String, e: &ClientError) {
        self.emit(Event::MessageFailed {
            id,
            error: describe(e),
        })
        .await
    }

    /// The relay answered one of our changes' requests.
    pub(super) async fn action_answered(&mut self, sent: Sent) {
        match sent.result {
            Ok(_) => {
                self.emit(Event::MessageState {
                    id: sent.id,
                    state: MessageState::Sent,
                })
                .await
            }
            Err(e) => self.action_failed(sent.id, &ClientError::from(e)).await,
        }
    }

    /// Applies a peer's reaction, edit or deletion inside the caller's transaction; one that
    /// breaks the rules changes nothing.
    pub(super) fn apply_change(
        &self,
        contact: &Contact,
        secret: bool,
        body: Body,
    ) -> Result<Incoming, StoreError> {
        let (kind, name, id, target, sent_at) = match &body {
            Body::Reaction {
                id,
                target,
                sent_at,
                ..
            } => (MessageKind::Reaction, "reaction", id, target, *sent_at),
            Body::Edit {
                id,
                target,
                sent_at,
                ..
            } => (MessageKind::Edit, "edit", id, target, *sent_at),
            Body::Delete {
                id,
                target,
                sent_at,
            } => (MessageKind::Delete, "delete", id, target, *sent_at),
            _ => return Ok(Incoming::Nothing),
        };
        let (id, target) = (id.clone(), target.clone());
        let account = &contact.account_id;
        let Some(m) = self.store.thread_message(account, secret, &target)? else {
            let why = if self.store.in_other_thread(account, secret, &target)? {
                "names a message of the other thread"
            } else {
                "names an unknown message"
            };
            ignored(name, why);
            return Ok(Incoming::Nothing);
        };
        if m.deleted || !m.kind.is_text() {
            ignored(name, "names a deleted message or no text");
            return Ok(Incoming::Nothing);
        }
        let authors_own = || {
            if m.outgoing {
                ignored(name, "from someone who is not the author");
                return false;
            }
            if self.clock.now_ms().saturating_sub(m.sent_at) > CHANGE_WINDOW_MS {
                ignored(name, "older than the window");
                return false;
            }
            true
        };
        let mut emoji_taken = None;
        match body {
            Body::Reaction { emoji, .. } => {
                if emoji.as_deref().is_some_and(|e| check_emoji(e).is_err()) {
                    ignored(name, "not one emoji");
                    return Ok(Incoming::Nothing);
                }
                self.store
                    .set_reaction(account, secret, &target, false, emoji.as_deref())?;
                emoji_taken = emoji;
            }
            Body::Edit { text, .. } => {
                if !authors_own() {
                    return Ok(Incoming::Nothing);
                }
                if text.trim().is_empty() || text.len() > content::MAX_TEXT_BYTES {
                    ignored(name, "empty or too long");
                    return Ok(Incoming::Nothing);
                }
                self.store.edit_text(account, secret, &target, &text)?;
                self.wipe_wal.set(true);
            }
            _ => {
                if !authors_own() {
                    return Ok(Incoming::Nothing);
                }
                self.store.tombstone(account, secret, &target)?;
                self.wipe_wal.set(true);
            }
        }
        let Some(message) = self.store.thread_message(account, secret, &target)? else {
            return Ok(Incoming::Nothing);
        };
        Ok(Incoming::Changed(
            message,
            Change {
                id,
                kind,
                outgoing: false,
                emoji: emoji_taken,
                sent_at,
            },
        ))
    }

    /// Truncates the WAL if a burst just committed overwrote a text.
    pub(super) fn wipe_wal_if_due(&self) {
        if self.wipe_wal.replace(false)
            && let Err(e) = self.store.truncate_wal()
        {
            tracing::error!(error = %e, "the WAL could not be truncated after a change");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(excerpt("hi\nthere"), "hi there");
        let long = "x".repeat(100);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), EXCERPT_CHARS);
        assert!(e.ends_with('…'));
        assert!(check_emoji("👍").is_ok());
        assert!(check_emoji("a b").is_err());
        assert!(check_emoji("").is_err());
    }
}
