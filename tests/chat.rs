//! alice and bob talking through a real relay on 127.0.0.1:0: normal and secret messages both
//! ways, what the relay can and cannot see, and ordering faults on the wire. Each test runs
//! with the relay's state on SQLite and on PostgreSQL (`on_each_backend!`).

mod common;

use std::time::SystemTime;

use common::backend::Backend;
use common::{Client, Raw, Scene};
use sotto::client::account;
use sotto::client::content::{self, Content};
use sotto::client::crypto;
use sotto::client::manager::Event;
use sotto::client::signal_store::Stores;
use sotto::client::store::{Contact, MessageState, Store};
use sotto::relay::RelayConfig;
use sotto::relay::store::{Database, Directory as _, MemoryStore};
use sotto::wire::{ClientFrame, RelayFrame};

on_each_backend!(
    normal_and_secret_messages_flow_both_ways,
    secret_plaintext_never_reaches_the_relay_while_normal_text_does,
    out_of_order_and_duplicate_envelopes_are_shown_once_each,
    one_process_per_profile_and_over_long_texts_are_refused_before_sending,
    bursts_arrive_complete_and_in_order_in_both_threads,
    receipts_owed_go_out_when_the_recipient_stops_at_once,
);

async fn normal_and_secret_messages_flow_both_ways(backend: Backend) {
    let scene = backend.scene().await;
    let (mut alice, mut bob) = scene.online().await;

    alice.send("bob", false, "hi bob").await;
    let m = bob.receive().await;
    assert_eq!(
        (m.contact.as_str(), m.secret, m.text.as_str()),
        ("alice", false, "hi bob")
    );
    bob.send("alice", false, "hi alice").await;
    let m = alice.receive().await;
    assert_eq!(
        (m.contact.as_str(), m.secret, m.text.as_str()),
        ("bob", false, "hi alice")
    );

    // The first secret message sets the session up from one of bob's prekey bundles...
    alice.send("bob", true, "secret one").await;
    let m = bob.receive().await;
    assert_eq!(
        (m.contact.as_str(), m.secret, m.text.as_str()),
        ("alice", true, "secret one")
    );
    // ...and everything after rides the ratchet, in both directions.
    bob.send("alice", true, "secret two").await;
    assert_eq!(alice.receive().await.text, "secret two");
    for text in ["secret three", "secret four"] {
        alice.send("bob", true, text).await;
        assert_eq!(bob.receive().await.text, text);
    }
    // Delivery receipts come back in each mode and move alice's messages to delivered.
    for (secret, text) in [(false, "did you get this?"), (true, "and this?")] {
        let id = alice.send("bob", secret, text).await;
        assert_eq!(bob.receive().await.text, text);
        alice
            .expect(|e| matches!(e, Event::MessageState { id: i, state: MessageState::Delivered } if *i == id))
            .await;
        let stored = alice.history("bob", secret);
        let m = stored.iter().find(|m| m.id == id).unwrap();
        assert_eq!(m.state, MessageState::Delivered);
    }
    // Exactly one bundle was taken, bob's, once; bob answered on the session alice started.
    assert_eq!(
        backend.prekeys_left(&scene.relay_dir, &scene.bob).await,
        (99, 99)
    );
    assert_eq!(
        backend.prekeys_left(&scene.relay_dir, &scene.alice).await,
        (100, 100)
    );

    let texts = |c: &Client, secret| -> Vec<(bool, String)> {
        c.history(if c.dir == scene.alice { "bob" } else { "alice" }, secret)
            .into_iter()
            .map(|m| (m.outgoing, m.text))
            .collect()
    };
    let want = vec![
        (true, "secret one".to_string()),
        (false, "secret two".to_string()),
        (true, "secret three".to_string()),
        (true, "secret four".to_string()),
        (true, "and this?".to_string()),
    ];
    assert_eq!(texts(&alice, true), want);
    // The relay's state is where its backend keeps it: not in a SQLite file on PostgreSQL.
    assert_eq!(
        scene.relay_dir.join("relay.db").exists(),
        backend.keeps_relay_db()
    );
    let mirrored: Vec<_> = want.into_iter().map(|(o, t)| (!o, t)).collect();
    assert_eq!(texts(&bob, true), mirrored);
    assert_eq!(
        texts(&bob, false),
        vec![
            (false, "hi bob".to_string()),
            (true, "hi alice".to_string()),
            (false, "did you get this?".to_string()),
        ]
    );
    alice.stop();
    bob.stop();
    scene.relay.stop().await;
}

async fn secret_plaintext_never_reaches_the_relay_while_normal_text_does(backend: Backend) {
    let Scene {
        relay_dir: rd,
        alice: ad,
        bob: bd,
        relay,
        tmp: _tmp,
    } = backend.scene().await;
    let normal_marker = "NORMAL-MARKER-7f3a91";
    let secret_marker = "SECRET-MARKER-c44e02";

    // bob is offline, so both envelopes sit in the relay's queue while we look.
    let mut alice = Client::start(&ad, &relay.url).await;
    alice.send("bob", false, normal_marker).await;
    alice.send("bob", true, secret_marker).await;
    alice
        .send("bob", true, &format!("{secret_marker} again"))
        .await;
    alice.stop();

    assert!(
        !backend
            .relay_holds(&rd, normal_marker.as_bytes())
            .is_empty(),
        "the control failed: the normal message should be readable in the relay's storage"
    );
    assert!(relay.received_any(normal_marker.as_bytes()));
    assert_eq!(
        backend.relay_holds(&rd, secret_marker.as_bytes()),
        Vec::<String>::new()
    );
    assert!(!relay.received_any(secret_marker.as_bytes()));

    let mut bob = Client::start(&bd, &relay.url).await;
    let mut got = [
        bob.receive().await,
        bob.receive().await,
        bob.receive().await,
    ];
    got.sort_by_key(|m| m.text.clone());
    assert_eq!(got[0].text, normal_marker);
    assert!(!got[0].secret);
    assert_eq!(got[1].text, secret_marker);
    assert!(got[1].secret && got[2].secret);
    bob.stop();
    assert!(!relay.received_any(secret_marker.as_bytes()));
    relay.stop().await;
    assert_eq!(
        backend.relay_holds(&rd, secret_marker.as_bytes()),
        Vec::<String>::new()
    );
}

/// Seals `texts` from the profile in `from` to `to` exactly as the client does, without
/// sending them, so a test can put them on the wire in any order.
async fn seal_by_hand(
    url: &str,
    from: &std::path::Path,
    to: &str,
    texts: &[&str],
) -> (String, Vec<u8>, Vec<Vec<u8>>) {
    let mut raw = Raw::auth(url, from).await;
    raw.send(&ClientFrame::Lookup {
        req: 1,
        handle: Some(to.into()),
        account_id: None,
    })
    .await;
    let RelayFrame::Account {
        account_id,
        handle,
        identity_key,
        access_token,
        ..
    } = raw
        .expect(|f| matches!(f, RelayFrame::Account { .. }))
        .await
    else {
        unreachable!()
    };
    // The client talks secretly only to contacts, under the key their record holds.
    Store::open(from)
        .unwrap()
        .upsert_contact(
            &Contact {
                account_id: account_id.clone(),
                handle,
                identity_key: identity_key.0,
                access_token: access_token.0.clone(),
                verified: false,
                key_changed: false,
                blocked: false,
            },
            0,
        )
        .unwrap();
    raw.send(&ClientFrame::FetchBundle {
        req: 2,
        account_id: account_id.clone(),
    })
    .await;
    let RelayFrame::Bundle { bundle, .. } =
        raw.expect(|f| matches!(f, RelayFrame::Bundle { .. })).await
    else {
        unreachable!()
    };
    raw.send(&ClientFrame::GetSenderCert { req: 3 }).await;
    let RelayFrame::SenderCert { certificate, .. } = raw
        .expect(|f| matches!(f, RelayFrame::SenderCert { .. }))
        .await
    else {
        unreachable!()
    };
    let cert = libsignal_protocol::SenderCertificate::deserialize(&certificate.0).unwrap();
    let store = Store::open(from).unwrap();
    let (identity, reg) = account::identity(&store).unwrap();
    let mut stores = Stores::new(store.conn(), &identity, reg);
    let mut rng = rand::rng();
    crypto::start_session(&mut stores, &bundle, SystemTime::now(), &mut rng)
        .await
        .unwrap();
    let mut envelopes = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let c = Content::text(format!("id-{i}"), text.to_string(), i as u64, None);
        let env = crypto::seal(
            &mut stores,
            &account_id,
            &cert,
            &content::pad(c.encode()),
            SystemTime::now(),
            &mut rng,
        )
        .await
        .unwrap();
        envelopes.push(env);
    }
    (account_id, access_token.0, envelopes)
}

async fn out_of_order_and_duplicate_envelopes_are_shown_once_each(backend: Backend) {
    let Scene {
        relay_dir: rd,
        alice: ad,
        bob: bd,
        relay,
        tmp: _tmp,
    } = backend.scene().await;
    let (bob_id, token, envs) =
        seal_by_hand(&relay.url, &ad, "bob", &["first", "second", "third"]).await;

    let mut anon = Raw::anonymous(&relay.url).await;
    for (req, i) in [2usize, 0, 0, 1, 2].into_iter().enumerate() {
        anon.send(&ClientFrame::SendSealed {
            req: req as u64,
            to: bob_id.clone(),
            access_token: token.clone().into(),
            envelope: envs[i].clone().into(),
            expires_at: None,
            recipient_key: None,
            online_only: false,
        })
        .await;
        assert!(matches!(anon.recv().await, Some(RelayFrame::Ok { .. })));
    }

    let mut bob = Client::start(&bd, &relay.url).await;
    let mut arrived = Vec::new();
    loop {
        match bob
            .expect(|e| matches!(e, Event::Message(_) | Event::Drained | Event::Warning(_)))
            .await
        {
            Event::Message(m) => arrived.push(m.text),
            Event::Drained => break,
            Event::Warning(w) => panic!("unexpected warning: {w}"),
            _ => unreachable!(),
        }
    }
    assert_eq!(arrived, vec!["third", "first", "second"]);
    let stored: Vec<String> = bob
        .history("alice", true)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(stored, vec!["third", "first", "second"]);
    // Every envelope, duplicates included, was acknowledged and left the queue.
    bob.barrier().await;
    bob.stop();
    assert_eq!(backend.queued_for(&rd, &bd).await, 0);
    relay.stop().await;
}

async fn one_process_per_profile_and_over_long_texts_are_refused_before_sending(backend: Backend) {
    let Scene {
        alice: ad,
        bob: bd,
        relay,
        tmp: _tmp,
        ..
    } = backend.scene().await;
    let mut alice = Client::start(&ad, &relay.url).await;
    match sotto::client::manager::spawn(&ad, Some(relay.url.clone())) {
        Err(e) => assert!(
            e.to_string().contains("in use by another sotto process"),
            "{e}"
        ),
        Ok(_) => panic!("a second manager on the same profile must be refused"),
    }

    let id = uuid::Uuid::new_v4().to_string();
    let long = "x".repeat(content::MAX_TEXT_BYTES + 1);
    alice
        .handle
        .commands
        .send(sotto::client::manager::Command::Send {
            id: id.clone(),
            to: "bob".into(),
            secret: true,
            text: long,
            reply_to: None,
        })
        .await
        .unwrap();
    match alice
        .expect(|e| matches!(e, Event::MessageFailed { .. } | Event::Message(_)))
        .await
    {
        Event::MessageFailed { id: failed, error } => {
            assert_eq!(failed, id);
            assert!(error.contains("split it"), "{error}");
        }
        other => panic!("an over-long text must not be stored or sent: {other:?}"),
    }
    // The longest allowed text goes through, sealed, and arrives whole.
    let longest = "y".repeat(content::MAX_TEXT_BYTES);
    alice.send("bob", true, &longest).await;
    alice.stop();
    let mut bob = Client::start(&bd, &relay.url).await;
    assert_eq!(bob.receive().await.text, longest);
    bob.stop();
    relay.stop().await;
}

/// Sends go out without waiting for each other's `ok`, and arriving bursts are stored under
/// one commit: neither may lose, repeat or reorder a message.
async fn bursts_arrive_complete_and_in_order_in_both_threads(backend: Backend) {
    let scene = backend.scene().await;
    const N: usize = 150;
    // bob is introduced, then goes offline so that everything waits for him in one queue.
    let (mut alice, bob) = scene.online().await;
    alice.send("bob", true, "hello").await;
    bob.stop();

    let mut ids = std::collections::HashSet::new();
    for k in 0..N {
        for secret in [false, true] {
            let id = uuid::Uuid::new_v4().to_string();
            ids.insert(id.clone());
            alice
                .handle
                .commands
                .send(sotto::client::manager::Command::Send {
                    id,
                    to: "bob".into(),
                    secret,
                    reply_to: None,
                    text: format!("{k}"),
                })
                .await
                .unwrap();
        }
    }
    let mut undelivered = ids.clone();
    while !ids.is_empty() {
        match alice
            .expect(|e| matches!(e, Event::MessageState { .. } | Event::MessageFailed { .. }))
            .await
        {
            // bob is offline: nothing of the burst can be delivered yet.
            Event::MessageState { id, state } if undelivered.contains(&id) => {
                assert_eq!(state, MessageState::Sent);
                assert!(ids.remove(&id), "a message reported sent twice");
            }
            // The receipt bob sent for "hello" as he stopped.
            Event::MessageState { .. } => {}
            other => panic!("send failed: {other:?}"),
        }
    }

    let mut bob = Client::start(&scene.bob, &scene.relay.url).await;
    let mut seen = [Vec::new(), Vec::new()];
    while seen[0].len() + seen[1].len() < 2 * N {
        let m = bob.receive().await;
        if m.text != "hello" {
            seen[usize::from(m.secret)].push(m.text.parse::<usize>().unwrap());
        }
    }
    let expected: Vec<usize> = (0..N).collect();
    assert_eq!(seen[0], expected, "normal thread out of order");
    assert_eq!(seen[1], expected, "secret thread out of order");
    for secret in [false, true] {
        let texts: Vec<String> = bob
            .history("alice", secret)
            .into_iter()
            .map(|m| m.text)
            .filter(|t| t != "hello")
            .collect();
        assert_eq!(texts.len(), N, "stored once each (secret: {secret})");
    }
    // Every message ends delivered at alice: the receipts for the burst came back.
    while !undelivered.is_empty() {
        if let Event::MessageState {
            id,
            state: MessageState::Delivered,
        } = alice
            .expect(|e| matches!(e, Event::MessageState { .. }))
            .await
        {
            undelivered.remove(&id);
        }
    }
    for secret in [false, true] {
        assert!(
            alice
                .history("bob", secret)
                .iter()
                .filter(|m| m.text != "hello")
                .all(|m| m.state == MessageState::Delivered),
            "alice's copies all delivered (secret: {secret})"
        );
    }
    alice.stop();
    bob.stop();
}

/// Receipts wait briefly to go out together; a client that stops meanwhile still sends them,
/// or the sender would never see the message delivered (the relay will not deliver it again).
async fn receipts_owed_go_out_when_the_recipient_stops_at_once(backend: Backend) {
    let scene = backend.scene().await;
    let (mut alice, mut bob) = scene.online().await;
    for secret in [false, true] {
        let id = alice.send("bob", secret, "read and gone").await;
        bob.receive().await;
        bob.stop();
        alice
            .expect(|e| {
                matches!(e, Event::MessageState { id: i, state: MessageState::Delivered } if *i == id)
            })
            .await;
        bob = Client::start(&scene.bob, &scene.relay.url).await;
    }
    alice.stop();
    bob.stop();
}

/// A relay whose state lives in memory (`Database::Memory`) carries both kinds of message,
/// takes bundles from its own directory, and writes no database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_keeping_its_state_in_memory_carries_both_kinds() {
    let memory = MemoryStore::new();
    let config = RelayConfig {
        database: Database::Memory(memory.clone()),
        ..RelayConfig::default()
    };
    let scene = Scene::with(config).await;
    let (mut alice, mut bob) = scene.online().await;
    alice.send("bob", false, "hi bob").await;
    assert_eq!(bob.receive().await.text, "hi bob");
    alice.send("bob", true, "secret one").await;
    assert_eq!(bob.receive().await.text, "secret one");
    bob.send("alice", true, "secret two").await;
    assert_eq!(alice.receive().await.text, "secret two");
    let bob_id = common::account_id(&scene.bob);
    assert_eq!(memory.clone().prekey_count(&bob_id).unwrap(), (99, 99));
    assert!(!scene.relay_dir.join("relay.db").exists());
}
