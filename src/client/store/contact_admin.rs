//! What the user does to a contact as a whole (block, unblock, remove) and to a failed message
//! (send it again), in the store.
//!
//! Owns only these rows' changes; deciding when they are allowed is the manager's.

use rusqlite::params;

use super::{Message, Result, Store};

impl Store {
    /// Blocks or unblocks a contact; returns whether the contact exists.
    pub fn set_blocked(&self, account_id: &str, blocked: bool) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE contacts SET blocked = ?2 WHERE account_id = ?1",
            params![account_id, blocked],
        )?;
        Ok(n > 0)
    }

    /// Forgets a contact: both threads' messages, their timers, the key log and the record.
    /// One transaction, then the WAL is truncated, so (with `secure_delete`) the texts are in
    /// neither the database nor the WAL, as the sweeper leaves expired ones. The Signal
    /// session stays: it holds no message, and it lets a removed contact who writes again be
    /// read (their next message starts no new session). Returns how many messages went.
    pub fn remove_contact(&self, account_id: &str) -> Result<usize> {
        let tx = self.conn.unchecked_transaction()?;
        let count: i64 = tx.query_row(
            "SELECT count(*) FROM messages WHERE contact = ?1",
            [account_id],
            |r| r.get(0),
        )?;
        let messages = self.deleting(count as usize, || {
            Ok(tx.execute("DELETE FROM messages WHERE contact = ?1", [account_id])?)
        })?;
        tx.execute("DELETE FROM threads WHERE contact = ?1", [account_id])?;
        tx.execute("DELETE FROM key_log WHERE contact = ?1", [account_id])?;
        tx.execute("DELETE FROM contacts WHERE account_id = ?1", [account_id])?;
        tx.commit()?;
        self.truncate_wal()?;
        Ok(messages)
    }

    /// Our message `id`, if it exists.
    pub fn outgoing(&self, id: &str) -> Result<Option<Message>> {
        Ok(self
            .messages_where(None, "m.id = ?1 AND m.outgoing = 1", [id])?
            .pop())
    }

    /// Marks a failed secret message as held until its contact's new key is accepted.
    pub fn hold_for_key(&self, id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE messages SET held_for_key = 1 WHERE id = ?1 AND outgoing = 1",
            [id],
        )?;
        Ok(())
    }

    /// The contact's secret messages held for a key change, oldest first.
    pub fn held_for_key(&self, account_id: &str) -> Result<Vec<Message>> {
        self.messages_where(
            None,
            "m.contact = ?1 AND m.secret = 1 AND m.outgoing = 1 AND m.state = 'failed'
             AND m.held_for_key = 1 ORDER BY m.seq",
            [account_id],
        )
    }

    /// Puts failed messages back to `sending` (no longer held), for the next send.
    pub fn resend(&self, ids: &[&str]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE messages SET state = 'sending', held_for_key = 0
                 WHERE id = ?1 AND outgoing = 1 AND state = 'failed'",
            )?;
            for id in ids {
                stmt.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
