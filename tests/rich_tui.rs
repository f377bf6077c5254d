//! Replies, reactions, edits and deletions in the TUI without a terminal: selection mode's keys
//! through the key map and the pure app (the commands they send), and the thread as drawn on
//! ratatui's TestBackend.

mod common;

use common::tui::{app_with_bob, ctrl, key, msg, press, rows, screen, typing};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use sotto::client::manager::{Change, Command, Event};
use sotto::client::store::{Expired, Message, MessageKind, MessageState, Quote, Reaction};
use sotto::tui::app::App;

fn shift(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::SHIFT)
}

fn quote(of: &Message, gone: bool) -> Option<Quote> {
    Some(Quote {
        id: of.id.clone(),
        excerpt: if gone { String::new() } else { of.text.clone() },
        gone,
    })
}

/// bob's thread with a reply, reactions, an edited, a deleted and an unsupported message.
fn rich_app() -> App {
    let mut app = app_with_bob();
    let first = msg(
        1,
        "bob",
        false,
        false,
        "are we still on for lunch tomorrow?",
    );
    let mut m1 = first.clone();
    m1.reactions = vec![
        Reaction {
            emoji: "👍".into(),
            count: 2,
            mine: true,
        },
        Reaction {
            emoji: "😂".into(),
            count: 1,
            mine: false,
        },
    ];
    let mut m2 = msg(2, "bob", false, true, "yes, noon at the usual place");
    m2.reply = quote(&first, false);
    m2.edited = true;
    let mut m3 = msg(3, "bob", false, true, "");
    m3.deleted = true;
    let mut m4 = msg(4, "bob", false, false, "what was that?");
    m4.reply = quote(&m3, true);
    let mut m5 = msg(5, "bob", false, false, "");
    m5.kind = MessageKind::Unsupported;
    app.thread.messages = vec![m1, m2, m3, m4, m5];
    app.now_ms = app.thread.messages[0].sent_at + 60_000;
    app.status = None;
    app
}

#[test]
fn replies_reactions_edits_deletions_and_unsupported_messages_are_drawn() {
    let app = rich_app();
    let backend = screen(&app, 80, 24);
    let text = rows(&backend).join("\n");
    for wanted in [
        "↳ are we still on for lunch tomorrow?",
        "yes, noon at the usual place (edited)",
        "message deleted",
        "↳ original message gone",
        "unsupported message (update sotto)",
    ] {
        assert!(text.contains(wanted), "{wanted:?} not in\n{text}");
    }
    // Each emoji with its count (a wide emoji's second cell is blank in the buffer).
    let reactions = text.lines().find(|l| l.contains('👍')).unwrap();
    let squeezed = reactions.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(squeezed.contains("👍 2 😂 1"), "{reactions}");
    insta::assert_snapshot!("rich_thread_80x24", backend);
}

fn selected(app: &App) -> Option<&str> {
    app.selected_message()
}

#[test]
fn up_on_an_empty_composer_selects_and_j_k_esc_move_and_leave() {
    let mut app = rich_app();
    press(&mut app, [key(KeyCode::Up)]);
    assert_eq!(selected(&app), Some("m5"));
    press(&mut app, [key(KeyCode::Char('k')), key(KeyCode::Up)]);
    assert_eq!(selected(&app), Some("m3"));
    press(&mut app, [key(KeyCode::Char('j'))]);
    assert_eq!(selected(&app), Some("m4"));
    // The selected message is drawn reversed.
    let backend = screen(&app, 80, 24);
    let buf = backend.buffer();
    let reversed = (0..buf.area.height).any(|y| {
        (0..buf.area.width).any(|x| {
            buf[(x, y)]
                .modifier
                .contains(ratatui::style::Modifier::REVERSED)
        })
    });
    assert!(reversed);
    // g goes to what a reply quotes, unless it is gone.
    press(&mut app, [key(KeyCode::Char('g'))]);
    assert_eq!(selected(&app), Some("m4"));
    assert!(
        app.status
            .as_ref()
            .unwrap()
            .text
            .contains("original message gone")
    );
    press(&mut app, [key(KeyCode::Char('k')), key(KeyCode::Char('k'))]);
    press(&mut app, [key(KeyCode::Char('g'))]);
    assert_eq!(selected(&app), Some("m1"));
    press(&mut app, [key(KeyCode::Esc)]);
    assert_eq!(selected(&app), None);
    // With text in the composer, Up stays in the composer.
    press(&mut app, typing("draft"));
    press(&mut app, [key(KeyCode::Up)]);
    assert_eq!(selected(&app), None);
}

#[test]
fn enter_replies_and_the_composer_says_to_what() {
    let mut app = rich_app();
    // Up selects the newest, four more reach the first.
    press(&mut app, [key(KeyCode::Up); 5]);
    press(&mut app, [key(KeyCode::Enter)]);
    assert_eq!(selected(&app), None);
    let title = rows(&screen(&app, 80, 24)).join("\n");
    assert!(title.contains("replying to “are we"), "{title}");
    let cmds = press(
        &mut app,
        typing("see you there")
            .into_iter()
            .chain([key(KeyCode::Enter)]),
    );
    match &cmds[..] {
        [Command::Send { text, reply_to, .. }] => {
            assert_eq!(text, "see you there");
            assert_eq!(reply_to.as_deref(), Some("m1"));
        }
        other => panic!("{other:?}"),
    }
    // The next message is no reply; Esc on an empty composer stops replying.
    press(&mut app, [key(KeyCode::Up)]);
    for _ in 0..4 {
        press(&mut app, [key(KeyCode::Char('k'))]);
    }
    press(&mut app, [key(KeyCode::Char('r')), key(KeyCode::Esc)]);
    let cmds = press(
        &mut app,
        typing("plain").into_iter().chain([key(KeyCode::Enter)]),
    );
    assert!(matches!(&cmds[..], [Command::Send { reply_to: None, .. }]));
}

#[test]
fn r_on_our_failed_message_sends_it_again() {
    let mut app = rich_app();
    app.thread.messages[1].state = MessageState::Failed;
    press(&mut app, [key(KeyCode::Up)]);
    for _ in 0..3 {
        press(&mut app, [key(KeyCode::Char('k'))]);
    }
    let cmds = press(&mut app, [key(KeyCode::Char('r'))]);
    assert!(
        matches!(&cmds[..], [Command::Retry { id, .. }] if id == "m2"),
        "{cmds:?}"
    );
}

#[test]
fn e_opens_the_picker_a_digit_or_typed_emoji_reacts() {
    let mut app = rich_app();
    let to_first = [
        key(KeyCode::Up),
        key(KeyCode::Char('k')),
        key(KeyCode::Char('k')),
        key(KeyCode::Char('k')),
        key(KeyCode::Char('k')),
    ];
    press(&mut app, to_first);
    press(&mut app, [key(KeyCode::Char('e'))]);
    assert!(app.status.as_ref().unwrap().text.contains("1 👍"));
    let cmds = press(&mut app, [key(KeyCode::Char('2'))]);
    assert!(
        matches!(&cmds[..], [Command::React { target, emoji: Some(e), .. }] if target == "m1" && e == "❤️"),
        "{cmds:?}"
    );
    // Still selected: another reaction, typed.
    press(&mut app, [key(KeyCode::Char('e'))]);
    let cmds = press(&mut app, [key(KeyCode::Char('🎉')), key(KeyCode::Enter)]);
    assert!(
        matches!(&cmds[..], [Command::React { emoji: Some(e), .. }] if e == "🎉"),
        "{cmds:?}"
    );
    // Esc closes the picker without reacting; a deleted message takes none.
    press(&mut app, [key(KeyCode::Char('e')), key(KeyCode::Esc)]);
    let cmds = press(
        &mut app,
        [
            key(KeyCode::Char('j')),
            key(KeyCode::Char('j')),
            key(KeyCode::Char('e')),
        ],
    );
    assert!(cmds.is_empty());
    assert_eq!(app.rich.picker, None);
}

#[test]
fn shift_e_edits_our_message_and_only_ours() {
    let mut app = rich_app();
    press(&mut app, [key(KeyCode::Up)]);
    for _ in 0..4 {
        press(&mut app, [key(KeyCode::Char('k'))]);
    }
    // bob's message: refused.
    assert!(press(&mut app, [shift('E')]).is_empty());
    assert!(app.status.as_ref().unwrap().text.contains("only your own"));
    assert_eq!(app.composer.text(), "");
    press(&mut app, [key(KeyCode::Char('j')), shift('E')]);
    assert_eq!(app.composer.text(), "yes, noon at the usual place");
    assert!(rows(&screen(&app, 80, 24)).join("\n").contains("editing"));
    let cmds = press(
        &mut app,
        [ctrl('w')]
            .into_iter()
            .chain(typing("spot"))
            .chain([key(KeyCode::Enter)]),
    );
    match &cmds[..] {
        [Command::Edit { target, text, .. }] => {
            assert_eq!(
                (target.as_str(), text.as_str()),
                ("m2", "yes, noon at the usual spot")
            )
        }
        other => panic!("{other:?}"),
    }
    // Too old to edit.
    app.now_ms += 25 * 3600 * 1000;
    press(
        &mut app,
        [
            key(KeyCode::Up),
            key(KeyCode::Char('k')),
            key(KeyCode::Char('k')),
            key(KeyCode::Char('k')),
            shift('E'),
        ],
    );
    assert!(app.status.as_ref().unwrap().text.contains("24 hours"));
    assert_eq!(app.composer.text(), "");
}

#[test]
fn deleting_asks_first_for_everyone_ours_only_and_for_me_any() {
    let mut app = rich_app();
    let to_m2 = [
        key(KeyCode::Up),
        key(KeyCode::Char('k')),
        key(KeyCode::Char('k')),
        key(KeyCode::Char('k')),
    ];
    press(&mut app, to_m2);
    // Any key but y keeps it.
    assert!(press(&mut app, [shift('D'), key(KeyCode::Char('n'))]).is_empty());
    let cmds = press(&mut app, [shift('D'), key(KeyCode::Char('y'))]);
    assert!(
        matches!(&cmds[..], [Command::Delete { target, for_everyone: true, .. }] if target == "m2"),
        "{cmds:?}"
    );
    // bob's message: not for everyone, but for me.
    press(&mut app, [key(KeyCode::Up), key(KeyCode::Char('k'))]);
    assert!(press(&mut app, [shift('D')]).is_empty());
    assert!(
        app.status
            .as_ref()
            .unwrap()
            .text
            .contains("d deletes it for you")
    );
    let cmds = press(&mut app, [key(KeyCode::Char('d')), key(KeyCode::Char('y'))]);
    assert!(
        matches!(&cmds[..], [Command::Delete { target, for_everyone: false, .. }] if target == "m4"),
        "{cmds:?}"
    );
}

#[test]
fn changes_from_the_manager_update_the_loaded_thread() {
    let mut app = rich_app();
    let mut edited = app.thread.messages[0].clone();
    edited.text = "lunch tomorrow?".into();
    edited.edited = true;
    edited.seq = 0;
    app.on_event(Event::MessageChanged {
        message: edited,
        change: Box::new(Change {
            id: "c1".into(),
            kind: MessageKind::Edit,
            outgoing: false,
            emoji: None,
            sent_at: 0,
        }),
    });
    assert_eq!(app.thread.messages[0].text, "lunch tomorrow?");
    assert_eq!(
        app.thread.messages[0].seq, 1,
        "the loaded copy keeps its place"
    );
    assert!(
        rows(&screen(&app, 80, 24))
            .join("\n")
            .contains("lunch tomorrow? (edited)")
    );
    // Gone here: off the screen, and the reply quoting it says so.
    app.on_event(Event::MessageRemoved(Expired {
        id: "m1".into(),
        contact: "bob".into(),
        secret: false,
    }));
    assert!(app.thread.messages.iter().all(|m| m.id != "m1"));
    let reply = app.thread.messages.iter().find(|m| m.id == "m2").unwrap();
    assert!(reply.reply.as_ref().unwrap().gone);
}
