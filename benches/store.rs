//! The client store on the message path:
//! - `store/receive`: a received message stored with its session update, in one transaction
//!   committed to disk (what the manager does before acking);
//! - `store/newest_page`: the newest page (100) of a thread holding 100,000 messages;
//! - `store/mark_sent`: one of our messages marked `sent` (the relay's `ok`) in that store.
//!
//! Run: `cargo bench --bench store`.

use criterion::{Criterion, criterion_group, criterion_main};
use sotto::client::store::{MessageState, Store};

#[path = "common/mod.rs"]
mod common;

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    common::fill_bob(&store, 100_000);
    // A session record as large as a real one after some ratchet steps.
    let session = vec![7u8; 1_800];
    let mut next = 1_000_000i64;
    c.bench_function("store/receive", |b| {
        b.iter(|| {
            next += 1;
            let tx = store.conn().unchecked_transaction().unwrap();
            tx.execute(
                "INSERT OR REPLACE INTO sessions (address, record) VALUES ('bob-account.1', ?1)",
                [&session],
            )
            .unwrap();
            store
                .insert_message("bob-account", &common::message(next, true), 0)
                .unwrap();
            tx.commit().unwrap();
        })
    });
    c.bench_function("store/newest_page", |b| {
        b.iter(|| store.page("bob-account", true, None, 100).unwrap().len())
    });
    // `fill_bob` makes every third message ours; the newest of them, as after a send.
    let ours = common::message(99_999, true).id;
    c.bench_function("store/mark_sent", |b| {
        b.iter(|| store.set_state(&ours, MessageState::Sent).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
