//! The blobs' bytes in PostgreSQL (`store::BlobBytes`), so that every relay sharing the
//! database serves every blob, whichever relay it was uploaded through: each chunk a row of
//! `blob_chunks`, keyed by its blob and offset, on a connection of its own.
//!
//! Owns the statements over `blob_chunks`. Must not touch the blobs' rows nor decide what a
//! request may do (`relay::blobs` does, through the directory). A chunk cannot outlive its
//! row: the table's foreign key deletes a blob's chunks in the transaction that deletes its
//! row (the last recipient's fetch, the sweep), and refuses a chunk whose row is gone.

use std::collections::HashMap;
use std::sync::Mutex;

use super::super::{BlobBytes, Result, StoreError};
use super::{Conn, connect};
use crate::wire::MAX_BLOB_CHUNK;

/// The most bytes one row holds: a write longer than a chunk of the wire is split, so that a
/// read finds every row that reaches its offset among the rows starting less than this
/// before it.
const PIECE: usize = MAX_BLOB_CHUNK as usize;

/// The relay's connection for the blobs' bytes. One at a time: a put or a get waits for the
/// one before it on this relay, not for the directory's or the queue's statements.
pub struct PgBlobBytes {
    client: Mutex<Conn>,
}

impl PgBlobBytes {
    /// Connects to the database `url` names (see `connect`).
    pub fn open(url: &str) -> Result<Self> {
        Ok(PgBlobBytes {
            client: Mutex::new(connect(url)?),
        })
    }

    fn client(&self) -> Result<std::sync::MutexGuard<'_, Conn>> {
        // Every statement is one transaction of its own: a poisoned lock leaves nothing half
        // done.
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        client.revive()?;
        Ok(client)
    }
}

fn as_i64(n: u64) -> Result<i64> {
    i64::try_from(n)
        .map_err(|_| StoreError::Backend(format!("blob offset {n} is beyond what is stored")))
}

impl BlobBytes for PgBlobBytes {
    /// Nothing to make: a blob's chunks are rows written as they come.
    fn create(&self, _id: &str) -> Result<()> {
        Ok(())
    }

    fn write_at(&self, id: &str, offset: u64, data: &[u8]) -> Result<()> {
        let mut offsets = Vec::new();
        let mut pieces: Vec<&[u8]> = Vec::new();
        for (i, piece) in data.chunks(PIECE).enumerate() {
            offsets.push(as_i64(offset + (i * PIECE) as u64)?);
            pieces.push(piece);
        }
        if pieces.is_empty() {
            return Ok(());
        }
        // One statement, one transaction, committed (and so durable, PostgreSQL's
        // synchronous_commit being on) when it returns.
        self.client()?.execute(
            "INSERT INTO blob_chunks (blob_id, off, data)
             SELECT $1::text, o, d FROM unnest($2::bigint[], $3::bytea[]) AS c(o, d)
             ON CONFLICT (blob_id, off) DO UPDATE SET data = EXCLUDED.data",
            &[&id, &offsets, &pieces],
        )?;
        Ok(())
    }

    fn read_at(&self, id: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64);
        let rows = self.client()?.query(
            "SELECT off, data FROM blob_chunks
             WHERE blob_id = $1::text AND off < $3::bigint AND off > $2::bigint - $4::bigint
             ORDER BY off",
            &[&id, &as_i64(offset)?, &as_i64(end)?, &(PIECE as i64)],
        )?;
        let mut out = vec![0u8; len];
        // How far from `offset` the bytes read so far reach without a hole.
        let mut reach = offset;
        for row in &rows {
            let off = super::u64_of(row.get(0));
            let data: &[u8] = row.get(1);
            if off > reach {
                return Err(StoreError::Backend(format!(
                    "blob {id} has no bytes from offset {reach} to {off}"
                )));
            }
            // Rows in offset order, a later one over an earlier: a chunk written again at its
            // offset replaced that row, and the bytes after it are the later rows'.
            let from = off.max(offset);
            let to = (off + data.len() as u64).min(end);
            if to > from {
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - off) as usize..(to - off) as usize]);
                reach = reach.max(to);
            }
        }
        out.truncate((reach - offset) as usize);
        Ok(out)
    }

    fn remove(&self, id: &str) -> Result<()> {
        self.client()?
            .execute("DELETE FROM blob_chunks WHERE blob_id = $1", &[&id])?;
        Ok(())
    }

    /// Touches nothing and drops no row. Rows and chunks are in one database, so a crash
    /// leaves no chunk without its row (the foreign key) and no row has lost its bytes; a row
    /// without all its bytes yet is an upload in progress, perhaps through another relay
    /// right now. Chunks written but not recorded (past the row's `stored`) are left for the
    /// resumed upload to write over; nothing past `stored` is ever read.
    fn reconcile(&self, _rows: &HashMap<String, u64>) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}
