//! One secret message sealed by alice and opened by bob (sealed sender over an established
//! Double Ratchet session, padded as sotto pads), with sotto's SQLite-backed stores against
//! libsignal's in-memory stores. Their ratio is the cost of persistence. A reaction is sealed
//! the same way (`seal_open/sqlite_reaction`): what one costs a secret thread is what a
//! message costs.
//!
//! Run: `cargo bench --bench crypto`.

use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use libsignal_protocol::{KyberPreKeyStore, PreKeyStore, SignedPreKeyStore};
use sotto::client::content::{self, Content};
use sotto::client::signal_store::Stores;
use sotto::client::store::{Contact, Store};
use sotto::client::{account, crypto};

#[path = "common/mod.rs"]
mod common;

fn plaintext() -> Vec<u8> {
    content::pad(
        Content::text(
            "id".into(),
            "a typical chat message, a line or so long".into(),
            0,
            None,
        )
        .encode(),
    )
}

/// A reaction with ids as long as real ones (UUIDs), padded as it travels.
fn reaction() -> Vec<u8> {
    let id = || uuid::Uuid::new_v4().to_string();
    content::pad(
        Content::of(content::Body::Reaction {
            id: id(),
            target: id(),
            emoji: Some("👍".into()),
            sent_at: 1_700_000_000_000,
        })
        .encode(),
    )
}

fn sqlite_backed(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let (ad, bd) = (tmp.path().join("a"), tmp.path().join("b"));
    common::register(&[(&ad, "alice"), (&bd, "bob")]);
    let (alice, bob) = (Store::open(&ad).unwrap(), Store::open(&bd).unwrap());
    let (a_key, a_reg) = account::identity(&alice).unwrap();
    let (b_key, b_reg) = account::identity(&bob).unwrap();
    let (a_id, b_id) = (
        alice.registration().unwrap().account_id,
        bob.registration().unwrap().account_id,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // bob's bundle, read from his store as the directory would hand it out.
    let bundle = rt.block_on(async {
        let s = Stores::new(bob.conn(), &b_key, b_reg);
        sotto::wire::Bundle {
            account_id: b_id.clone(),
            handle: "bob".into(),
            identity_key: b_key.identity_key().serialize().to_vec().into(),
            registration_id: b_reg,
            signed_prekey: crypto::wire_signed(
                &s.signed.get_signed_pre_key(1.into()).await.unwrap(),
            )
            .unwrap(),
            prekey: Some(
                crypto::wire_prekey(&s.prekeys.get_pre_key(1.into()).await.unwrap()).unwrap(),
            ),
            kyber: crypto::wire_kyber(&s.kyber.get_kyber_pre_key(1.into()).await.unwrap()).unwrap(),
        }
    });
    let (root, cert) = sotto::floor::certificate(&a_id, &a_key);
    let mut rng = rand::rng();
    // Set the session up, and get past the pre-key message: the bench measures the ratchet.
    let seal_open = |rng: &mut rand::rngs::ThreadRng, ptext: &[u8]| {
        rt.block_on(async {
            // As the manager does: the sender's identity and session writes in one transaction.
            let tx = alice.conn().unchecked_transaction().unwrap();
            let mut sa = Stores::new(&tx, &a_key, a_reg);
            let env = crypto::seal(&mut sa, &b_id, &cert, ptext, SystemTime::now(), rng)
                .await
                .unwrap();
            tx.commit().unwrap();
            // As the manager does: decrypt and store in one transaction, then commit.
            let tx = bob.conn().unchecked_transaction().unwrap();
            let mut sb = Stores::new(&tx, &b_key, b_reg);
            let opened = crypto::open(&mut sb, &env, &root, &b_id, SystemTime::now())
                .await
                .unwrap();
            tx.commit().unwrap();
            opened.plaintext.len()
        })
    };
    // Each knows the other's identity key, as after a directory lookup: sessions are only
    // trusted with a contact's recorded key.
    let knows =
        |store: &Store, id: &str, handle: &str, key: &libsignal_protocol::IdentityKeyPair| {
            let contact = Contact {
                account_id: id.into(),
                handle: handle.into(),
                identity_key: key.identity_key().serialize().to_vec(),
                ..common::bob()
            };
            store.upsert_contact(&contact, 0).unwrap();
        };
    knows(&alice, &b_id, "bob", &b_key);
    knows(&bob, &a_id, "alice", &a_key);
    rt.block_on(async {
        let mut sa = Stores::new(alice.conn(), &a_key, a_reg);
        crypto::start_session(&mut sa, &bundle, SystemTime::now(), &mut rng)
            .await
            .unwrap();
    });
    let (text, reaction) = (plaintext(), reaction());
    // Padding makes the two the same size, so neither the relay nor the cost tells them apart.
    assert_eq!(text.len(), reaction.len());
    seal_open(&mut rng, &text);
    c.bench_function("seal_open/sqlite", |b| {
        b.iter(|| seal_open(&mut rng, &text))
    });
    c.bench_function("seal_open/sqlite_reaction", |b| {
        b.iter(|| seal_open(&mut rng, &reaction))
    });
}

fn in_memory(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut pair = rt.block_on(sotto::floor::InMemPair::new());
    let ptext = plaintext();
    c.bench_function("seal_open/in_memory", |b| {
        b.iter(|| rt.block_on(pair.seal_open(&ptext)))
    });
}

criterion_group!(benches, sqlite_backed, in_memory);
criterion_main!(benches);
