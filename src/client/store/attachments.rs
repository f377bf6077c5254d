//! The rows of messages' files: where each is on its way, and the key and digest that open
//! and check its encrypted copy in the profile (`attachment::files`).
//!
//! Owns the `attachments` and `attachment_files_gone` tables. The key lives only here, so the
//! row's deletion (with `secure_delete`) shreds the file even where the file system keeps its
//! old blocks. Triggers (see the migration) move a deleted or tombstoned message's file to
//! `attachment_files_gone`, whoever deletes it; the manager then unlinks those files. Must
//! not touch the files themselves.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};
use crate::client::attachment::{Attachment, AttachmentState};

/// The migration that adds the tables (appended to `MIGRATIONS`).
pub(super) const MIGRATION: &str = r#"
-- issue 21 (attachments): a message's file. `seq` is its message's; the file in the profile's
-- attachments/ is named by it (a peer picks message ids, so they never name a file).
CREATE TABLE attachments (
    seq INTEGER PRIMARY KEY,
    -- The relay's blob; NULL until created (ours) .
    blob_id TEXT,
    -- The file's own key and the SHA-256 of its ciphertext; NULL until encrypted (ours).
    key BLOB,
    digest BLOB,
    size INTEGER NOT NULL,
    blob_size INTEGER NOT NULL,
    -- The relay's largest chunk for this blob's upload (ours).
    chunk INTEGER NOT NULL DEFAULT 0,
    name TEXT NOT NULL,
    mime TEXT NOT NULL,
    -- uploading, remote, downloading, ready, failed; `done`: ciphertext bytes moved.
    state TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
-- Files whose rows went: unlinked by the manager, then forgotten.
CREATE TABLE attachment_files_gone (seq INTEGER PRIMARY KEY);
CREATE TRIGGER attachments_message_gone AFTER DELETE ON messages BEGIN
    INSERT OR IGNORE INTO attachment_files_gone SELECT seq FROM attachments WHERE seq = old.seq;
    DELETE FROM attachments WHERE seq = old.seq;
END;
CREATE TRIGGER attachments_message_tombstoned AFTER UPDATE OF deleted ON messages
    WHEN new.deleted = 1 BEGIN
    INSERT OR IGNORE INTO attachment_files_gone SELECT seq FROM attachments WHERE seq = new.seq;
    DELETE FROM attachments WHERE seq = new.seq;
END;
"#;

/// A message's file as `message_row` reads it: one JSON array, so the message queries keep
/// one column for it.
pub(super) const ATTACHMENT_COLUMN: &str = "(SELECT json_array(a.name, a.mime, a.size, a.state,
      a.done, a.error) FROM attachments a WHERE a.seq = m.seq)";

/// `ATTACHMENT_COLUMN`'s value as the screen knows it.
pub(super) fn attachment(column: Option<&str>) -> Option<Attachment> {
    type Row = (String, String, u64, String, u64, Option<String>);
    let (name, mime, size, state, done, error): Row = serde_json::from_str(column?).ok()?;
    Some(Attachment {
        name,
        mime,
        size,
        state: parse_state(&state, done, error),
    })
}

fn parse_state(state: &str, done: u64, error: Option<String>) -> AttachmentState {
    match state {
        "uploading" => AttachmentState::Uploading { done },
        "remote" => AttachmentState::Remote,
        "downloading" => AttachmentState::Downloading { done },
        "ready" => AttachmentState::Ready,
        _ => AttachmentState::Failed {
            error: error.unwrap_or_else(|| "the transfer failed".into()),
        },
    }
}

fn state_columns(s: &AttachmentState) -> (&'static str, u64, Option<&str>) {
    match s {
        AttachmentState::Uploading { done } => ("uploading", *done, None),
        AttachmentState::Remote => ("remote", 0, None),
        AttachmentState::Downloading { done } => ("downloading", *done, None),
        AttachmentState::Ready => ("ready", 0, None),
        AttachmentState::Failed { error } => ("failed", 0, Some(error)),
    }
}

/// Everything the manager knows of a message's file.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Its message's `seq`: names the file in the profile.
    pub seq: i64,
    /// Its message's id (the sender's).
    pub id: String,
    /// The contact's handle.
    pub contact: String,
    pub secret: bool,
    pub outgoing: bool,
    /// Unix ms when its message was sent, and the timer in force: the blob's expiry.
    pub sent_at: u64,
    pub timer: Option<u32>,
    pub blob_id: Option<String>,
    pub key: Option<Vec<u8>>,
    pub digest: Option<Vec<u8>>,
    pub size: u64,
    pub blob_size: u64,
    pub chunk: u32,
    pub attachment: Attachment,
}

impl std::fmt::Debug for StoredFile {
    // The key must never reach a log through a Debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredFile")
            .field("seq", &self.seq)
            .field("state", &self.attachment.state)
            .finish_non_exhaustive()
    }
}

impl StoredFile {
    /// When the relay may drop the blob: when its message disappears for the sender.
    pub fn blob_expires_at(&self) -> Option<u64> {
        self.timer.map(|t| self.sent_at + u64::from(t) * 1000)
    }
}

const FILE_COLUMNS: &str = "a.seq, m.id, c.handle, m.secret, m.outgoing, m.sent_at, m.timer_secs,
     a.blob_id, a.key, a.digest, a.size, a.blob_size, a.chunk, a.name, a.mime, a.state, a.done,
     a.error";

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredFile> {
    let size = r.get::<_, i64>(10)? as u64;
    let state = parse_state(
        &r.get::<_, String>(15)?,
        r.get::<_, i64>(16)? as u64,
        r.get(17)?,
    );
    Ok(StoredFile {
        seq: r.get(0)?,
        id: r.get(1)?,
        contact: r.get(2)?,
        secret: r.get(3)?,
        outgoing: r.get(4)?,
        sent_at: r.get::<_, i64>(5)? as u64,
        timer: r.get(6)?,
        blob_id: r.get(7)?,
        key: r.get(8)?,
        digest: r.get(9)?,
        size,
        blob_size: r.get::<_, i64>(11)? as u64,
        chunk: r.get(12)?,
        attachment: Attachment {
            name: r.get(13)?,
            mime: r.get(14)?,
            size,
            state,
        },
    })
}

impl Store {
    /// Records the file of the message `seq`: ours before it is encrypted (no key, blob or
    /// digest yet), or one announced to us (everything known but the file here).
    #[allow(clippy::too_many_arguments)]
    pub fn insert_attachment(
        &self,
        seq: i64,
        attachment: &Attachment,
        blob_id: Option<&str>,
        key: Option<&[u8]>,
        digest: Option<&[u8]>,
        blob_size: u64,
    ) -> Result<()> {
        let (state, done, error) = state_columns(&attachment.state);
        self.conn
            .prepare_cached(
                "INSERT INTO attachments (seq, blob_id, key, digest, size, blob_size, name, mime,
                     state, done, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                seq,
                blob_id,
                key,
                digest,
                attachment.size as i64,
                blob_size as i64,
                attachment.name,
                attachment.mime,
                state,
                done as i64,
                error
            ])?;
        Ok(())
    }

    /// The file of message `id` (ours or a peer's; ours first if both picked the id).
    pub fn attachment_by_id(&self, id: &str) -> Result<Option<StoredFile>> {
        self.file_where("m.id = ?1 ORDER BY m.outgoing DESC LIMIT 1", [id])
    }

    pub fn attachment_by_seq(&self, seq: i64) -> Result<Option<StoredFile>> {
        self.file_where("a.seq = ?1", [seq])
    }

    /// Files on their way (up or down) when the session ended: resumed at start.
    pub fn pending_transfers(&self) -> Result<Vec<StoredFile>> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM attachments a JOIN messages m ON m.seq = a.seq
             JOIN contacts c ON c.account_id = m.contact
             WHERE a.state IN ('uploading', 'downloading') ORDER BY a.seq"
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map([], file_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn file_where(&self, cond: &str, args: impl rusqlite::Params) -> Result<Option<StoredFile>> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM attachments a JOIN messages m ON m.seq = a.seq
             JOIN contacts c ON c.account_id = m.contact WHERE {cond}"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(args, file_row)
            .optional()?)
    }

    /// Our file is encrypted: its key, the digest of its ciphertext and that ciphertext's size.
    pub fn set_attachment_sealed(
        &self,
        seq: i64,
        key: &[u8],
        digest: &[u8],
        blob_size: u64,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE attachments SET key = ?2, digest = ?3, blob_size = ?4 WHERE seq = ?1",
            params![seq, key, digest, blob_size as i64],
        )?;
        Ok(())
    }

    /// The relay reserved our file's blob.
    pub fn set_attachment_blob(&self, seq: i64, blob_id: &str, chunk: u32) -> Result<()> {
        self.conn.execute(
            "UPDATE attachments SET blob_id = ?2, chunk = ?3 WHERE seq = ?1",
            params![seq, blob_id, chunk],
        )?;
        Ok(())
    }

    /// Records where a file is; returns it as the screen knows it, or None if its message
    /// has gone meanwhile.
    pub fn set_attachment_state(
        &self,
        seq: i64,
        state: &AttachmentState,
    ) -> Result<Option<Attachment>> {
        let (s, done, error) = state_columns(state);
        let n = self
            .conn
            .prepare_cached(
                "UPDATE attachments SET state = ?2, done = ?3, error = ?4 WHERE seq = ?1",
            )?
            .execute(params![seq, s, done as i64, error])?;
        if n == 0 {
            return Ok(None);
        }
        Ok(self.attachment_by_seq(seq)?.map(|f| f.attachment))
    }

    /// The files whose messages went (see the triggers), to unlink.
    pub fn gone_files(&self) -> Result<Vec<i64>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT seq FROM attachment_files_gone")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// These files are unlinked.
    pub fn forget_gone_files(&self, seqs: &[i64]) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached("DELETE FROM attachment_files_gone WHERE seq = ?1")?;
        for s in seqs {
            st.execute([s])?;
        }
        Ok(())
    }
}
