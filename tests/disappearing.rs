//! Disappearing messages end to end, on both sides of a conversation, over a real relay:
//! timer changes reach the peer, each copy expires on its own schedule, and an expired
//! message is gone from every file either client or the relay keeps. Each test runs with the
//! relay's state on SQLite and on PostgreSQL (`on_each_backend!`); there, "gone" means the
//! queue's row is deleted as promptly as on SQLite, which is what PostgreSQL lets the relay
//! promise (docs/protocol.md, "Deleted envelopes on PostgreSQL").

mod common;

use std::time::{Duration, Instant};

use common::backend::Backend;
use common::{Client, Raw, Scene, any_file_contains, expired, set_timer};
use sotto::client::content::Content;
use sotto::client::manager::{Command, Event};
use sotto::client::store::MessageKind;
use sotto::wire::{ClientFrame, RelayFrame};

on_each_backend!(
    a_timer_change_reaches_the_peer_and_each_copy_expires_on_its_own_clock,
    an_expired_secret_message_is_in_no_file_of_either_client_or_the_relay,
    without_a_timer_the_same_search_finds_the_text_on_disk,
    an_expired_normal_message_is_gone_from_the_relay_too,
    a_timer_change_out_of_range_from_a_peer_is_refused_and_not_applied,
    the_relay_drops_an_envelope_whose_timer_ran_out_before_delivery,
);

async fn a_timer_change_reaches_the_peer_and_each_copy_expires_on_its_own_clock(backend: Backend) {
    let scene = backend.scene().await;
    let (mut alice, mut bob) = scene.online().await;
    // A first message sets the secret session up.
    alice.send("bob", true, "hello").await;
    bob.receive().await;

    set_timer(&mut alice, true, Some(5)).await;
    // bob's side takes the new timer and shows the change as a line in the thread.
    match bob.expect(|e| matches!(e, Event::TimerSet { .. })).await {
        Event::TimerSet {
            contact,
            secret,
            timer,
        } => {
            assert_eq!((contact.as_str(), secret, timer), ("alice", true, Some(5)));
        }
        _ => unreachable!(),
    }
    let line = bob.receive().await;
    assert_eq!((line.kind, line.timer), (MessageKind::Timer, Some(5)));

    let sent = Instant::now();
    let id = alice.send("bob", true, "this will vanish").await;
    let m = bob.receive().await;
    assert_eq!(
        (m.text.as_str(), m.timer, m.expires_at),
        ("this will vanish", Some(5), None)
    );
    // bob looks at it two seconds later: his copy counts from then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shown = Instant::now();
    bob.handle
        .commands
        .send(Command::MarkShown {
            ids: vec![id.clone()],
        })
        .await
        .unwrap();
    let bob_expires = match bob.expect(|e| matches!(e, Event::Expiring(_))).await {
        Event::Expiring(started) => {
            assert_eq!(started.len(), 1);
            started[0].1
        }
        _ => unreachable!(),
    };
    let alice_expires = alice
        .history("bob", true)
        .iter()
        .find(|m| m.id == id)
        .and_then(|m| m.expires_at)
        .unwrap();
    // Each copy's deadline was set by its own side: bob's about the two seconds later that
    // he looked. (Compared as stored deadlines, not as arrival times of events, which a
    // loaded machine can delay.)
    assert!(
        bob_expires >= alice_expires + 1_900,
        "alice {alice_expires}, bob {bob_expires}"
    );

    let alice_gone = expired(&mut alice, &id).await;
    let bob_gone = expired(&mut bob, &id).await;
    assert!(
        alice_gone - sent >= Duration::from_secs(5),
        "alice's copy went early"
    );
    assert!(
        bob_gone - shown >= Duration::from_secs(5),
        "bob's copy went early"
    );
    assert!(alice.history("bob", true).iter().all(|m| m.id != id));
    assert!(bob.history("alice", true).iter().all(|m| m.id != id));
    // The timer lines stay: they are not messages that disappear.
    assert!(
        bob.history("alice", true)
            .iter()
            .any(|m| m.kind == MessageKind::Timer)
    );
    alice.stop();
    bob.stop();
    scene.relay.stop().await;
}

/// Sends `marker` from alice to bob in secret with `timer`, lets bob see it, and waits for
/// both sweeps if there is a timer. Then searches every file of both profiles and the relay's
/// storage (`Backend::relay_holds`: its files, and on PostgreSQL the queue's rows) for the
/// marker: first with both clients still running (the WAL is live then), then after
/// everything has stopped. Returns where it was found, both times.
async fn marker_on_disk(
    backend: &Backend,
    marker: &str,
    secret: bool,
    timer: Option<u32>,
) -> (Vec<String>, Vec<String>) {
    let scene = backend.scene().await;
    let (mut alice, mut bob) = scene.online().await;
    if timer.is_some() {
        set_timer(&mut alice, secret, timer).await;
    }
    let id = alice.send("bob", secret, marker).await;
    let m = loop {
        let m = bob.receive().await;
        if m.kind == MessageKind::Text {
            break m;
        }
    };
    assert_eq!(m.text, marker);
    bob.handle
        .commands
        .send(Command::MarkShown {
            ids: vec![id.clone()],
        })
        .await
        .unwrap();
    if timer.is_some() {
        expired(&mut alice, &id).await;
        expired(&mut bob, &id).await;
    }
    // Let the delivery receipt land too, so every file is in its final state.
    alice.barrier().await;
    bob.barrier().await;
    let search = || {
        let mut hits = Vec::new();
        for dir in [&scene.alice, &scene.bob, &scene.relay_dir] {
            assert!(std::fs::read_dir(dir).unwrap().count() > 0);
            let found = if *dir == scene.relay_dir {
                backend.relay_holds(dir, marker.as_bytes())
            } else {
                any_file_contains(dir, marker.as_bytes())
            };
            for f in found {
                hits.push(format!(
                    "{}/{f}",
                    dir.file_name().unwrap().to_string_lossy()
                ));
            }
        }
        hits.sort();
        hits
    };
    let running = search();
    alice.stop();
    bob.stop();
    scene.relay.stop().await;
    (running, search())
}

async fn an_expired_secret_message_is_in_no_file_of_either_client_or_the_relay(backend: Backend) {
    let (running, stopped) =
        marker_on_disk(&backend, "FORENSIC-MARKER-9b1e77", true, Some(5)).await;
    assert_eq!(running, Vec::<String>::new(), "found while the clients run");
    assert_eq!(stopped, Vec::<String>::new(), "found after they stopped");
}

async fn without_a_timer_the_same_search_finds_the_text_on_disk(backend: Backend) {
    // The control for the test above: the search sees the text when it is there, in both
    // profiles, while running and after.
    let (running, stopped) = marker_on_disk(&backend, "FORENSIC-CONTROL-51aa0c", true, None).await;
    for hits in [running, stopped] {
        assert!(hits.iter().any(|h| h.starts_with("a/")), "{hits:?}");
        assert!(hits.iter().any(|h| h.starts_with("b/")), "{hits:?}");
        assert!(!hits.iter().any(|h| h.starts_with("relay/")), "{hits:?}");
    }
}

async fn an_expired_normal_message_is_gone_from_the_relay_too(backend: Backend) {
    // The relay read this one (normal thread); after delivery it must not keep the text in
    // its database or its WAL.
    let (running, stopped) =
        marker_on_disk(&backend, "FORENSIC-NORMAL-e3d920", false, Some(5)).await;
    assert_eq!(running, Vec::<String>::new(), "found while running");
    assert_eq!(stopped, Vec::<String>::new(), "found after stopping");
}

/// On SQLite only: it finds the text of an envelope already acknowledged in the relay's WAL,
/// which PostgreSQL does not keep in the data directory, and on PostgreSQL such an envelope
/// (no `expires_at`) may be deleted at once or later (docs/protocol.md), so nothing fixed
/// could be asserted. The PostgreSQL search of the queue's rows has its control in
/// `chat::postgres::secret_plaintext_never_reaches_the_relay_while_normal_text_does`, which
/// finds a normal text waiting there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_timer_a_normal_text_is_found_at_the_relay_while_it_runs() {
    // The control for the test above: the search does see the relay's WAL.
    let (running, _) = marker_on_disk(
        &Backend::Sqlite,
        "FORENSIC-NORMAL-CONTROL-7c0f4b",
        false,
        None,
    )
    .await;
    assert!(
        running.iter().any(|h| h.starts_with("relay/")),
        "{running:?}"
    );
}

async fn a_timer_change_out_of_range_from_a_peer_is_refused_and_not_applied(backend: Backend) {
    let Scene {
        alice: ad,
        bob: bd,
        relay,
        tmp: _tmp,
        ..
    } = backend.scene().await;
    let mut bob = Client::start(&bd, &relay.url).await;
    let bob_id = common::account_id(&bd);
    // alice's client would never send these; a modified one could.
    let mut raw = Raw::auth(&relay.url, &ad).await;
    for (req, secs) in [(1, 3u32), (2, 90_000)] {
        let body = Content::timer_change(format!("bad-{secs}"), Some(secs), 0).encode();
        raw.send(&ClientFrame::Send {
            req,
            to: bob_id.clone(),
            body: body.into(),
            expires_at: None,
            online_only: false,
        })
        .await;
        raw.expect(|f| matches!(f, RelayFrame::Ok { .. })).await;
        match bob
            .expect(|e| matches!(e, Event::Warning(_) | Event::TimerSet { .. }))
            .await
        {
            Event::Warning(w) => {
                assert!(w.text.contains("outside 5s to 24h"), "{w}");
                // It belongs to alice's normal thread, where the timer was sent.
                assert_eq!(
                    (w.contact.as_deref(), w.secret),
                    (Some("alice"), Some(false)),
                    "{w:?}"
                );
            }
            other => panic!("an out-of-range timer was applied: {other:?}"),
        }
    }
    let store = sotto::client::store::Store::open(&bd).unwrap();
    let alice = store.contact_by_handle("alice").unwrap().unwrap();
    assert_eq!(store.thread_timer(&alice.account_id, false).unwrap(), None);
    assert!(
        bob.history("alice", false).is_empty(),
        "no timer line was recorded"
    );
    bob.stop();
    relay.stop().await;
}

async fn the_relay_drops_an_envelope_whose_timer_ran_out_before_delivery(backend: Backend) {
    let Scene {
        alice: ad,
        bob: bd,
        relay,
        tmp: _tmp,
        ..
    } = backend.scene().await;
    let bob_id = common::account_id(&bd);
    let mut raw = Raw::auth(&relay.url, &ad).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (req, text, expires_at) in [
        (1, "too late", Some(now - 1)),
        (2, "in time", Some(now + 600_000)),
    ] {
        let body = Content::text(format!("id-{req}"), text.into(), now - 10_000, Some(5)).encode();
        raw.send(&ClientFrame::Send {
            req,
            to: bob_id.clone(),
            body: body.into(),
            expires_at,
            online_only: false,
        })
        .await;
        raw.expect(|f| matches!(f, RelayFrame::Ok { .. })).await;
    }
    let mut bob = Client::start(&bd, &relay.url).await;
    let mut got = Vec::new();
    while let Event::Message(m) = bob
        .expect(|e| matches!(e, Event::Message(_) | Event::Drained))
        .await
    {
        got.push(m.text);
    }
    assert_eq!(got, ["in time"]);
    bob.stop();
    relay.stop().await;
}
