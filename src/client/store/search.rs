//! Full-text search of the stored texts, through the FTS5 index `messages_fts`.
//!
//! Owns the search query only. The index is kept in step with `messages` by SQL triggers
//! (see the migration), so nothing here, or anywhere else, writes to it: whoever changes or
//! deletes a message through `messages` changes the index in the same transaction.

use rusqlite::params;

use super::{MESSAGE_COLUMN_COUNT, Message, Result, Store, message_columns, message_row};
use crate::client::search::Query;

/// From this many messages deleted at once, the index forgets them in one merge rather than
/// row by row (see `Store::deleting`).
pub const BULK_DELETE: usize = 500;

/// Words of context a snippet shows around the matches.
const SNIPPET_WORDS: u32 = 12;

/// A message that matched, with the part of its text around the match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub message: Message,
    /// A few words around the match, `…` where the text goes on.
    pub snippet: String,
}

impl Store {
    /// Runs `delete`, which deletes `rows` messages inside the caller's transaction, so that
    /// the index forgets their words at the least cost. Row by row, FTS5's secure-delete
    /// rewrites each of a row's terms' pages in place: cheap for a few rows, but a sweep of
    /// 100,000 took over a minute. From `BULK_DELETE` rows the deletions are only marked,
    /// then every segment is merged into one without them ('optimize'), whose old pages are
    /// freed (and zeroed: `secure_delete`): the same forgetting, at the cost of one rewrite
    /// of the index.
    pub(super) fn deleting<T>(&self, rows: usize, delete: impl FnOnce() -> Result<T>) -> Result<T> {
        if rows < BULK_DELETE {
            return delete();
        }
        self.conn.execute_batch(
            "INSERT INTO messages_fts(messages_fts, rank) VALUES ('secure-delete', 0)",
        )?;
        let out = delete()?;
        self.conn.execute_batch(
            "INSERT INTO messages_fts(messages_fts) VALUES ('optimize');
             INSERT INTO messages_fts(messages_fts, rank) VALUES ('secure-delete', 1);",
        )?;
        Ok(out)
    }

    /// The newest `limit` texts matching `query`, newest first: in every thread, or in one
    /// (a contact's account id and whether it is the secret thread).
    pub fn search(
        &self,
        query: &Query,
        thread: Option<(&str, bool)>,
        limit: usize,
    ) -> Result<Vec<SearchHit>> {
        // The index is the outer loop: it yields matches newest first and stops at `limit`.
        let columns = message_columns();
        let sql = format!(
            "SELECT {columns},
                 snippet(messages_fts, 0, '', '', '…', {SNIPPET_WORDS})
             FROM messages_fts f
             JOIN messages m ON m.seq = f.rowid
             JOIN contacts c ON c.account_id = m.contact
             WHERE messages_fts MATCH ?1
                 AND (?2 IS NULL OR (m.contact = ?2 AND m.secret = ?3))
             ORDER BY f.rowid DESC LIMIT ?4"
        );
        let (contact, secret) = thread.unzip();
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![query.fts(), contact, secret.unwrap_or(false), limit as i64],
            |r| {
                Ok(SearchHit {
                    message: message_row(r)?,
                    snippet: r.get(MESSAGE_COLUMN_COUNT)?,
                })
            },
        )?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::store::{Contact, MessageKind, MessageState};

    fn contact(handle: &str) -> Contact {
        Contact {
            account_id: format!("{handle}-id"),
            handle: handle.into(),
            identity_key: vec![5; 33],
            access_token: vec![0; 16],
            verified: false,
            key_changed: false,
            blocked: false,
        }
    }

    fn message(id: &str, handle: &str, secret: bool, kind: MessageKind, text: &str) -> Message {
        Message {
            seq: 0,
            id: id.into(),
            contact: handle.into(),
            secret,
            outgoing: false,
            text: text.into(),
            sent_at: 1_000,
            state: MessageState::Received,
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

    /// bob and carol, each with texts in both threads, and a timer line.
    fn store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        for h in ["bob", "carol"] {
            store.upsert_contact(&contact(h), 0).unwrap();
        }
        for (id, who, secret, kind, text) in [
            (
                "1",
                "bob",
                false,
                MessageKind::Text,
                "Meeting at noon in the café",
            ),
            (
                "2",
                "bob",
                true,
                MessageKind::Text,
                "the secret meeting is off",
            ),
            ("3", "carol", false, MessageKind::Text, "no meet today"),
            ("4", "carol", false, MessageKind::Timer, ""),
            ("5", "bob", false, MessageKind::Text, "lunch?"),
        ] {
            let m = message(id, who, secret, kind, text);
            store.insert_message(&format!("{who}-id"), &m, 0).unwrap();
        }
        (tmp, store)
    }

    fn ids(store: &Store, q: &str, thread: Option<(&str, bool)>) -> Vec<String> {
        store
            .search(&Query::parse(q).unwrap(), thread, 100)
            .unwrap()
            .into_iter()
            .map(|h| h.message.id)
            .collect()
    }

    #[test]
    fn words_match_as_prefixes_in_any_case_and_accent_newest_first() {
        let (_tmp, store) = store();
        assert_eq!(ids(&store, "meet", None), ["3", "2", "1"]);
        assert_eq!(ids(&store, "MEETING", None), ["2", "1"]);
        assert_eq!(ids(&store, "cafe noon", None), ["1"]);
        assert_eq!(ids(&store, "meeting lunch", None), Vec::<String>::new());
        assert_eq!(ids(&store, "lunch?", None), ["5"]);
        let hit = &store
            .search(&Query::parse("café").unwrap(), None, 10)
            .unwrap()[0];
        assert_eq!(hit.message.contact, "bob");
        assert_eq!(hit.snippet, "Meeting at noon in the café");
    }

    #[test]
    fn one_thread_is_searched_alone() {
        let (_tmp, store) = store();
        assert_eq!(ids(&store, "meet", Some(("bob-id", false))), ["1"]);
        assert_eq!(ids(&store, "meet", Some(("bob-id", true))), ["2"]);
        assert_eq!(
            ids(&store, "meet", Some(("carol-id", true))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn input_that_is_fts_syntax_is_searched_as_text() {
        let (_tmp, store) = store();
        for q in [
            "\"",
            "meet\"",
            "NEAR(meet",
            "meet OR",
            "AND",
            "text:meet",
            "^meet",
            "meet*",
            "(",
            "-meet",
            "{meet}",
            "'",
            "meet + noon",
        ] {
            let Ok(query) = Query::parse(q) else { continue };
            store
                .search(&query, None, 10)
                .unwrap_or_else(|e| panic!("{q:?}: {e}"));
        }
        assert_eq!(ids(&store, "\"meet\"", None), ["3", "2", "1"]);
    }

    /// The index equals its content after every kind of change, and a long snippet is cut.
    #[test]
    fn the_index_follows_inserts_edits_kind_changes_and_deletions() {
        let (_tmp, store) = store();
        let conn = store.conn();
        conn.execute(
            "UPDATE messages SET text = 'rescheduled to friday' WHERE id = '1'",
            [],
        )
        .unwrap();
        assert_eq!(ids(&store, "noon", None), Vec::<String>::new());
        assert_eq!(ids(&store, "friday", None), ["1"]);
        // A text turned into something else leaves the index, and back.
        conn.execute("UPDATE messages SET kind = 'timer' WHERE id = '1'", [])
            .unwrap();
        assert_eq!(ids(&store, "friday", None), Vec::<String>::new());
        conn.execute("UPDATE messages SET kind = 'text' WHERE id = '1'", [])
            .unwrap();
        assert_eq!(ids(&store, "friday", None), ["1"]);
        conn.execute("DELETE FROM messages WHERE id = '2'", [])
            .unwrap();
        assert_eq!(ids(&store, "secret", None), Vec::<String>::new());
        // Other columns' changes do not touch the index.
        store.set_state("3", MessageState::Delivered).unwrap();
        let long = format!(
            "start {} needle {} end",
            "word ".repeat(50),
            "more ".repeat(50)
        );
        let m = message("6", "carol", false, MessageKind::Text, &long);
        store.insert_message("carol-id", &m, 0).unwrap();
        let hit = &store
            .search(&Query::parse("needle").unwrap(), None, 10)
            .unwrap()[0];
        assert!(
            hit.snippet.contains("needle") && hit.snippet.starts_with('…'),
            "{}",
            hit.snippet
        );
        assert!(hit.snippet.split_whitespace().count() <= SNIPPET_WORDS as usize + 1);
        conn.execute(
            "INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)",
            [],
        )
        .unwrap();
        store.remove_contact("carol-id").unwrap();
        assert_eq!(ids(&store, "needle", None), Vec::<String>::new());
        conn.execute(
            "INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)",
            [],
        )
        .unwrap();
    }

    #[test]
    fn the_migration_indexes_the_texts_already_stored() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sotto.db");
        let ours = super::super::MIGRATIONS
            .iter()
            .position(|m| m.contains("-- issue 20 (search)"))
            .unwrap();
        {
            let before = crate::db::open(&path, &super::super::MIGRATIONS[..ours]).unwrap();
            let store = Store { conn: before };
            store.upsert_contact(&contact("bob"), 0).unwrap();
            // By hand: `insert_message` writes columns later migrations add.
            for (id, kind, text) in [("1", "text", "older words"), ("2", "timer", "words")] {
                store
                    .conn()
                    .execute(
                        "INSERT INTO messages (id, contact, secret, outgoing, text, sent_at,
                             state, kind)
                         VALUES (?1, 'bob-id', 0, 0, ?3, 0, 'received', ?2)",
                        rusqlite::params![id, kind, text],
                    )
                    .unwrap();
            }
        }
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(ids(&store, "words", None), ["1"]);
    }

    #[test]
    fn the_index_deletes_securely_and_is_read_newest_first_without_a_sort() {
        let (_tmp, store) = store();
        let on: i64 = store
            .conn()
            .query_row(
                "SELECT v FROM messages_fts_config WHERE k = 'secure-delete'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(on, 1);
        let mut st = store
            .conn()
            .prepare(
                "EXPLAIN QUERY PLAN SELECT f.rowid FROM messages_fts f
                 JOIN messages m ON m.seq = f.rowid WHERE messages_fts MATCH 'x'
                 ORDER BY f.rowid DESC LIMIT 5",
            )
            .unwrap();
        let plan: Vec<String> = st
            .query_map([], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(!plan.iter().any(|s| s.contains("TEMP B-TREE")), "{plan:?}");
    }
}
