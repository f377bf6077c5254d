//! The sweeper: deletes messages whose disappearing timer has run out, at the moment it runs
//! out, and tells the user's screen.
//!
//! One task per running client with its own database connection. It sleeps until the
//! earliest `expires_at` (never a polling loop) and is woken early only when someone reports
//! an earlier deadline. At start it first deletes what expired while the client was not
//! running. Owns nothing but that deadline; the rows belong to the store.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::store::{Expired, Store, StoreError};

/// How others tell the sweeper about new deadlines.
#[derive(Clone, Default)]
pub struct Deadlines {
    earliest: Arc<Mutex<Option<u64>>>,
    wake: Arc<Notify>,
}

impl Deadlines {
    /// A message now expires at `at` (Unix ms). Cheap: wakes the sweeper only if `at` is
    /// earlier than anything reported since it last looked.
    pub fn add(&self, at: u64) {
        let mut earliest = self.earliest.lock().unwrap_or_else(|p| p.into_inner());
        if earliest.is_none_or(|e| at < e) {
            *earliest = Some(at);
            self.wake.notify_one();
        }
    }

    fn take(&self) -> Option<u64> {
        self.earliest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Runs the sweeper on the profile in `dir` until `cancel`. Each sweep that deleted
/// something is reported on `expired`.
pub async fn run(
    dir: &Path,
    clock: Clock,
    deadlines: Deadlines,
    expired: mpsc::Sender<Vec<Expired>>,
    cancel: CancellationToken,
) -> Result<(), StoreError> {
    let store = Store::open(dir)?;
    // Whatever ran out while the client was not running goes first.
    let mut next = sweep(&store, &clock, &expired)?.await;
    loop {
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(clock.instant_at(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = deadlines.wake.notified() => {
                if let Some(at) = deadlines.take() {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            _ = sleep => next = sweep(&store, &clock, &expired)?.await,
        }
    }
}

/// Deletes what is due now. The returned future reports it and yields the next deadline in
/// the store; it holds no borrow of the store, which is not `Sync`.
fn sweep(
    store: &Store,
    clock: &Clock,
    expired: &mpsc::Sender<Vec<Expired>>,
) -> Result<impl Future<Output = Option<u64>> + Send + use<>, StoreError> {
    let gone = store.delete_expired(clock.now_ms())?;
    let next = store.next_expiry()?;
    let expired = expired.clone();
    Ok(async move {
        if !gone.is_empty() {
            tracing::debug!(count = gone.len(), "expired messages deleted");
            let _ = expired.send(gone).await;
        }
        next
    })
}
