//! sotto-load: throughput and latency of sotto against the floors it runs on, on loopback.
//!
//! `--mode raw` is a bare tokio-tungstenite forwarder (no persistence, no crypto: the
//! transport floor); `normal` and `secret` are the real relay with real clients (each a
//! session manager with its own store), N senders to N receivers, each message stored and
//! acknowledged by its receiver. Latency runs from the sender's send call to the receiver's
//! stored (and, for secret, decrypted) message. Everything starts in this process; the
//! RSS reported is this process's peak, relay and clients together. Prints JSON lines.

mod crypto_floor;
mod raw;
mod relayed;

use std::collections::HashMap;

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};

#[derive(Parser)]
#[command(about = "Measure sotto's throughput and latency on loopback")]
struct Args {
    #[arg(long, value_enum, default_value = "secret")]
    mode: Mode,
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Messages per sender.
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Output JSON lines (the only format; accepted for scripts that pass it).
    #[arg(long)]
    json: bool,
    /// Run raw, normal and secret with the same parameters, then the crypto floor, and print
    /// the throughput ratios.
    #[arg(long)]
    compare: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Mode {
    Raw,
    Normal,
    Secret,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Normal => "normal",
            Mode::Secret => "secret",
        }
    }
}

/// What a run measured.
struct Outcome {
    msgs_per_sec: f64,
    latencies_us: Vec<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn report(mode: &str, args: &Args, mut out: Outcome) -> f64 {
    out.latencies_us.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "mode": mode,
            "clients": args.clients,
            "messages": args.messages,
            "size": args.size,
            "msgs_per_sec": (out.msgs_per_sec * 10.0).round() / 10.0,
            "p50_us": percentile(&out.latencies_us, 0.50),
            "p99_us": percentile(&out.latencies_us, 0.99),
            "relay_peak_rss_kb": peak_rss_kb(),
        })
    );
    out.msgs_per_sec
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.messages == 0 {
        bail!("--clients and --messages must be at least 1");
    }
    if args.size > sotto::client::content::MAX_TEXT_BYTES {
        bail!(
            "--size is at most {} bytes",
            sotto::client::content::MAX_TEXT_BYTES
        );
    }
    if !args.compare {
        let out = run(args.mode, &args).await?;
        report(args.mode.name(), &args, out);
        return Ok(());
    }
    let mut rates = HashMap::new();
    for mode in [Mode::Raw, Mode::Normal, Mode::Secret] {
        let out = run(mode, &args).await?;
        rates.insert(mode.name(), report(mode.name(), &args, out));
    }
    let floor = crypto_floor::crypto_floor(&args).await;
    println!(
        "{}",
        serde_json::json!({"mode": "crypto_floor", "msgs_per_sec": floor.round()})
    );
    println!(
        "{}",
        serde_json::json!({
            "normal_vs_raw": rates["normal"] / rates["raw"],
            "secret_vs_floor": rates["secret"] / floor,
        })
    );
    Ok(())
}

async fn run(mode: Mode, args: &Args) -> Result<Outcome> {
    match mode {
        Mode::Raw => raw::run(args).await,
        Mode::Normal => relayed::run(false, args).await,
        Mode::Secret => relayed::run(true, args).await,
    }
}
