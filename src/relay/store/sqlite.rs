//! The relay's state in SQLite (`relay.db` in the data directory): the directory
//! (`RelayStore`) on one connection, the queue's write path (`SqliteQueue`, in `queue`) on
//! another, the blob rows' statements in `blobs`.
//!
//! Owns the schema, its migrations and every SQL statement of the relay; the decisions are
//! `rules`' and `quota`'s. Must not touch sockets or interpret envelopes.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

mod blobs;
mod queue;

pub use queue::SqliteQueue;

use super::rules;
use super::{
    Account, BlobRow, BlobSummary, Created, Directory, Fetched, KEY_HISTORY, Origin, QueueSummary,
    Queued, Result, StoreError, Stored,
};
use crate::wire::{B64, Bundle, KeyChange, KeyChangeVia, KeyUpload, PreKey, SignedKey};

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

/// How `key_changes.via` spells a change.
fn via_name(via: KeyChangeVia) -> &'static str {
    match via {
        KeyChangeVia::Rekey => "rekey",
        KeyChangeVia::Reset => "reset",
    }
}

/// Opens (creating if needed) `relay.db` under `dir` and brings the schema up to date. Two
/// connections write to it (the directory's and the queue's); `db::open` makes their
/// transactions take the write lock when they begin. The directory is made private to the
/// user first (see `private::secure_dir`).
fn connect(dir: &Path) -> Result<Connection> {
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
    Ok(conn)
}

/// A recipient's access token and identity key, as `rules` needs them.
struct Keys(Vec<u8>, Vec<u8>);

impl Keys {
    fn view(&self) -> rules::Recipient<'_> {
        rules::Recipient {
            access_token: &self.0,
            identity_key: &self.1,
        }
    }
}

/// What the sealed-sender check needs of `account_id`'s account, if it exists.
fn recipient_keys(conn: &Connection, account_id: &str) -> rusqlite::Result<Option<Keys>> {
    conn.prepare_cached("SELECT access_token, identity_key FROM accounts WHERE account_id = ?1")?
        .query_row([account_id], |r| Ok(Keys(r.get(0)?, r.get(1)?)))
        .optional()
}

/// The relay's directory on its own connection to `relay.db`; also what the operator's
/// commands and the tests open to look at a relay's state.
pub struct RelayStore {
    conn: Connection,
}

impl RelayStore {
    /// Opens the directory of the relay whose data directory is `dir` (see `connect`).
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(RelayStore {
            conn: connect(dir)?,
        })
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
}

impl Directory for RelayStore {
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)))
            .optional()?)
    }

    fn add_meta(&mut self, entries: &[(&str, &[u8])]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for (key, value) in entries {
            tx.prepare_cached("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![key, value]))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn register(
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
        if let Some(e) = rules::registration_conflict(taken.as_deref(), handle) {
            return Err(e);
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

    fn rekey(
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

    fn arm_reset(&mut self, handle: &str, code: &[u8], expires_at: u64) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached(
                "UPDATE accounts SET reset_code = ?2, reset_expires_at = ?3 WHERE handle = ?1
                 RETURNING account_id",
            )
            .and_then(|mut st| st.query_row(params![handle, code, expires_at as i64], |r| r.get(0)))
            .optional()?)
    }

    fn claim_reset(
        &mut self,
        handle: &str,
        code: &[u8],
        keys: &KeyUpload,
        now: u64,
    ) -> Result<Option<String>> {
        let tx = self.conn.transaction()?;
        let found: Option<(String, Option<Vec<u8>>, Option<i64>)> = tx
            .query_row(
                "SELECT account_id, reset_code, reset_expires_at FROM accounts WHERE handle = ?1",
                [handle],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((account_id, armed, expires_at)) = found else {
            return Ok(None);
        };
        let expires_at = expires_at.map(|e| e.max(0) as u64);
        if !rules::claim_allowed(armed.as_deref(), expires_at, code, now) {
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

    fn key_changes(&mut self, account_id: &str) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT count(*) FROM key_changes WHERE account_id = ?1")
            .and_then(|mut st| st.query_row([account_id], |r| r.get::<_, i64>(0)))?
            as u64)
    }

    fn key_history(&mut self, account_id: &str) -> Result<Vec<KeyChange>> {
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

    fn upload_prekeys(
        &mut self,
        account_id: &str,
        prekeys: &[PreKey],
        kyber: &[SignedKey],
        max: u32,
    ) -> Result<bool> {
        let tx = self.conn.transaction()?;
        insert_one_time(&tx, account_id, prekeys, kyber)?;
        if !rules::prekeys_fit(count_one_time(&tx, account_id)?, max) {
            // Dropping the transaction rolls it back.
            return Ok(false);
        }
        tx.commit()?;
        Ok(true)
    }

    fn prekey_count(&mut self, account_id: &str) -> Result<(u32, u32)> {
        count_one_time(&self.conn, account_id)
    }

    fn account_by_id(&mut self, account_id: &str) -> Result<Option<Account>> {
        self.account_where("account_id = ?1", account_id)
    }

    fn account_by_handle(&mut self, handle: &str) -> Result<Option<Account>> {
        self.account_where("handle = ?1", handle)
    }

    fn take_bundle(&mut self, account_id: &str, one_time: bool) -> Result<Bundle> {
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

    fn refusal(&mut self, recipient: &str, origin: &Origin) -> Result<Option<Stored>> {
        let found = recipient_keys(&self.conn, recipient)?;
        Ok(rules::refusal(found.as_ref().map(Keys::view), origin))
    }

    fn pending(&mut self, recipient: &str, after: u64, limit: usize) -> Result<Vec<Queued>> {
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

    fn queue_summary(&mut self, top: usize) -> Result<QueueSummary> {
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

    fn queued_for(&mut self, recipient: &str) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT count(*) FROM queue WHERE recipient = ?1")
            .and_then(|mut st| st.query_row([recipient], |r| r.get::<_, i64>(0)))?
            as u64)
    }

    fn create_blob(&mut self, blob: &BlobRow, max_blobs: u64, max_bytes: u64) -> Result<Created> {
        blobs::create(&mut self.conn, blob, max_blobs, max_bytes)
    }

    fn blob(&mut self, id: &str) -> Result<Option<BlobRow>> {
        blobs::get(&self.conn, id)
    }

    fn blob_lengths(&mut self) -> Result<Vec<(String, u64)>> {
        blobs::lengths(&self.conn)
    }

    fn record_stored(&mut self, id: &str, from: u64, to: u64) -> Result<bool> {
        blobs::record_stored(&self.conn, id, from, to)
    }

    fn blob_fetched(&mut self, id: &str) -> Result<Fetched> {
        blobs::fetched(&mut self.conn, id)
    }

    fn delete_blob(&mut self, id: &str) -> Result<()> {
        blobs::delete(&self.conn, id)
    }

    fn delete_due_blobs(
        &mut self,
        now: u64,
        retained_since: u64,
        abandoned_since: u64,
    ) -> Result<Vec<String>> {
        blobs::delete_due(&self.conn, now, retained_since, abandoned_since)
    }

    fn blob_summary(&mut self) -> Result<BlobSummary> {
        blobs::summary(&self.conn)
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
