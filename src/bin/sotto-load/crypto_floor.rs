//! The crypto floor of `--compare`: libsignal's in-memory seal + open rate, the ceiling the
//! secret mode is measured against.

use std::time::Instant;

use crate::Args;

/// libsignal's in-memory seal + open rate for padded messages of the same size.
pub async fn crypto_floor(args: &Args) -> f64 {
    let mut pair = sotto::floor::InMemPair::new().await;
    let text = "x".repeat(args.size);
    let plaintext = sotto::client::content::pad(
        sotto::client::content::Content::text("id".into(), text, 0, None).encode(),
    );
    let n = (args.clients * args.messages).clamp(500, 5_000);
    let start = Instant::now();
    for _ in 0..n {
        pair.seal_open(&plaintext).await;
    }
    n as f64 / start.elapsed().as_secs_f64()
}
