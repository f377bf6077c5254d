//! When the delivery receipts we owe go out: the ids owed per thread, and the pacing that
//! turns a stream of arrivals into few receipts. Read receipts are paced the same way by a
//! second `Receipts` (`reads`).
//!
//! Pure bookkeeping over tokio's clock: no I/O, no store, no crypto. The manager asks it
//! what is due and sends that (`send::flush_receipts`).
//!
//! A receipt in a secret thread is a sealed message of its own, and every receipt a sender
//! opens turns the ratchet, so the next message pays a new key agreement on both sides.
//! Under a stream of messages one receipt per message would cost more cryptography than the
//! messages themselves. So a thread that is quiet answers quickly (`GATHER` after its first
//! message), and a busy thread answers at most once per `INTERVAL`, with every id owed.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// A quiet thread's receipt waits this long for company.
pub(super) const GATHER: Duration = Duration::from_millis(50);

/// A thread sends at most one receipt per this long. Short enough that a ✓✓ is never
/// noticeably late, long enough that a busy thread's receipts carry many ids each.
pub(super) const INTERVAL: Duration = Duration::from_millis(500);

/// A thread: the contact's handle and whether it is the secret one.
pub(super) type ThreadKey = (String, bool);

#[derive(Default)]
struct Thread {
    /// Message ids not yet receipted, in arrival order.
    owed: Vec<String>,
    /// When the first of `owed` arrived.
    since: Option<Instant>,
    /// When this thread's last receipt went out.
    last: Option<Instant>,
}

impl Thread {
    fn due(&self) -> Option<Instant> {
        let first = self.since? + GATHER;
        Some(match self.last {
            Some(last) => first.max(last + INTERVAL),
            None => first,
        })
    }
}

/// The receipts owed, per thread.
#[derive(Default)]
pub(super) struct Receipts {
    threads: BTreeMap<ThreadKey, Thread>,
}

impl Receipts {
    /// Records that message `id` of `thread` arrived at `now` and is owed a receipt.
    pub(super) fn owe(&mut self, thread: ThreadKey, id: String, now: Instant) {
        let t = self.threads.entry(thread).or_default();
        t.since.get_or_insert(now);
        t.owed.push(id);
    }

    /// When the next receipt is due; None while none is owed.
    pub(super) fn due(&self) -> Option<Instant> {
        self.threads.values().filter_map(Thread::due).min()
    }

    /// Takes the receipts due at `now`, and forgets threads that no longer hold anything back.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<(ThreadKey, Vec<String>)> {
        let mut taken = Vec::new();
        for (key, t) in &mut self.threads {
            if t.due().is_some_and(|d| d <= now) {
                t.since = None;
                t.last = Some(now);
                taken.push((key.clone(), std::mem::take(&mut t.owed)));
            }
        }
        // A thread whose last receipt is an interval old no longer delays the next one.
        self.threads
            .retain(|_, t| t.since.is_some() || t.last.is_some_and(|l| l + INTERVAL > now));
        taken
    }

    /// Takes every receipt owed, due or not (the manager is stopping).
    pub(super) fn take_all(&mut self) -> Vec<(ThreadKey, Vec<String>)> {
        std::mem::take(&mut self.threads)
            .into_iter()
            .filter(|(_, t)| !t.owed.is_empty())
            .map(|(key, t)| (key, t.owed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob(secret: bool) -> ThreadKey {
        ("bob".to_string(), secret)
    }

    fn ids(taken: &[(ThreadKey, Vec<String>)]) -> Vec<(bool, Vec<&str>)> {
        taken
            .iter()
            .map(|((_, s), ids)| (*s, ids.iter().map(String::as_str).collect()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_thread_answers_after_the_gather_delay() {
        let mut r = Receipts::default();
        assert_eq!(r.due(), None);
        let t0 = Instant::now();
        r.owe(bob(true), "a".into(), t0);
        assert_eq!(r.due(), Some(t0 + GATHER));
        assert!(
            r.take_due(t0 + GATHER - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(ids(&r.take_due(t0 + GATHER)), [(true, vec!["a"])]);
        assert_eq!(r.due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_thread_answers_once_an_interval_with_every_id_owed() {
        let mut r = Receipts::default();
        let t0 = Instant::now();
        r.owe(bob(true), "a".into(), t0);
        assert_eq!(ids(&r.take_due(t0 + GATHER)), [(true, vec!["a"])]);
        let sent = t0 + GATHER;
        for (k, id) in ["b", "c", "d"].into_iter().enumerate() {
            r.owe(
                bob(true),
                id.into(),
                sent + Duration::from_millis(10 * k as u64 + 1),
            );
        }
        // The next receipt waits for the interval since the last one, not just the gather.
        assert_eq!(r.due(), Some(sent + INTERVAL));
        assert!(
            r.take_due(sent + INTERVAL - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(
            ids(&r.take_due(sent + INTERVAL)),
            [(true, vec!["b", "c", "d"])]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_quiet_interval_a_thread_answers_quickly_again() {
        let mut r = Receipts::default();
        let t0 = Instant::now();
        r.owe(bob(false), "a".into(), t0);
        r.take_due(t0 + GATHER);
        let later = t0 + GATHER + INTERVAL * 3;
        r.owe(bob(false), "b".into(), later);
        assert_eq!(r.due(), Some(later + GATHER));
    }

    #[tokio::test(start_paused = true)]
    async fn threads_are_paced_apart_and_all_go_at_shutdown() {
        let mut r = Receipts::default();
        let t0 = Instant::now();
        r.owe(bob(false), "n1".into(), t0);
        r.take_due(t0 + GATHER);
        // The normal thread just answered; the secret one has not answered for a while.
        let t1 = t0 + GATHER + Duration::from_millis(1);
        r.owe(bob(false), "n2".into(), t1);
        r.owe(bob(true), "s1".into(), t1);
        assert_eq!(ids(&r.take_due(t1 + GATHER)), [(true, vec!["s1"])]);
        assert_eq!(ids(&r.take_all()), [(false, vec!["n2"])]);
        assert_eq!(r.due(), None);
        assert!(r.take_all().is_empty());
    }
}
