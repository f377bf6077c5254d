//! sotto-load: throughput and latency of sotto against the floors it runs on, on loopback.
//!
//! `--mode raw` is a bare tokio-tungstenite forwarder (no persistence, no crypto: the
//! transport floor); `normal` and `secret` are the real relay with real clients (each a
//! session manager with its own store), N senders to N receivers, each message stored and
//! acknowledged by its receiver. Latency runs from the sender's send call to the receiver's
//! stored (and, for secret, decrypted) message. Everything starts in this process; the
//! RSS reported is this process's peak, relay and clients together. Prints JSON lines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use sotto::client::manager::{self, Command, ConnState, Event, ManagerHandle};
use sotto::client::store::Store;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

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
    let floor = crypto_floor(&args).await;
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
        Mode::Raw => raw(args).await,
        Mode::Normal => relayed(false, args).await,
        Mode::Secret => relayed(true, args).await,
    }
}

/// libsignal's in-memory seal + open rate for padded messages of the same size.
async fn crypto_floor(args: &Args) -> f64 {
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

/// The transport floor: a forwarder that routes binary frames `[to: u32][body]` between
/// WebSocket connections, which name themselves with a first text frame.
async fn raw(args: &Args) -> Result<Outcome> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", listener.local_addr()?);
    let routes: Arc<Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>> = Arc::default();
    let stop = CancellationToken::new();
    let (r, s) = (routes.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = s.cancelled() => return,
                a = listener.accept() => match a { Ok((st, _)) => st, Err(_) => continue },
            };
            let routes = r.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let Some(Ok(Message::Text(name))) = ws.next().await else {
                    return;
                };
                let me: u32 = name.as_str().parse().unwrap_or(u32::MAX);
                let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
                routes.lock().unwrap().insert(me, tx);
                loop {
                    tokio::select! {
                        out = rx.recv() => match out {
                            Some(b) => if ws.send(Message::binary(b)).await.is_err() { return },
                            None => return,
                        },
                        inc = ws.next() => match inc {
                            Some(Ok(Message::Binary(b))) if b.len() >= 4 => {
                                let to = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                                let target = routes.lock().unwrap().get(&to).cloned();
                                if let Some(t) = target {
                                    let _ = t.send(b.to_vec()).await;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        },
                    }
                }
            });
        }
    });
    let (n, m) = (args.clients, args.messages);
    let base = Instant::now();
    let mut receivers = Vec::new();
    for i in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
        ws.send(Message::text((n + i).to_string())).await?;
        receivers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(m);
            while lat.len() < m {
                let Some(Ok(Message::Binary(b))) = ws.next().await else {
                    break;
                };
                let sent = u64::from_be_bytes(b[4..12].try_into().unwrap_or([0; 8]));
                lat.push((base.elapsed().as_micros() as u64).saturating_sub(sent));
            }
            (lat, base.elapsed())
        }));
    }
    let mut senders = Vec::new();
    for i in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
        ws.send(Message::text(i.to_string())).await?;
        let size = args.size;
        senders.push(tokio::spawn(async move {
            for _ in 0..m {
                let mut b = Vec::with_capacity(12 + size);
                b.extend_from_slice(&((n + i) as u32).to_be_bytes());
                b.extend_from_slice(&(base.elapsed().as_micros() as u64).to_be_bytes());
                b.resize(12 + size, b'x');
                if ws.send(Message::binary(b)).await.is_err() {
                    break;
                }
            }
            // Keep the connection open until the receivers are done.
            ws
        }));
    }
    // Wait until every receiver is registered before timing: they connected first.
    let start = base.elapsed();
    let mut lat = Vec::new();
    let mut end = Duration::ZERO;
    for r in receivers {
        let (l, t) = r.await?;
        lat.extend(l);
        end = end.max(t);
    }
    for s in senders {
        drop(s.await?);
    }
    stop.cancel();
    Ok(Outcome {
        msgs_per_sec: lat.len() as f64 / (end - start).as_secs_f64(),
        latencies_us: lat,
    })
}

async fn wait_online(m: &mut ManagerHandle) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, m.events.recv()).await {
            Ok(Some(Event::Connection(ConnState::Online))) => return Ok(()),
            Ok(Some(_)) => {}
            _ => bail!("a client did not come online"),
        }
    }
}

/// The real relay with real clients: N senders, each sending M messages to its receiver.
async fn relayed(secret: bool, args: &Args) -> Result<Outcome> {
    let tmp = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let (relay_dir, token) = (tmp.path().join("relay"), stop.clone());
    let relay = tokio::spawn(async move {
        sotto::relay::run(listener, &relay_dir, Default::default(), token).await
    });
    let n = args.clients;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..n {
        for (role, list) in [("s", &mut senders), ("r", &mut receivers)] {
            let dir = tmp.path().join(format!("{role}{i}"));
            let store = Store::open(&dir)?;
            sotto::client::account::init(
                &store,
                &format!("{role}{i}"),
                &url,
                std::time::SystemTime::now(),
                &mut rand::rng(),
            )
            .await
            .context("registering a load client")?;
            drop(store);
            let mut m = manager::spawn(&dir, None)?;
            wait_online(&mut m).await?;
            list.push(m);
        }
    }
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let m = args.messages;
    let text = "x".repeat(args.size);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut rx in receivers {
        let sent_at = sent_at.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(m);
            while lat.len() < m {
                match rx.events.recv().await {
                    Some(Event::Message(msg)) if !msg.outgoing => {
                        let at = sent_at.lock().unwrap().get(&msg.id).copied();
                        if let Some(at) = at {
                            lat.push(at.elapsed().as_micros() as u64);
                        }
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            (lat, Instant::now(), rx)
        }));
    }
    let mut feeders = Vec::new();
    for (i, tx) in senders.into_iter().enumerate() {
        let (sent_at, text) = (sent_at.clone(), text.clone());
        feeders.push(tokio::spawn(async move {
            for k in 0..m {
                let id = format!("{i}-{k}-{}", uuid::Uuid::new_v4());
                sent_at.lock().unwrap().insert(id.clone(), Instant::now());
                let cmd = Command::Send {
                    id,
                    to: format!("r{i}"),
                    secret,
                    text: text.clone(),
                };
                if tx.commands.send(cmd).await.is_err() {
                    break;
                }
            }
            tx
        }));
    }
    let mut lat = Vec::new();
    let mut end = start;
    let mut keep = Vec::new();
    for t in tasks {
        let (l, at, rx) = t.await?;
        lat.extend(l);
        end = end.max(at);
        keep.push(rx);
    }
    let elapsed = end - start;
    for f in feeders {
        keep.push(f.await?);
    }
    tokio::task::spawn_blocking(move || keep.into_iter().for_each(ManagerHandle::shutdown)).await?;
    stop.cancel();
    relay.await??;
    Ok(Outcome {
        msgs_per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        latencies_us: lat,
    })
}
