//! What several benchmarks need: registered profiles made against a relay that lives only
//! for the registration, and a contact with many messages.
#![allow(dead_code)]

use std::path::Path;
use std::time::SystemTime;

use sotto::client::account;
use sotto::client::store::{Contact, Message, MessageKind, MessageState, Store};

/// Registers each (directory, handle) at one in-process relay that is gone afterwards.
pub fn register(profiles: &[(&Path, &str)]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let relay_dir = tempfile::tempdir().unwrap();
        let (dir, token) = (relay_dir.path().to_path_buf(), stop.clone());
        let relay = tokio::spawn(async move {
            sotto::relay::run(listener, &dir, Default::default(), token)
                .await
                .unwrap();
        });
        for (dir, handle) in profiles {
            let store = Store::open(dir).unwrap();
            account::init(&store, handle, &url, SystemTime::now(), &mut rand::rng())
                .await
                .unwrap();
        }
        stop.cancel();
        relay.await.unwrap();
    });
}

pub fn bob() -> Contact {
    Contact {
        account_id: "bob-account".into(),
        handle: "bob".into(),
        identity_key: vec![5; 33],
        access_token: vec![0; 16],
        verified: false,
        key_changed: false,
        blocked: false,
    }
}

pub fn message(i: i64, secret: bool) -> Message {
    Message {
        seq: 0,
        id: format!("bench-{i}"),
        contact: "bob".into(),
        secret,
        outgoing: i % 3 == 0,
        text: format!("message {i}: the quick brown fox jumps over the lazy dog, again and again"),
        sent_at: 1_700_000_000_000 + i as u64 * 1000,
        state: MessageState::Sent,
        kind: MessageKind::Text,
        timer: None,
        expires_at: None,
        reply: None,
        reactions: Vec::new(),
        edited: false,
        deleted: false,
        attachment: None,
        author: None,
    }
}

/// Adds contact bob with `n` messages alternating between his threads, in one transaction.
pub fn fill_bob(store: &Store, n: i64) {
    fill_bob_with(store, n, |m| m);
}

/// `fill_bob`, each message first passed through `shape` (to give it other text).
pub fn fill_bob_with(store: &Store, n: i64, shape: impl Fn(Message) -> Message) {
    store.upsert_contact(&bob(), 0).unwrap();
    let tx = store.conn().unchecked_transaction().unwrap();
    for i in 0..n {
        store
            .insert_message("bob-account", &shape(message(i, i % 2 == 0)), 0)
            .unwrap();
    }
    tx.commit().unwrap();
}
