//! The envelope queue's write path in SQLite: the queue writer's own connection to
//! `relay.db`, with the quota totals and the next id kept in memory (this relay is the only
//! writer of its file).
//!
//! Owns the batch's transaction (one per `stage`/`commit`), the group commit's durability
//! trade-offs (no sync for deletions alone, the WAL truncated after an expiring envelope's
//! deletion) and the ids. Must not serve reads (the directory's connection does, and a sync
//! in progress here never holds it up) nor decide refusals (`rules`, `quota`).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::super::rules;
use super::super::{NewEnvelope, Origin, Outcome, Queue, Result, StoreError, Stored};
use super::{Keys, connect, recipient_keys};
use crate::relay::quota::{Entry, QueueLimits, QueueUsage};

/// The queue writer's connection, and the state it keeps between batches.
pub struct SqliteQueue {
    conn: Connection,
    /// The first id not given out yet.
    next_id: u64,
    usage: QueueUsage,
    /// The open batch, between `stage` and `commit` or `rollback`.
    batch: Option<Batch>,
}

/// What `commit` must know of the batch it ends.
struct Batch {
    /// It queued nothing: it was begun with `synchronous = NORMAL` (see `db::without_sync`),
    /// which `commit` and `rollback` put back to FULL.
    unsynced: bool,
    /// It deleted an envelope with an expiry (a disappearing message's).
    expiring: bool,
}

impl SqliteQueue {
    /// Opens the queue of the relay whose data directory is `dir` on a connection of its own,
    /// gives the WAL room so that the queue's commits do not grow it (see
    /// `db::reserve_wal`), and counts the queue's totals, held to `limits` from now on.
    pub fn open(dir: &Path, limits: QueueLimits) -> Result<Self> {
        let conn = connect(dir)?;
        crate::db::reserve_wal(&conn)?;
        let next_id = last_envelope_id(&conn)? + 1;
        let usage = queue_usage(&conn, limits)?;
        Ok(SqliteQueue {
            conn,
            next_id,
            usage,
            batch: None,
        })
    }

    /// Begins the batch's transaction and applies it (see `Queue::stage`).
    fn apply(
        &mut self,
        new: &[Vec<NewEnvelope>],
        remove: &[(String, u64)],
    ) -> rusqlite::Result<(Vec<Outcome>, bool)> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut outcomes = Vec::with_capacity(new.len());
        for unit in new {
            outcomes.push(self.queue_unit(unit)?);
        }
        let mut expiring = false;
        let mut delete = self.conn.prepare_cached(
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
                self.usage.remove(&Entry {
                    recipient,
                    sender: if sealed { None } else { sender.as_deref() },
                    bytes: bytes as u64,
                });
            }
        }
        Ok((outcomes, expiring))
    }

    /// Queues every envelope of `unit` or none (`rules::queue_unit`): a fan-out's copies are
    /// applied inside a savepoint of the batch's transaction, rolled back, with the totals
    /// and the next id, when any copy is refused.
    fn queue_unit(&mut self, unit: &[NewEnvelope]) -> rusqlite::Result<Outcome> {
        let fan_out = unit.len() > 1;
        if fan_out {
            self.conn.execute_batch("SAVEPOINT fan_out")?;
        }
        let first_id = self.next_id;
        let (outcome, take_back) = rules::queue_unit(unit, |e| self.queue_one(e))?;
        if fan_out {
            self.conn.execute_batch(match outcome {
                Outcome::Queued(_) => "RELEASE fan_out",
                Outcome::Refused(_) => "ROLLBACK TO fan_out; RELEASE fan_out",
            })?;
        }
        if !take_back.is_empty() {
            // Nothing of the unit was handed over (only queued units are), so its ids are
            // free.
            self.next_id = first_id;
            for e in take_back {
                self.usage.remove(&e.entry());
            }
        }
        Ok(outcome)
    }

    /// Queues one envelope under the next id, or says why it must not be queued.
    fn queue_one(&mut self, e: &NewEnvelope) -> rusqlite::Result<std::result::Result<u64, Stored>> {
        // A sealed envelope's checks need its recipient's account; a normal one's only that
        // the account exists, which the insert itself checks (one statement, no extra trip).
        if let Origin::Sealed { .. } = e.origin {
            let found = recipient_keys(&self.conn, &e.recipient)?;
            if let Some(refused) = rules::refusal(found.as_ref().map(Keys::view), &e.origin) {
                return Ok(Err(refused));
            }
        }
        let entry = e.entry();
        if let Some(quota) = self.usage.check(&entry) {
            // A missing account is the answer before any quota, as `rules::refusal` has it.
            let missing = matches!(e.origin, Origin::Account { .. })
                && recipient_keys(&self.conn, &e.recipient)?.is_none();
            return Ok(Err(if missing {
                Stored::NoRecipient
            } else {
                Stored::OverQuota(quota)
            }));
        }
        let queued = self
            .conn
            .prepare_cached(
                "INSERT INTO queue (recipient, sender, sealed, payload, received_at, expires_at, id)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
                 WHERE EXISTS (SELECT 1 FROM accounts WHERE account_id = ?1)",
            )?
            .execute(params![
                e.recipient,
                entry.sender,
                matches!(e.origin, Origin::Sealed { .. }),
                e.payload,
                e.received_at as i64,
                e.expires_at.map(|x| x as i64),
                self.next_id as i64
            ])?;
        if queued != 1 {
            return Ok(Err(Stored::NoRecipient));
        }
        self.usage.add(&entry);
        self.next_id += 1;
        Ok(Ok(self.next_id - 1))
    }

    /// Puts the connection's durability back to FULL after a batch begun without it.
    fn end(&mut self, batch: &Batch) -> rusqlite::Result<()> {
        if batch.unsynced {
            self.conn.pragma_update(None, "synchronous", "FULL")?;
        }
        Ok(())
    }
}

impl Queue for SqliteQueue {
    /// Deletions alone do not wait for the disk (`db::without_sync`): if a power cut loses
    /// one, the envelope is delivered again and its recipient drops it as a duplicate;
    /// nobody was promised anything.
    fn stage(
        &mut self,
        new: &[Vec<NewEnvelope>],
        remove: &[(String, u64)],
    ) -> Result<Vec<Outcome>> {
        if self.batch.is_some() {
            return Err(StoreError::BatchOpen);
        }
        let unsynced = new.is_empty();
        if unsynced {
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        // Recorded before anything can fail, so that `rollback` knows what to undo.
        self.batch = Some(Batch {
            unsynced,
            expiring: false,
        });
        let (outcomes, expiring) = self.apply(new, remove)?;
        if let Some(b) = &mut self.batch {
            b.expiring = expiring;
        }
        Ok(outcomes)
    }

    /// With envelopes queued, returns only after the commit has reached the disk: one sync
    /// for the whole batch (group commit). Once an envelope with an expiry (a disappearing
    /// message's) is deleted, the WAL is truncated too, so its text does not linger there.
    fn commit(&mut self) -> Result<()> {
        let Some(batch) = self.batch.take() else {
            return Err(StoreError::NoBatch);
        };
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            // Still open, or rolled back by SQLite: `rollback` ends it either way.
            self.batch = Some(batch);
            return Err(e.into());
        }
        self.end(&batch)?;
        if batch.expiring {
            crate::db::truncate_wal(&self.conn)?;
        }
        Ok(())
    }

    fn rollback(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "the queue's batch could not be rolled back");
        }
        if let Err(e) = self.end(&batch) {
            tracing::error!(error = %e, "the queue's connection could not be made durable again");
        }
        // The totals counted what the batch would have changed: count again.
        match queue_usage(&self.conn, self.usage.limits()) {
            Ok(fresh) => self.usage = fresh,
            Err(e) => tracing::error!(error = %e, "the queue's totals could not be counted"),
        }
    }
}

/// The highest envelope id the queue has ever used, committed: ids given out after it are
/// new.
fn last_envelope_id(conn: &Connection) -> Result<u64> {
    let id: i64 = conn.query_row(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'queue'), 0),
                    coalesce((SELECT max(id) FROM queue), 0))",
        [],
        |r| r.get(0),
    )?;
    Ok(id as u64)
}

/// The queue's totals per recipient, sending account and sealed recipient, counted from the
/// queue.
fn queue_usage(conn: &Connection, limits: QueueLimits) -> Result<QueueUsage> {
    let mut usage = QueueUsage::new(limits);
    let mut st = conn.prepare(
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
