//! The relay server: accepts WebSocket connections, authenticates accounts, keeps the prekey
//! directory and stores and forwards envelopes it cannot read.
//!
//! Owns the listener, the table of online accounts and the shared handle to the relay store.
//! Must never see a plaintext of a secret message nor learn the sender of a sealed envelope:
//! it only ever stores and forwards the opaque bytes `conn` hands it.

mod certs;
mod conn;
pub mod store;

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
use store::{NewEnvelope, RelayStore};

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
    /// Observer of received frames; none by default.
    pub tap: Option<FrameTap>,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("auth_timeout", &self.auth_timeout)
            .field("max_connections", &self.max_connections)
            .field("delivery_window", &self.delivery_window)
            .field("tap", &self.tap.is_some())
            .finish()
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            auth_timeout: Duration::from_secs(5),
            max_connections: 16_384,
            delivery_window: 64,
            tap: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen")]
    Io(#[from] std::io::Error),
}

/// An online account's connection: how to wake it when mail arrives and how to push it off
/// when a newer connection for the same account proves itself.
struct Online {
    conn_id: u64,
    wake: Arc<Notify>,
    refill: Arc<Notify>,
    kick: CancellationToken,
}

/// The signals a connection task waits on besides its socket.
#[derive(Clone, Default)]
pub(crate) struct Signals {
    /// Mail arrived for the account.
    pub wake: Arc<Notify>,
    /// Someone took one of the account's one-time prekeys.
    pub refill: Arc<Notify>,
    /// A newer connection for the same account proved itself.
    pub kick: CancellationToken,
}

/// State shared by all connections of one relay.
pub(crate) struct Relay {
    db: Arc<Mutex<RelayStore>>,
    /// Envelopes on their way to the group-commit writer, each with its `ok` to answer.
    writer: tokio::sync::mpsc::Sender<Queued>,
    /// The writer's thread, joined when the relay stops so the database is closed by then.
    writer_thread: Option<std::thread::JoinHandle<()>>,
    authority: Authority,
    online: Mutex<HashMap<String, Online>>,
    config: RelayConfig,
    slots: Arc<Semaphore>,
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

    /// Hands an envelope to the group-commit writer; envelopes reach it in the order of the
    /// calls. The returned future resolves to the envelope's id once it is committed, or None
    /// if the store failed. It owns nothing borrowed, so a connection can read its next frame
    /// while it waits, and one commit can serve a burst of envelopes from one client.
    async fn submit(
        &self,
        envelope: NewEnvelope,
    ) -> impl Future<Output = Option<u64>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handed = self.writer.send((envelope, tx)).await.is_ok();
        async move {
            match handed {
                true => rx.await.ok().flatten(),
                false => None,
            }
        }
    }

    fn wake(&self, account_id: &str) {
        if let Some(o) = self.lock_online().get(account_id) {
            o.wake.notify_one();
        }
    }

    fn refill(&self, account_id: &str) {
        if let Some(o) = self.lock_online().get(account_id) {
            o.refill.notify_one();
        }
    }

    fn lock_online(&self) -> std::sync::MutexGuard<'_, HashMap<String, Online>> {
        self.online.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `account_id` online on connection `conn_id`, pushing off an older connection.
    fn go_online(&self, account_id: &str, conn_id: u64, signals: &Signals) {
        let old = self.lock_online().insert(
            account_id.to_string(),
            Online {
                conn_id,
                wake: signals.wake.clone(),
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

/// Compares two secrets (access tokens, reset codes) in time that does not depend on where
/// they first differ, so a guesser learns nothing from how fast the answer comes.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Most envelopes committed in one transaction.
const MAX_BATCH: usize = 512;

type Queued = (NewEnvelope, tokio::sync::oneshot::Sender<Option<u64>>);

/// The group-commit writer: a thread that takes every envelope waiting, commits them in one
/// durable transaction, then answers each. Alone, an envelope is committed at once; under
/// load, one sync serves many `ok`s. Ends when the relay (the last sender) is dropped.
fn spawn_writer(
    db: Arc<Mutex<RelayStore>>,
) -> std::io::Result<(
    tokio::sync::mpsc::Sender<Queued>,
    std::thread::JoinHandle<()>,
)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Queued>(4 * MAX_BATCH);
    let thread = std::thread::Builder::new()
        .name("relay-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(q) => batch.push(q),
                        Err(_) => break,
                    }
                }
                let (envelopes, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let ids = db
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .enqueue(&envelopes);
                match ids {
                    Ok(ids) => {
                        for (reply, id) in replies.into_iter().zip(ids) {
                            let _ = reply.send(Some(id));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, count = replies.len(), "enqueue failed");
                        for reply in replies {
                            let _ = reply.send(None);
                        }
                    }
                }
            }
        })?;
    Ok((tx, thread))
}

/// Opens the relay's state under `data_dir`, creating it if needed.
fn open(data_dir: &Path, config: RelayConfig) -> Result<Relay, RelayError> {
    std::fs::create_dir_all(data_dir).map_err(|source| RelayError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let mut store = RelayStore::open(data_dir)?;
    let authority = Authority::load_or_create(&mut store)?;
    let db = Arc::new(Mutex::new(store));
    let (writer, writer_thread) = spawn_writer(db.clone())?;
    Ok(Relay {
        writer,
        writer_thread: Some(writer_thread),
        db,
        authority,
        online: Mutex::new(HashMap::new()),
        slots: Arc::new(Semaphore::new(config.max_connections)),
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
    if let Ok(mut relay) = Arc::try_unwrap(relay) {
        let thread = relay.writer_thread.take();
        drop(relay);
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
    tracing::info!("relay stopped");
    Ok(())
}

/// The public half of the relay's trust root, for `sotto relay` to print and for tests.
pub fn trust_root(data_dir: &Path) -> Result<Vec<u8>, RelayError> {
    let relay = open(data_dir, RelayConfig::default())?;
    Ok(relay.authority.trust_root().serialize().to_vec())
}
