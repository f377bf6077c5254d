//! `--mode idle`: the relay's memory per idle authenticated connection.
//!
//! Starts the relay as a child process, registers N accounts over the wire (no client
//! profiles), reads the relay's RSS, opens N connections signed in as those accounts and keeps
//! them idle, reads the RSS again, and prints the difference per connection. Progress goes to
//! stderr; the JSON line to stdout.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures_util::{StreamExt, TryStreamExt, stream};

use crate::Transport;
use crate::fd_limit;
use crate::relay_child::RelayChild;
use crate::wire_client::{self, Account};

/// Registrations in flight: each is one durable commit on the relay, which serializes them,
/// so more would only queue there.
const REGISTER_CONCURRENCY: usize = 32;
/// Sign-ins in flight: enough to keep both the relay's workers and its store busy.
const SIGN_IN_CONCURRENCY: usize = 64;
/// Connections the relay accepts beyond N: the readiness probe and slack.
const EXTRA_SLOTS: usize = 64;
/// Time for the relay's blocking-pool threads and freed buffers to settle before reading its
/// memory. Every connection has had all its frames by then; this only steadies the figure.
const SETTLE: Duration = Duration::from_secs(1);
/// How long one registration or sign-in may take: a relay that stops answering ends the run
/// with an error instead of a hang.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(n: usize, transport: Transport) -> Result<()> {
    let limit = fd_limit::raise_for(n)?;
    let relay = RelayChild::start(&settings(n + EXTRA_SLOTS), transport).await?;
    eprintln!(
        "relay at {} (open-file limit {limit})",
        relay.endpoint.url()
    );

    let t = Instant::now();
    let url = &relay.endpoint;
    let accounts: Vec<Account> = stream::iter(0..n)
        .map(|i| {
            within(
                "a registration",
                wire_client::register(url, format!("idle{i}")),
            )
        })
        .buffer_unordered(REGISTER_CONCURRENCY)
        .try_collect()
        .await
        .context("registering the idle accounts")?;
    eprintln!(
        "registered {n} accounts in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let before = relay.memory()?;

    let t = Instant::now();
    let mut signing_in = stream::iter(&accounts)
        .map(|a| within("a sign-in", wire_client::sign_in(url, a)))
        .buffer_unordered(SIGN_IN_CONCURRENCY);
    let mut conns = Vec::with_capacity(n);
    while let Some(ws) = signing_in.next().await {
        let ws =
            ws.with_context(|| format!("signing in idle connection {} of {n}", conns.len() + 1))?;
        conns.push(ws);
    }
    drop(signing_in);
    eprintln!(
        "{n} connections signed in in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let after = relay.memory()?;

    let per_conn = (after.rss_kb as f64 - before.rss_kb as f64) / n as f64;
    println!(
        "{}",
        serde_json::json!({
            "mode": "idle",
            "transport": transport.name(),
            "clients": n,
            "relay_rss_before_kb": before.rss_kb,
            "relay_rss_after_kb": after.rss_kb,
            "rss_per_conn_kb": (per_conn * 10.0).round() / 10.0,
            "relay_peak_rss_kb": after.peak_kb,
        })
    );
    drop(conns);
    eprintln!(
        "this tool's own peak RSS (client ends): {} KiB",
        crate::peak_rss_kb()
    );
    relay.stop().await
}

/// Every client comes from 127.0.0.1: the per-address caps and the registration rate would
/// refuse them, so all caps are `max` and registrations unlimited.
fn settings(max: usize) -> String {
    format!(
        "max_connections = {max}\nmax_connections_per_address = {max}\n\
         max_unauthenticated_per_address = {max}\nmax_signing_in = {max}\n\
         max_anonymous = {max}\nregistrations_per_ip_per_hour = 0\n"
    )
}

pub(crate) async fn within<T>(what: &str, step: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, step)
        .await
        .map_err(|_| {
            anyhow!("{what} took more than {STEP_TIMEOUT:?}: the relay stopped answering")
        })?
}
