//! The user's searches of their messages: `Command::Search` in, `Event::SearchResults` out.
//!
//! Owns only the turn of a typed query and a thread's handle into a store search; the query's
//! rules are `search`'s, the index and its SQL the store's.

use super::{ClientError, Event, Manager, describe};
use crate::client::search::Query;
use crate::client::store::SearchHit;

/// At most this many results, newest first: a screenful many times over.
pub const SEARCH_LIMIT: usize = 200;

impl Manager {
    /// Searches every thread, or the thread `(handle, secret)`, for `query`.
    pub(super) async fn search(&mut self, tag: u64, query: String, thread: Option<(String, bool)>) {
        match self.find(&query, thread) {
            Ok(results) => self.emit(Event::SearchResults { tag, results }).await,
            Err(e) => {
                self.emit(Event::Failed {
                    tag,
                    error: describe(&e),
                })
                .await
            }
        }
    }

    fn find(
        &self,
        query: &str,
        thread: Option<(String, bool)>,
    ) -> Result<Vec<SearchHit>, ClientError> {
        let query = Query::parse(query)?;
        let thread = match thread {
            Some((handle, secret)) => Some((self.known(&handle)?.account_id, secret)),
            None => None,
        };
        let thread = thread.as_ref().map(|(id, secret)| (id.as_str(), *secret));
        Ok(self.store.search(&query, thread, SEARCH_LIMIT)?)
    }
}
