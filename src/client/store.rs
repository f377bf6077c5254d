//! The client's SQLite database: schema, migrations, the profile, contacts, threads and
//! messages.
//!
//! Owns every SQL statement of the client except the libsignal key tables, which
//! `signal_store` reads and writes through the same connection. Must not touch the network.
//! Opened with `secure_delete` so deleted rows are overwritten, not just unlinked.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

mod attachments;
mod contact_admin;
mod groups;
mod rich;
mod search;

pub use attachments::StoredFile;
pub use groups::{GROUP_PREFIX, Group, Member, is_group_id};
pub use search::{BULK_DELETE, SearchHit};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("profile database error")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot use the profile directory {path}: {cause}")]
    Dir {
        path: String,
        // Shown in the message, so not a `source` too (see `private::PrivateError`).
        cause: std::io::Error,
    },
    #[error("this profile is not registered yet; run `sotto init --handle NAME --relay URL`")]
    NotRegistered,
    #[error("the profile's keys are unreadable ({0}); the profile database is damaged")]
    Corrupt(String),
    #[error(
        "the profile {0} is in use by another sotto process; close it first, or use another --data-dir/--profile"
    )]
    InUse(String),
    #[error(transparent)]
    Private(#[from] crate::private::PrivateError),
}

/// An exclusive claim on a profile directory (see `dir_lock`). Released when dropped (or
/// when the process dies).
pub type ProfileLock = crate::dir_lock::DirLock;

pub fn lock_profile(dir: &Path) -> Result<ProfileLock> {
    crate::private::secure_dir(dir, crate::private::PROFILE_FILES)?;
    crate::dir_lock::DirLock::acquire(dir).map_err(|e| match e {
        crate::dir_lock::LockError::InUse(path) => StoreError::InUse(path),
        crate::dir_lock::LockError::Io { path, cause } => StoreError::Dir { path, cause },
    })
}

pub type Result<T> = std::result::Result<T, StoreError>;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE profile (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE prekeys (id INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE signed_prekeys (id INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE kyber_prekeys (
    id INTEGER PRIMARY KEY,
    record BLOB NOT NULL,
    last_resort INTEGER NOT NULL
);
CREATE TABLE kyber_used (
    kyber_id INTEGER NOT NULL,
    signed_id INTEGER NOT NULL,
    base_key BLOB NOT NULL,
    UNIQUE (kyber_id, signed_id, base_key)
);
CREATE TABLE sessions (address TEXT PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE identities (address TEXT PRIMARY KEY, identity_key BLOB NOT NULL);
CREATE TABLE contacts (
    account_id TEXT PRIMARY KEY,
    handle TEXT NOT NULL UNIQUE,
    identity_key BLOB NOT NULL,
    access_token BLOB NOT NULL,
    added_at INTEGER NOT NULL
);
CREATE TABLE threads (
    contact TEXT NOT NULL REFERENCES contacts(account_id),
    secret INTEGER NOT NULL,
    timer_secs INTEGER,
    PRIMARY KEY (contact, secret)
);
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    contact TEXT NOT NULL REFERENCES contacts(account_id),
    secret INTEGER NOT NULL,
    outgoing INTEGER NOT NULL,
    text TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    received_at INTEGER,
    state TEXT NOT NULL,
    shown INTEGER NOT NULL DEFAULT 0,
    timer_secs INTEGER,
    expires_at INTEGER,
    -- Ids are the sender's: unique per contact, so one peer cannot shadow another's messages.
    UNIQUE (contact, id)
);
CREATE INDEX messages_by_thread ON messages(contact, secret, seq);
CREATE INDEX messages_unshown ON messages(shown) WHERE shown = 0;
"#,
    r#"
-- Unread counts per thread for the contact list, without walking each thread.
CREATE INDEX messages_unread ON messages(contact, secret) WHERE shown = 0;
"#,
    r#"
-- 'text', or 'timer' for a line recording a change of the thread's disappearing timer.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'text';
CREATE INDEX messages_expiry ON messages(expires_at) WHERE expires_at IS NOT NULL;
"#,
    r#"
-- The user compared safety numbers and marked the contact verified.
ALTER TABLE contacts ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;
-- The contact's identity key changed and the user has not accepted the new one yet:
-- secret sending to them is blocked until then.
ALTER TABLE contacts ADD COLUMN key_changed INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- The relay's answers and the user's reading name messages by id alone: without this, each
-- `ok` walked the whole store (10 ms a message in a store of 100,000).
CREATE INDEX messages_by_id ON messages(id);
"#,
    r#"
-- messages_unread holds the same rows; one index fewer to write per arriving message.
DROP INDEX messages_unshown;
"#,
    r#"
-- What happened to each contact's identity key: changes taken (endorsed rekey, operator
-- reset), changes accepted by the user, and keys refused as substitutions (a bundle, a
-- directory answer or a sender certificate naming a key the contact never endorsed).
CREATE TABLE key_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    contact TEXT NOT NULL REFERENCES contacts(account_id),
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    key BLOB
);
CREATE INDEX key_log_by_contact ON key_log(contact, seq);
-- libsignal's identity store reads the contact's own key now: one key per contact.
DROP TABLE identities;
"#,
    r#"
-- The user blocked the contact: what they send is dropped unread and unanswered, and the
-- contact is left out of the list.
ALTER TABLE contacts ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;
-- A secret message that failed because the contact's key changed: sent again once the user
-- accepts the new key.
ALTER TABLE messages ADD COLUMN held_for_key INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- issue 20 (rich): replies, reactions, edits, deletions for everyone, unsupported rows.
-- The message of the same thread a reply answers, and our own copy of its start; the excerpt
-- is NULL once the original is gone (expired or deleted), so its text outlives it nowhere.
ALTER TABLE messages ADD COLUMN reply_id TEXT;
ALTER TABLE messages ADD COLUMN reply_excerpt TEXT;
ALTER TABLE messages ADD COLUMN edited INTEGER NOT NULL DEFAULT 0;
-- Deleted for everyone: a tombstone whose text is gone.
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_by_reply ON messages(contact, reply_id) WHERE reply_id IS NOT NULL;
-- One reaction per person per message: ours (from_me = 1) and the contact's.
CREATE TABLE reactions (
    contact TEXT NOT NULL,
    secret INTEGER NOT NULL,
    target TEXT NOT NULL,
    from_me INTEGER NOT NULL,
    emoji TEXT NOT NULL,
    PRIMARY KEY (contact, secret, target, from_me)
) WITHOUT ROWID;
-- Whatever deletes a message (the sweeper, delete for me, removing a contact) takes its
-- reactions and the excerpts quoting it in the same transaction.
CREATE TRIGGER messages_rich_gone AFTER DELETE ON messages BEGIN
    DELETE FROM reactions
        WHERE contact = old.contact AND secret = old.secret AND target = old.id;
    UPDATE messages SET reply_excerpt = NULL
        WHERE contact = old.contact AND reply_id = old.id AND secret = old.secret;
END;
"#,
    r#"
-- issue 20 (search): a full-text index of the texts people wrote, that forgets as they do.
-- External content (the index holds no copy of the text, snippets read `messages`), over a
-- view so that only texts are indexed and the index always equals its content. FTS5's
-- secure-delete takes a deleted row's terms out of the index's pages instead of leaving
-- them there under a delete marker. The triggers keep it in step with every change to
-- `messages`, whoever makes it (sweeper, deletion, edit).
CREATE VIEW messages_searchable AS SELECT seq, text FROM messages WHERE kind = 'text';
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text,
    content = 'messages_searchable',
    content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts(messages_fts, rank) VALUES ('secure-delete', 1);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.kind = 'text' BEGIN
    INSERT INTO messages_fts(rowid, text) VALUES (new.seq, new.text);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.kind = 'text' BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, kind ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text)
        SELECT 'delete', old.seq, old.text WHERE old.kind = 'text';
    INSERT INTO messages_fts(rowid, text) SELECT new.seq, new.text WHERE new.kind = 'text';
END;
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
"#,
    attachments::MIGRATION,
    groups::MIGRATION,
];

const SET_STATE: &str = "UPDATE messages SET state = ?2
     WHERE id = ?1 AND outgoing = 1 AND state NOT IN ('delivered', 'read')";

// `+shown`: looked up by id, not by walking every unshown message (a long backlog read at
// once would cost time in proportion to its square).
const MARK_SHOWN: &str = "UPDATE messages SET shown = 1,
         expires_at = CASE WHEN timer_secs IS NOT NULL AND expires_at IS NULL
                           THEN ?2 + timer_secs * 1000 ELSE expires_at END
     WHERE id = ?1 AND +shown = 0
     RETURNING expires_at, outgoing, kind, secret,
         (SELECT handle FROM contacts WHERE account_id = messages.contact)";

/// Received messages not yet shown. Without the hint SQLite walks the whole table, which is
/// already in seq order, rather than the unshown rows and a sort.
const UNSHOWN: (Option<&str>, &str) = (Some("messages_unread"), "m.shown = 0 ORDER BY m.seq");

/// A page of a thread, newest first.
const PAGE: (Option<&str>, &str) = (
    None,
    "m.contact = ?1 AND m.secret = ?2 AND m.seq < ?3 ORDER BY m.seq DESC LIMIT ?4",
);

/// Where a message is on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Stored locally, not yet accepted by the relay.
    Sending,
    /// Committed to the relay's queue.
    Sent,
    /// The peer's device has stored it (a delivery receipt came back).
    Delivered,
    /// The peer has displayed it (a read receipt came back); never goes back to `Delivered`.
    Read,
    /// Received from a peer.
    Received,
    /// The relay refused it for good.
    Failed,
}

impl MessageState {
    fn as_str(self) -> &'static str {
        match self {
            MessageState::Sending => "sending",
            MessageState::Sent => "sent",
            MessageState::Delivered => "delivered",
            MessageState::Read => "read",
            MessageState::Received => "received",
            MessageState::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "sending" => MessageState::Sending,
            "sent" => MessageState::Sent,
            "delivered" => MessageState::Delivered,
            "read" => MessageState::Read,
            "received" => MessageState::Received,
            _ => MessageState::Failed,
        }
    }
}

/// What a stored message is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Something a person wrote.
    #[default]
    Text,
    /// A change of the thread's disappearing timer; `timer` holds the new value.
    Timer,
    /// The contact's identity key (safety number) changed.
    KeyChange,
    /// A kind of message a newer sotto sent that this one cannot show.
    Unsupported,
    /// A group's membership or name changed; `text` says how.
    Group,
    /// Only in exports and events, never a stored row's kind: a text answering `target`.
    Reply,
    /// Only in exports and events: a reaction to `target`.
    Reaction,
    /// Only in exports and events: `target`'s new text.
    Edit,
    /// Only in exports and events: `target` was deleted for everyone.
    Delete,
}

impl MessageKind {
    fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Timer => "timer",
            MessageKind::KeyChange => "key_change",
            MessageKind::Unsupported => "unsupported",
            MessageKind::Group => "group",
            MessageKind::Reply => "reply",
            MessageKind::Reaction => "reaction",
            MessageKind::Edit => "edit",
            MessageKind::Delete => "delete",
        }
    }

    /// Whether a stored message of this kind is something a person wrote.
    pub fn is_text(self) -> bool {
        self == MessageKind::Text
    }
}

/// What a reply quotes, as the screen shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Quote {
    /// The original's id, in the same thread.
    pub id: String,
    /// The start of the original; empty once it is gone.
    pub excerpt: String,
    /// The original expired or was deleted.
    pub gone: bool,
}

/// One emoji under a message, with how many people reacted with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: u32,
    /// Ours is among them.
    pub mine: bool,
}

/// Received messages the user has just seen for the first time, as `Store::mark_shown`
/// reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shown {
    /// (id, expires_at in Unix ms) of each message whose countdown this started.
    pub started: Vec<(String, u64)>,
    /// (contact handle, secret, id) of each message a peer wrote (not a local line) that
    /// was not shown before: what a read receipt reports.
    pub read: Vec<(String, bool, String)>,
}

/// A message that the sweeper deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub id: String,
    pub contact: String,
    pub secret: bool,
}

/// A contact as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contact {
    pub account_id: String,
    pub handle: String,
    #[serde(skip)]
    pub identity_key: Vec<u8>,
    #[serde(skip)]
    pub access_token: Vec<u8>,
    /// The user marked this contact verified after comparing safety numbers.
    pub verified: bool,
    /// The identity key changed and the change is not accepted yet: secret sending blocked.
    pub key_changed: bool,
    /// The user blocked this contact: nothing they send is kept or answered.
    pub blocked: bool,
}

/// A message as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// Position in the store, increasing with arrival: the key for paging. 0 until stored.
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    /// The contact's handle: the peer of the thread.
    pub contact: String,
    pub secret: bool,
    pub outgoing: bool,
    pub text: String,
    pub sent_at: u64,
    pub state: MessageState,
    pub kind: MessageKind,
    /// Disappearing timer in force when it was sent, in seconds.
    pub timer: Option<u32>,
    /// Unix ms when it is deleted: for our own messages `timer` after sending, for received
    /// ones `timer` after first shown (None until then).
    pub expires_at: Option<u64>,
    /// The message this one answers.
    pub reply: Option<Quote>,
    /// Reactions, by first appearance.
    pub reactions: Vec<Reaction>,
    /// Its author changed its text.
    pub edited: bool,
    /// Deleted for everyone: the text is gone.
    pub deleted: bool,
    /// The file this message carries (its `text` is the caption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<crate::client::attachment::Attachment>,
    /// In a group's thread, the member who wrote a received message (their handle, or their
    /// account id if they are not a contact); None in a contact's thread and for our own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

impl Message {
    /// A line the client itself writes into a thread (a key change, a membership change, a
    /// refused forgery): no timer, no reply, no reactions, no file, not stored yet (seq 0).
    pub fn notice(
        id: String,
        contact: &str,
        secret: bool,
        outgoing: bool,
        kind: MessageKind,
        text: String,
        sent_at: u64,
    ) -> Message {
        Message {
            seq: 0,
            id,
            contact: contact.to_string(),
            secret,
            outgoing,
            text,
            sent_at,
            state: if outgoing {
                MessageState::Sent
            } else {
                MessageState::Received
            },
            kind,
            timer: None,
            expires_at: None,
            reply: None,
            reactions: Vec::new(),
            edited: false,
            deleted: false,
            attachment: None,
            author: None,
        }
    }
}

/// A contact as the contact list shows it. Arrays are indexed by `secret as usize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactSummary {
    pub handle: String,
    /// Received messages not yet shown, per thread.
    pub unread: [u32; 2],
    /// Whether the secret thread holds any message.
    pub has_secret: bool,
    /// Disappearing timer in seconds per thread; None: off.
    pub timers: [Option<u32>; 2],
    /// Marked verified after comparing safety numbers.
    pub verified: bool,
    /// The identity key changed and the change is not accepted: secret sending blocked.
    pub key_changed: bool,
    /// A group (its handle is `#name`), not a person.
    pub group: bool,
}

/// The profile's registration: who this client is at which relay.
#[derive(Debug, Clone)]
pub struct Registration {
    pub account_id: String,
    pub handle: String,
    pub relay_url: String,
    pub trust_root: Vec<u8>,
}

pub struct Store {
    conn: Connection,
}

/// Begins work on `conn` that is kept or undone as a whole (see `Atomic`).
pub fn atomic(conn: &Connection) -> Result<Atomic<'_>> {
    let outer = begin(conn, "atomic")?;
    Ok(Atomic {
        conn,
        outer,
        done: false,
    })
}

/// Opens a piece of work named `name`: a transaction if none is open, else a savepoint in
/// the open one. Returns whether it began the transaction. A transaction takes the write lock
/// at once (`BEGIN IMMEDIATE`) because other connections write to this database too (the
/// sweeper's, the WAL's room): one begun as a read could not take the lock once another had
/// committed, and would fail with "database is locked" instead of waiting.
fn begin(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    let outer = conn.is_autocommit();
    conn.execute_batch(&if outer {
        "BEGIN IMMEDIATE".to_string()
    } else {
        format!("SAVEPOINT {name}")
    })?;
    Ok(outer)
}

/// Keeps the work `begin` opened; the outermost commits. If that fails, nothing of the work
/// is kept, and it is closed so that the next piece can begin (a failed commit would leave
/// the transaction open).
fn keep(conn: &Connection, name: &str, outer: bool) -> rusqlite::Result<()> {
    let kept = conn.execute_batch(&if outer {
        "COMMIT".to_string()
    } else {
        format!("RELEASE {name}")
    });
    if kept.is_err() {
        let _ = undo(conn, name, outer);
    }
    kept
}

/// Undoes the work `begin` opened, and closes it.
fn undo(conn: &Connection, name: &str, outer: bool) -> rusqlite::Result<()> {
    conn.execute_batch(&if outer {
        "ROLLBACK".to_string()
    } else {
        format!("ROLLBACK TO {name}; RELEASE {name}")
    })
}

/// An open burst (see `Store::begin_burst`): whether it began the transaction.
pub struct Burst(bool);

/// A piece of work that is kept or undone as a whole. Alone it is a transaction; begun while
/// another is open it is a savepoint inside that one, and becomes durable with the outermost,
/// so one commit (one sync) can cover a burst of arriving messages. Dropped without `commit`,
/// it is undone.
pub struct Atomic<'a> {
    conn: &'a Connection,
    outer: bool,
    done: bool,
}

impl Atomic<'_> {
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        Ok(keep(self.conn, "atomic", self.outer)?)
    }
}

impl Drop for Atomic<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = undo(self.conn, "atomic", self.outer)
        {
            tracing::error!(error = %e, "could not undo unfinished work");
        }
    }
}

impl Store {
    /// Opens (creating if needed) `sotto.db` in `dir`. The directory is made private to
    /// the user first (see `private::secure_dir`).
    pub fn open(dir: &Path) -> Result<Self> {
        crate::private::secure_dir(dir, crate::private::PROFILE_FILES)?;
        Ok(Store {
            conn: crate::db::open(&dir.join("sotto.db"), MIGRATIONS)?,
        })
    }

    /// The raw connection, for the libsignal store adapters and transactions spanning both.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Begins work that is kept or undone as a whole (see `Atomic`).
    pub fn atomic(&self) -> Result<Atomic<'_>> {
        atomic(&self.conn)
    }

    /// Begins a burst: what is committed until `end_burst` (each piece in an `Atomic` of its
    /// own) reaches the disk with one sync. The token borrows nothing, so the caller can go
    /// on using the store mutably; it must hand it back to `end_burst`.
    #[must_use = "a burst stays open until it is ended"]
    pub fn begin_burst(&self) -> Result<Burst> {
        Ok(Burst(begin(&self.conn, "burst")?))
    }

    /// Undoes a burst: nothing of it is kept.
    pub fn abandon_burst(&self, burst: Burst) -> Result<()> {
        Ok(undo(&self.conn, "burst", burst.0)?)
    }

    /// Commits a burst; if that fails, nothing of it is kept.
    pub fn end_burst(&self, burst: Burst) -> Result<()> {
        Ok(keep(&self.conn, "burst", burst.0)?)
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        get(&self.conn, key)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        set(&self.conn, key, value)
    }

    pub fn registration(&self) -> Result<Registration> {
        let text = |k: &str| -> Result<String> {
            let v = self.get(k)?.ok_or(StoreError::NotRegistered)?;
            String::from_utf8(v).map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        Ok(Registration {
            account_id: text("account_id")?,
            handle: text("handle")?,
            relay_url: text("relay_url")?,
            trust_root: self.get("trust_root")?.ok_or(StoreError::NotRegistered)?,
        })
    }

    pub fn contacts(&self) -> Result<Vec<Contact>> {
        let mut stmt = self.conn.prepare(
            "SELECT account_id, handle, identity_key, access_token, verified, key_changed,
                 blocked
             FROM contacts ORDER BY handle",
        )?;
        let rows = stmt.query_map([], contact_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn contact_by_handle(&self, handle: &str) -> Result<Option<Contact>> {
        self.contact_where("handle", handle)
    }

    pub fn contact_by_id(&self, account_id: &str) -> Result<Option<Contact>> {
        self.contact_where("account_id", account_id)
    }

    fn contact_where(&self, column: &str, value: &str) -> Result<Option<Contact>> {
        let sql = format!(
            "SELECT account_id, handle, identity_key, access_token, verified, key_changed,
                 blocked
             FROM contacts WHERE {column} = ?1"
        );
        // Prepared once per column: every message sent looks its contact up.
        Ok(self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut st| st.query_row([value], contact_row))
            .optional()?)
    }

    /// Adds a contact with both its threads, or refreshes its handle and access token. An
    /// existing contact's identity key is never replaced here: that is `trust::key_changed`.
    pub fn upsert_contact(&self, c: &Contact, now: u64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO contacts (account_id, handle, identity_key, access_token, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(account_id) DO UPDATE SET handle = excluded.handle,
                 access_token = excluded.access_token",
            )
            .and_then(|mut st| {
                st.execute(params![
                    c.account_id,
                    c.handle,
                    c.identity_key,
                    c.access_token,
                    now as i64
                ])
            })?;
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO threads (contact, secret) VALUES (?1, 0), (?1, 1)",
            )
            .and_then(|mut st| st.execute([&c.account_id]))?;
        Ok(())
    }

    /// Stores a message; returns its `seq`, or None (changing nothing) if its id is known.
    pub fn insert_message(&self, contact_id: &str, m: &Message, now: u64) -> Result<Option<i64>> {
        let n = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO messages (id, contact, secret, outgoing, text, sent_at,
                 received_at, state, shown, kind, timer_secs, expires_at, reply_id,
                 reply_excerpt, author)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                 -- The author is kept by account id, so a change of their handle follows.
                 coalesce((SELECT account_id FROM contacts WHERE handle = ?15), ?15))",
            )
            .and_then(|mut st| {
                st.execute(params![
                    m.id,
                    contact_id,
                    m.secret,
                    m.outgoing,
                    m.text,
                    m.sent_at as i64,
                    (!m.outgoing).then_some(now as i64),
                    m.state.as_str(),
                    // Our own messages were seen as they were typed.
                    m.outgoing,
                    m.kind.as_str(),
                    m.timer,
                    m.expires_at.map(|e| e as i64),
                    m.reply.as_ref().map(|q| &q.id),
                    m.reply.as_ref().filter(|q| !q.gone).map(|q| &q.excerpt),
                    m.author,
                ])
            })?;
        Ok((n > 0).then(|| self.conn.last_insert_rowid()))
    }

    /// Records a message's new state without waiting on the disk: if a power cut loses it,
    /// a `sent` message is sent again and its recipient drops the duplicate. A delivered
    /// message keeps its state (the receipt can overtake the relay's `ok`); returns whether
    /// the state changed.
    pub fn set_state(&self, id: &str, state: MessageState) -> Result<bool> {
        Ok(!self.set_states(&[id], state)?.is_empty())
    }

    /// `set_state` for many messages in one transaction; returns the ids that changed.
    pub fn set_states<'i>(&self, ids: &[&'i str], state: MessageState) -> Result<Vec<&'i str>> {
        let changed = crate::db::without_sync(&self.conn, || {
            let tx = self.conn.unchecked_transaction()?;
            let mut changed = Vec::new();
            {
                let mut update = tx.prepare_cached(SET_STATE)?;
                for id in ids {
                    if update.execute(params![id, state.as_str()])? > 0 {
                        changed.push(*id);
                    }
                }
            }
            tx.commit()?;
            Ok(changed)
        })?;
        Ok(changed)
    }

    /// Marks outgoing messages to `contact_id` delivered; returns the ids that changed.
    pub fn mark_delivered(&self, contact_id: &str, ids: &[String]) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE messages SET state = 'delivered'
             WHERE contact = ?1 AND id = ?2 AND outgoing = 1 AND state IN ('sending', 'sent')",
        )?;
        let mut changed = Vec::new();
        for id in ids {
            if stmt.execute(params![contact_id, id])? > 0 {
                changed.push(id.clone());
            }
        }
        Ok(changed)
    }

    /// Marks outgoing messages in `contact_id`'s normal or secret thread read; returns the ids
    /// that changed. An id of another thread, of the peer's own messages or of a message
    /// already read changes nothing.
    pub fn mark_read(&self, contact_id: &str, secret: bool, ids: &[String]) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE messages SET state = 'read'
             WHERE contact = ?1 AND id = ?2 AND secret = ?3 AND outgoing = 1
                 AND state IN ('sending', 'sent', 'delivered')",
        )?;
        let mut changed = Vec::new();
        for id in ids {
            if stmt.execute(params![contact_id, id, secret])? > 0 {
                changed.push(id.clone());
            }
        }
        Ok(changed)
    }

    /// Deletes unused one-time prekeys (EC, and Kyber but never the last-resort key) beyond
    /// the `keep` newest of each kind; returns how many went. Each kind is given as (the
    /// newest id, the size of its id cycle): ids wrap, so age is the distance back from the
    /// newest around the cycle (`account::prune_one_time` works these out).
    pub fn prune_one_time(&self, keep: u32, ec: (u32, u32), kyber: (u32, u32)) -> Result<usize> {
        let ec = self.conn.execute(
            "DELETE FROM prekeys WHERE id NOT IN (
                 SELECT id FROM prekeys ORDER BY ((?2 - id) % ?3 + ?3) % ?3 LIMIT ?1)",
            params![keep, ec.0, ec.1],
        )?;
        let kyber = self.conn.execute(
            "DELETE FROM kyber_prekeys WHERE last_resort = 0 AND id NOT IN (
                 SELECT id FROM kyber_prekeys WHERE last_resort = 0
                 ORDER BY ((?2 - id) % ?3 + ?3) % ?3 LIMIT ?1)",
            params![keep, kyber.0, kyber.1],
        )?;
        Ok(ec + kyber)
    }

    /// Outgoing messages not yet accepted by the relay, oldest first.
    pub fn unsent(&self) -> Result<Vec<Message>> {
        self.messages_where(
            None,
            "m.state = 'sending' AND m.deleted = 0 ORDER BY m.seq",
            [],
        )
    }

    /// Received messages not yet shown to the user, oldest first.
    pub fn unshown(&self) -> Result<Vec<Message>> {
        self.messages_where(UNSHOWN.0, UNSHOWN.1, [])
    }

    /// Marks messages seen by the user at `now`. Their disappearing timers start now.
    pub fn mark_shown(&self, ids: &[String], now: u64) -> Result<Shown> {
        let tx = self.conn.unchecked_transaction()?;
        let mut shown = Shown::default();
        {
            let mut stmt = tx.prepare_cached(MARK_SHOWN)?;
            for id in ids {
                type Row = (Option<i64>, bool, String, bool, String);
                let row: Option<Row> = stmt
                    .query_row(params![id, now as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .optional()?;
                let Some((at, outgoing, kind, secret, handle)) = row else {
                    continue;
                };
                if let Some(at) = at {
                    shown.started.push((id.clone(), at as u64));
                }
                if !outgoing && kind != MessageKind::KeyChange.as_str() {
                    shown.read.push((handle, secret, id.clone()));
                }
            }
        }
        tx.commit()?;
        Ok(shown)
    }

    /// The earliest expiry of any stored message.
    pub fn next_expiry(&self) -> Result<Option<u64>> {
        let at: Option<i64> = self
            .conn
            .prepare_cached("SELECT min(expires_at) FROM messages WHERE expires_at IS NOT NULL")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))?;
        Ok(at.map(|a| a as u64))
    }

    /// Deletes every message due at `now` in one transaction, then checkpoints and truncates
    /// the WAL: with `secure_delete`, the text is then in neither the database nor the WAL.
    pub fn delete_expired(&self, now: u64) -> Result<Vec<Expired>> {
        let tx = self.conn.unchecked_transaction()?;
        let due: i64 = tx
            .prepare_cached(
                "SELECT count(*) FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            )?
            .query_row([now as i64], |r| r.get(0))?;
        let gone = self.deleting(due as usize, || {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?1
                 RETURNING id, contact, secret",
            )?;
            let rows = stmt.query_map([now as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
        })?;
        let mut expired = Vec::with_capacity(gone.len());
        {
            // A sweep usually takes many messages of few contacts: one lookup per contact.
            let mut handles = std::collections::HashMap::new();
            let mut lookup =
                tx.prepare_cached("SELECT handle FROM contacts WHERE account_id = ?1")?;
            for (id, contact_id, secret) in gone {
                let contact = match handles.get(&contact_id) {
                    Some(h) => String::clone(h),
                    None => {
                        let h: String = lookup.query_row([&contact_id], |r| r.get(0))?;
                        handles.insert(contact_id, h.clone());
                        h
                    }
                };
                expired.push(Expired {
                    id,
                    contact,
                    secret,
                });
            }
        }
        tx.commit()?;
        if !expired.is_empty() {
            self.truncate_wal()?;
        }
        Ok(expired)
    }

    /// Gives the WAL room so that commits do not grow it (see `db::reserve_wal`); for a
    /// running client, which commits with every message.
    pub fn reserve_wal(&self) -> Result<()> {
        Ok(crate::db::reserve_wal(&self.conn)?)
    }

    /// Copies the WAL into the database and empties it (see `db::truncate_wal`).
    pub fn truncate_wal(&self) -> Result<()> {
        Ok(crate::db::truncate_wal(&self.conn)?)
    }

    /// The newest `limit` messages of a thread, oldest first.
    pub fn history(&self, contact_id: &str, secret: bool, limit: usize) -> Result<Vec<Message>> {
        self.page(contact_id, secret, None, limit)
    }

    /// Up to `limit` messages of a thread older than `before` (a `seq`; None: the newest),
    /// oldest first. Served from the thread index, so its cost does not grow with history.
    pub fn page(
        &self,
        contact_id: &str,
        secret: bool,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let mut page = self.messages_where(
            PAGE.0,
            PAGE.1,
            params![contact_id, secret, before.unwrap_or(i64::MAX), limit as i64],
        )?;
        page.reverse();
        Ok(page)
    }

    /// Every contact not blocked, with its threads' unread counts and timers, by handle.
    pub fn summaries(&self) -> Result<Vec<ContactSummary>> {
        let mut stmt = self.conn.prepare(
            "SELECT c.handle,
                (SELECT count(*) FROM messages m WHERE m.contact = c.account_id AND m.secret = 0
                    AND m.shown = 0),
                (SELECT count(*) FROM messages m WHERE m.contact = c.account_id AND m.secret = 1
                    AND m.shown = 0),
                EXISTS (SELECT 1 FROM messages m WHERE m.contact = c.account_id AND m.secret = 1),
                (SELECT timer_secs FROM threads t WHERE t.contact = c.account_id AND t.secret = 0),
                (SELECT timer_secs FROM threads t WHERE t.contact = c.account_id AND t.secret = 1),
                c.verified, c.key_changed
             FROM contacts c WHERE c.blocked = 0 ORDER BY c.handle",
        )?;
        let rows = stmt.query_map([], |r| {
            let handle: String = r.get(0)?;
            Ok(ContactSummary {
                group: crate::client::group_handle(&handle),
                handle,
                unread: [r.get(1)?, r.get(2)?],
                has_secret: r.get(3)?,
                timers: [r.get(4)?, r.get(5)?],
                verified: r.get(6)?,
                key_changed: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// A thread's disappearing timer in seconds; None: off.
    pub fn thread_timer(&self, contact_id: &str, secret: bool) -> Result<Option<u32>> {
        Ok(self
            .conn
            .prepare_cached("SELECT timer_secs FROM threads WHERE contact = ?1 AND secret = ?2")
            .and_then(|mut st| st.query_row(params![contact_id, secret], |r| r.get(0)))
            .optional()?
            .flatten())
    }

    /// Sets a thread's disappearing timer (seconds; None: off).
    pub fn set_timer(&self, contact_id: &str, secret: bool, timer: Option<u32>) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE threads SET timer_secs = ?3 WHERE contact = ?1 AND secret = ?2")
            .and_then(|mut st| st.execute(params![contact_id, secret, timer]))?;
        Ok(())
    }

    fn messages_where(
        &self,
        index: Option<&str>,
        cond: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<Message>> {
        let mut stmt = self.conn.prepare_cached(&messages_sql(index, cond))?;
        let rows = stmt.query_map(args, message_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

/// The columns `message_row` reads, first in a query over `messages m JOIN contacts c`.
fn message_columns() -> String {
    format!(
        "m.id, c.handle, m.secret, m.outgoing, m.text, m.sent_at, m.state, m.seq, m.kind,
         m.timer_secs, m.expires_at, m.reply_id, m.reply_excerpt, m.edited, m.deleted, {}, {},
         coalesce((SELECT handle FROM contacts WHERE account_id = m.author), m.author)",
        rich::REACTIONS_COLUMN,
        attachments::ATTACHMENT_COLUMN
    )
}

/// How many columns `message_columns` names: a query's own columns come after them.
const MESSAGE_COLUMN_COUNT: usize = 18;

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let reply_excerpt: Option<String> = r.get(12)?;
    Ok(Message {
        id: r.get(0)?,
        contact: r.get(1)?,
        secret: r.get(2)?,
        outgoing: r.get(3)?,
        text: r.get(4)?,
        sent_at: r.get::<_, i64>(5)? as u64,
        state: MessageState::parse(&r.get::<_, String>(6)?),
        seq: r.get(7)?,
        kind: match r.get::<_, String>(8)?.as_str() {
            "timer" => MessageKind::Timer,
            "key_change" => MessageKind::KeyChange,
            "unsupported" => MessageKind::Unsupported,
            "group" => MessageKind::Group,
            _ => MessageKind::Text,
        },
        timer: r.get(9)?,
        expires_at: r.get::<_, Option<i64>>(10)?.map(|e| e as u64),
        reply: r.get::<_, Option<String>>(11)?.map(|id| Quote {
            id,
            gone: reply_excerpt.is_none(),
            excerpt: reply_excerpt.unwrap_or_default(),
        }),
        edited: r.get(13)?,
        deleted: r.get(14)?,
        attachment: attachments::attachment(r.get::<_, Option<String>>(16)?.as_deref()),
        author: r.get(17)?,
        reactions: rich::reactions(r.get::<_, Option<String>>(15)?.as_deref()),
    })
}

/// The query for messages matching `cond`, through `index` if given.
fn messages_sql(index: Option<&str>, cond: &str) -> String {
    let hint = index.map_or(String::new(), |i| format!("INDEXED BY {i}"));
    let columns = message_columns();
    format!(
        "SELECT {columns}
         FROM messages m {hint} JOIN contacts c ON c.account_id = m.contact WHERE {cond}"
    )
}

fn contact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Contact> {
    Ok(Contact {
        account_id: r.get(0)?,
        handle: r.get(1)?,
        identity_key: r.get(2)?,
        access_token: r.get(3)?,
        verified: r.get(4)?,
        key_changed: r.get(5)?,
        blocked: r.get(6)?,
    })
}

pub(crate) fn get(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT value FROM profile WHERE key = ?1")
        .and_then(|mut st| st.query_row([key], |r| r.get(0)))
        .optional()?)
}

pub(crate) fn set(conn: &Connection, key: &str, value: &[u8]) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO profile (key, value) VALUES (?1, ?2)")
        .and_then(|mut st| st.execute(params![key, value]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_holds_the_write_lock_from_its_start_so_no_other_connection_commits_within_it() {
        // Otherwise a sweep committing between a burst's first read and its first write makes
        // that write fail with "database is locked".
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let other = Connection::open(tmp.path().join("sotto.db")).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let try_write = || other.execute_batch("BEGIN IMMEDIATE; ROLLBACK");

        let burst = store.begin_burst().unwrap();
        let work = store.atomic().unwrap();
        assert!(
            try_write().is_err(),
            "another connection wrote within the burst"
        );
        store.set("k", b"v").unwrap();
        work.commit().unwrap();
        assert!(try_write().is_err(), "the burst let go of the lock early");
        store.end_burst(burst).unwrap();
        try_write().unwrap();

        let work = store.atomic().unwrap();
        assert!(
            try_write().is_err(),
            "another connection wrote within the work"
        );
        drop(work);
        try_write().unwrap();
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    /// SQLite's plan for `sql`, one line per step.
    fn plan(store: &Store, sql: &str) -> Vec<String> {
        let mut st = store
            .conn()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let unbound = vec![rusqlite::types::Null; st.parameter_count()];
        st.query_map(rusqlite::params_from_iter(unbound), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    /// These run once per message sent or read; a scan would cost time in proportion to
    /// the whole history.
    #[test]
    fn statements_on_the_message_path_look_messages_up_by_id() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        for sql in [SET_STATE, MARK_SHOWN] {
            let plan = plan(&store, sql);
            assert!(
                plan.iter()
                    .any(|step| step.starts_with("SEARCH messages USING INDEX messages_by_id")),
                "{sql}: {plan:?}"
            );
        }
    }

    /// What the manager reads at start and the TUI on every page: neither may walk history.
    #[test]
    fn unshown_messages_and_thread_pages_are_read_through_indexes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        for ((index, cond), wanted) in [
            // A scan of the partial index: it holds the unshown rows only.
            (UNSHOWN, "SCAN m USING INDEX messages_unread"),
            (PAGE, "SEARCH m USING INDEX messages_by_thread"),
        ] {
            let sql = messages_sql(index, cond);
            let plan = plan(&store, &sql);
            assert!(
                plan.iter().any(|step| step.starts_with(wanted)),
                "{sql}: {plan:?}"
            );
        }
    }
}
