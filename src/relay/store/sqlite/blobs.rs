//! The blob store's rows in SQLite: who owns each blob, how much of it is durably on disk, how
//! many recipients have yet to fetch it and when it expires.
//!
//! Owns the SQL over the `blobs` table (`RelayStore`'s blob methods call it). Must not touch
//! the blob files (`relay::blob_files` does) nor decide what a request may do (`relay::blobs`
//! and `store::rules` do): it records and answers.

use rusqlite::{Connection, OptionalExtension, params};

use super::super::rules;
use super::super::{BlobRow, BlobSummary, Created, Fetched, Result};

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

/// Records a new blob (nothing stored yet) unless its owner is over `max_blobs` blobs or
/// `max_bytes` declared bytes with it; the check and the insert are one transaction.
pub(super) fn create(
    conn: &mut Connection,
    blob: &BlobRow,
    max_blobs: u64,
    max_bytes: u64,
) -> Result<Created> {
    let tx = conn.transaction()?;
    let (count, bytes): (i64, i64) = tx.query_row(
        "SELECT count(*), coalesce(sum(size), 0) FROM blobs WHERE owner = ?1",
        [&blob.owner],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let admitted = rules::admit_blob(count as u64, bytes as u64, blob.size, max_blobs, max_bytes);
    if admitted != Created::Yes {
        return Ok(admitted);
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

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<BlobRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM blobs WHERE id = ?1"))
        .and_then(|mut st| st.query_row([id], row).optional())?)
}

/// Every blob's id and stored length, for matching the files to the rows at start.
pub(super) fn lengths(conn: &Connection) -> Result<Vec<(String, u64)>> {
    let mut st = conn.prepare("SELECT id, stored FROM blobs")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records that the blob now holds `to` bytes, if it held `from`: false if it did not (a
/// concurrent put got there first, or the blob is gone).
pub(super) fn record_stored(conn: &Connection, id: &str, from: u64, to: u64) -> Result<bool> {
    let n = conn
        .prepare_cached("UPDATE blobs SET stored = ?3 WHERE id = ?1 AND stored = ?2")
        .and_then(|mut st| st.execute(params![id, from as i64, to as i64]))?;
    Ok(n == 1)
}

/// Counts one recipient's fetch of a blob; the last one deletes its row.
pub(super) fn fetched(conn: &mut Connection, id: &str) -> Result<Fetched> {
    let tx = conn.transaction()?;
    let left: Option<i64> = tx
        .query_row(
            "SELECT recipients_left FROM blobs WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    let outcome = match left.map(|n| rules::after_fetch(n.clamp(0, u32::MAX.into()) as u32)) {
        None => Fetched::NotFound,
        Some(None) => {
            tx.execute("DELETE FROM blobs WHERE id = ?1", [id])?;
            Fetched::Last
        }
        Some(Some(left)) => {
            tx.execute(
                "UPDATE blobs SET recipients_left = ?2 WHERE id = ?1",
                params![id, i64::from(left)],
            )?;
            Fetched::Counted
        }
    };
    tx.commit()?;
    Ok(outcome)
}

/// Deletes the row of a blob whose file is gone.
pub(super) fn delete(conn: &Connection, id: &str) -> Result<()> {
    conn.execute("DELETE FROM blobs WHERE id = ?1", [id])?;
    Ok(())
}

/// Deletes the rows of blobs past their `expires_at`, created at or before
/// `retained_since`, or left incomplete since `abandoned_since` (all Unix ms); returns
/// their ids, for the caller to remove the files.
pub(super) fn delete_due(
    conn: &Connection,
    now: u64,
    retained_since: u64,
    abandoned_since: u64,
) -> Result<Vec<String>> {
    let mut st = conn.prepare_cached(
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

pub(super) fn summary(conn: &Connection) -> Result<BlobSummary> {
    let (blobs, bytes, incomplete): (i64, i64, i64) = conn.query_row(
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
