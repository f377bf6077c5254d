//! TUI performance over a profile holding 100,000 messages in one thread:
//! - `render/newest_page`: one frame with the newest page loaded (what the TUI holds);
//! - `render/all_loaded`: one frame with all 100,000 in memory (a user who scrolled to the top);
//! - `startup/first_frame`: from starting the session manager on the profile to the first
//!   frame that shows the thread's messages (store open, contact list, newest page, draw).
//!
//! Run: `cargo bench --bench tui`. Frames are drawn on ratatui's TestBackend (120x40), so the
//! numbers are layout and buffer work without terminal I/O.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sotto::client::account;
use sotto::client::manager::{self, Command, Event};
use sotto::client::store::{Contact, Message, MessageKind, MessageState, Store};
use sotto::tui::app::{App, PAGE, ThreadKey};
use sotto::tui::keys::KeyMap;
use sotto::tui::render;

const MESSAGES: i64 = 100_000;

fn message(i: i64) -> Message {
    Message {
        seq: 0,
        id: format!("bench-{i}"),
        contact: "bob".into(),
        secret: i % 2 == 0,
        outgoing: i % 3 == 0,
        text: format!("message {i}: the quick brown fox jumps over the lazy dog, again and again"),
        sent_at: 1_700_000_000_000 + i as u64 * 1000,
        state: MessageState::Sent,
        kind: MessageKind::Text,
        timer: None,
        expires_at: None,
    }
}

/// A registered profile (at a relay that is gone by the time we read it) with a contact bob
/// and `MESSAGES` messages in bob's secret and normal threads.
fn profile(dir: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let relay_dir = dir.join("relay");
        let token = stop.clone();
        let relay = tokio::spawn(async move {
            sotto::relay::run(listener, &relay_dir, Default::default(), token)
                .await
                .unwrap();
        });
        let store = Store::open(&dir.join("me")).unwrap();
        account::init(&store, "me", &url, SystemTime::now(), &mut rand::rng())
            .await
            .unwrap();
        stop.cancel();
        relay.await.unwrap();
    });
    let store = Store::open(&dir.join("me")).unwrap();
    let bob = Contact {
        account_id: "bob-account".into(),
        handle: "bob".into(),
        identity_key: vec![5; 33],
        access_token: vec![0; 16],
        verified: false,
        key_changed: false,
    };
    store.upsert_contact(&bob, 0).unwrap();
    let tx = store.conn().unchecked_transaction().unwrap();
    for i in 0..MESSAGES {
        store
            .insert_message(&bob.account_id, &message(i), 0)
            .unwrap();
    }
    tx.commit().unwrap();
}

fn app_with(messages: Vec<Message>) -> App {
    let mut app = App::new("me");
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
                let mut app = App::new("me");
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
