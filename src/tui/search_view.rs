//! Drawing the search overlay: the words being typed, what the search found (thread, time,
//! the words around the match), newest first, the chosen one marked.
//!
//! Pure drawing from `&App`; the overlay's state and keys are `search`'s.

use ratatui::Frame;
use ratatui::layout::Position;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::app::App;
use super::notify::printable;
use super::render::{LOCK, centered};
use crate::client::store::SearchHit;

/// Columns for a result's thread (a handle, with the lock for a secret thread).
const THREAD_COLS: usize = 14;

pub fn draw(f: &mut Frame, app: &App) {
    let screen = f.area();
    let area = centered(
        screen,
        screen.width.saturating_sub(4).min(100),
        screen.height.saturating_sub(2),
    );
    let s = &app.search;
    let scope = match &s.scope {
        Some(k) if k.secret => format!("{LOCK} {} secret thread", k.handle),
        Some(k) => format!("{} normal thread", k.handle),
        None => "every thread".to_string(),
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" search · {scope} · Esc closes "));
    let inner = block.inner(area);
    f.render_widget(Clear, area);
    f.render_widget(block, area);
    let width = inner.width as usize;
    let prompt = "words: ";
    let mut lines = vec![
        Line::from(vec![
            Span::styled(prompt, Style::default().fg(Color::DarkGray)),
            Span::raw(fit(&s.input, width.saturating_sub(prompt.len() + 1))),
        ]),
        Line::styled(
            fit(&summary(app), width),
            if s.error.is_some() {
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::default().fg(Color::DarkGray)
            },
        ),
        Line::raw(""),
    ];
    let rows = (inner.height as usize).saturating_sub(lines.len());
    if let Some(results) = &s.results {
        // The chosen row stays in sight.
        let first = s.selected.saturating_sub(rows.saturating_sub(1));
        for (i, hit) in results.iter().enumerate().skip(first).take(rows) {
            let chosen = i == s.selected;
            let mut style = if hit.message.secret {
                Style::default().fg(Color::Magenta)
            } else {
                Style::default()
            };
            if chosen {
                style = style.add_modifier(Modifier::REVERSED);
            }
            lines.push(Line::styled(row(app, hit, chosen, width), style));
        }
    }
    f.render_widget(Paragraph::new(lines), inner);
    let typed = (prompt.len() + s.input.width()).min(width.saturating_sub(1));
    f.set_cursor_position(Position::new(inner.x + typed as u16, inner.y));
}

/// The line under the words: what the list below is, and the keys.
fn summary(app: &App) -> String {
    let s = &app.search;
    if let Some(e) = &s.error {
        return format!("! {e}");
    }
    if s.searched.is_none() || s.input.trim().is_empty() {
        return "type words, then Enter (each word matches words starting with it)".into();
    }
    match &s.results {
        None => "searching…".into(),
        Some(r) if r.is_empty() => "nothing found · Enter searches again".into(),
        Some(r) if !s.current() => format!("{} found · Enter searches the new words", r.len()),
        Some(r) => format!(
            "{} found, newest first · ↑ ↓ choose · Enter opens the conversation there",
            r.len()
        ),
    }
}

/// One result: the chosen marker, the thread, the day and time, then the snippet (ours
/// prefixed "you:"), cut to `width`.
fn row(app: &App, hit: &SearchHit, chosen: bool, width: usize) -> String {
    let m = &hit.message;
    let thread = if m.secret {
        format!("{LOCK} {}", m.contact)
    } else {
        m.contact.clone()
    };
    let thread = fit(&thread, THREAD_COLS);
    let pad = " ".repeat(THREAD_COLS.saturating_sub(thread.width()));
    let day = app.clock.zone.day(m.sent_at).format("%-d %b");
    let who = if m.outgoing { "you: " } else { "" };
    let text = printable(&hit.snippet);
    let line = format!(
        "{}{thread}{pad} {day:>6} {}  {who}{text}",
        if chosen { "▸" } else { " " },
        app.clock.time(m.sent_at),
    );
    fit(&line, width)
}

/// `s` cut to `width` columns, with `…` where it was cut.
fn fit(s: &str, width: usize) -> String {
    if s.width() <= width {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn fit_cuts_by_columns_and_marks_the_cut() {
        assert_eq!(fit("hello", 5), "hello");
        assert_eq!(fit("hello world", 6), "hello…");
        assert_eq!(fit("日本語テキスト", 7), "日本語…");
        assert_eq!(fit("abc", 0), "…");
    }
}
