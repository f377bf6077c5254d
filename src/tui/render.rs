//! Drawing the screen: a pure function of the app state.
//!
//! Owns layout, wrapping and the look of normal and secret threads. Takes `&App` only, does
//! no I/O, and lays out only the messages that fit on screen, so a frame costs the same for
//! ten messages or a hundred thousand.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, List, ListItem, Paragraph};
use unicode_width::UnicodeWidthStr;

use super::app::{App, Focus, Overlay};
use super::commands;
use super::composer::{self, MAX_ROWS};
use super::keys::KeyMap;
use crate::client::manager::ConnState;
use crate::client::store::{Message, MessageKind, MessageState};

pub const LOCK: &str = "🔒";
const CONTACTS_WIDTH: u16 = 26;
const SECRET: Color = Color::Magenta;

/// Draws the whole screen.
pub fn draw(f: &mut Frame, app: &App, keys: &KeyMap) {
    // The composer grows with its text, up to a few rows, inside its borders.
    let typed = app
        .composer
        .view(f.area().width.saturating_sub(2) as usize, MAX_ROWS);
    let [main, composer, status] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(typed.rows.len() as u16 + 2),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let [contacts, thread] =
        Layout::horizontal([Constraint::Length(CONTACTS_WIDTH), Constraint::Min(10)]).areas(main);
    draw_contacts(f, app, contacts);
    draw_thread(f, app, thread);
    draw_composer(f, app, keys, typed, composer);
    draw_status(f, app, keys, status);
    match app.overlay {
        Some(Overlay::Help) => draw_help(f, keys),
        Some(Overlay::Verify) => draw_verify(f, app),
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

fn clock(ms: u64) -> String {
    let secs = ms / 1000 % 86_400;
    format!("{:02}:{:02}", secs / 3600, secs / 60 % 60)
}

/// Word-wraps `text` to `width` columns (see `wrap::rows`).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    super::wrap::rows(text, width)
        .into_iter()
        .map(|r| text[r].to_string())
        .collect()
}

fn state_mark(m: &Message) -> &'static str {
    match (m.outgoing, m.state) {
        (false, _) => "",
        (true, MessageState::Sending) => " …sending",
        (true, MessageState::Sent) => " ✓",
        (true, MessageState::Received) => "",
        (true, MessageState::Delivered) => " ✓✓",
        (true, MessageState::Failed) => " ✗ not sent",
    }
}

/// Time left until `at`, as the countdown shows it: 24s, 4m, 2h.
fn left(at: u64, now: u64) -> String {
    let secs = at.saturating_sub(now).div_ceil(1000);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s.div_ceil(60)),
        s => format!("{}h", s.div_ceil(3600)),
    }
}

/// The countdown after a message: `⏱ 24s` once counting, `⏱ 30s` (its timer) before.
fn countdown(app: &App, m: &Message) -> String {
    match (m.expires_at, m.timer) {
        (Some(at), _) => format!(" ⏱ {}", left(at, app.now_ms)),
        (None, Some(t)) => format!(" ⏱ {}", crate::timer::short(t)),
        (None, None) => String::new(),
    }
}

/// A timer change as a line across the thread.
fn timer_line(m: &Message) -> Line<'static> {
    let who = if m.outgoing {
        "you"
    } else {
        m.contact.as_str()
    };
    let what = match m.timer {
        Some(t) => format!("set disappearing messages to {}", crate::timer::short(t)),
        None => "turned disappearing messages off".to_string(),
    };
    Line::styled(
        format!("{} — {who} {what} —", clock(m.sent_at)),
        Style::default()
            .fg(Color::DarkGray)
            .add_modifier(Modifier::ITALIC),
    )
}

/// The lines of one message at `width`.
fn message_lines(app: &App, m: &Message, width: usize) -> Vec<Line<'static>> {
    match m.kind {
        MessageKind::Timer => return vec![timer_line(m)],
        MessageKind::KeyChange => {
            return vec![Line::styled(
                format!(
                    "{} ⚠ {} · /verify to compare the new one",
                    clock(m.sent_at),
                    m.text
                ),
                Style::default()
                    .fg(Color::Yellow)
                    .add_modifier(Modifier::BOLD),
            )];
        }
        MessageKind::Text => {}
    }
    let who = if m.outgoing {
        app.me.clone()
    } else {
        m.contact.clone()
    };
    let lock = if m.secret {
        format!("{LOCK} ")
    } else {
        String::new()
    };
    let head = format!("{} {lock}{who}: ", clock(m.sent_at));
    let indent = head.width().min(width / 2);
    let body = format!("{}{}{}", m.text, state_mark(m), countdown(app, m));
    let who_style = if m.outgoing {
        Style::default().fg(Color::Cyan)
    } else {
        Style::default().fg(Color::Yellow)
    };
    let text_style = if m.state == MessageState::Failed {
        Style::default().fg(Color::Red)
    } else {
        Style::default()
    };
    wrap(&body, width.saturating_sub(indent))
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let lead = if i == 0 {
                Span::styled(head.clone(), who_style)
            } else {
                Span::raw(" ".repeat(indent))
            };
            Line::from(vec![lead, Span::styled(chunk, text_style)])
        })
        .collect()
}

/// The visible part of the open thread.
pub struct ThreadView {
    /// Exactly the lines on screen, top to bottom.
    pub lines: Vec<Line<'static>>,
    /// How many messages were laid out to fill the view: bounded by its height, whatever
    /// the length of the thread.
    pub laid_out: usize,
}

/// Lays out the open thread into `width` x `height`, from the newest visible message upwards,
/// stopping as soon as the view is full.
pub fn thread_view(app: &App, width: u16, height: u16) -> ThreadView {
    let (width, height) = (width as usize, height as usize);
    let msgs = &app.thread.messages;
    let end = msgs.len().saturating_sub(app.thread.scroll);
    let mut lines: Vec<Line> = Vec::with_capacity(height + 8);
    let mut i = end;
    while i > 0 && lines.len() < height {
        i -= 1;
        let mut block = message_lines(app, &msgs[i], width);
        block.append(&mut lines);
        lines = block;
    }
    if i == 0 && lines.len() < height {
        let marker = if app.thread.loading {
            "loading…"
        } else if app.thread.complete {
            "— start of the conversation —"
        } else {
            "PageUp for more"
        };
        lines.insert(
            0,
            Line::styled(marker, Style::default().fg(Color::DarkGray)),
        );
    }
    let skip = lines.len().saturating_sub(height);
    ThreadView {
        lines: lines.into_iter().skip(skip).collect(),
        laid_out: end - i,
    }
}

fn draw_thread(f: &mut Frame, app: &App, area: Rect) {
    let secret = app.secret();
    let title = match &app.open {
        Some(o) if o.secret => format!(" {LOCK} SECRET · {} ", o.handle),
        Some(o) => format!(" {} · normal ", o.handle),
        None => " sotto ".to_string(),
    };
    let block = if secret {
        Block::default()
            .borders(Borders::ALL)
            .border_type(BorderType::Double)
            .border_style(Style::default().fg(SECRET))
            .title(Span::styled(
                title,
                Style::default().fg(SECRET).add_modifier(Modifier::BOLD),
            ))
    } else {
        Block::default().borders(Borders::ALL).title(title)
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
    if app.thread.scroll > 0 {
        let more = format!(" ↓ {} newer ", app.thread.scroll);
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
    let (what, other) = if app.secret() {
        (format!("{LOCK} secret message"), "normal")
    } else {
        ("message".to_string(), "secret")
    };
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

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn draw_help(f: &mut Frame, keys: &KeyMap) {
    let mut lines = vec![Line::styled(
        "Keys",
        Style::default().add_modifier(Modifier::BOLD),
    )];
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
            "the lines of the message, then what you sent this session",
        ),
        (
            "Esc".to_string(),
            "clear the message (↑ brings it back); leave the list; close this help",
        ),
        (
            "Ctrl-X, /edit".to_string(),
            "write the message in $EDITOR; Enter then sends it",
        ),
        ("Tab after /".to_string(), "complete a command or a handle"),
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
        ("PageUp PageDown".to_string(), "scroll the conversation"),
        (
            format!("? or {}", keys.help.label()),
            "this help (? on an empty composer: type on, or ??, to write a ?)",
        ),
        (keys.quit.label(), "quit"),
    ];
    let marks =
        "  after your messages: …sending   ✓ on the relay   ✓✓ on their device   ✗ not sent";
    for (k, what) in key_help {
        lines.push(Line::from(format!("  {k:<17} {what}")));
    }
    lines.push(Line::from(marks));
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "Commands",
        Style::default().add_modifier(Modifier::BOLD),
    ));
    for (cmd, what) in commands::HELP {
        lines.push(Line::from(format!("  {cmd:<26} {what}")));
    }
    lines.push(Line::raw(""));
    lines.push(Line::from(format!(
        "  {LOCK} SECRET threads are end-to-end encrypted (Signal Protocol), sent sealed so the relay"
    )));
    lines.push(Line::from("  does not learn the sender, and bound to this device. normal threads are readable by the relay."));
    let area = centered(f.area(), 100, lines.len() as u16 + 2);
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" help · Esc closes "),
        ),
        area,
    );
}

fn draw_verify(f: &mut Frame, app: &App) {
    let who = app
        .open
        .as_ref()
        .map_or("this contact", |o| o.handle.as_str());
    let Some(n) = &app.safety else {
        let area = centered(f.area(), 60, 3);
        f.render_widget(Clear, area);
        f.render_widget(
            Paragraph::new(format!("computing the safety number with {who}…"))
                .block(Block::default().borders(Borders::ALL).title(" verify ")),
            area,
        );
        return;
    };
    let mut lines = vec![
        Line::from(format!("Safety number with {}:", n.handle)),
        Line::raw(""),
    ];
    let groups: Vec<&str> = n.display.split(' ').collect();
    for row in groups.chunks(4) {
        lines.push(Line::styled(
            format!("    {}", row.join("  ")),
            Style::default().add_modifier(Modifier::BOLD),
        ));
    }
    lines.push(Line::raw(""));
    for row in crate::client::trust::qr(&n.scannable).lines() {
        lines.push(Line::raw(format!("  {row}")));
    }
    lines.push(Line::raw(""));
    let (state, style) = if n.key_changed {
        (
            format!(
                "⚠ {}'s key CHANGED: secret messages are blocked until you accept it",
                n.handle
            ),
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        )
    } else if n.verified {
        ("✔ verified".to_string(), Style::default().fg(Color::Green))
    } else {
        ("not verified".to_string(), Style::default())
    };
    lines.push(Line::styled(state, style));
    lines.push(Line::raw(
        "Compare the digits (or scan the code) with the other side, in person or on a call.",
    ));
    lines.push(Line::raw(if n.key_changed {
        "a accept the new key · m mark verified · Esc close"
    } else {
        "m mark verified · u unmark · Esc close"
    }));
    let area = centered(f.area(), 90, lines.len() as u16 + 2);
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" verify · Esc closes "),
        ),
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
