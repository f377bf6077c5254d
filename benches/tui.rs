//! TUI performance over a profile holding 100,000 messages in one thread:
//! - `render/newest_page`: one frame with the newest page loaded (what the TUI holds);
//! - `render/all_loaded`: one frame with all 100,000 in memory (a user who scrolled to the top);
//! - `startup/first_frame`: from starting the session manager on the profile to the first
//!   frame that shows the thread's messages (store open, contact list, newest page, draw).
//!
//! Run: `cargo bench --bench tui`. Frames are drawn on ratatui's TestBackend (120x40), so the
//! numbers are layout and buffer work without terminal I/O.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sotto::client::manager::{self, Command, Event};
use sotto::client::store::{Message, Store};
use sotto::tui::app::{App, PAGE, ThreadKey};
use sotto::tui::clock::{Clock, DEFAULT_TIME_FORMAT, Zone};
use sotto::tui::keys::KeyMap;
use sotto::tui::render;

const MESSAGES: i64 = 100_000;

#[path = "common/mod.rs"]
mod common;

/// A registered profile with a contact bob and `MESSAGES` messages in his two threads.
fn profile(dir: &Path) {
    let me = dir.join("me");
    common::register(&[(&me, "me")]);
    common::fill_bob(&Store::open(&me).unwrap(), MESSAGES);
}

/// An app as the terminal loop makes it: times in the system's zone.
fn new_app() -> App {
    let mut app = App::new("me");
    app.clock = Clock::new(Zone::Local, DEFAULT_TIME_FORMAT).unwrap();
    app.screen = (120, 40);
    app
}

fn app_with(messages: Vec<Message>) -> App {
    let mut app = new_app();
    app.open = Some(ThreadKey {
        handle: "bob".into(),
        secret: true,
    });
    app.thread.messages = messages;
    app
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    profile(tmp.path());
    let me = tmp.path().join("me");
    let store = Store::open(&me).unwrap();
    let newest = store.page("bob-account", true, None, PAGE).unwrap();
    let all = store
        .page("bob-account", true, None, MESSAGES as usize)
        .unwrap();
    drop(store);
    let keys = KeyMap::default();

    let mut group = c.benchmark_group("render");
    for (name, app) in [
        ("newest_page", app_with(newest)),
        ("all_loaded", app_with(all)),
    ] {
        let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                term.draw(|f| render::draw(f, &app, &keys)).unwrap();
            });
        });
    }
    group.finish();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("startup");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(15));
    group.bench_function("first_frame", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                // A closed port: the links fail fast and the frame does not wait for them.
                let mut m = manager::spawn(&me, Some("ws://127.0.0.1:9".into())).unwrap();
                let mut app = new_app();
                let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
                let mut cmds = app.start(None);
                cmds.push(Command::LoadPage {
                    contact: "bob".into(),
                    secret: true,
                    before: None,
                    limit: PAGE,
                });
                app.open = Some(ThreadKey {
                    handle: "bob".into(),
                    secret: true,
                });
                app.thread.loading = true;
                for c in cmds {
                    m.commands.try_send(c).unwrap();
                }
                rt.block_on(async {
                    while app.thread.loading {
                        let ev = m.events.recv().await.unwrap();
                        if matches!(ev, Event::Page { .. } | Event::Contacts(_)) {
                            app.on_event(ev);
                        }
                    }
                });
                term.draw(|f| render::draw(f, &app, &keys)).unwrap();
                total += start.elapsed();
                assert_eq!(app.thread.messages.len(), PAGE);
                m.shutdown();
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
