//! The queue's writer: a thread that owns the relay's `store::Queue` and applies every change
//! to the envelope queue through it, many at a time, one batch (`stage`, then `commit`) at a
//! time.
//!
//! Owns the `Queue` and the order of queue writes (the backend gives out the ids). New
//! envelopes are committed durably before their `ok` is answered, and one commit serves a
//! whole batch (group commit); deletions of delivered or expired envelopes ride along in the
//! same batches. A batch's new envelopes are handed to `Handover` in queue order between
//! its `stage` and its `commit`, so that an online recipient is not kept waiting for the
//! sync (see `Handover`). Deletions of envelopes without an expiry wait while new envelopes
//! keep coming (see `Urgency`). Must not serve reads: connections read the queue through
//! the relay's `store::Directory`, which a commit in progress here never holds up.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::RelayError;
use super::store::{NewEnvelope, Outcome, Queue, Queued, Stored};

/// Where a batch's new envelopes go (the relay passes them to their recipients' connections).
///
/// They are handed over before the commit that keeps them: nobody has been told they are
/// stored, and the sender is told only after the commit. Should that commit fail, the
/// sender is told so and sends again, and a recipient that was pushed the first copy drops
/// the second as a duplicate, as it drops any envelope delivered twice.
pub(crate) trait Handover: Send + 'static {
    /// A batch's new envelopes, with their recipients, in queue order, before its commit.
    fn before_commit(&self, staged: Vec<(String, Queued)>);
    /// The commit of the batch that staged envelopes for these recipients is over (made or
    /// failed): a reader of the queue now sees whatever of them was kept.
    fn after_commit(&self, recipients: Vec<String>);
}

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 512;

/// Most deletions held back (`Urgency::WhenIdle`) before they go into the next batch anyway.
const MAX_HELD: usize = 1024;

/// How soon a deletion must reach the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// In the next batch: the envelope belongs to a disappearing message (or nobody knows
    /// whether it does), whose text must leave the relay's files as soon as it can.
    Next,
    /// Once the writer has no new envelopes waiting, or `MAX_HELD` deletions are held, or a
    /// flush asks for it. Under load each delete would rewrite pages (table, index) that the
    /// batch before had just written for other envelopes; held together, many share them,
    /// and new envelopes, whose senders wait for their `ok`, go first. A power cut loses
    /// held deletions as it may lose any unsynced one: those envelopes are delivered again,
    /// and their recipients drop them as duplicates.
    WhenIdle,
}

/// One change to the queue, applied in the order handed over.
enum Write {
    /// Queue an envelope; answered once committed, or once refused.
    Enqueue(NewEnvelope, oneshot::Sender<Enqueued>),
    /// Queue every copy of a fan-out or none, in one transaction; answered once committed,
    /// or once refused.
    EnqueueAll(Vec<NewEnvelope>, oneshot::Sender<Fanned>),
    /// Delete envelope `id` of `recipient`: acknowledged, or expired before delivery.
    Remove {
        recipient: String,
        id: u64,
        urgency: Urgency,
    },
    /// Answered once every write handed over before it is committed.
    Flush(oneshot::Sender<()>),
}

/// What became of an envelope handed to the writer; None when nothing was stored because
/// the store failed or the relay is stopping.
pub(crate) type Enqueued = Option<Stored>;

/// What became of a fan-out handed to the writer; None as for `Enqueued`.
pub(crate) type Fanned = Option<Outcome>;

/// Where the answer to one queued unit goes.
enum Reply {
    One(oneshot::Sender<Enqueued>),
    All(oneshot::Sender<Fanned>),
}

impl Reply {
    fn send(self, outcome: Option<Outcome>) {
        match self {
            Reply::One(tx) => {
                let stored = outcome.map(|o| match o {
                    Outcome::Queued(ids) => Stored::Queued(ids.first().copied().unwrap_or(0)),
                    Outcome::Refused(why) => {
                        why.first().map(|(_, s)| *s).unwrap_or(Stored::NoRecipient)
                    }
                });
                let _ = tx.send(stored);
            }
            Reply::All(tx) => {
                let _ = tx.send(outcome);
            }
        }
    }
}

pub(crate) struct Writer {
    tx: mpsc::Sender<Write>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on `queue`, which it owns from now on; what it queues goes
    /// to `handover` too.
    pub fn spawn(queue: Box<dyn Queue>, handover: impl Handover) -> Result<Writer, RelayError> {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let thread = std::thread::Builder::new()
            .name("relay-writer".into())
            .spawn(move || run(queue, rx, handover))?;
        Ok(Writer {
            tx,
            thread: Some(thread),
        })
    }

    /// Hands an envelope over; envelopes reach the disk in the order of the calls. The
    /// returned future resolves once it is committed (or refused); it borrows nothing, so a
    /// connection can read its next frame while it waits, and one commit can serve a burst.
    pub async fn enqueue(
        &self,
        envelope: NewEnvelope,
    ) -> impl Future<Output = Enqueued> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let handed = self.tx.send(Write::Enqueue(envelope, tx)).await.is_ok();
        async move {
            match handed {
                true => rx.await.unwrap_or(None),
                false => None,
            }
        }
    }

    /// Hands over every copy of a fan-out (one envelope per recipient), to be queued in one
    /// batch, all or none; never split across batches. Resolves as `enqueue` does.
    pub async fn enqueue_all(
        &self,
        copies: Vec<NewEnvelope>,
    ) -> impl Future<Output = Fanned> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let handed = self.tx.send(Write::EnqueueAll(copies, tx)).await.is_ok();
        async move {
            match handed {
                true => rx.await.unwrap_or(None),
                false => None,
            }
        }
    }

    /// Has envelope `id` of `recipient` deleted, as soon as `urgency` says, without waiting
    /// for it.
    pub async fn remove(&self, recipient: &str, id: u64, urgency: Urgency) {
        let write = Write::Remove {
            recipient: recipient.to_string(),
            id,
            urgency,
        };
        // Only fails once the relay is stopping; the envelope is then delivered again later.
        let _ = self.tx.send(write).await;
    }

    /// Waits until every write handed over so far is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Write::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the thread once it has committed everything handed over, and waits for it, so
    /// that its connection is closed when this returns.
    pub async fn stop(mut self) {
        let thread = self.thread.take();
        drop(self);
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Takes every write waiting (up to `MAX_BATCH`), applies them in one batch, then answers.
/// Alone, a write is applied at once; under load, one commit serves many `ok`s. Deletions
/// that may wait are held until nothing else is waiting (see `Urgency`). Ends, with every
/// held deletion applied, when every `Writer` handle is gone.
fn run(mut queue: Box<dyn Queue>, mut rx: mpsc::Receiver<Write>, handover: impl Handover) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut held = Vec::new();
    loop {
        // Held deletions go in once nothing else is waiting. This also comes before the
        // loop can end, since the channel is empty then, so none is left behind.
        if !held.is_empty() && rx.is_empty() {
            apply(&mut *queue, &handover, Vec::new(), Vec::new(), &held);
            held.clear();
            continue;
        }
        if rx.blocking_recv_many(&mut batch, MAX_BATCH) == 0 {
            break;
        }
        let mut new = Vec::new();
        let mut replies = Vec::new();
        let mut remove = Vec::new();
        let mut flushes = Vec::new();
        for w in batch.drain(..) {
            match w {
                Write::Enqueue(e, reply) => {
                    new.push(vec![e]);
                    replies.push(Reply::One(reply));
                }
                Write::EnqueueAll(copies, reply) => {
                    new.push(copies);
                    replies.push(Reply::All(reply));
                }
                Write::Remove {
                    recipient,
                    id,
                    urgency,
                } => match urgency {
                    Urgency::Next => remove.push((recipient, id)),
                    Urgency::WhenIdle => held.push((recipient, id)),
                },
                Write::Flush(reply) => flushes.push(reply),
            }
        }
        // A batch of deletions alone does not wait for the disk, so held ones cost nothing
        // extra there.
        if new.is_empty() || !flushes.is_empty() || held.len() >= MAX_HELD {
            remove.append(&mut held);
        }
        apply(&mut *queue, &handover, new, replies, &remove);
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// Queues `new` and deletes `remove` in one batch, handing the new envelopes over between
/// its stage and its commit, then answers each new envelope's sender.
fn apply(
    queue: &mut dyn Queue,
    handover: &impl Handover,
    new: Vec<Vec<NewEnvelope>>,
    replies: Vec<Reply>,
    remove: &[(String, u64)],
) {
    let mut recipients = Vec::new();
    let written = queue.stage(&new, remove).and_then(|outcomes| {
        let staged: Vec<_> = new
            .iter()
            .zip(&outcomes)
            .filter_map(|(unit, o)| match o {
                Outcome::Queued(ids) => Some(unit.iter().zip(ids)),
                Outcome::Refused(_) => None,
            })
            .flatten()
            .map(|(e, id)| (e.recipient.clone(), e.to_queued(*id)))
            .collect();
        recipients = staged.iter().map(|(to, _)| to.clone()).collect();
        if !staged.is_empty() {
            handover.before_commit(staged);
        }
        queue.commit().map(|()| outcomes)
    });
    if written.is_err() {
        queue.rollback();
    }
    if !recipients.is_empty() {
        recipients.sort_unstable();
        recipients.dedup();
        handover.after_commit(recipients);
    }
    match written {
        Ok(outcomes) => {
            for (reply, o) in replies.into_iter().zip(outcomes) {
                reply.send(Some(o));
            }
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                queued = replies.len(),
                removed = remove.len(),
                "queue write failed"
            );
            for reply in replies {
                reply.send(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::relay::quota::QueueLimits;
    use crate::relay::store::{Directory, MemoryStore, Origin};
    use crate::wire::{B64, KeyUpload, SignedKey};

    /// Records each hand-over with the ids a reader of the queue can see at that moment.
    struct Watch {
        log: Arc<Mutex<Vec<String>>>,
        reader: Mutex<MemoryStore>,
    }

    impl Watch {
        fn visible(&self) -> Vec<u64> {
            let mut reader = self.reader.lock().unwrap();
            let queued = reader.pending("bob", 0, 100).unwrap();
            queued.iter().map(|q| q.id).collect()
        }
    }

    impl Handover for Watch {
        fn before_commit(&self, staged: Vec<(String, Queued)>) {
            let ids: Vec<_> = staged.iter().map(|(_, q)| q.id).collect();
            let line = format!("staged {ids:?}, readers see {:?}", self.visible());
            self.log.lock().unwrap().push(line);
        }
        fn after_commit(&self, recipients: Vec<String>) {
            let line = format!(
                "committed for {recipients:?}, readers see {:?}",
                self.visible()
            );
            self.log.lock().unwrap().push(line);
        }
    }

    /// A `Watch` that holds the writer after each commit that handed mail over, until the
    /// test lets it go, so that the writes the test hands over meanwhile make one batch.
    struct Gated {
        watch: Watch,
        held: tokio::sync::mpsc::UnboundedSender<()>,
        go: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl Handover for Gated {
        fn before_commit(&self, staged: Vec<(String, Queued)>) {
            self.watch.before_commit(staged);
        }
        fn after_commit(&self, recipients: Vec<String>) {
            self.watch.after_commit(recipients);
            let _ = self.held.send(());
            let _ = self.go.lock().unwrap().recv();
        }
    }

    fn test_keys() -> KeyUpload {
        let key = |n: u8| SignedKey {
            id: 1,
            public: B64(vec![n; 33]),
            signature: B64(vec![n; 64]),
        };
        KeyUpload {
            identity_key: B64(vec![5; 33]),
            registration_id: 1,
            signed_prekey: key(1),
            kyber_last_resort: key(2),
            one_time_prekeys: Vec::new(),
            one_time_kyber: Vec::new(),
        }
    }

    fn relay_with_bob() -> MemoryStore {
        let mut store = MemoryStore::new();
        store
            .register("bob", "bob", &test_keys(), b"token", 0)
            .unwrap();
        store
    }

    fn start(store: &MemoryStore, handover: impl Handover, limits: QueueLimits) -> Writer {
        Writer::spawn(Box::new(store.queue(limits)), handover).unwrap()
    }

    fn for_bob(text: &str) -> NewEnvelope {
        NewEnvelope {
            recipient: "bob".into(),
            origin: Origin::Account {
                id: "alice".into(),
                handle: "alice".into(),
            },
            payload: text.as_bytes().to_vec(),
            received_at: 0,
            expires_at: None,
        }
    }

    fn spawn(store: &MemoryStore) -> (Writer, Arc<Mutex<Vec<String>>>) {
        let log = Arc::default();
        let watch = Watch {
            log: Arc::clone(&log),
            reader: Mutex::new(store.clone()),
        };
        (start(store, watch, QueueLimits::default()), log)
    }

    /// Bob acknowledges envelope 1 while envelope 2 is on its way: the two reach the writer
    /// in one batch. Returns the log and what a reader sees after a flush.
    async fn ack_while_mail_comes(urgency: Urgency) -> (Vec<String>, Vec<u64>) {
        let store = relay_with_bob();
        let log = Arc::<Mutex<Vec<String>>>::default();
        let (held_tx, mut held) = tokio::sync::mpsc::unbounded_channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let gated = Gated {
            watch: Watch {
                log: Arc::clone(&log),
                reader: Mutex::new(store.clone()),
            },
            held: held_tx,
            go: Mutex::new(go_rx),
        };
        let writer = start(&store, gated, QueueLimits::default());
        let one = writer.enqueue(for_bob("one")).await;
        held.recv().await.unwrap();
        writer.remove("bob", 1, urgency).await;
        let two = writer.enqueue(for_bob("two")).await;
        go.send(()).unwrap();
        assert_eq!(one.await, Some(Stored::Queued(1)));
        held.recv().await.unwrap();
        go.send(()).unwrap();
        assert_eq!(two.await, Some(Stored::Queued(2)));
        writer.flush().await;
        let left = store.clone().pending("bob", 0, 100).unwrap();
        writer.stop().await;
        let log = log.lock().unwrap().clone();
        (log, left.iter().map(|q| q.id).collect())
    }

    #[tokio::test]
    async fn a_disappearing_messages_envelope_is_deleted_in_the_next_batch() {
        let (log, left) = ack_while_mail_comes(Urgency::Next).await;
        assert_eq!(log[3], "committed for [\"bob\"], readers see [2]");
        assert_eq!(left, [2]);
    }

    #[tokio::test]
    async fn a_lasting_envelopes_deletion_waits_while_new_mail_comes() {
        let (log, left) = ack_while_mail_comes(Urgency::WhenIdle).await;
        // The batch that carried the ack committed envelope 2 and left 1 for later...
        assert_eq!(log[3], "committed for [\"bob\"], readers see [1, 2]");
        // ...but not past a flush.
        assert_eq!(left, [2]);
    }

    #[tokio::test]
    async fn deletions_held_when_the_writer_stops_are_applied_before_it_ends() {
        let store = relay_with_bob();
        let (writer, _) = spawn(&store);
        for text in ["one", "two"] {
            writer.enqueue(for_bob(text)).await.await;
        }
        writer.remove("bob", 1, Urgency::WhenIdle).await;
        writer.remove("bob", 2, Urgency::WhenIdle).await;
        writer.stop().await;
        assert!(store.clone().pending("bob", 0, 100).unwrap().is_empty());
    }

    #[tokio::test]
    async fn mail_is_handed_over_before_its_commit_and_answered_after_it() {
        let store = relay_with_bob();
        let (writer, log) = spawn(&store);
        let first = writer.enqueue(for_bob("one")).await.await;
        let second = writer.enqueue(for_bob("two")).await.await;
        assert_eq!(first, Some(Stored::Queued(1)));
        assert_eq!(second, Some(Stored::Queued(2)));
        // A reader sees each envelope only after the hand-over that preceded its commit,
        // and the sender's answer (awaited above) came after both.
        assert_eq!(
            *log.lock().unwrap(),
            [
                "staged [1], readers see []",
                "committed for [\"bob\"], readers see [1]",
                "staged [2], readers see [1]",
                "committed for [\"bob\"], readers see [1, 2]",
            ]
        );
        writer.stop().await;
    }

    #[tokio::test]
    async fn a_fan_out_is_queued_for_all_its_recipients_or_for_none() {
        let mut store = relay_with_bob();
        let carol = KeyUpload {
            identity_key: B64(vec![6; 33]),
            ..test_keys()
        };
        store
            .register("carol", "carol", &carol, b"token", 0)
            .unwrap();
        // Carol's mailbox holds one envelope at most: the second fan-out meets it full.
        let limits = QueueLimits {
            recipient_envelopes: 1,
            ..QueueLimits::default()
        };
        let watch = Watch {
            log: Arc::default(),
            reader: Mutex::new(store.clone()),
        };
        let writer = start(&store, watch, limits);
        let to = |who: &str| NewEnvelope {
            recipient: who.into(),
            ..for_bob("hi")
        };
        let missing = writer
            .enqueue_all(vec![to("bob"), to("nobody")])
            .await
            .await;
        assert_eq!(
            missing,
            Some(Outcome::Refused(vec![(
                "nobody".into(),
                Stored::NoRecipient
            )]))
        );
        let both = writer.enqueue_all(vec![to("bob"), to("carol")]).await.await;
        assert_eq!(both, Some(Outcome::Queued(vec![1, 2])));
        // Bob has room again once his envelope is gone; carol's mailbox is full: neither
        // gets this one, and bob's count is as it was (a single envelope still fits).
        writer.remove("bob", 1, Urgency::Next).await;
        writer.flush().await;
        let full = writer.enqueue_all(vec![to("bob"), to("carol")]).await.await;
        assert!(
            matches!(&full, Some(Outcome::Refused(r)) if r.len() == 1 && r[0].0 == "carol"),
            "{full:?}"
        );
        assert_eq!(
            writer.enqueue(to("bob")).await.await,
            Some(Stored::Queued(3))
        );
        writer.flush().await;
        let ids = |who: &str| -> Vec<u64> {
            store
                .clone()
                .pending(who, 0, 100)
                .unwrap()
                .iter()
                .map(|q| q.id)
                .collect()
        };
        assert_eq!(ids("bob"), [3]);
        assert_eq!(ids("carol"), [2]);
        writer.stop().await;
    }

    #[tokio::test]
    async fn a_restarted_writer_never_gives_out_an_id_again() {
        let store = relay_with_bob();
        let (writer, _) = spawn(&store);
        for text in ["one", "two", "three"] {
            writer.enqueue(for_bob(text)).await.await;
        }
        // All three delivered and deleted: the queue is empty when the relay restarts.
        for id in 1..=3 {
            writer.remove("bob", id, Urgency::WhenIdle).await;
        }
        writer.flush().await;
        writer.stop().await;
        let (writer, log) = spawn(&store);
        let next = writer.enqueue(for_bob("four")).await.await;
        assert_eq!(next, Some(Stored::Queued(4)));
        assert_eq!(log.lock().unwrap()[0], "staged [4], readers see []");
        writer.stop().await;
    }
}
