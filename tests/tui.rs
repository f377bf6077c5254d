//! The TUI without a terminal: key sequences through the key map and the pure app (what is
//! sent to the manager, what the state becomes), and screens drawn on ratatui's TestBackend.

mod common;

use common::tui::{app_with_bob, contact, ctrl, key, msg, press, rows, screen, typing};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use sotto::client::manager::{Command, ConnState, Event, Warning};
use sotto::client::store::{Message, MessageKind};
use sotto::tui::app::{App, Focus, Overlay};
use sotto::tui::keys::KeyMap;
use sotto::tui::render;

#[test]
fn typing_and_enter_sends_in_the_open_thread() {
    let mut app = app_with_bob();
    assert_eq!(app.focus, Focus::Composer);
    let cmds = press(
        &mut app,
        typing("lunch?").into_iter().chain([key(KeyCode::Enter)]),
    );
    match &cmds[..] {
        [
            Command::Send {
                to, secret, text, ..
            },
        ] => {
            assert_eq!(
                (to.as_str(), *secret, text.as_str()),
                ("bob", false, "lunch?")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(app.composer.text(), "");
    // Alt-Enter makes a new line instead of sending.
    let cmds = press(
        &mut app,
        typing("a")
            .into_iter()
            .chain([KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)])
            .chain(typing("b")),
    );
    assert!(cmds.is_empty());
    assert_eq!(app.composer.text(), "a\nb");
}

#[test]
fn ctrl_s_switches_to_the_secret_thread_and_back() {
    let mut app = app_with_bob();
    let cmds = press(&mut app, [ctrl('s')]);
    assert!(app.secret());
    assert!(matches!(
        &cmds[..],
        [Command::LoadPage { secret: true, .. }]
    ));
    let cmds = press(
        &mut app,
        typing("psst").into_iter().chain([key(KeyCode::Enter)]),
    );
    assert!(matches!(&cmds[..], [Command::Send { secret: true, .. }]));
    // /secret does the same as the key.
    let cmds = press(
        &mut app,
        typing("/secret").into_iter().chain([key(KeyCode::Enter)]),
    );
    assert!(!app.secret());
    assert!(matches!(
        &cmds[..],
        [Command::LoadPage { secret: false, .. }]
    ));
}

#[test]
fn timers_out_of_range_are_refused_with_a_message_and_nothing_is_sent() {
    let mut app = app_with_bob();
    for bad in ["/timer 4s", "/timer 25h", "/timer abc"] {
        let cmds = press(
            &mut app,
            typing(bad).into_iter().chain([key(KeyCode::Enter)]),
        );
        assert!(cmds.is_empty(), "{bad} sent {cmds:?}");
        let status = app.status.clone().unwrap();
        assert!(status.error, "{bad}");
        // The line stays in the composer to be fixed.
        assert_eq!(app.composer.text(), bad);
        app.composer = Default::default();
    }
    let cmds = press(
        &mut app,
        typing("/timer 5s").into_iter().chain([key(KeyCode::Enter)]),
    );
    assert!(
        matches!(&cmds[..], [Command::SetTimer { contact, secret: false, timer: Some(5), .. }] if contact == "bob")
    );
    app.on_event(Event::TimerSet {
        contact: "bob".into(),
        secret: false,
        timer: Some(5),
    });
    assert_eq!(app.open_timer(), Some(5));
}

#[test]
fn unknown_commands_and_bad_handles_are_explained() {
    let mut app = app_with_bob();
    let cmds = press(
        &mut app,
        typing("/frobnicate")
            .into_iter()
            .chain([key(KeyCode::Enter)]),
    );
    assert!(cmds.is_empty());
    assert!(
        app.status
            .as_ref()
            .unwrap()
            .text
            .contains("unknown command")
    );
    app.composer = Default::default();
    let cmds = press(
        &mut app,
        typing("/add Not Valid")
            .into_iter()
            .chain([key(KeyCode::Enter)]),
    );
    assert!(cmds.is_empty());
    app.composer = Default::default();
    let cmds = press(
        &mut app,
        typing("/add dave").into_iter().chain([key(KeyCode::Enter)]),
    );
    let [Command::AddContact { tag, handle }] = &cmds[..] else {
        panic!("{cmds:?}")
    };
    assert_eq!(handle, "dave");
    app.on_event(Event::Failed {
        tag: *tag,
        error: "no account named \"dave\"".into(),
    });
    assert!(app.status.as_ref().unwrap().error);
}

#[test]
fn help_opens_on_question_mark_only_when_the_composer_is_empty() {
    let mut app = app_with_bob();
    press(&mut app, typing("why?"));
    assert_eq!(app.overlay, None);
    assert_eq!(app.composer.text(), "why?");
    app.composer = Default::default();
    press(&mut app, typing("?"));
    assert_eq!(app.overlay, Some(Overlay::Help));
    press(&mut app, [key(KeyCode::Esc)]);
    assert_eq!(app.overlay, None);
    let cmds = press(&mut app, [ctrl('c')]);
    assert!(cmds.is_empty() && app.quit);
}

#[test]
fn messages_elsewhere_count_as_unread_and_ring_while_the_open_thread_marks_them_seen() {
    let mut app = app_with_bob();
    let cmds = app.on_event(Event::Message(msg(3, "bob", false, false, "still there?")));
    assert_eq!(cmds.len(), 1);
    assert!(matches!(&cmds[0], Command::MarkShown { ids } if ids == &vec!["m3".to_string()]));
    assert!(!app.ring);
    app.on_event(Event::Message(msg(4, "carol", true, false, "secret hello")));
    assert!(app.ring);
    let carol = app
        .rows()
        .into_iter()
        .find(|r| r.key.handle == "carol" && r.key.secret)
        .unwrap();
    assert_eq!(carol.unread, 1);
}

#[test]
fn scrolling_up_fetches_older_pages_before_the_top_is_reached() {
    let mut app = App::new("alice");
    app.on_event(Event::Contacts(vec![contact("bob")]));
    press(&mut app, [key(KeyCode::Tab), key(KeyCode::Enter)]);
    let page: Vec<Message> = (1000..1100)
        .map(|s| msg(s, "bob", false, s % 2 == 0, "x"))
        .collect();
    app.on_event(Event::Page {
        contact: "bob".into(),
        secret: false,
        before: None,
        messages: page,
        complete: false,
    });
    let mut asked = Vec::new();
    for _ in 0..6 {
        asked.extend(press(&mut app, [key(KeyCode::PageUp)]));
    }
    match &asked[..] {
        [
            Command::LoadPage {
                before: Some(1000), ..
            },
        ] => {}
        other => panic!("expected one request for the page before seq 1000, got {other:?}"),
    }
    let older: Vec<Message> = (950..1000)
        .map(|s| msg(s, "bob", false, false, "old"))
        .collect();
    let cmds = app.on_event(Event::Page {
        contact: "bob".into(),
        secret: false,
        before: Some(1000),
        messages: older,
        complete: true,
    });
    assert_eq!(app.thread.messages.len(), 150);
    assert_eq!(app.thread.messages[0].seq, 950);
    assert!(app.thread.complete);
    assert!(matches!(&cmds[..], [Command::MarkShown { ids }] if ids.len() == 50));
}

#[test]
fn the_status_line_always_says_normal_or_secret() {
    let mut app = app_with_bob();
    let normal = screen(&app, 80, 16);
    let status = rows(&normal).pop().unwrap();
    assert!(
        status.contains("normal") && !status.contains("SECRET"),
        "{status}"
    );
    assert!(
        status.contains("online") && status.contains("timer off"),
        "{status}"
    );
    insta::assert_snapshot!("normal_thread", normal);

    press(&mut app, [ctrl('s')]);
    app.on_event(Event::Page {
        contact: "bob".into(),
        secret: true,
        before: None,
        messages: vec![
            msg(7, "bob", true, false, "only for you"),
            msg(8, "bob", true, true, "got it"),
        ],
        complete: true,
    });
    app.on_event(Event::TimerSet {
        contact: "bob".into(),
        secret: true,
        timer: Some(30),
    });
    let secret = screen(&app, 80, 16);
    let lines = rows(&secret);
    let status = lines.last().unwrap();
    assert!(
        status.contains("SECRET") && status.contains("timer 30s"),
        "{status}"
    );
    // Every message of a secret thread carries the lock.
    let with_text: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("only for you") || l.contains("got it"))
        .collect();
    assert_eq!(with_text.len(), 2);
    assert!(with_text.iter().all(|l| l.contains(render::LOCK)));
    insta::assert_snapshot!("secret_thread", secret);
}

#[test]
fn a_long_message_wraps_to_the_width() {
    let mut app = app_with_bob();
    let long = "the quick brown fox jumps over the lazy dog and keeps on running far beyond the edge of any reasonable terminal window";
    app.on_event(Event::Message(msg(3, "bob", false, false, long)));
    let backend = screen(&app, 60, 14);
    let lines = rows(&backend);
    let first = lines
        .iter()
        .position(|l| l.contains("the quick brown"))
        .unwrap();
    let last = lines.iter().position(|l| l.contains("window")).unwrap();
    assert!(
        last >= first + 2,
        "the message should take several lines: {lines:#?}"
    );
    // Every word survives the wrapping, in order, within the thread pane (the whole width:
    // at 60 columns the contact list is hidden).
    let pane: String = lines[first..=last]
        .iter()
        .map(|l| l.chars().skip(1).take(60 - 2).collect::<String>())
        .collect::<Vec<_>>()
        .join(" ");
    let words: Vec<&str> = pane
        .split_whitespace()
        .skip_while(|w| *w != "the")
        .collect();
    assert_eq!(words.join(" "), long);
    insta::assert_snapshot!("long_message_wraps", backend);
}

#[test]
fn ten_thousand_messages_lay_out_only_the_visible_page() {
    let mut app = App::new("alice");
    app.on_event(Event::Contacts(vec![contact("bob")]));
    press(&mut app, [key(KeyCode::Tab), key(KeyCode::Enter)]);
    let all: Vec<Message> = (0..10_000)
        .map(|s| msg(s, "bob", false, s % 3 == 0, &format!("message number {s}")))
        .collect();
    app.on_event(Event::Page {
        contact: "bob".into(),
        secret: false,
        before: None,
        messages: all,
        complete: true,
    });
    let view = render::thread_view(&app, 70, 20);
    assert_eq!(view.lines.len(), 20);
    assert!(
        view.laid_out <= 20,
        "laid out {} messages for a 20-line view",
        view.laid_out
    );
    let last: String = view
        .lines
        .last()
        .unwrap()
        .spans
        .iter()
        .map(|s| s.content.as_ref())
        .collect();
    assert!(last.contains("message number 9999"), "{last}");
    // The full screen draws too.
    let lines = rows(&screen(&app, 90, 24));
    assert!(lines.iter().any(|l| l.contains("message number 9999")));
    assert!(!lines.iter().any(|l| l.contains("message number 9000 ")));
}

#[test]
fn countdowns_show_tick_only_when_needed_and_expired_messages_leave_the_screen() {
    let mut app = app_with_bob();
    assert!(!app.counting_down(), "nothing to count down: no tick");
    let mut m = msg(3, "bob", false, false, "gone soon");
    m.timer = Some(30);
    let cmds = app.on_event(Event::Message(m));
    // Displayed in the open thread: seen now, which starts its countdown in the manager.
    assert!(matches!(&cmds[..], [Command::MarkShown { ids }] if ids == &vec!["m3".to_string()]));
    app.on_event(Event::Expiring(vec![("m3".into(), 1_000_000 + 24_400)]));
    app.now_ms = 1_000_000;
    assert!(app.counting_down());
    let lines = rows(&screen(&app, 80, 12));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("gone soon") && l.contains("⏱ 25s")),
        "{lines:#?}"
    );
    app.on_event(Event::Expired(vec![sotto::client::store::Expired {
        id: "m3".into(),
        contact: "bob".into(),
        secret: false,
    }]));
    assert!(!app.counting_down());
    let lines = rows(&screen(&app, 80, 12));
    assert!(!lines.iter().any(|l| l.contains("gone soon")));
    // A timer change shows as a line of its own.
    let mut line = msg(4, "bob", false, false, "");
    line.kind = MessageKind::Timer;
    line.timer = Some(300);
    app.on_event(Event::Message(line));
    let lines = rows(&screen(&app, 80, 12));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("bob set disappearing messages to 5m")),
        "{lines:#?}"
    );
}

fn safety(handle: &str, verified: bool, key_changed: bool) -> sotto::client::trust::SafetyNumber {
    sotto::client::trust::SafetyNumber {
        handle: handle.into(),
        display: "12345 67890 12345 67890 12345 67890 12345 67890 12345 67890 12345 67890".into(),
        scannable: (0..74).collect(),
        verified,
        key_changed,
    }
}

#[test]
fn the_verify_overlay_shows_the_number_and_qr_and_marks_the_contact() {
    let mut app = app_with_bob();
    let cmds = press(
        &mut app,
        typing("/verify").into_iter().chain([key(KeyCode::Enter)]),
    );
    assert!(matches!(&cmds[..], [Command::Verify { handle }] if handle == "bob"));
    assert_eq!(app.overlay, Some(Overlay::Verify));
    app.on_event(Event::SafetyNumber(safety("bob", false, false)));
    let lines = rows(&screen(&app, 100, 44));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("12345  67890  12345  67890")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.contains('█') || l.contains('▀') || l.contains('▄'))
            .count()
            > 10
    );
    assert!(lines.iter().any(|l| l.contains("not verified")));
    // m marks verified; the manager answers with the new state, shown everywhere.
    let cmds = press(&mut app, typing("m"));
    assert!(
        matches!(&cmds[..], [Command::SetVerified { handle, verified: true }] if handle == "bob")
    );
    app.on_event(Event::SafetyNumber(safety("bob", true, false)));
    press(&mut app, [key(KeyCode::Esc)]);
    let lines = rows(&screen(&app, 80, 14));
    assert!(
        lines.iter().any(|l| l.contains("bob ✔")),
        "contact list: {lines:#?}"
    );
    assert!(lines.last().unwrap().contains("✔ verified"));
}

#[test]
fn a_key_change_shows_in_the_thread_list_and_status_and_can_be_accepted() {
    let mut app = app_with_bob();
    let mut line = msg(5, "bob", false, false, "bob's safety number changed");
    line.kind = MessageKind::KeyChange;
    app.on_event(Event::Message(line));
    let lines = rows(&screen(&app, 90, 14));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("⚠ bob's safety number changed")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("bob ⚠")));
    assert!(lines.last().unwrap().contains("key changed"));
    // The same line arrives in the secret thread.
    press(&mut app, [ctrl('s')]);
    let mut secret_line = msg(6, "bob", true, false, "bob's safety number changed");
    secret_line.kind = MessageKind::KeyChange;
    app.on_event(Event::Page {
        contact: "bob".into(),
        secret: true,
        before: None,
        messages: vec![secret_line],
        complete: true,
    });
    let lines = rows(&screen(&app, 90, 14));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("⚠ bob's safety number changed"))
    );
    // Accepting from the overlay.
    press(
        &mut app,
        typing("/verify").into_iter().chain([key(KeyCode::Enter)]),
    );
    app.on_event(Event::SafetyNumber(safety("bob", false, true)));
    let cmds = press(&mut app, typing("a"));
    assert!(matches!(&cmds[..], [Command::AcceptChange { handle }] if handle == "bob"));
}

fn alt(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::ALT)
}

/// The composer's text with `|` at the cursor.
fn composer(app: &App) -> String {
    let (text, at) = (app.composer.text(), app.composer.cursor());
    format!("{}|{}", &text[..at], &text[at..])
}

fn sent_texts(cmds: &[Command]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Send { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn readline_keys_move_and_delete_in_the_composer() {
    let mut app = app_with_bob();
    press(&mut app, typing("see you at the station"));
    press(&mut app, [ctrl('w')]);
    assert_eq!(composer(&app), "see you at the |");
    press(&mut app, [alt('b'), alt('b')]);
    assert_eq!(composer(&app), "see you |at the ");
    press(&mut app, [alt('f')]);
    assert_eq!(composer(&app), "see you at| the ");
    press(&mut app, [ctrl('k')]);
    assert_eq!(composer(&app), "see you at|");
    press(&mut app, [ctrl('a')]);
    assert_eq!(composer(&app), "|see you at");
    press(&mut app, [key(KeyCode::Right), key(KeyCode::Right)]);
    assert_eq!(composer(&app), "se|e you at");
    press(&mut app, [key(KeyCode::Left)]);
    assert_eq!(composer(&app), "s|ee you at");
    press(&mut app, [ctrl('e')]);
    assert_eq!(composer(&app), "see you at|");
    press(&mut app, [key(KeyCode::Home)]);
    assert_eq!(composer(&app), "|see you at");
    press(&mut app, [key(KeyCode::End), ctrl('u')]);
    assert_eq!(composer(&app), "|");
    // What a kill took comes back with Ctrl-Y.
    press(&mut app, [ctrl('y')]);
    assert_eq!(composer(&app), "see you at|");
    // None of this sent anything or left the composer.
    let cmds = press(&mut app, [key(KeyCode::Enter)]);
    assert_eq!(sent_texts(&cmds), ["see you at"]);
    assert_eq!(app.focus, Focus::Composer);
}

#[test]
fn up_and_down_walk_lines_ctrl_p_and_ctrl_n_what_was_sent_and_never_bring_a_secret_into_a_normal_thread()
 {
    let mut app = app_with_bob();
    for text in ["first", "second"] {
        press(
            &mut app,
            typing(text).into_iter().chain([key(KeyCode::Enter)]),
        );
    }
    press(&mut app, [ctrl('p')]);
    assert_eq!(composer(&app), "second|");
    press(&mut app, [ctrl('p')]);
    assert_eq!(composer(&app), "first|");
    press(&mut app, [ctrl('n'), ctrl('n')]);
    assert_eq!(composer(&app), "|");

    // In a message of several lines, Up and Down move between its lines first.
    let newline = KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT);
    press(
        &mut app,
        typing("top line")
            .into_iter()
            .chain([newline])
            .chain(typing("end")),
    );
    press(&mut app, [key(KeyCode::Up)]);
    assert_eq!(composer(&app), "top| line\nend");
    press(&mut app, [key(KeyCode::Up)]);
    assert_eq!(composer(&app), "second|");
    press(&mut app, [key(KeyCode::Down)]);
    assert_eq!(composer(&app), "top line\nend|");
    press(&mut app, [key(KeyCode::Esc)]);

    // A secret message is recalled in a secret thread only.
    press(&mut app, [ctrl('s')]);
    press(
        &mut app,
        typing("the secret")
            .into_iter()
            .chain([key(KeyCode::Enter)]),
    );
    press(&mut app, [ctrl('p')]);
    assert_eq!(composer(&app), "the secret|");
    press(&mut app, [ctrl('n'), ctrl('s')]);
    assert!(!app.secret());
    press(&mut app, [ctrl('p')]);
    assert_ne!(app.composer.text(), "the secret");
    let cmds = press(&mut app, [ctrl('p'), ctrl('p'), ctrl('p')]);
    assert!(cmds.is_empty());
    assert!(!app.composer.text().contains("secret"));
}

#[test]
fn up_and_down_move_by_the_rows_a_long_line_wraps_onto_at_the_screens_width() {
    let mut app = app_with_bob();
    press(
        &mut app,
        typing("earlier").into_iter().chain([key(KeyCode::Enter)]),
    );
    // At 24 columns the composer holds 22: "the quick brown fox" / "jumps over the lazy" /
    // "dog".
    app.screen = (24, 15);
    let long = "the quick brown fox jumps over the lazy dog";
    press(&mut app, typing(long));
    assert_eq!(
        app.composer.view(22, 5).rows,
        ["the quick brown fox", "jumps over the lazy", "dog"]
    );
    press(&mut app, [key(KeyCode::Up)]);
    assert_eq!(
        composer(&app),
        "the quick brown fox jum|ps over the lazy dog"
    );
    press(&mut app, [key(KeyCode::Up)]);
    assert_eq!(
        composer(&app),
        "the| quick brown fox jumps over the lazy dog"
    );
    press(&mut app, [key(KeyCode::Down), key(KeyCode::Down)]);
    assert_eq!(
        composer(&app),
        "the quick brown fox jumps over the lazy dog|"
    );
    // From the first row, Up recalls what was sent; Down from its last row comes back.
    press(
        &mut app,
        [key(KeyCode::Up), key(KeyCode::Up), key(KeyCode::Up)],
    );
    assert_eq!(composer(&app), "earlier|");
    press(&mut app, [key(KeyCode::Down)]);
    assert_eq!(
        composer(&app),
        "the quick brown fox jumps over the lazy dog|"
    );
    // Wide, the same text is one row: Up goes straight to the history.
    app.screen = (80, 24);
    press(&mut app, [key(KeyCode::Up)]);
    assert_eq!(composer(&app), "earlier|");
}

#[test]
fn esc_clears_the_composer_and_ctrl_p_brings_the_text_back() {
    let mut app = app_with_bob();
    press(&mut app, typing("a draft I regret"));
    press(&mut app, [key(KeyCode::Esc)]);
    assert_eq!(composer(&app), "|");
    assert_eq!(app.focus, Focus::Composer);
    press(&mut app, [ctrl('p')]);
    assert_eq!(composer(&app), "a draft I regret|");
}

#[test]
fn a_message_can_start_with_a_question_mark_or_a_slash() {
    let mut app = app_with_bob();
    // `?` on an empty composer opens help; typing on closes it and keeps the `?`.
    press(&mut app, typing("?"));
    assert_eq!(app.overlay, Some(Overlay::Help));
    let cmds = press(
        &mut app,
        typing("what time").into_iter().chain([key(KeyCode::Enter)]),
    );
    assert_eq!(app.overlay, None);
    assert_eq!(sent_texts(&cmds), ["?what time"]);
    // `??` writes one `?`, which Enter sends.
    let cmds = press(
        &mut app,
        typing("??").into_iter().chain([key(KeyCode::Enter)]),
    );
    assert_eq!(sent_texts(&cmds), ["?"]);
    // Help opened by `?` and closed with Esc leaves nothing behind.
    press(&mut app, [key(KeyCode::Char('?')), key(KeyCode::Esc)]);
    assert_eq!((app.overlay, composer(&app)), (None, "|".to_string()));
    // F1 help does not hold a `?`: typing there does not write.
    press(&mut app, [key(KeyCode::F(1)), key(KeyCode::Char('x'))]);
    assert_eq!(app.overlay, Some(Overlay::Help));
    press(&mut app, [key(KeyCode::Esc)]);
    assert_eq!(composer(&app), "|");

    // `//` starts a message with `/`.
    let cmds = press(
        &mut app,
        typing("//shrug").into_iter().chain([key(KeyCode::Enter)]),
    );
    assert_eq!(sent_texts(&cmds), ["/shrug"]);
    assert!(app.status.is_none());
}

#[test]
fn tab_completes_commands_and_handles_after_a_slash_and_moves_focus_otherwise() {
    let mut app = app_with_bob();
    press(&mut app, typing("/ti"));
    press(&mut app, [key(KeyCode::Tab)]);
    assert_eq!(composer(&app), "/timer |");
    assert_eq!(app.focus, Focus::Composer);
    app.composer = Default::default();
    press(&mut app, typing("/add c"));
    press(&mut app, [key(KeyCode::Tab)]);
    assert_eq!(composer(&app), "/add carol|");
    app.composer = Default::default();
    // Several commands fit: they are listed.
    press(&mut app, typing("/"));
    press(&mut app, [key(KeyCode::Tab)]);
    let listed = app.status.clone().unwrap().text;
    assert!(
        listed.contains("/secret") && listed.contains("/edit"),
        "{listed}"
    );
    app.composer = Default::default();
    press(&mut app, typing("hi"));
    press(&mut app, [key(KeyCode::Tab)]);
    assert_eq!(app.focus, Focus::Contacts);
    assert_eq!(app.composer.text(), "hi");
}

#[test]
fn a_paste_stays_one_message_with_its_lines_and_indentation() {
    let mut app = app_with_bob();
    let pasted = "fn main() {\r\n    println!(\"hi\");\r\n}\n";
    let mut cmds = app.update(sotto::tui::app::Action::Edit(
        sotto::tui::composer::Edit::Paste(pasted.into()),
    ));
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Send { .. })),
        "a paste sends no message by itself"
    );
    cmds.extend(press(&mut app, [key(KeyCode::Enter)]));
    assert_eq!(
        sent_texts(&cmds),
        ["fn main() {\n    println!(\"hi\");\n}\n"]
    );
}

#[test]
fn ctrl_x_and_slash_edit_ask_for_the_editor_and_its_text_waits_for_enter() {
    use sotto::tui::app::Action;
    let mut app = app_with_bob();
    press(&mut app, typing("start here"));
    let cmds = press(&mut app, [ctrl('x')]);
    assert!(cmds.is_empty() && app.wants_editor);
    assert_eq!(
        app.composer.text(),
        "start here",
        "the editor starts from it"
    );
    app.wants_editor = false;
    let cmds = app.update(Action::Edited(Ok("written\nin the editor".into())));
    assert!(cmds.is_empty(), "nothing is sent before Enter");
    assert_eq!(composer(&app), "written\nin the editor|");
    let cmds = press(&mut app, [key(KeyCode::Enter)]);
    assert_eq!(sent_texts(&cmds), ["written\nin the editor"]);

    press(
        &mut app,
        typing("/edit").into_iter().chain([key(KeyCode::Enter)]),
    );
    assert!(app.wants_editor);
    assert_eq!(app.composer.text(), "");
    app.wants_editor = false;
    app.update(Action::Edited(Err(
        "the editor \"nope\" was not found".into()
    )));
    let status = app.status.clone().unwrap();
    assert!(status.error && status.text.contains("not found"));
    assert_eq!(app.composer.text(), "");
}

#[test]
fn the_composer_grows_to_five_rows_then_scrolls() {
    let mut app = app_with_bob();
    let newline = KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT);
    // A long line wraps instead of scrolling sideways.
    press(&mut app, typing(&"word ".repeat(30)));
    let lines = rows(&screen(&app, 60, 15));
    let first = lines.iter().position(|l| l.contains("word word")).unwrap();
    assert!(lines[first + 1].contains("word word"), "{lines:#?}");
    for i in 0..8 {
        press(&mut app, [newline]);
        press(&mut app, typing(&format!("line {i}")));
    }
    let lines = rows(&screen(&app, 80, 24));
    let shown: Vec<&String> = lines.iter().filter(|l| l.contains("│line ")).collect();
    assert_eq!(shown.len(), 5, "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("↑ 5 more")), "{lines:#?}");
    assert!(shown.last().unwrap().contains("line 7"));
}

#[test]
fn a_three_line_message_in_the_composer() {
    let mut app = app_with_bob();
    let newline = KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT);
    press(
        &mut app,
        typing("first line")
            .into_iter()
            .chain([newline])
            .chain(typing("    an indented second line"))
            .chain([newline])
            .chain(typing("and a third")),
    );
    let wide = screen(&app, 80, 24);
    let lines = rows(&wide);
    let at = lines
        .iter()
        .position(|l| l.contains("│first line"))
        .unwrap();
    assert!(lines[at + 1].contains("│    an indented second line"));
    assert!(lines[at + 2].contains("│and a third"));
    insta::assert_snapshot!("composer_three_lines_80x24", wide);
    insta::assert_snapshot!("composer_three_lines_60x15", screen(&app, 60, 15));
}

// ---- Reading: times, dates, unread landing, scrolling, layout, overlays, notices ----

/// The lines the open thread shows at the app's screen size, as text.
fn thread_text(app: &App) -> Vec<String> {
    let (w, h) = sotto::tui::layout::thread_inner(app, app.screen.0, app.screen.1);
    render::thread_view(app, w, h)
        .lines
        .iter()
        .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
        .collect()
}

/// An app at `size` with bob (`unread` of them unread) and his open normal thread holding
/// `n` one-line messages from him, "message 0" to "message n-1".
fn app_with_thread(size: (u16, u16), n: i64, unread: u32, complete: bool) -> App {
    let mut app = App::new("alice");
    app.screen = size;
    app.on_event(Event::Connection(ConnState::Online));
    let mut bob = contact("bob");
    bob.unread = [unread, 0];
    app.on_event(Event::Contacts(vec![bob, contact("carol")]));
    let cmds = press(&mut app, [key(KeyCode::Tab), key(KeyCode::Enter)]);
    assert!(matches!(&cmds[..], [Command::LoadPage { .. }]));
    let page: Vec<Message> = (0..n)
        .map(|s| msg(s, "bob", false, false, &format!("message {s}")))
        .collect();
    app.on_event(Event::Page {
        contact: "bob".into(),
        secret: false,
        before: None,
        messages: page,
        complete,
    });
    app
}

#[test]
fn times_are_in_the_zone_handed_in_with_the_format_asked_and_days_are_separated() {
    use sotto::tui::clock::{Clock, Zone};
    let mut app = app_with_bob();
    // Three hours east of UTC: 09:30 UTC is 12:30 there.
    let zone = Zone::Fixed(chrono::FixedOffset::east_opt(3 * 3600).unwrap());
    app.clock = Clock::new(zone, "%H:%M").unwrap();
    let mut next_day = msg(3, "bob", false, false, "a day later");
    next_day.sent_at += 86_400_000;
    app.on_event(Event::Message(next_day));
    let lines = thread_text(&app);
    assert!(
        lines.iter().any(|l| l.contains("12:30 bob: hello alice")),
        "{lines:#?}"
    );
    let days: Vec<&String> = lines.iter().filter(|l| l.contains("──")).collect();
    assert_eq!(days.len(), 2, "{lines:#?}");
    assert!(days[0].contains("Tuesday 14 November 2023"), "{days:?}");
    assert!(days[1].contains("Wednesday 15 November 2023"), "{days:?}");
    let separator = lines.iter().position(|l| l.contains("Wednesday")).unwrap();
    assert!(lines[separator + 1].contains("a day later"));
    // Another format, the same instant.
    app.clock = Clock::new(zone, "%I:%M %p").unwrap();
    assert!(
        thread_text(&app)
            .iter()
            .any(|l| l.contains("12:30 PM bob: hello alice"))
    );
}

#[test]
fn opening_a_thread_with_81_unread_lands_on_the_first_with_a_new_messages_line() {
    for size in [(80, 24), (60, 15)] {
        let app = app_with_thread(size, 100, 81, true);
        let lines = thread_text(&app);
        assert!(lines[0].contains("new messages"), "{size:?}: {lines:#?}");
        assert!(lines[1].contains("message 19"), "{size:?}: {lines:#?}");
        // Only one marker, above the first unread.
        assert_eq!(
            lines.iter().filter(|l| l.contains("new messages")).count(),
            1
        );
        let backend = screen(&app, size.0, size.1);
        insta::assert_snapshot!(format!("unread_landing_{}x{}", size.0, size.1), backend);
    }
}

#[test]
fn unread_that_fit_leave_the_view_at_the_bottom_under_the_line() {
    let app = app_with_thread((80, 24), 100, 3, true);
    let lines = thread_text(&app);
    assert!(lines.last().unwrap().contains("message 99"), "{lines:#?}");
    let at = lines
        .iter()
        .position(|l| l.contains("new messages"))
        .unwrap();
    assert!(lines[at + 1].contains("message 97"), "{lines:#?}");
}

#[test]
fn more_unread_than_a_page_loads_older_pages_before_landing() {
    let mut app = App::new("alice");
    let mut bob = contact("bob");
    bob.unread = [150, 0];
    app.on_event(Event::Contacts(vec![bob]));
    press(&mut app, [key(KeyCode::Tab), key(KeyCode::Enter)]);
    let cmds = app.on_event(Event::Page {
        contact: "bob".into(),
        secret: false,
        before: None,
        messages: (100..200)
            .map(|s| msg(s, "bob", false, false, "x"))
            .collect(),
        complete: false,
    });
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::LoadPage {
                before: Some(100),
                ..
            }
        )),
        "{cmds:?}"
    );
    app.on_event(Event::Page {
        contact: "bob".into(),
        secret: false,
        before: Some(100),
        messages: (0..100).map(|s| msg(s, "bob", false, false, "x")).collect(),
        complete: true,
    });
    assert_eq!(app.thread.new_from, Some(50));
    assert!(thread_text(&app)[0].contains("new messages"));
}

#[test]
fn page_keys_move_by_a_screen_less_a_line_and_home_and_end_go_to_the_ends() {
    let mut app = app_with_thread((80, 24), 200, 0, true);
    let bottom = thread_text(&app);
    // 24 rows less the composer (3), the status line and the thread's border: 18.
    assert_eq!(bottom.len(), 18);
    assert!(bottom.last().unwrap().contains("message 199"));
    press(&mut app, [key(KeyCode::PageUp)]);
    let up = thread_text(&app);
    assert_eq!(up.len(), 18);
    // One line of overlap: the old top line is the new bottom line.
    assert_eq!(up.last(), bottom.first(), "{up:#?}");
    press(&mut app, [key(KeyCode::PageDown)]);
    assert_eq!(thread_text(&app), bottom);
    press(&mut app, [key(KeyCode::PageDown)]);
    assert_eq!(thread_text(&app), bottom, "PageDown stops at the bottom");

    press(&mut app, [key(KeyCode::Home)]);
    let top = thread_text(&app);
    assert!(top[0].contains("start of the conversation"), "{top:#?}");
    assert!(top[1].contains("Tuesday 14 November 2023"), "{top:#?}");
    assert!(top[2].contains("message 0"), "{top:#?}");
    assert_eq!(top.len(), 18);
    press(&mut app, [key(KeyCode::PageUp)]);
    assert_eq!(thread_text(&app), top, "PageUp stops at the top");
    // The wheel moves a few lines.
    app.update(sotto::tui::app::Action::WheelDown);
    assert!(
        thread_text(&app)[0].contains("message 1"),
        "3 lines down from the top"
    );
    press(&mut app, [key(KeyCode::End)]);
    assert_eq!(thread_text(&app), bottom);

    // While a message is being typed, Home and End move in it; Ctrl-Home/End scroll.
    press(&mut app, typing("draft"));
    press(&mut app, [key(KeyCode::Home)]);
    assert_eq!(thread_text(&app), bottom);
    assert_eq!(app.composer.cursor(), 0);
    press(
        &mut app,
        [KeyEvent::new(KeyCode::Home, KeyModifiers::CONTROL)],
    );
    assert!(thread_text(&app)[0].contains("start of the conversation"));
}

#[test]
fn home_asks_for_older_pages_when_the_start_is_not_loaded() {
    let mut app = app_with_thread((80, 24), 100, 0, false);
    let cmds = press(&mut app, [key(KeyCode::Home)]);
    assert!(
        matches!(
            &cmds[..],
            [Command::LoadPage {
                before: Some(0),
                ..
            }]
        ),
        "{cmds:?}"
    );
    assert!(thread_text(&app)[0].contains("loading"));
}

#[test]
fn the_contact_list_hides_on_narrow_terminals_and_toggles() {
    let mut app = app_with_bob();
    let wide = rows(&screen(&app, 80, 24));
    assert!(wide[1].contains("bob"), "{wide:#?}");
    // At 60 columns the conversation gets the full width.
    app.screen = (60, 15);
    let narrow = screen(&app, 60, 15);
    let lines = rows(&narrow);
    assert!(!lines.iter().any(|l| l.contains("contacts")), "{lines:#?}");
    assert_eq!(sotto::tui::layout::thread_inner(&app, 60, 15).0, 58);
    insta::assert_snapshot!("thread_60x15", narrow);
    // F2 shows it; Tab to the list shows it too, while it has the focus.
    press(&mut app, [key(KeyCode::F(2))]);
    assert!(rows(&screen(&app, 60, 15))[0].contains("contacts"));
    press(&mut app, [key(KeyCode::F(2))]);
    assert!(!rows(&screen(&app, 60, 15))[0].contains("contacts"));
    press(&mut app, [key(KeyCode::Tab)]);
    assert!(rows(&screen(&app, 60, 15))[0].contains("contacts"));
    // A lower threshold from the config keeps it at 60 columns.
    let mut app = app_with_bob();
    app.contacts_min_width = 60;
    assert!(rows(&screen(&app, 60, 15))[0].contains("contacts"));
}

#[test]
fn the_thread_view_at_80x24_has_the_date_the_new_line_and_your_handle_in_the_title() {
    let mut app = app_with_thread((80, 24), 30, 5, true);
    // The last eight were sent the next day.
    for m in &mut app.thread.messages[22..] {
        m.sent_at += 86_400_000;
    }
    let backend = screen(&app, 80, 24);
    let lines = rows(&backend);
    assert!(lines[0].contains("you: alice"), "{lines:#?}");
    let day = lines
        .iter()
        .position(|l| l.contains("Wednesday 15 November 2023"));
    let new = lines.iter().position(|l| l.contains("new messages"));
    assert!(lines[day.unwrap() + 1].contains("message 22"), "{lines:#?}");
    assert!(lines[new.unwrap() + 1].contains("message 25"), "{lines:#?}");
    insta::assert_snapshot!("thread_80x24", backend);
}

#[test]
fn system_lines_wrap_instead_of_being_cut() {
    let mut app = app_with_bob();
    app.screen = (60, 15);
    let text = "bob's safety number changed because bob reinstalled sotto on another computer";
    let mut line = msg(5, "bob", false, false, text);
    line.kind = MessageKind::KeyChange;
    app.on_event(Event::Message(line));
    let shown = thread_text(&app);
    let start = shown.iter().position(|l| l.contains("⚠ bob's")).unwrap();
    let joined = shown[start..].join(" ");
    for word in text.split(' ').chain(["/verify", "new", "one"]) {
        assert!(joined.contains(word), "{word} is missing: {shown:#?}");
    }
    assert!(shown.len() - start >= 2, "{shown:#?}");
}

#[test]
fn verify_fits_80x24_and_60x15_with_its_state_and_keys_and_shows_the_qr_when_there_is_room() {
    let mut app = app_with_bob();
    press(
        &mut app,
        typing("/verify").into_iter().chain([key(KeyCode::Enter)]),
    );
    app.on_event(Event::SafetyNumber(safety("bob", false, false)));
    for (w, h) in [(80, 24), (60, 15)] {
        app.screen = (w, h);
        let backend = screen(&app, w, h);
        let lines = rows(&backend);
        assert!(
            lines.iter().any(|l| l.contains("not verified")),
            "{w}x{h}: {lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("m mark verified · u unmark")),
            "{w}x{h}: {lines:#?}"
        );
        insta::assert_snapshot!(format!("verify_{w}x{h}"), backend);
    }
    let lines = rows(&screen(&app, 80, 24));
    assert!(lines.iter().any(|l| l.contains("enlarge it")), "{lines:#?}");
    // With room, the whole code is drawn: half blocks, between two light rows.
    let lines = rows(&screen(&app, 80, 40));
    let qr: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains('▀') || l.contains('▄'))
        .collect();
    assert!(qr.len() > 10, "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("enlarge it")));
    assert!(lines.iter().any(|l| l.contains("m mark verified")));
}

#[test]
fn help_fits_80_columns_and_scrolls_to_its_end() {
    let mut app = app_with_bob();
    press(&mut app, [key(KeyCode::F(1))]);
    for (w, h) in [(80, 24), (60, 15)] {
        app.screen = (w, h);
        app.overlay_scroll = 0;
        let area = ratatui::layout::Rect::new(0, 0, w, h);
        app.overlay_scroll_max = render::help_scroll_max(&KeyMap::default(), area);
        assert!(
            app.overlay_scroll_max > 0,
            "{w}x{h} is too small for all of it"
        );
        let backend = screen(&app, w, h);
        let lines = rows(&backend);
        assert!(lines.iter().any(|l| l.contains("PageDown scroll")));
        insta::assert_snapshot!(format!("help_{w}x{h}"), backend);
        press(&mut app, [key(KeyCode::End)]);
        let end = rows(&screen(&app, w, h));
        assert!(
            end.iter().any(|l| l.contains("readable by the relay.")),
            "{w}x{h}: {end:#?}"
        );
        // Nothing is cut at the right edge: every line of the help ends inside the border.
        for l in render::help_lines(&KeyMap::default(), w - 2) {
            let width = unicode_width::UnicodeWidthStr::width(l.to_string().as_str());
            assert!(width <= (w - 2) as usize, "{w}: {l}");
        }
        press(&mut app, [key(KeyCode::PageUp), key(KeyCode::Up)]);
        assert!(app.overlay_scroll < app.overlay_scroll_max);
    }
}

#[test]
fn a_notice_about_carol_waits_for_her_thread_while_bob_is_read() {
    let mut app = app_with_bob();
    app.status = None;
    app.on_event(Event::Warning(Warning::in_thread(
        "a message from carol was unreadable: bad mac",
        "carol",
        false,
    )));
    assert_eq!(app.status, None, "shown while reading bob");
    let status = rows(&screen(&app, 80, 24)).pop().unwrap();
    assert!(!status.contains("carol"), "{status}");
    // Opening carol's thread shows it; going back to bob holds it again.
    press(
        &mut app,
        [key(KeyCode::Tab), key(KeyCode::Down), key(KeyCode::Enter)],
    );
    assert!(app.status.as_ref().unwrap().text.contains("from carol"));
    press(
        &mut app,
        [key(KeyCode::Tab), key(KeyCode::Up), key(KeyCode::Enter)],
    );
    assert_eq!(app.status, None);
    // A failed send is about the thread it was sent in, even after switching away.
    let cmds = press(
        &mut app,
        typing("hi bob").into_iter().chain([key(KeyCode::Enter)]),
    );
    let [Command::Send { id, .. }] = &cmds[..] else {
        panic!("{cmds:?}")
    };
    press(
        &mut app,
        [key(KeyCode::Tab), key(KeyCode::Down), key(KeyCode::Enter)],
    );
    app.status = None;
    app.on_event(Event::MessageFailed {
        id: id.clone(),
        error: "refused".into(),
    });
    assert_eq!(app.status, None, "bob's failure shown in carol's thread");
    assert!(app.held.iter().any(|s| s.text.contains("not sent")));
}

#[test]
fn a_warning_is_tied_to_the_contact_it_carries_not_to_a_handle_in_its_text() {
    let mut app = app_with_bob();
    app.status = None;
    // About carol, quoting bob (the first contact in the list): it is still carol's.
    app.on_event(Event::Warning(Warning::in_thread(
        "a message from carol was unreadable: it names bob",
        "carol",
        false,
    )));
    assert_eq!(app.status, None, "carol's warning shown in bob's thread");
    let status = rows(&screen(&app, 80, 24)).pop().unwrap();
    assert!(!status.contains("unreadable"), "{status}");
    press(
        &mut app,
        [key(KeyCode::Tab), key(KeyCode::Down), key(KeyCode::Enter)],
    );
    let status = rows(&screen(&app, 80, 24)).pop().unwrap();
    assert!(status.contains("from carol was unreadable"), "{status}");
    // A warning about no one is shown whichever thread is open, even if it names someone.
    app.on_event(Event::Warning(Warning::general(
        "could not store arriving messages (bob's disk is full); they will be retried",
    )));
    assert!(
        app.status
            .as_ref()
            .unwrap()
            .text
            .contains("could not store")
    );
}

#[test]
fn a_warning_about_a_secret_thread_waits_for_that_thread() {
    let mut app = app_with_bob();
    app.status = None;
    app.on_event(Event::Warning(Warning::in_thread(
        "a secret message from bob could not be decrypted: bad mac",
        "bob",
        true,
    )));
    assert_eq!(app.status, None, "shown in bob's normal thread");
    // One about bob as a whole is shown in either of his threads.
    app.on_event(Event::Warning(Warning::about(
        "bob: a key he never endorsed was refused",
        "bob",
    )));
    assert!(app.status.as_ref().unwrap().text.contains("never endorsed"));
    press(&mut app, [ctrl('s')]);
    assert!(app.secret());
    let status = rows(&screen(&app, 80, 24)).pop().unwrap();
    assert!(status.contains("a secret message from bob"), "{status}");
}

#[test]
fn notices_go_when_what_they_said_stops_being_true() {
    let mut app = app_with_bob();
    app.on_event(Event::Connection(ConnState::Offline {
        reason: "refused".into(),
        retry_in: std::time::Duration::from_secs(4),
    }));
    app.on_event(Event::Failed {
        tag: 99,
        error: "not connected to the relay; try again once the status line says online".into(),
    });
    assert!(app.status.as_ref().unwrap().error);
    app.on_event(Event::Connection(ConnState::Online));
    assert_eq!(app.status, None, "'not connected' outlived the connection");
    app.on_event(Event::Warning(Warning::about(
        "bob's safety number changed: check it with /verify before sending secret messages",
        "bob",
    )));
    assert!(app.status.is_some());
    app.on_event(Event::SafetyNumber(safety("bob", false, false)));
    assert_eq!(app.status, None, "the warning outlived the accepted key");
}

#[test]
fn the_terminal_title_counts_unread() {
    let mut app = app_with_bob();
    assert_eq!(app.title(), "sotto · alice");
    app.on_event(Event::Message(msg(9, "carol", false, false, "hey")));
    app.on_event(Event::Message(msg(10, "carol", true, false, "psst")));
    assert_eq!(app.title(), "(2) sotto · alice");
}

#[test]
fn a_message_in_another_thread_asks_for_a_notification_and_a_secret_one_keeps_its_text() {
    let mut app = app_with_bob();
    // In the open thread: no notification.
    app.on_event(Event::Message(msg(5, "bob", false, false, "seen here")));
    assert_eq!(app.notification, None);
    app.on_event(Event::Message(msg(6, "carol", false, false, "lunch?")));
    assert_eq!(app.notification.take().unwrap().text, "carol: lunch?");
    app.on_event(Event::Message(msg(
        7,
        "carol",
        true,
        false,
        "the code is 4711",
    )));
    let n = app.notification.take().unwrap();
    assert_eq!(n.text, "new secret message from carol");
    assert!(!sotto::tui::notify::osc(&n).contains("4711"));
    app.notify = sotto::tui::notify::Mode::Off;
    app.on_event(Event::Message(msg(8, "carol", false, false, "hello?")));
    assert_eq!(app.notification, None);
}
