//! Where each part of the chat screen goes for a terminal size: the contact list (when shown),
//! the thread, the composer and the status line.
//!
//! Pure: the drawing and the app's scrolling (which needs the thread's size) both ask here, so
//! they agree. Draws nothing.

use ratatui::layout::{Constraint, Layout, Rect};

use super::app::{App, Focus};
use super::composer::MAX_ROWS;

/// The contact list's width when shown.
pub const CONTACTS_WIDTH: u16 = 26;
/// Below this terminal width the contact list hides unless the config says otherwise.
pub const DEFAULT_CONTACTS_MIN_WIDTH: u16 = 80;

pub struct Areas {
    pub contacts: Option<Rect>,
    pub thread: Rect,
    pub composer: Rect,
    pub status: Rect,
}

/// Whether the contact list is on screen at `width` columns: the user's toggle if any, else
/// the configured minimum width; always while the list has the focus.
pub fn contacts_shown(app: &App, width: u16) -> bool {
    app.focus == Focus::Contacts || app.show_contacts.unwrap_or(width >= app.contacts_min_width)
}

/// The columns the composer's text wraps at in an area `width` columns wide: inside its
/// borders. The drawing and the composer's Up/Down (which move by these rows) agree on it.
pub fn composer_width(width: u16) -> usize {
    width.saturating_sub(2) as usize
}

pub fn areas(app: &App, area: Rect) -> Areas {
    // The composer grows with its text (wrapped inside its borders), up to a few rows.
    let composer_lines = app
        .composer
        .view(composer_width(area.width), MAX_ROWS)
        .rows
        .len() as u16;
    let [main, composer, status] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(composer_lines + 2),
        Constraint::Length(1),
    ])
    .areas(area);
    if !contacts_shown(app, area.width) {
        return Areas {
            contacts: None,
            thread: main,
            composer,
            status,
        };
    }
    let [contacts, thread] =
        Layout::horizontal([Constraint::Length(CONTACTS_WIDTH), Constraint::Min(10)]).areas(main);
    Areas {
        contacts: Some(contacts),
        thread,
        composer,
        status,
    }
}

/// The text area inside the thread's border, as (width, height).
pub fn thread_inner(app: &App, width: u16, height: u16) -> (u16, u16) {
    let t = areas(app, Rect::new(0, 0, width, height)).thread;
    (t.width.saturating_sub(2), t.height.saturating_sub(2))
}
