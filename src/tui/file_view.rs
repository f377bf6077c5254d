//! How a message's file looks in the thread: `📎 name · 12.3 MiB`, the caption under it, and
//! one line for where the file is (a progress bar with rate and time left, "Enter to
//! download", the error and "Enter to retry", the keys of a Ready one when selected), then
//! the rows its picture takes, or the `[image: …]` placeholder when pictures are off.
//!
//! Pure: takes the app and a message, returns lines and where the picture goes. Must not lay
//! out the thread around them (`thread_view`) or draw the picture itself (`pictures`).

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use unicode_width::UnicodeWidthStr;

use super::app::App;
use super::render::wrap;
use crate::client::attachment::{Attachment, AttachmentState};
use crate::client::store::Message;

/// Cells of the progress bar.
const BAR: usize = 16;

/// A size as people read it: 512 B, 3.4 KiB, 12.3 MiB, 1.1 GiB.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Time left as the progress line shows it: 8s, 3m 20s, 1h 5m.
fn eta(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// The first line of a file message: what and how big.
pub fn head(a: &Attachment) -> String {
    format!("📎 {} · {}", a.name, size(a.size))
}

/// The parts of a progress line: `[████░░░░] 4.2 MiB / 12.3 MiB`, then `1.1 MiB/s` and
/// `8s left` once two reports have given a rate.
pub fn progress(done: u64, total: u64, rate: Option<f64>) -> Vec<String> {
    let done = done.min(total);
    let filled = if total == 0 {
        BAR
    } else {
        (done as u128 * BAR as u128 / total as u128) as usize
    };
    let mut parts = vec![format!(
        "[{}{}] {} / {}",
        "█".repeat(filled),
        "░".repeat(BAR - filled),
        size(done),
        size(total)
    )];
    if let Some(rate) = rate.filter(|r| *r >= 1.0) {
        let left = ((total - done) as f64 / rate).ceil() as u64;
        parts.push(format!("{}/s", size(rate as u64)));
        parts.push(format!("{} left", eta(left)));
    }
    parts
}

/// `parts` joined by ` · ` on as few rows of `room` columns as they fit, a part never split
/// between rows unless it is wider than a row by itself.
fn join_fitting(parts: &[String], room: usize) -> Vec<String> {
    let mut rows: Vec<String> = Vec::new();
    for part in parts {
        match rows.last_mut() {
            Some(row) if row.width() + 3 + part.width() <= room => {
                row.push_str(" · ");
                row.push_str(part);
            }
            _ => rows.push(part.clone()),
        }
    }
    rows
}

/// Where a message's picture goes among its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    /// The first of its rows, counted from the message's first line.
    pub row: usize,
    /// Its column, counted from the thread's left edge.
    pub col: u16,
    pub rows: u16,
}

fn dim() -> Style {
    Style::default()
        .fg(Color::DarkGray)
        .add_modifier(Modifier::ITALIC)
}

/// The lines under a file message's first line, indented by `indent`, and its picture's spot
/// (its row counted from the first of these lines).
pub fn lines(
    app: &App,
    m: &Message,
    a: &Attachment,
    indent: usize,
    width: usize,
) -> (Vec<Line<'static>>, Option<Spot>) {
    let room = width.saturating_sub(indent).max(1);
    let pad = " ".repeat(indent);
    let mut out: Vec<Line<'static>> = Vec::new();
    let push = |text: &str, style: Style, out: &mut Vec<Line<'static>>| {
        for row in wrap(text, room) {
            out.push(Line::styled(format!("{pad}{row}"), style));
        }
    };
    if !m.text.is_empty() {
        push(&m.text, Style::default(), &mut out);
    }
    let selected = app.selected_message() == Some(m.id.as_str());
    match &a.state {
        AttachmentState::Uploading { done } | AttachmentState::Downloading { done } => {
            let arrow = if matches!(a.state, AttachmentState::Uploading { .. }) {
                "↑"
            } else {
                "↓"
            };
            let mut parts = progress(*done, a.size, app.files.rate(&m.id));
            parts[0] = format!("{arrow} {}", parts[0]);
            for row in join_fitting(&parts, room) {
                push(&row, Style::default().fg(Color::Cyan), &mut out);
            }
        }
        AttachmentState::Remote => push(
            &format!("Enter to download ({})", size(a.size)),
            dim(),
            &mut out,
        ),
        AttachmentState::Failed { error } => push(
            &format!("✗ {error} · Enter to retry"),
            Style::default().fg(Color::Red),
            &mut out,
        ),
        AttachmentState::Ready => {
            if selected {
                push("o open · s save", dim(), &mut out);
            }
            if a.is_image() {
                return picture(app, m, a, indent, out);
            }
        }
    }
    (out, None)
}

/// A Ready image: the rows its picture takes once decoded, or the one-line placeholder when
/// pictures are off.
fn picture(
    app: &App,
    m: &Message,
    a: &Attachment,
    indent: usize,
    mut out: Vec<Line<'static>>,
) -> (Vec<Line<'static>>, Option<Spot>) {
    let shown = app.files.pictures.get(&m.id);
    if !app.files.images {
        let dims = shown
            .map(|p| format!(" {}×{}", p.width, p.height))
            .unwrap_or_default();
        out.push(Line::styled(
            format!("{}[image: {}{dims}]", " ".repeat(indent), a.name),
            dim(),
        ));
        return (out, None);
    }
    let Some(rows) = shown.and_then(|p| p.rows()) else {
        return (out, None);
    };
    let spot = Spot {
        row: out.len(),
        col: indent as u16,
        rows,
    };
    out.extend((0..rows).map(|_| Line::raw("")));
    (out, Some(spot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_progress_read_as_people_say_them() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(12_897_485), "12.3 MiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(
            progress(0, 1024, None),
            ["[░░░░░░░░░░░░░░░░] 0 B / 1.0 KiB"]
        );
        let parts = progress(6 * 1024 * 1024, 12 * 1024 * 1024, Some(1024.0 * 1024.0));
        assert_eq!(
            join_fitting(&parts, 80),
            ["[████████░░░░░░░░] 6.0 MiB / 12.0 MiB · 1.0 MiB/s · 6s left"]
        );
        assert_eq!(
            join_fitting(&parts, 40),
            [
                "[████████░░░░░░░░] 6.0 MiB / 12.0 MiB",
                "1.0 MiB/s · 6s left"
            ]
        );
        // More done than the total (the ciphertext is a little larger) is full, not a panic.
        assert_eq!(
            progress(20, 10, Some(5.0))[0],
            "[████████████████] 10 B / 10 B"
        );
        assert_eq!(eta(200), "3m 20s");
        assert_eq!(eta(3900), "1h 5m");
    }
}
