//! An online connection's mailbox: envelopes the queue's writer has just staged for its
//! account, handed over in queue order while their commit is under way, so that a connection
//! that has pushed everything it read can push new mail without waiting for the sync or
//! reading the queue again; and the word that such a commit is over.
//!
//! Owns only that hand-over (in memory, bounded). The queue on disk stays the truth: what a
//! full mailbox cannot hold is dropped here and read from the queue instead, once committed,
//! and nothing is acknowledged or deleted through it. Must not touch the database or a socket.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::store::Queued;

/// Most envelopes held for one connection; past it the connection reads the queue. A
/// connection that is reading its socket empties its mailbox as fast as the writer fills
/// it, so little is needed; a connection that does not read must not make the relay hold
/// much for it (16,384 connections × 64 KiB is 1 GiB at worst, against none before).
const MAX_ITEMS: usize = 64;
/// Most payload bytes held for one connection (a large envelope goes through the queue).
const MAX_BYTES: usize = 64 << 10;

#[derive(Default)]
pub(crate) struct Mailbox {
    held: Mutex<Held>,
    /// Mail arrived (or some could not be held).
    arrived: Notify,
    /// A commit that staged mail here is over.
    committed: Notify,
}

#[derive(Default)]
struct Held {
    items: VecDeque<Queued>,
    bytes: usize,
    /// Some mail was not held: the connection must read the queue to find it.
    overflowed: bool,
    /// The highest id handed over since the last take, held or not (0: none).
    upto: u64,
}

/// What a connection takes out of its mailbox.
pub(crate) struct Mail {
    /// New envelopes, in queue order; their commit may still be under way.
    pub items: Vec<Queued>,
    /// Some were not held; the queue has them once they are committed.
    pub overflowed: bool,
    /// The highest id handed over since the last take, held or not (0: none).
    pub upto: u64,
}

impl Mailbox {
    /// Hands over an envelope just staged for this connection's account. Called by the
    /// writer in queue order, so the items are in id order.
    pub fn put(&self, q: Queued) {
        {
            let mut held = self.lock();
            held.upto = held.upto.max(q.id);
            if held.overflowed
                || held.items.len() >= MAX_ITEMS
                || held.bytes + q.payload.len() > MAX_BYTES
            {
                held.overflowed = true;
            } else {
                held.bytes += q.payload.len();
                held.items.push_back(q);
            }
        }
        self.arrived.notify_one();
    }

    /// Tells the connection that committed mail it was not handed is in the queue (another
    /// relay committed it, or word of such mail may have been lost): it reads the queue, as
    /// after an overflow.
    pub fn read_queue(&self) {
        self.lock().overflowed = true;
        self.arrived.notify_one();
    }

    /// Hands over that envelope `id`, just staged, is coming, without holding it: the
    /// connection reads the queue for it once its commit is over. For a queue other relays
    /// commit to too, where an envelope this relay stages may follow another relay's in the
    /// queue that this connection has not heard of yet.
    pub fn put_unheld(&self, id: u64) {
        {
            let mut held = self.lock();
            held.upto = held.upto.max(id);
            held.overflowed = true;
        }
        self.arrived.notify_one();
    }

    /// Takes everything held, and whether anything could not be.
    pub fn take(&self) -> Mail {
        let mut held = self.lock();
        let mail = Mail {
            items: held.items.drain(..).collect(),
            overflowed: held.overflowed,
            upto: held.upto,
        };
        held.bytes = 0;
        held.overflowed = false;
        held.upto = 0;
        mail
    }

    /// Resolves once mail has arrived since the last time it resolved.
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }

    /// Tells the connection that a commit which staged mail here is over, so a read of the
    /// queue now finds what it kept.
    pub fn commit_done(&self) {
        self.committed.notify_one();
    }

    /// Resolves once a commit that staged mail here is over (perhaps one that ended before
    /// the call: a word given while nobody waited is kept for the next wait).
    pub async fn committed(&self) {
        self.committed.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // Every critical section leaves `Held` consistent, so a poisoned lock is usable.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn envelope(id: u64, len: usize) -> Queued {
        Queued {
            id,
            sender: None,
            sender_handle: None,
            sealed: true,
            payload: vec![0; len],
            received_at: 0,
            expires_at: None,
        }
    }

    fn ids(mail: &Mail) -> Vec<u64> {
        mail.items.iter().map(|q| q.id).collect()
    }

    #[tokio::test]
    async fn mail_comes_out_in_the_order_it_went_in_and_wakes_the_reader() {
        let mb = Mailbox::default();
        mb.put(envelope(3, 10));
        mb.put(envelope(7, 10));
        mb.arrived().await;
        let mail = mb.take();
        assert_eq!(ids(&mail), [3, 7]);
        assert!(!mail.overflowed);
        assert!(mb.take().items.is_empty());
    }

    #[test]
    fn what_does_not_fit_is_flagged_not_kept() {
        let mb = Mailbox::default();
        for id in 0..MAX_ITEMS as u64 + 5 {
            mb.put(envelope(id, 1));
        }
        let mail = mb.take();
        assert_eq!(mail.items.len(), MAX_ITEMS);
        assert!(mail.overflowed);
        // The connection learns how far the mail it must read from the queue goes.
        assert_eq!(mail.upto, MAX_ITEMS as u64 + 4);
        // Once flagged, later mail is not held either: it would leave a gap before it.
        let mb = Mailbox::default();
        mb.put(envelope(1, MAX_BYTES));
        mb.put(envelope(2, 1));
        mb.put(envelope(3, 1));
        let mail = mb.take();
        assert_eq!(ids(&mail), [1]);
        assert!(mail.overflowed);
        // Taking starts afresh.
        mb.put(envelope(4, 1));
        let mail = mb.take();
        assert_eq!(ids(&mail), [4]);
        assert!(!mail.overflowed);
        assert_eq!(mail.upto, 4);
    }

    #[test]
    fn word_of_mail_in_the_queue_wakes_the_reader_and_makes_it_read() {
        let mb = Mailbox::default();
        mb.put(envelope(3, 10));
        mb.read_queue();
        assert!(mb.arrived().now_or_never().is_some());
        let mail = mb.take();
        // What it holds is still good; the flag makes the connection read past it.
        assert_eq!(ids(&mail), [3]);
        assert!(mail.overflowed);
        assert!(!mb.take().overflowed, "taking starts afresh");
        // Unheld mail: the id, for the read to wait for its commit, and no payload.
        mb.put_unheld(9);
        let mail = mb.take();
        assert!(mail.items.is_empty());
        assert!(mail.overflowed);
        assert_eq!(mail.upto, 9);
    }

    #[test]
    fn the_end_of_a_commit_told_while_nobody_waits_is_kept_for_the_next_wait() {
        let mb = Mailbox::default();
        mb.commit_done();
        // Resolves at once: the connection that read the queue just before the word came
        // reads it again instead of waiting for the next commit.
        assert!(mb.committed().now_or_never().is_some());
        // Only one is kept: a second wait waits for the next commit.
        assert!(mb.committed().now_or_never().is_none());
    }
}
