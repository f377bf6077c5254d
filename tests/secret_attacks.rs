//! The attacks a secret conversation exists to defeat, carried out: a man in the middle that
//! rewrites the relay's answers, and a relay operator who holds the server key and forges
//! sender certificates. Each test marks the contact verified first, attacks, and checks what
//! the user sees: no message from a key the contact never had, the send refused with a
//! sentence, the verified mark and the safety number untouched, the attempt in the key log.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use common::{Client, Raw, TestRelay, register};
use futures_util::{SinkExt, StreamExt};
use libsignal_protocol::{
    IdentityKeyPair, InMemSignalProtocolStore, SenderCertificate, process_prekey_bundle,
    sealed_sender_encrypt,
};
use sotto::client::account;
use sotto::client::content::{self, Content};
use sotto::client::crypto;
use sotto::client::manager::{Command, Event};
use sotto::client::store::{MessageKind, Store};
use sotto::client::trust::{self, KeyEvent};
use sotto::relay::RelayConfig;
use sotto::relay::certs::Authority;
use sotto::relay::store::RelayStore;
use sotto::wire::{self, B64, ClientFrame, ErrorCode, KeyChange, KeyChangeVia, RelayFrame};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// What the man in the middle does to the relay's frames on their way to the client.
type Rewrite = Arc<Mutex<Box<dyn FnMut(RelayFrame) -> RelayFrame + Send>>>;

fn pass() -> Box<dyn FnMut(RelayFrame) -> RelayFrame + Send> {
    Box::new(|f| f)
}

/// A WebSocket proxy between clients and `upstream`: frames from the client pass unchanged,
/// frames from the relay go through `rewrite`. Returns its URL.
async fn man_in_the_middle(upstream: String, rewrite: Rewrite) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (upstream, rewrite) = (upstream.clone(), rewrite.clone());
            tokio::spawn(async move {
                let Ok(client) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let Ok((relay, _)) = tokio_tungstenite::connect_async(&upstream).await else {
                    return;
                };
                let (mut to_client, mut from_client) = client.split();
                let (mut to_relay, mut from_relay) = relay.split();
                let up = async {
                    while let Some(Ok(m)) = from_client.next().await {
                        if to_relay.send(m).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_relay.close().await;
                };
                let down = async {
                    while let Some(Ok(m)) = from_relay.next().await {
                        let m = match m {
                            WsMessage::Text(t) => match RelayFrame::decode(t.as_bytes()) {
                                Ok(f) => {
                                    let f = (rewrite.lock().unwrap())(f);
                                    WsMessage::text(f.encode())
                                }
                                Err(_) => WsMessage::Text(t),
                            },
                            other => other,
                        };
                        if to_client.send(m).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_client.close().await;
                };
                tokio::select! {
                    () = up => {}
                    () = down => {}
                }
            });
        }
    });
    format!("ws://{addr}")
}

/// A relay on plain ws://, for the man in the middle to sit in front of. Over wss:// a pinned
/// certificate keeps him out before the first frame (tests/transport.rs); these tests show
/// what holds against whoever is past TLS anyway: the relay's operator.
async fn plain_relay(dir: &Path) -> TestRelay {
    TestRelay::start_plain_at(dir, "127.0.0.1:0", RelayConfig::default()).await
}

/// Marks `handle` verified in the running client and returns the safety number it shows.
async fn mark_verified(c: &mut Client, handle: &str) -> trust::SafetyNumber {
    c.handle
        .commands
        .send(Command::SetVerified {
            handle: handle.into(),
            verified: true,
        })
        .await
        .unwrap();
    match c
        .expect(|e| matches!(e, Event::SafetyNumber(n) if n.handle == handle))
        .await
    {
        Event::SafetyNumber(n) => {
            assert!(n.verified);
            n
        }
        _ => unreachable!(),
    }
}

/// Adds `handle` as a contact of the running client.
async fn add(c: &mut Client, handle: &str) {
    c.handle
        .commands
        .send(Command::AddContact {
            tag: 1,
            handle: handle.into(),
        })
        .await
        .unwrap();
    c.expect(|e| matches!(e, Event::ContactAdded { tag: 1, .. }))
        .await;
}

fn safety(dir: &Path, handle: &str) -> trust::SafetyNumber {
    trust::safety_number(&Store::open(dir).unwrap(), handle).unwrap()
}

fn key_log(dir: &Path, handle: &str) -> Vec<KeyEvent> {
    trust::key_log(&Store::open(dir).unwrap(), handle)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

fn identity(dir: &Path) -> IdentityKeyPair {
    account::identity(&Store::open(dir).unwrap()).unwrap().0
}

/// A bundle of `of`'s, fetched by the profile in `by` over a raw connection.
async fn fetch_bundle(url: &str, by: &Path, of: &str) -> wire::Bundle {
    let mut raw = Raw::auth(url, by).await;
    raw.send(&ClientFrame::FetchBundle {
        req: 1,
        account_id: of.into(),
    })
    .await;
    match raw.expect(|f| matches!(f, RelayFrame::Bundle { .. })).await {
        RelayFrame::Bundle { bundle, .. } => bundle,
        _ => unreachable!(),
    }
}

/// Whether the relay received any sealed envelope addressed to `to`.
fn sealed_sent_to(relay: &TestRelay, to: &str) -> bool {
    relay.frames.lock().unwrap().iter().any(
        |f| matches!(ClientFrame::decode(f), Ok(ClientFrame::SendSealed { to: t, .. }) if t == to),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_substituted_by_a_man_in_the_middle_is_refused_and_nothing_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = plain_relay(&tmp.path().join("relay")).await;
    let (ad, bd, md) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("m"),
    );
    for (dir, handle) in [(&ad, "alice"), (&bd, "bob"), (&md, "mallory")] {
        register(dir, handle, &relay.url).await;
    }
    let bob_id = common::account_id(&bd);
    let mallory_id = common::account_id(&md);
    let rewrite: Rewrite = Arc::new(Mutex::new(pass()));
    let mitm = man_in_the_middle(relay.url.clone(), rewrite.clone()).await;
    let mut alice = Client::start(&ad, &mitm).await;
    add(&mut alice, "bob").await;
    let before = mark_verified(&mut alice, "bob").await;

    // Two substitutions: mallory's keys under bob's account id, and mallory's bundle whole.
    for keep_bobs_id in [true, false] {
        let mut forged = fetch_bundle(&relay.url, &md, &mallory_id).await;
        if keep_bobs_id {
            forged.account_id = bob_id.clone();
            forged.handle = "bob".into();
        }
        *rewrite.lock().unwrap() = Box::new(move |f| match f {
            RelayFrame::Bundle { req, .. } => RelayFrame::Bundle {
                req,
                bundle: forged.clone(),
            },
            f => f,
        });
        let err = alice
            .try_send("bob", true, "for bob's eyes only")
            .await
            .unwrap_err();
        assert!(err.contains("different identity key"), "{err}");
    }
    assert!(!sealed_sent_to(&relay, &bob_id));
    assert!(!sealed_sent_to(&relay, &mallory_id));
    let after = safety(&ad, "bob");
    assert!(after.verified, "bob is still verified against his own key");
    assert_eq!(after.display, before.display);
    assert!(!after.key_changed);
    assert_eq!(
        key_log(&ad, "bob"),
        [KeyEvent::RefusedBundle, KeyEvent::RefusedBundle]
    );

    // Without the attacker in the way, the thread works with bob's real key.
    *rewrite.lock().unwrap() = pass();
    alice.send("bob", true, "now it is really you").await;
    let mut bob = Client::start(&bd, &relay.url).await;
    let m = bob.receive().await;
    assert_eq!(m.text, "now it is really you");
    assert_eq!(safety(&bd, "alice").display, before.display);
    alice.stop();
    bob.stop();
    relay.stop().await;
}

/// An envelope sealed by mallory's libsignal under a sender certificate `cert`, carrying a
/// text, for bob (whose bundle mallory fetched).
async fn mallory_seals(
    mallory: &IdentityKeyPair,
    bob_bundle: &wire::Bundle,
    cert: &SenderCertificate,
    text: &str,
) -> Vec<u8> {
    let mut rng = rand::rng();
    let mut store = InMemSignalProtocolStore::new(*mallory, 77).unwrap();
    let bob = crypto::address(&bob_bundle.account_id);
    process_prekey_bundle(
        &bob,
        &mut store.session_store,
        &mut store.identity_store,
        &crypto::bundle(bob_bundle).unwrap(),
        SystemTime::now(),
        &mut rng,
    )
    .await
    .unwrap();
    let body = Content::text(
        uuid::Uuid::new_v4().to_string(),
        text.into(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        None,
    );
    sealed_sender_encrypt(
        &bob,
        cert,
        &content::pad(body.encode()),
        &mut store.session_store,
        &mut store.identity_store,
        SystemTime::now(),
        &mut rng,
    )
    .await
    .unwrap()
}

/// Mallory (the profile in `dir`) fetches a bundle of `to`'s, seals `text` under `cert` and
/// submits it on an anonymous connection.
async fn mallory_sends(url: &str, dir: &Path, to: &str, cert: &SenderCertificate, text: &str) {
    let bundle = fetch_bundle(url, dir, to).await;
    let envelope = mallory_seals(&identity(dir), &bundle, cert, text).await;
    submit_sealed(url, dir, to, envelope).await;
}

/// The relay's operator, holding the server key, certifies `key` as `account_id`'s.
fn forge_certificate(relay_dir: &Path, account_id: &str, key: &[u8]) -> SenderCertificate {
    let mut store = RelayStore::open(relay_dir).unwrap();
    let authority = Authority::load_or_create(&mut store).unwrap();
    SenderCertificate::deserialize(&authority.issue(account_id, key).unwrap()).unwrap()
}

/// Submits a sealed envelope for bob on an anonymous connection, with the token and key a
/// lookup by the profile in `by` gave.
async fn submit_sealed(url: &str, by: &Path, to: &str, envelope: Vec<u8>) {
    let mut raw = Raw::auth(url, by).await;
    raw.send(&ClientFrame::Lookup {
        req: 1,
        handle: None,
        account_id: Some(to.into()),
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
    let mut anon = Raw::anonymous(url).await;
    anon.send(&ClientFrame::SendSealed {
        req: 2,
        to: to.into(),
        access_token,
        envelope: envelope.into(),
        expires_at: None,
        recipient_key: Some(identity_key),
        online_only: false,
    })
    .await;
    let answer = anon
        .expect(|f| matches!(f, RelayFrame::Ok { .. } | RelayFrame::Error { .. }))
        .await;
    assert!(matches!(answer, RelayFrame::Ok { req: 2 }), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_certificate_forged_by_the_relay_is_refused_and_alice_stays_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    let relay = TestRelay::start(&relay_dir).await;
    let (ad, bd, md) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("m"),
    );
    for (dir, handle) in [(&ad, "alice"), (&bd, "bob"), (&md, "mallory")] {
        register(dir, handle, &relay.url).await;
    }
    let (alice_id, bob_id) = (common::account_id(&ad), common::account_id(&bd));
    let mallory = identity(&md);
    let mut bob = Client::start(&bd, &relay.url).await;
    add(&mut bob, "alice").await;
    let before = mark_verified(&mut bob, "alice").await;

    // 1. A certificate naming alice with mallory's key.
    let cert = forge_certificate(&relay_dir, &alice_id, &mallory.identity_key().serialize());
    mallory_sends(&relay.url, &md, &bob_id, &cert, "it's me, alice").await;
    let warning = bob.expect(|e| matches!(e, Event::Warning(_))).await;
    assert!(format!("{warning:?}").contains("refused"), "{warning:?}");

    // 2. A certificate naming alice with her real key, around mallory's session: the
    // message's own identity key is mallory's.
    let cert = forge_certificate(
        &relay_dir,
        &alice_id,
        &identity(&ad).identity_key().serialize(),
    );
    mallory_sends(&relay.url, &md, &bob_id, &cert, "really alice this time").await;
    // libsignal finds that the certificate's key is not the one that sealed the envelope.
    let warning = bob.expect(|e| matches!(e, Event::Warning(_))).await;
    assert!(
        format!("{warning:?}").contains("could not be opened"),
        "{warning:?}"
    );
    bob.barrier().await;

    let thread = bob.history("alice", true);
    assert!(
        thread.iter().all(|m| m.kind != MessageKind::Text),
        "no text may show as alice's: {thread:?}"
    );
    assert!(
        thread
            .iter()
            .any(|m| m.kind == MessageKind::KeyChange && m.text.contains("refused")),
        "the thread says a forgery was refused: {thread:?}"
    );
    let after = safety(&bd, "alice");
    assert!(after.verified && !after.key_changed);
    assert_eq!(after.display, before.display);
    assert_eq!(key_log(&bd, "alice"), [KeyEvent::RefusedCertificate]);

    // Alice's real messages still arrive, and bob's reply goes to her real key.
    let mut alice = Client::start(&ad, &relay.url).await;
    alice.send("bob", true, "the real alice").await;
    let m = loop {
        let m = bob.receive().await;
        if m.kind == MessageKind::Text {
            break m;
        }
    };
    assert_eq!(m.text, "the real alice");
    bob.send("alice", true, "hello, real alice").await;
    assert_eq!(alice.receive().await.text, "hello, real alice");
    alice.stop();
    bob.stop();
    relay.stop().await;
}

/// A man in the middle's rewrite: every directory answer about `account` names `key`, with
/// `key_changes` as its log.
fn directory_says(
    account: &str,
    key: &[u8],
    key_changes: Vec<KeyChange>,
) -> Box<dyn FnMut(RelayFrame) -> RelayFrame + Send> {
    let (account, key) = (account.to_string(), key.to_vec());
    Box::new(move |f| match f {
        RelayFrame::Account {
            req,
            account_id,
            handle,
            access_token,
            ..
        } if account_id == account => RelayFrame::Account {
            req,
            account_id,
            handle,
            identity_key: B64(key.clone()),
            access_token,
            key_changes: key_changes.clone(),
        },
        f => f,
    })
}

/// A key-change log entry from `old` to `new` signed by `signer`.
fn rekey_entry(old: &[u8], new: &[u8], signer: &IdentityKeyPair) -> KeyChange {
    let sig = signer
        .private_key()
        .calculate_signature(&wire::rekey_message(new), &mut rand::rng())
        .unwrap();
    KeyChange {
        old_key: B64(old.to_vec()),
        new_key: B64(new.to_vec()),
        via: KeyChangeVia::Rekey,
        endorsement: Some(B64(sig.to_vec())),
        at: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_names_an_unendorsed_key_cannot_make_a_forgery_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    let relay = plain_relay(&relay_dir).await;
    let (ad, bd, md) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("m"),
    );
    for (dir, handle) in [(&ad, "alice"), (&bd, "bob"), (&md, "mallory")] {
        register(dir, handle, &relay.url).await;
    }
    let (alice_id, bob_id) = (common::account_id(&ad), common::account_id(&bd));
    let alice_key = identity(&ad).identity_key().serialize().to_vec();
    let mallory = identity(&md);
    let mallory_key = mallory.identity_key().serialize().to_vec();
    let rewrite: Rewrite = Arc::new(Mutex::new(pass()));
    let mitm = man_in_the_middle(relay.url.clone(), rewrite.clone()).await;
    let mut bob = Client::start(&bd, &mitm).await;
    add(&mut bob, "alice").await;
    let before = mark_verified(&mut bob, "alice").await;

    // The directory, as bob sees it, says alice's key is mallory's, with a "rekey" signed by
    // mallory rather than by alice's key.
    let forged_rekey = rekey_entry(&alice_key, &mallory_key, &mallory);
    *rewrite.lock().unwrap() = directory_says(&alice_id, &mallory_key, vec![forged_rekey]);
    let cert = forge_certificate(&relay_dir, &alice_id, &mallory_key);
    mallory_sends(&relay.url, &md, &bob_id, &cert, "new phone, it's alice").await;
    bob.expect(|e| matches!(e, Event::Warning(w) if w.text.contains("refused")))
        .await;
    bob.barrier().await;
    assert!(
        bob.history("alice", true)
            .iter()
            .all(|m| m.kind != MessageKind::Text)
    );
    let after = safety(&bd, "alice");
    assert!(after.verified && !after.key_changed);
    assert_eq!(after.display, before.display);
    assert_eq!(
        key_log(&bd, "alice"),
        [KeyEvent::RefusedDirectory, KeyEvent::RefusedCertificate]
    );

    // An operator's reset is the one change without alice's signature that is taken, and it
    // is loud: the change line comes before the message, and the verified mark is gone.
    let reset = KeyChange {
        old_key: B64(alice_key.clone()),
        new_key: B64(mallory_key.clone()),
        via: KeyChangeVia::Reset,
        endorsement: None,
        at: 1,
    };
    *rewrite.lock().unwrap() = directory_says(&alice_id, &mallory_key, vec![reset]);
    mallory_sends(&relay.url, &md, &bob_id, &cert, "reset, it's alice").await;
    let first = bob.receive().await;
    assert_eq!(first.kind, MessageKind::KeyChange);
    assert!(first.text.contains("safety number changed"), "{first:?}");
    let m = loop {
        let m = bob.receive().await;
        if m.kind == MessageKind::Text {
            break m;
        }
    };
    assert_eq!(m.text, "reset, it's alice");
    let after = safety(&bd, "alice");
    assert!(!after.verified && after.key_changed);
    assert_ne!(after.display, before.display);
    assert_eq!(key_log(&bd, "alice").last(), Some(&KeyEvent::Reset));
    let err = bob
        .try_send("alice", true, "who is this?")
        .await
        .unwrap_err();
    assert!(err.contains("safety number has changed"), "{err}");
    bob.stop();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_key_with_trailing_bytes_is_the_same_key() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(&tmp.path().join("relay")).await;
    let ad = tmp.path().join("a");
    register(&ad, "alice", &relay.url).await;
    let alice = identity(&ad);
    let mut padded = alice.identity_key().serialize().to_vec();
    padded.extend_from_slice(&[0, 1, 2]);
    let mut raw = Raw::connect(&relay.url).await;
    let signature = alice
        .private_key()
        .calculate_signature(&wire::auth_message(&raw.nonce), &mut rand::rng())
        .unwrap();
    raw.send(&ClientFrame::Register {
        handle: "alice-again".into(),
        keys: wire::KeyUpload {
            identity_key: B64(padded),
            registration_id: 7,
            // Signed by the key, as the relay checks before anything else about them.
            signed_prekey: crypto::wire_signed(
                &crypto::signed_prekey(1, &alice, SystemTime::now(), &mut rand::rng()).unwrap(),
            )
            .unwrap(),
            kyber_last_resort: crypto::wire_kyber(
                &crypto::kyber_prekey(1, &alice, SystemTime::now(), &mut rand::rng()).unwrap(),
            )
            .unwrap(),
            one_time_prekeys: vec![],
            one_time_kyber: vec![],
        },
        signature: signature.to_vec().into(),
        claim: None,
    })
    .await;
    let seen = raw.until_closed().await;
    assert!(
        seen.iter().any(|f| matches!(
            f,
            RelayFrame::Error {
                code: ErrorCode::HandleTaken,
                ..
            }
        )),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|f| matches!(f, RelayFrame::Authenticated { .. }))
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rekey_the_old_key_gets_no_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(&tmp.path().join("relay")).await;
    let bd = tmp.path().join("b");
    register(&bd, "bob", &relay.url).await;
    let old = identity(&bd);
    let bob_id = common::account_id(&bd);
    common::rekey(&bd, &relay.url).await;
    let new = identity(&bd);

    // Signing in with the old key is refused, so it cannot ask for a certificate.
    let mut raw = Raw::connect(&relay.url).await;
    let signature = old
        .private_key()
        .calculate_signature(&wire::auth_message(&raw.nonce), &mut rand::rng())
        .unwrap();
    raw.send(&ClientFrame::Auth {
        account_id: bob_id,
        signature: signature.to_vec().into(),
    })
    .await;
    assert!(raw.until_closed().await.iter().any(|f| matches!(
        f,
        RelayFrame::Error {
            code: ErrorCode::AuthFailed,
            ..
        }
    )));

    // The new key's connection is certified for the new key only.
    let mut raw = Raw::auth(&relay.url, &bd).await;
    raw.send(&ClientFrame::GetSenderCert { req: 3 }).await;
    let RelayFrame::SenderCert { certificate, .. } = raw
        .expect(|f| matches!(f, RelayFrame::SenderCert { .. }))
        .await
    else {
        unreachable!()
    };
    let cert = SenderCertificate::deserialize(&certificate.0).unwrap();
    assert_eq!(cert.key().unwrap(), *new.public_key());
    assert_ne!(cert.key().unwrap(), *old.public_key());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_certificate_for_another_key_is_not_used_to_send() {
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    let relay = plain_relay(&relay_dir).await;
    let (ad, bd, md) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("m"),
    );
    for (dir, handle) in [(&ad, "alice"), (&bd, "bob"), (&md, "mallory")] {
        register(dir, handle, &relay.url).await;
    }
    let bob_id = common::account_id(&bd);
    // The relay hands alice a certificate naming her account with mallory's key: every
    // message sealed under it would be refused by bob as a forgery.
    let forged = forge_certificate(
        &relay_dir,
        &common::account_id(&ad),
        &identity(&md).identity_key().serialize(),
    );
    let forged = B64(forged.serialized().unwrap().to_vec());
    let rewrite: Rewrite = Arc::new(Mutex::new(Box::new(move |f| match f {
        RelayFrame::SenderCert { req, .. } => RelayFrame::SenderCert {
            req,
            certificate: forged.clone(),
        },
        f => f,
    })));
    let mitm = man_in_the_middle(relay.url.clone(), rewrite).await;
    let mut alice = Client::start(&ad, &mitm).await;
    let err = alice
        .try_send("bob", true, "under the wrong key")
        .await
        .unwrap_err();
    assert!(err.contains("certificate for another key"), "{err}");
    assert!(!sealed_sent_to(&relay, &bob_id));
    alice.stop();
    relay.stop().await;
}
