//! Attachments: files sent inside a message, encrypted on the client with a key of their own
//! and carried by the relay's blob store as ciphertext it cannot read.
//!
//! Owns the types every part of the feature agrees on: what a message's payload says of its
//! file (`FileRef`), what the store and the screen know of it (`Attachment`), and the blob
//! store as the client's transfer code sees it (`BlobTransport`). Must not touch a socket or
//! the store itself: the relay link implements `BlobTransport`, the manager keeps the rows.

pub mod crypto;
pub mod files;
pub mod transfer;

mod link;

pub use files::plaintext_reader;
pub use link::LinkBlobs;
pub mod preview;

use crate::client::conn::LinkError;
use crate::wire::B64;

/// Largest file sent unless the config says otherwise (`max_attachment`).
pub const DEFAULT_MAX_ATTACHMENT: u64 = 100 * 1024 * 1024;

/// Files up to this size are fetched as soon as their message arrives (`auto_download`);
/// larger ones wait for the user.
pub const DEFAULT_AUTO_DOWNLOAD: u64 = 5 * 1024 * 1024;

/// What the announcing message carries about its file: where the ciphertext is, the key to
/// open it, the digest to check it against, and what to call it. Sealed in the secret thread.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRef {
    /// The relay's id of the uploaded ciphertext.
    pub blob_id: String,
    /// The file's own random key (never reused for another file).
    pub key: B64,
    /// SHA-256 of the whole ciphertext, checked before anything is decrypted or shown.
    pub digest: B64,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Size of the ciphertext at the relay, in bytes.
    pub blob_size: u64,
    /// The file's name, without any directory.
    pub name: String,
    /// Media type, e.g. `image/png`; `application/octet-stream` when unknown.
    pub mime: String,
}

impl std::fmt::Debug for FileRef {
    // The key must never reach a log through a Debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRef")
            .field("blob_id", &self.blob_id)
            .field("size", &self.size)
            .field("blob_size", &self.blob_size)
            .field("mime", &self.mime)
            .finish_non_exhaustive()
    }
}

/// A message's file as the store and the screen know it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub name: String,
    pub mime: String,
    /// Plaintext size in bytes.
    pub size: u64,
    pub state: AttachmentState,
}

impl Attachment {
    /// Whether the screen may draw it as a picture.
    pub fn is_image(&self) -> bool {
        self.mime.starts_with("image/")
    }
}

/// Where a file is on its way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AttachmentState {
    /// Ours, going up to the relay: `done` ciphertext bytes acknowledged.
    Uploading { done: u64 },
    /// Theirs, still at the relay: waiting for the user (larger than `auto_download`).
    Remote,
    /// Theirs, coming down: `done` ciphertext bytes here.
    Downloading { done: u64 },
    /// In the profile, digest checked, encrypted at rest: can be opened or saved.
    Ready,
    /// The transfer stopped for good (`error` says why and what to do); Enter tries again.
    Failed { error: String },
}

/// A blob the relay has reserved for an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBlob {
    pub blob_id: String,
    /// The largest chunk one `put` may carry.
    pub chunk_size: u32,
}

/// How much of a blob the relay holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobStatus {
    /// Total size declared when it was created.
    pub size: u64,
    /// Bytes durably stored, from the start: an interrupted upload resumes here.
    pub stored: u64,
}

/// The relay's blob store, reached over the account's link (`secret == false`) or the
/// anonymous link (`secret == true`, so a secret file is tied to no account, as a sealed
/// envelope is not). Each call is one request and its answer.
#[async_trait::async_trait]
pub trait BlobTransport: Send + Sync + 'static {
    /// Reserves a blob of `size` ciphertext bytes, deleted by the relay at `expires_at` (Unix
    /// ms), once `recipients` downloads have called `fetched`, or after its retention period.
    async fn create(
        &self,
        secret: bool,
        size: u64,
        expires_at: Option<u64>,
        recipients: u32,
    ) -> Result<NewBlob, LinkError>;
    /// Stores `data` at `offset`, which must be the blob's `stored` length; answered once it
    /// is durable.
    async fn put(
        &self,
        secret: bool,
        blob_id: &str,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), LinkError>;
    async fn status(&self, secret: bool, blob_id: &str) -> Result<BlobStatus, LinkError>;
    /// Up to `len` bytes from `offset` (fewer only at the end).
    async fn get(
        &self,
        secret: bool,
        blob_id: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, LinkError>;
    /// This recipient holds the whole blob; the relay may count it as fetched.
    async fn fetched(&self, secret: bool, blob_id: &str) -> Result<(), LinkError>;
}
