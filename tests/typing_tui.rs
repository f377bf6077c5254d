//! Read marks and typing in the chat screen, without a terminal: what the app tells the
//! manager while the user types, and screens drawn on ratatui's TestBackend at 80x24.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sotto::client::manager::{Command, ConnState, Event};
use sotto::client::store::{ContactSummary, Message, MessageKind, MessageState};
use sotto::tui::app::App;
use sotto::tui::keys::KeyMap;
use sotto::tui::typing::IDLE_MS;

/// alice's app with bob's normal thread open, holding `messages`.
fn alice_with_bob(messages: Vec<Message>) -> App {
    let mut app = App::new("alice");
    app.on_event(Event::Connection(ConnState::Online));
    app.on_event(Event::Contacts(vec![ContactSummary {
        handle: "bob".into(),
        unread: [0, 0],
        has_secret: false,
        timers: [None, None],
        verified: false,
        key_changed: false,
        group: false,
    }]));
    app.on_event(Event::Connection(ConnState::Online));
    app.update(sotto::tui::app::Action::Open);
    app.on_event(Event::Page {
        contact: "bob".into(),
        secret: false,
        before: None,
        messages,
        complete: true,
    });
    app
}

fn ours(seq: i64, text: &str, state: MessageState) -> Message {
    Message {
        seq,
        id: format!("m{seq}"),
        contact: "bob".into(),
        secret: false,
        outgoing: true,
        text: text.into(),
        // 09:30 UTC.
        sent_at: 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 34_200_000,
        state,
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

fn screen(app: &App) -> TestBackend {
    let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
    term.draw(|f| sotto::tui::render::draw(f, app, &KeyMap::default()))
        .unwrap();
    term.backend().clone()
}

fn text(backend: &TestBackend) -> String {
    backend
        .buffer()
        .content()
        .iter()
        .map(|c| c.symbol())
        .collect()
}

/// Presses `keys` at `now`; returns the typing indicators the app sent.
fn press(app: &mut App, now: u64, keys: &[KeyEvent]) -> Vec<(bool, bool)> {
    app.now_ms = now;
    let map = KeyMap::default();
    let mut cmds = Vec::new();
    for k in keys {
        if let Some(a) = map.action(app, *k) {
            cmds.extend(app.update(a));
        }
    }
    cmds.into_iter()
        .filter_map(|c| match c {
            Command::Typing { to, secret, active } if to == "bob" => Some((secret, active)),
            Command::Typing { .. } => panic!("typing told to someone else"),
            _ => None,
        })
        .collect()
}

fn chars(s: &str) -> Vec<KeyEvent> {
    s.chars()
        .map(|c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
        .collect()
}

#[test]
fn read_marks_differ_from_delivered_ones_in_glyph_and_colour() {
    let app = alice_with_bob(vec![
        ours(1, "on the relay", MessageState::Sent),
        ours(2, "on bob's device", MessageState::Delivered),
        ours(3, "seen by bob", MessageState::Read),
    ]);
    let backend = screen(&app);
    let shown = text(&backend);
    assert!(shown.contains("on bob's device ✓✓"), "{shown}");
    assert!(shown.contains("seen by bob ✔✔"), "{shown}");
    // The read mark has a colour of its own; the text before it does not.
    let buf = backend.buffer();
    let (mut read_fg, mut text_fg) = (None, None);
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            let cell = &buf[(x, y)];
            if cell.symbol() == "✔" {
                read_fg = Some(cell.fg);
            }
            if cell.symbol() == "✓" {
                text_fg = Some(cell.fg);
            }
        }
    }
    assert_ne!(read_fg, text_fg);
    insta::assert_snapshot!("read_marks_80x24", backend);
}

#[test]
fn the_typing_line_shows_above_the_composer_while_the_peer_types() {
    let mut app = alice_with_bob(vec![ours(1, "lunch?", MessageState::Read)]);
    app.on_event(Event::Typing {
        contact: "bob".into(),
        secret: false,
        active: true,
    });
    // bob typing in his secret thread does not show in the normal one (checked below, once
    // the normal thread's typing has stopped).
    app.on_event(Event::Typing {
        contact: "bob".into(),
        secret: true,
        active: true,
    });
    let backend = screen(&app);
    assert!(text(&backend).contains("bob is typing…"));
    insta::assert_snapshot!("typing_line_80x24", backend);
    app.on_event(Event::Typing {
        contact: "bob".into(),
        secret: false,
        active: false,
    });
    assert!(!text(&screen(&app)).contains("is typing"));
}

#[test]
fn typing_tells_the_open_thread_every_three_seconds_and_stops_on_send_clear_or_idle() {
    let mut app = alice_with_bob(Vec::new());
    let t0 = 1_000_000;
    assert_eq!(press(&mut app, t0, &chars("hel")), [(false, true)]);
    assert!(press(&mut app, t0 + 2_999, &chars("l")).is_empty());
    assert_eq!(press(&mut app, t0 + 3_000, &chars("o")), [(false, true)]);
    // Moving the cursor is not typing.
    let left = KeyEvent::new(KeyCode::Left, KeyModifiers::NONE);
    assert!(press(&mut app, t0 + 7_000, &[left]).is_empty());
    assert_eq!(app.typing.idle_at(), Some(t0 + 3_000 + IDLE_MS));
    assert_eq!(
        app.typing
            .tick(t0 + 3_000 + IDLE_MS)
            .iter()
            .filter(|c| matches!(c, Command::Typing { active: false, .. }))
            .count(),
        1
    );
    // Typing again, then sending: stopped with the message.
    assert_eq!(press(&mut app, t0 + 9_000, &chars("!")), [(false, true)]);
    let enter = KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE);
    assert_eq!(press(&mut app, t0 + 9_100, &[enter]), [(false, false)]);
    // Emptying the composer stops it; a /command is not typing.
    assert_eq!(press(&mut app, t0 + 20_000, &chars("x")), [(false, true)]);
    let esc = KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE);
    assert_eq!(press(&mut app, t0 + 20_100, &[esc]), [(false, false)]);
    assert!(press(&mut app, t0 + 30_000, &chars("/timer")).is_empty());
    assert_eq!(app.typing.idle_at(), None);
}
