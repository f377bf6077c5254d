//! The relay's state in PostgreSQL, which several relays may share: the directory
//! (`PgDirectory`) on one connection, the queue's write path (`PgQueue`, in `queue`) on
//! another, the blobs' bytes (`PgBlobBytes`, in `blob_bytes`) on a third, each made by
//! `connect`, which brings the schema up to date first.
//!
//! Owns the PostgreSQL schema, its numbered migrations and every PostgreSQL statement of the
//! relay, and what makes them safe with other relays on the same database (row and advisory
//! locks); the decisions are `rules`' and `quota`'s. Must not touch sockets or interpret
//! envelopes. Every call blocks (the `postgres` client runs a small runtime of its own), so
//! none may be made on an async worker thread.
//!
//! No TLS: the server must be on this machine (a Unix socket, or 127.0.0.1) or reached through
//! a tunnel; see docs/protocol.md.

use postgres::error::SqlState;
use postgres::{Client, GenericClient, NoTls, Row};
use sha2::{Digest, Sha256};

mod blob_bytes;
mod listen;
mod queue;

pub use blob_bytes::PgBlobBytes;
pub use listen::{CHANNEL as MAIL_CHANNEL, PgBus};
use listen::{CHANNEL, SIGNED_IN_SQL, notify_all_sql, online_only_word};
pub use queue::PgQueue;

use super::rules;
use super::{
    Account, BlobRow, BlobSummary, Created, Directory, Fetched, KEY_HISTORY, Origin, QueueSummary,
    Queued, Result, StoreError, Stored,
};
use crate::wire::{B64, Bundle, KeyChange, KeyChangeVia, KeyUpload, PreKey, SignedKey};

/// The schema, one step per entry, applied in order; the number applied is `schema.version`.
/// A step is never changed once released: a change is a new step.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    handle TEXT NOT NULL UNIQUE,
    identity_key BYTEA NOT NULL UNIQUE,
    registration_id BIGINT NOT NULL,
    access_token BYTEA NOT NULL,
    signed_prekey_id BIGINT NOT NULL,
    signed_prekey BYTEA NOT NULL,
    signed_prekey_sig BYTEA NOT NULL,
    kyber_id BIGINT NOT NULL,
    kyber BYTEA NOT NULL,
    kyber_sig BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    -- Set by the operator's `sotto relay admin reset-handle`, good until reset_expires_at
    -- (Unix ms); used once.
    reset_code BYTEA,
    reset_expires_at BIGINT
);
CREATE TABLE one_time_prekeys (
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    id BIGINT NOT NULL,
    public BYTEA NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE TABLE one_time_kyber (
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    id BIGINT NOT NULL,
    public BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    PRIMARY KEY (account_id, id)
);
-- Every replacement of an account's identity key; seq orders changes made in the same ms.
CREATE TABLE key_changes (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    old_key BYTEA NOT NULL,
    new_key BYTEA NOT NULL,
    via TEXT NOT NULL,
    at BIGINT NOT NULL,
    endorsement BYTEA
);
CREATE INDEX key_changes_by_account ON key_changes(account_id, at);
-- Ids come from the column's sequence, taken while the batch holds its recipients' locks (see
-- queue.rs): for one recipient they increase in commit order, on every relay.
CREATE TABLE queue (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient TEXT NOT NULL,
    sender TEXT,
    sealed BOOLEAN NOT NULL,
    payload BYTEA NOT NULL,
    received_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX queue_by_recipient ON queue(recipient, id);
-- What is waiting per recipient (kind 0), sending account (1) and recipient's sealed mail (2),
-- kept in the same transactions as the queue's rows: the quota totals every relay shares.
CREATE TABLE queue_usage (
    kind INTEGER NOT NULL,
    key TEXT NOT NULL,
    envelopes BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);
-- Blobs (attachments' ciphertext): the bytes are files under the data directory's `blobs/`.
CREATE TABLE blobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    size BIGINT NOT NULL,
    stored BIGINT NOT NULL DEFAULT 0,
    recipients_left BIGINT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX blobs_by_owner ON blobs(owner);
"#,
    r#"
-- The order of sign-ins across relays: a connection that signed in earlier than the
-- account's latest, on any relay, ends (see `Directory::sign_in`).
CREATE SEQUENCE sign_ins;
ALTER TABLE accounts ADD COLUMN signed_in BIGINT NOT NULL DEFAULT 0;
"#,
    r#"
-- The blobs' bytes, in the database every relay shares (until now they were files in each
-- relay's data directory, which no other relay could serve): each chunk as written, at its
-- offset. Deleting a blob's row deletes its chunks in the same transaction, and no chunk is
-- written without a row (see blob_bytes.rs).
CREATE TABLE blob_chunks (
    blob_id TEXT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
    off BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (blob_id, off)
);
"#,
];

/// The advisory lock that serialises migrations between relays starting together.
const MIGRATION_LOCK: i64 = 0x736f_7474_6f00_0001;

/// A connection that may be dropped on any thread. The `postgres` client closes itself by
/// blocking on its own runtime, which panics on an async worker thread, and the relay's state
/// may be dropped by its last connection task: there it is closed on a thread of its own.
/// It also connects again when the server has closed it (a restart, a terminated backend).
pub(super) struct Conn {
    client: Option<Client>,
    url: String,
}

impl Conn {
    /// Connects again if the server closed the connection: the call that met the closed
    /// connection has failed, the next one works. Returns whether it did (prepared
    /// statements are gone then).
    pub(super) fn revive(&mut self) -> Result<bool> {
        if !self.is_closed() {
            return Ok(false);
        }
        tracing::warn!("the connection to PostgreSQL was closed; connecting again");
        *self = connect(&self.url)?;
        Ok(true)
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a connection is only taken when dropped")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a connection is only taken when dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = std::thread::Builder::new()
                .name("relay-pg-close".into())
                .spawn(move || drop(client));
        }
    }
}

/// What went wrong, for a person: the server's own message for a database error (its code,
/// not its detail, which may quote a key), else the client's error and its cause.
pub(super) fn explain(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Connects to the database `url` names and brings its schema up to date.
pub(super) fn connect(url: &str) -> Result<Conn> {
    // Not the string itself in the message: it may hold a password.
    let config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
        StoreError::Backend(format!(
            "the database URL is not a PostgreSQL connection string ({}); write it as \
             postgres://USER@HOST:PORT/DATABASE, or postgres://USER@%2Fsocket%2Fdir/DATABASE \
             for a Unix socket",
            explain(&e)
        ))
    })?;
    let mut client = config.connect(NoTls).map_err(|e| {
        StoreError::Backend(format!(
            "cannot connect to PostgreSQL ({}): {}; check that the server is running and \
             reachable there, that the database exists and that the user may log in",
            describe(&config),
            explain(&e)
        ))
    })?;
    migrate(&mut client)?;
    Ok(Conn {
        client: Some(client),
        url: url.to_string(),
    })
}

/// Where `config` points, without its password.
fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "host {}, port {}, user {}, database {}",
        if hosts.is_empty() {
            "localhost".to_string()
        } else {
            hosts.join(",")
        },
        config
            .get_ports()
            .first()
            .map_or("5432".to_string(), |p| p.to_string()),
        config.get_user().unwrap_or("(none)"),
        config.get_dbname().unwrap_or("(the user's)"),
    )
}

/// Applies the migrations the database has not had, each in its own transaction, holding
/// `MIGRATION_LOCK` so that relays starting together apply each once.
fn migrate(client: &mut Client) -> Result<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let applied = apply_migrations(client);
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    applied?;
    unlocked?;
    Ok(())
}

fn apply_migrations(client: &mut Client) -> Result<()> {
    // Looked up rather than CREATE ... IF NOT EXISTS, whose notice would be logged at every
    // connection.
    let exists: bool = client
        .query_one("SELECT to_regclass('schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        client.batch_execute("CREATE TABLE schema (version INTEGER NOT NULL)")?;
    }
    let version: i32 = match client.query_opt("SELECT version FROM schema", &[])? {
        Some(row) => row.get(0),
        None => {
            client.execute("INSERT INTO schema (version) VALUES (0)", &[])?;
            0
        }
    };
    let known = MIGRATIONS.len();
    if version as usize > known {
        return Err(StoreError::Backend(format!(
            "the relay database's schema is version {version}, newer than this sotto knows \
             ({known}); run the newer sotto that wrote it"
        )));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let mut tx = client.transaction()?;
        tx.batch_execute(m)?;
        tx.execute("UPDATE schema SET version = $1", &[&((i + 1) as i32)])?;
        tx.commit()?;
    }
    Ok(())
}

/// The advisory lock key for `name` (an account id, a blob owner): the first 8 bytes of its
/// SHA-256, so every relay computes the same key. Two names sharing a key only wait for each
/// other.
fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Takes the transaction-scoped advisory locks for `names`, in ascending key order, so that
/// two transactions locking overlapping sets never wait for each other in a cycle.
fn lock_all<'a>(
    tx: &mut impl GenericClient,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let mut keys: Vec<i64> = names.into_iter().map(lock_key).collect();
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    // One round trip: unnest yields the array's elements in order, and each row's lock is
    // taken as the row is produced.
    tx.execute(
        "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k",
        &[&keys],
    )?;
    Ok(())
}

/// How `key_changes.via` spells a change.
fn via_name(via: KeyChangeVia) -> &'static str {
    match via {
        KeyChangeVia::Rekey => "rekey",
        KeyChangeVia::Reset => "reset",
    }
}

/// A stored integer that the wire has as u32 (ids, registration ids); a value out of range
/// could only have been written by hand, and reads as 0 rather than wrapping.
fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// A stored count, time or size (never negative when sotto wrote it).
fn u64_of(v: i64) -> u64 {
    v.max(0) as u64
}

/// What the sealed-sender check needs of `account_id`'s account, if it exists.
fn recipient_keys(
    client: &mut impl GenericClient,
    account_id: &str,
) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    Ok(client
        .query_opt(
            "SELECT access_token, identity_key FROM accounts WHERE account_id = $1",
            &[&account_id],
        )?
        .map(|r| (r.get(0), r.get(1))))
}

fn recipient_view(keys: &(Vec<u8>, Vec<u8>)) -> rules::Recipient<'_> {
    rules::Recipient {
        access_token: &keys.0,
        identity_key: &keys.1,
    }
}

/// The relay's directory on its own connection to the shared database; also what the
/// operator's commands open to look at a relay's state.
pub struct PgDirectory {
    client: Conn,
    /// The relay this directory serves, in its words to the others (see `listen`).
    instance: u64,
}

impl PgDirectory {
    /// Connects to the database `url` names (see `connect`).
    pub fn open(url: &str) -> Result<Self> {
        Ok(PgDirectory {
            client: connect(url)?,
            instance: 0,
        })
    }

    /// This directory as relay `instance`'s, whose words the others hear.
    pub fn as_instance(self, instance: u64) -> Self {
        PgDirectory { instance, ..self }
    }

    fn account_where(&mut self, column: &str, arg: &str) -> Result<Option<Account>> {
        let sql = format!(
            "SELECT account_id, handle, identity_key, registration_id, access_token
             FROM accounts WHERE {column} = $1"
        );
        Ok(self.client.query_opt(&sql, &[&arg])?.map(|r| Account {
            account_id: r.get(0),
            handle: r.get(1),
            identity_key: r.get(2),
            registration_id: u32_of(r.get(3)),
            access_token: r.get(4),
        }))
    }

    /// The count `sql` gives for `arg`.
    fn count(&mut self, sql: &str, arg: &str) -> Result<u64> {
        let n: i64 = self.client.query_one(sql, &[&arg])?.get(0);
        Ok(u64_of(n))
    }

    /// Which of `handle` and `identity_key` an account already has, as a refusal.
    fn conflict(&mut self, handle: &str, identity_key: &[u8]) -> Result<Option<StoreError>> {
        let taken: Option<String> = self
            .client
            .query_opt(
                "SELECT handle FROM accounts WHERE handle = $1 OR identity_key = $2 LIMIT 1",
                &[&handle, &identity_key],
            )?
            .map(|r| r.get(0));
        Ok(rules::registration_conflict(taken.as_deref(), handle))
    }
}

impl Directory for PgDirectory {
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        self.client.revive()?;
        Ok(self
            .client
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
            .map(|r| r.get(0)))
    }

    fn add_meta(&mut self, entries: &[(&str, &[u8])]) -> Result<()> {
        self.client.revive()?;
        let mut tx = self.client.transaction()?;
        // A second relay's insert of the same key waits for the first one's commit, then
        // does nothing.
        for (key, value) in entries {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[key, value],
            )?;
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
        self.client.revive()?;
        if let Some(e) = self.conflict(handle, &keys.identity_key.0)? {
            return Err(e);
        }
        let mut tx = self.client.transaction()?;
        let inserted = tx.execute(
            "INSERT INTO accounts (account_id, handle, identity_key, registration_id, access_token,
                signed_prekey_id, signed_prekey, signed_prekey_sig, kyber_id, kyber, kyber_sig,
                created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &account_id,
                &handle,
                &keys.identity_key.0,
                &i64::from(keys.registration_id),
                &access_token,
                &i64::from(keys.signed_prekey.id),
                &keys.signed_prekey.public.0,
                &keys.signed_prekey.signature.0,
                &i64::from(keys.kyber_last_resort.id),
                &keys.kyber_last_resort.public.0,
                &keys.kyber_last_resort.signature.0,
                &(now as i64),
            ],
        );
        match inserted {
            Ok(_) => {}
            // Another relay registered the same handle or key since the check above.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                drop(tx);
                return Err(self
                    .conflict(handle, &keys.identity_key.0)?
                    .unwrap_or(StoreError::Postgres(e)));
            }
            Err(e) => return Err(e.into()),
        }
        insert_one_time(
            &mut tx,
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
        self.client.revive()?;
        let mut tx = self.client.transaction()?;
        replace_keys(&mut tx, account_id, keys, via, endorsement, now)?;
        tx.commit()?;
        Ok(())
    }

    fn arm_reset(&mut self, handle: &str, code: &[u8], expires_at: u64) -> Result<Option<String>> {
        self.client.revive()?;
        Ok(self
            .client
            .query_opt(
                "UPDATE accounts SET reset_code = $2, reset_expires_at = $3 WHERE handle = $1
                 RETURNING account_id",
                &[&handle, &code, &(expires_at as i64)],
            )?
            .map(|r| r.get(0)))
    }

    fn claim_reset(
        &mut self,
        handle: &str,
        code: &[u8],
        keys: &KeyUpload,
        now: u64,
    ) -> Result<Option<String>> {
        self.client.revive()?;
        let mut tx = self.client.transaction()?;
        // FOR UPDATE: two relays presenting the code at once cannot both claim it.
        let Some(row) = tx.query_opt(
            "SELECT account_id, reset_code, reset_expires_at FROM accounts WHERE handle = $1
             FOR UPDATE",
            &[&handle],
        )?
        else {
            return Ok(None);
        };
        let account_id: String = row.get(0);
        let armed: Option<Vec<u8>> = row.get(1);
        let expires_at: Option<i64> = row.get(2);
        if !rules::claim_allowed(armed.as_deref(), expires_at.map(u64_of), code, now) {
            return Ok(None);
        }
        replace_keys(&mut tx, &account_id, keys, KeyChangeVia::Reset, None, now)?;
        tx.execute(
            "UPDATE accounts SET reset_code = NULL, reset_expires_at = NULL WHERE account_id = $1",
            &[&account_id],
        )?;
        tx.commit()?;
        Ok(Some(account_id))
    }

    fn key_changes(&mut self, account_id: &str) -> Result<u64> {
        self.client.revive()?;
        self.count(
            "SELECT count(*) FROM key_changes WHERE account_id = $1",
            account_id,
        )
    }

    fn key_history(&mut self, account_id: &str) -> Result<Vec<KeyChange>> {
        self.client.revive()?;
        let rows = self.client.query(
            "SELECT old_key, new_key, via, endorsement, at FROM (
                 SELECT seq, old_key, new_key, via, endorsement, at FROM key_changes
                 WHERE account_id = $1 ORDER BY at DESC, seq DESC LIMIT $2) latest
             ORDER BY at, seq",
            &[&account_id, &(KEY_HISTORY as i64)],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let via: String = r.get(2);
                KeyChange {
                    old_key: B64(r.get(0)),
                    new_key: B64(r.get(1)),
                    via: if via == via_name(KeyChangeVia::Rekey) {
                        KeyChangeVia::Rekey
                    } else {
                        KeyChangeVia::Reset
                    },
                    endorsement: r.get::<_, Option<Vec<u8>>>(3).map(B64),
                    at: u64_of(r.get(4)),
                }
            })
            .collect())
    }

    fn upload_prekeys(
        &mut self,
        account_id: &str,
        prekeys: &[PreKey],
        kyber: &[SignedKey],
        max: u32,
    ) -> Result<bool> {
        self.client.revive()?;
        let mut tx = self.client.transaction()?;
        // The account's row lock keeps two relays' uploads from passing the cap together.
        tx.execute(
            "SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE",
            &[&account_id],
        )?;
        insert_one_time(&mut tx, account_id, prekeys, kyber)?;
        if !rules::prekeys_fit(count_one_time(&mut tx, account_id)?, max) {
            // Dropping the transaction rolls it back.
            return Ok(false);
        }
        tx.commit()?;
        Ok(true)
    }

    fn prekey_count(&mut self, account_id: &str) -> Result<(u32, u32)> {
        self.client.revive()?;
        count_one_time(&mut *self.client, account_id)
    }

    fn account_by_id(&mut self, account_id: &str) -> Result<Option<Account>> {
        self.client.revive()?;
        self.account_where("account_id", account_id)
    }

    fn account_by_handle(&mut self, handle: &str) -> Result<Option<Account>> {
        self.client.revive()?;
        self.account_where("handle", handle)
    }

    fn take_bundle(&mut self, account_id: &str, one_time: bool) -> Result<Bundle> {
        self.client.revive()?;
        let mut tx = self.client.transaction()?;
        let Some(r) = tx.query_opt(
            "SELECT handle, identity_key, registration_id, signed_prekey_id, signed_prekey,
                    signed_prekey_sig, kyber_id, kyber, kyber_sig
             FROM accounts WHERE account_id = $1",
            &[&account_id],
        )?
        else {
            return Err(StoreError::NotFound);
        };
        let signed = |r: &Row, at: usize| SignedKey {
            id: u32_of(r.get(at)),
            public: B64(r.get(at + 1)),
            signature: B64(r.get(at + 2)),
        };
        let handle: String = r.get(0);
        let identity_key: Vec<u8> = r.get(1);
        let registration_id = u32_of(r.get(2));
        let signed_prekey = signed(&r, 3);
        let last_resort = signed(&r, 6);
        let (prekey, kyber) = if one_time {
            // SKIP LOCKED: a key another relay is handing out right now is passed over, so
            // no key goes out twice and neither fetch waits for the other.
            let prekey = tx
                .query_opt(
                    "DELETE FROM one_time_prekeys WHERE (account_id, id) = (
                         SELECT account_id, id FROM one_time_prekeys WHERE account_id = $1
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING id, public",
                    &[&account_id],
                )?
                .map(|r| PreKey {
                    id: u32_of(r.get(0)),
                    public: B64(r.get(1)),
                });
            let kyber = tx
                .query_opt(
                    "DELETE FROM one_time_kyber WHERE (account_id, id) = (
                         SELECT account_id, id FROM one_time_kyber WHERE account_id = $1
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING id, public, signature",
                    &[&account_id],
                )?
                .map(|r| signed(&r, 0))
                .unwrap_or(last_resort);
            (prekey, kyber)
        } else {
            (None, last_resort)
        };
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
        self.client.revive()?;
        let found = recipient_keys(&mut *self.client, recipient)?;
        Ok(rules::refusal(found.as_ref().map(recipient_view), origin))
    }

    fn pending(&mut self, recipient: &str, after: u64, limit: usize) -> Result<Vec<Queued>> {
        self.client.revive()?;
        let rows = self.client.query(
            "SELECT q.id, q.sender, q.sealed, q.payload, q.received_at, q.expires_at, a.handle
             FROM queue q LEFT JOIN accounts a ON a.account_id = q.sender
             WHERE q.recipient = $1 AND q.id > $2 ORDER BY q.id LIMIT $3",
            &[&recipient, &(after as i64), &(limit as i64)],
        )?;
        Ok(rows
            .iter()
            .map(|r| Queued {
                id: u64_of(r.get(0)),
                sender: r.get(1),
                sealed: r.get(2),
                payload: r.get(3),
                received_at: u64_of(r.get(4)),
                expires_at: r.get::<_, Option<i64>>(5).map(u64_of),
                sender_handle: r.get(6),
            })
            .collect())
    }

    fn queue_summary(&mut self, top: usize) -> Result<QueueSummary> {
        self.client.revive()?;
        let totals = self.client.query_one(
            "SELECT count(*), coalesce(sum(octet_length(payload)), 0)::bigint,
                    count(*) FILTER (WHERE sealed)
             FROM queue",
            &[],
        )?;
        let mut ranked = |column: &str| -> Result<Vec<(String, u64, u64)>> {
            let sql = format!(
                "SELECT a.handle, count(*), sum(octet_length(q.payload))::bigint FROM queue q
                 JOIN accounts a ON a.account_id = q.{column}
                 GROUP BY a.handle ORDER BY sum(octet_length(q.payload)) DESC LIMIT $1"
            );
            let rows = self.client.query(&sql, &[&(top as i64)])?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), u64_of(r.get(1)), u64_of(r.get(2))))
                .collect())
        };
        let top_senders = ranked("sender")?;
        let top_recipients = ranked("recipient")?;
        Ok(QueueSummary {
            envelopes: u64_of(totals.get(0)),
            bytes: u64_of(totals.get(1)),
            sealed: u64_of(totals.get(2)),
            top_senders,
            top_recipients,
        })
    }

    fn sign_in(&mut self, account_id: &str) -> Result<Option<u64>> {
        self.client.revive()?;
        // One statement, so one transaction: the word goes out only if the number is kept.
        let row = self.client.query_opt(
            &format!(
                "WITH s AS (UPDATE accounts SET signed_in = nextval('sign_ins')
                            WHERE account_id = $1 RETURNING signed_in)
                 SELECT signed_in, pg_notify('{CHANNEL}', {SIGNED_IN_SQL}) FROM s"
            ),
            &[&account_id],
        )?;
        Ok(row.map(|r| u64_of(r.get(0))))
    }

    fn pass_elsewhere(&mut self, envelopes: &[(String, Queued)]) -> Result<()> {
        let words: Vec<String> = envelopes
            .iter()
            .filter_map(|(to, q)| online_only_word(self.instance, to, q))
            .collect();
        if words.is_empty() {
            return Ok(());
        }
        self.client.revive()?;
        self.client.execute(&notify_all_sql(), &[&words])?;
        Ok(())
    }

    fn queued_for(&mut self, recipient: &str) -> Result<u64> {
        self.client.revive()?;
        self.count("SELECT count(*) FROM queue WHERE recipient = $1", recipient)
    }

    fn create_blob(&mut self, blob: &BlobRow, max_blobs: u64, max_bytes: u64) -> Result<Created> {
        self.client.revive()?;
        let mut tx = self.client.transaction()?;
        // The owner's lock makes the count and the insert one step for every relay.
        lock_all(&mut tx, [blob.owner.as_str()])?;
        let r = tx.query_one(
            "SELECT count(*), coalesce(sum(size), 0)::bigint FROM blobs WHERE owner = $1",
            &[&blob.owner],
        )?;
        let admitted = rules::admit_blob(
            u64_of(r.get(0)),
            u64_of(r.get(1)),
            blob.size,
            max_blobs,
            max_bytes,
        );
        if admitted != Created::Yes {
            return Ok(admitted);
        }
        tx.execute(
            "INSERT INTO blobs (id, owner, size, stored, recipients_left, expires_at, created_at)
             VALUES ($1, $2, $3, 0, $4, $5, $6)",
            &[
                &blob.id,
                &blob.owner,
                &(blob.size as i64),
                &i64::from(blob.recipients_left),
                &blob.expires_at.map(|x| x as i64),
                &(blob.created_at as i64),
            ],
        )?;
        tx.commit()?;
        Ok(Created::Yes)
    }

    fn blob(&mut self, id: &str) -> Result<Option<BlobRow>> {
        self.client.revive()?;
        Ok(self
            .client
            .query_opt(
                "SELECT id, owner, size, stored, recipients_left, expires_at, created_at
                 FROM blobs WHERE id = $1",
                &[&id],
            )?
            .map(|r| BlobRow {
                id: r.get(0),
                owner: r.get(1),
                size: u64_of(r.get(2)),
                stored: u64_of(r.get(3)),
                recipients_left: u32_of(r.get(4)),
                expires_at: r.get::<_, Option<i64>>(5).map(u64_of),
                created_at: u64_of(r.get(6)),
            }))
    }

    fn blob_lengths(&mut self) -> Result<Vec<(String, u64)>> {
        self.client.revive()?;
        let rows = self.client.query("SELECT id, stored FROM blobs", &[])?;
        Ok(rows.iter().map(|r| (r.get(0), u64_of(r.get(1)))).collect())
    }

    fn record_stored(&mut self, id: &str, from: u64, to: u64) -> Result<bool> {
        self.client.revive()?;
        let n = self.client.execute(
            "UPDATE blobs SET stored = $3 WHERE id = $1 AND stored = $2",
            &[&id, &(from as i64), &(to as i64)],
        )?;
        Ok(n == 1)
    }

    fn blob_fetched(&mut self, id: &str) -> Result<Fetched> {
        self.client.revive()?;
        let mut tx = self.client.transaction()?;
        let left: Option<i64> = tx
            .query_opt(
                "SELECT recipients_left FROM blobs WHERE id = $1 FOR UPDATE",
                &[&id],
            )?
            .map(|r| r.get(0));
        let outcome = match left.map(|n| rules::after_fetch(u32_of(n))) {
            None => Fetched::NotFound,
            Some(None) => {
                tx.execute("DELETE FROM blobs WHERE id = $1", &[&id])?;
                Fetched::Last
            }
            Some(Some(left)) => {
                tx.execute(
                    "UPDATE blobs SET recipients_left = $2 WHERE id = $1",
                    &[&id, &i64::from(left)],
                )?;
                Fetched::Counted
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn delete_blob(&mut self, id: &str) -> Result<()> {
        self.client.revive()?;
        self.client
            .execute("DELETE FROM blobs WHERE id = $1", &[&id])?;
        Ok(())
    }

    fn delete_due_blobs(
        &mut self,
        now: u64,
        retained_since: u64,
        abandoned_since: u64,
    ) -> Result<Vec<String>> {
        self.client.revive()?;
        let rows = self.client.query(
            "DELETE FROM blobs
             WHERE (expires_at IS NOT NULL AND expires_at <= $1)
                OR created_at <= $2
                OR (stored < size AND created_at <= $3)
             RETURNING id",
            &[
                &(now as i64),
                &(retained_since as i64),
                &(abandoned_since as i64),
            ],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn blob_summary(&mut self) -> Result<BlobSummary> {
        self.client.revive()?;
        let r = self.client.query_one(
            "SELECT count(*), coalesce(sum(stored), 0)::bigint,
                    count(*) FILTER (WHERE stored < size)
             FROM blobs",
            &[],
        )?;
        Ok(BlobSummary {
            blobs: u64_of(r.get(0)),
            bytes: u64_of(r.get(1)),
            incomplete: u64_of(r.get(2)),
        })
    }
}

/// Replaces an account's identity key and all its prekeys inside `tx`, and records the change.
fn replace_keys(
    tx: &mut impl GenericClient,
    account_id: &str,
    keys: &KeyUpload,
    via: KeyChangeVia,
    endorsement: Option<&[u8]>,
    now: u64,
) -> Result<()> {
    let Some(old) = tx.query_opt(
        "SELECT identity_key FROM accounts WHERE account_id = $1 FOR UPDATE",
        &[&account_id],
    )?
    else {
        return Err(StoreError::NotFound);
    };
    let old: Vec<u8> = old.get(0);
    let taken = tx.query_opt(
        "SELECT 1 FROM accounts WHERE identity_key = $1",
        &[&keys.identity_key.0],
    )?;
    if taken.is_some() {
        return Err(StoreError::KeyTaken);
    }
    let updated = tx.execute(
        "UPDATE accounts SET identity_key = $2, registration_id = $3, signed_prekey_id = $4,
                 signed_prekey = $5, signed_prekey_sig = $6, kyber_id = $7, kyber = $8,
                 kyber_sig = $9
             WHERE account_id = $1",
        &[
            &account_id,
            &keys.identity_key.0,
            &i64::from(keys.registration_id),
            &i64::from(keys.signed_prekey.id),
            &keys.signed_prekey.public.0,
            &keys.signed_prekey.signature.0,
            &i64::from(keys.kyber_last_resort.id),
            &keys.kyber_last_resort.public.0,
            &keys.kyber_last_resort.signature.0,
        ],
    );
    match updated {
        Ok(_) => {}
        // Another relay gave the key to another account since the check above.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            return Err(StoreError::KeyTaken);
        }
        Err(e) => return Err(e.into()),
    }
    tx.execute(
        "DELETE FROM one_time_prekeys WHERE account_id = $1",
        &[&account_id],
    )?;
    tx.execute(
        "DELETE FROM one_time_kyber WHERE account_id = $1",
        &[&account_id],
    )?;
    insert_one_time(tx, account_id, &keys.one_time_prekeys, &keys.one_time_kyber)?;
    tx.execute(
        "INSERT INTO key_changes (account_id, old_key, new_key, via, at, endorsement)
             VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &account_id,
            &old,
            &keys.identity_key.0,
            &via_name(via),
            &(now as i64),
            &endorsement,
        ],
    )?;
    Ok(())
}

fn count_one_time(client: &mut impl GenericClient, account_id: &str) -> Result<(u32, u32)> {
    let r = client.query_one(
        "SELECT (SELECT count(*) FROM one_time_prekeys WHERE account_id = $1),
                (SELECT count(*) FROM one_time_kyber WHERE account_id = $1)",
        &[&account_id],
    )?;
    Ok((u32_of(r.get(0)), u32_of(r.get(1))))
}

/// Adds one-time prekeys, replacing any under the same id.
fn insert_one_time(
    tx: &mut impl GenericClient,
    account_id: &str,
    prekeys: &[PreKey],
    kyber: &[SignedKey],
) -> Result<()> {
    if !prekeys.is_empty() {
        let ids: Vec<i64> = prekeys.iter().map(|k| i64::from(k.id)).collect();
        let public: Vec<&[u8]> = prekeys.iter().map(|k| k.public.0.as_slice()).collect();
        // DISTINCT ON keeps the last of an id sent twice, as one insert after another would.
        tx.execute(
            "INSERT INTO one_time_prekeys (account_id, id, public)
             SELECT DISTINCT ON (id) $1::text, id, public
             FROM unnest($2::bigint[], $3::bytea[]) WITH ORDINALITY AS k(id, public, n)
             ORDER BY id, n DESC
             ON CONFLICT (account_id, id) DO UPDATE SET public = EXCLUDED.public",
            &[&account_id, &ids, &public],
        )?;
    }
    if !kyber.is_empty() {
        let ids: Vec<i64> = kyber.iter().map(|k| i64::from(k.id)).collect();
        let public: Vec<&[u8]> = kyber.iter().map(|k| k.public.0.as_slice()).collect();
        let signature: Vec<&[u8]> = kyber.iter().map(|k| k.signature.0.as_slice()).collect();
        tx.execute(
            "INSERT INTO one_time_kyber (account_id, id, public, signature)
             SELECT DISTINCT ON (id) $1::text, id, public, signature
             FROM unnest($2::bigint[], $3::bytea[], $4::bytea[])
                  WITH ORDINALITY AS k(id, public, signature, n)
             ORDER BY id, n DESC
             ON CONFLICT (account_id, id)
             DO UPDATE SET public = EXCLUDED.public, signature = EXCLUDED.signature",
            &[&account_id, &ids, &public, &signature],
        )?;
    }
    Ok(())
}
