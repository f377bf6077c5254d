//! Search, measured in a store of 100,000 texts of chat-like words (a skewed vocabulary: a
//! few words in most messages, most words in few):
//! - `search/common_word`: "the", in most messages; the newest 200 (the chat screen's limit);
//! - `search/rare_word`: a word in 10 messages;
//! - `search/prefix`: "mee", the start of several words;
//! - `search/common_word_one_thread`: "the" in bob's secret thread only;
//! - `search/store_message/{indexed,unindexed}`: one message stored in its own transaction
//!   committed to disk (as the client stores each one), with the index's trigger and without
//!   it: what the index adds to storing a message;
//! - `search/store_100_messages/{indexed,unindexed}`: 100 messages under one commit, where the
//!   sync matters less and the index's CPU cost shows.
//!
//! Run: `cargo bench --bench search`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sotto::client::manager::SEARCH_LIMIT;
use sotto::client::search::Query;
use sotto::client::store::{Message, Store};

#[path = "common/mod.rs"]
mod common;

const MESSAGES: i64 = 100_000;

/// Words in order of frequency: word `k` is drawn about 1/(k+1) as often as the first.
const WORDS: &[&str] = &[
    "the", "you", "to", "a", "and", "is", "it", "at", "in", "we", "for", "on", "me", "meet", "ok",
    "see", "can", "time", "now", "later", "today", "tomorrow", "meeting", "lunch", "coffee",
    "call", "home", "work", "train", "late", "sorry", "thanks", "great", "good", "night",
    "morning", "weekend", "plans", "dinner", "movie", "book", "read", "send", "photo", "where",
    "when", "why", "how", "maybe", "sure", "yes", "no", "please", "friday", "monday", "office",
    "station", "bring", "slides", "review", "draft", "deadline", "meetup", "meerkat", "rain",
    "sun", "walk", "park", "city", "trip", "flight", "hotel", "ticket",
];

/// A message of 6 to 14 words drawn from `WORDS` by a fixed sequence; every 10,000th also
/// holds the rare word.
fn text(i: i64) -> String {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let n = 6 + next() % 9;
    let mut words: Vec<&str> = (0..n)
        .map(|_| {
            // Zipf-like: the inverse of a uniform draw over the harmonic weights, roughly.
            let u = (next() % 1_000_000) as f64 / 1_000_000.0;
            let k = ((WORDS.len() as f64 + 1.0).powf(u) - 1.0) as usize;
            WORDS[k.min(WORDS.len() - 1)]
        })
        .collect();
    if i % 10_000 == 5_000 {
        words.push("zanzibar");
    }
    words.join(" ")
}

fn query(words: &str) -> Query {
    Query::parse(words).unwrap()
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    common::fill_bob_with(&store, MESSAGES, |m| Message {
        text: text(m.id["bench-".len()..].parse().unwrap()),
        ..m
    });
    let found = |q: &str| store.search(&query(q), None, SEARCH_LIMIT).unwrap().len();
    eprintln!(
        "hits: the {}, zanzibar {}, mee {}",
        found("the"),
        found("zanzibar"),
        found("mee")
    );
    let mut group = c.benchmark_group("search");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(10));
    for (name, words) in [
        ("common_word", "the"),
        ("rare_word", "zanzibar"),
        ("prefix", "mee"),
    ] {
        let q = query(words);
        group.bench_function(name, |b| {
            b.iter(|| store.search(&q, None, SEARCH_LIMIT).unwrap().len())
        });
    }
    let q = query("the");
    group.bench_function("common_word_one_thread", |b| {
        b.iter(|| {
            store
                .search(&q, Some(("bob-account", true)), SEARCH_LIMIT)
                .unwrap()
                .len()
        })
    });

    // Storing: the same store, then the same with the index's insert trigger dropped.
    let mut next = MESSAGES;
    let mut store_some = |store: &Store, n: usize| {
        let tx = store.conn().unchecked_transaction().unwrap();
        for _ in 0..n {
            next += 1;
            let m = Message {
                text: text(next),
                ..common::message(next, true)
            };
            store.insert_message("bob-account", &m, 0).unwrap();
        }
        tx.commit().unwrap();
    };
    for indexed in ["indexed", "unindexed"] {
        if indexed == "unindexed" {
            store
                .conn()
                .execute_batch("DROP TRIGGER messages_fts_insert")
                .unwrap();
        }
        group.bench_function(format!("store_message/{indexed}"), |b| {
            b.iter(|| store_some(&store, 1))
        });
        // The CPU's share: 100 messages under one commit.
        group.bench_function(format!("store_100_messages/{indexed}"), |b| {
            b.iter(|| store_some(&store, 100))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
