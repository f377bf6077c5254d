//! How replies, reactions, edits, deletions and unsupported messages look in the thread: the
//! quote line above a reply, the text (or "message deleted"), the reactions line below.
//!
//! Pure: takes a `Message` and a width, returns lines. Must not lay out the thread around
//! them; that is `thread_view`'s.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use unicode_width::UnicodeWidthStr;

use crate::client::store::Message;

/// What a message of a kind this build does not know shows.
pub const UNSUPPORTED: &str = "unsupported message (update sotto)";
/// What a message deleted for everyone shows.
pub const DELETED: &str = "message deleted";
/// What a quote shows once its original expired or was deleted.
pub const GONE: &str = "original message gone";

fn dim() -> Style {
    Style::default()
        .fg(Color::DarkGray)
        .add_modifier(Modifier::ITALIC)
}

/// The text of a message as the thread shows it.
pub fn body(m: &Message) -> String {
    if m.deleted {
        DELETED.to_string()
    } else if m.edited {
        format!("{} (edited)", m.text)
    } else {
        m.text.clone()
    }
}

/// Cuts `text` to `width` columns, ending with `…` if it was longer.
fn fit(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_string();
    }
    let mut out = String::new();
    for c in text.chars() {
        if out.width() + c.to_string().width() + 1 > width {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

/// The one-line quote above a reply, indented under the sender's name.
pub fn quote(m: &Message, indent: usize, width: usize) -> Vec<Line<'static>> {
    let Some(q) = &m.reply else {
        return Vec::new();
    };
    let what = if q.gone { GONE } else { q.excerpt.as_str() };
    let room = width.saturating_sub(indent + 2);
    vec![Line::styled(
        format!("{}↳ {}", " ".repeat(indent), fit(what, room)),
        dim(),
    )]
}

/// The reactions line under a message: each emoji with its count.
pub fn reactions(m: &Message, indent: usize, width: usize) -> Vec<Line<'static>> {
    if m.reactions.is_empty() {
        return Vec::new();
    }
    let text = m
        .reactions
        .iter()
        .map(|r| format!("{} {}", r.emoji, r.count))
        .collect::<Vec<_>>()
        .join("  ");
    vec![Line::styled(
        format!(
            "{}{}",
            " ".repeat(indent),
            fit(&text, width.saturating_sub(indent))
        ),
        Style::default().fg(Color::Magenta),
    )]
}
