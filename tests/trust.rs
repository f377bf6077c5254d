//! Safety numbers and identity-key changes over a real relay: both sides see the same number,
//! a key rotation is noticed and blocks secret sending until accepted, and nobody but the
//! key's holder can rotate it.

mod common;

use common::{Client, Raw, Scene, register};
use sotto::client::account;
use sotto::client::store::{MessageKind, Store};
use sotto::client::trust;
use sotto::relay::store::{Directory as _, RelayStore};
use sotto::wire::{ClientFrame, ErrorCode, RelayFrame};

fn number(profile: &std::path::Path, handle: &str) -> trust::SafetyNumber {
    trust::safety_number(&Store::open(profile).unwrap(), handle).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_see_the_same_safety_number_and_the_scannable_forms_match() {
    let scene = Scene::new().await;
    let cd = scene.path("c");
    register(&cd, "carol", &scene.relay.url).await;
    let (mut alice, mut bob) = scene.online().await;
    alice.send("bob", true, "hi").await;
    bob.receive().await;
    alice.send("carol", false, "hi carol").await;

    let (a, b) = (number(&scene.alice, "bob"), number(&scene.bob, "alice"));
    assert_eq!(
        a.display, b.display,
        "alice and bob must see the same number"
    );
    let groups: Vec<&str> = a.display.split(' ').collect();
    assert_eq!(groups.len(), 12);
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit()))
    );
    assert_ne!(a.display, number(&scene.alice, "carol").display);

    // bob's scannable form matches alice's view; carol's (with alice) does not.
    let alice_store = Store::open(&scene.alice).unwrap();
    assert!(trust::compare(&alice_store, "bob", &trust::hex(&b.scannable)).unwrap());
    let carol_with_alice = trust::hex(&number(&scene.alice, "carol").scannable);
    assert!(!trust::compare(&alice_store, "bob", &carol_with_alice).unwrap());
    assert!(trust::compare(&alice_store, "bob", "not hex").is_err());
    // The QR code is drawn with half blocks.
    let qr = trust::qr(&a.scannable);
    assert!(qr.lines().count() > 10 && qr.contains('█'));

    trust::set_verified(&alice_store, "bob", true).unwrap();
    assert!(number(&scene.alice, "bob").verified);
    alice.stop();
    bob.stop();
    scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_blocks_secret_sending_until_the_change_is_accepted() {
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    alice.send("bob", true, "before").await;
    bob.receive().await;
    trust::set_verified(&Store::open(&scene.alice).unwrap(), "bob", true).unwrap();
    let before = number(&scene.alice, "bob").display;
    bob.stop();

    // bob rotates his key (signed by the old one) while alice is running.
    let bob_id = common::account_id(&scene.bob);
    common::rekey(&scene.bob, &scene.relay.url).await;
    assert_eq!(
        RelayStore::open(&scene.relay_dir)
            .unwrap()
            .key_changes(&bob_id)
            .unwrap(),
        1
    );

    // alice's next secret send fails with the change, naming the fix; nothing reached bob.
    let err = alice
        .try_send("bob", true, "to the old key?")
        .await
        .unwrap_err();
    assert!(
        err.contains("safety number has changed") && err.contains("--accept-change"),
        "{err}"
    );
    let n = number(&scene.alice, "bob");
    assert!(
        n.key_changed && !n.verified,
        "the change clears the verified mark"
    );
    assert_ne!(n.display, before, "a new key gives a new safety number");
    for secret in [false, true] {
        let lines: Vec<_> = alice
            .history("bob", secret)
            .into_iter()
            .filter(|m| m.kind == MessageKind::KeyChange)
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "one change line in the {} thread",
            if secret { "secret" } else { "normal" }
        );
        assert_eq!(lines[0].text, "bob's safety number changed");
    }
    // Still blocked on a second try; the normal thread is not blocked.
    assert!(alice.try_send("bob", true, "again?").await.is_err());
    alice
        .try_send("bob", false, "normal still works")
        .await
        .unwrap();

    // alice accepts; secret messages flow to the new key, and bob's new number matches hers.
    trust::accept_change(&Store::open(&scene.alice).unwrap(), "bob", 0).unwrap();
    alice
        .try_send("bob", true, "after accepting")
        .await
        .unwrap();
    let mut bob = Client::start(&scene.bob, &scene.relay.url).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(bob.receive().await.text);
    }
    got.sort();
    assert_eq!(got, ["after accepting", "normal still works"]);
    assert_eq!(
        number(&scene.bob, "alice").display,
        number(&scene.alice, "bob").display
    );
    alice.stop();
    bob.stop();
    scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_message_from_a_rotated_key_arrives_after_a_warning_and_blocks_the_reply() {
    let Scene {
        alice: ad,
        bob: bd,
        relay,
        tmp: _tmp,
        ..
    } = Scene::new().await;
    let mut alice = Client::start(&ad, &relay.url).await;
    alice.send("bob", true, "hello").await;
    common::rekey(&bd, &relay.url).await;
    let mut bob = Client::start(&bd, &relay.url).await;
    bob.send("alice", true, "new phone, same bob").await;

    // alice sees the warning line first, then the message.
    let line = alice.receive().await;
    assert_eq!(line.kind, MessageKind::KeyChange);
    let m = loop {
        let m = alice.receive().await;
        if m.kind == MessageKind::Text {
            break m;
        }
    };
    assert_eq!(m.text, "new phone, same bob");
    assert!(number(&ad, "bob").key_changed);
    let err = alice.try_send("bob", true, "is it you?").await.unwrap_err();
    assert!(err.contains("safety number has changed"), "{err}");
    alice.stop();
    bob.stop();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_of_the_current_key_can_rotate_it() {
    let Scene {
        alice: ad,
        bob: bd,
        relay_dir,
        relay,
        tmp: _tmp,
    } = Scene::new().await;
    let alice_id = common::account_id(&ad);
    let (bob_key, _) = account::identity(&Store::open(&bd).unwrap()).unwrap();
    let fresh = libsignal_protocol::IdentityKeyPair::generate(&mut rand::rng());
    let (alice_key, _) = account::identity(&Store::open(&ad).unwrap()).unwrap();

    // A connection signed in as alice, but the endorsement is by someone else's key.
    let mut raw = Raw::auth(&relay.url, &ad).await;
    let nonce = raw.nonce.clone();
    let sign = |k: &libsignal_protocol::IdentityKeyPair, m: &[u8]| -> Vec<u8> {
        k.private_key()
            .calculate_signature(m, &mut rand::rng())
            .unwrap()
            .to_vec()
    };
    // Reuse a real key upload shape: alice's current bundle data under the fresh key.
    let keys = sotto::wire::KeyUpload {
        identity_key: fresh.identity_key().serialize().to_vec().into(),
        registration_id: 7,
        signed_prekey: sotto::wire::SignedKey {
            id: 1,
            public: vec![5; 33].into(),
            signature: vec![0; 64].into(),
        },
        kyber_last_resort: sotto::wire::SignedKey {
            id: 1,
            public: vec![1; 10].into(),
            signature: vec![0; 64].into(),
        },
        one_time_prekeys: vec![],
        one_time_kyber: vec![],
    };
    let new_key = fresh.identity_key().serialize().to_vec();
    let attempts = [
        // endorsed by bob's key, not alice's
        (
            sign(&fresh, &sotto::wire::auth_message(&nonce)),
            sign(&bob_key, &sotto::wire::rekey_message(&new_key)),
        ),
        // endorsed by alice, but the new key's proof is over another challenge
        (
            sign(&fresh, &sotto::wire::auth_message(b"old nonce")),
            sign(&alice_key, &sotto::wire::rekey_message(&new_key)),
        ),
    ];
    for (req, (proof, endorsement)) in attempts.into_iter().enumerate() {
        raw.send(&ClientFrame::Rekey {
            req: req as u64,
            keys: keys.clone(),
            proof: proof.into(),
            endorsement: endorsement.into(),
        })
        .await;
        let f = raw
            .expect(|f| matches!(f, RelayFrame::Error { .. } | RelayFrame::Ok { .. }))
            .await;
        assert!(
            matches!(
                f,
                RelayFrame::Error {
                    code: ErrorCode::AuthFailed,
                    ..
                }
            ),
            "got {f:?}"
        );
    }
    // An unauthenticated connection cannot even ask.
    let mut anon = Raw::connect(&relay.url).await;
    anon.send(&ClientFrame::Rekey {
        req: 9,
        keys,
        proof: vec![0].into(),
        endorsement: vec![0].into(),
    })
    .await;
    assert!(anon.until_closed().await.iter().any(|f| matches!(
        f,
        RelayFrame::Error {
            code: ErrorCode::NotAuthenticated,
            ..
        }
    )));
    assert_eq!(
        RelayStore::open(&relay_dir)
            .unwrap()
            .key_changes(&alice_id)
            .unwrap(),
        0
    );
    relay.stop().await;
}
