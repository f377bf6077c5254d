//! The relay's durable state behind three traits, and where it lives: the `Directory`
//! (accounts, prekeys, key changes, resets, the relay's own keys, the blob store's rows and
//! reads of the envelope queue), the `Queue` (the queue's write path, in batches) and
//! `BlobBytes` (the blobs' bytes), the types they share, and `open`, which opens a
//! `Database`'s backend.
//!
//! Owns the contract every backend keeps. The decisions a backend must make the same way as
//! every other (the sealed-sender check, reset claims, the prekey and blob caps) are the
//! functions in `rules`, and the queue quotas' is `quota::over_quota`: a backend looks the
//! facts up and calls them, it does not restate them in its own queries.
//! Must not touch sockets or interpret envelopes: a backend stores bytes it is given and hands
//! them back. Every method blocks; the relay calls them off the async threads (`Relay::db`,
//! the queue's writer thread).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub mod bus;
mod memory;
mod postgres;
pub mod rules;
mod sqlite;

pub use bus::{Alone, Bus, Hear, Heard, Listening};
pub use memory::MemoryStore;
pub use postgres::{MAIL_CHANNEL, PgBlobBytes, PgBus, PgDirectory, PgQueue};
pub use sqlite::{RelayStore, SqliteQueue};

use super::blob_files::BlobFiles;
use super::quota::{Entry, QueueLimits, Quota};
use crate::wire::{Bundle, KeyChange, KeyChangeVia, KeyUpload, PreKey, SignedKey};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("relay database error")]
    Sql(#[from] rusqlite::Error),
    #[error("the handle {0:?} is already registered")]
    HandleTaken(String),
    #[error("the identity key is already registered to another handle")]
    KeyTaken,
    #[error("no such account")]
    NotFound,
    #[error(transparent)]
    Private(#[from] crate::private::PrivateError),
    #[error(transparent)]
    BlobFile(#[from] super::blob_files::BlobFileError),
    /// `Queue::stage` while a batch is open: a bug in the caller.
    #[error("the relay's queue already has a batch open")]
    BatchOpen,
    /// `Queue::commit` without a staged batch: a bug in the caller.
    #[error("the relay's queue has no batch to commit")]
    NoBatch,
    /// A backend's own failure that none of the above describes.
    #[error("relay database error: {0}")]
    Backend(String),
    #[error("relay database error (PostgreSQL): {}", postgres::explain(.0))]
    Postgres(#[from] ::postgres::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Where a relay's state lives.
#[derive(Clone, Default)]
pub enum Database {
    /// `relay.db` in the relay's data directory: embedded, one relay per directory.
    #[default]
    Sqlite,
    /// In this process's memory, gone when the last handle is dropped: for tests of the
    /// relay's logic. Every clone of the `MemoryStore` is a handle on the same state.
    Memory(MemoryStore),
    /// A PostgreSQL database, by connection string (`postgres://USER@HOST:PORT/DATABASE`):
    /// any number of relays may share it.
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite => f.write_str("Sqlite"),
            Database::Memory(_) => f.write_str("Memory"),
            // Not the string: it may hold a password.
            Database::Postgres(_) => f.write_str("Postgres"),
        }
    }
}

impl Database {
    /// The database a `--database` value (or the config's `database`) names: `sqlite`, or a
    /// PostgreSQL URL (`postgres://` or `postgresql://`); None for anything else.
    pub fn named(value: &str) -> Option<Database> {
        if value == "sqlite" {
            Some(Database::Sqlite)
        } else if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Some(Database::Postgres(value.to_string()))
        } else {
            None
        }
    }

    /// The backend's name, for reports: `sqlite`, `memory` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite => "sqlite",
            Database::Memory(_) => "memory",
            Database::Postgres(_) => "postgres",
        }
    }
}

/// A relay's ways into its state: the directory, shared by the connections, the queue's
/// write path, owned by the queue's writer, and the blobs' bytes.
pub struct Stores {
    pub directory: Box<dyn Directory>,
    pub queue: Box<dyn Queue>,
    /// Where the blobs' bytes are: files in the data directory on SQLite and in memory, the
    /// database itself on PostgreSQL, so that every relay sharing it serves every blob.
    pub blobs: Arc<dyn BlobBytes>,
    /// What the relays sharing the database say (nothing, for a backend only one can use).
    pub bus: Box<dyn Bus>,
}

/// Opens the state `db` names (for SQLite, under `data_dir`, created if needed and made
/// private to the user; for PostgreSQL, its schema brought up to date), with the queue
/// holding new envelopes to `limits`. Blocks: not on an async worker thread.
pub fn open(db: &Database, data_dir: &Path, limits: QueueLimits) -> Result<Stores> {
    Ok(match db {
        Database::Sqlite => Stores {
            directory: Box::new(RelayStore::open(data_dir)?),
            queue: Box::new(SqliteQueue::open(data_dir, limits)?),
            blobs: Arc::new(BlobFiles::open(data_dir)?),
            bus: Box::new(Alone),
        },
        Database::Memory(m) => Stores {
            directory: Box::new(m.clone()),
            queue: Box::new(m.queue(limits)),
            blobs: Arc::new(BlobFiles::open(data_dir)?),
            bus: Box::new(Alone),
        },
        Database::Postgres(url) => {
            // Tells this relay's own words from the others' (its connections had its mail
            // handed over in process already).
            let instance: u64 = rand::random();
            Stores {
                directory: Box::new(PgDirectory::open(url)?.as_instance(instance)),
                queue: Box::new(PgQueue::open(url, limits, instance)?),
                blobs: Arc::new(PgBlobBytes::open(url)?),
                bus: Box::new(PgBus::new(url, instance)),
            }
        }
    })
}

/// Everything of the relay's state but the queue's writes: accounts and their keys, the
/// relay's own keys (`meta`), the blob store's rows, and reads of the queue.
///
/// Each method is one transaction of its own: it happens entirely or not at all, and what it
/// wrote is visible to every later call on any handle of the same state.
pub trait Directory: Send + 'static {
    /// The relay's own value under `key` (its keys, see `certs`).
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Writes several meta entries, all of them or none, leaving any entry already present
    /// as it is: the first writer wins, so relays starting together on one database settle
    /// on one set of keys (each reads back what was kept).
    fn add_meta(&mut self, entries: &[(&str, &[u8])]) -> Result<()>;

    /// Creates an account with its keys and one-time prekeys. Fails with `HandleTaken` if
    /// the handle is registered, otherwise with `KeyTaken` if the identity key is (see
    /// `rules::registration_conflict`).
    fn register(
        &mut self,
        account_id: &str,
        handle: &str,
        keys: &KeyUpload,
        access_token: &[u8],
        now: u64,
    ) -> Result<()>;

    /// Replaces an account's identity key and all its prekeys, and records the change with
    /// the old key's `endorsement` of the new one (None for an operator's reset). `NotFound`
    /// without such an account, `KeyTaken` if another account holds the new key.
    fn rekey(
        &mut self,
        account_id: &str,
        keys: &KeyUpload,
        via: KeyChangeVia,
        endorsement: Option<&[u8]>,
        now: u64,
    ) -> Result<()>;

    /// Arms a reset of `handle` with `code` until `expires_at` (Unix ms), replacing one
    /// armed before: returns the account id, or None if no such handle.
    fn arm_reset(&mut self, handle: &str, code: &[u8], expires_at: u64) -> Result<Option<String>>;

    /// If `code` is the armed, unexpired reset code of `handle` (`rules::claim_allowed`),
    /// replaces the account's keys with `keys` (recorded as a reset), disarms the reset and
    /// returns the account id, all at once; None otherwise, and nothing changes.
    fn claim_reset(
        &mut self,
        handle: &str,
        code: &[u8],
        keys: &KeyUpload,
        now: u64,
    ) -> Result<Option<String>>;

    /// How many times an account's key was replaced, for the operator and the tests.
    fn key_changes(&mut self, account_id: &str) -> Result<u64>;

    /// The account's latest `KEY_HISTORY` key changes, oldest first, as a lookup hands them
    /// out.
    fn key_history(&mut self, account_id: &str) -> Result<Vec<KeyChange>>;

    /// Adds one-time prekeys, replacing any the account holds under the same id, unless it
    /// would then hold more than `max` of either kind (`rules::prekeys_fit`): returns whether
    /// they were added (if not, nothing changed).
    fn upload_prekeys(
        &mut self,
        account_id: &str,
        prekeys: &[PreKey],
        kyber: &[SignedKey],
        max: u32,
    ) -> Result<bool>;

    /// How many one-time EC and Kyber prekeys the account has left.
    fn prekey_count(&mut self, account_id: &str) -> Result<(u32, u32)>;

    fn account_by_id(&mut self, account_id: &str) -> Result<Option<Account>>;

    fn account_by_handle(&mut self, handle: &str) -> Result<Option<Account>>;

    /// Hands out a bundle, consuming the account's one-time EC prekey and one-time Kyber
    /// prekey with the lowest ids, if any are left; no one-time key is ever handed out twice.
    /// Without a one-time Kyber key, the bundle has the last-resort one. With `one_time`
    /// false (the account's bundles are being fetched too fast), the bundle has no one-time
    /// EC prekey and the last-resort Kyber key, and the pools are left alone. `NotFound`
    /// without such an account.
    fn take_bundle(&mut self, account_id: &str, one_time: bool) -> Result<Bundle>;

    /// Why an envelope from `origin` to `recipient` must be refused, if it must: the checks
    /// the queue makes as it stages (`rules::refusal`), without storing anything; for
    /// online-only envelopes.
    fn refusal(&mut self, recipient: &str, origin: &Origin) -> Result<Option<Stored>>;

    /// Up to `limit` committed envelopes for `recipient` with ids above `after`, lowest id
    /// first, expired ones included (the caller skips those and has them deleted), each with
    /// its sender's handle if the sender's account exists.
    fn pending(&mut self, recipient: &str, after: u64, limit: usize) -> Result<Vec<Queued>>;

    /// What the queue holds, for the operator: totals, and the `top` accounts by queued
    /// bytes as senders of normal mail (a sealed envelope's sender is unknown, so it counts
    /// only under its recipient) and as recipients, by handle.
    fn queue_summary(&mut self, top: usize) -> Result<QueueSummary>;

    /// Envelopes waiting for `recipient`.
    fn queued_for(&mut self, recipient: &str) -> Result<u64>;

    /// Records that `account_id` signed in on a new connection. Where other relays share the
    /// database, returns the sign-in's place in the order of all sign-ins and announces it
    /// to them (`bus::Heard::SignedIn`): a connection of theirs for the account that signed
    /// in earlier ends. None where only this relay serves the database: its online table
    /// alone orders the account's connections.
    fn sign_in(&mut self, _account_id: &str) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Hands online-only envelopes (each with its recipient) to the other relays sharing the
    /// database, for those of the recipients connected there (`bus::Heard::OnlineOnly`);
    /// one too large for the word is dropped, as a full inbox drops it. Nothing where no
    /// other relay can share the database.
    fn pass_elsewhere(&mut self, _envelopes: &[(String, Queued)]) -> Result<()> {
        Ok(())
    }

    /// Records a new blob (nothing stored yet, `blob.stored` is ignored) unless its owner
    /// already has `max_blobs` blobs or would reserve more than `max_bytes` declared bytes
    /// with it (`rules::admit_blob`); the check and the insert are one.
    fn create_blob(&mut self, blob: &BlobRow, max_blobs: u64, max_bytes: u64) -> Result<Created>;

    fn blob(&mut self, id: &str) -> Result<Option<BlobRow>>;

    /// Every blob's id and stored length, for matching the files to the rows at start.
    fn blob_lengths(&mut self) -> Result<Vec<(String, u64)>>;

    /// Records that the blob now holds `to` bytes, if it held `from`: false if it did not (a
    /// concurrent put got there first, or the blob is gone).
    fn record_stored(&mut self, id: &str, from: u64, to: u64) -> Result<bool>;

    /// Counts one recipient's fetch of a blob (`rules::after_fetch`); the last one deletes
    /// its row.
    fn blob_fetched(&mut self, id: &str) -> Result<Fetched>;

    /// Deletes the row of a blob whose file is gone.
    fn delete_blob(&mut self, id: &str) -> Result<()>;

    /// Deletes the rows of blobs past their `expires_at` (at or before `now`), created at or
    /// before `retained_since`, or incomplete and created at or before `abandoned_since` (all
    /// Unix ms); returns their ids, for the caller to remove the files.
    fn delete_due_blobs(
        &mut self,
        now: u64,
        retained_since: u64,
        abandoned_since: u64,
    ) -> Result<Vec<String>>;

    fn blob_summary(&mut self) -> Result<BlobSummary>;
}

/// The envelope queue's write path, in batches: `stage` one, then `commit` it, or `rollback`
/// when either failed. One writer uses it (the relay's queue writer thread); readers see the
/// queue through a `Directory`.
///
/// The quota totals and the next envelope id are the backend's own state, kept across
/// batches.
pub trait Queue: Send + 'static {
    /// Opens a batch and applies it, visible to nobody and durable nowhere until `commit`:
    /// first each unit of `new` in order (one envelope, or every copy of a fan-out), then the
    /// deletions in `remove` (each an envelope's recipient and id; one not in the queue is
    /// passed over). Returns what became of each unit, in order.
    ///
    /// An envelope is refused as `rules::refusal` says (no account, or a sealed envelope's
    /// failed checks), or as `quota::over_quota` says over the totals with everything this
    /// batch has queued so far. A unit is queued all or none: when any copy is refused, none
    /// is, and every copy is still checked so that the sender learns at once of each
    /// recipient whose key changed.
    ///
    /// The backend assigns the ids: each queued envelope's is above every id it has given out
    /// before, committed or not (an id handed to recipients from a batch that then failed is
    /// never used again; those of a refused unit may be), so for any one recipient ids
    /// increase in commit order. The relay's push cursor relies on it.
    fn stage(&mut self, new: &[Vec<NewEnvelope>], remove: &[(String, u64)])
    -> Result<Vec<Outcome>>;

    /// Makes the staged batch visible, and durable on return when it queued anything: that is
    /// the promise behind the sender's `ok`. Deletions alone may be lost in a power cut (the
    /// envelopes are delivered again and dropped as duplicates); an expiring envelope's
    /// deletion leaves no copy of it behind in the backend's files beyond what it documents.
    fn commit(&mut self) -> Result<()>;

    /// Discards the open batch, if any, after `stage` or `commit` failed: nothing of it is
    /// kept and the quota totals are as they were before it. Ids it gave out stay used.
    fn rollback(&mut self);
}

/// The blob store's bytes, by blob id (the rows are the `Directory`'s). The caller has
/// validated the id and checked the row: who may write, at which offset, how much may be
/// read. Each method blocks; any number of threads may call at once.
pub trait BlobBytes: Send + Sync + 'static {
    /// Makes room for blob `id`, whose row has just been created, holding nothing yet.
    fn create(&self, id: &str) -> Result<()>;

    /// Writes `data` at `offset`, replacing what was written there before (a resumed upload
    /// writes again what was written but not recorded): when this returns, the bytes survive
    /// a crash.
    fn write_at(&self, id: &str, offset: u64, data: &[u8]) -> Result<()>;

    /// Up to `len` bytes from `offset`, fewer only at the end of what was written. The caller
    /// bounds `offset + len` by the row's recorded length: bytes past it were never recorded
    /// and must not be served.
    fn read_at(&self, id: &str, offset: u64, len: usize) -> Result<Vec<u8>>;

    /// Removes blob `id`'s bytes; bytes already gone are not an error.
    fn remove(&self, id: &str) -> Result<()>;

    /// Matches the bytes to the rows (`id` → recorded length) when the relay starts, after a
    /// crash may have left bytes without a row or a row without bytes. Returns the ids of rows
    /// whose bytes are missing, for the caller to drop; a backend other relays share must not
    /// return any, nor touch bytes an upload through another relay may be writing.
    fn reconcile(&self, rows: &HashMap<String, u64>) -> Result<Vec<String>>;
}

/// A registered account as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub account_id: String,
    pub handle: String,
    pub identity_key: Vec<u8>,
    pub registration_id: u32,
    pub access_token: Vec<u8>,
}

/// An envelope to be queued.
#[derive(Debug, Clone)]
pub struct NewEnvelope {
    pub recipient: String,
    pub origin: Origin,
    pub payload: Vec<u8>,
    pub received_at: u64,
    pub expires_at: Option<u64>,
}

/// Who an envelope is from, as far as the relay may know.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A normal envelope from this signed-in account.
    Account { id: String, handle: String },
    /// A sealed envelope: the relay does not know the sender, only what the sender proved it
    /// knows of the recipient.
    Sealed {
        access_token: Vec<u8>,
        /// The identity key the sender encrypted to, if it said.
        recipient_key: Option<Vec<u8>>,
    },
}

impl NewEnvelope {
    /// The envelope's part in the queue quotas.
    pub fn entry(&self) -> Entry<'_> {
        Entry {
            recipient: &self.recipient,
            sender: self.sender(),
            bytes: self.payload.len() as u64,
        }
    }

    /// The sending account of a normal envelope; None for a sealed one.
    pub fn sender(&self) -> Option<&str> {
        match &self.origin {
            Origin::Account { id, .. } => Some(id.as_str()),
            Origin::Sealed { .. } => None,
        }
    }

    /// The envelope as its recipient is sent it, once queued under `id`. Copies only what
    /// the recipient gets: a sealed envelope's access token stays behind.
    pub fn to_queued(&self, id: u64) -> Queued {
        let (sender, sender_handle, sealed) = match &self.origin {
            Origin::Account { id, handle } => (Some(id.clone()), Some(handle.clone()), false),
            Origin::Sealed { .. } => (None, None, true),
        };
        Queued {
            id,
            sender,
            sender_handle,
            sealed,
            payload: self.payload.clone(),
            received_at: self.received_at,
            expires_at: self.expires_at,
        }
    }
}

/// What the queue did with an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Queued under this id.
    Queued(u64),
    /// The recipient has no account, or a sealed envelope's access token is wrong (one
    /// answer for both, so the sealed path cannot probe which accounts exist).
    NoRecipient,
    /// A sealed envelope encrypted to an identity key the recipient no longer has.
    StaleKey,
    /// Queuing it would break a queue quota.
    OverQuota(Quota),
}

/// What the queue did with one unit: a single envelope, or every copy of a fan-out (one per
/// recipient), which are queued all or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every envelope of the unit is queued, under these ids, in the unit's order.
    Queued(Vec<u64>),
    /// None is: each refused envelope's recipient, and why it was refused.
    Refused(Vec<(String, Stored)>),
}

/// A queued envelope, as pushed to its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: u64,
    pub sender: Option<String>,
    /// The sender's handle, for normal messages (sealed ones have no sender).
    pub sender_handle: Option<String>,
    pub sealed: bool,
    pub payload: Vec<u8>,
    pub received_at: u64,
    /// Unix ms after which the envelope must not be delivered.
    pub expires_at: Option<u64>,
}

/// Key changes handed out with a lookup, at most: far more than a contact who was away for
/// a long time needs to follow, and a bound on what one lookup costs.
pub const KEY_HISTORY: usize = 32;

/// The queue as the operator sees it (`sotto relay admin stats`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueSummary {
    pub envelopes: u64,
    pub bytes: u64,
    /// Of `envelopes`, how many are sealed.
    pub sealed: u64,
    /// (handle, envelopes, bytes) of normal mail by sender, largest first.
    pub top_senders: Vec<(String, u64, u64)>,
    /// (handle, envelopes, bytes) by recipient, largest first.
    pub top_recipients: Vec<(String, u64, u64)>,
}

/// One blob as the relay's directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    pub id: String,
    /// The account id, or for an anonymous upload its source address.
    pub owner: String,
    pub size: u64,
    /// Bytes from the start that are synced to disk.
    pub stored: u64,
    /// Fetches still to come before the blob is deleted; 0 when fetches do not count.
    pub recipients_left: u32,
    pub expires_at: Option<u64>,
    pub created_at: u64,
}

impl BlobRow {
    pub fn complete(&self) -> bool {
        self.stored == self.size
    }
}

/// What `create_blob` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Yes,
    /// The owner already has this many blobs (the count quota).
    TooMany(u64),
    /// The owner's live blobs already reserve this many bytes (the byte quota).
    TooManyBytes(u64),
}

/// What `blob_fetched` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Counted; other recipients are still to fetch it (or fetches do not count).
    Counted,
    /// That was the last recipient: the row is gone, and the caller removes the file.
    Last,
    NotFound,
}

/// What the blob store holds, for the operator (`sotto relay admin stats`).
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct BlobSummary {
    pub blobs: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Blobs whose upload has not finished.
    pub incomplete: u64,
}
