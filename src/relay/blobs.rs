//! The relay's blob store as clients use it: reserving a blob, writing it chunk by chunk at
//! the offset the relay holds, reading a complete one, counting fetches, and the periodic
//! sweep that deletes what is due.
//!
//! Owns the rules of the blob requests (who may write, which offsets, the limits and the
//! refusals' words) and the sweep. Must not read the bytes it stores: they are ciphertext it
//! passes between the backend's `store::BlobBytes` and the socket. The owner of an anonymous upload is its source
//! address, never an account.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Relay;
use super::blob_files::BlobFiles;
pub use super::blob_files::DIR;
use super::store::{self, BlobBytes, BlobRow, Created, Directory, Fetched, RelayStore};
use crate::wire::{ClientFrame, ErrorCode, MAX_BLOB_CHUNK, RelayFrame, ReqId, valid_blob_id};

const MIB: u64 = 1024 * 1024;
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The blob store's limits, in `RelayConfig::blobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLimits {
    /// Largest blob, in bytes; a larger `blob_create` is refused with `too_large`.
    pub max_blob: u64,
    /// Bytes of live blobs (declared sizes, complete or not) one owner may hold; beyond,
    /// `quota_exceeded`.
    pub owner_bytes: u64,
    /// Live blobs one owner may hold; beyond, `quota_exceeded`.
    pub owner_blobs: u64,
    /// A blob is deleted this long after it was created, whatever else.
    pub retention: Duration,
    /// An upload not finished this long after its blob was created is given up and deleted.
    pub abandoned_after: Duration,
    /// How often the sweep deletes what is due.
    pub sweep_interval: Duration,
}

impl Default for BlobLimits {
    fn default() -> Self {
        BlobLimits {
            max_blob: 128 * MIB,
            owner_bytes: 1024 * MIB,
            owner_blobs: 1000,
            retention: 30 * DAY,
            abandoned_after: DAY,
            sweep_interval: Duration::from_secs(60),
        }
    }
}

/// Who is asking, as the blob store records it.
pub(crate) enum Owner {
    Account(String),
    /// An anonymous connection, by its source address (`limits::source`).
    Address(IpAddr),
}

impl Owner {
    fn key(&self) -> String {
        match self {
            Owner::Account(id) => id.clone(),
            Owner::Address(ip) => ip.to_string(),
        }
    }
}

/// Blobs a connection has said it fetched, each counted once per connection, at most this
/// many (a connection asking for more is refused: nobody downloads that many in one go).
const MAX_FETCHED_PER_CONNECTION: usize = 4096;

/// One connection's view of the blob store.
pub(crate) struct BlobSession {
    owner: String,
    fetched: HashSet<String>,
}

impl BlobSession {
    pub fn new(owner: Owner) -> BlobSession {
        BlobSession {
            owner: owner.key(),
            fetched: HashSet::new(),
        }
    }
}

/// Whether `frame` is a blob request (answered by `request`).
pub(crate) fn is_blob_request(frame: &ClientFrame) -> bool {
    matches!(
        frame,
        ClientFrame::BlobCreate { .. }
            | ClientFrame::BlobPut { .. }
            | ClientFrame::BlobStatus { .. }
            | ClientFrame::BlobGet { .. }
            | ClientFrame::BlobFetched { .. }
    )
}

fn refuse(req: ReqId, code: ErrorCode, message: impl Into<String>) -> RelayFrame {
    RelayFrame::Error {
        req: Some(req),
        code,
        message: message.into(),
    }
}

const NO_SUCH_BLOB: &str = "no such file at the relay: it was deleted (fetched by everyone, expired or kept too long) or never uploaded";

fn not_found(req: ReqId) -> RelayFrame {
    refuse(req, ErrorCode::NotFound, NO_SUCH_BLOB)
}

fn failed(req: ReqId, e: impl std::fmt::Display) -> RelayFrame {
    tracing::error!(error = %e, "blob store failure");
    refuse(
        req,
        ErrorCode::Internal,
        "the relay could not complete the file transfer; try again",
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// Answers one blob request of a connection (`is_blob_request`).
pub(crate) async fn request(
    relay: &Arc<Relay>,
    session: &mut BlobSession,
    frame: ClientFrame,
) -> RelayFrame {
    match frame {
        ClientFrame::BlobCreate {
            req,
            size,
            expires_at,
            recipients,
        } => create(relay, session, req, size, expires_at, recipients).await,
        ClientFrame::BlobPut {
            req,
            blob_id,
            offset,
            data,
        } => put(relay, session, req, blob_id, offset, data.0).await,
        ClientFrame::BlobStatus { req, blob_id } => match row(relay, req, &blob_id).await {
            Ok(b) => RelayFrame::BlobStatus {
                req,
                size: b.size,
                stored: b.stored,
            },
            Err(refusal) => refusal,
        },
        ClientFrame::BlobGet {
            req,
            blob_id,
            offset,
            len,
        } => get(relay, req, blob_id, offset, len).await,
        ClientFrame::BlobFetched { req, blob_id } => fetched(relay, session, req, blob_id).await,
        _ => refuse(0, ErrorCode::Malformed, "unexpected frame"),
    }
}

/// The row of a valid, existing blob, or the refusal to send.
async fn row(relay: &Arc<Relay>, req: ReqId, blob_id: &str) -> Result<BlobRow, RelayFrame> {
    if !valid_blob_id(blob_id) {
        return Err(refuse(
            req,
            ErrorCode::Malformed,
            "that is not a file id of this relay (32 hex digits)",
        ));
    }
    let id = blob_id.to_string();
    match relay.db(move |db| db.blob(&id)).await {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(not_found(req)),
        Err(e) => Err(failed(req, e)),
    }
}

/// Runs a blocking operation on the blobs' bytes off the async threads.
async fn bytes<T: Send + 'static>(
    relay: &Relay,
    f: impl FnOnce(&dyn BlobBytes) -> store::Result<T> + Send + 'static,
) -> store::Result<T> {
    let blobs = relay.blobs.clone();
    tokio::task::spawn_blocking(move || f(&*blobs))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

async fn create(
    relay: &Arc<Relay>,
    session: &BlobSession,
    req: ReqId,
    size: u64,
    expires_at: Option<u64>,
    recipients: u32,
) -> RelayFrame {
    let limits = relay.config.blobs;
    if size > limits.max_blob {
        return refuse(
            req,
            ErrorCode::TooLarge,
            format!(
                "the file is {} and this relay takes files up to {}",
                mib(size),
                mib(limits.max_blob)
            ),
        );
    }
    if !relay.rates.blob_creates.take(&session.owner) {
        return refuse(
            req,
            ErrorCode::RateLimited,
            "too many files started in a short time; wait a minute and try again",
        );
    }
    let blob = BlobRow {
        id: crate::wire::new_blob_id(),
        owner: session.owner.clone(),
        size,
        stored: 0,
        recipients_left: recipients,
        expires_at,
        created_at: super::conn::now_ms(),
    };
    let id = blob.id.clone();
    let created = relay
        .db(move |db| db.create_blob(&blob, limits.owner_blobs, limits.owner_bytes))
        .await;
    match created {
        Ok(Created::Yes) => {}
        Ok(Created::TooMany(n)) => {
            return refuse(
                req,
                ErrorCode::QuotaExceeded,
                format!(
                    "you have {n} files at the relay, as many as it keeps for anyone; send more once they have been fetched"
                ),
            );
        }
        Ok(Created::TooManyBytes(held)) => {
            return refuse(
                req,
                ErrorCode::QuotaExceeded,
                format!(
                    "your files at the relay take {} of the {} it keeps for anyone; send this one once others have been fetched",
                    mib(held),
                    mib(limits.owner_bytes)
                ),
            );
        }
        Err(e) => return failed(req, e),
    }
    let file_id = id.clone();
    if let Err(e) = bytes(relay, move |f| f.create(&file_id)).await {
        let gone = id.clone();
        let _ = relay.db(move |db| db.delete_blob(&gone)).await;
        return failed(req, e);
    }
    RelayFrame::BlobCreated {
        req,
        blob_id: id,
        chunk_size: MAX_BLOB_CHUNK,
    }
}

async fn put(
    relay: &Arc<Relay>,
    session: &BlobSession,
    req: ReqId,
    blob_id: String,
    offset: u64,
    data: Vec<u8>,
) -> RelayFrame {
    if data.len() > MAX_BLOB_CHUNK as usize {
        return refuse(
            req,
            ErrorCode::TooLarge,
            format!("a chunk carries at most {MAX_BLOB_CHUNK} bytes"),
        );
    }
    let b = match row(relay, req, &blob_id).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    // Someone else's blob is answered as one that does not exist: the id alone does not let
    // anyone write to it, nor learn that it is there.
    if b.owner != session.owner {
        return not_found(req);
    }
    if offset != b.stored {
        return wrong_offset(req, b.stored);
    }
    let end = offset + data.len() as u64;
    if end > b.size {
        return refuse(
            req,
            ErrorCode::TooLarge,
            format!(
                "the chunk would end at byte {end}, past the file's declared size of {} bytes",
                b.size
            ),
        );
    }
    if data.is_empty() && b.stored < b.size {
        return refuse(req, ErrorCode::Malformed, "an empty chunk stores nothing");
    }
    // Durable first, recorded second: a crash between them leaves bytes past `stored`,
    // which the next start cuts off, and the client resumes from what was recorded.
    let file_id = blob_id.clone();
    if let Err(e) = bytes(relay, move |f| f.write_at(&file_id, offset, &data)).await {
        return failed(req, e);
    }
    match relay
        .db(move |db| db.record_stored(&blob_id, offset, end))
        .await
    {
        Ok(true) => RelayFrame::Ok { req },
        // Another put of the same owner got there first, or the sweep deleted the blob.
        Ok(false) => refuse(
            req,
            ErrorCode::Malformed,
            "another upload of this file moved on meanwhile; ask for its status and resume from there",
        ),
        Err(e) => failed(req, e),
    }
}

fn wrong_offset(req: ReqId, stored: u64) -> RelayFrame {
    refuse(
        req,
        ErrorCode::Malformed,
        format!("the relay holds {stored} bytes of this file; send the chunk at offset {stored}"),
    )
}

fn incomplete(req: ReqId, b: &BlobRow) -> RelayFrame {
    refuse(
        req,
        ErrorCode::Forbidden,
        format!(
            "the file is not fully uploaded yet ({} of {} bytes); try again once its sender is online",
            b.stored, b.size
        ),
    )
}

async fn get(relay: &Arc<Relay>, req: ReqId, blob_id: String, offset: u64, len: u32) -> RelayFrame {
    let b = match row(relay, req, &blob_id).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    if !b.complete() {
        return incomplete(req, &b);
    }
    if offset > b.size {
        return refuse(
            req,
            ErrorCode::Malformed,
            format!(
                "the file has {} bytes; offset {offset} is past its end",
                b.size
            ),
        );
    }
    let len = (len.min(MAX_BLOB_CHUNK) as u64).min(b.size - offset) as usize;
    match bytes(relay, move |f| f.read_at(&blob_id, offset, len)).await {
        Ok(data) => RelayFrame::BlobData {
            req,
            offset,
            data: data.into(),
        },
        Err(e) => failed(req, e),
    }
}

async fn fetched(
    relay: &Arc<Relay>,
    session: &mut BlobSession,
    req: ReqId,
    blob_id: String,
) -> RelayFrame {
    let b = match row(relay, req, &blob_id).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    if !b.complete() {
        return incomplete(req, &b);
    }
    if session.fetched.contains(&blob_id) {
        // A retry after a lost answer: counted already.
        return RelayFrame::Ok { req };
    }
    if session.fetched.len() >= MAX_FETCHED_PER_CONNECTION {
        return refuse(
            req,
            ErrorCode::RateLimited,
            "too many files fetched on one connection; reconnect and try again",
        );
    }
    session.fetched.insert(blob_id.clone());
    let id = blob_id.clone();
    match relay.db(move |db| db.blob_fetched(&id)).await {
        Ok(Fetched::Counted) => RelayFrame::Ok { req },
        Ok(Fetched::Last) => {
            if let Err(e) = bytes(relay, move |f| f.remove(&blob_id)).await {
                tracing::warn!(error = %e, "a fetched blob's bytes could not be removed");
            }
            RelayFrame::Ok { req }
        }
        Ok(Fetched::NotFound) => not_found(req),
        Err(e) => failed(req, e),
    }
}

/// Matches the blobs' bytes to the rows when the relay starts (see `BlobBytes::reconcile`).
pub(crate) fn reconcile(store: &mut dyn Directory, blobs: &dyn BlobBytes) -> store::Result<()> {
    let rows: HashMap<String, u64> = store.blob_lengths()?.into_iter().collect();
    for lost in blobs.reconcile(&rows)? {
        tracing::warn!("a blob's bytes are missing; its row is dropped");
        store.delete_blob(&lost)?;
    }
    Ok(())
}

/// Deletes every blob due at `now` (Unix ms): past its expiry, older than the retention, or
/// an upload abandoned; rows first, then bytes (a file left by a crash in between is removed
/// at the next start). Returns how many were deleted.
pub fn sweep(
    store: &mut dyn Directory,
    blobs: &dyn BlobBytes,
    limits: &BlobLimits,
    now: u64,
) -> store::Result<usize> {
    let before = |d: Duration| now.saturating_sub(d.as_millis() as u64);
    let due = store.delete_due_blobs(
        now,
        before(limits.retention),
        before(limits.abandoned_after),
    )?;
    for id in &due {
        blobs.remove(id)?;
    }
    if !due.is_empty() {
        tracing::info!(deleted = due.len(), "blobs deleted by the sweep");
    }
    Ok(due.len())
}

/// Runs one sweep of the relay on SQLite in `data_dir` as of `now` (Unix ms), alongside a
/// running relay or without one: what the relay's periodic sweep does, for an operator or a
/// test.
pub fn sweep_dir(data_dir: &Path, limits: &BlobLimits, now: u64) -> store::Result<usize> {
    let mut store = RelayStore::open(data_dir)?;
    let files = BlobFiles::open(data_dir)?;
    sweep(&mut store, &files, limits, now)
}

/// The relay's periodic sweep, every `BlobLimits::sweep_interval` until `shutdown`.
pub(crate) async fn sweeping(relay: Arc<Relay>, shutdown: CancellationToken) {
    let limits = relay.config.blobs;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(limits.sweep_interval) => {}
        }
        let blobs = relay.blobs.clone();
        let now = super::conn::now_ms();
        let swept = relay.db(move |db| sweep(db, &*blobs, &limits, now)).await;
        if let Err(e) = swept {
            tracing::warn!(error = %e, "the blob sweep failed; it runs again later");
        }
    }
}
