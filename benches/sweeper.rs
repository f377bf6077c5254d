//! Disappearing messages, measured:
//! - `sweep/100k_same_second`: one sweep deleting 100,000 messages that expire at the same
//!   second (one transaction, secure delete, WAL truncated), criterion median;
//! - expiry precision: 1,000 messages with random timers of 5 to 10 s under the real sweeper
//!   and the real clock; how late after `expires_at` each was reported deleted, p50/p99.
//!
//! Run: `cargo bench --bench sweeper`.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use rand::Rng;
use sotto::client::clock::Clock;
use sotto::client::store::{Message, MessageKind, MessageState, Store};
use sotto::client::sweeper::{self, Deadlines};
use tokio_util::sync::CancellationToken;

const SWEPT: usize = 100_000;

#[path = "common/mod.rs"]
mod common;

fn store_with_bob(dir: &Path) -> Store {
    let store = Store::open(dir).unwrap();
    store.upsert_contact(&common::bob(), 0).unwrap();
    store
}

fn fill(store: &Store, expiries: impl Iterator<Item = u64>) {
    let tx = store.conn().unchecked_transaction().unwrap();
    for (i, at) in expiries.enumerate() {
        let m = Message {
            seq: 0,
            id: format!("m{i}"),
            contact: "bob".into(),
            secret: true,
            outgoing: true,
            text: format!("disappearing message number {i}, long enough to look like a chat line"),
            sent_at: 0,
            state: MessageState::Sent,
            kind: MessageKind::Text,
            timer: Some(5),
            expires_at: Some(at),
            reply: None,
            reactions: Vec::new(),
            edited: false,
            deleted: false,
            attachment: None,
            author: None,
        };
        store.insert_message("bob-account", &m, 0).unwrap();
    }
    tx.commit().unwrap();
}

fn sweep_100k(c: &mut Criterion) {
    let mut group = c.benchmark_group("sweep");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(60));
    group.bench_function("100k_same_second", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let tmp = tempfile::tempdir().unwrap();
                let store = store_with_bob(tmp.path());
                fill(&store, std::iter::repeat_n(1_000, SWEPT));
                let start = Instant::now();
                let gone = store.delete_expired(1_000).unwrap();
                total += start.elapsed();
                assert_eq!(gone.len(), SWEPT);
            }
            total
        });
    });
    group.finish();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Lateness of deletion after `expires_at`, in ms, for 1,000 random timers.
fn precision() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_bob(tmp.path());
    let start = now_ms() + 1_000;
    let mut rng = rand::rng();
    let expiries: Vec<u64> = (0..1_000)
        .map(|_| start + rng.random_range(5_000..10_000))
        .collect();
    fill(&store, expiries.iter().copied());
    let mut lateness = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let dir = tmp.path().to_path_buf();
        let token = cancel.clone();
        let task = tokio::spawn(async move {
            sweeper::run(&dir, Clock::system(), Deadlines::default(), tx, token)
                .await
                .unwrap();
        });
        let mut late = Vec::with_capacity(expiries.len());
        while late.len() < expiries.len() {
            let gone = rx.recv().await.unwrap();
            let seen = now_ms();
            for e in gone {
                let i: usize = e.id[1..].parse().unwrap();
                late.push(seen.saturating_sub(expiries[i]));
            }
        }
        cancel.cancel();
        task.await.unwrap();
        late
    });
    lateness.sort_unstable();
    println!(
        "expiry precision over {} messages (timers 5-10 s): p50 {} ms, p99 {} ms, max {} ms",
        lateness.len(),
        percentile(&lateness, 0.50),
        percentile(&lateness, 0.99),
        lateness.last().unwrap()
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    sweep_100k(&mut c);
    c.final_summary();
    precision();
}
