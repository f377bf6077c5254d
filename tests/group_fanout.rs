//! Group fan-out through the relay: one `send_multi` (a sealed-sender v2 message built by
//! libsignal over real profiles' keys) or `send_group`, one envelope per recipient, all or
//! none. Each recipient gets exactly its copy, which opens with its own identity key; one bad
//! recipient refuses the whole request and queues nothing for anyone; the cap, a list that
//! does not match the message, a relay killed with SIGKILL mid-commit, a flood held by the
//! queue quotas; and the relay's files never hold the content.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::{Raw, Scene, register};
use libsignal_protocol::{
    CiphertextMessageType, ContentHint, IdentityKeyPair, InMemSignalProtocolStore,
    SenderCertificate, SessionStore, UnidentifiedSenderMessageContent, process_prekey_bundle,
    sealed_sender_decrypt_to_usmc, sealed_sender_multi_recipient_encrypt,
};
use sotto::client::store::Store;
use sotto::client::{account, crypto};
use sotto::relay::RelayConfig;
use sotto::relay::quota::QueueLimits;
use sotto::relay::store::{Directory as _, RelayStore};
use sotto::wire::{self, B64, ClientFrame, ErrorCode, Payload, RelayFrame, SealedRecipient};

fn identity(dir: &Path) -> IdentityKeyPair {
    account::identity(&Store::open(dir).unwrap()).unwrap().0
}

/// What a sender learns of a recipient by a lookup: its account id, token and key.
#[derive(Clone)]
struct Peer {
    dir: PathBuf,
    id: String,
    token: B64,
    key: B64,
}

impl Peer {
    fn recipient(&self) -> SealedRecipient {
        SealedRecipient {
            to: self.id.clone(),
            access_token: self.token.clone(),
            recipient_key: Some(self.key.clone()),
        }
    }
}

/// A sender (the profile in `dir`) with libsignal sessions to each of its peers, set up
/// from bundles fetched at the relay, and a sender certificate the relay issued.
struct Sender {
    store: InMemSignalProtocolStore,
    cert: SenderCertificate,
    peers: Vec<Peer>,
}

async fn answer(raw: &mut Raw) -> RelayFrame {
    raw.expect(|f| {
        matches!(
            f,
            RelayFrame::Ok { .. } | RelayFrame::Error { req: Some(_), .. }
        )
    })
    .await
}

impl Sender {
    async fn new(url: &str, dir: &Path, peers: &[&Path]) -> Sender {
        let mut rng = rand::rng();
        let mut store = InMemSignalProtocolStore::new(identity(dir), 1).unwrap();
        let mut raw = Raw::auth(url, dir).await;
        raw.send(&ClientFrame::GetSenderCert { req: 1 }).await;
        let RelayFrame::SenderCert { certificate, .. } = raw
            .expect(|f| matches!(f, RelayFrame::SenderCert { .. }))
            .await
        else {
            unreachable!()
        };
        let cert = SenderCertificate::deserialize(&certificate.0).unwrap();
        let mut found = Vec::new();
        for (n, p) in peers.iter().enumerate() {
            let id = common::account_id(p);
            let req = 10 + n as u64 * 2;
            raw.send(&ClientFrame::FetchBundle {
                req,
                account_id: id.clone(),
            })
            .await;
            let RelayFrame::Bundle { bundle, .. } =
                raw.expect(|f| matches!(f, RelayFrame::Bundle { .. })).await
            else {
                unreachable!()
            };
            process_prekey_bundle(
                &crypto::address(&id),
                &mut store.session_store,
                &mut store.identity_store,
                &crypto::bundle(&bundle).unwrap(),
                SystemTime::now(),
                &mut rng,
            )
            .await
            .unwrap();
            raw.send(&ClientFrame::Lookup {
                req: req + 1,
                handle: None,
                account_id: Some(id.clone()),
            })
            .await;
            let RelayFrame::Account {
                access_token,
                identity_key,
                ..
            } = raw
                .expect(|f| matches!(f, RelayFrame::Account { .. }))
                .await
            else {
                unreachable!()
            };
            found.push(Peer {
                dir: p.to_path_buf(),
                id,
                token: access_token,
                key: identity_key,
            });
        }
        Sender {
            store,
            cert,
            peers: found,
        }
    }

    /// An SSv2 message carrying `content` for `to` (indexes into the peers).
    async fn seal(&self, to: &[usize], content: &[u8]) -> Vec<u8> {
        let usmc = UnidentifiedSenderMessageContent::new(
            CiphertextMessageType::SenderKey,
            self.cert.clone(),
            content.to_vec(),
            ContentHint::Default,
            None,
        )
        .unwrap();
        let addresses: Vec<_> = to
            .iter()
            .map(|&i| crypto::address(&self.peers[i].id))
            .collect();
        let mut sessions = Vec::new();
        for a in &addresses {
            sessions.push(self.store.load_session(a).await.unwrap().unwrap());
        }
        sealed_sender_multi_recipient_encrypt(
            &addresses.iter().collect::<Vec<_>>(),
            &sessions.iter().collect::<Vec<_>>(),
            [],
            &usmc,
            &self.store.identity_store,
            &mut rand::rng(),
        )
        .await
        .unwrap()
    }

    fn multi(&self, req: u64, envelope: Vec<u8>, to: &[usize]) -> ClientFrame {
        ClientFrame::SendMulti {
            req,
            envelope: envelope.into(),
            recipients: to.iter().map(|&i| self.peers[i].recipient()).collect(),
            expires_at: None,
            online_only: false,
        }
    }
}

/// What a recipient's identity key opens `copy` to: the content the sender sealed.
async fn open(dir: &Path, copy: &[u8]) -> Vec<u8> {
    let store = InMemSignalProtocolStore::new(identity(dir), 1).unwrap();
    sealed_sender_decrypt_to_usmc(copy, &store.identity_store)
        .await
        .unwrap()
        .contents()
        .unwrap()
        .to_vec()
}

/// Every envelope the relay pushes to the profile in `dir` on sign-in, acked, until it says
/// the queue is drained.
async fn collect(url: &str, dir: &Path) -> Vec<(Payload, bool)> {
    let mut raw = Raw::auth(url, dir).await;
    let mut got = Vec::new();
    loop {
        match raw.recv().await {
            Some(RelayFrame::Deliver {
                id,
                payload,
                online_only,
                ..
            }) => {
                got.push((payload, online_only));
                raw.send(&ClientFrame::Ack { id }).await;
            }
            Some(RelayFrame::Drained) => return got,
            Some(_) => {}
            None => panic!("the relay closed the connection"),
        }
    }
}

fn queued(relay_dir: &Path, peers: &[Peer]) -> Vec<u64> {
    let mut store = RelayStore::open(relay_dir).unwrap();
    peers
        .iter()
        .map(|p| store.queued_for(&p.id).unwrap())
        .collect()
}

/// The usual scene with carol and dave registered too.
async fn four(config: RelayConfig) -> (Scene, PathBuf, PathBuf) {
    let scene = Scene::with(config).await;
    let (carol, dave) = (scene.path("c"), scene.path("d"));
    register(&carol, "carol", &scene.relay.url).await;
    register(&dave, "dave", &scene.relay.url).await;
    (scene, carol, dave)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_of_three_recipients_gets_its_own_copy_once_and_it_opens() {
    let (scene, carol, dave) = four(RelayConfig::default()).await;
    let url = scene.relay.url.clone();
    let alice = Sender::new(&url, &scene.alice, &[&scene.bob, &carol, &dave]).await;
    let marker = b"GROUP-TEXT-7f3a: lunch at noon";
    let envelope = alice.seal(&[0, 1, 2], marker).await;
    let mut anon = Raw::anonymous(&url).await;
    anon.send(&alice.multi(5, envelope, &[0, 1, 2])).await;
    assert_eq!(answer(&mut anon).await, RelayFrame::Ok { req: 5 });

    // The relay's files and what it received hold the content nowhere.
    let hits = common::any_file_contains(&scene.relay_dir, marker);
    assert!(hits.is_empty(), "plaintext in {hits:?}");
    assert!(!scene.relay.received_any(marker));

    let mut copies = Vec::new();
    for p in &alice.peers {
        let got = collect(&url, &p.dir).await;
        assert_eq!(got.len(), 1, "{} got {} envelopes", p.id, got.len());
        let (Payload::Sealed { envelope }, false) = &got[0] else {
            panic!("not a sealed envelope: {:?}", got[0]);
        };
        assert_eq!(open(&p.dir, &envelope.0).await, marker);
        copies.push(envelope.0.clone());
    }
    // Each got its own copy: another recipient's does not open with its key.
    assert_ne!(copies[0], copies[1]);
    let wrong = InMemSignalProtocolStore::new(identity(&carol), 1).unwrap();
    assert!(
        sealed_sender_decrypt_to_usmc(&copies[0], &wrong.identity_store)
            .await
            .is_err()
    );
    // Acked once, never pushed again: a new connection finds nothing (sign-in waits until
    // the earlier connection's acks have taken effect).
    for p in &alice.peers {
        assert!(collect(&url, &p.dir).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_through_the_account_connection_reaches_each_member_once() {
    let (scene, carol, dave) = four(RelayConfig::default()).await;
    let url = scene.relay.url.clone();
    let ids: Vec<String> = [&scene.bob, &carol, &dave]
        .iter()
        .map(|d| common::account_id(d))
        .collect();
    let mut raw = Raw::auth(&url, &scene.alice).await;
    raw.send(&ClientFrame::SendGroup {
        req: 1,
        to: ids.clone(),
        body: B64(b"normal group text".to_vec()),
        expires_at: None,
        online_only: false,
    })
    .await;
    assert_eq!(answer(&mut raw).await, RelayFrame::Ok { req: 1 });
    let alice_id = common::account_id(&scene.alice);
    for dir in [&scene.bob, &carol, &dave] {
        let got = collect(&url, dir).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].0,
            Payload::Normal {
                from: alice_id.clone(),
                from_handle: "alice".into(),
                body: B64(b"normal group text".to_vec()),
            }
        );
    }
    // Online only: handed to whoever is connected, stored for nobody.
    let mut bob = Raw::auth(&url, &scene.bob).await;
    bob.expect(|f| matches!(f, RelayFrame::Drained)).await;
    raw.send(&ClientFrame::SendGroup {
        req: 2,
        to: ids,
        body: B64(b"typing".to_vec()),
        expires_at: None,
        online_only: true,
    })
    .await;
    assert_eq!(answer(&mut raw).await, RelayFrame::Ok { req: 2 });
    let typing = bob
        .expect(|f| matches!(f, RelayFrame::Deliver { .. }))
        .await;
    assert!(matches!(
        typing,
        RelayFrame::Deliver {
            online_only: true,
            ..
        }
    ));
    // Nothing of it was stored: each queue is empty after the copies above were acked.
    drop(bob);
    for dir in [&scene.bob, &carol, &dave] {
        assert!(collect(&url, dir).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_recipient_refuses_the_whole_fan_out_and_nothing_is_queued() {
    let (scene, carol, dave) = four(RelayConfig::default()).await;
    let url = scene.relay.url.clone();
    let alice = Sender::new(&url, &scene.alice, &[&scene.bob, &carol, &dave]).await;
    let mut anon = Raw::anonymous(&url).await;

    // A wrong token for carol: the same sentence as a 1:1 send, naming nobody.
    let envelope = alice.seal(&[0, 1, 2], b"wrong token").await;
    let ClientFrame::SendMulti {
        envelope,
        mut recipients,
        ..
    } = alice.multi(1, envelope, &[0, 1, 2])
    else {
        unreachable!()
    };
    recipients[1].access_token = B64(vec![0; 16]);
    anon.send(&ClientFrame::SendMulti {
        req: 1,
        envelope,
        recipients,
        expires_at: None,
        online_only: false,
    })
    .await;
    let RelayFrame::Error { code, message, .. } = answer(&mut anon).await else {
        panic!("a wrong token was accepted")
    };
    assert_eq!(code, ErrorCode::NotFound);
    assert_eq!(message, "no such recipient, or the access token is wrong");
    assert_eq!(queued(&scene.relay_dir, &alice.peers), [0, 0, 0]);

    // Dave's key changes after alice looked him up: refused, naming dave.
    common::rekey(&dave, &url).await;
    let envelope = alice.seal(&[0, 1, 2], b"stale key").await;
    anon.send(&alice.multi(2, envelope, &[0, 1, 2])).await;
    let RelayFrame::Error { code, message, .. } = answer(&mut anon).await else {
        panic!("a stale key was accepted")
    };
    assert_eq!(code, ErrorCode::IdentityChanged);
    assert_eq!(
        wire::changed_recipients(&message),
        [alice.peers[2].id.clone()]
    );
    assert_eq!(queued(&scene.relay_dir, &alice.peers), [0, 0, 0]);

    // Online only is all or none too.
    let envelope = alice.seal(&[0, 1, 2], b"stale key, typing").await;
    let ClientFrame::SendMulti {
        envelope,
        recipients,
        ..
    } = alice.multi(3, envelope, &[0, 1, 2])
    else {
        unreachable!()
    };
    let mut bob = Raw::auth(&url, &scene.bob).await;
    bob.expect(|f| matches!(f, RelayFrame::Drained)).await;
    anon.send(&ClientFrame::SendMulti {
        req: 3,
        envelope,
        recipients,
        expires_at: None,
        online_only: true,
    })
    .await;
    let refused = answer(&mut anon).await;
    assert!(
        matches!(
            refused,
            RelayFrame::Error {
                code: ErrorCode::IdentityChanged,
                ..
            }
        ),
        "{refused:?}"
    );

    // An unknown account on the account connection: nothing for bob either.
    let mut raw = Raw::auth(&url, &scene.alice).await;
    let nobody = uuid::Uuid::new_v4().to_string();
    raw.send(&ClientFrame::SendGroup {
        req: 4,
        to: vec![alice.peers[0].id.clone(), nobody.clone()],
        body: B64(b"to a ghost".to_vec()),
        expires_at: None,
        online_only: false,
    })
    .await;
    let RelayFrame::Error { code, message, .. } = answer(&mut raw).await else {
        panic!("a send to an unknown account was accepted")
    };
    assert_eq!(code, ErrorCode::NotFound);
    assert!(message.ends_with(&nobody), "{message}");
    assert_eq!(queued(&scene.relay_dir, &alice.peers), [0, 0, 0]);
    // Bob, online all along, was handed nothing: the next thing he gets is this 1:1 send.
    raw.send(&ClientFrame::Send {
        req: 5,
        to: alice.peers[0].id.clone(),
        body: B64(b"after".to_vec()),
        expires_at: None,
        online_only: false,
    })
    .await;
    let next = bob
        .expect(|f| matches!(f, RelayFrame::Deliver { .. }))
        .await;
    assert!(
        matches!(&next, RelayFrame::Deliver { payload: Payload::Normal { body, .. }, .. } if body.0 == b"after"),
        "{next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_or_a_list_that_is_not_the_messages_is_refused() {
    let config = RelayConfig {
        max_group_recipients: 2,
        ..RelayConfig::default()
    };
    let (scene, carol, dave) = four(config).await;
    let url = scene.relay.url.clone();
    let alice = Sender::new(&url, &scene.alice, &[&scene.bob, &carol, &dave]).await;
    let mut anon = Raw::anonymous(&url).await;
    let refusal = |f: RelayFrame| match f {
        RelayFrame::Error { code, message, .. } => (code, message),
        other => panic!("accepted: {other:?}"),
    };

    let three = alice.seal(&[0, 1, 2], b"three").await;
    anon.send(&alice.multi(1, three, &[0, 1, 2])).await;
    let (code, message) = refusal(answer(&mut anon).await);
    assert_eq!(code, ErrorCode::TooLarge);
    assert!(message.contains("at most 2 recipients"), "{message}");

    // The message is for bob and carol; the list names bob and dave.
    let two = alice.seal(&[0, 1], b"two").await;
    anon.send(&alice.multi(2, two.clone(), &[0, 2])).await;
    let (code, message) = refusal(answer(&mut anon).await);
    assert_eq!(code, ErrorCode::Malformed);
    assert!(message.contains("not the accounts listed"), "{message}");
    // Only bob listed for a message to two.
    anon.send(&alice.multi(3, two.clone(), &[0])).await;
    assert_eq!(refusal(answer(&mut anon).await).0, ErrorCode::Malformed);
    // Bob twice.
    anon.send(&alice.multi(4, two.clone(), &[0, 0])).await;
    let (code, message) = refusal(answer(&mut anon).await);
    assert_eq!(code, ErrorCode::Malformed);
    assert!(message.contains("named twice"), "{message}");
    // Not an SSv2 message at all.
    anon.send(&alice.multi(5, b"plain bytes".to_vec(), &[0, 1]))
        .await;
    assert_eq!(refusal(answer(&mut anon).await).0, ErrorCode::Malformed);
    // A sealed fan-out on the account connection is refused: it would name the sender.
    let mut raw = Raw::auth(&url, &scene.alice).await;
    raw.send(&alice.multi(6, two.clone(), &[0, 1])).await;
    assert_eq!(refusal(answer(&mut raw).await).0, ErrorCode::Forbidden);
    // A normal one over the cap.
    raw.send(&ClientFrame::SendGroup {
        req: 7,
        to: alice.peers.iter().map(|p| p.id.clone()).collect(),
        body: B64(b"x".to_vec()),
        expires_at: None,
        online_only: false,
    })
    .await;
    assert_eq!(refusal(answer(&mut raw).await).0, ErrorCode::TooLarge);
    assert_eq!(queued(&scene.relay_dir, &alice.peers), [0, 0, 0]);

    // Within the cap and matching: accepted.
    anon.send(&alice.multi(8, two, &[0, 1])).await;
    assert_eq!(answer(&mut anon).await, RelayFrame::Ok { req: 8 });
    assert_eq!(queued(&scene.relay_dir, &alice.peers), [1, 1, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fan_outs_is_held_by_the_sealed_quota_like_one_to_one_sends() {
    let config = RelayConfig {
        queue: QueueLimits {
            sealed_envelopes: 10,
            ..QueueLimits::default()
        },
        ..RelayConfig::default()
    };
    let (scene, carol, dave) = four(config).await;
    let url = scene.relay.url.clone();
    let alice = Sender::new(&url, &scene.alice, &[&scene.bob, &carol, &dave]).await;
    let mut anon = Raw::anonymous(&url).await;
    // Five 1:1 sealed envelopes for bob first: his sealed mailbox has room for five more.
    for req in 1..=5 {
        let bob = &alice.peers[0];
        anon.send(&ClientFrame::SendSealed {
            req,
            to: bob.id.clone(),
            access_token: bob.token.clone(),
            envelope: B64(vec![req as u8; 64]),
            expires_at: None,
            recipient_key: None,
            online_only: false,
        })
        .await;
        assert_eq!(answer(&mut anon).await, RelayFrame::Ok { req });
    }
    // Every fan-out counts once for each recipient: the sixth meets bob's full mailbox and
    // is refused for all three, though carol and dave have room.
    let mut answers = HashMap::new();
    for req in 10..30 {
        let envelope = alice
            .seal(&[0, 1, 2], format!("flood {req}").as_bytes())
            .await;
        anon.send(&alice.multi(req, envelope, &[0, 1, 2])).await;
    }
    while answers.len() < 20 {
        match answer(&mut anon).await {
            RelayFrame::Ok { req } => answers.insert(req, None),
            RelayFrame::Error {
                req: Some(req),
                code,
                ..
            } => answers.insert(req, Some(code)),
            _ => unreachable!(),
        };
    }
    for req in 10..30 {
        let expected = (req >= 15).then_some(ErrorCode::QuotaExceeded);
        assert_eq!(answers[&req], expected, "fan-out {req}");
    }
    assert_eq!(queued(&scene.relay_dir, &alice.peers), [10, 5, 5]);
    // And a 1:1 send to bob meets the same full mailbox.
    let bob = &alice.peers[0];
    anon.send(&ClientFrame::SendSealed {
        req: 40,
        to: bob.id.clone(),
        access_token: bob.token.clone(),
        envelope: B64(vec![1; 64]),
        expires_at: None,
        recipient_key: None,
        online_only: false,
    })
    .await;
    assert!(matches!(
        answer(&mut anon).await,
        RelayFrame::Error {
            code: ErrorCode::QuotaExceeded,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_fan_out_has_each_queued_for_all_or_none() {
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    let mut relay = common::cli::start_relay(&relay_dir);
    let url = relay.url.clone();
    let dirs: Vec<PathBuf> = ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|h| tmp.path().join(h))
        .collect();
    for (dir, handle) in dirs.iter().zip(["alice", "bob", "carol", "dave"]) {
        register(dir, handle, &url).await;
    }
    let alice = Sender::new(&url, &dirs[0], &[&dirs[1], &dirs[2], &dirs[3]]).await;
    let n = 1000u64;
    let mut frames = Vec::new();
    for req in 0..n {
        let envelope = alice
            .seal(&[0, 1, 2], format!("fan-out {req}").as_bytes())
            .await;
        frames.push(alice.multi(req, envelope, &[0, 1, 2]));
    }
    let mut anon = Raw::anonymous(&url).await;
    for f in &frames {
        anon.send(f).await;
    }
    // Killed once some are committed, while the rest are on their way.
    let mut ok = Vec::new();
    while ok.len() < 20 {
        match answer(&mut anon).await {
            RelayFrame::Ok { req } => ok.push(req),
            other => panic!("refused: {other:?}"),
        }
    }
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    let addr = url.trim_start_matches("wss://").to_string();
    let mut relay = common::cli::start_relay_at(&relay_dir, &addr);

    // Which fan-outs each recipient has, by opening every copy the relay kept for it.
    let mut store = RelayStore::open(&relay_dir).unwrap();
    let mut holders: HashMap<Vec<u8>, usize> = HashMap::new();
    for p in &alice.peers {
        let kept = store.pending(&p.id, 0, 10_000).unwrap();
        for q in kept {
            *holders.entry(open(&p.dir, &q.payload).await).or_default() += 1;
        }
    }
    for req in &ok {
        let content = format!("fan-out {req}").into_bytes();
        assert_eq!(
            holders.get(&content),
            Some(&3),
            "fan-out {req} was answered ok"
        );
    }
    println!(
        "committed before the kill: {} of {n} fan-outs, {} answered ok",
        holders.len(),
        ok.len()
    );
    for (content, count) in &holders {
        assert_eq!(
            *count,
            3,
            "{} is queued for {count} of 3",
            String::from_utf8_lossy(content)
        );
    }
    assert!(
        holders.len() < n as usize,
        "every fan-out was committed before the kill; send more"
    );
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}
