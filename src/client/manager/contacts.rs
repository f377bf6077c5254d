//! The user's commands on a contact as a whole (block, unblock, remove) and on a failed
//! message (send it again, by hand or once a changed key is accepted).
//!
//! Owns the rules (who may be blocked or removed, which messages may go again); the rows are
//! the store's, the sending is `send`'s.

use super::{ClientError, Event, Manager, Warning, describe};
use crate::client::store::{Message, MessageState};

/// What happened to a contact, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactChange {
    Blocked,
    Unblocked,
    /// The contact and both threads are gone; `messages` is how many messages went.
    Removed {
        messages: usize,
    },
}

impl Manager {
    /// Blocks (or unblocks) a contact: nothing a blocked contact sends is kept or answered,
    /// nothing can be sent to them, and they are left out of the contact list.
    pub(super) async fn block(&mut self, tag: u64, handle: String, blocked: bool) {
        let result = self.known(&handle).and_then(|c| {
            self.store.set_blocked(&c.account_id, blocked)?;
            Ok(if blocked {
                ContactChange::Blocked
            } else {
                ContactChange::Unblocked
            })
        });
        self.contact_changed(tag, handle, result).await
    }

    /// Forgets a contact and both threads (not the session: see `Store::remove_contact`). If
    /// they write again they come back as a new contact (block them to keep them out).
    pub(super) async fn remove(&mut self, tag: u64, handle: String) {
        let result = self.known(&handle).and_then(|c| {
            let messages = self.store.remove_contact(&c.account_id)?;
            Ok(ContactChange::Removed { messages })
        });
        self.contact_changed(tag, handle, result).await
    }

    async fn contact_changed(
        &mut self,
        tag: u64,
        handle: String,
        result: Result<ContactChange, ClientError>,
    ) {
        match result {
            Ok(change) => {
                tracing::info!(?change, "contact changed");
                self.emit(Event::ContactChanged {
                    tag,
                    handle,
                    change,
                })
                .await;
                match self.store.summaries() {
                    Ok(list) => self.emit(Event::Contacts(list)).await,
                    Err(e) => {
                        self.emit(Event::Warning(Warning::general(describe(&e))))
                            .await
                    }
                }
            }
            Err(e) => {
                self.emit(Event::Failed {
                    tag,
                    error: describe(&e),
                })
                .await
            }
        }
    }

    /// Sends a failed message of ours again.
    pub(super) async fn retry(&mut self, tag: u64, id: String) {
        match self.store.outgoing(&id) {
            // A file that did not get up goes up again first; its message follows.
            Ok(Some(m))
                if m.state == MessageState::Failed
                    && m.attachment.as_ref().is_some_and(|a| {
                        a.state != crate::client::attachment::AttachmentState::Ready
                    }) =>
            {
                self.download(tag, id).await
            }
            Ok(Some(m)) if m.state == MessageState::Failed => self.resend(vec![m]).await,
            Ok(_) => {
                self.emit(Event::Failed {
                    tag,
                    error: describe(&ClientError::NotRetryable),
                })
                .await
            }
            Err(e) => {
                self.emit(Event::Failed {
                    tag,
                    error: describe(&e),
                })
                .await
            }
        }
    }

    /// After the user accepted `account_id`'s new key: the secret messages that failed for
    /// the change go now.
    pub(super) async fn resend_held(&mut self, account_id: &str) {
        match self.store.held_for_key(account_id) {
            Ok(held) if !held.is_empty() => self.resend(held).await,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot read messages held for a key change"),
        }
    }

    async fn resend(&mut self, mut messages: Vec<Message>) {
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        if let Err(e) = self.store.resend(&ids) {
            return self
                .emit(Event::Warning(Warning::general(describe(&e))))
                .await;
        }
        for m in &mut messages {
            m.state = MessageState::Sending;
            self.emit(Event::MessageState {
                id: m.id.clone(),
                state: MessageState::Sending,
            })
            .await;
        }
        self.transmit_all(&messages).await
    }
}
