//! Laying out the open thread: each loaded message as the lines it takes at a width, with the
//! date separators and the "new messages" line above it, and the visible window of them.
//!
//! Pure: takes `&App`, draws nothing and reads no clock (the zone comes with the app's
//! `Clock`). Lays out only the messages that fit, so a frame costs the same for ten messages
//! or a hundred thousand. Knows nothing of where the view is scrolled to beyond the app's
//! `Thread::scroll`/`cut`, and never changes them.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthStr;

use super::app::App;
use super::file_view::{self, Spot};
use super::marks::{row_spans, state_mark};
use super::render::{LOCK, wrap};
use crate::client::store::{Message, MessageKind, MessageState};

fn system() -> Style {
    Style::default()
        .fg(Color::DarkGray)
        .add_modifier(Modifier::ITALIC)
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

/// A line across the thread (a timer change, a key change), wrapped rather than cut.
fn system_lines(text: String, style: Style, width: usize) -> Vec<Line<'static>> {
    wrap(&text, width)
        .into_iter()
        .map(|l| Line::styled(l, style))
        .collect()
}

/// `text` centred in a rule of `─` across `width`.
fn rule(text: &str, width: usize, style: Style) -> Line<'static> {
    let label = format!(" {text} ");
    let fill = width.saturating_sub(label.width());
    let left = fill / 2;
    Line::styled(
        format!("{}{label}{}", "─".repeat(left), "─".repeat(fill - left)),
        style,
    )
}

/// Who wrote a received message: the member, in a group's thread; the contact otherwise.
fn author(m: &Message) -> &str {
    m.author.as_deref().unwrap_or(&m.contact)
}

/// The lines of one message at `width`, and where its picture goes among them.
fn message_lines(app: &App, m: &Message, width: usize) -> (Vec<Line<'static>>, Option<Spot>) {
    let time = app.clock.time(m.sent_at);
    match m.kind {
        MessageKind::Timer => {
            let who = if m.outgoing { "you" } else { author(m) };
            let what = match m.timer {
                Some(t) => format!("set disappearing messages to {}", crate::timer::short(t)),
                None => "turned disappearing messages off".to_string(),
            };
            return (
                system_lines(format!("{time} — {who} {what} —"), system(), width),
                None,
            );
        }
        MessageKind::KeyChange => {
            return (
                system_lines(
                    format!("{time} ⚠ {} · /verify to compare the new one", m.text),
                    Style::default()
                        .fg(Color::Yellow)
                        .add_modifier(Modifier::BOLD),
                    width,
                ),
                None,
            );
        }
        MessageKind::Group => {
            return (
                system_lines(format!("{time} — {} —", m.text), system(), width),
                None,
            );
        }
        MessageKind::Unsupported => {
            return (
                system_lines(
                    format!(
                        "{time} {} sent an {}",
                        author(m),
                        super::rich_view::UNSUPPORTED
                    ),
                    system(),
                    width,
                ),
                None,
            );
        }
        _ => {}
    }
    let who = if m.outgoing {
        app.me.as_str()
    } else {
        author(m)
    };
    let lock = if m.secret {
        format!("{LOCK} ")
    } else {
        String::new()
    };
    let head = format!("{time} {lock}{who}: ");
    let indent = head.width().min(width / 2);
    // A file's message leads with the file; its caption (the text) goes under it.
    let file = m.attachment.as_ref().filter(|_| !m.deleted);
    let shown = match file {
        Some(a) => file_view::head(a),
        None => super::rich_view::body(m),
    };
    let mark = state_mark(m);
    let body = format!("{shown}{mark}{}", countdown(app, m));
    let mark = shown.len()..shown.len() + mark.len();
    let who_style = if m.outgoing {
        Style::default().fg(Color::Cyan)
    } else {
        Style::default().fg(Color::Yellow)
    };
    let text_style = if m.state == MessageState::Failed {
        Style::default().fg(Color::Red)
    } else if m.deleted {
        system()
    } else {
        Style::default()
    };
    let mut lines = super::rich_view::quote(m, indent, width);
    lines.extend(
        super::wrap::rows(&body, width.saturating_sub(indent))
            .into_iter()
            .enumerate()
            .map(|(i, row)| {
                let lead = if i == 0 {
                    Span::styled(head.clone(), who_style)
                } else {
                    Span::raw(" ".repeat(indent))
                };
                let mut spans = vec![lead];
                spans.extend(row_spans(m, &body, row, mark.clone(), text_style));
                Line::from(spans)
            }),
    );
    let mut spot = None;
    if let Some(a) = file {
        let (more, at) = file_view::lines(app, m, a, indent, width);
        spot = at.map(|s| Spot {
            row: s.row + lines.len(),
            ..s
        });
        lines.extend(more);
    }
    lines.extend(super::rich_view::reactions(m, indent, width));
    if app.selected_message() == Some(m.id.as_str()) {
        for l in &mut lines {
            l.style = l.style.add_modifier(Modifier::REVERSED);
        }
    }
    (lines, spot)
}

/// The lines loaded message `i` takes at `width`: a date separator when its day is not the
/// day of the message before it (or it is the oldest loaded), the "new messages" line when it
/// is the first unread, then the message itself.
pub fn block(app: &App, i: usize, width: usize) -> Vec<Line<'static>> {
    laid_out(app, i, width).0
}

/// `block`, with where the message's picture goes (its row counted from the block's top).
fn laid_out(app: &App, i: usize, width: usize) -> (Vec<Line<'static>>, Option<Spot>) {
    let msgs = &app.thread.messages;
    let m = &msgs[i];
    let zone = app.clock.zone;
    let day = zone.day(m.sent_at);
    let mut lines = Vec::new();
    if i == 0 || zone.day(msgs[i - 1].sent_at) != day {
        lines.push(rule(&app.clock.date(day), width, system()));
    }
    if app.thread.new_from == Some(m.seq) {
        lines.push(rule(
            "new messages",
            width,
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    let (more, spot) = message_lines(app, m, width);
    let spot = spot.map(|s| Spot {
        row: s.row + lines.len(),
        ..s
    });
    lines.extend(more);
    (lines, spot)
}

/// How many lines `block(app, i, width)` takes.
pub fn height(app: &App, i: usize, width: usize) -> usize {
    block(app, i, width).len()
}

/// The line above the oldest loaded message: what lies beyond it.
fn top_marker(app: &App) -> Line<'static> {
    let marker = if app.thread.loading {
        "loading…"
    } else if app.thread.complete {
        "— start of the conversation —"
    } else {
        "PageUp or Home for more"
    };
    Line::styled(marker, Style::default().fg(Color::DarkGray))
}

/// The visible part of the open thread.
pub struct ThreadView {
    /// Exactly the lines on screen, top to bottom.
    pub lines: Vec<Line<'static>>,
    /// How many messages were laid out to fill the view: bounded by its height, whatever
    /// the length of the thread.
    pub laid_out: usize,
    /// The pictures wholly in view: the message's id and where (row counted from the top of
    /// the view).
    pub pictures: Vec<(String, Spot)>,
}

/// Lays out the open thread into `width` x `height`, from the message at the bottom of the
/// view upwards, stopping as soon as the view is full.
pub fn thread_view(app: &App, width: u16, height: u16) -> ThreadView {
    let (width, height) = (width as usize, height as usize);
    let msgs = &app.thread.messages;
    let end = msgs.len().saturating_sub(app.thread.scroll);
    let mut lines: Vec<Line> = Vec::with_capacity(height + 8);
    // Pictures with their row counted from the top of `lines` as it grows upwards.
    let mut spots: Vec<(String, Spot)> = Vec::new();
    let mut i = end;
    while i > 0 && lines.len() < height {
        i -= 1;
        let (mut b, spot) = laid_out(app, i, width);
        if i + 1 == end {
            // The bottom message may be scrolled partly out of view.
            b.truncate(b.len().saturating_sub(app.thread.cut).max(1));
        }
        for (_, s) in &mut spots {
            s.row += b.len();
        }
        if let Some(s) = spot.filter(|s| s.row + s.rows as usize <= b.len()) {
            spots.push((msgs[i].id.clone(), s));
        }
        b.append(&mut lines);
        lines = b;
    }
    if i == 0 && lines.len() < height {
        lines.insert(0, top_marker(app));
        for (_, s) in &mut spots {
            s.row += 1;
        }
    }
    let skip = lines.len().saturating_sub(height);
    ThreadView {
        lines: lines.into_iter().skip(skip).collect(),
        laid_out: end - i,
        pictures: spots
            .into_iter()
            .filter(|(_, s)| s.row >= skip)
            .map(|(id, s)| {
                (
                    id,
                    Spot {
                        row: s.row - skip,
                        ..s
                    },
                )
            })
            .collect(),
    }
}
