//! Typing indicators end to end over the in-process relay: typing reaches an online peer in
//! both threads and stops showing on its own; typing for an offline recipient leaves nothing
//! in the relay's files and is never delivered later; `typing = false` sends none and shows
//! none.

mod common;

use std::time::Duration;

use common::{Client, Scene, account_id, any_file_contains};
use sotto::client::content::Content;
use sotto::client::manager::{Command, Event, Settings};
use sotto::client::store::MessageState;
use sotto::relay::store::{Directory as _, RelayStore};
use sotto::wire::ClientFrame;

async fn typing(c: &Client, to: &str, secret: bool, active: bool) {
    c.handle
        .commands
        .send(Command::Typing {
            to: to.into(),
            secret,
            active,
        })
        .await
        .unwrap();
}

fn is_typing(e: &Event, secret: bool, active: bool) -> bool {
    matches!(e, Event::Typing { contact, secret: s, active: a }
        if contact == "alice" && *s == secret && *a == active)
}

/// Both threads have a session and a message each way, and alice's receipts for bob's
/// messages have reached bob and been acknowledged: nothing from before waits for him.
async fn acquainted(a: &mut Client, b: &mut Client) {
    for secret in [false, true] {
        a.send("bob", secret, "hi").await;
        b.receive().await;
        let id = b.send("alice", secret, "hello").await;
        a.receive().await;
        b.expect(|e| {
            matches!(e, Event::MessageState { id: i, state: MessageState::Delivered } if *i == id)
        })
        .await;
    }
    // bob acks an envelope right after reporting it; the barrier's answer comes after the ack.
    b.barrier().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typing_reaches_an_online_peer_and_stops_showing_by_itself_or_when_told() {
    let scene = Scene::new().await;
    let (mut a, mut b) = scene.online().await;
    acquainted(&mut a, &mut b).await;
    let rows = (a.history("bob", true).len(), b.history("alice", true).len());

    // Secret thread: shown, and gone when alice says she stopped.
    typing(&a, "bob", true, true).await;
    b.expect(|e| is_typing(e, true, true)).await;
    typing(&a, "bob", true, false).await;
    b.expect(|e| is_typing(e, true, false)).await;

    // Normal thread: shown, and gone by itself six seconds after the last word.
    typing(&a, "bob", false, true).await;
    b.expect(|e| is_typing(e, false, true)).await;
    let shown = tokio::time::Instant::now();
    b.expect(|e| is_typing(e, false, false)).await;
    let after = shown.elapsed();
    assert!(
        after >= Duration::from_secs(5) && after < Duration::from_secs(10),
        "typing showed for {after:?}"
    );

    // A message from alice ends her typing at once.
    typing(&a, "bob", true, true).await;
    b.expect(|e| is_typing(e, true, true)).await;
    a.send("bob", true, "done").await;
    b.expect(|e| is_typing(e, true, false)).await;

    // Typing is not a message: no row on either side but the one text.
    assert_eq!(a.history("bob", true).len(), rows.0 + 1);
    assert_eq!(b.history("alice", true).len(), rows.1 + 1);
    // The relay saw the normal thread's typing go by online only, and never acked.
    let frames = scene.relay.frames.lock().unwrap().clone();
    let online_only = frames
        .iter()
        .filter_map(|f| ClientFrame::decode(f).ok())
        .filter(|f| {
            matches!(
                f,
                ClientFrame::Send {
                    online_only: true,
                    ..
                } | ClientFrame::SendSealed {
                    online_only: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(online_only, 4);
    assert!(
        !frames
            .iter()
            .filter_map(|f| ClientFrame::decode(f).ok())
            .any(|f| matches!(f, ClientFrame::Ack { id: 0 })),
        "an online-only delivery was acked"
    );
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn typing_for_an_offline_recipient_is_never_stored_and_never_delivered_later() {
    let scene = Scene::new().await;
    let (mut a, mut b) = scene.online().await;
    acquainted(&mut a, &mut b).await;
    b.stop();
    for secret in [false, true] {
        typing(&a, "bob", secret, true).await;
    }
    // Texts behind them on the same connections: once the relay has these, it has handled
    // the typing before them.
    for secret in [false, true] {
        a.send("bob", secret, "while you were away").await;
    }
    let bob_id = account_id(&scene.bob);
    let queued = RelayStore::open(&scene.relay_dir)
        .unwrap()
        .queued_for(&bob_id)
        .unwrap();
    assert_eq!(queued, 2, "only the two texts wait for bob");
    // Neither the normal typing's body nor the sealed typing's envelope is in any file.
    let normal = Content::typing(true).encode();
    assert!(scene.relay.received_any(&normal), "no typing was sent");
    assert!(any_file_contains(&scene.relay_dir, &normal).is_empty());
    let sealed: Vec<Vec<u8>> = scene
        .relay
        .frames
        .lock()
        .unwrap()
        .iter()
        .filter_map(|f| match ClientFrame::decode(f) {
            Ok(ClientFrame::SendSealed {
                envelope,
                online_only: true,
                ..
            }) => Some(envelope.0),
            _ => None,
        })
        .collect();
    assert_eq!(sealed.len(), 1);
    let tail = &sealed[0][sealed[0].len() - 48..];
    assert!(
        any_file_contains(&scene.relay_dir, tail).is_empty(),
        "the sealed typing is in the relay's files"
    );

    // bob comes back: the two texts, and no typing before or with them.
    let mut b = Client::start(&scene.bob, &scene.relay.url).await;
    let mut texts = 0;
    while texts < 2 {
        match b
            .expect(|e| matches!(e, Event::Message(_) | Event::Typing { .. }))
            .await
        {
            Event::Message(m) => {
                assert_eq!(m.text, "while you were away");
                texts += 1;
            }
            other => panic!("delivered after coming online: {other:?}"),
        }
    }
    b.expect(|e| matches!(e, Event::Drained)).await;
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn typing_off_sends_none_and_shows_none() {
    let scene = Scene::new().await;
    let off = Settings {
        typing: false,
        ..Settings::default()
    };
    let url = &scene.relay.url;
    // bob has it off: alice's typing reaches him but shows nothing.
    let mut a = Client::start(&scene.alice, url).await;
    let mut b = Client::start_with(&scene.bob, url, off).await;
    acquainted(&mut a, &mut b).await;
    for secret in [false, true] {
        typing(&a, "bob", secret, true).await;
        a.send("bob", secret, "one").await;
        // A second text leaves well after the typing was handed to bob's connection.
        a.send("bob", secret, "two").await;
        for _ in 0..2 {
            match b
                .expect(|e| matches!(e, Event::Message(_) | Event::Typing { .. }))
                .await
            {
                Event::Message(_) => {}
                other => panic!("typing shown while off: {other:?}"),
            }
        }
    }
    a.stop();
    b.stop();
    // alice has it off: she sends none.
    let sent_before = scene.relay.frames.lock().unwrap().len();
    let mut a = Client::start_with(&scene.alice, url, off).await;
    let mut b = Client::start(&scene.bob, url).await;
    for secret in [false, true] {
        typing(&a, "bob", secret, true).await;
        a.send("bob", secret, "three").await;
        b.receive().await;
    }
    let online_only = scene.relay.frames.lock().unwrap()[sent_before..]
        .iter()
        .filter_map(|f| ClientFrame::decode(f).ok())
        .any(|f| {
            matches!(
                f,
                ClientFrame::Send {
                    online_only: true,
                    ..
                } | ClientFrame::SendSealed {
                    online_only: true,
                    ..
                }
            )
        });
    assert!(!online_only, "typing was sent while off");
    a.stop();
    b.stop();
}

/// The relay's answer to an online-only sealed envelope for bob, sent with `token`.
async fn answer(scene: &Scene, token: Vec<u8>) -> sotto::wire::RelayFrame {
    let mut raw = common::Raw::anonymous(&scene.relay.url).await;
    raw.send(&ClientFrame::SendSealed {
        req: 7,
        to: account_id(&scene.bob),
        access_token: token.into(),
        envelope: vec![1; 300].into(),
        expires_at: None,
        recipient_key: None,
        online_only: true,
    })
    .await;
    raw.expect(|f| {
        matches!(
            f,
            sotto::wire::RelayFrame::Ok { req: 7 }
                | sotto::wire::RelayFrame::Error { req: Some(7), .. }
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_answer_to_online_only_mail_is_the_same_whether_the_recipient_is_online_or_not() {
    let scene = Scene::new().await;
    let (mut a, b) = scene.online().await;
    // alice looks bob up, as a first message would, and so learns his access token.
    a.handle
        .commands
        .send(Command::AddContact {
            tag: 1,
            handle: "bob".into(),
        })
        .await
        .unwrap();
    let token = match a
        .expect(|e| matches!(e, Event::ContactAdded { tag: 1, .. }))
        .await
    {
        Event::ContactAdded { contact, .. } => contact.access_token,
        _ => unreachable!(),
    };
    a.stop();
    let online = answer(&scene, token.clone()).await;
    let wrong_online = answer(&scene, vec![0; token.len()]).await;
    b.stop();
    let offline = answer(&scene, token.clone()).await;
    let wrong_offline = answer(&scene, vec![0; token.len()]).await;
    assert!(
        matches!(online, sotto::wire::RelayFrame::Ok { .. }),
        "{online:?}"
    );
    assert_eq!(online, offline);
    assert!(matches!(
        wrong_online,
        sotto::wire::RelayFrame::Error {
            code: sotto::wire::ErrorCode::NotFound,
            ..
        }
    ));
    assert_eq!(wrong_online, wrong_offline);
    // Nothing of the four is queued for bob.
    let queued = RelayStore::open(&scene.relay_dir)
        .unwrap()
        .queued_for(&account_id(&scene.bob))
        .unwrap();
    assert_eq!(queued, 0);
}
