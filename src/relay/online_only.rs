//! Online-only envelopes (typing indicators): checked like any envelope, then handed to the
//! recipient's connection if it is online (here, or on another relay sharing the database:
//! `Directory::pass_elsewhere`), and otherwise dropped. Never stored: they touch neither the
//! queue nor its writer, so nothing of them reaches the relay's files (on PostgreSQL, those
//! passed to another relay go through its notification queue; see docs/protocol.md).
//!
//! Owns the per-connection inbox they wait in (in memory, bounded: what does not fit is
//! dropped, as for an offline recipient) and the rule that the sender's answer is the same
//! whether the recipient was online or not, so that it reveals no presence. Must not read
//! the envelope's contents.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::Relay;
use super::store::{NewEnvelope, Outcome, Queued, Stored};
use super::writer::{Enqueued, Fanned};

/// Most online-only envelopes held for one connection that has not written them out yet.
const MAX_ITEMS: usize = 32;
/// Most payload bytes of them held for one connection.
const MAX_BYTES: usize = 64 << 10;

/// A connection's online-only envelopes, waiting to be written to it.
#[derive(Default)]
pub(crate) struct Inbox {
    held: Mutex<(VecDeque<Queued>, usize)>,
    arrived: Notify,
}

impl Inbox {
    /// Holds `q` for the connection, unless it holds too much already: then `q` is dropped.
    pub(crate) fn put(&self, q: Queued) {
        {
            let mut held = self.lock();
            if held.0.len() >= MAX_ITEMS || held.1 + q.payload.len() > MAX_BYTES {
                return;
            }
            held.1 += q.payload.len();
            held.0.push_back(q);
        }
        self.arrived.notify_one();
    }

    /// Takes everything held, oldest first.
    pub fn take(&self) -> Vec<Queued> {
        let mut held = self.lock();
        held.1 = 0;
        held.0.drain(..).collect()
    }

    /// Resolves once something has arrived since the last time it resolved.
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Queued>, usize)> {
        // Every critical section leaves the inbox consistent, so a poisoned lock is usable.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks `e` as the queue's writer would (the recipient exists; for a sealed one, the
/// access token and identity key), then hands it to the recipient's connection if there is
/// one. Resolves to what the sender is told: `Queued(0)` (answered `ok`) whether it was
/// handed over or dropped, the writer's refusal otherwise, None if the check failed.
pub(crate) async fn pass_on(relay: Arc<Relay>, e: NewEnvelope) -> Enqueued {
    let (to, origin) = (e.recipient.clone(), e.origin.clone());
    match relay.db(move |db| db.refusal(&to, &origin)).await {
        Err(err) => {
            tracing::warn!(error = %err, "cannot check an online-only envelope");
            None
        }
        Ok(Some(refused)) => Some(refused),
        Ok(None) => {
            let here = relay
                .lock_online()
                .get(&e.recipient)
                .map(|o| o.online_only.clone());
            match here {
                Some(inbox) => inbox.put(e.to_queued(0)),
                None => pass_elsewhere(&relay, vec![(e.recipient.clone(), e.to_queued(0))]),
            }
            Some(Stored::Queued(0))
        }
    }
}

/// As `pass_on`, for every copy of a fan-out: handed over only if every copy passes its
/// check, so that online only too is all or none. Resolves to `Queued` (ids 0) whether the
/// recipients were online or not, the refusals otherwise, None if a check failed.
pub(crate) async fn pass_on_all(relay: Arc<Relay>, copies: Vec<NewEnvelope>) -> Fanned {
    let checks: Vec<_> = copies
        .iter()
        .map(|e| (e.recipient.clone(), e.origin.clone()))
        .collect();
    let checked = relay
        .db(move |db| {
            let mut refused = Vec::new();
            for (to, origin) in checks {
                if let Some(why) = db.refusal(&to, &origin)? {
                    refused.push((to, why));
                }
            }
            Ok(refused)
        })
        .await;
    match checked {
        Err(err) => {
            tracing::warn!(error = %err, "cannot check an online-only fan-out");
            None
        }
        Ok(refused) if !refused.is_empty() => Some(Outcome::Refused(refused)),
        Ok(_) => {
            let mut elsewhere = Vec::new();
            {
                let online = relay.lock_online();
                for e in &copies {
                    match online.get(&e.recipient) {
                        Some(o) => o.online_only.put(e.to_queued(0)),
                        None => elsewhere.push((e.recipient.clone(), e.to_queued(0))),
                    }
                }
            }
            pass_elsewhere(&relay, elsewhere);
            Some(Outcome::Queued(vec![0; copies.len()]))
        }
    }
}

/// Hands online-only envelopes for recipients not connected here to the other relays on
/// the database, if any share it. Not waited for: the sender's answer comes as soon, and
/// says the same, whether a recipient was connected here, elsewhere or nowhere.
fn pass_elsewhere(relay: &Arc<Relay>, envelopes: Vec<(String, Queued)>) {
    if !relay.shared || envelopes.is_empty() {
        return;
    }
    let relay = relay.clone();
    tokio::spawn(async move {
        if let Err(err) = relay.db(move |db| db.pass_elsewhere(&envelopes)).await {
            tracing::warn!(error = %err, "cannot hand online-only envelopes to the other relays; dropped");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(len: usize) -> Queued {
        Queued {
            id: 0,
            sender: None,
            sender_handle: None,
            sealed: true,
            payload: vec![0; len],
            received_at: 0,
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn an_inbox_wakes_its_connection_and_drops_what_does_not_fit() {
        let inbox = Inbox::default();
        inbox.put(envelope(10));
        inbox.arrived().await;
        assert_eq!(inbox.take().len(), 1);
        for _ in 0..MAX_ITEMS + 3 {
            inbox.put(envelope(1));
        }
        assert_eq!(inbox.take().len(), MAX_ITEMS);
        inbox.put(envelope(MAX_BYTES));
        inbox.put(envelope(1));
        assert_eq!(inbox.take().len(), 1);
        assert!(inbox.take().is_empty());
    }
}
