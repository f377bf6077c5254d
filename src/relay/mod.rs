//! The relay server: accepts WebSocket connections, authenticates accounts, keeps the prekey
//! directory and stores and forwards envelopes it cannot read.
//!
//! Owns the listener, the table of online accounts and the shared handle to the relay store.
//! Must never see a plaintext of a secret message nor learn the sender of a sealed envelope:
//! it only ever stores and forwards the opaque bytes `conn` hands it.

pub mod certs;
mod conn;
mod mailbox;
pub mod quota;
pub mod rate;
pub mod store;
mod transport;
mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use certs::Authority;
pub use certs::CertError;
use mailbox::Mailbox;
pub use quota::QueueLimits;
pub use rate::RateLimits;
use store::RelayStore;
use writer::Writer;

/// Called with every frame payload the relay receives, before it is decoded: lets a test or
/// an operator's debugging tool see exactly what reaches the relay.
pub type FrameTap = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Tunables of a relay; the defaults suit one machine.
#[derive(Clone)]
pub struct RelayConfig {
    /// A connection that has not authenticated (or declared itself anonymous) within this time
    /// is closed.
    pub auth_timeout: Duration,
    /// Connections beyond this many are refused with a `full` error.
    pub max_connections: usize,
    /// Envelopes pushed to one connection and not yet acknowledged: the bound on its outbox.
    pub delivery_window: usize,
    /// How much mail may wait in the queue per recipient, per sending account and per
    /// recipient's sealed mail; beyond, an envelope is refused with `quota_exceeded`.
    pub queue: QueueLimits,
    /// Registrations, prekey uploads, bundle fetches, lookups and unknown acks per unit of
    /// time; beyond, `rate_limited` (bundles beyond the per-target rate lose their one-time
    /// keys instead).
    pub rate: RateLimits,
    /// One-time prekeys of each kind (EC, Kyber) the directory holds per account at most; an
    /// upload that would go beyond is refused with `quota_exceeded`.
    pub max_one_time_prekeys: u32,
    /// Observer of received frames; none by default.
    pub tap: Option<FrameTap>,
    /// Serve `wss://` with this configuration (see `tls::RelayCert::server_config`); None
    /// serves plain `ws://`, for a relay behind a TLS-terminating proxy.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("auth_timeout", &self.auth_timeout)
            .field("max_connections", &self.max_connections)
            .field("delivery_window", &self.delivery_window)
            .field("queue", &self.queue)
            .field("rate", &self.rate)
            .field("max_one_time_prekeys", &self.max_one_time_prekeys)
            .field("tap", &self.tap.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            auth_timeout: Duration::from_secs(5),
            max_connections: 16_384,
            delivery_window: 64,
            queue: QueueLimits::default(),
            rate: RateLimits::default(),
            max_one_time_prekeys: 200,
            tap: None,
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("cannot listen")]
    Io(#[from] std::io::Error),
}

/// An online account's connection: where its new mail goes and how to push it off when a
/// newer connection for the same account proves itself.
struct Online {
    conn_id: u64,
    mail: Arc<Mailbox>,
    refill: Arc<Notify>,
    kick: CancellationToken,
}

/// The signals a connection task waits on besides its socket.
#[derive(Clone, Default)]
pub(crate) struct Signals {
    /// New mail for the account, handed over by the queue's writer.
    pub mail: Arc<Mailbox>,
    /// Someone took one of the account's one-time prekeys.
    pub refill: Arc<Notify>,
    /// A newer connection for the same account proved itself.
    pub kick: CancellationToken,
}

/// The online accounts, each with its current connection.
type OnlineTable = Mutex<HashMap<String, Online>>;

fn lock_table(table: &OnlineTable) -> std::sync::MutexGuard<'_, HashMap<String, Online>> {
    // Every critical section leaves the table consistent, so a poisoned lock is usable.
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by all connections of one relay.
pub(crate) struct Relay {
    /// Everything but the queue's writes: accounts, the directory, reads of the queue.
    db: Arc<Mutex<RelayStore>>,
    /// The queue's writes, on a connection of their own.
    writer: Writer,
    authority: Authority,
    online: Arc<OnlineTable>,
    config: RelayConfig,
    slots: Arc<Semaphore>,
    /// The rate limits' buckets.
    rates: rate::Limiter,
}

impl Relay {
    /// Runs a blocking store operation off the async worker threads.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RelayStore) -> store::Result<T> + Send + 'static,
    ) -> store::Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection's state as SQLite left it:
            // every write is a transaction, so continuing with the inner value is sound.
            let mut guard = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    fn refill(&self, account_id: &str) {
        if let Some(o) = self.lock_online().get(account_id) {
            o.refill.notify_one();
        }
    }

    fn lock_online(&self) -> std::sync::MutexGuard<'_, HashMap<String, Online>> {
        lock_table(&self.online)
    }

    /// Marks `account_id` online on connection `conn_id`, pushing off an older connection.
    fn go_online(&self, account_id: &str, conn_id: u64, signals: &Signals) {
        let old = self.lock_online().insert(
            account_id.to_string(),
            Online {
                conn_id,
                mail: signals.mail.clone(),
                refill: signals.refill.clone(),
                kick: signals.kick.clone(),
            },
        );
        if let Some(old) = old {
            old.kick.cancel();
        }
    }

    fn go_offline(&self, account_id: &str, conn_id: u64) {
        let mut online = self.lock_online();
        if online.get(account_id).is_some_and(|o| o.conn_id == conn_id) {
            online.remove(account_id);
        }
    }
}

/// Hands the queue writer's new mail to the recipients' connections (see `writer::Handover`).
struct ToOnline(Arc<OnlineTable>);

impl writer::Handover for ToOnline {
    fn before_commit(&self, staged: Vec<(String, store::Queued)>) {
        let online = lock_table(&self.0);
        for (to, q) in staged {
            if let Some(o) = online.get(&to) {
                o.mail.put(q);
            }
        }
    }

    fn after_commit(&self, recipients: Vec<String>) {
        let online = lock_table(&self.0);
        for to in recipients {
            if let Some(o) = online.get(&to) {
                o.mail.commit_done();
            }
        }
    }
}

/// Compares two secrets (access tokens, reset codes) in time that does not depend on where
/// they first differ, so a guesser learns nothing from how fast the answer comes.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Opens the relay's state under `data_dir`, creating it (private to the user) if needed.
fn open(data_dir: &Path, config: RelayConfig) -> Result<Relay, RelayError> {
    let mut store = RelayStore::open(data_dir)?;
    let authority = Authority::load_or_create(&mut store)?;
    let online: Arc<OnlineTable> = Arc::default();
    // New mail goes straight to its recipient's connection, if it is online; one that is not
    // reads it from the queue when it signs in.
    let handover = ToOnline(online.clone());
    let queue = RelayStore::open(data_dir)?;
    queue.reserve_wal()?;
    let writer = Writer::spawn(queue, handover, config.queue)?;
    Ok(Relay {
        writer,
        db: Arc::new(Mutex::new(store)),
        authority,
        online,
        slots: Arc::new(Semaphore::new(config.max_connections)),
        rates: rate::Limiter::new(config.rate),
        config,
    })
}

/// Serves the relay on `listener` until `shutdown` is cancelled, then closes every connection
/// and returns. Everything acknowledged with `ok` is already committed when this returns.
pub async fn run(
    listener: TcpListener,
    data_dir: &Path,
    config: RelayConfig,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let relay = Arc::new(open(data_dir, config)?);
    let tracker = TaskTracker::new();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer): (_, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        next_id += 1;
        let _ = stream.set_nodelay(true);
        tracker.spawn(conn::serve(
            relay.clone(),
            stream,
            peer,
            next_id,
            shutdown.child_token(),
        ));
    }
    tracker.close();
    tracker.wait().await;
    // Every connection is gone; stop the writer (it commits what it holds) and wait for it,
    // so that when this returns the database is closed.
    if let Ok(relay) = Arc::try_unwrap(relay) {
        relay.writer.stop().await;
    }
    tracing::info!("relay stopped");
    Ok(())
}

/// The public half of the relay's trust root, for `sotto relay` to print and for tests.
pub fn trust_root(data_dir: &Path) -> Result<Vec<u8>, RelayError> {
    let relay = open(data_dir, RelayConfig::default())?;
    Ok(relay.authority.trust_root().serialize().to_vec())
}
