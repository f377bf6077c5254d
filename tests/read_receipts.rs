//! Read receipts end to end over the in-process relay: a message the recipient displays
//! turns to `read` on the sender's side, in both threads; read receipts off on either side
//! leave it `delivered`; a read receipt from someone else, from the other thread, or naming
//! the peer's own message changes nothing.

mod common;

use common::{Client, Raw, Scene, account_id};
use sotto::client::content::Content;
use sotto::client::manager::{Command, Event, Settings};
use sotto::client::store::{Message, MessageState};
use sotto::wire::{ClientFrame, RelayFrame};

fn with_reads(read_receipts: bool) -> Settings {
    Settings {
        read_receipts,
        ..Settings::default()
    }
}

/// The state of `id` in `dir`'s thread with `peer`.
fn state(c: &Client, peer: &str, secret: bool, id: &str) -> MessageState {
    let history = c.history(peer, secret);
    let m: &Message = history
        .iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("{id} is not in the thread"));
    m.state
}

/// Waits until `id` is delivered. Its event may have gone by already (the receipt can
/// overtake the relay's `ok`, and waiting for another message skips events), so the store,
/// which is written before the event is sent, is asked first.
async fn delivered(c: &mut Client, id: &str) {
    let done = [false, true]
        .into_iter()
        .flat_map(|secret| c.history("bob", secret))
        .any(|m| m.id == id && m.state == MessageState::Delivered);
    if done {
        return;
    }
    c.expect(
        |e| matches!(e, Event::MessageState { id: i, state: MessageState::Delivered } if i == id),
    )
    .await;
}

/// alice writes to bob, who displays it and quits (owed receipts go out as the manager
/// stops); bob then writes back, and once alice has that (the queue delivers in order, so
/// any receipt came before it) the state of alice's message is returned.
async fn displayed(scene: &Scene, alice: Settings, bob: Settings, secret: bool) -> MessageState {
    let url = &scene.relay.url;
    let mut a = Client::start_with(&scene.alice, url, alice).await;
    let mut b = Client::start_with(&scene.bob, url, bob).await;
    let id = a.send("bob", secret, "did you see this?").await;
    let m = b.receive().await;
    assert_eq!(m.id, id);
    delivered(&mut a, &id).await;
    b.handle
        .commands
        .send(Command::MarkShown {
            ids: vec![id.clone()],
        })
        .await
        .unwrap();
    b.stop();
    let mut b = Client::start_with(&scene.bob, url, bob).await;
    b.send("alice", secret, "yes").await;
    let reply = a.receive().await;
    assert_eq!(reply.text, "yes");
    let s = state(&a, "bob", secret, &id);
    a.stop();
    b.stop();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_displayed_message_turns_read_for_its_sender_in_both_threads() {
    let scene = Scene::new().await;
    let mut ids = Vec::new();
    for secret in [false, true] {
        let url = &scene.relay.url;
        let mut a = Client::start(&scene.alice, url).await;
        let mut b = Client::start(&scene.bob, url).await;
        let id = a.send("bob", secret, "read me").await;
        assert_eq!(b.receive().await.id, id);
        delivered(&mut a, &id).await;
        b.handle
            .commands
            .send(Command::MarkShown {
                ids: vec![id.clone()],
            })
            .await
            .unwrap();
        a.expect(
            |e| matches!(e, Event::MessageState { id: i, state: MessageState::Read } if *i == id),
        )
        .await;
        assert_eq!(state(&a, "bob", secret, &id), MessageState::Read);
        assert_eq!(state(&b, "alice", secret, &id), MessageState::Received);
        a.stop();
        b.stop();
        ids.push(id);
    }
    // The normal thread's receipt is readable by the relay, as all of that thread is; the
    // secret one travelled sealed, so the relay never saw the id it names.
    let normal = Content::read(vec![ids[0].clone()]).encode();
    assert!(scene.relay.received_any(&normal));
    assert!(!scene.relay.received_any(ids[1].as_bytes()));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_receipts_off_on_either_side_leave_the_message_delivered() {
    let scene = Scene::new().await;
    let (on, off) = (with_reads(true), with_reads(false));
    for secret in [false, true] {
        // The control: both on, the same steps make it read.
        assert_eq!(displayed(&scene, on, on, secret).await, MessageState::Read);
        // bob sends none.
        assert_eq!(
            displayed(&scene, on, off, secret).await,
            MessageState::Delivered
        );
        // alice takes none.
        assert_eq!(
            displayed(&scene, off, on, secret).await,
            MessageState::Delivered
        );
    }
}

/// Sends `content` to `to` as a normal message on a raw connection signed in as `dir`'s
/// profile, and waits for the relay's `ok`.
async fn send_raw(raw: &mut Raw, to: &str, content: Content) {
    raw.send(&ClientFrame::Send {
        req: 1,
        to: to.to_string(),
        body: content.encode().into(),
        expires_at: None,
        online_only: false,
    })
    .await;
    raw.expect(|f| matches!(f, RelayFrame::Ok { req: 1 })).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_or_cross_thread_read_receipt_changes_nothing() {
    let scene = Scene::new().await;
    let carol = scene.path("c");
    common::register(&carol, "carol", &scene.relay.url).await;
    let (mut a, mut b) = scene.online().await;
    let secret_id = a.send("bob", true, "secret one").await;
    let normal_id = a.send("bob", false, "normal one").await;
    for _ in 0..2 {
        b.receive().await;
    }
    delivered(&mut a, &secret_id).await;
    delivered(&mut a, &normal_id).await;
    let bobs = b.send("alice", false, "bob's own").await;
    a.receive().await;
    b.stop();
    let alice_id = account_id(&scene.alice);

    // bob, in the normal thread, names his secret-thread message and his own message.
    let mut raw = Raw::auth(&scene.relay.url, &scene.bob).await;
    send_raw(
        &mut raw,
        &alice_id,
        Content::read(vec![secret_id.clone(), bobs.clone()]),
    )
    .await;
    // carol names alice's messages to bob.
    let mut raw_carol = Raw::auth(&scene.relay.url, &carol).await;
    send_raw(
        &mut raw_carol,
        &alice_id,
        Content::read(vec![secret_id.clone(), normal_id.clone()]),
    )
    .await;
    // A text behind them: once alice has it, she has handled both receipts.
    send_raw(
        &mut raw_carol,
        &alice_id,
        Content::text("after".into(), "after".into(), 1, None),
    )
    .await;
    let after = a.receive().await;
    assert_eq!(
        (after.contact.as_str(), after.text.as_str()),
        ("carol", "after")
    );
    assert_eq!(state(&a, "bob", true, &secret_id), MessageState::Delivered);
    assert_eq!(state(&a, "bob", false, &normal_id), MessageState::Delivered);
    assert_eq!(state(&a, "bob", false, &bobs), MessageState::Received);
    a.stop();
}

#[test]
fn recv_reports_what_it_printed_read_unless_read_receipts_are_off() {
    use common::cli::{json_lines, ok, scene};
    let (_rt, s) = scene();
    let off = s.path("off.toml");
    std::fs::write(&off, "read_receipts = false\n").unwrap();
    let off = off.to_string_lossy().into_owned();
    for (config, want) in [(None, "read"), (Some(off.as_str()), "delivered")] {
        let text = format!("headless, then {want}");
        ok(&s.alice, &["send", "bob", &text]);
        let mut args = Vec::new();
        if let Some(c) = config {
            args.extend(["--config", c]);
        }
        args.push("recv");
        // bob prints it, which marks it read; what he owes goes out as he stops.
        assert!(ok(&s.bob, &args).contains(&text));
        // alice takes the receipts from her queue.
        ok(&s.alice, &["recv"]);
        let history = json_lines(&ok(&s.alice, &["history", "bob"]));
        let line = history
            .iter()
            .find(|m| m["text"] == text.as_str())
            .unwrap_or_else(|| panic!("{history:?}"));
        assert_eq!(line["state"], want, "{line}");
    }
}
