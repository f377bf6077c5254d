//! What an authenticated connection pushes from its account's queue, and when: a state
//! machine with no I/O. Inputs are the mail the writer hands over, the result of a read of
//! the queue, an ack; outputs are `Step`s (deliver, delete, flush, drained) and the next read
//! to make (`Read`), which the connection carries out.
//!
//! Owns the rules that make delivery exact: no id pushed twice, no gap (an envelope handed
//! over before its commit is never skipped: a read that comes up short of it waits for the
//! commit), at most `window` envelopes in flight, `Drained` once. Must not touch a socket,
//! the database or the clock: the caller gives it the time.

use std::collections::HashMap;

use super::mailbox::Mail;
use super::store::Queued;
use super::writer::Urgency;

/// Something the connection must do, in the order given.
#[derive(Debug)]
pub(crate) enum Step {
    /// Write this envelope's delivery frame (unflushed).
    Deliver(Queued),
    /// Have envelope `id` deleted as soon as `Urgency` says: it expired before it could be
    /// delivered.
    Remove(u64, Urgency),
    /// Flush the frames written.
    Flush,
    /// Tell the client that everything queued when it connected has been pushed.
    Drained,
}

/// A read of the queue to make: up to `room` envelopes with ids above `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Read {
    pub after: u64,
    pub room: usize,
}

/// What an ack named.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acked {
    /// An envelope in flight here: delete it as `Urgency` says, then read on.
    InFlight(Urgency),
    /// Not pushed on this connection (before a reconnection, or never): nothing to delete;
    /// it is still queued and is pushed, and acked, again.
    Unknown,
}

#[derive(Debug)]
pub(crate) struct Pusher {
    /// Most envelopes pushed and not acknowledged.
    window: usize,
    last_pushed: u64,
    /// Pushed and not acknowledged yet, with how soon each must be deleted once it is.
    in_flight: HashMap<u64, Urgency>,
    drained_sent: bool,
    /// The queue may hold envelopes not pushed yet: the last read filled the window, or mail
    /// was handed over that could not be pushed at once. When false, everything committed
    /// up to the last read has been pushed, and what the writer hands over comes next.
    more: bool,
    /// The highest id the writer has handed over for this account. Mail is handed over
    /// before its commit, so a read of the queue may not find all of it yet.
    handed: u64,
    /// The last read came up short of `handed`: read again once a commit is over.
    awaiting_commit: bool,
}

impl Pusher {
    /// A connection that has pushed nothing yet: the queue may hold anything.
    pub fn new(window: usize) -> Pusher {
        Pusher {
            window,
            last_pushed: 0,
            in_flight: HashMap::new(),
            drained_sent: false,
            more: true,
            handed: 0,
            awaiting_commit: false,
        }
    }

    /// Whether a read came up short of mail still being committed: the end of a commit
    /// should wake the connection (then `commit_over`).
    pub fn awaiting_commit(&self) -> bool {
        self.awaiting_commit
    }

    /// Starts a round of reads (then `next_read` until None). Every wake starts one: mail,
    /// an ack that made room, the end of a commit a short read waited for (what it missed
    /// is in the queue now, or its commit failed and a later id passes it).
    pub fn start_round(&mut self) {
        self.awaiting_commit = false;
    }

    /// Mail the writer handed over. While caught up it is exactly what follows the last
    /// envelope pushed, so it goes out at once, without waiting for its commit or reading
    /// the queue; otherwise the queue is read (`next_read`), as it holds the same envelopes
    /// once they are committed.
    pub fn mail(&mut self, mail: Mail, now: u64) -> Vec<Step> {
        if mail.overflowed {
            self.more = true;
        }
        self.handed = self.handed.max(mail.upto);
        let mut steps = Vec::new();
        if self.more {
            return steps;
        }
        for q in mail.items {
            // Those already read from the queue have ids up to `last_pushed`.
            if q.id <= self.last_pushed {
                continue;
            }
            if self.in_flight.len() >= self.window {
                // The rest waits in the queue for acks to make room.
                self.more = true;
                break;
            }
            self.deliver(q, now, &mut steps);
        }
        if steps.iter().any(|s| matches!(s, Step::Deliver(_))) {
            steps.push(Step::Flush);
        }
        steps
    }

    /// The read of the queue to make now, if any. None while everything is pushed, while
    /// the window is more than half full (refilling it only once half of it is acknowledged
    /// keeps reads to one per half window under load, while the half still in flight keeps
    /// the recipient busy), or while a short read waits for a commit.
    pub fn next_read(&self) -> Option<Read> {
        if !self.more || self.awaiting_commit {
            return None;
        }
        let room = self.window.saturating_sub(self.in_flight.len());
        if room == 0 || (room < self.window / 2 && !self.in_flight.is_empty()) {
            return None;
        }
        Some(Read {
            after: self.last_pushed,
            room,
        })
    }

    /// What the read `asked` found: the envelopes with ids above `asked.after`, in order.
    pub fn read(&mut self, asked: Read, batch: Vec<Queued>, now: u64) -> Vec<Step> {
        let short = batch.len() < asked.room;
        let mut steps = Vec::new();
        for q in batch {
            self.deliver(q, now, &mut steps);
        }
        steps.push(Step::Flush);
        if short && self.last_pushed < self.handed {
            // The rest is still being committed (or its commit failed; then a later
            // envelope's id passes `handed`). Its commit's end wakes the connection.
            self.awaiting_commit = true;
        } else if short {
            self.more = false;
            if !self.drained_sent {
                self.drained_sent = true;
                steps.push(Step::Drained);
            }
        }
        steps
    }

    /// The client acknowledged envelope `id`.
    pub fn ack(&mut self, id: u64) -> Acked {
        match self.in_flight.remove(&id) {
            Some(urgency) => Acked::InFlight(urgency),
            None => Acked::Unknown,
        }
    }

    /// Delivers `q`, or has it deleted if it expired before it could be delivered.
    fn deliver(&mut self, q: Queued, now: u64, steps: &mut Vec<Step>) {
        self.last_pushed = q.id;
        if q.expires_at.is_some_and(|at| at <= now) {
            steps.push(Step::Remove(q.id, Urgency::Next));
            return;
        }
        let urgency = match q.expires_at {
            Some(_) => Urgency::Next,
            None => Urgency::WhenIdle,
        };
        self.in_flight.insert(q.id, urgency);
        steps.push(Step::Deliver(q));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn q(id: u64) -> Queued {
        Queued {
            id,
            sender: None,
            sender_handle: None,
            sealed: true,
            payload: vec![0; 8],
            received_at: 0,
            expires_at: None,
        }
    }

    fn expiring(id: u64, at: u64) -> Queued {
        Queued {
            expires_at: Some(at),
            ..q(id)
        }
    }

    fn mail(items: Vec<Queued>, overflowed: bool, upto: u64) -> Mail {
        Mail {
            items,
            overflowed,
            upto,
        }
    }

    /// Steps as a line: `d3` deliver 3, `x3` delete 3, `f` flush, `drained`.
    fn show(steps: &[Step]) -> String {
        steps
            .iter()
            .map(|s| match s {
                Step::Deliver(q) => format!("d{}", q.id),
                Step::Remove(id, _) => format!("x{id}"),
                Step::Flush => "f".into(),
                Step::Drained => "drained".into(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One round of reads against `queue` (the committed envelopes), as the connection runs
    /// it; the steps of every read, joined.
    fn round(p: &mut Pusher, queue: &[Queued], now: u64) -> String {
        p.start_round();
        let mut out = Vec::new();
        while let Some(read) = p.next_read() {
            let batch: Vec<Queued> = queue
                .iter()
                .filter(|e| e.id > read.after)
                .take(read.room)
                .cloned()
                .collect();
            out.push(show(&p.read(read, batch, now)));
        }
        out.join(" | ")
    }

    fn queue(ids: std::ops::RangeInclusive<u64>) -> Vec<Queued> {
        ids.map(q).collect()
    }

    #[test]
    fn a_connection_pushes_its_backlog_then_says_drained_once() {
        let mut p = Pusher::new(4);
        assert_eq!(round(&mut p, &queue(1..=3), 0), "d1 d2 d3 f drained");
        assert_eq!(p.next_read(), None);
        // Nothing new: nothing to read, and no second Drained.
        assert_eq!(round(&mut p, &queue(1..=3), 0), "");
    }

    #[test]
    fn a_full_window_waits_for_half_of_it_to_be_acknowledged() {
        let q = queue(1..=6);
        let mut p = Pusher::new(4);
        assert_eq!(round(&mut p, &q, 0), "d1 d2 d3 d4 f");
        assert_eq!(p.ack(1), Acked::InFlight(Urgency::WhenIdle));
        // One slot free of four: not worth a read.
        assert_eq!(round(&mut p, &q, 0), "");
        assert_eq!(p.ack(2), Acked::InFlight(Urgency::WhenIdle));
        // The read filled the room it had: the queue may hold more.
        assert_eq!(round(&mut p, &q, 0), "d5 d6 f");
        p.ack(3);
        p.ack(4);
        assert_eq!(round(&mut p, &q, 0), "f drained");
    }

    #[test]
    fn a_read_short_of_mail_still_being_committed_waits_for_the_commit() {
        let mut committed = queue(1..=2);
        let mut p = Pusher::new(8);
        assert_eq!(round(&mut p, &committed, 0), "d1 d2 f drained");
        // 3..=5 handed over, but the mailbox overflowed; only 3 is committed yet.
        assert!(p.mail(mail(vec![], true, 5), 0).is_empty());
        committed.push(q(3));
        assert_eq!(round(&mut p, &committed, 0), "d3 f");
        assert!(p.awaiting_commit(), "4 and 5 are not read yet");
        assert_eq!(p.next_read(), None);
        committed.extend([q(4), q(5)]);
        assert_eq!(round(&mut p, &committed, 0), "d4 d5 f");
        assert!(!p.awaiting_commit());
    }

    #[test]
    fn on_a_shared_queue_another_relays_mail_goes_first_and_its_late_word_pushes_nothing_twice() {
        let mut committed = queue(1..=2);
        let mut p = Pusher::new(8);
        assert_eq!(round(&mut p, &committed, 0), "d1 d2 f drained");
        // Another relay committed 3; its word is still on the way when this relay stages 4,
        // handed over by id only (`Mailbox::put_unheld`).
        committed.push(q(3));
        assert!(p.mail(mail(vec![], true, 4), 0).is_empty());
        assert_eq!(round(&mut p, &committed, 0), "d3 f");
        assert!(p.awaiting_commit(), "4 is not committed yet");
        committed.push(q(4));
        assert_eq!(round(&mut p, &committed, 0), "d4 f");
        // The word about 3 arrives (`Mailbox::read_queue`): the read finds nothing new.
        assert!(p.mail(mail(vec![], true, 0), 0).is_empty());
        assert_eq!(round(&mut p, &committed, 0), "f");
        // Word of 5, committed by the other relay: read and pushed.
        committed.push(q(5));
        assert!(p.mail(mail(vec![], true, 0), 0).is_empty());
        assert_eq!(round(&mut p, &committed, 0), "d5 f");
    }

    #[test]
    fn a_failed_commit_does_not_hold_the_connection_forever() {
        let mut p = Pusher::new(8);
        assert_eq!(round(&mut p, &[], 0), "f drained");
        assert!(p.mail(mail(vec![], true, 2), 0).is_empty());
        // 1 and 2 never reach the queue (their commit failed): the read is short.
        assert_eq!(round(&mut p, &[], 0), "f");
        assert!(p.awaiting_commit());
        // A later envelope passes them; then everything is pushed.
        assert_eq!(p.mail(mail(vec![], true, 3), 0).len(), 0);
        assert_eq!(round(&mut p, &[q(3)], 0), "d3 f");
        assert!(!p.awaiting_commit());
    }

    #[test]
    fn mail_while_caught_up_goes_out_at_once_and_never_twice() {
        let mut p = Pusher::new(8);
        assert_eq!(round(&mut p, &queue(1..=3), 0), "d1 d2 d3 f drained");
        assert_eq!(
            show(&p.mail(mail(vec![q(3), q(4), q(5)], false, 5), 0)),
            "d4 d5 f"
        );
        // Its commit made the queue hold them too: nothing is read or pushed again.
        assert_eq!(round(&mut p, &queue(1..=5), 0), "");
    }

    #[test]
    fn mail_past_the_window_is_left_to_the_queue() {
        let backlog = queue(1..=3);
        let mut p = Pusher::new(2);
        assert_eq!(round(&mut p, &[], 0), "f drained");
        assert_eq!(show(&p.mail(mail(backlog.clone(), false, 3), 0)), "d1 d2 f");
        assert_eq!(round(&mut p, &backlog, 0), "", "the window is full");
        p.ack(1);
        p.ack(2);
        // A short read: caught up again, so new mail goes straight out, 3 not again.
        assert_eq!(round(&mut p, &backlog, 0), "d3 f");
        assert_eq!(show(&p.mail(mail(vec![q(3), q(4)], false, 4), 0)), "d4 f");
        assert_eq!(round(&mut p, &queue(1..=4), 0), "");
    }

    #[test]
    fn an_expired_envelope_is_deleted_not_delivered_and_its_ack_is_unknown() {
        let mut p = Pusher::new(4);
        let backlog = vec![expiring(1, 100), expiring(2, 500), q(3)];
        assert_eq!(round(&mut p, &backlog, 200), "x1 d2 d3 f drained");
        assert_eq!(p.ack(1), Acked::Unknown);
        assert_eq!(p.ack(2), Acked::InFlight(Urgency::Next));
        assert_eq!(p.ack(3), Acked::InFlight(Urgency::WhenIdle));
        assert_eq!(p.ack(3), Acked::Unknown, "acked twice");
        assert_eq!(p.ack(99), Acked::Unknown, "never pushed here");
    }

    /// Random interleavings of the writer (handing mail over before its commit, the
    /// mailbox overflowing, commits) and the client (acking some of what is in flight):
    /// every committed envelope is delivered exactly once, in id order, and Drained comes
    /// once, before anything handed over after the backlog.
    #[test]
    fn no_envelope_is_pushed_twice_or_skipped_in_any_interleaving() {
        for seed in 0..300 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let window = rng.random_range(1..6);
            let mut p = Pusher::new(window);
            let mut committed: Vec<Queued> = queue(1..=rng.random_range(0..8));
            let mut next_id = committed.len() as u64 + 1;
            // Handed over, not committed yet; and what the mailbox holds for the next take.
            let mut staged: Vec<Queued> = Vec::new();
            let mut held: Vec<Queued> = Vec::new();
            let (mut overflowed, mut upto) = (false, 0);
            let mut delivered: Vec<u64> = Vec::new();
            let mut in_flight: Vec<u64> = Vec::new();
            let mut drained = 0;
            let mut record = |steps: Vec<Step>, delivered: &mut Vec<u64>, inf: &mut Vec<u64>| {
                for s in steps {
                    match s {
                        Step::Deliver(q) => {
                            delivered.push(q.id);
                            inf.push(q.id);
                        }
                        Step::Drained => drained += 1,
                        Step::Remove(..) | Step::Flush => {}
                    }
                }
            };
            let reads = |p: &mut Pusher, committed: &[Queued]| {
                p.start_round();
                let mut steps = Vec::new();
                while let Some(read) = p.next_read() {
                    let batch = committed
                        .iter()
                        .filter(|e| e.id > read.after)
                        .take(read.room)
                        .cloned()
                        .collect();
                    steps.extend(p.read(read, batch, 0));
                }
                steps
            };
            record(reads(&mut p, &committed), &mut delivered, &mut in_flight);
            for _ in 0..60 {
                match rng.random_range(0..4) {
                    0 => {
                        // The writer stages a batch and hands it over.
                        for _ in 0..rng.random_range(1..4) {
                            let e = q(next_id);
                            next_id += 1;
                            upto = e.id;
                            if held.len() >= 2 || overflowed {
                                overflowed = true;
                            } else {
                                held.push(e.clone());
                            }
                            staged.push(e);
                        }
                    }
                    1 => {
                        // The commit is over.
                        committed.append(&mut staged);
                        if p.awaiting_commit() {
                            record(reads(&mut p, &committed), &mut delivered, &mut in_flight);
                        }
                    }
                    2 if upto > 0 || !held.is_empty() => {
                        // The connection takes its mail.
                        let m = mail(std::mem::take(&mut held), overflowed, upto);
                        (overflowed, upto) = (false, 0);
                        let mut steps = p.mail(m, 0);
                        steps.extend(reads(&mut p, &committed));
                        record(steps, &mut delivered, &mut in_flight);
                    }
                    _ if !in_flight.is_empty() => {
                        let id = in_flight.remove(rng.random_range(0..in_flight.len()));
                        assert!(matches!(p.ack(id), Acked::InFlight(_)), "seed {seed}");
                        record(reads(&mut p, &committed), &mut delivered, &mut in_flight);
                    }
                    _ => {}
                }
            }
            // Everything settles: commits end, mail is taken, every delivery is acked.
            committed.append(&mut staged);
            let m = mail(std::mem::take(&mut held), overflowed, upto);
            let mut steps = p.mail(m, 0);
            steps.extend(reads(&mut p, &committed));
            record(steps, &mut delivered, &mut in_flight);
            while let Some(id) = in_flight.pop() {
                p.ack(id);
                record(reads(&mut p, &committed), &mut delivered, &mut in_flight);
            }
            let all: Vec<u64> = committed.iter().map(|e| e.id).collect();
            assert_eq!(delivered, all, "seed {seed}, window {window}");
            assert_eq!(drained, 1, "seed {seed}");
        }
    }
}
