//! Replies, reactions, edits and deletions in the store: the rows they change.
//!
//! Owns only these statements; who may change what, and when, is the manager's
//! (`manager::rich`). Texts change through UPDATE/DELETE on `messages`, so that triggers on
//! that table see every change. Must not truncate the WAL inside a caller's transaction: the
//! caller does it once its work is committed.

use rusqlite::{OptionalExtension, params};

use super::{Message, Reaction, Result, Store};

/// The reactions of message `m` in a query over `messages m`: "0👍" (theirs) or "1👍" (ours),
/// joined by the unit separator.
pub(super) const REACTIONS_COLUMN: &str = "(SELECT group_concat(r.from_me || r.emoji, char(31))
      FROM reactions r WHERE r.contact = m.contact AND r.secret = m.secret AND r.target = m.id)";

/// `REACTIONS_COLUMN`'s value as counts per emoji, in order of first appearance.
pub(super) fn reactions(column: Option<&str>) -> Vec<Reaction> {
    let mut out: Vec<Reaction> = Vec::new();
    for item in column.unwrap_or_default().split('\u{1f}') {
        let Some(emoji) = item.get(1..).filter(|e| !e.is_empty()) else {
            continue;
        };
        let mine = item.starts_with('1');
        match out.iter_mut().find(|r| r.emoji == emoji) {
            Some(r) => {
                r.count += 1;
                r.mine |= mine;
            }
            None => out.push(Reaction {
                emoji: emoji.to_string(),
                count: 1,
                mine,
            }),
        }
    }
    out
}

impl Store {
    /// The message `id` of one thread of a contact; None if that thread does not hold it.
    pub fn thread_message(
        &self,
        contact_id: &str,
        secret: bool,
        id: &str,
    ) -> Result<Option<Message>> {
        Ok(self
            .messages_where(
                None,
                "m.contact = ?1 AND m.secret = ?2 AND m.id = ?3",
                params![contact_id, secret, id],
            )?
            .pop())
    }

    /// Whether the contact's other thread holds the message `id` (a reference that would
    /// cross threads).
    pub fn in_other_thread(&self, contact_id: &str, secret: bool, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM messages WHERE contact = ?1 AND id = ?2 AND secret = ?3")
            .and_then(|mut st| {
                st.query_row(params![contact_id, id, !secret], |_| Ok(()))
                    .optional()
            })?
            .is_some())
    }

    /// Our reaction (`from_me`) or the contact's to `target`: `emoji`, or none.
    pub fn set_reaction(
        &self,
        contact_id: &str,
        secret: bool,
        target: &str,
        from_me: bool,
        emoji: Option<&str>,
    ) -> Result<()> {
        match emoji {
            Some(e) => self.conn.execute(
                "INSERT OR REPLACE INTO reactions (contact, secret, target, from_me, emoji)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![contact_id, secret, target, from_me, e],
            )?,
            None => self.conn.execute(
                "DELETE FROM reactions
                 WHERE contact = ?1 AND secret = ?2 AND target = ?3 AND from_me = ?4",
                params![contact_id, secret, target, from_me],
            )?,
        };
        Ok(())
    }

    /// Our own reaction to `target`, if any.
    pub fn my_reaction(
        &self,
        contact_id: &str,
        secret: bool,
        target: &str,
    ) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT emoji FROM reactions
                 WHERE contact = ?1 AND secret = ?2 AND target = ?3 AND from_me = 1",
                params![contact_id, secret, target],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Replaces a message's text (no history is kept); returns whether it exists.
    pub fn edit_text(&self, contact_id: &str, secret: bool, id: &str, text: &str) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE messages SET text = ?4, edited = 1
             WHERE contact = ?1 AND secret = ?2 AND id = ?3 AND deleted = 0",
            params![contact_id, secret, id, text],
        )?;
        Ok(n > 0)
    }

    /// Deletes a message for everyone: the row stays as a tombstone without text, quote or
    /// reactions, and the excerpts quoting it go. Returns whether it existed.
    pub fn tombstone(&self, contact_id: &str, secret: bool, id: &str) -> Result<bool> {
        let work = self.atomic()?;
        let n = self.conn.execute(
            "UPDATE messages SET text = '', deleted = 1, edited = 0, reply_id = NULL,
                 reply_excerpt = NULL
             WHERE contact = ?1 AND secret = ?2 AND id = ?3",
            params![contact_id, secret, id],
        )?;
        self.conn.execute(
            "UPDATE messages SET reply_excerpt = NULL
             WHERE contact = ?1 AND reply_id = ?3 AND secret = ?2",
            params![contact_id, secret, id],
        )?;
        self.conn.execute(
            "DELETE FROM reactions WHERE contact = ?1 AND secret = ?2 AND target = ?3",
            params![contact_id, secret, id],
        )?;
        work.commit()?;
        Ok(n > 0)
    }

    /// Deletes a message here only (its reactions and the excerpts quoting it go with it,
    /// see the `messages_rich_gone` trigger). Returns whether it existed.
    pub fn delete_message(&self, contact_id: &str, secret: bool, id: &str) -> Result<bool> {
        let n = self.conn.execute(
            "DELETE FROM messages WHERE contact = ?1 AND secret = ?2 AND id = ?3",
            params![contact_id, secret, id],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reactions_are_counted_per_emoji_in_order() {
        let r = reactions(Some("0👍\u{1f}1👍\u{1f}0❤️"));
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].emoji.as_str(), r[0].count, r[0].mine),
            ("👍", 2, true)
        );
        assert_eq!(
            (r[1].emoji.as_str(), r[1].count, r[1].mine),
            ("❤️", 1, false)
        );
        assert!(reactions(None).is_empty());
    }
}
