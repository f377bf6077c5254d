//! `sotto search WORDS`: the profile's texts that hold the words, newest first, as text lines
//! or (with `--json`) in the one JSON shape of `sotto::client::export`.
//!
//! Owns the command's output. Works on the store directly, like `history`: no manager, no
//! relay. The search's rules are `sotto::client::search`'s.

use std::io::Write as _;
use std::path::Path;

use anyhow::Result;
use sotto::client::export::{ExportedMessage, Timestamp};
use sotto::client::search::Query;
use sotto::client::store::Store;

/// What to search and how to print it.
pub struct Request {
    pub words: Vec<String>,
    pub json: bool,
    /// One thread: the contact's handle and whether it is the secret one.
    pub thread: Option<(String, bool)>,
    pub limit: usize,
}

pub fn run(dir: &Path, req: Request) -> Result<()> {
    let store = Store::open(dir)?;
    let me = store.registration()?.handle;
    let query = Query::parse(&req.words.join(" "))?;
    let thread = match &req.thread {
        Some((handle, secret)) => {
            Some((super::profile::known(&store, handle)?.account_id, *secret))
        }
        None => None,
    };
    let thread = thread.as_ref().map(|(id, secret)| (id.as_str(), *secret));
    let mut out = std::io::stdout().lock();
    for hit in store.search(&query, thread, req.limit)? {
        let m = &hit.message;
        if req.json {
            writeln!(out, "{}", ExportedMessage::new(m, &me).to_line())?;
        } else {
            // One line each: a newline or escape in a peer's text must not make more.
            let snippet = sotto::tui::notify::printable(&hit.snippet);
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{snippet}",
                Timestamp::from_ms(m.sent_at).rfc3339,
                m.contact,
                if m.secret { "secret" } else { "normal" },
                if m.outgoing { "out" } else { "in" },
                m.id,
            )?;
        }
    }
    Ok(())
}
