//! Hostile and broken input at the relay: each gets its error, and a conversation running at
//! the same time carries on unharmed.

mod common;

use std::time::{Duration, SystemTime};

use common::{Client, Raw, TestRelay, register};
use sotto::client::account::{self, AccountError};
use sotto::client::conn::LinkError;
use sotto::client::store::Store;
use sotto::relay::RelayConfig;
use sotto::wire::{ClientFrame, ErrorCode, MAX_FRAME_BYTES, RelayFrame};

fn is_error(f: &RelayFrame, want: ErrorCode) -> bool {
    matches!(f, RelayFrame::Error { code, .. } if *code == want)
}

/// Expects an error frame with `want`, then the connection closed.
async fn refused_and_closed(raw: &mut Raw, want: ErrorCode) {
    let frames = raw.until_closed().await;
    assert!(
        frames.iter().any(|f| is_error(f, want)),
        "wanted a {want:?} error before the close, got {frames:?}"
    );
}

/// Looks `handle` up; returns its access token and identity key.
async fn lookup_works(raw: &mut Raw, handle: &str) -> (Vec<u8>, Vec<u8>) {
    raw.send(&ClientFrame::Lookup {
        req: 77,
        handle: Some(handle.into()),
        account_id: None,
    })
    .await;
    let f = raw
        .expect(|f| matches!(f, RelayFrame::Account { .. } | RelayFrame::Error { .. }))
        .await;
    match f {
        RelayFrame::Account {
            req: 77,
            access_token,
            identity_key,
            ..
        } => (access_token.0, identity_key.0),
        f => panic!("got {f:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_a_concurrent_conversation_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let config = RelayConfig {
        auth_timeout: Duration::from_millis(500),
        ..RelayConfig::default()
    };
    let relay = TestRelay::start_with(&p("relay"), config).await;
    register(&p("a"), "alice", &relay.url).await;
    register(&p("b"), "bob", &relay.url).await;
    register(&p("m"), "mallory", &relay.url).await;
    let mut alice = Client::start(&p("a"), &relay.url).await;
    let mut bob = Client::start(&p("b"), &relay.url).await;

    let conversation = tokio::spawn(async move {
        for i in 0..10 {
            let (text, secret) = (format!("message {i}"), i % 2 == 0);
            alice.send("bob", secret, &text).await;
            let m = bob.receive().await;
            assert_eq!((m.text, m.secret), (text.clone(), secret));
            bob.send("alice", secret, &format!("re: {text}")).await;
            assert_eq!(alice.receive().await.text, format!("re: {text}"));
        }
        (alice, bob)
    });

    // A request before authenticating.
    let mut raw = Raw::connect(&relay.url).await;
    raw.send(&ClientFrame::Lookup {
        req: 1,
        handle: Some("alice".into()),
        account_id: None,
    })
    .await;
    refused_and_closed(&mut raw, ErrorCode::NotAuthenticated).await;

    // Garbage as the first frame.
    let mut raw = Raw::connect(&relay.url).await;
    raw.send_text("}{ not json".into()).await;
    refused_and_closed(&mut raw, ErrorCode::NotAuthenticated).await;

    // Silence: the auth timer closes the connection.
    let mut raw = Raw::connect(&relay.url).await;
    refused_and_closed(&mut raw, ErrorCode::NotAuthenticated).await;

    // A signature by the wrong key for alice's account.
    let alice_id = common::account_id(&p("a"));
    let (mallory_key, _) = account::identity(&Store::open(&p("m")).unwrap()).unwrap();
    let mut raw = Raw::connect(&relay.url).await;
    let forged = mallory_key
        .private_key()
        .calculate_signature(&sotto::wire::auth_message(&raw.nonce), &mut rand::rng())
        .unwrap();
    raw.send(&ClientFrame::Auth {
        account_id: alice_id.clone(),
        signature: forged.to_vec().into(),
    })
    .await;
    refused_and_closed(&mut raw, ErrorCode::AuthFailed).await;

    // A signature over an old challenge is no good on a new connection.
    let mut raw = Raw::connect(&relay.url).await;
    let replayed = mallory_key
        .private_key()
        .calculate_signature(
            &sotto::wire::auth_message(b"some other nonce"),
            &mut rand::rng(),
        )
        .unwrap();
    let mallory_id = common::account_id(&p("m"));
    raw.send(&ClientFrame::Auth {
        account_id: mallory_id,
        signature: replayed.to_vec().into(),
    })
    .await;
    refused_and_closed(&mut raw, ErrorCode::AuthFailed).await;

    // An unknown account gets the very same answer as a bad signature: sign-in does not tell
    // which accounts exist.
    let mut answers = Vec::new();
    for id in [alice_id.clone(), "nobody".to_string()] {
        let mut raw = Raw::connect(&relay.url).await;
        raw.send(&ClientFrame::Auth {
            account_id: id,
            signature: forged.to_vec().into(),
        })
        .await;
        answers.push(raw.until_closed().await);
    }
    assert_eq!(answers[0], answers[1]);
    assert!(
        answers[0]
            .iter()
            .any(|f| is_error(f, ErrorCode::AuthFailed)),
        "got {answers:?}"
    );

    // Registering a handle that is taken.
    let taken = account::init(
        &Store::open(&p("x")).unwrap(),
        "alice",
        &relay.url,
        SystemTime::now(),
        &mut rand::rng(),
    )
    .await;
    assert!(
        matches!(
            taken,
            Err(AccountError::Link(LinkError::Refused {
                code: ErrorCode::HandleTaken,
                ..
            }))
        ),
        "got {taken:?}"
    );
    // An invalid handle never leaves the client; at the relay it is refused as well.
    let bad = account::init(
        &Store::open(&p("y")).unwrap(),
        "Bad Handle",
        &relay.url,
        SystemTime::now(),
        &mut rand::rng(),
    )
    .await;
    assert!(
        matches!(bad, Err(AccountError::InvalidHandle(_))),
        "got {bad:?}"
    );

    // On an authenticated connection: garbage, unknown types, oversized frames each get an
    // error, and the connection stays usable.
    let mut raw = Raw::auth(&relay.url, &p("m")).await;
    raw.send_text("}{ not json".into()).await;
    raw.expect(|f| is_error(f, ErrorCode::Malformed)).await;
    raw.send_text(r#"{"type":"launch_missiles","req":1}"#.into())
        .await;
    raw.expect(|f| is_error(f, ErrorCode::Malformed)).await;
    raw.send_text(format!(
        r#"{{"type":"send","req":2,"to":"x","body":"{}"}}"#,
        "A".repeat(MAX_FRAME_BYTES)
    ))
    .await;
    raw.expect(|f| is_error(f, ErrorCode::TooLarge)).await;
    let (alice_token, _) = lookup_works(&mut raw, "alice").await;
    // Sealed envelopes are refused on a connection that names its sender.
    raw.send(&ClientFrame::SendSealed {
        req: 3,
        to: alice_id.clone(),
        access_token: vec![0; 16].into(),
        envelope: vec![1, 2, 3].into(),
        expires_at: None,
        recipient_key: None,
        online_only: false,
    })
    .await;
    raw.expect(|f| is_error(f, ErrorCode::Forbidden)).await;
    // A normal message to an account that does not exist.
    raw.send(&ClientFrame::Send {
        req: 4,
        to: "nobody".into(),
        body: b"x".to_vec().into(),
        expires_at: None,
        online_only: false,
    })
    .await;
    raw.expect(|f| is_error(f, ErrorCode::NotFound)).await;
    lookup_works(&mut raw, "bob").await;
    // A frame within the frame limit whose body could not be delivered within it.
    let body = vec![b'x'; sotto::wire::MAX_PAYLOAD_BYTES + 1];
    raw.send(&ClientFrame::Send {
        req: 8,
        to: alice_id.clone(),
        body: body.into(),
        expires_at: None,
        online_only: false,
    })
    .await;
    let f = raw.expect(|f| matches!(f, RelayFrame::Error { .. })).await;
    assert!(
        matches!(
            f,
            RelayFrame::Error {
                req: Some(8),
                code: ErrorCode::TooLarge,
                ..
            }
        ),
        "got {f:?}"
    );
    // A lookup must name exactly one of handle and account id.
    raw.send(&ClientFrame::Lookup {
        req: 9,
        handle: None,
        account_id: None,
    })
    .await;
    raw.expect(|f| is_error(f, ErrorCode::Malformed)).await;
    lookup_works(&mut raw, "bob").await;

    // Far beyond the limit: the WebSocket layer refuses it and the connection ends.
    // The relay may hang up while this is still being written; that is the point.
    let _ = futures_util::SinkExt::send(
        &mut raw.ws,
        tokio_tungstenite::tungstenite::Message::text("B".repeat(8 * MAX_FRAME_BYTES)),
    )
    .await;
    let frames = raw.until_closed().await;
    assert!(
        frames.iter().all(|f| is_error(f, ErrorCode::TooLarge)),
        "got {frames:?}"
    );

    // A sealed envelope for a missing account, and one with a wrong access token.
    let mut anon = Raw::anonymous(&relay.url).await;
    anon.send(&ClientFrame::SendSealed {
        req: 5,
        to: "nobody".into(),
        access_token: vec![0; 16].into(),
        envelope: vec![1; 100].into(),
        expires_at: None,
        recipient_key: None,
        online_only: false,
    })
    .await;
    anon.expect(|f| is_error(f, ErrorCode::NotFound)).await;
    anon.send(&ClientFrame::SendSealed {
        req: 6,
        to: alice_id.clone(),
        access_token: vec![0; 16].into(),
        envelope: vec![1; 100].into(),
        expires_at: None,
        recipient_key: None,
        online_only: false,
    })
    .await;
    anon.expect(|f| is_error(f, ErrorCode::NotFound)).await;
    // The right token, but encrypted to a key alice no longer has (or never had).
    anon.send(&ClientFrame::SendSealed {
        req: 10,
        to: alice_id.clone(),
        access_token: alice_token.into(),
        envelope: vec![1; 100].into(),
        expires_at: None,
        recipient_key: Some(vec![5; 33].into()),
        online_only: false,
    })
    .await;
    anon.expect(|f| is_error(f, ErrorCode::IdentityChanged))
        .await;
    // An anonymous connection may do nothing else.
    anon.send(&ClientFrame::Lookup {
        req: 7,
        handle: Some("alice".into()),
        account_id: None,
    })
    .await;
    anon.expect(|f| is_error(f, ErrorCode::Forbidden)).await;

    let (alice, bob) = conversation.await.expect("the conversation was disturbed");
    alice.stop();
    bob.stop();
    // Nothing mallory sent was queued for anyone: no normal message from mallory, and none of
    // the refused sealed payloads (receipts between alice and bob may still be waiting).
    let mallory_id = common::account_id(&p("m"));
    let db = rusqlite::Connection::open(p("relay").join("relay.db")).unwrap();
    let queued: i64 = db
        .query_row(
            "SELECT count(*) FROM queue WHERE sender = ?1 OR payload = ?2 OR payload = ?3",
            rusqlite::params![mallory_id, vec![1u8; 100], b"x".to_vec()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(queued, 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_without_harming_others() {
    let tmp = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        max_connections: 3,
        ..RelayConfig::default()
    };
    let relay = TestRelay::start_with(&tmp.path().join("relay"), config).await;
    register(&tmp.path().join("a"), "alice", &relay.url).await;
    let mut alice = Raw::auth(&relay.url, &tmp.path().join("a")).await;
    let _second = Raw::anonymous(&relay.url).await;
    let _third = Raw::anonymous(&relay.url).await;
    let mut ws = common::dial(&relay.url).await;
    use futures_util::StreamExt;
    let mut refused = false;
    while let Some(Ok(msg)) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            refused |= is_error(&RelayFrame::decode(t.as_bytes()).unwrap(), ErrorCode::Full);
        }
    }
    assert!(
        refused,
        "the fourth connection should be told the relay is full"
    );
    lookup_works(&mut alice, "alice").await;
    relay.stop().await;
}
