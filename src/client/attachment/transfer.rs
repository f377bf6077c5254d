//! One file's trip to or from the relay's blob store: encrypt (ours, first time), reserve the
//! blob, upload from what the relay already holds; or download into the `.part` file from
//! its length, then check the digest.
//!
//! Each transfer is a task of its own that reports to the manager over a channel; file I/O
//! and crypto run in `spawn_blocking`, so the manager's loop never waits on a transfer. Owns
//! no state: the manager records each step in the store (so a restart resumes it), and a
//! transfer cut off by the link going down reports `Interrupted` and is started again on the
//! next connection. Must not touch the store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::crypto::Sealed;
use super::files::{self, AttachError};
use super::{BlobTransport, NewBlob};
use crate::client::conn::LinkError;

/// Chunk size for an upload whose relay did not say, and for every download request: the
/// most one frame carries.
pub const CHUNK: u32 = crate::wire::MAX_BLOB_CHUNK;

/// Progress goes to the manager at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// What a transfer tells the manager; each names its message's `seq`.
pub enum Step {
    /// Our file is encrypted into the profile.
    Sealed(Sealed),
    /// The relay reserved our file's blob.
    Created(NewBlob),
    /// This many ciphertext bytes are at the relay (up) or here (down).
    Progress(u64),
    /// Up: the relay holds the whole blob. Down: the file is here, its digest checked.
    Done,
    /// The link went down; the transfer starts again on the next connection.
    Interrupted,
    /// The transfer cannot succeed as it is; the text says why and what to do.
    Failed(String),
}

pub type Reports = mpsc::UnboundedSender<(i64, Step)>;

#[derive(Debug, thiserror::Error)]
enum TransferError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    File(#[from] AttachError),
    #[error("{0}")]
    Relay(String),
    #[error("the message went")]
    Cancelled,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AttachError> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TransferError::Relay(format!("a file task stopped: {e}")))?
        .map_err(TransferError::from)
}

/// Our file on its way up.
pub struct Upload {
    pub seq: i64,
    pub profile: PathBuf,
    /// The plaintext to encrypt first, if it is not yet in the profile.
    pub source: Option<PathBuf>,
    pub secret: bool,
    pub blob_id: Option<String>,
    pub chunk: u32,
    pub blob_size: u64,
    pub expires_at: Option<u64>,
    /// Cancelled when the message goes: the task stops and removes what it wrote.
    pub cancel: CancellationToken,
}

/// A peer's file on its way down.
pub struct Download {
    pub seq: i64,
    pub profile: PathBuf,
    pub secret: bool,
    pub blob_id: String,
    pub blob_size: u64,
    pub digest: Vec<u8>,
    pub cancel: CancellationToken,
}

/// Sends progress at most every `PROGRESS_EVERY`, and always the last.
struct Pacer {
    seq: i64,
    tx: Reports,
    last: Option<tokio::time::Instant>,
}

impl Pacer {
    fn report(&mut self, done: u64) {
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_none_or(|l| now.duration_since(l) >= PROGRESS_EVERY)
        {
            self.last = Some(now);
            let _ = self.tx.send((self.seq, Step::Progress(done)));
        }
    }
}

fn finish(seq: i64, profile: &std::path::Path, tx: &Reports, result: Result<(), TransferError>) {
    let step = match result {
        Err(TransferError::Cancelled) => {
            files::remove(profile, seq);
            return;
        }
        Ok(()) => Step::Done,
        Err(TransferError::Link(
            LinkError::Offline | LinkError::Timeout | LinkError::Unreachable { .. },
        )) => Step::Interrupted,
        Err(e) => Step::Failed(crate::client::manager::describe(&e)),
    };
    let _ = tx.send((seq, step));
}

pub async fn upload(t: Arc<dyn BlobTransport>, job: Upload, tx: Reports) {
    let (seq, reports, profile) = (job.seq, tx.clone(), job.profile.clone());
    let r = upload_steps(t, job, tx).await;
    finish(seq, &profile, &reports, r);
}

async fn upload_steps(
    t: Arc<dyn BlobTransport>,
    job: Upload,
    tx: Reports,
) -> Result<(), TransferError> {
    let (seq, secret) = (job.seq, job.secret);
    let mut blob_size = job.blob_size;
    if let Some(src) = job.source {
        let profile = job.profile.clone();
        let sealed = blocking(move || files::seal_into(&src, &profile, seq)).await?;
        blob_size = sealed.blob_size;
        let _ = tx.send((seq, Step::Sealed(sealed)));
    }
    let (blob_id, chunk) = match job.blob_id {
        Some(b) => (b, job.chunk),
        None => {
            let new = t.create(secret, blob_size, job.expires_at, 1).await?;
            let made = (new.blob_id.clone(), new.chunk_size);
            let _ = tx.send((seq, Step::Created(new)));
            made
        }
    };
    let chunk = u64::from(if chunk == 0 { CHUNK } else { chunk });
    let mut offset = t.status(secret, &blob_id).await?.stored;
    let mut pacer = Pacer {
        seq,
        tx,
        last: None,
    };
    while offset < blob_size {
        if job.cancel.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        let len = chunk.min(blob_size - offset) as usize;
        let profile = job.profile.clone();
        let data = blocking(move || files::read_chunk(&profile, seq, offset, len)).await?;
        if data.len() != len {
            return Err(TransferError::Relay(
                "the encrypted file in the profile is shorter than recorded; attach it again"
                    .into(),
            ));
        }
        t.put(secret, &blob_id, offset, data).await?;
        offset += len as u64;
        pacer.report(offset);
    }
    Ok(())
}

pub async fn download(t: Arc<dyn BlobTransport>, job: Download, tx: Reports) {
    let (seq, reports, profile) = (job.seq, tx.clone(), job.profile.clone());
    let r = download_steps(t, job, tx).await;
    finish(seq, &profile, &reports, r);
}

async fn download_steps(
    t: Arc<dyn BlobTransport>,
    job: Download,
    tx: Reports,
) -> Result<(), TransferError> {
    let Download {
        seq,
        profile,
        secret,
        blob_id,
        blob_size,
        digest,
        cancel,
    } = job;
    let at = profile.clone();
    let mut offset = blocking(move || Ok(files::part_len(&at, seq))).await?;
    if offset > blob_size {
        offset = 0;
    }
    let mut pacer = Pacer {
        seq,
        tx,
        last: None,
    };
    while offset < blob_size {
        if cancel.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        let want = u64::from(CHUNK).min(blob_size - offset) as u32;
        let data = t.get(secret, &blob_id, offset, want).await?;
        if data.is_empty() || data.len() > want as usize {
            return Err(TransferError::Relay(
                "the relay holds less of the file than its sender announced; ask them to send it again".into(),
            ));
        }
        let n = data.len() as u64;
        let at = profile.clone();
        blocking(move || files::append_part(&at, seq, offset, &data)).await?;
        offset += n;
        pacer.report(offset);
    }
    if cancel.is_cancelled() {
        return Err(TransferError::Cancelled);
    }
    blocking(move || files::finish_part(&profile, seq, &digest)).await?;
    Ok(())
}
