//! Hostile clients against the relay's quotas and rate limits, while alice and bob chat on:
//! queue quotas for normal and sealed mail, registrations per address, prekey uploads
//! (signatures, count, rate), bundle drains and bogus acks. Every limit is set small here;
//! the defaults are far above what these tests do.

mod common;

use std::path::Path;
use std::time::SystemTime;

use common::{Client, Raw, Scene};
use sotto::client::store::Store;
use sotto::client::{account, crypto};
use sotto::relay::store::{Directory as _, RelayStore};
use sotto::relay::{QueueLimits, RateLimits, RelayConfig};
use sotto::wire::{B64, ClientFrame, ErrorCode, KeyUpload, RelayFrame, SignedKey};

fn small_limits() -> RelayConfig {
    RelayConfig {
        queue: QueueLimits {
            recipient_bytes: 1 << 30,
            recipient_envelopes: 1000,
            sender_bytes: 1 << 30,
            sender_envelopes: 5,
            sealed_bytes: 1 << 30,
            sealed_envelopes: 4,
        },
        rate: RateLimits {
            registrations_per_ip_per_hour: 4,
            prekey_uploads_per_hour: 4,
            bundles_per_target_per_minute: 3,
            bundles_per_requester_per_minute: 10,
            lookups_per_minute: 1000,
            unknown_acks_per_minute: 50,
            blob_creates_per_minute: 60,
        },
        max_one_time_prekeys: 150,
        ..RelayConfig::default()
    }
}

/// The answer to request `req` (other frames, such as deliveries, are skipped).
async fn answer(raw: &mut Raw, want: u64) -> RelayFrame {
    raw.expect(|f| match f {
        RelayFrame::Error { req, .. } => *req == Some(want),
        RelayFrame::Ok { req }
        | RelayFrame::Account { req, .. }
        | RelayFrame::Bundle { req, .. }
        | RelayFrame::SenderCert { req, .. } => *req == want,
        _ => false,
    })
    .await
}

fn code(f: &RelayFrame) -> Option<ErrorCode> {
    match f {
        RelayFrame::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// alice and bob exchange a normal and a secret message each way; each arrives.
async fn chat(alice: &mut Client, bob: &mut Client, tag: &str) {
    for secret in [false, true] {
        alice
            .send("bob", secret, &format!("{tag} a→b {secret}"))
            .await;
        let m = bob.receive().await;
        assert_eq!(m.text, format!("{tag} a→b {secret}"));
        bob.send("alice", secret, &format!("{tag} b→a {secret}"))
            .await;
        let m = alice.receive().await;
        assert_eq!(m.text, format!("{tag} b→a {secret}"));
    }
}

/// Every message of the thread appears once.
fn exactly_once(dir: &Path, peer: &str, secret: bool, expected: usize) {
    let h = common::history(dir, peer, secret);
    let mut ids: Vec<_> = h.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), h.len(), "a message appears twice");
    assert_eq!(h.len(), expected, "{peer} secret={secret}: {h:?}");
}

async fn look_up(raw: &mut Raw, req: u64, handle: &str) -> (String, Vec<u8>) {
    raw.send(&ClientFrame::Lookup {
        req,
        handle: Some(handle.into()),
        account_id: None,
    })
    .await;
    match answer(raw, req).await {
        RelayFrame::Account {
            account_id,
            access_token,
            ..
        } => (account_id, access_token.0),
        other => panic!("lookup of {handle}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_quotas_stop_a_flooder_and_spare_everyone_else() {
    let scene = Scene::with(small_limits()).await;
    let (mallory, carol) = (scene.path("m"), scene.path("c"));
    common::register(&mallory, "mallory", &scene.relay.url).await;
    common::register(&carol, "carol", &scene.relay.url).await;
    let (mut alice, mut bob) = scene.online().await;
    chat(&mut alice, &mut bob, "before").await;

    // mallory's normal mail to carol, who is away: five fit the sender quota, the sixth not.
    let mut m = Raw::auth(&scene.relay.url, &mallory).await;
    let (carol_id, carol_token) = look_up(&mut m, 1, "carol").await;
    for req in 10..16u64 {
        m.send(&ClientFrame::Send {
            req,
            to: carol_id.clone(),
            body: B64(vec![b'x'; 1000]),
            expires_at: None,
            online_only: false,
        })
        .await;
        let a = answer(&mut m, req).await;
        if req < 15 {
            assert_eq!(a, RelayFrame::Ok { req }, "envelope {req}");
        } else {
            assert_eq!(code(&a), Some(ErrorCode::QuotaExceeded), "{a:?}");
        }
    }
    // The refusal answered the request; the connection lives.
    look_up(&mut m, 20, "bob").await;
    chat(&mut alice, &mut bob, "meanwhile").await;

    // Garbage sealed envelopes with carol's valid token stop at her sealed quota.
    let mut anon = Raw::anonymous(&scene.relay.url).await;
    let mut refused = 0;
    for req in 30..40u64 {
        anon.send(&ClientFrame::SendSealed {
            req,
            to: carol_id.clone(),
            access_token: B64(carol_token.clone()),
            envelope: B64(vec![0xAB; 4000]),
            expires_at: None,
            recipient_key: None,
            online_only: false,
        })
        .await;
        match answer(&mut anon, req).await {
            RelayFrame::Ok { .. } => {}
            f if code(&f) == Some(ErrorCode::QuotaExceeded) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 6, "4 sealed envelopes fit carol's sealed quota");
    let queued = RelayStore::open(&scene.relay_dir)
        .unwrap()
        .queued_for(&carol_id)
        .unwrap();
    assert_eq!(queued, 5 + 4);

    // Legitimate secret mail to bob is not held up by carol's full sealed quota.
    chat(&mut alice, &mut bob, "after").await;
    for (dir, peer) in [(&scene.alice, "bob"), (&scene.bob, "alice")] {
        exactly_once(dir, peer, false, 6);
        exactly_once(dir, peer, true, 6);
    }
    alice.stop();
    bob.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_beyond_the_rate_of_one_address_are_refused() {
    let scene = Scene::with(small_limits()).await;
    // alice and bob took two of the four; carol the third, dave the fourth.
    common::register(&scene.path("c"), "carol", &scene.relay.url).await;
    common::register(&scene.path("d"), "dave", &scene.relay.url).await;
    let mut raw = Raw::connect(&scene.relay.url).await;
    let keys = KeyUpload {
        identity_key: B64(vec![5; 33]),
        registration_id: 1,
        signed_prekey: SignedKey {
            id: 1,
            public: B64(vec![1; 33]),
            signature: B64(vec![1; 64]),
        },
        kyber_last_resort: SignedKey {
            id: 1,
            public: B64(vec![2; 33]),
            signature: B64(vec![2; 64]),
        },
        one_time_prekeys: Vec::new(),
        one_time_kyber: Vec::new(),
    };
    raw.send(&ClientFrame::Register {
        handle: "eve".into(),
        keys,
        signature: B64(vec![0; 64]),
        claim: None,
    })
    .await;
    let seen = raw.until_closed().await;
    assert!(
        seen.iter().any(|f| code(f) == Some(ErrorCode::RateLimited)),
        "{seen:?}"
    );
    // The registered ones still work.
    let (mut alice, mut bob) = scene.online().await;
    chat(&mut alice, &mut bob, "still").await;
    alice.stop();
    bob.stop();
}

/// Fresh one-time Kyber keys signed by `identity`, ids from `first`.
fn kyber_keys(
    identity: &libsignal_protocol::IdentityKeyPair,
    first: u32,
    n: u32,
) -> Vec<SignedKey> {
    (first..first + n)
        .map(|id| {
            let r =
                crypto::kyber_prekey(id, identity, SystemTime::now(), &mut rand::rng()).unwrap();
            crypto::wire_kyber(&r).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prekey_uploads_are_checked_counted_and_rate_limited() {
    let scene = Scene::with(small_limits()).await;
    let mallory = scene.path("m");
    common::register(&mallory, "mallory", &scene.relay.url).await;
    let (identity, _) = account::identity(&Store::open(&mallory).unwrap()).unwrap();
    let other = libsignal_protocol::IdentityKeyPair::generate(&mut rand::rng());
    let mallory_id = common::account_id(&mallory);
    let count = || {
        RelayStore::open(&scene.relay_dir)
            .unwrap()
            .prekey_count(&mallory_id)
            .unwrap()
    };
    let before = count();
    let mut m = Raw::auth(&scene.relay.url, &mallory).await;

    // Unsigned, badly signed, and signed by another identity: refused, nothing stored.
    let mut unsigned = kyber_keys(&identity, 5000, 3);
    unsigned[1].signature = B64(Vec::new());
    let mut tampered = kyber_keys(&identity, 5000, 3);
    tampered[2].signature.0[10] ^= 1;
    let foreign = kyber_keys(&other, 5000, 3);
    for (req, kyber) in [(1, unsigned), (2, tampered), (3, foreign)] {
        m.send(&ClientFrame::UploadPreKeys {
            req,
            prekeys: Vec::new(),
            kyber,
        })
        .await;
        let a = answer(&mut m, req).await;
        assert_eq!(code(&a), Some(ErrorCode::Malformed), "upload {req}: {a:?}");
    }
    assert_eq!(count(), before);

    // Beyond the count cap (150, with 100 held): refused, nothing stored.
    m.send(&ClientFrame::UploadPreKeys {
        req: 4,
        prekeys: Vec::new(),
        kyber: kyber_keys(&identity, 6000, 60),
    })
    .await;
    let a = answer(&mut m, 4).await;
    assert_eq!(code(&a), Some(ErrorCode::QuotaExceeded), "{a:?}");
    assert_eq!(count(), before);

    // Four uploads an hour: the fifth is refused for its rate, even a valid one.
    m.send(&ClientFrame::UploadPreKeys {
        req: 5,
        prekeys: Vec::new(),
        kyber: kyber_keys(&identity, 7000, 1),
    })
    .await;
    let a = answer(&mut m, 5).await;
    assert_eq!(code(&a), Some(ErrorCode::RateLimited), "{a:?}");
    assert_eq!(count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_badly_signed_registration_is_refused() {
    let scene = Scene::with(small_limits()).await;
    let identity = libsignal_protocol::IdentityKeyPair::generate(&mut rand::rng());
    let mut rng = rand::rng();
    let now = SystemTime::now();
    let signed = crypto::signed_prekey(1, &identity, now, &mut rng).unwrap();
    let last_resort = crypto::kyber_prekey(1, &identity, now, &mut rng).unwrap();
    let mut keys = KeyUpload {
        identity_key: identity.identity_key().serialize().to_vec().into(),
        registration_id: 7,
        signed_prekey: crypto::wire_signed(&signed).unwrap(),
        kyber_last_resort: crypto::wire_kyber(&last_resort).unwrap(),
        one_time_prekeys: Vec::new(),
        one_time_kyber: Vec::new(),
    };
    keys.kyber_last_resort.signature.0[3] ^= 1;
    let mut raw = Raw::connect(&scene.relay.url).await;
    let signature = identity
        .private_key()
        .calculate_signature(&sotto::wire::auth_message(&raw.nonce), &mut rng)
        .unwrap();
    raw.send(&ClientFrame::Register {
        handle: "eve".into(),
        keys,
        signature: signature.to_vec().into(),
        claim: None,
    })
    .await;
    let seen = raw.until_closed().await;
    assert!(
        seen.iter().any(|f| code(f) == Some(ErrorCode::Malformed)),
        "{seen:?}"
    );
    assert!(
        RelayStore::open(&scene.relay_dir)
            .unwrap()
            .account_by_handle("eve")
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_drain_gets_no_one_time_keys_and_bogus_acks_delete_nothing() {
    let scene = Scene::with(small_limits()).await;
    let (mallory, carol) = (scene.path("m"), scene.path("c"));
    common::register(&mallory, "mallory", &scene.relay.url).await;
    common::register(&carol, "carol", &scene.relay.url).await;
    let bob_id = common::account_id(&scene.bob);
    let (mut alice, mut bob) = scene.online().await;
    let pool = || {
        RelayStore::open(&scene.relay_dir)
            .unwrap()
            .prekey_count(&bob_id)
            .unwrap()
    };
    let before = pool();

    // mallory drains bob's bundles: three come with one-time keys, the rest without (and
    // with the last-resort Kyber key); past ten a minute, mallory is refused.
    let mut m = Raw::auth(&scene.relay.url, &mallory).await;
    let mut with_one_time = 0;
    for req in 1..=11u64 {
        m.send(&ClientFrame::FetchBundle {
            req,
            account_id: bob_id.clone(),
        })
        .await;
        match answer(&mut m, req).await {
            RelayFrame::Bundle { bundle, .. } if req <= 10 => {
                if bundle.prekey.is_some() {
                    with_one_time += 1;
                } else {
                    assert_eq!(bundle.kyber.id, 1, "the last-resort Kyber key");
                }
            }
            f => {
                assert_eq!(req, 11);
                assert_eq!(code(&f), Some(ErrorCode::RateLimited), "{f:?}");
            }
        }
    }
    assert_eq!(with_one_time, 3);
    let after = pool();
    assert_eq!(
        (before.0 - after.0, before.1 - after.1),
        (3, 3),
        "{before:?} {after:?}"
    );

    // alice still sets up a secret session with bob (from a bundle without one-time keys).
    chat(&mut alice, &mut bob, "drained").await;

    // Mail waits for carol; mallory's acks of every id delete none of it, and a flood of
    // them ends mallory's connection.
    let carol_id = common::account_id(&carol);
    for req in 100..103u64 {
        m.send(&ClientFrame::Send {
            req,
            to: carol_id.clone(),
            body: B64(b"{}".to_vec()),
            expires_at: None,
            online_only: false,
        })
        .await;
        assert_eq!(answer(&mut m, req).await, RelayFrame::Ok { req });
    }
    for id in 1..=40u64 {
        m.send(&ClientFrame::Ack { id }).await;
    }
    // A lookup's answer comes after the acks were handled.
    look_up(&mut m, 200, "bob").await;
    let queued = || {
        RelayStore::open(&scene.relay_dir)
            .unwrap()
            .queued_for(&carol_id)
            .unwrap()
    };
    assert_eq!(queued(), 3);
    for id in 41..=100u64 {
        // The relay closes the connection somewhere in here; later sends may find it gone.
        use futures_util::SinkExt;
        let ack = ClientFrame::Ack { id }.encode();
        if m.ws
            .send(tokio_tungstenite::tungstenite::Message::text(ack))
            .await
            .is_err()
        {
            break;
        }
    }
    let seen = m.until_closed().await;
    assert!(
        seen.iter().any(|f| code(f) == Some(ErrorCode::RateLimited)),
        "{seen:?}"
    );
    assert_eq!(queued(), 3);

    chat(&mut alice, &mut bob, "after").await;
    for (dir, peer) in [(&scene.alice, "bob"), (&scene.bob, "alice")] {
        exactly_once(dir, peer, false, 4);
        exactly_once(dir, peer, true, 4);
    }
    alice.stop();
    bob.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_for_a_full_mailbox_stays_queued_and_arrives_once_it_drains() {
    let config = RelayConfig {
        queue: QueueLimits {
            recipient_envelopes: 1,
            ..QueueLimits::default()
        },
        ..RelayConfig::default()
    };
    let scene = Scene::with(config).await;
    let mut alice = Client::start(&scene.alice, &scene.relay.url).await;
    // bob is away: his mailbox holds one envelope.
    alice.send("bob", false, "first").await;
    let id = uuid::Uuid::new_v4().to_string();
    alice
        .handle
        .commands
        .send(sotto::client::manager::Command::Send {
            id: id.clone(),
            to: "bob".into(),
            secret: false,
            text: "second".into(),
            reply_to: None,
        })
        .await
        .unwrap();
    alice
        .expect(|e| {
            matches!(e, sotto::client::manager::Event::Warning(w) if w.text.contains("mailbox at the relay is full"))
        })
        .await;
    let kept = alice.history("bob", false);
    let second = kept
        .iter()
        .find(|m| m.id == id)
        .expect("the message is kept");
    assert_eq!(
        second.state,
        sotto::client::store::MessageState::Sending,
        "a refused message is neither lost nor failed"
    );

    // bob takes his mail; the mailbox drains and alice's client sends the second again.
    let mut bob = Client::start(&scene.bob, &scene.relay.url).await;
    assert_eq!(bob.receive().await.text, "first");
    assert_eq!(bob.receive().await.text, "second");
    let texts: Vec<String> = bob
        .history("alice", false)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["first", "second"]);
    alice.stop();
    bob.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_on_asking_while_refused_is_disconnected() {
    let scene = Scene::with(small_limits()).await;
    let mallory = scene.path("m");
    common::register(&mallory, "mallory", &scene.relay.url).await;
    let bob_id = common::account_id(&scene.bob);
    let mut m = Raw::auth(&scene.relay.url, &mallory).await;
    // Ten bundles a minute; past them every fetch is refused, and the 64th refusal in a row
    // ends the connection. mallory asks for all of them without waiting for an answer (not
    // one more: a socket closed with unread requests in it is reset, and a reset may discard
    // answers still on their way to mallory).
    for req in 1..=74u64 {
        m.send(&ClientFrame::FetchBundle {
            req,
            account_id: bob_id.clone(),
        })
        .await;
    }
    let seen = m.until_closed().await;
    let bundles = seen
        .iter()
        .filter(|f| matches!(f, RelayFrame::Bundle { .. }))
        .count();
    let refused = seen
        .iter()
        .filter(|f| {
            matches!(
                f,
                RelayFrame::Error {
                    req: Some(_),
                    code: ErrorCode::RateLimited,
                    ..
                }
            )
        })
        .count();
    assert_eq!((bundles, refused), (10, 64), "{:?}", seen.last());
    assert!(
        matches!(seen.last(), Some(RelayFrame::Error { req: None, code: ErrorCode::RateLimited, message }) if message.contains("in a row")),
        "{:?}",
        seen.last()
    );
    // alice and bob are not touched by it.
    let (mut alice, mut bob) = scene.online().await;
    chat(&mut alice, &mut bob, "after").await;
    alice.stop();
    bob.stop();
}
