//! The envelope queue's write path in PostgreSQL, safe with other relays writing the same
//! queue: each batch is one transaction that first takes an advisory lock on every account
//! whose mail or quota totals it touches, in ascending key order, so that two relays' batches
//! never deadlock and, for any one recipient, envelopes are given their ids (from the
//! `queue.id` sequence) and committed in the same order. The quota totals are rows of
//! `queue_usage`, changed in the same transaction as the envelopes they count. The batch
//! names its recipients to the other relays with `NOTIFY` (see `listen`), which PostgreSQL
//! delivers only once the transaction has committed.
//!
//! Owns the batch's transaction and the statements over `queue` and `queue_usage`. Must not
//! serve reads (the directory's connection does) nor decide refusals (`rules`, `quota`).

use postgres::{Client, Statement};

use super::super::rules;
use super::super::{NewEnvelope, Origin, Outcome, Queue, Result, StoreError, Stored};
use super::listen::{notify_all_sql, word};
use super::{Conn, connect, lock_all, recipient_view, u64_of};
use crate::relay::quota::{self, QueueLimits, Usage};

/// `queue_usage.kind` of each total.
const RECIPIENT: i32 = 0;
const SENDER: i32 = 1;
const SEALED: i32 = 2;

/// The queue writer's connection to the shared database, and its prepared statements.
pub struct PgQueue {
    client: Conn,
    limits: QueueLimits,
    /// A batch is open: `stage` began its transaction and neither `commit` nor `rollback`
    /// has ended it.
    open: bool,
    statements: Statements,
    /// This relay's instance, in its words (see `listen::word`).
    instance: u64,
}

/// The queue's statements, prepared on its connection (again after a reconnect).
struct Statements {
    look_up: Statement,
    insert: Statement,
    remove: Statement,
    /// Tells the other relays (`listen`) whose mail this batch queued; PostgreSQL sends the
    /// words only if the transaction commits.
    notify: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Statements> {
        // The recipient's account (for the refusal rules) and the two totals the envelope
        // counts under, in one round trip.
        let look_up = client.prepare(&format!(
            "SELECT a.access_token, a.identity_key,
                    coalesce(r.envelopes, 0), coalesce(r.bytes, 0),
                    coalesce(o.envelopes, 0), coalesce(o.bytes, 0)
             FROM (SELECT 1) AS one
             LEFT JOIN accounts a ON a.account_id = $1::text
             LEFT JOIN queue_usage r ON r.kind = {RECIPIENT} AND r.key = $1::text
             LEFT JOIN queue_usage o ON o.kind = $2::integer AND o.key = $3::text"
        ))?;
        let insert = client.prepare(&format!(
            "WITH q AS (
                 INSERT INTO queue (recipient, sender, sealed, payload, received_at, expires_at)
                 VALUES ($1::text, $2::text, $3::boolean, $4::bytea, $5::bigint, $6::bigint)
                 RETURNING id),
             u AS (
                 INSERT INTO queue_usage (kind, key, envelopes, bytes)
                 VALUES ({RECIPIENT}, $1::text, 1, $7::bigint),
                        ($8::integer, $9::text, 1, $7::bigint)
                 ON CONFLICT (kind, key) DO UPDATE
                 SET envelopes = queue_usage.envelopes + 1,
                     bytes = queue_usage.bytes + EXCLUDED.bytes)
             SELECT id FROM q"
        ))?;
        // Every deletion of the batch in one statement, the totals they leave with them.
        let remove = client.prepare(&format!(
            "WITH gone AS (
                 DELETE FROM queue q USING unnest($1::bigint[], $2::text[]) AS r(id, recipient)
                 WHERE q.id = r.id AND q.recipient = r.recipient
                 RETURNING q.recipient, q.sender, q.sealed, octet_length(q.payload)::bigint AS bytes),
             parts AS (
                 SELECT {RECIPIENT} AS kind, recipient AS key, bytes FROM gone
                 UNION ALL
                 SELECT CASE WHEN sealed THEN {SEALED} ELSE {SENDER} END,
                        CASE WHEN sealed THEN recipient ELSE sender END, bytes
                 FROM gone),
             totals AS (
                 SELECT kind, key, count(*) AS envelopes, sum(bytes)::bigint AS bytes
                 FROM parts GROUP BY kind, key)
             UPDATE queue_usage u
             SET envelopes = u.envelopes - t.envelopes, bytes = u.bytes - t.bytes
             FROM totals t WHERE u.kind = t.kind AND u.key = t.key"
        ))?;
        let notify = client.prepare(&notify_all_sql())?;
        Ok(Statements {
            look_up,
            insert,
            remove,
            notify,
        })
    }
}

impl PgQueue {
    /// Connects to the database `url` names, holding new envelopes to `limits`; its commits
    /// are announced as relay `instance`'s.
    pub fn open(url: &str, limits: QueueLimits, instance: u64) -> Result<Self> {
        let mut client = connect(url)?;
        let statements = Statements::prepare(&mut client)?;
        Ok(PgQueue {
            client,
            limits,
            open: false,
            statements,
            instance,
        })
    }

    /// Applies the batch inside the transaction `stage` began.
    fn apply(
        &mut self,
        new: &[Vec<NewEnvelope>],
        remove: &[(String, u64)],
    ) -> Result<Vec<Outcome>> {
        self.lock(new, remove)?;
        let mut outcomes = Vec::with_capacity(new.len());
        let mut recipients: Vec<&str> = Vec::new();
        for unit in new {
            let outcome = self.queue_unit(unit)?;
            if matches!(outcome, Outcome::Queued(_)) {
                recipients.extend(unit.iter().map(|e| e.recipient.as_str()));
            }
            outcomes.push(outcome);
        }
        if !recipients.is_empty() {
            recipients.sort_unstable();
            recipients.dedup();
            let words: Vec<String> = recipients.iter().map(|r| word(self.instance, r)).collect();
            self.client.query_one(&self.statements.notify, &[&words])?;
        }
        if !remove.is_empty() {
            let ids: Vec<i64> = remove.iter().map(|(_, id)| *id as i64).collect();
            let recipients: Vec<&str> = remove.iter().map(|(r, _)| r.as_str()).collect();
            self.client
                .execute(&self.statements.remove, &[&ids, &recipients])?;
        }
        Ok(outcomes)
    }

    /// Locks every account whose totals the batch may change: the recipients and sending
    /// accounts of its new envelopes, and the recipients and senders of the envelopes it
    /// deletes (looked up first: an envelope's sender never changes).
    fn lock(&mut self, new: &[Vec<NewEnvelope>], remove: &[(String, u64)]) -> Result<()> {
        let mut names: Vec<String> = Vec::new();
        for e in new.iter().flatten() {
            names.push(e.recipient.clone());
            if let Some(s) = e.sender() {
                names.push(s.to_string());
            }
        }
        if !remove.is_empty() {
            let ids: Vec<i64> = remove.iter().map(|(_, id)| *id as i64).collect();
            let senders = self.client.query(
                "SELECT DISTINCT sender FROM queue
                 WHERE id = ANY($1::bigint[]) AND NOT sealed AND sender IS NOT NULL",
                &[&ids],
            )?;
            names.extend(senders.iter().map(|r| r.get::<_, String>(0)));
            names.extend(remove.iter().map(|(r, _)| r.clone()));
        }
        lock_all(&mut *self.client, names.iter().map(String::as_str))
    }

    /// Queues every envelope of `unit` or none (`rules::queue_unit`): a fan-out's copies
    /// inside a savepoint, rolled back (rows and totals) when the unit is refused.
    fn queue_unit(&mut self, unit: &[NewEnvelope]) -> Result<Outcome> {
        let fan_out = unit.len() > 1;
        if fan_out {
            self.client.batch_execute("SAVEPOINT fan_out")?;
        }
        let (outcome, _queued) = rules::queue_unit(unit, |e| self.queue_one(e))?;
        if fan_out {
            self.client.batch_execute(match outcome {
                Outcome::Queued(_) => "RELEASE fan_out",
                Outcome::Refused(_) => "ROLLBACK TO fan_out; RELEASE fan_out",
            })?;
        }
        Ok(outcome)
    }

    /// Queues one envelope, or says why it must not be queued.
    fn queue_one(&mut self, e: &NewEnvelope) -> Result<std::result::Result<u64, Stored>> {
        let sealed = matches!(e.origin, Origin::Sealed { .. });
        // The second total: the sending account's for normal mail, the recipient's sealed
        // mail's for sealed.
        let (other_kind, other_key) = match e.sender() {
            Some(s) if !sealed => (SENDER, s),
            _ => (SEALED, e.recipient.as_str()),
        };
        let r = self.client.query_one(
            &self.statements.look_up,
            &[&e.recipient, &other_kind, &other_key],
        )?;
        let account: Option<(Vec<u8>, Vec<u8>)> = match (r.get(0), r.get(1)) {
            (Some(token), Some(key)) => Some((token, key)),
            _ => None,
        };
        if let Some(refused) = rules::refusal(account.as_ref().map(recipient_view), &e.origin) {
            return Ok(Err(refused));
        }
        let usage = |at: usize| Usage {
            envelopes: u64_of(r.get(at)),
            bytes: u64_of(r.get(at + 1)),
        };
        let (recipient, other) = (usage(2), usage(4));
        let (sender, sealed_usage) = if sealed {
            (Usage::default(), other)
        } else {
            (other, Usage::default())
        };
        let entry = e.entry();
        if let Some(q) = quota::over_quota(&self.limits, recipient, sender, sealed_usage, &entry) {
            return Ok(Err(Stored::OverQuota(q)));
        }
        let row = self.client.query_one(
            &self.statements.insert,
            &[
                &e.recipient,
                &entry.sender,
                &sealed,
                &e.payload,
                &(e.received_at as i64),
                &e.expires_at.map(|x| x as i64),
                &(entry.bytes as i64),
                &other_kind,
                &other_key,
            ],
        )?;
        Ok(Ok(u64_of(row.get(0))))
    }
}

impl Queue for PgQueue {
    /// A batch of deletions alone commits without waiting for the WAL to reach the disk
    /// (`synchronous_commit = off` for that transaction): if a crash loses one, the envelope
    /// is delivered again and its recipient drops it as a duplicate; nobody was promised
    /// anything.
    fn stage(
        &mut self,
        new: &[Vec<NewEnvelope>],
        remove: &[(String, u64)],
    ) -> Result<Vec<Outcome>> {
        if self.open {
            return Err(StoreError::BatchOpen);
        }
        if self.client.revive()? {
            self.statements = Statements::prepare(&mut self.client)?;
        }
        self.client.batch_execute("BEGIN")?;
        self.open = true;
        if new.is_empty() {
            self.client
                .batch_execute("SET LOCAL synchronous_commit = off")?;
        }
        self.apply(new, remove)
    }

    /// With envelopes queued, returns once PostgreSQL has flushed the commit to its WAL on
    /// disk (`synchronous_commit` is on by default and is left so).
    fn commit(&mut self) -> Result<()> {
        if !self.open {
            return Err(StoreError::NoBatch);
        }
        // A failed COMMIT ends the transaction too (PostgreSQL rolls it back).
        self.open = false;
        self.client.batch_execute("COMMIT")?;
        Ok(())
    }

    fn rollback(&mut self) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        if let Err(e) = self.client.batch_execute("ROLLBACK") {
            tracing::error!(error = %e, "the queue's batch could not be rolled back");
        }
    }
}
