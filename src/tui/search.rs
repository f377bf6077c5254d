//! The search overlay's state and keys: `/search WORDS` (every thread) and Ctrl-F (the open
//! thread) open it, typing edits the words, Enter searches (or, once the words are searched,
//! opens the chosen result), Up/Down choose, Esc closes. Opening a result opens its thread
//! and loads older pages until the message is there, then scrolls to it.
//!
//! Pure, like the rest of the app: `Command::Search` out, `Event::SearchResults` in. Drawing
//! is `search_view`'s; the query's rules are `client::search`'s.

use crate::client::manager::Command;
use crate::client::store::SearchHit;

use super::app::{Action, App, Overlay, ThreadKey};
use super::composer::Edit;

/// A result list moves by this many rows on PageUp/PageDown.
const PAGE_ROWS: usize = 10;

/// The search overlay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// The thread searched; None: every thread.
    pub scope: Option<ThreadKey>,
    /// The words as being typed.
    pub input: String,
    /// The words the results are for, and the tag of that search.
    pub searched: Option<(String, u64)>,
    /// None while the answer is out.
    pub results: Option<Vec<SearchHit>>,
    /// Why the search failed, in the user's words.
    pub error: Option<String>,
    /// The chosen row.
    pub selected: usize,
}

impl Search {
    /// Whether the results shown answer the words typed now.
    pub fn current(&self) -> bool {
        self.searched
            .as_ref()
            .is_some_and(|(w, _)| *w == self.input)
    }
}

impl App {
    /// Opens the overlay on `scope` with `words`, searching them at once if there are any.
    /// Without words, the last search of the same scope comes back as it was.
    pub(super) fn open_search(&mut self, scope: Option<ThreadKey>, words: String) -> Vec<Command> {
        self.overlay = Some(Overlay::Search);
        if words.is_empty() && self.search.scope == scope {
            return Vec::new();
        }
        self.search = Search {
            scope,
            input: words,
            ..Search::default()
        };
        self.run_search()
    }

    /// Ctrl-F: searches the open thread (every thread if none is open), starting from what
    /// the composer holds, which stays there.
    pub(super) fn search_open_thread(&mut self) -> Vec<Command> {
        let words = self.composer.text().trim().to_string();
        self.open_search(self.open.clone(), words)
    }

    fn run_search(&mut self) -> Vec<Command> {
        if self.search.input.trim().is_empty() {
            return Vec::new();
        }
        let tag = self.tag();
        let s = &mut self.search;
        s.searched = Some((s.input.clone(), tag));
        s.results = None;
        s.error = None;
        s.selected = 0;
        vec![Command::Search {
            tag,
            query: s.input.clone(),
            thread: s.scope.as_ref().map(|k| (k.handle.clone(), k.secret)),
        }]
    }

    /// What a key does while the overlay is open.
    pub(super) fn search_action(&mut self, action: Action) -> Vec<Command> {
        let count = self.search.results.as_ref().map_or(0, Vec::len);
        let s = &mut self.search;
        match action {
            Action::Edit(Edit::Insert(c)) if !c.is_control() => s.input.push(c),
            Action::Edit(Edit::Backspace) => {
                s.input.pop();
            }
            Action::Edit(Edit::DeleteWordBack | Edit::KillToStart | Edit::Clear) => s.input.clear(),
            Action::Up | Action::WheelUp => s.selected = s.selected.saturating_sub(1),
            Action::Down | Action::WheelDown => {
                s.selected = (s.selected + 1).min(count.saturating_sub(1))
            }
            Action::PageUp => s.selected = s.selected.saturating_sub(PAGE_ROWS),
            Action::PageDown => s.selected = (s.selected + PAGE_ROWS).min(count.saturating_sub(1)),
            Action::Top => s.selected = 0,
            Action::Bottom => s.selected = count.saturating_sub(1),
            Action::Submit | Action::Open => {
                if !s.current() {
                    return self.run_search();
                }
                return self.open_result();
            }
            Action::CloseOverlay | Action::FocusComposer => self.overlay = None,
            Action::Quit => self.quit = true,
            _ => {}
        }
        Vec::new()
    }

    /// Opens the chosen result's thread and scrolls to it.
    fn open_result(&mut self) -> Vec<Command> {
        let Some(hit) = self
            .search
            .results
            .as_ref()
            .and_then(|r| r.get(self.search.selected))
        else {
            return Vec::new();
        };
        let key = ThreadKey {
            handle: hit.message.contact.clone(),
            secret: hit.message.secret,
        };
        let seq = hit.message.seq;
        self.overlay = None;
        let mut cmds = if self.open.as_ref() == Some(&key) && !self.thread.loading {
            Vec::new()
        } else {
            self.open_thread(key)
        };
        self.thread.landing = false;
        self.thread.seek = Some(seq);
        cmds.extend(self.seek());
        cmds
    }

    /// If a search result is being sought in the open thread: scrolls to it once it is
    /// loaded, or asks for the next older page.
    pub(super) fn seek(&mut self) -> Vec<Command> {
        let Some(seq) = self.thread.seek else {
            return Vec::new();
        };
        if self.thread.loading {
            return Vec::new();
        }
        if let Some(i) = self.thread.messages.iter().position(|m| m.seq == seq) {
            self.thread.seek = None;
            let view = self.view().1;
            let pos = self.lines().from_top(i, 0, view);
            self.set_pos(pos);
            return Vec::new();
        }
        let older = self.thread.messages.first().is_none_or(|m| m.seq > seq);
        if older && !self.thread.complete {
            return self.load_older();
        }
        self.thread.seek = None;
        self.error("that message is gone (it expired or was deleted)");
        Vec::new()
    }

    /// The answer to a search; one for older words is dropped.
    pub(super) fn on_search_results(&mut self, tag: u64, results: Vec<SearchHit>) {
        if self
            .search
            .searched
            .as_ref()
            .is_some_and(|(_, t)| *t == tag)
        {
            self.search.results = Some(results);
            self.search.selected = 0;
        }
    }

    /// Takes a failure if it answers the search out; returns whether it did.
    pub(super) fn search_failed(&mut self, tag: u64, error: &str) -> bool {
        let ours = self
            .search
            .searched
            .as_ref()
            .is_some_and(|(_, t)| *t == tag);
        if ours {
            self.search.results = Some(Vec::new());
            self.search.error = Some(error.to_string());
        }
        ours
    }
}
