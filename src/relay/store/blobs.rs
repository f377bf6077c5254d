//! The blob store's rows: who owns each blob, how much of it is durably on disk, how many
//! recipients have yet to fetch it and when it expires.
//!
//! Owns the SQL over the `blobs` table. Must not touch the blob files (`relay::blob_files`
//! does) nor decide what a request may do (`relay::blobs` does): it records and answers.

use rusqlite::{OptionalExtension, params};

use super::{RelayStore, Result};

/// One blob as the relay's database knows it.
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

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlobRow> {
    Ok(BlobRow {
        id: r.get(0)?,
        owner: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        stored: r.get::<_, i64>(3)? as u64,
        recipients_left: r.get::<_, i64>(4)? as u32,
        expires_at: r.get::<_, Option<i64>>(5)?.map(|x| x as u64),
        created_at: r.get::<_, i64>(6)? as u64,
    })
}

const COLUMNS: &str = "id, owner, size, stored, recipients_left, expires_at, created_at";

impl RelayStore {
    /// Records a new blob (nothing stored yet) unless its owner is over `max_blobs` blobs or
    /// `max_bytes` declared bytes with it; the check and the insert are one transaction.
    pub fn create_blob(
        &mut self,
        blob: &BlobRow,
        max_blobs: u64,
        max_bytes: u64,
    ) -> Result<Created> {
        let tx = self.conn.transaction()?;
        let (count, bytes): (i64, i64) = tx.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM blobs WHERE owner = ?1",
            [&blob.owner],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (count, bytes) = (count as u64, bytes as u64);
        if count >= max_blobs {
            return Ok(Created::TooMany(count));
        }
        if bytes.saturating_add(blob.size) > max_bytes {
            return Ok(Created::TooManyBytes(bytes));
        }
        tx.execute(
            "INSERT INTO blobs (id, owner, size, stored, recipients_left, expires_at, created_at)
             VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)",
            params![
                blob.id,
                blob.owner,
                blob.size as i64,
                blob.recipients_left as i64,
                blob.expires_at.map(|x| x as i64),
                blob.created_at as i64,
            ],
        )?;
        tx.commit()?;
        Ok(Created::Yes)
    }

    pub fn blob(&self, id: &str) -> Result<Option<BlobRow>> {
        Ok(self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM blobs WHERE id = ?1"))
            .and_then(|mut st| st.query_row([id], row).optional())?)
    }

    /// Every blob's id and stored length, for matching the files to the rows at start.
    pub fn blob_lengths(&self) -> Result<Vec<(String, u64)>> {
        let mut st = self.conn.prepare("SELECT id, stored FROM blobs")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that the blob now holds `to` bytes, if it held `from`: false if it did not (a
    /// concurrent put got there first, or the blob is gone).
    pub fn record_stored(&self, id: &str, from: u64, to: u64) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached("UPDATE blobs SET stored = ?3 WHERE id = ?1 AND stored = ?2")
            .and_then(|mut st| st.execute(params![id, from as i64, to as i64]))?;
        Ok(n == 1)
    }

    /// Counts one recipient's fetch of a blob; the last one deletes its row.
    pub fn blob_fetched(&mut self, id: &str) -> Result<Fetched> {
        let tx = self.conn.transaction()?;
        let left: Option<i64> = tx
            .query_row(
                "SELECT recipients_left FROM blobs WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        let outcome = match left {
            None => Fetched::NotFound,
            // Created without a count: only its expiry or retention deletes it.
            Some(0) => Fetched::Counted,
            Some(1) => {
                tx.execute("DELETE FROM blobs WHERE id = ?1", [id])?;
                Fetched::Last
            }
            Some(_) => {
                tx.execute(
                    "UPDATE blobs SET recipients_left = recipients_left - 1 WHERE id = ?1",
                    [id],
                )?;
                Fetched::Counted
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Deletes the row of a blob whose file is gone.
    pub fn delete_blob(&self, id: &str) -> Result<()> {
        self.conn.execute("DELETE FROM blobs WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Deletes the rows of blobs past their `expires_at`, created at or before
    /// `retained_since`, or left incomplete since `abandoned_since` (all Unix ms); returns
    /// their ids, for the caller to remove the files.
    pub fn delete_due_blobs(
        &self,
        now: u64,
        retained_since: u64,
        abandoned_since: u64,
    ) -> Result<Vec<String>> {
        let mut st = self.conn.prepare_cached(
            "DELETE FROM blobs
             WHERE (expires_at IS NOT NULL AND expires_at <= ?1)
                OR created_at <= ?2
                OR (stored < size AND created_at <= ?3)
             RETURNING id",
        )?;
        let ids = st.query_map(
            params![now as i64, retained_since as i64, abandoned_since as i64],
            |r| r.get(0),
        )?;
        Ok(ids.collect::<rusqlite::Result<_>>()?)
    }

    pub fn blob_summary(&self) -> Result<BlobSummary> {
        let (blobs, bytes, incomplete): (i64, i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(stored), 0), coalesce(sum(stored < size), 0)
             FROM blobs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(BlobSummary {
            blobs: blobs as u64,
            bytes: bytes as u64,
            incomplete: incomplete as u64,
        })
    }
}
