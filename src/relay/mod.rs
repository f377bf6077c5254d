//! The relay server: accepts WebSocket connections, authenticates accounts, keeps the prekey
//! directory and stores and forwards envelopes it cannot read.
//!
//! Owns the listener, the table of online accounts, the shared handle to the relay store and
//! the relay's periodic work (its counters, the blob sweep).
//! Must never see a plaintext of a secret message nor learn the sender of a sealed envelope:
//! it only ever stores and forwards the opaque bytes `conn` hands it.

mod blob_files;
pub mod blobs;
pub mod certs;
mod conn;
mod handshake;
mod limits;
mod liveness;
mod mailbox;
mod online_only;
mod push;
pub mod quota;
pub mod rate;
pub mod stats;
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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use blobs::BlobLimits;
use certs::Authority;
pub use certs::CertError;
use limits::{Caps, Limits};
use mailbox::Mailbox;
pub use quota::QueueLimits;
pub use rate::RateLimits;
pub use stats::{Reason, Stats};
use store::{Database, Directory};
use writer::Writer;

/// Called with every frame payload the relay receives, before it is decoded: lets a test or
/// an operator's debugging tool see exactly what reaches the relay.
pub type FrameTap = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Tunables of a relay; the defaults suit one machine, and a small community never reaches
/// the caps. `docs/protocol.md` ("Limits") lists each with what a client sees.
#[derive(Clone)]
pub struct RelayConfig {
    /// TCP accept to the end of the TLS and WebSocket handshakes; a connection not done by
    /// then is closed.
    pub handshake_timeout: Duration,
    /// A connection that has not authenticated (or declared itself anonymous) within this time
    /// is closed.
    pub auth_timeout: Duration,
    /// The relay pings a connection it has heard nothing from for this long.
    pub ping_interval: Duration,
    /// A connection the relay has heard nothing from (no frame, no pong) for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// A frame that has started arriving must be complete within this time, or the
    /// connection is closed.
    pub frame_timeout: Duration,
    /// A write to a connection that makes no progress for this long (the peer does not read)
    /// fails and the connection is closed.
    pub write_timeout: Duration,
    /// Connections beyond this many are refused with a `full` error.
    pub max_connections: usize,
    /// Connections from one source address beyond this many are refused (`rate_limited`).
    pub max_connections_per_address: usize,
    /// Connections in their handshake or not signed in yet, in total; beyond, new ones are
    /// refused (`rate_limited`). Each holds its slot at most `handshake_timeout` +
    /// `auth_timeout`.
    pub max_signing_in: usize,
    /// Anonymous (sealed-sending) connections in total; beyond, `anonymous` is refused
    /// (`rate_limited`).
    pub max_anonymous: usize,
    /// Connections from one source address that are not signed in (handshaking, signing in
    /// or anonymous); beyond, new ones are refused (`rate_limited`).
    pub max_unauthenticated_per_address: usize,
    /// Refusals answered with a frame at the same time; beyond, a refused TCP connection is
    /// closed at once, unanswered.
    pub max_refusing: usize,
    /// How often the counters are written to `<data dir>/stats.json` (also on stop).
    pub stats_interval: Duration,
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
    /// Recipients of one fan-out (`send_multi`, `send_group`) at most; more is refused with
    /// `too_large`.
    pub max_group_recipients: usize,
    /// The blob store's size limit, per-owner quotas, retention and sweep.
    pub blobs: BlobLimits,
    /// Observer of received frames; none by default.
    pub tap: Option<FrameTap>,
    /// Serve `wss://` with this configuration (see `tls::RelayCert::server_config`); None
    /// serves plain `ws://`, for a relay behind a TLS-terminating proxy.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where the relay's accounts, directory and queue live (the blob files, the counters
    /// and the lock are in the data directory whatever this says).
    pub database: Database,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("auth_timeout", &self.auth_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("frame_timeout", &self.frame_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_address",
                &self.max_connections_per_address,
            )
            .field("max_signing_in", &self.max_signing_in)
            .field("max_anonymous", &self.max_anonymous)
            .field(
                "max_unauthenticated_per_address",
                &self.max_unauthenticated_per_address,
            )
            .field("max_refusing", &self.max_refusing)
            .field("stats_interval", &self.stats_interval)
            .field("delivery_window", &self.delivery_window)
            .field("queue", &self.queue)
            .field("rate", &self.rate)
            .field("max_one_time_prekeys", &self.max_one_time_prekeys)
            .field("max_group_recipients", &self.max_group_recipients)
            .field("blobs", &self.blobs)
            .field("tap", &self.tap.is_some())
            .field("tls", &self.tls.is_some())
            .field("database", &self.database)
            .finish()
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            handshake_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_connections: 16_384,
            max_connections_per_address: 64,
            max_signing_in: 4_096,
            max_anonymous: 4_096,
            max_unauthenticated_per_address: 16,
            max_refusing: 64,
            stats_interval: Duration::from_secs(10),
            delivery_window: 64,
            queue: QueueLimits::default(),
            rate: RateLimits::default(),
            max_one_time_prekeys: 200,
            max_group_recipients: 100,
            blobs: BlobLimits::default(),
            tap: None,
            tls: None,
            database: Database::default(),
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
    #[error(
        "{0}; another relay is running on this data directory. Stop it first, or give this one its own --data-dir"
    )]
    InUse(crate::dir_lock::LockError),
}

/// An online account's connection: where its new mail goes and how to push it off when a
/// newer connection for the same account proves itself.
struct Online {
    conn_id: u64,
    /// The connection's place in the order of the account's sign-ins on all the relays
    /// sharing the database, once it has learnt it (see `Directory::sign_in`).
    sign_in: Option<u64>,
    /// The latest sign-in elsewhere heard of before `sign_in` was learnt.
    heard: u64,
    mail: Arc<Mailbox>,
    online_only: Arc<online_only::Inbox>,
    refill: Arc<Notify>,
    kick: CancellationToken,
}

/// The signals a connection task waits on besides its socket.
#[derive(Clone, Default)]
pub(crate) struct Signals {
    /// New mail for the account, handed over by the queue's writer.
    pub mail: Arc<Mailbox>,
    /// Online-only envelopes for the account (see `online_only`).
    pub online_only: Arc<online_only::Inbox>,
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
    db: Arc<Mutex<Box<dyn Directory>>>,
    /// The queue's writes, through a `store::Queue` of their own.
    writer: Writer,
    authority: Authority,
    online: Arc<OnlineTable>,
    config: RelayConfig,
    limits: Arc<Limits>,
    stats: Arc<Stats>,
    /// Refusals being answered with a frame (see `RelayConfig::max_refusing`).
    refusing: Arc<Semaphore>,
    /// The rate limits' buckets.
    rates: rate::Limiter,
    /// The blob store's bytes (its rows are in `db`).
    blobs: Arc<dyn store::BlobBytes>,
    /// Other relays share the database (`store::Bus::shared`): sign-ins are numbered and
    /// announced, and online-only envelopes for accounts not connected here go to them.
    shared: bool,
    /// Word from the other relays on the same database, handed to the online table while
    /// this is held (see `hear`).
    _listening: store::Listening,
}

impl Relay {
    /// Runs a blocking store operation off the async worker threads.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Directory) -> store::Result<T> + Send + 'static,
    ) -> store::Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the directory as its backend left it:
            // every method is one transaction, so continuing with the inner value is sound.
            let mut guard = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut **guard)
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

    /// Marks `account_id` online on connection `conn_id`, pushing off an older connection,
    /// until the returned seat is dropped.
    fn go_online(&self, account_id: &str, conn_id: u64, signals: &Signals) -> OnlineSeat<'_> {
        take_seat(&self.online, account_id, conn_id, signals)
    }

    /// Connection `conn_id` of `account_id` learnt its place `seq` in the order of sign-ins;
    /// if a later sign-in elsewhere was heard of meanwhile, it ends.
    fn signed_in(&self, account_id: &str, conn_id: u64, seq: u64) {
        let mut online = self.lock_online();
        if let Some(o) = online.get_mut(account_id).filter(|o| o.conn_id == conn_id) {
            o.sign_in = Some(seq);
            if o.heard > seq {
                o.kick.cancel();
            }
        }
    }
}

/// An account's place in the online table, held while its connection serves it. Dropping it
/// takes the account offline however the connection ends (an error, a kick, a panic, an
/// aborted task), unless a newer connection took the place meanwhile.
struct OnlineSeat<'a> {
    table: &'a OnlineTable,
    account_id: String,
    conn_id: u64,
}

impl Drop for OnlineSeat<'_> {
    fn drop(&mut self) {
        let mut online = lock_table(self.table);
        if online
            .get(&self.account_id)
            .is_some_and(|o| o.conn_id == self.conn_id)
        {
            online.remove(&self.account_id);
        }
    }
}

/// Puts connection `conn_id` in `account_id`'s place, kicking the one that held it.
fn take_seat<'a>(
    table: &'a OnlineTable,
    account_id: &str,
    conn_id: u64,
    signals: &Signals,
) -> OnlineSeat<'a> {
    let old = lock_table(table).insert(
        account_id.to_string(),
        Online {
            conn_id,
            sign_in: None,
            heard: 0,
            mail: signals.mail.clone(),
            online_only: signals.online_only.clone(),
            refill: signals.refill.clone(),
            kick: signals.kick.clone(),
        },
    );
    if let Some(old) = old {
        old.kick.cancel();
    }
    OnlineSeat {
        table,
        account_id: account_id.to_string(),
        conn_id,
    }
}

/// Hands the queue writer's new mail to the recipients' connections (see `writer::Handover`).
struct ToOnline {
    table: Arc<OnlineTable>,
    /// Other relays commit to the same queue (`store::Bus::shared`): the mail is announced,
    /// not held, and the connection reads it from the queue.
    shared: bool,
}

impl writer::Handover for ToOnline {
    fn before_commit(&self, staged: Vec<(String, store::Queued)>) {
        let online = lock_table(&self.table);
        for (to, q) in staged {
            if let Some(o) = online.get(&to) {
                if self.shared {
                    o.mail.put_unheld(q.id);
                } else {
                    o.mail.put(q);
                }
            }
        }
    }

    fn after_commit(&self, recipients: Vec<String>) {
        let online = lock_table(&self.table);
        for to in recipients {
            if let Some(o) = online.get(&to) {
                o.mail.commit_done();
            }
        }
    }
}

/// Tells the connections here what the relays on the database said: read the queue, or end
/// for a later sign-in.
fn hear(table: &OnlineTable, heard: store::Heard) {
    let mut online = lock_table(table);
    match heard {
        store::Heard::OnlineOnly { account, envelope } => {
            if let Some(o) = online.get(&account) {
                o.online_only.put(envelope);
            }
        }
        store::Heard::SignedIn { account, seq } => {
            if let Some(o) = online.get_mut(&account) {
                match o.sign_in {
                    Some(mine) if mine < seq => o.kick.cancel(),
                    Some(_) => {}
                    // It has taken its seat here before its own sign-in got its number, so
                    // a later number may be heard first.
                    None => o.heard = o.heard.max(seq),
                }
            }
        }
        store::Heard::Mail { account } => {
            if let Some(o) = online.get(&account) {
                o.mail.read_queue();
            }
        }
        store::Heard::Missed => {
            for o in online.values() {
                o.mail.read_queue();
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
    let store::Stores {
        mut directory,
        queue,
        blobs,
        bus,
    } = store::open(&config.database, data_dir, config.queue)?;
    let authority = Authority::load_or_create(&mut *directory)?;
    blobs::reconcile(&mut *directory, &*blobs)?;
    let online: Arc<OnlineTable> = Arc::default();
    // New mail goes straight to its recipient's connection, if it is online; one that is not
    // reads it from the queue when it signs in.
    let shared = bus.shared();
    let handover = ToOnline {
        table: online.clone(),
        shared,
    };
    let writer = Writer::spawn(queue, handover)?;
    // Mail other relays commit reaches a connection here by their word.
    let table = online.clone();
    let seated = online.clone();
    let listening = bus.listen(
        Box::new(move |heard| hear(&table, heard)),
        Box::new(move || {
            lock_table(&seated)
                .iter()
                .filter_map(|(account, o)| Some((account.clone(), o.sign_in?)))
                .collect()
        }),
    );
    let stats = Arc::new(Stats::default());
    let caps = Caps {
        total: config.max_connections,
        per_address: config.max_connections_per_address,
        signing_in: config.max_signing_in,
        anonymous: config.max_anonymous,
        unauthenticated_per_address: config.max_unauthenticated_per_address,
    };
    Ok(Relay {
        writer,
        db: Arc::new(Mutex::new(directory)),
        authority,
        online,
        limits: Arc::new(Limits::new(caps, stats.clone())),
        stats,
        refusing: Arc::new(Semaphore::new(config.max_refusing)),
        rates: rate::Limiter::new(config.rate),
        blobs,
        config,
        shared,
        _listening: listening,
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
    // One relay per data directory, claimed for as long as this runs: a second one would
    // hand out the same envelope ids.
    crate::private::secure_dir(data_dir, crate::private::RELAY_FILES)
        .map_err(store::StoreError::from)?;
    let _claim = crate::dir_lock::DirLock::acquire(data_dir).map_err(RelayError::InUse)?;
    // Off the async threads: opening blocks (a PostgreSQL backend's client even must not be
    // called on one).
    let dir = data_dir.to_path_buf();
    let relay = tokio::task::spawn_blocking(move || open(&dir, config))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    let relay = Arc::new(relay);
    let stats_path = data_dir.join(stats::FILE);
    let tracker = TaskTracker::new();
    tracker.spawn(write_stats(
        relay.stats.clone(),
        stats_path.clone(),
        relay.config.stats_interval,
        shutdown.clone(),
    ));
    tracker.spawn(blobs::sweeping(relay.clone(), shutdown.clone()));
    let mut accept_errors = AcceptErrors::default();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer): (_, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin, and say so
                // once in a while rather than for every failure.
                relay.stats.record_accept_error();
                let pause = accept_errors.failed(&e);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        accept_errors.succeeded();
        relay.stats.record_accept();
        next_id += 1;
        let _ = stream.set_nodelay(true);
        match relay.limits.admit(limits::source(peer.ip())) {
            Ok(ticket) => {
                tracker.spawn(conn::serve(
                    relay.clone(),
                    stream,
                    peer,
                    ticket,
                    next_id,
                    shutdown.child_token(),
                ));
            }
            Err(reason) => {
                relay.stats.record_rejection(reason);
                tracing::debug!(%peer, reason = reason.name(), "connection refused");
                // Tell the client why while few refusals are under way; beyond, a flood is
                // not worth a handshake each: close at once.
                if let Ok(permit) = relay.refusing.clone().try_acquire_owned() {
                    tracker.spawn(handshake::refuse(
                        relay.clone(),
                        stream,
                        reason,
                        permit,
                        shutdown.child_token(),
                    ));
                }
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    // Every connection is gone; stop the writer (it commits what it holds) and wait for it,
    // so that when this returns the database is closed.
    if let Err(e) = relay.stats.write(&stats_path) {
        tracing::warn!(error = %e, "cannot write the relay's stats file");
    }
    if let Ok(relay) = Arc::try_unwrap(relay) {
        relay.writer.stop().await;
    }
    tracing::info!("relay stopped");
    Ok(())
}

/// Writes the counters to `path` every `interval` until `shutdown` (the caller writes the
/// last ones).
async fn write_stats(
    stats: Arc<Stats>,
    path: std::path::PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let (stats, path) = (stats.clone(), path.clone());
        let written = tokio::task::spawn_blocking(move || stats.write(&path)).await;
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %e, "cannot write the relay's stats file");
        }
    }
}

/// Failed accepts since the last success, logged at most once per `LOG_EVERY`.
#[derive(Default)]
struct AcceptErrors {
    /// Failures in a row; the back-off grows with them.
    in_a_row: u32,
    /// Failures not logged yet.
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl AcceptErrors {
    const LOG_EVERY: Duration = Duration::from_secs(10);

    /// Notes a failure; returns how long to wait before accepting again (50 ms, doubling up
    /// to 1 s while the failures go on).
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.unlogged += 1;
        let now = Instant::now();
        if self.logged_at.is_none_or(|at| now >= at + Self::LOG_EVERY) {
            tracing::warn!(
                error = %e,
                failures = self.unlogged,
                "accept failed; if this says too many open files, raise the file limit (ulimit -n) or lower max_connections"
            );
            self.unlogged = 0;
            self.logged_at = Some(now);
        }
        Duration::from_millis(50 << self.in_a_row.min(5).saturating_sub(1))
            .min(Duration::from_secs(1))
    }

    fn succeeded(&mut self) {
        self.in_a_row = 0;
    }
}

/// The public half of the trust root of the relay whose state is in `data_dir` and
/// `database` (created if it has none yet), for `sotto relay` to print and for tests. Blocks.
pub fn trust_root(data_dir: &Path, database: &Database) -> Result<Vec<u8>, RelayError> {
    let config = RelayConfig {
        database: database.clone(),
        ..RelayConfig::default()
    };
    let relay = open(data_dir, config)?;
    Ok(relay.authority.trust_root().serialize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(table: &OnlineTable, account: &str) -> Option<u64> {
        lock_table(table).get(account).map(|o| o.conn_id)
    }

    #[test]
    fn a_seat_is_given_up_when_dropped_but_never_a_newer_ones() {
        let table = OnlineTable::default();
        let (first, second) = (Signals::default(), Signals::default());
        let seat = take_seat(&table, "a", 1, &first);
        assert_eq!(held_by(&table, "a"), Some(1));
        // A newer connection kicks the first and takes the place.
        let newer = take_seat(&table, "a", 2, &second);
        assert!(first.kick.is_cancelled());
        assert!(!second.kick.is_cancelled());
        // The kicked connection ending must not take the newer one offline.
        drop(seat);
        assert_eq!(held_by(&table, "a"), Some(2));
        drop(newer);
        assert_eq!(held_by(&table, "a"), None);
    }

    #[test]
    fn a_connection_that_panics_goes_offline() {
        let table = OnlineTable::default();
        let signals = Signals::default();
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _seat = take_seat(&table, "a", 1, &signals);
            panic!("a bug in the connection");
        }));
        assert!(ended.is_err());
        assert_eq!(held_by(&table, "a"), None);
    }
}
