//! Search in the chat screen: `/search WORDS` and Ctrl-F through the key map and the pure app
//! (the commands sent, what opening a result does to the thread view), and the results list
//! drawn on ratatui's TestBackend.

mod common;

use common::tui::{contact, ctrl, key, press, typing};
use crossterm::event::KeyCode;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sotto::client::manager::{Command, ConnState, Event};
use sotto::client::store::{ContactSummary, Message, SearchHit};
use sotto::tui::app::{App, Overlay};
use sotto::tui::keys::KeyMap;
use sotto::tui::render;

/// 09:30 UTC on Tuesday 14 November 2023.
const MORNING: u64 = 1_699_954_200_000;

fn summary(handle: &str) -> ContactSummary {
    ContactSummary {
        has_secret: true,
        ..contact(handle)
    }
}

/// `common::tui::msg`, a second apart by `seq`, so that results have distinct times.
fn msg(seq: i64, contact: &str, secret: bool, outgoing: bool, text: &str) -> Message {
    Message {
        sent_at: MORNING + seq as u64 * 1_000,
        ..common::tui::msg(seq, contact, secret, outgoing, text)
    }
}

fn hit(m: Message) -> SearchHit {
    SearchHit {
        snippet: m.text.clone(),
        message: m,
    }
}

/// An app with bob and carol, online, bob's normal thread open with `n` messages from him
/// ("message 0" …), the newest page of which (100) is loaded.
fn app(n: i64) -> App {
    let mut app = App::new("alice");
    app.on_event(Event::Connection(ConnState::Online));
    app.on_event(Event::Contacts(vec![summary("bob"), summary("carol")]));
    press(&mut app, [key(KeyCode::Tab), key(KeyCode::Enter)]);
    let first = (n - 100).max(0);
    app.on_event(Event::Page {
        contact: "bob".into(),
        secret: false,
        before: None,
        messages: (first..n)
            .map(|s| msg(s, "bob", false, false, &format!("message {s}")))
            .collect(),
        complete: first == 0,
    });
    app
}

/// The tag of the one search among `cmds`, checking what it asks.
fn searched(cmds: &[Command], words: &str, thread: Option<(&str, bool)>) -> u64 {
    match cmds {
        [
            Command::Search {
                tag,
                query,
                thread: t,
            },
        ] => {
            assert_eq!(query, words);
            assert_eq!(t.as_ref().map(|(h, s)| (h.as_str(), *s)), thread);
            *tag
        }
        other => panic!("expected one search, got {other:?}"),
    }
}

fn screen(app: &App, width: u16, height: u16) -> TestBackend {
    let mut term = Terminal::new(TestBackend::new(width, height)).unwrap();
    term.draw(|f| render::draw(f, app, &KeyMap::default()))
        .unwrap();
    term.backend().clone()
}

fn rows(backend: &TestBackend) -> Vec<String> {
    let buf = backend.buffer();
    (0..buf.area.height)
        .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect())
        .collect()
}

/// The lines the open thread shows, as text.
fn thread_text(app: &App) -> Vec<String> {
    let (w, h) = sotto::tui::layout::thread_inner(app, app.screen.0, app.screen.1);
    render::thread_view(app, w, h)
        .lines
        .iter()
        .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
        .collect()
}

/// Three results of "meet" across threads, newest first.
fn meet_results() -> Vec<SearchHit> {
    vec![
        hit(msg(
            930,
            "carol",
            true,
            false,
            "can we meet before the others arrive? I have news",
        )),
        hit(msg(
            920,
            "bob",
            false,
            true,
            "meeting moved to noon, same room as last time, bring the printed slides please",
        )),
        hit(msg(40, "bob", false, false, "meet me at the station")),
    ]
}

#[test]
fn slash_search_searches_every_thread_and_lists_what_it_found() {
    let mut app = app(1000);
    let mut keys = typing("/search meet");
    keys.push(key(KeyCode::Enter));
    let cmds = press(&mut app, keys);
    let tag = searched(&cmds, "meet", None);
    assert_eq!(app.overlay, Some(Overlay::Search));
    assert!(
        app.composer.text().is_empty(),
        "the command left the composer"
    );
    let waiting = rows(&screen(&app, 80, 24));
    assert!(
        waiting.iter().any(|r| r.contains("searching…")),
        "{waiting:#?}"
    );

    // A late answer to another search is not shown.
    app.on_event(Event::SearchResults {
        tag: tag + 100,
        results: vec![hit(msg(1, "bob", false, false, "stale"))],
    });
    assert_eq!(app.search.results, None);
    app.on_event(Event::SearchResults {
        tag,
        results: meet_results(),
    });
    let backend = screen(&app, 80, 24);
    let shown = rows(&backend);
    let list: Vec<&String> = shown.iter().filter(|r| r.contains(" Nov ")).collect();
    assert_eq!(list.len(), 3, "{shown:#?}");
    assert!(
        list[0].contains("▸🔒") && list[0].contains("carol") && list[0].contains("can we meet"),
        "{list:?}"
    );
    assert!(
        list[1].contains("bob") && list[1].contains("you: meeting moved"),
        "{list:?}"
    );
    assert!(
        list[1].contains("as la…│"),
        "a long snippet is cut: {list:?}"
    );
    assert!(
        list[2].contains("14 Nov 09:30  meet me at the station"),
        "{list:?}"
    );
    insta::assert_snapshot!("search_results_80x24", backend);
}

#[test]
fn ctrl_f_searches_the_open_thread_and_esc_closes_without_a_trace() {
    let mut app = app(1000);
    let cmds = press(&mut app, [ctrl('f')]);
    assert!(cmds.is_empty(), "nothing to search yet: {cmds:?}");
    assert_eq!(app.overlay, Some(Overlay::Search));
    let shown = rows(&screen(&app, 80, 24));
    assert!(
        shown
            .iter()
            .any(|r| r.contains("search · bob normal thread")),
        "{shown:#?}"
    );
    // Keys that mean something elsewhere type into the words here.
    let mut keys = typing("?jk q");
    keys.push(key(KeyCode::Backspace));
    keys.extend(typing("noon"));
    keys.push(key(KeyCode::Enter));
    let cmds = press(&mut app, keys);
    let tag = searched(&cmds, "?jk noon", Some(("bob", false)));
    app.on_event(Event::Failed {
        tag,
        error: "type at least one letter or digit to search for".into(),
    });
    let shown = rows(&screen(&app, 80, 24));
    assert!(
        shown
            .iter()
            .any(|r| r.contains("! type at least one letter or digit")),
        "{shown:#?}"
    );
    assert_eq!(app.status, None, "the failure shows in the overlay only");
    assert!(press(&mut app, [key(KeyCode::Esc)]).is_empty());
    assert_eq!(app.overlay, None);
    assert!(app.composer.text().is_empty());
}

#[test]
fn enter_on_a_result_in_another_thread_opens_it_and_loads_pages_until_the_message_is_there() {
    let mut app = app(1000);
    let mut keys = typing("/search meet");
    keys.push(key(KeyCode::Enter));
    let tag = searched(&press(&mut app, keys), "meet", None);
    let mut results = meet_results();
    results[0] = hit(msg(130, "carol", true, false, "can we meet"));
    app.on_event(Event::SearchResults { tag, results });
    // Down past the end stays on the last row; Up goes back to the first.
    press(&mut app, [key(KeyCode::Down); 5]);
    assert_eq!(app.search.selected, 2);
    press(&mut app, [key(KeyCode::Up), key(KeyCode::Up)]);
    let cmds = press(&mut app, [key(KeyCode::Enter)]);
    assert_eq!(app.overlay, None);
    assert!(
        matches!(&cmds[..], [Command::LoadPage { contact, secret: true, before: None, .. }] if contact == "carol"),
        "{cmds:?}"
    );
    // carol's secret thread: 300 messages, seq 100 to 399; the result is seq 130.
    let page = |from: i64| -> Vec<Message> {
        (from..from + 100)
            .map(|s| msg(s, "carol", true, false, &format!("carol {s}")))
            .collect()
    };
    let cmds = app.on_event(Event::Page {
        contact: "carol".into(),
        secret: true,
        before: None,
        messages: page(300),
        complete: false,
    });
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::LoadPage {
                before: Some(300),
                ..
            }
        )),
        "{cmds:?}"
    );
    let cmds = app.on_event(Event::Page {
        contact: "carol".into(),
        secret: true,
        before: Some(300),
        messages: page(200),
        complete: false,
    });
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::LoadPage {
                before: Some(200),
                ..
            }
        )),
        "{cmds:?}"
    );
    let cmds = app.on_event(Event::Page {
        contact: "carol".into(),
        secret: true,
        before: Some(200),
        messages: page(100),
        complete: true,
    });
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::LoadPage { .. })),
        "{cmds:?}"
    );
    let lines = thread_text(&app);
    assert!(
        lines[0].contains("carol 130"),
        "the message is at the top: {lines:#?}"
    );
}

#[test]
fn a_result_already_loaded_scrolls_there_and_one_gone_since_says_so() {
    let mut app = app(1000);
    let cmds = press(&mut app, [ctrl('f')]);
    assert!(cmds.is_empty());
    let mut keys = typing("message");
    keys.push(key(KeyCode::Enter));
    let tag = searched(&press(&mut app, keys), "message", Some(("bob", false)));
    app.on_event(Event::SearchResults {
        tag,
        results: vec![
            hit(msg(950, "bob", false, false, "message 950")),
            hit(msg(5, "bob", false, false, "message 5")),
        ],
    });
    // Enter on words already searched opens the chosen result: loaded, so no page is asked.
    assert!(press(&mut app, [key(KeyCode::Enter)]).is_empty());
    assert!(
        thread_text(&app)[0].contains("message 950"),
        "{:#?}",
        thread_text(&app)
    );

    // The second result expired after the search. Ctrl-F on an empty composer brings the
    // last search back as it was.
    press(&mut app, [ctrl('f')]);
    assert_eq!(app.search.input, "message");
    assert_eq!(app.search.results.as_ref().map(Vec::len), Some(2));
    press(&mut app, [key(KeyCode::Down)]);
    let cmds = press(&mut app, [key(KeyCode::Enter)]);
    assert!(
        matches!(
            &cmds[..],
            [Command::LoadPage {
                before: Some(900),
                ..
            }]
        ),
        "{cmds:?}"
    );
    app.on_event(Event::Page {
        contact: "bob".into(),
        secret: false,
        before: Some(900),
        messages: (10..900)
            .map(|s| msg(s, "bob", false, false, &format!("message {s}")))
            .collect(),
        complete: true,
    });
    let status = app.status.clone().expect("a notice");
    assert!(
        status.error && status.text.contains("that message is gone"),
        "{status:?}"
    );
}
