//! Drawing the screen: a pure function of the app state.
//!
//! Owns the look of the panes, the status line and the help overlay, and word wrapping. Takes
//! `&App` only and does no I/O; where things go is `layout`'s, the thread's lines are
//! `thread_view`'s and the verify overlay is `verify`'s.

use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, List, ListItem, Paragraph};
use unicode_width::UnicodeWidthStr;

use super::app::{App, Focus, Overlay};
use super::commands;
use super::composer::{self, MAX_ROWS};
use super::keys::KeyMap;
use super::layout;
pub use super::thread_view::{ThreadView, thread_view};
use crate::client::manager::ConnState;

pub const LOCK: &str = "🔒";
const SECRET: Color = Color::Magenta;

/// Draws the whole screen.
pub fn draw(f: &mut Frame, app: &App, keys: &KeyMap) {
    let areas = layout::areas(app, f.area());
    if let Some(contacts) = areas.contacts {
        draw_contacts(f, app, contacts);
    }
    draw_thread(f, app, areas.thread);
    let typed = app.composer.view(
        super::layout::composer_width(areas.composer.width),
        MAX_ROWS,
    );
    draw_composer(f, app, keys, typed, areas.composer);
    draw_status(f, app, keys, areas.status);
    match app.overlay {
        Some(Overlay::Help) => draw_help(f, app, keys),
        Some(Overlay::Verify) => super::verify::draw(f, app),
        Some(Overlay::Search) => super::search_view::draw(f, app),
        None => {}
    }
}

fn focused(app: &App, focus: Focus) -> Style {
    if app.focus == focus && app.overlay.is_none() {
        Style::default().add_modifier(Modifier::BOLD)
    } else {
        Style::default().fg(Color::DarkGray)
    }
}

fn draw_contacts(f: &mut Frame, app: &App, area: Rect) {
    let rows = app.rows();
    let items: Vec<ListItem> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            // A marker, not only colour, shows the selection and the open thread.
            let cursor = if i == app.selected && app.focus == Focus::Contacts {
                "▸"
            } else {
                " "
            };
            let open = if app.open.as_ref() == Some(&r.key) {
                "•"
            } else {
                " "
            };
            let trust = app
                .contacts
                .iter()
                .find(|c| c.handle == r.key.handle)
                .map(|c| (c.verified, c.key_changed));
            let name = if r.key.secret {
                format!("  {LOCK} secret")
            } else {
                match trust {
                    Some((_, true)) => format!("{} ⚠", r.key.handle),
                    Some((true, _)) => format!("{} ✔", r.key.handle),
                    _ => r.key.handle.clone(),
                }
            };
            let unread = if r.unread > 0 {
                format!(" ({})", r.unread)
            } else {
                String::new()
            };
            let mut style = Style::default();
            if r.key.secret {
                style = style.fg(SECRET);
            }
            if r.unread > 0 {
                style = style.add_modifier(Modifier::BOLD);
            }
            if i == app.selected && app.focus == Focus::Contacts {
                style = style.add_modifier(Modifier::REVERSED);
            }
            ListItem::new(Line::from(format!("{cursor}{open}{name}{unread}"))).style(style)
        })
        .collect();
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" contacts ")
        .border_style(focused(app, Focus::Contacts));
    if items.is_empty() {
        let hint = Paragraph::new("no contacts yet\n\n/add HANDLE").block(block);
        f.render_widget(hint, area);
    } else {
        f.render_widget(List::new(items).block(block), area);
    }
}

/// Word-wraps `text` to `width` columns (see `wrap::rows`).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    super::wrap::rows(text, width)
        .into_iter()
        .map(|r| text[r].to_string())
        .collect()
}

fn draw_thread(f: &mut Frame, app: &App, area: Rect) {
    let secret = app.secret();
    let title = match &app.open {
        Some(o) if o.secret => format!(" {LOCK} SECRET · {} ", o.handle),
        Some(o) => format!(" {} · normal ", o.handle),
        None => " sotto ".to_string(),
    };
    // Whose profile this is, so two open side by side are not confused.
    let me = Line::from(format!(" you: {} ", app.me)).right_aligned();
    let block = if secret {
        Block::default()
            .borders(Borders::ALL)
            .border_type(BorderType::Double)
            .border_style(Style::default().fg(SECRET))
            .title(Span::styled(
                title,
                Style::default().fg(SECRET).add_modifier(Modifier::BOLD),
            ))
            .title(me)
    } else {
        Block::default()
            .borders(Borders::ALL)
            .title(title)
            .title(me)
    };
    // Who is typing sits on the thread's bottom edge, right above the composer.
    let block = match &app.open {
        Some(o) if app.typing.shows(o) => block.title_bottom(Span::styled(
            format!(" {} is typing… ", o.handle),
            Style::default().add_modifier(Modifier::ITALIC),
        )),
        _ => block,
    };
    let inner = block.inner(area);
    f.render_widget(block, area);
    if app.open.is_none() {
        let hint = "No conversation is open.\n\nTab moves to the contacts, Enter opens one.\n/add HANDLE adds a contact.\n? shows every key and command.";
        f.render_widget(Paragraph::new(hint), inner);
        return;
    }
    let view = thread_view(app, inner.width, inner.height);
    f.render_widget(Paragraph::new(view.lines), inner);
    for (id, spot) in &view.pictures {
        let at = (inner.x + spot.col, inner.y + spot.row as u16);
        app.files.pictures.draw(f, id, at, inner);
    }
    if app.thread.scroll > 0 || app.thread.cut > 0 {
        let more = match app.thread.scroll {
            0 => " ↓ more · End ".to_string(),
            n => format!(" ↓ {n} newer · End "),
        };
        let w = more.width() as u16;
        let at = Rect::new(area.right().saturating_sub(w + 2), area.bottom() - 1, w, 1);
        f.render_widget(
            Paragraph::new(more).style(Style::default().add_modifier(Modifier::REVERSED)),
            at,
        );
    }
}

/// The composer's title: what it writes into and its keys, as many as fit in `width`.
fn composer_title(app: &App, keys: &KeyMap, width: usize) -> String {
    let (mut what, other) = if app.secret() {
        (format!("{LOCK} secret message"), "normal")
    } else {
        ("message".to_string(), "secret")
    };
    if let Some(doing) = super::rich::composer_doing(app, width / 2) {
        what = format!("{what} {doing}");
    }
    let hints = [
        "Enter sends".to_string(),
        format!("{} {other}", keys.toggle_secret.label()),
        "Alt-Enter newline".to_string(),
        "Ctrl-X editor".to_string(),
    ];
    // Inside the corners; the space after the last hint only if it fits.
    let room = width.saturating_sub(2);
    let mut title = format!(" {what}");
    for hint in hints {
        let longer = format!("{title} · {hint}");
        if longer.width() > room {
            break;
        }
        title = longer;
    }
    if title.width() < room {
        title.push(' ');
    }
    title
}

fn draw_composer(f: &mut Frame, app: &App, keys: &KeyMap, typed: composer::View, area: Rect) {
    let mut block = Block::default()
        .borders(Borders::ALL)
        .title(composer_title(app, keys, area.width as usize))
        .border_style(focused(app, Focus::Composer));
    if app.secret() {
        block = block
            .border_type(BorderType::Double)
            .border_style(Style::default().fg(SECRET));
    }
    // Rows out of sight are counted on the border, so a long message is not mistaken for
    // a short one.
    let hidden: Vec<String> = [(typed.above, "↑"), (typed.below, "↓")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, arrow)| format!("{arrow} {n} more"))
        .collect();
    if !hidden.is_empty() {
        block = block.title_bottom(Line::from(format!(" {} ", hidden.join(" · "))).right_aligned());
    }
    let inner = block.inner(area);
    let rows: Vec<Line> = typed.rows.into_iter().map(Line::from).collect();
    f.render_widget(Paragraph::new(rows).block(block), area);
    if app.focus == Focus::Composer && app.overlay.is_none() {
        let (row, col) = typed.cursor;
        f.set_cursor_position(Position::new(
            inner.x + (col as u16).min(inner.width.saturating_sub(1)),
            inner.y + (row as u16).min(inner.height.saturating_sub(1)),
        ));
    }
}

fn draw_status(f: &mut Frame, app: &App, keys: &KeyMap, area: Rect) {
    let sep = || Span::raw(" │ ");
    let conn = match &app.conn {
        ConnState::Online => Span::styled("● online", Style::default().fg(Color::Green)),
        ConnState::Connecting => Span::styled("○ connecting…", Style::default().fg(Color::Yellow)),
        ConnState::Offline { retry_in, .. } => Span::styled(
            format!("✕ offline, retry in {}s", retry_in.as_secs().max(1)),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    };
    let mode = if app.secret() {
        Span::styled(
            format!(" {LOCK} SECRET "),
            Style::default()
                .fg(Color::Black)
                .bg(SECRET)
                .add_modifier(Modifier::BOLD),
        )
    } else if app.open.is_some() {
        Span::raw("normal")
    } else {
        Span::raw("no conversation")
    };
    let timer = match app.open_timer() {
        Some(t) => format!("timer {}", crate::timer::short(t)),
        None => "timer off".to_string(),
    };
    let mut spans = vec![conn, sep(), mode, sep(), Span::raw(timer), sep()];
    match app.open_trust() {
        Some((_, true)) => {
            spans.push(Span::styled(
                "⚠ key changed: /verify",
                Style::default()
                    .fg(Color::Yellow)
                    .add_modifier(Modifier::BOLD),
            ));
            spans.push(sep());
        }
        Some((true, false)) => {
            spans.push(Span::styled(
                "✔ verified",
                Style::default().fg(Color::Green),
            ));
            spans.push(sep());
        }
        _ => {}
    }
    match &app.status {
        Some(s) if s.error => spans.push(Span::styled(
            format!("! {}", s.text),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        Some(s) => spans.push(Span::raw(s.text.clone())),
        None => spans.push(Span::styled(
            format!("{} help", keys.help.label()),
            Style::default().fg(Color::DarkGray),
        )),
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// Every key and command, wrapped to `width` columns.
pub fn help_lines(keys: &KeyMap, width: u16) -> Vec<Line<'static>> {
    let width = width as usize;
    let bold = |t: &'static str| Line::styled(t, Style::default().add_modifier(Modifier::BOLD));
    let mut lines = vec![bold("Keys")];
    let key_help = [
        (
            "Enter".to_string(),
            "send the message, or run a /command (//text sends /text)",
        ),
        (
            "Alt-Enter".to_string(),
            "new line in the message (Shift-Enter where the terminal reports it)",
        ),
        (
            "Ctrl-A Ctrl-E".to_string(),
            "start, end of the line (Home End); Alt-B Alt-F a word back, forward",
        ),
        (
            "Ctrl-W Ctrl-U Ctrl-K".to_string(),
            "delete a word back, to the line's start, to its end; Ctrl-Y puts it back",
        ),
        (
            "↑ ↓ (composer)".to_string(),
            "the rows of the message; ↑ on an empty composer selects a message",
        ),
        (
            "Ctrl-P Ctrl-N".to_string(),
            "what you sent this session, older and newer",
        ),
        (
            "Esc".to_string(),
            "clear the message (Ctrl-P brings it back); stop replying or editing; leave the list; close this help",
        ),
        (
            "Ctrl-X, /edit".to_string(),
            "write the message in $EDITOR; Enter then sends it",
        ),
        (
            "Tab after /".to_string(),
            "complete a command, a handle, or /attach's path",
        ),
        (
            keys.toggle_secret.label(),
            "switch between the normal and the secret thread",
        ),
        (
            keys.focus.label(),
            "move between the composer and the contact list",
        ),
        (
            "↑ ↓ / k j".to_string(),
            "choose a contact (in the list); Enter opens it",
        ),
        (
            keys.contacts.label(),
            "show or hide the contact list (it hides by itself on narrow terminals)",
        ),
        (
            "PageUp PageDown".to_string(),
            "scroll the conversation by a screen (the mouse wheel scrolls too)",
        ),
        (
            "Home End".to_string(),
            "oldest loaded message / back to the newest (with Ctrl while typing)",
        ),
        (
            keys.search.label(),
            "search the open conversation (/search WORDS: every one); Enter jumps there",
        ),
        ("Esc".to_string(), "back to the composer; close this help"),
        (
            format!("? or {}", keys.help.label()),
            "this help (? on an empty composer: type on, or ??, to write a ?)",
        ),
        (keys.quit.label(), "quit"),
    ];
    for (k, what) in &key_help {
        lines.extend(entry(k, what, 17, width));
    }
    lines.extend(entry(
        "marks",
        "after your messages: …sending, ✓ on the relay, ✓✓ on their device, ✔✔ read, ✗ not sent",
        17,
        width,
    ));
    lines.push(Line::raw(""));
    lines.push(bold("A selected message (↑ on an empty composer)"));
    for (k, what) in super::rich::HELP {
        lines.extend(entry(k, what, 17, width));
    }
    lines.push(Line::raw(""));
    lines.push(bold("Commands"));
    for (cmd, what) in commands::HELP {
        lines.extend(entry(cmd, what, 26, width));
    }
    lines.push(Line::raw(""));
    let secret = format!(
        "{LOCK} SECRET threads are end-to-end encrypted (Signal Protocol), sent sealed so the relay does not learn the sender, and bound to this device. normal threads are readable by the relay."
    );
    for l in wrap(&secret, width.saturating_sub(2)) {
        lines.push(Line::from(format!("  {l}")));
    }
    lines
}

/// A key or command and what it does: in two columns, the text wrapped beside the key, or
/// under it when the columns would leave it too narrow.
fn entry(key: &str, what: &str, col: usize, width: usize) -> Vec<Line<'static>> {
    let beside = width.saturating_sub(col + 3);
    if beside < 24 || key.width() > col {
        let mut out = vec![Line::from(format!("  {key}"))];
        for l in wrap(what, width.saturating_sub(6)) {
            out.push(Line::from(format!("      {l}")));
        }
        return out;
    }
    wrap(what, beside)
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let k = if i == 0 { key } else { "" };
            let pad = col - k.width();
            Line::from(format!("  {k}{} {l}", " ".repeat(pad)))
        })
        .collect()
}

/// Where the help overlay goes on a screen of `area`.
fn help_area(area: Rect, lines: usize) -> Rect {
    centered(area, 100, (lines as u16).saturating_add(2))
}

/// How far the help can scroll on a screen of `area`: 0 when it fits.
pub fn help_scroll_max(keys: &KeyMap, area: Rect) -> usize {
    let width = area.width.min(100).saturating_sub(2);
    let lines = help_lines(keys, width).len();
    let shown = help_area(area, lines).height.saturating_sub(2) as usize;
    lines.saturating_sub(shown)
}

fn draw_help(f: &mut Frame, app: &App, keys: &KeyMap) {
    let width = f.area().width.min(100).saturating_sub(2);
    let lines = help_lines(keys, width);
    let area = help_area(f.area(), lines.len());
    let max = help_scroll_max(keys, f.area());
    let title = if max > 0 {
        " help · ↑ ↓ PageUp PageDown scroll · Esc closes "
    } else {
        " help · Esc closes "
    };
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines)
            .scroll((app.overlay_scroll.min(max) as u16, 0))
            .block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrapping_breaks_words_and_cuts_long_ones() {
        assert_eq!(wrap("aaa bbb ccc", 7), vec!["aaa bbb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("one\ntwo", 10), vec!["one", "two"]);
        assert_eq!(wrap("", 5), vec![""]);
        for line in wrap(&"word ".repeat(100), 13) {
            assert!(unicode_width::UnicodeWidthStr::width(line.as_str()) <= 13);
        }
    }
}
