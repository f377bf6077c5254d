//! The TUI without a terminal: keys pressed through the default key map into the pure app,
//! a loaded thread to press them in, and screens drawn on ratatui's TestBackend.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sotto::client::manager::{Command, ConnState, Event};
use sotto::client::store::{ContactSummary, Message, MessageKind, MessageState};
use sotto::tui::app::App;
use sotto::tui::keys::KeyMap;
use sotto::tui::render;

pub fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

pub fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

/// Presses keys in order; returns every command the app produced.
pub fn press(app: &mut App, keys: impl IntoIterator<Item = KeyEvent>) -> Vec<Command> {
    let map = KeyMap::default();
    let mut out = Vec::new();
    for k in keys {
        if let Some(a) = map.action(app, k) {
            out.extend(app.update(a));
        }
    }
    // Typing indicators have tests of their own (tests/typing_tui.rs).
    out.retain(|c| !matches!(c, Command::Typing { .. }));
    out
}

pub fn typing(text: &str) -> Vec<KeyEvent> {
    text.chars().map(|c| key(KeyCode::Char(c))).collect()
}

pub fn contact(handle: &str) -> ContactSummary {
    ContactSummary {
        handle: handle.into(),
        unread: [0, 0],
        has_secret: false,
        timers: [None, None],
        verified: false,
        key_changed: false,
        group: false,
    }
}

pub fn msg(seq: i64, contact: &str, secret: bool, outgoing: bool, text: &str) -> Message {
    Message {
        seq,
        id: format!("m{seq}"),
        contact: contact.into(),
        secret,
        outgoing,
        text: text.into(),
        // 09:30:00 UTC on some day.
        sent_at: 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 34_200_000,
        state: if outgoing {
            MessageState::Sent
        } else {
            MessageState::Received
        },
        kind: MessageKind::Text,
        timer: None,
        expires_at: None,
        reply: None,
        reactions: Vec::new(),
        edited: false,
        deleted: false,
        attachment: None,
        author: None,
    }
}

/// An app with contacts bob and carol, connected, with bob's normal thread open and loaded.
pub fn app_with_bob() -> App {
    let mut app = App::new("alice");
    app.on_event(Event::Connection(ConnState::Online));
    app.on_event(Event::Contacts(vec![contact("bob"), contact("carol")]));
    let cmds = press(&mut app, [key(KeyCode::Tab), key(KeyCode::Enter)]);
    assert!(
        matches!(&cmds[..], [Command::LoadPage { contact, secret: false, before: None, .. }] if contact == "bob")
    );
    app.on_event(Event::Page {
        contact: "bob".into(),
        secret: false,
        before: None,
        messages: vec![
            msg(1, "bob", false, false, "hello alice"),
            msg(2, "bob", false, true, "hi bob"),
        ],
        complete: true,
    });
    app
}

pub fn screen(app: &App, width: u16, height: u16) -> TestBackend {
    let mut term = Terminal::new(TestBackend::new(width, height)).unwrap();
    term.draw(|f| render::draw(f, app, &KeyMap::default()))
        .unwrap();
    term.backend().clone()
}

pub fn rows(backend: &TestBackend) -> Vec<String> {
    let buf = backend.buffer();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
        })
        .collect()
}
