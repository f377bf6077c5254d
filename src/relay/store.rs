//! The relay's durable state in SQLite: accounts, the prekey directory, the envelope queue,
//! the blob store's rows (see `blobs`) and the relay's own keys.
//!
//! Owns the schema and every SQL statement of the relay. Must not touch sockets or interpret
//! envelopes: it stores bytes it is given and hands them back. Every method is blocking; the
//! caller runs it off the async threads (`Relay::db`).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

mod blobs;

pub use blobs::{BlobRow, BlobSummary, Created, Fetched};

use super::quota::{Entry, QueueLimits, QueueUsage, Quota};
use crate::wire::{B64, Bundle, KeyChange, KeyChangeVia, KeyUpload, PreKey, SignedKey};

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
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A registered account as the directory knows it.
#[derive(Debug, Clone)]
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
    fn entry(&self) -> Entry<'_> {
        let sender = match &self.origin {
            Origin::Account { id, .. } => Some(id.as_str()),
            Origin::Sealed { .. } => None,
        };
        Entry {
            recipient: &self.recipient,
            sender,
            bytes: self.payload.len() as u64,
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

/// What `RelayStore::write` did with an envelope.
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

/// What `RelayStore::write` did with one unit: a single envelope, or every copy of a
/// fan-out (one per recipient), which are queued all or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every envelope of the unit is queued, under these ids, in the unit's order.
    Queued(Vec<u64>),
    /// None is: each refused envelope's recipient, and why it was refused.
    Refused(Vec<(String, Stored)>),
}

/// Queues every envelope of `unit` or none (a fan-out's copies are applied inside a
/// savepoint of the batch's transaction, rolled back, with `usage` and `next_id`, when any
/// copy is refused). Every copy is checked even after a refusal, so that the sender learns
/// each recipient whose key changed at once.
fn queue_unit(
    tx: &rusqlite::Transaction<'_>,
    insert: &mut rusqlite::CachedStatement<'_>,
    account: &mut rusqlite::CachedStatement<'_>,
    unit: &[NewEnvelope],
    next_id: &mut u64,
    usage: &mut QueueUsage,
) -> rusqlite::Result<Outcome> {
    let fan_out = unit.len() > 1;
    if fan_out {
        tx.execute_batch("SAVEPOINT fan_out")?;
    }
    let first_id = *next_id;
    let mut ids = Vec::with_capacity(unit.len());
    let mut queued = Vec::with_capacity(unit.len());
    let mut refused = Vec::new();
    for e in unit {
        match queue_one(insert, account, e, next_id, usage)? {
            Ok(id) => {
                ids.push(id);
                queued.push(e);
            }
            Err(why) => refused.push((e.recipient.clone(), why)),
        }
    }
    if refused.is_empty() {
        if fan_out {
            tx.execute_batch("RELEASE fan_out")?;
        }
        return Ok(Outcome::Queued(ids));
    }
    if fan_out {
        tx.execute_batch("ROLLBACK TO fan_out; RELEASE fan_out")?;
        // Nothing of the unit was handed over (only queued units are), so its ids are free.
        *next_id = first_id;
        for e in queued {
            usage.remove(&e.entry());
        }
    }
    Ok(Outcome::Refused(refused))
}

/// Queues one envelope under the next id, or says why it must not be queued.
fn queue_one(
    insert: &mut rusqlite::CachedStatement<'_>,
    account: &mut rusqlite::CachedStatement<'_>,
    e: &NewEnvelope,
    next_id: &mut u64,
    usage: &mut QueueUsage,
) -> rusqlite::Result<std::result::Result<u64, Stored>> {
    if let Origin::Sealed {
        access_token,
        recipient_key,
    } = &e.origin
        && let Some(refused) = check_sealed(
            account,
            &e.recipient,
            access_token,
            recipient_key.as_deref(),
        )?
    {
        return Ok(Err(refused));
    }
    let entry = e.entry();
    if let Some(quota) = usage.check(&entry) {
        return Ok(Err(Stored::OverQuota(quota)));
    }
    let queued = insert.execute(params![
        e.recipient,
        entry.sender,
        matches!(e.origin, Origin::Sealed { .. }),
        e.payload,
        e.received_at as i64,
        e.expires_at.map(|x| x as i64),
        *next_id as i64
    ])?;
    if queued != 1 {
        return Ok(Err(Stored::NoRecipient));
    }
    usage.add(&entry);
    *next_id += 1;
    Ok(Ok(*next_id - 1))
}

/// Why a sealed envelope for `recipient` must not be queued, if it must not: no such
/// account or a wrong access token (one answer), or a stale identity key. `account` is the
/// prepared lookup of an account's access token and identity key.
fn check_sealed(
    account: &mut rusqlite::CachedStatement<'_>,
    recipient: &str,
    access_token: &[u8],
    recipient_key: Option<&[u8]>,
) -> rusqlite::Result<Option<Stored>> {
    let found: Option<(Vec<u8>, Vec<u8>)> = account
        .query_row([recipient], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match found {
        None => Some(Stored::NoRecipient),
        Some((token, _)) if !super::same_secret(&token, access_token) => Some(Stored::NoRecipient),
        Some((_, key)) if recipient_key.is_some_and(|k| k != key.as_slice()) => {
            Some(Stored::StaleKey)
        }
        Some(_) => None,
    })
}

/// A queued envelope, as pushed to its recipient.
#[derive(Debug, Clone)]
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

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    handle TEXT NOT NULL UNIQUE,
    identity_key BLOB NOT NULL UNIQUE,
    registration_id INTEGER NOT NULL,
    access_token BLOB NOT NULL,
    signed_prekey_id INTEGER NOT NULL,
    signed_prekey BLOB NOT NULL,
    signed_prekey_sig BLOB NOT NULL,
    kyber_id INTEGER NOT NULL,
    kyber BLOB NOT NULL,
    kyber_sig BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE one_time_prekeys (
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    id INTEGER NOT NULL,
    public BLOB NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE TABLE one_time_kyber (
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    id INTEGER NOT NULL,
    public BLOB NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE TABLE queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    sender TEXT,
    sealed INTEGER NOT NULL,
    payload BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX queue_by_recipient ON queue(recipient, id);
"#,
    r#"
-- Every replacement of an account's identity key: by the account itself (rekey) or by the
-- relay's operator (reset).
CREATE TABLE key_changes (
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    old_key BLOB NOT NULL,
    new_key BLOB NOT NULL,
    via TEXT NOT NULL,
    at INTEGER NOT NULL
);
"#,
    r#"
-- Set by the operator's `sotto relay admin reset-handle`: whoever presents it may register
-- new keys for the handle (a user who lost their device). Used once.
ALTER TABLE accounts ADD COLUMN reset_code BLOB;
"#,
    r#"
-- The old key's signature over the new one (a rekey; NULL for an operator's reset), handed out
-- with lookups so that clients check the change themselves.
ALTER TABLE key_changes ADD COLUMN endorsement BLOB;
CREATE INDEX key_changes_by_account ON key_changes(account_id, at);
"#,
    r#"
-- A reset code is good until then (Unix ms); NULL with a code armed before this column
-- existed, which is treated as expired.
ALTER TABLE accounts ADD COLUMN reset_expires_at INTEGER;
"#,
    r#"
-- Blobs (attachments' ciphertext): the bytes are files under `blobs/`, named by id; a row says
-- whose the blob is (an account id, or for an anonymous upload the source address), how much
-- of it is on disk (`stored`, synced before it is recorded) and when it goes.
CREATE TABLE blobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    size INTEGER NOT NULL,
    stored INTEGER NOT NULL DEFAULT 0,
    recipients_left INTEGER NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX blobs_by_owner ON blobs(owner);
"#,
];

/// Key changes handed out with a lookup, at most: far more than a contact who was away for
/// a long time needs to follow, and a bound on what one lookup costs.
pub const KEY_HISTORY: usize = 32;

/// The queue as the operator sees it (`sotto relay admin stats`).
#[derive(Debug, Clone, serde::Serialize)]
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

/// How `key_changes.via` spells a change.
fn via_name(via: KeyChangeVia) -> &'static str {
    match via {
        KeyChangeVia::Rekey => "rekey",
        KeyChangeVia::Reset => "reset",
    }
}

/// The relay's database connection.
pub struct RelayStore {
    conn: Connection,
}

impl RelayStore {
    /// Opens (creating if needed) `relay.db` under `dir` and brings the schema up to date.
    /// Two connections write to it (this one and the queue writer's); `db::open` makes their
    /// transactions take the write lock when they begin. The directory is made private to
    /// the user first (see `private::secure_dir`).
    pub fn open(dir: &Path) -> Result<Self> {
        crate::private::secure_dir(dir, crate::private::RELAY_FILES)?;
        let conn = crate::db::open(&dir.join("relay.db"), MIGRATIONS)?;
        // Plans that do not depend on bound values: the push query binds its window as LIMIT,
        // and SQLite would otherwise compile it again whenever the value changes (14 % of
        // the relay's CPU under load). The client keeps the default: some of its statements
        // are faster with plans made for their values (the receive path, 60 µs).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        Ok(RelayStore { conn })
    }

    /// Gives the WAL room so that the queue's commits do not grow it (see
    /// `db::reserve_wal`).
    pub fn reserve_wal(&self) -> Result<()> {
        Ok(crate::db::reserve_wal(&self.conn)?)
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)))
            .optional()?)
    }

    /// Writes several meta entries in one transaction: all of them or none.
    pub fn set_meta(&mut self, entries: &[(&str, &[u8])]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for (key, value) in entries {
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![key, value]))?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn register(
        &mut self,
        account_id: &str,
        handle: &str,
        keys: &KeyUpload,
        access_token: &[u8],
        now: u64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        let taken: Option<String> = tx
            .prepare_cached("SELECT handle FROM accounts WHERE handle = ?1 OR identity_key = ?2")
            .and_then(|mut st| st.query_row(params![handle, keys.identity_key.0], |r| r.get(0)))
            .optional()?;
        match taken {
            Some(h) if h == handle => return Err(StoreError::HandleTaken(handle.to_string())),
            Some(_) => return Err(StoreError::KeyTaken),
            None => {}
        }
        tx.prepare_cached(
            "INSERT INTO accounts (account_id, handle, identity_key, registration_id, access_token,
                signed_prekey_id, signed_prekey, signed_prekey_sig, kyber_id, kyber, kyber_sig,
                created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .and_then(|mut st| {
            st.execute(params![
                account_id,
                handle,
                keys.identity_key.0,
                keys.registration_id,
                access_token,
                keys.signed_prekey.id,
                keys.signed_prekey.public.0,
                keys.signed_prekey.signature.0,
                keys.kyber_last_resort.id,
                keys.kyber_last_resort.public.0,
                keys.kyber_last_resort.signature.0,
                now as i64,
            ])
        })?;
        insert_one_time(
            &tx,
            account_id,
            &keys.one_time_prekeys,
            &keys.one_time_kyber,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces an account's identity key and all its prekeys, and records the change with the
    /// old key's `endorsement` of the new one (None for an operator's reset).
    pub fn rekey(
        &mut self,
        account_id: &str,
        keys: &KeyUpload,
        via: KeyChangeVia,
        endorsement: Option<&[u8]>,
        now: u64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        replace_keys(&tx, account_id, keys, via, endorsement, now)?;
        tx.commit()?;
        Ok(())
    }

    /// Arms a reset of `handle` until `expires_at` (Unix ms): returns the account id, or None
    /// if no such handle.
    pub fn arm_reset(&self, handle: &str, code: &[u8], expires_at: u64) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached(
                "UPDATE accounts SET reset_code = ?2, reset_expires_at = ?3 WHERE handle = ?1
                 RETURNING account_id",
            )
            .and_then(|mut st| st.query_row(params![handle, code, expires_at as i64], |r| r.get(0)))
            .optional()?)
    }

    /// If `code` is the armed, unexpired reset code of `handle`, replaces the account's keys
    /// with `keys`, disarms the reset and returns the account id: all in one transaction, so
    /// a crash leaves either the old keys with the code armed or the new ones without it.
    pub fn claim_reset(
        &mut self,
        handle: &str,
        code: &[u8],
        keys: &KeyUpload,
        now: u64,
    ) -> Result<Option<String>> {
        let tx = self.conn.transaction()?;
        let armed: Option<(String, Option<Vec<u8>>, Option<i64>)> = tx
            .query_row(
                "SELECT account_id, reset_code, reset_expires_at FROM accounts WHERE handle = ?1",
                [handle],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((account_id, Some(expected), expires_at)) = armed else {
            return Ok(None);
        };
        if !super::same_secret(&expected, code) || expires_at.is_none_or(|e| now as i64 > e) {
            return Ok(None);
        }
        replace_keys(&tx, &account_id, keys, KeyChangeVia::Reset, None, now)?;
        tx.prepare_cached(
            "UPDATE accounts SET reset_code = NULL, reset_expires_at = NULL WHERE account_id = ?1",
        )
        .and_then(|mut st| st.execute([&account_id]))?;
        tx.commit()?;
        Ok(Some(account_id))
    }

    /// How many times an account's key was replaced, for the operator and the tests.
    pub fn key_changes(&self, account_id: &str) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT count(*) FROM key_changes WHERE account_id = ?1")
            .and_then(|mut st| st.query_row([account_id], |r| r.get::<_, i64>(0)))?
            as u64)
    }

    /// The account's latest `KEY_HISTORY` key changes, oldest first, as a lookup hands them out.
    pub fn key_history(&self, account_id: &str) -> Result<Vec<KeyChange>> {
        let mut st = self.conn.prepare_cached(
            "SELECT old_key, new_key, via, endorsement, at FROM (
                 SELECT rowid, old_key, new_key, via, endorsement, at FROM key_changes
                 WHERE account_id = ?1 ORDER BY at DESC, rowid DESC LIMIT ?2)
             ORDER BY at, rowid",
        )?;
        let rows = st.query_map(params![account_id, KEY_HISTORY as i64], |r| {
            let via: String = r.get(2)?;
            Ok(KeyChange {
                old_key: B64(r.get(0)?),
                new_key: B64(r.get(1)?),
                via: if via == via_name(KeyChangeVia::Rekey) {
                    KeyChangeVia::Rekey
                } else {
                    KeyChangeVia::Reset
                },
                endorsement: r.get::<_, Option<Vec<u8>>>(3)?.map(B64),
                at: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Adds one-time prekeys, unless the account would then hold more than `max` of either
    /// kind (an id already held is replaced, not counted twice): returns whether they were
    /// added.
    pub fn upload_prekeys(
        &mut self,
        account_id: &str,
        prekeys: &[PreKey],
        kyber: &[SignedKey],
        max: u32,
    ) -> Result<bool> {
        let tx = self.conn.transaction()?;
        insert_one_time(&tx, account_id, prekeys, kyber)?;
        let (ec, ky) = count_one_time(&tx, account_id)?;
        if ec > max || ky > max {
            // Dropping the transaction rolls it back.
            return Ok(false);
        }
        tx.commit()?;
        Ok(true)
    }

    /// How many one-time EC and Kyber prekeys the account has left.
    pub fn prekey_count(&self, account_id: &str) -> Result<(u32, u32)> {
        count_one_time(&self.conn, account_id)
    }

    pub fn account_by_id(&self, account_id: &str) -> Result<Option<Account>> {
        self.account_where("account_id = ?1", account_id)
    }

    pub fn account_by_handle(&self, handle: &str) -> Result<Option<Account>> {
        self.account_where("handle = ?1", handle)
    }

    fn account_where(&self, cond: &str, arg: &str) -> Result<Option<Account>> {
        let sql = format!(
            "SELECT account_id, handle, identity_key, registration_id, access_token
             FROM accounts WHERE {cond}"
        );
        Ok(self
            .conn
            .query_row(&sql, [arg], |r| {
                Ok(Account {
                    account_id: r.get(0)?,
                    handle: r.get(1)?,
                    identity_key: r.get(2)?,
                    registration_id: r.get(3)?,
                    access_token: r.get(4)?,
                })
            })
            .optional()?)
    }

    /// Hands out a bundle, consuming one one-time EC prekey and one one-time Kyber prekey if
    /// any are left, in one transaction so that no key is ever handed out twice. With
    /// `one_time` false (the account's bundles are being fetched too fast), the bundle has
    /// no one-time EC prekey and the last-resort Kyber key, and the pools are left alone.
    pub fn take_bundle(&mut self, account_id: &str, one_time: bool) -> Result<Bundle> {
        let tx = self.conn.transaction()?;
        let row = tx
            .query_row(
                "SELECT handle, identity_key, registration_id, signed_prekey_id, signed_prekey,
                        signed_prekey_sig, kyber_id, kyber, kyber_sig
                 FROM accounts WHERE account_id = ?1",
                [account_id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, u32>(2)?,
                        SignedKey {
                            id: r.get(3)?,
                            public: r.get::<_, Vec<u8>>(4)?.into(),
                            signature: r.get::<_, Vec<u8>>(5)?.into(),
                        },
                        SignedKey {
                            id: r.get(6)?,
                            public: r.get::<_, Vec<u8>>(7)?.into(),
                            signature: r.get::<_, Vec<u8>>(8)?.into(),
                        },
                    ))
                },
            )
            .optional()?;
        let Some((handle, identity_key, registration_id, signed_prekey, last_resort)) = row else {
            return Err(StoreError::NotFound);
        };
        if !one_time {
            tx.commit()?;
            return Ok(Bundle {
                account_id: account_id.to_string(),
                handle,
                identity_key: identity_key.into(),
                registration_id,
                signed_prekey,
                prekey: None,
                kyber: last_resort,
            });
        }
        let prekey = tx
            .query_row(
                "DELETE FROM one_time_prekeys WHERE rowid = (SELECT rowid FROM one_time_prekeys
                 WHERE account_id = ?1 ORDER BY id LIMIT 1) RETURNING id, public",
                [account_id],
                |r| {
                    Ok(PreKey {
                        id: r.get(0)?,
                        public: r.get::<_, Vec<u8>>(1)?.into(),
                    })
                },
            )
            .optional()?;
        let kyber = tx
            .query_row(
                "DELETE FROM one_time_kyber WHERE rowid = (SELECT rowid FROM one_time_kyber
                 WHERE account_id = ?1 ORDER BY id LIMIT 1) RETURNING id, public, signature",
                [account_id],
                |r| {
                    Ok(SignedKey {
                        id: r.get(0)?,
                        public: r.get::<_, Vec<u8>>(1)?.into(),
                        signature: r.get::<_, Vec<u8>>(2)?.into(),
                    })
                },
            )
            .optional()?
            .unwrap_or(last_resort);
        tx.commit()?;
        Ok(Bundle {
            account_id: account_id.to_string(),
            handle,
            identity_key: identity_key.into(),
            registration_id,
            signed_prekey,
            prekey,
            kyber,
        })
    }

    /// The highest envelope id the queue has ever used, committed: ids given out after it
    /// are new.
    pub fn last_envelope_id(&self) -> Result<u64> {
        let id: i64 = self.conn.query_row(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'queue'), 0),
                        coalesce((SELECT max(id) FROM queue), 0))",
            [],
            |r| r.get(0),
        )?;
        Ok(id as u64)
    }

    /// Queues `new` and deletes `remove` (delivered or expired envelopes, each with its
    /// recipient) in one transaction; returns what became of each unit of `new` (one
    /// envelope, or every copy of a fan-out), in order. An envelope whose recipient has no
    /// account, or whose sealed check or quota fails, is not queued, and neither is any other
    /// copy of its unit (see `queue_unit`); the others are, under ids taken from `next_id`
    /// (which is advanced, and never moved back past an id that was handed over: an id given
    /// out for a batch that then fails to commit is not used again).
    ///
    /// `before_commit` is called with the outcome once every statement has run and before
    /// the commit: what it passes on must not be promised to anyone yet.
    ///
    /// With envelopes to queue, returns only after the commit has reached the disk: this is
    /// the promise behind `ok`, kept for a whole batch with one sync (group commit). Deletions
    /// alone do not wait for the disk: if a power cut loses one, the envelope is delivered
    /// again and its recipient drops it as a duplicate; nobody was promised anything.
    /// An envelope with an expiry belongs to a disappearing message: once one is deleted, the
    /// WAL is truncated too, so its text does not linger there.
    ///
    /// Each new envelope is checked against the queue quotas in `usage`, which is kept up to
    /// date with what this batch queues and deletes, and put back as it was if the batch fails.
    pub fn write(
        &self,
        new: &[Vec<NewEnvelope>],
        remove: &[(String, u64)],
        next_id: &mut u64,
        usage: &mut QueueUsage,
        before_commit: impl FnOnce(&[Outcome]),
    ) -> Result<Vec<Outcome>> {
        let batch = || -> rusqlite::Result<(Vec<Outcome>, bool)> {
            let tx = self.conn.unchecked_transaction()?;
            let mut outcomes = Vec::with_capacity(new.len());
            let mut expiring = false;
            {
                // The recipient is checked here, not before: one transaction, no extra trip.
                let mut insert = tx.prepare_cached(
                    "INSERT INTO queue (recipient, sender, sealed, payload, received_at, expires_at, id)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
                     WHERE EXISTS (SELECT 1 FROM accounts WHERE account_id = ?1)",
                )?;
                let mut account = tx.prepare_cached(
                    "SELECT access_token, identity_key FROM accounts WHERE account_id = ?1",
                )?;
                for unit in new {
                    outcomes.push(queue_unit(
                        &tx,
                        &mut insert,
                        &mut account,
                        unit,
                        next_id,
                        usage,
                    )?);
                }
                let mut delete = tx.prepare_cached(
                    "DELETE FROM queue WHERE id = ?1 AND recipient = ?2
                     RETURNING expires_at, length(payload), sender, sealed",
                )?;
                for (recipient, id) in remove {
                    let gone: Option<(Option<i64>, i64, Option<String>, bool)> = delete
                        .query_row(params![*id as i64, recipient], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                        })
                        .optional()?;
                    if let Some((expires_at, bytes, sender, sealed)) = gone {
                        expiring |= expires_at.is_some();
                        usage.remove(&Entry {
                            recipient,
                            sender: if sealed { None } else { sender.as_deref() },
                            bytes: bytes as u64,
                        });
                    }
                }
            }
            before_commit(&outcomes);
            tx.commit()?;
            Ok((outcomes, expiring))
        };
        let done = if new.is_empty() {
            crate::db::without_sync(&self.conn, batch)
        } else {
            batch()
        };
        let (outcomes, expiring) = match done {
            Ok(d) => d,
            Err(e) => {
                // The totals counted what the failed batch would have changed: count again.
                if let Ok(fresh) = self.queue_usage(usage.limits()) {
                    *usage = fresh;
                }
                return Err(e.into());
            }
        };
        if expiring {
            crate::db::truncate_wal(&self.conn)?;
        }
        Ok(outcomes)
    }

    /// Why an envelope from `origin` to `recipient` must be refused, if it must (the checks
    /// `write` makes as it inserts), without storing anything: for online-only envelopes.
    pub fn refusal(&self, recipient: &str, origin: &Origin) -> Result<Option<Stored>> {
        let mut account = self.conn.prepare_cached(
            "SELECT access_token, identity_key FROM accounts WHERE account_id = ?1",
        )?;
        Ok(match origin {
            Origin::Sealed {
                access_token,
                recipient_key,
            } => check_sealed(
                &mut account,
                recipient,
                access_token,
                recipient_key.as_deref(),
            )?,
            Origin::Account { .. } => {
                (!account.exists([recipient])?).then_some(Stored::NoRecipient)
            }
        })
    }

    /// Up to `limit` envelopes for `recipient` with ids above `after`, oldest first, expired
    /// ones included: the caller skips those and has them deleted (a read here never waits
    /// for the queue's writer).
    pub fn pending(&self, recipient: &str, after: u64, limit: usize) -> Result<Vec<Queued>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT q.id, q.sender, q.sealed, q.payload, q.received_at, q.expires_at, a.handle
             FROM queue q LEFT JOIN accounts a ON a.account_id = q.sender
             WHERE q.recipient = ?1 AND q.id > ?2 ORDER BY q.id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![recipient, after as i64, limit as i64], |r| {
            Ok(Queued {
                id: r.get::<_, i64>(0)? as u64,
                sender: r.get(1)?,
                sealed: r.get(2)?,
                payload: r.get(3)?,
                received_at: r.get::<_, i64>(4)? as u64,
                expires_at: r.get::<_, Option<i64>>(5)?.map(|x| x as u64),
                sender_handle: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The queue's totals per recipient, sending account and sealed recipient, counted once
    /// when the queue's writer starts; the writer keeps them up to date from then on.
    pub fn queue_usage(&self, limits: QueueLimits) -> Result<QueueUsage> {
        let mut usage = QueueUsage::new(limits);
        let mut st = self.conn.prepare(
            "SELECT recipient, sender, sealed, count(*), sum(length(payload)) FROM queue
             GROUP BY recipient, sender, sealed",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let recipient: String = r.get(0)?;
            let sender: Option<String> = r.get(1)?;
            let sealed: bool = r.get(2)?;
            let envelopes: i64 = r.get(3)?;
            let bytes: i64 = r.get(4)?;
            let entry = Entry {
                recipient: &recipient,
                sender: if sealed { None } else { sender.as_deref() },
                bytes: bytes as u64,
            };
            usage.load(&entry, envelopes as u64);
        }
        Ok(usage)
    }

    /// Envelopes waiting for `recipient`.
    /// What the queue holds, for the operator: totals, and the `top` accounts by queued
    /// bytes as senders of normal mail (a sealed envelope's sender is unknown, so it counts
    /// only under its recipient) and as recipients, by handle.
    pub fn queue_summary(&self, top: usize) -> Result<QueueSummary> {
        let (envelopes, bytes, sealed): (i64, i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(length(payload)), 0), coalesce(sum(sealed), 0)
             FROM queue",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let ranked = |column: &str| -> Result<Vec<(String, u64, u64)>> {
            let sql = format!(
                "SELECT a.handle, count(*), sum(length(q.payload)) FROM queue q
                 JOIN accounts a ON a.account_id = q.{column}
                 GROUP BY q.{column} ORDER BY sum(length(q.payload)) DESC LIMIT ?1"
            );
            let mut st = self.conn.prepare(&sql)?;
            let rows = st.query_map([top as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        Ok(QueueSummary {
            envelopes: envelopes as u64,
            bytes: bytes as u64,
            sealed: sealed as u64,
            top_senders: ranked("sender")?,
            top_recipients: ranked("recipient")?,
        })
    }

    pub fn queued_for(&self, recipient: &str) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT count(*) FROM queue WHERE recipient = ?1")
            .and_then(|mut st| st.query_row([recipient], |r| r.get::<_, i64>(0)))?
            as u64)
    }
}

/// Replaces an account's identity key and all its prekeys inside `tx`, and records the change.
fn replace_keys(
    tx: &rusqlite::Transaction<'_>,
    account_id: &str,
    keys: &KeyUpload,
    via: KeyChangeVia,
    endorsement: Option<&[u8]>,
    now: u64,
) -> Result<()> {
    let old: Option<Vec<u8>> = tx
        .prepare_cached("SELECT identity_key FROM accounts WHERE account_id = ?1")
        .and_then(|mut st| st.query_row([account_id], |r| r.get(0)))
        .optional()?;
    let Some(old) = old else {
        return Err(StoreError::NotFound);
    };
    let taken: Option<String> = tx
        .prepare_cached("SELECT account_id FROM accounts WHERE identity_key = ?1")
        .and_then(|mut st| st.query_row([&keys.identity_key.0], |r| r.get(0)))
        .optional()?;
    if taken.is_some() {
        return Err(StoreError::KeyTaken);
    }
    tx.prepare_cached(
        "UPDATE accounts SET identity_key = ?2, registration_id = ?3, signed_prekey_id = ?4,
                 signed_prekey = ?5, signed_prekey_sig = ?6, kyber_id = ?7, kyber = ?8,
                 kyber_sig = ?9
             WHERE account_id = ?1",
    )
    .and_then(|mut st| {
        st.execute(params![
            account_id,
            keys.identity_key.0,
            keys.registration_id,
            keys.signed_prekey.id,
            keys.signed_prekey.public.0,
            keys.signed_prekey.signature.0,
            keys.kyber_last_resort.id,
            keys.kyber_last_resort.public.0,
            keys.kyber_last_resort.signature.0,
        ])
    })?;
    tx.prepare_cached("DELETE FROM one_time_prekeys WHERE account_id = ?1")
        .and_then(|mut st| st.execute([account_id]))?;
    tx.prepare_cached("DELETE FROM one_time_kyber WHERE account_id = ?1")
        .and_then(|mut st| st.execute([account_id]))?;
    insert_one_time(tx, account_id, &keys.one_time_prekeys, &keys.one_time_kyber)?;
    tx.prepare_cached(
        "INSERT INTO key_changes (account_id, old_key, new_key, via, at, endorsement)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut st| {
        st.execute(params![
            account_id,
            old,
            keys.identity_key.0,
            via_name(via),
            now as i64,
            endorsement,
        ])
    })?;
    Ok(())
}

fn count_one_time(conn: &Connection, account_id: &str) -> Result<(u32, u32)> {
    let ec = conn
        .prepare_cached("SELECT count(*) FROM one_time_prekeys WHERE account_id = ?1")
        .and_then(|mut st| st.query_row([account_id], |r| r.get(0)))?;
    let kyber = conn
        .prepare_cached("SELECT count(*) FROM one_time_kyber WHERE account_id = ?1")
        .and_then(|mut st| st.query_row([account_id], |r| r.get(0)))?;
    Ok((ec, kyber))
}

fn insert_one_time(
    tx: &rusqlite::Transaction<'_>,
    account_id: &str,
    prekeys: &[PreKey],
    kyber: &[SignedKey],
) -> Result<()> {
    let mut ec = tx.prepare_cached(
        "INSERT OR REPLACE INTO one_time_prekeys (account_id, id, public) VALUES (?1, ?2, ?3)",
    )?;
    for k in prekeys {
        ec.execute(params![account_id, k.id, k.public.0])?;
    }
    let mut ky = tx.prepare_cached(
        "INSERT OR REPLACE INTO one_time_kyber (account_id, id, public, signature)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for k in kyber {
        ky.execute(params![account_id, k.id, k.public.0, k.signature.0])?;
    }
    Ok(())
}
