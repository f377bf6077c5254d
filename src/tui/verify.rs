//! The `/verify` overlay: the safety number, its QR code drawn compactly (two modules per
//! character row), the contact's trust state and the keys that change it.
//!
//! Pure drawing from `&App`. The state and the `m`/`u`/`a` hint are always on screen: the QR
//! code is left out, with a note, when the terminal is too small for it. Computes no safety
//! number and changes no trust state.

use ratatui::Frame;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use unicode_width::UnicodeWidthStr;

use super::app::App;
use super::render::{centered, wrap};

/// Light modules around the code, so a scanner finds its edge (in modules; the standard asks
/// for four, two is what phone scanners need in practice and saves four rows).
const QUIET: usize = 2;

/// The QR code of `data` in half-block characters, light modules drawn (for dark terminal
/// backgrounds), or None if it cannot be encoded.
pub fn qr_rows(data: &[u8]) -> Option<Vec<String>> {
    let code = qrcode::QrCode::new(data).ok()?;
    let n = code.width();
    let colors = code.to_colors();
    let size = n + 2 * QUIET;
    let light = |x: usize, y: usize| {
        if x < QUIET || y < QUIET || x >= n + QUIET || y >= n + QUIET {
            return true;
        }
        colors[(y - QUIET) * n + (x - QUIET)] == qrcode::Color::Light
    };
    let rows = (0..size.div_ceil(2))
        .map(|r| {
            (0..size)
                .map(|x| {
                    let top = light(x, 2 * r);
                    let bottom = 2 * r + 1 >= size || light(x, 2 * r + 1);
                    match (top, bottom) {
                        (true, true) => '█',
                        (true, false) => '▀',
                        (false, true) => '▄',
                        (false, false) => ' ',
                    }
                })
                .collect()
        })
        .collect();
    Some(rows)
}

fn wrapped(text: &str, width: usize, style: Style) -> Vec<Line<'static>> {
    wrap(text, width)
        .into_iter()
        .map(|l| Line::styled(l, style))
        .collect()
}

pub fn draw(f: &mut Frame, app: &App) {
    let screen = f.area();
    let who = app
        .open
        .as_ref()
        .map_or("this contact", |o| o.handle.as_str());
    let Some(n) = &app.safety else {
        let area = centered(screen, 60, 3);
        f.render_widget(Clear, area);
        f.render_widget(
            Paragraph::new(format!("computing the safety number with {who}…"))
                .block(Block::default().borders(Borders::ALL).title(" verify ")),
            area,
        );
        return;
    };
    let width = screen.width.min(90).saturating_sub(2) as usize;
    let mut top = wrapped(
        &format!("Safety number with {}:", n.handle),
        width,
        Style::default(),
    );
    top.push(Line::raw(""));
    let groups: Vec<&str> = n.display.split(' ').collect();
    for row in groups.chunks(4) {
        top.push(Line::styled(
            format!("    {}", row.join("  ")),
            Style::default().add_modifier(Modifier::BOLD),
        ));
    }
    top.push(Line::raw(""));
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
    let mut bottom = wrapped(&state, width, style);
    bottom.extend(wrapped(
        "Compare the digits (or scan the code) with the other side, in person or on a call.",
        width,
        Style::default(),
    ));
    bottom.extend(wrapped(
        if n.key_changed {
            "a accept the new key · m mark verified · Esc close"
        } else {
            "m mark verified · u unmark · Esc close"
        },
        width,
        Style::default().add_modifier(Modifier::BOLD),
    ));
    let room = (screen.height as usize).saturating_sub(2 + top.len() + bottom.len());
    let mut lines = top;
    match qr_rows(&n.scannable) {
        Some(qr) if qr.len() < room && qr[0].width() + 2 <= width => {
            lines.extend(qr.into_iter().map(|r| Line::raw(format!("  {r}"))));
            lines.push(Line::raw(""));
        }
        Some(qr) => {
            let need = 2 + lines.len() + bottom.len() + qr.len() + 1;
            lines.extend(wrapped(
                &format!(
                    "(the QR code needs a terminal of {} columns and {need} rows: enlarge it to scan)",
                    qr[0].width() + 4,
                ),
                width,
                Style::default().fg(Color::DarkGray),
            ));
        }
        None => lines.push(Line::raw("(no QR code: the safety number did not fit)")),
    }
    lines.extend(bottom);
    let area = centered(screen, 90, lines.len() as u16 + 2);
    // Should even the text not fit, the state and the hint at the end are what must show.
    let skip = lines
        .len()
        .saturating_sub(area.height.saturating_sub(2) as usize);
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines.into_iter().skip(skip).collect::<Vec<_>>()).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" verify · Esc closes "),
        ),
        area,
    );
}
