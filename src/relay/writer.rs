//! The queue's writer: a thread with its own connection to the relay database that applies
//! every change to the envelope queue, many at a time, one transaction per batch.
//!
//! Owns that connection and the order of queue writes. New envelopes are committed durably
//! before their `ok` is answered, and one sync serves a whole batch (group commit); deletions
//! of delivered or expired envelopes ride along in the same transactions. Once a batch is
//! committed, its envelopes are handed to `Handover` in queue order (the relay passes them to
//! their recipients' connections). Must not serve reads: connections read the queue through
//! the relay's other connection, which a sync in progress here never holds up.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::store::{NewEnvelope, Queued, RelayStore, Stored};

/// Takes each batch's newly committed envelopes, with their recipients, in queue order.
pub(crate) type Handover = Box<dyn Fn(Vec<(String, Queued)>) + Send>;

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 512;

/// One change to the queue, applied in the order handed over.
enum Write {
    /// Queue an envelope; answered once committed, or once refused.
    Enqueue(NewEnvelope, oneshot::Sender<Enqueued>),
    /// Delete envelope `id` of `recipient`: acknowledged, or expired before delivery.
    Remove { recipient: String, id: u64 },
    /// Answered once every write handed over before it is committed.
    Flush(oneshot::Sender<()>),
}

/// What became of an envelope handed to the writer; None when nothing was stored because
/// the store failed or the relay is stopping.
pub(crate) type Enqueued = Option<Stored>;

pub(crate) struct Writer {
    tx: mpsc::Sender<Write>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on `store`, a connection of its own; what it commits goes to
    /// `handover` too.
    pub fn spawn(store: RelayStore, handover: Handover) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let thread = std::thread::Builder::new()
            .name("relay-writer".into())
            .spawn(move || run(store, rx, handover))?;
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

    /// Has envelope `id` of `recipient` deleted, without waiting for it.
    pub async fn remove(&self, recipient: &str, id: u64) {
        let write = Write::Remove {
            recipient: recipient.to_string(),
            id,
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

/// Takes every write waiting (up to `MAX_BATCH`), applies them in one transaction, then
/// answers. Alone, a write is applied at once; under load, one sync serves many `ok`s. Ends
/// when every `Writer` handle is gone.
fn run(store: RelayStore, mut rx: mpsc::Receiver<Write>, handover: Handover) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
        let mut new = Vec::new();
        let mut replies = Vec::new();
        let mut remove = Vec::new();
        let mut flushes = Vec::new();
        for w in batch.drain(..) {
            match w {
                Write::Enqueue(e, reply) => {
                    new.push(e);
                    replies.push(reply);
                }
                Write::Remove { recipient, id } => remove.push((recipient, id)),
                Write::Flush(reply) => flushes.push(reply),
            }
        }
        match store.write(&new, &remove) {
            Ok(stored) => {
                let committed: Vec<_> = new
                    .into_iter()
                    .zip(&stored)
                    .filter_map(|(e, s)| match s {
                        Stored::Queued(id) => Some((e.recipient.clone(), e.queued(*id))),
                        _ => None,
                    })
                    .collect();
                if !committed.is_empty() {
                    handover(committed);
                }
                for (reply, s) in replies.into_iter().zip(stored) {
                    let _ = reply.send(Some(s));
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
                    let _ = reply.send(None);
                }
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}
