//! The marks after our own messages (…sending, ✓, ✓✓, the read mark, ✗) and how they are
//! drawn: the read mark differs from ✓✓ by its glyph as well as its colour, so that it shows
//! on a terminal without colour.
//!
//! Pure: a message's state in, text and styled spans out. Must not decide where a message
//! wraps (`wrap`) or what else its line holds (`thread_view`).

use std::ops::Range;

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;

use crate::client::store::{Message, MessageState};

/// After a message of ours the peer has displayed.
pub const READ_MARK: &str = " ✔✔";

/// The mark after `m`: empty for the peer's messages.
pub fn state_mark(m: &Message) -> &'static str {
    match (m.outgoing, m.state) {
        (false, _) => "",
        (true, MessageState::Sending) => " …sending",
        (true, MessageState::Sent) => " ✓",
        (true, MessageState::Received) => "",
        (true, MessageState::Delivered) => " ✓✓",
        (true, MessageState::Read) => READ_MARK,
        (true, MessageState::Failed) => " ✗ not sent",
    }
}

/// The style of `m`'s mark, when it has one of its own.
fn mark_style(m: &Message) -> Option<Style> {
    (m.outgoing && m.state == MessageState::Read).then(|| {
        Style::default()
            .fg(Color::LightBlue)
            .add_modifier(Modifier::BOLD)
    })
}

/// The spans of row `row` (a byte range of `body`, which holds `m`'s text, then its mark at
/// `mark`, then whatever follows): `style`, but the mark's own style where it has one.
pub fn row_spans(
    m: &Message,
    body: &str,
    row: Range<usize>,
    mark: Range<usize>,
    style: Style,
) -> Vec<Span<'static>> {
    let Some(own) = mark_style(m) else {
        return vec![Span::styled(body[row].to_string(), style)];
    };
    let cut = |at: usize| at.clamp(row.start, row.end);
    let (a, b) = (cut(mark.start), cut(mark.end));
    [(row.start..a, style), (a..b, own), (b..row.end, style)]
        .into_iter()
        .filter(|(r, _)| !r.is_empty())
        .map(|(r, s)| Span::styled(body[r].to_string(), s))
        .collect()
}
