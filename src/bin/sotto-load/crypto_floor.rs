//! The crypto floor of `--compare`: libsignal's in-memory seal + open rate, the ceiling the
//! secret mode is measured against.
//!
//! Secret mode seals on the senders' threads and opens on the receivers' at the same time,
//! so it uses every core. The floor does too: one alice/bob pair per core, all started
//! together. A floor on one thread would let the real run look up to that many times better
//! than it is. The one-thread rate is reported beside it.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::Args;

/// Seal + open rates, in messages per second.
pub struct Floor {
    /// Every core, one pair each: what the ratio is taken against.
    pub all_cores: f64,
    pub threads: usize,
    /// One pair on one thread.
    pub one_thread: f64,
}

pub async fn crypto_floor(args: &Args) -> Result<Floor> {
    let (size, n) = (args.size, (args.clients * args.messages).clamp(500, 5_000));
    tokio::task::spawn_blocking(move || {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let one = rate(1, size, n)?;
        let all = rate(threads, size, n)?;
        Ok(Floor {
            all_cores: all,
            threads,
            one_thread: one,
        })
    })
    .await?
}

/// Seals and opens `n` messages on each of `threads` threads at once; returns the total rate.
fn rate(threads: usize, size: usize, n: usize) -> Result<f64> {
    let start = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || seal_open_many(size, n, &start))
        })
        .collect();
    let mut longest = Duration::ZERO;
    for w in workers {
        let took = w
            .join()
            .map_err(|_| anyhow::anyhow!("a crypto floor thread panicked"))??;
        longest = longest.max(took);
    }
    Ok((threads * n) as f64 / longest.as_secs_f64())
}

/// One pair on this thread: sets it up, waits for the others, then times `n` seal + opens.
fn seal_open_many(size: usize, n: usize, start: &Barrier) -> Result<Duration> {
    // libsignal's store futures are not Send: each pair runs on a runtime of its own thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("cannot start a runtime for the crypto floor")?;
    rt.block_on(async {
        let mut pair = sotto::floor::InMemPair::new().await;
        let plaintext = sotto::client::content::pad(
            sotto::client::content::Content::text("id".into(), "x".repeat(size), 0, None).encode(),
        );
        start.wait();
        let t = Instant::now();
        for _ in 0..n {
            pair.seal_open(&plaintext).await;
        }
        Ok(t.elapsed())
    })
}
