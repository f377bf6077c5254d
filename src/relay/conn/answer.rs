//! Answering sends in order while their commits are under way: a send's `ok` is due once its
//! envelope is durable, and answers leave in the order the requests came.
//!
//! Owns that ordering and its bound (`Committing`). Must not decide what is stored.

use super::*;

/// What a connection answers to an envelope: at once (a refusal), or once the envelope is
/// committed, so that an `ok` always means it is on disk.
pub(super) enum Accepted {
    Now(Box<RelayFrame>),
    Later(BoxFuture<'static, RelayFrame>),
}

impl Accepted {
    pub(super) fn now(reply: RelayFrame) -> Self {
        Accepted::Now(Box::new(reply))
    }
}

/// The `ok` for envelope `req`, given once it is committed (the writer has handed it to the
/// recipient's connection by then). A refused envelope is answered `not_found` with
/// `no_recipient`.
pub(super) fn answer_when_committed(
    req: u64,
    committed: impl Future<Output = Enqueued> + Send + 'static,
    no_recipient: &'static str,
) -> BoxFuture<'static, RelayFrame> {
    Box::pin(async move {
        match committed.await {
            Some(Stored::Queued(_)) => RelayFrame::Ok { req },
            Some(Stored::NoRecipient) => error(Some(req), ErrorCode::NotFound, no_recipient),
            Some(Stored::StaleKey) => error(
                Some(req),
                ErrorCode::IdentityChanged,
                "the recipient's identity key has changed; look them up again",
            ),
            Some(Stored::OverQuota(quota)) => {
                error(Some(req), ErrorCode::QuotaExceeded, quota.message())
            }
            None => not_stored(req),
        }
    })
}

/// The answers a connection owes for envelopes still on their way to the disk, in the order
/// the envelopes came.
#[derive(Default)]
pub(super) struct Committing(FuturesOrdered<BoxFuture<'static, RelayFrame>>);

impl Committing {
    /// Envelopes one connection may have waiting for a commit before it stops reading more.
    const MAX: usize = 256;

    pub(super) fn has_room(&self) -> bool {
        self.0.len() < Self::MAX
    }

    /// Answers now, or queues the answer for when the envelope is committed.
    pub(super) async fn answer(&mut self, ws: &mut Ws, accepted: Accepted) -> Result<(), End> {
        match accepted {
            Accepted::Now(reply) => send(ws, &reply).await,
            Accepted::Later(f) => {
                self.0.push_back(f);
                Ok(())
            }
        }
    }

    /// Sends `first` and every other answer already due, in one write: one group commit
    /// often completes many of a connection's envelopes at once.
    pub(super) async fn send_due(&mut self, ws: &mut Ws, first: RelayFrame) -> Result<(), End> {
        feed(ws, &first).await?;
        while let Some(Some(reply)) = self.0.next().now_or_never() {
            feed(ws, &reply).await?;
        }
        flush(ws).await
    }

    /// The next answer due; pending forever while nothing waits, for use in `select!`.
    pub(super) async fn next(&mut self) -> RelayFrame {
        match self.0.next().await {
            Some(reply) => reply,
            None => std::future::pending().await,
        }
    }
}
