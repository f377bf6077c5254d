//! Typing indicators: ours, sent online only to the peer of a thread (the relay never
//! queues them), and theirs, shown until they stop, write, or `SHOWN_FOR` passes without a
//! word from them.
//!
//! Part of the manager (it works on `Manager`'s state). Typing is not a message: it is never
//! stored, retried, acknowledged or receipted, and makes no notification. Must not start a
//! secret session (no bundle is fetched for it) nor look anyone up in the directory. Does
//! nothing when the user turned typing off (`Settings::typing`).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::receipts::ThreadKey;
use super::{Event, Manager, describe};
use crate::client::content::Content;
use crate::client::store::Message;

/// A peer shows as typing for this long after their last word that they are.
pub const SHOWN_FOR: Duration = Duration::from_secs(6);

/// The peers typing now, per thread, with when that stops showing.
#[derive(Default)]
pub(super) struct Peers {
    until: BTreeMap<ThreadKey, Instant>,
}

impl Peers {
    /// `thread`'s peer said at `now` that they are typing; returns whether they were not
    /// shown typing already.
    fn heard(&mut self, thread: ThreadKey, now: Instant) -> bool {
        self.until.insert(thread, now + SHOWN_FOR).is_none()
    }

    /// `thread`'s peer stopped; returns whether they were shown typing.
    fn stop(&mut self, thread: &ThreadKey) -> bool {
        self.until.remove(thread).is_some()
    }

    /// When the next peer stops showing as typing; None while nobody types.
    pub(super) fn due(&self) -> Option<Instant> {
        self.until.values().min().copied()
    }

    /// Takes the threads whose peer stops showing as typing at `now`.
    fn take_due(&mut self, now: Instant) -> Vec<ThreadKey> {
        let due: Vec<ThreadKey> = self
            .until
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            self.until.remove(k);
        }
        due
    }
}

impl Manager {
    /// Tells `to`'s normal or secret thread that the user is typing (or stopped), online
    /// only. Best effort: nothing is sent to someone not among the contacts or blocked, in a
    /// secret thread without a session yet, or while the relay is out of reach.
    pub(super) async fn send_typing(&mut self, to: &str, secret: bool, active: bool) {
        if !self.settings.typing {
            return;
        }
        let contact = match self.store.contact_by_handle(to) {
            Ok(Some(c)) if !c.blocked => c,
            _ => return,
        };
        if secret && !self.has_session(&contact.account_id).await.unwrap_or(false) {
            return;
        }
        let out = match self
            .prepare(to, secret, &Content::typing(active), None)
            .await
        {
            Ok(out) => out,
            Err(e) => return tracing::debug!(error = %describe(&e), "typing not sent"),
        };
        match self.submit(out, true).await {
            // Answered `ok` whether or not the peer was online; only a refusal is worth a line.
            Ok(reply) => {
                tokio::spawn(async move {
                    if let Err(e) = reply.answer().await {
                        tracing::debug!(error = %e, "typing not taken by the relay");
                    }
                });
            }
            Err(e) => tracing::debug!(error = %e, "typing not sent"),
        }
    }

    /// `contact` said they are typing in a thread (or stopped).
    pub(super) async fn typing_heard(&mut self, contact: String, secret: bool, active: bool) {
        let thread = (contact, secret);
        let changed = match active {
            true => self.typing.heard(thread.clone(), Instant::now()),
            false => self.typing.stop(&thread),
        };
        if changed {
            self.typing_event(thread, active).await;
        }
    }

    /// A message from a peer ends their typing in that thread.
    pub(super) async fn typing_ended_by(&mut self, m: &Message) {
        let thread = (m.contact.clone(), m.secret);
        if !m.outgoing && self.typing.stop(&thread) {
            self.typing_event(thread, false).await;
        }
    }

    /// Peers not heard from for `SHOWN_FOR` no longer show as typing.
    pub(super) async fn typing_expired(&mut self) {
        for thread in self.typing.take_due(Instant::now()) {
            self.typing_event(thread, false).await;
        }
    }

    async fn typing_event(&self, (contact, secret): ThreadKey, active: bool) {
        self.emit(Event::Typing {
            contact,
            secret,
            active,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob(secret: bool) -> ThreadKey {
        ("bob".to_string(), secret)
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_shows_typing_for_six_seconds_after_their_last_word() {
        let mut p = Peers::default();
        assert_eq!(p.due(), None);
        let t0 = Instant::now();
        assert!(p.heard(bob(false), t0));
        tokio::time::advance(Duration::from_secs(4)).await;
        // A second word extends it, and is not news.
        assert!(!p.heard(bob(false), Instant::now()));
        assert_eq!(p.due(), Some(t0 + Duration::from_secs(4) + SHOWN_FOR));
        assert!(p.take_due(t0 + SHOWN_FOR).is_empty());
        tokio::time::advance(SHOWN_FOR).await;
        assert_eq!(p.take_due(Instant::now()), [bob(false)]);
        assert_eq!(p.due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn threads_are_apart_and_stopping_ends_it_at_once() {
        let mut p = Peers::default();
        let t0 = Instant::now();
        p.heard(bob(false), t0);
        p.heard(bob(true), t0 + Duration::from_secs(1));
        assert!(p.stop(&bob(false)));
        assert!(!p.stop(&bob(false)));
        assert_eq!(p.due(), Some(t0 + Duration::from_secs(1) + SHOWN_FOR));
        assert_eq!(p.take_due(t0 + Duration::from_secs(60)), [bob(true)]);
    }
}
