//! Measures group fan-out at the relay (docs/performance.md, "Group fan-out"): an in-process
//! relay on 127.0.0.1 (plain ws://), 100 registered recipients and a sender with libsignal
//! sessions to each. Prints the bytes of a `send_multi` and of each stored copy per group
//! size, then, for a group of 50, the time from `send_multi` to its `ok` (p50/p99 over
//! ROUNDS sends, one at a time) against the same 50 recipients sent 1:1 `send_sealed`
//! envelopes, and the process CPU per send (the relay's work: the sender is idle meanwhile).
//!
//! `cargo run --release --example fanout -- SCRATCH_DIR [ROUNDS]`

use std::path::Path;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use libsignal_protocol::{
    CiphertextMessageType, ContentHint, InMemSignalProtocolStore, SenderCertificate, SessionStore,
    UnidentifiedSenderMessageContent, process_prekey_bundle, sealed_sender_multi_recipient_encrypt,
};
use sotto::client::store::Store;
use sotto::client::{account, crypto};
use sotto::relay::{self, RelayConfig};
use sotto::wire::{self, ClientFrame, RelayFrame, SealedRecipient};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const MEMBERS: usize = 100;
/// A padded text message's plaintext, as the client pads it.
const CONTENT: usize = 160;

async fn recv(ws: &mut Ws) -> Result<RelayFrame> {
    loop {
        match ws.next().await.context("closed")?? {
            Message::Text(t) => return Ok(RelayFrame::decode(t.as_bytes())?),
            _ => continue,
        }
    }
}

async fn send(ws: &mut Ws, f: &ClientFrame) -> Result<()> {
    Ok(ws.send(Message::text(f.encode())).await?)
}

/// The next `ok`, skipping other frames; an error frame is an error.
async fn ok(ws: &mut Ws) -> Result<u64> {
    loop {
        match recv(ws).await? {
            RelayFrame::Ok { req } => return Ok(req),
            RelayFrame::Error { message, .. } => bail!("refused: {message}"),
            _ => continue,
        }
    }
}

async fn connect(url: &str) -> Result<(Ws, Vec<u8>)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let RelayFrame::Challenge { nonce, .. } = recv(&mut ws).await? else {
        bail!("no challenge");
    };
    Ok((ws, nonce.0))
}

async fn sign_in(url: &str, dir: &Path) -> Result<Ws> {
    let (mut ws, nonce) = connect(url).await?;
    let store = Store::open(dir)?;
    let (identity, _) = account::identity(&store)?;
    let signature = identity
        .private_key()
        .calculate_signature(&wire::auth_message(&nonce), &mut rand::rng())?;
    let account_id = store.registration()?.account_id;
    send(
        &mut ws,
        &ClientFrame::Auth {
            account_id,
            signature: signature.to_vec().into(),
        },
    )
    .await?;
    Ok(ws)
}

fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(scratch) = args.next() else {
        bail!("usage: fanout SCRATCH_DIR [ROUNDS]");
    };
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(200);
    let scratch = std::path::PathBuf::from(scratch);
    let mut config = RelayConfig::default();
    config.rate.registrations_per_ip_per_hour = 0;
    config.rate.bundles_per_requester_per_minute = 0;
    config.rate.lookups_per_minute = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", listener.local_addr()?);
    let relay_dir = scratch.join("relay");
    tokio::spawn(async move {
        let _ = relay::run(listener, &relay_dir, config, Default::default()).await;
    });
    let dirs: Vec<_> = (0..=MEMBERS)
        .map(|i| scratch.join(format!("p{i}")))
        .collect();
    for (i, dir) in dirs.iter().enumerate() {
        let store = Store::open(dir)?;
        account::init(
            &store,
            &format!("m{i}"),
            &url,
            SystemTime::now(),
            &mut rand::rng(),
        )
        .await?;
    }
    let alice = Store::open(&dirs[0])?;
    let mut signal = InMemSignalProtocolStore::new(account::identity(&alice)?.0, 1)?;
    let mut ws = sign_in(&url, &dirs[0]).await?;
    send(&mut ws, &ClientFrame::GetSenderCert { req: 1 }).await?;
    let cert = loop {
        if let RelayFrame::SenderCert { certificate, .. } = recv(&mut ws).await? {
            break SenderCertificate::deserialize(&certificate.0)?;
        }
    };
    let mut peers = Vec::new();
    for dir in &dirs[1..] {
        let id = Store::open(dir)?.registration()?.account_id;
        send(
            &mut ws,
            &ClientFrame::FetchBundle {
                req: 2,
                account_id: id.clone(),
            },
        )
        .await?;
        let bundle = loop {
            if let RelayFrame::Bundle { bundle, .. } = recv(&mut ws).await? {
                break bundle;
            }
        };
        process_prekey_bundle(
            &crypto::address(&id),
            &mut signal.session_store,
            &mut signal.identity_store,
            &crypto::bundle(&bundle)?,
            SystemTime::now(),
            &mut rand::rng(),
        )
        .await?;
        send(
            &mut ws,
            &ClientFrame::Lookup {
                req: 3,
                handle: None,
                account_id: Some(id.clone()),
            },
        )
        .await?;
        let token = loop {
            if let RelayFrame::Account { access_token, .. } = recv(&mut ws).await? {
                break access_token;
            }
        };
        peers.push(SealedRecipient {
            to: id,
            access_token: token,
            recipient_key: None,
        });
    }
    let usmc = UnidentifiedSenderMessageContent::new(
        CiphertextMessageType::SenderKey,
        cert.clone(),
        vec![7; CONTENT],
        ContentHint::Default,
        None,
    )?;
    let seal = |n: usize| {
        let addresses: Vec<_> = peers[..n].iter().map(|p| crypto::address(&p.to)).collect();
        let signal = &signal;
        let usmc = &usmc;
        async move {
            let mut sessions = Vec::new();
            for a in &addresses {
                sessions.push(signal.load_session(a).await?.context("no session")?);
            }
            let envelope = sealed_sender_multi_recipient_encrypt(
                &addresses.iter().collect::<Vec<_>>(),
                &sessions.iter().collect::<Vec<_>>(),
                [],
                usmc,
                &signal.identity_store,
                &mut rand::rng(),
            )
            .await?;
            anyhow::Ok(envelope)
        }
    };
    let multi = |req: u64, envelope: Vec<u8>, n: usize| ClientFrame::SendMulti {
        req,
        envelope: envelope.into(),
        recipients: peers[..n].to_vec(),
        expires_at: None,
        online_only: false,
    };
    println!("content {CONTENT} bytes; sizes per group (SSv2 envelope, frame, each stored copy):");
    let copy = {
        let one = seal(1).await?;
        let parsed = libsignal_protocol::SealedSenderV2SentMessage::parse(&one)?;
        let r = parsed.recipients.values().next().context("no recipient")?;
        parsed
            .received_message_parts_for_recipient(r)
            .as_ref()
            .concat()
            .len()
    };
    for n in [1, 2, 10, 50, 100] {
        let envelope = seal(n).await?;
        let bytes = envelope.len();
        let frame = multi(0, envelope, n).encode().len();
        println!("  {n:>3} recipients: envelope {bytes} B, frame {frame} B, copy {copy} B");
    }

    let (mut anon, _) = connect(&url).await?;
    send(&mut anon, &ClientFrame::Anonymous).await?;
    while !matches!(recv(&mut anon).await?, RelayFrame::AnonymousOk) {}
    let n = 50;
    let mut envelopes = Vec::new();
    for _ in 0..rounds {
        envelopes.push(seal(n).await?);
    }
    let mut times = Vec::new();
    let cpu = cpu_secs();
    let wall = Instant::now();
    for (req, envelope) in envelopes.into_iter().enumerate() {
        let t = Instant::now();
        send(&mut anon, &multi(req as u64, envelope, n)).await?;
        ok(&mut anon).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (cpu, wall) = (cpu_secs() - cpu, wall.elapsed().as_secs_f64());
    times.sort_by(f64::total_cmp);
    println!(
        "send_multi to {n}: p50 {:.2} ms, p99 {:.2} ms; CPU {:.2} ms per send ({:.0} µs per copy); {:.0} sends/s",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        cpu * 1000.0 / rounds as f64,
        cpu * 1e6 / (rounds * n) as f64,
        rounds as f64 / wall
    );

    // The same 50 recipients, 1:1: 50 sealed envelopes of a copy's size, pipelined, until
    // the last `ok`.
    let mut times = Vec::new();
    let cpu = cpu_secs();
    for round in 0..rounds {
        let t = Instant::now();
        for (i, p) in peers[..n].iter().enumerate() {
            let f = ClientFrame::SendSealed {
                req: (round * n + i) as u64,
                to: p.to.clone(),
                access_token: p.access_token.clone(),
                envelope: vec![9; copy].into(),
                expires_at: None,
                recipient_key: None,
                online_only: false,
            };
            send(&mut anon, &f).await?;
        }
        for _ in 0..n {
            ok(&mut anon).await?;
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let cpu = cpu_secs() - cpu;
    times.sort_by(f64::total_cmp);
    println!(
        "{n} x send_sealed: p50 {:.2} ms, p99 {:.2} ms; CPU {:.2} ms per round",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        cpu * 1000.0 / rounds as f64,
    );
    Ok(())
}
