//! The attacks of `--mode hostile` (issue 18), each run by an attacker from loopback
//! addresses of its own (`127.0.N.x` for phase N; the legitimate users are on 127.0.0.1, the
//! attacker's set-up on 127.0.0.2) until its phase's `stop`, counting what the relay answered
//! in a `Tally`. Owns the attacker's accounts and the victim; knows nothing of the legitimate
//! users but alice's account id (the target of the bundle drain).
//!
//! An attack keeps going after the relay refuses it: what is measured is what the relay's
//! limits leave of the attack, and what that costs the legitimate users.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use sotto::tls::Endpoint;
use sotto::wire::{B64, ClientFrame, RelayFrame, SignedKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::hostile_tally::Tally;
use crate::wire_client::{self, Account, Ws};

/// Where the attacker registers its accounts and queues the mail it sets up.
const SETUP_FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Bytes of each envelope the attacker queues: near the 160 KiB payload limit, so that a
/// quota in bytes is reached with few commits.
pub const ENVELOPE_BYTES: usize = 150 * 1024;
/// Mail queued for the account that signs in and never reads: what the relay pushes to it.
const STALL_ENVELOPES: u64 = 40;
/// The never-reading connection's receive buffer: small, so the relay's writes block soon.
const STALL_RECV_BUFFER: u32 = 4096;
/// Addresses the slot filler opens anonymous connections from, one after another, each until
/// refused: with 16 connections not signed in per address, 8 reach a total cap of 64.
const SLOT_HOSTS: u8 = 8;
/// Sockets that never handshake, and connections holding an unfinished frame, open at once
/// (each reconnects when the relay closes it); beyond the per-address cap of 16 some are
/// refused, which the attack also counts.
const SILENT_SOCKETS: usize = 24;
const FRAME_CONNS: usize = 24;
/// The unfinished frame: it announces this many bytes (under the 512 KiB message limit, so
/// only the frame deadline can end it) and sends these many.
const FRAME_ANNOUNCED: u64 = 400 * 1024;
const FRAME_SENT: usize = 256 * 1024;
/// Requests a flooding connection has unanswered at once.
const WINDOW: usize = 4;
/// One-time Kyber keys per valid upload: 100 fit a 256 KiB frame (200 would not).
const PREKEY_BATCH: u32 = 100;
/// How long an attacker whose connection was refused waits before it tries again, and how
/// long the socket attacks wait between reconnections: a flood of connection attempts is not
/// among the attacks, and would measure the machine's TCP stack.
const RETRY: Duration = Duration::from_millis(100);
/// How long the attacker waits for the end of a connection it believes the relay closed.
const CLOSE_PATIENCE: Duration = Duration::from_secs(3);

/// The phases of a run: a quiet one first, then each attack of the issue.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    Quiet,
    /// Fill the connection slots with anonymous sockets.
    Slots,
    /// TCP connections that never start the TLS/WebSocket handshake.
    NoHandshake,
    /// Anonymous connections each holding an unfinished large frame.
    UnfinishedFrames,
    /// Sign in and never read while mail is queued for the account.
    NeverRead,
    /// Queue normal mail to a victim until `quota_exceeded`, and on.
    QueueMail,
    /// Garbage sealed envelopes with the victim's access token.
    SealedGarbage,
    /// Unsigned, over-quota and too frequent prekey uploads.
    PrekeyUploads,
    /// Fetch a legitimate user's bundles over and over.
    BundleDrain,
    /// Acks of envelopes never delivered on the connection.
    AckFlood,
    /// Register handles in bulk from one address.
    Registrations,
}

pub const PHASES: [Attack; 11] = [
    Attack::Quiet,
    Attack::Slots,
    Attack::NoHandshake,
    Attack::UnfinishedFrames,
    Attack::NeverRead,
    Attack::QueueMail,
    Attack::SealedGarbage,
    Attack::PrekeyUploads,
    Attack::BundleDrain,
    Attack::AckFlood,
    Attack::Registrations,
];

impl Attack {
    pub fn name(self) -> &'static str {
        match self {
            Attack::Quiet => "quiet",
            Attack::Slots => "slots",
            Attack::NoHandshake => "no_handshake",
            Attack::UnfinishedFrames => "unfinished_frames",
            Attack::NeverRead => "never_read",
            Attack::QueueMail => "queue_mail",
            Attack::SealedGarbage => "sealed_garbage",
            Attack::PrekeyUploads => "prekey_uploads",
            Attack::BundleDrain => "bundle_drain",
            Attack::AckFlood => "ack_flood",
            Attack::Registrations => "registrations",
        }
    }

    /// Runs the attack from `127.0.net.x` until `stop`.
    pub async fn run(self, t: &Target, net: u8, stop: &CancellationToken, tally: &Tally) {
        let from = ip(net, 1);
        match self {
            Attack::Quiet => stop.cancelled().await,
            Attack::Slots => fill_slots(t, net, stop, tally).await,
            Attack::NoHandshake => never_handshake(t, from, stop, tally).await,
            Attack::UnfinishedFrames => unfinished_frames(t, from, stop, tally).await,
            Attack::NeverRead => never_read(t, from, stop, tally).await,
            Attack::QueueMail => {
                let body = B64(vec![b'm'; ENVELOPE_BYTES]);
                let frame = |req| ClientFrame::Send {
                    req,
                    to: t.victim_id.clone(),
                    body: body.clone(),
                    expires_at: None,
                    online_only: false,
                };
                let connect = async || t.signed_in(from, &t.flooder, None).await;
                keep_flooding(stop, tally, connect, Some(WINDOW), frame).await;
            }
            Attack::SealedGarbage => {
                let envelope = B64(vec![0xAB; ENVELOPE_BYTES]);
                let frame = |req| ClientFrame::SendSealed {
                    req,
                    to: t.victim_id.clone(),
                    access_token: B64(t.victim_token.clone()),
                    envelope: envelope.clone(),
                    expires_at: None,
                    recipient_key: None,
                    online_only: false,
                };
                let connect = async || t.anonymous(from).await;
                keep_flooding(stop, tally, connect, Some(WINDOW), frame).await;
            }
            Attack::PrekeyUploads => {
                // Unsigned keys (`malformed`); then three valid batches, of which the third
                // goes past the keys an account may hold (`quota_exceeded`); again and again,
                // past the uploads an account may make an hour (`rate_limited`).
                let frame = |req: u64| ClientFrame::UploadPreKeys {
                    req,
                    prekeys: Vec::new(),
                    kyber: t.uploads[(req % 4) as usize].clone(),
                };
                let connect = async || t.signed_in(from, &t.uploader, None).await;
                keep_flooding(stop, tally, connect, Some(1), frame).await;
            }
            Attack::BundleDrain => {
                let frame = |req| ClientFrame::FetchBundle {
                    req,
                    account_id: t.alice_id.clone(),
                };
                let connect = async || t.signed_in(from, &t.drainer, None).await;
                keep_flooding(stop, tally, connect, Some(WINDOW), frame).await;
            }
            Attack::AckFlood => {
                // Ids far beyond any envelope of the run: acks the relay must not act on.
                let frame = |req| ClientFrame::Ack { id: 1 << 40 | req };
                let connect = async || t.signed_in(from, &t.acker, None).await;
                keep_flooding(stop, tally, connect, None, frame).await;
            }
            Attack::Registrations => registrations(t, net, from, stop, tally).await,
        }
    }
}

/// `127.0.net.host`.
fn ip(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, net, host))
}

/// What the attacker has prepared before the first phase.
pub struct Target {
    endpoint: Endpoint,
    addr: SocketAddr,
    victim_id: String,
    victim_token: Vec<u8>,
    alice_id: String,
    /// Signs in and never reads; mail waits for it.
    stall: Account,
    flooder: Account,
    uploader: Account,
    drainer: Account,
    acker: Account,
    /// The prekey uploads, by request number modulo 4.
    uploads: [Vec<SignedKey>; 4],
}

impl Target {
    /// Registers the victim (carol, on 127.0.0.1 like any user) and the attacker's accounts
    /// (from `SETUP_FROM`), looks up the victim's access token and alice's account id, and
    /// queues `STALL_ENVELOPES` for the account that will never read.
    pub async fn prepare(endpoint: &Endpoint, addr: SocketAddr) -> Result<Target> {
        // carol never signs in: her mail only queues.
        wire_client::register(endpoint, "carol".into()).await?;
        let mut accounts = Vec::new();
        for handle in [
            "mallory", "stall", "flooder", "uploader", "drainer", "acker",
        ] {
            let (mut ws, nonce) = wire_client::connect_from(endpoint, addr, SETUP_FROM, None)
                .await
                .context("connecting the attacker")?;
            accounts.push(wire_client::register_on(&mut ws, &nonce, handle.into()).await?);
        }
        let [mallory, stall, flooder, uploader, drainer, acker] =
            <[Account; 6]>::try_from(accounts).map_err(|_| anyhow::anyhow!("six accounts"))?;
        let (mut ws, nonce) = wire_client::connect_from(endpoint, addr, SETUP_FROM, None).await?;
        wire_client::auth(&mut ws, &nonce, &mallory).await?;
        let (victim_id, victim_token) = look_up(&mut ws, 1, "carol").await?;
        let (alice_id, _) = look_up(&mut ws, 2, "alice").await?;
        // mallory's mail for the account that will sign in and never read.
        for req in 10..10 + STALL_ENVELOPES {
            let frame = ClientFrame::Send {
                req,
                to: stall.account_id.clone(),
                body: B64(vec![b's'; ENVELOPE_BYTES]),
                expires_at: None,
                online_only: false,
            };
            wire_client::request(&mut ws, req, &frame)
                .await
                .context("queueing mail for the never-reading account")?;
        }
        let uploads = [
            wire_client::kyber_keys(&uploader, PREKEY_BATCH * 3, PREKEY_BATCH, true)?,
            wire_client::kyber_keys(&uploader, 1000, 3, false)?,
            wire_client::kyber_keys(&uploader, 1000, PREKEY_BATCH, true)?,
            wire_client::kyber_keys(&uploader, 1000 + PREKEY_BATCH, PREKEY_BATCH, true)?,
        ];
        Ok(Target {
            endpoint: endpoint.clone(),
            addr,
            victim_id,
            victim_token,
            alice_id,
            stall,
            flooder,
            uploader,
            drainer,
            acker,
            uploads,
        })
    }

    async fn signed_in(&self, from: IpAddr, a: &Account, recv: Option<u32>) -> Result<Ws> {
        let (mut ws, nonce) =
            wire_client::connect_from(&self.endpoint, self.addr, from, recv).await?;
        wire_client::auth(&mut ws, &nonce, a).await?;
        Ok(ws)
    }

    async fn anonymous(&self, from: IpAddr) -> Result<Ws> {
        let (mut ws, _) = wire_client::connect_from(&self.endpoint, self.addr, from, None).await?;
        wire_client::anonymous(&mut ws).await?;
        Ok(ws)
    }
}

/// The account id and access token of `handle`.
async fn look_up(ws: &mut Ws, req: u64, handle: &str) -> Result<(String, Vec<u8>)> {
    let frame = ClientFrame::Lookup {
        req,
        handle: Some(handle.into()),
        account_id: None,
    };
    match wire_client::request(ws, req, &frame).await? {
        RelayFrame::Account {
            account_id,
            access_token,
            ..
        } => Ok((account_id, access_token.0)),
        other => bail!("unexpected answer to a lookup of {handle}: {other:?}"),
    }
}

/// `f`, unless `stop` comes first (None).
async fn unless_stopped<T>(stop: &CancellationToken, f: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        _ = stop.cancelled() => None,
        v = f => Some(v),
    }
}

/// Connects with `connect` until the relay takes the connection, counting each refusal and
/// waiting `RETRY` before the next try; None once `stop` came.
async fn connect_until_stopped(
    stop: &CancellationToken,
    tally: &Tally,
    connect: &impl AsyncFn() -> Result<Ws>,
) -> Option<Ws> {
    loop {
        match unless_stopped(stop, connect()).await? {
            Ok(ws) => return Some(ws),
            Err(e) => {
                tally.refused(&e);
                if !pause(stop, RETRY).await {
                    return None;
                }
            }
        }
    }
}

/// Waits `d`; false if `stop` came first.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    unless_stopped(stop, tokio::time::sleep(d)).await.is_some()
}

/// Anonymous connections from one address after another, each address until the relay
/// refuses it (its cap for connections not signed in, or the total anonymous cap); all held.
async fn fill_slots(t: &Target, net: u8, stop: &CancellationToken, tally: &Tally) {
    let mut held = Vec::new();
    'hosts: for host in 1..=SLOT_HOSTS {
        loop {
            match unless_stopped(stop, t.anonymous(ip(net, host))).await {
                None => break 'hosts,
                Some(Ok(ws)) => {
                    tally.accepted();
                    held.push(ws);
                }
                Some(Err(e)) => {
                    tally.refused(&e);
                    continue 'hosts;
                }
            }
        }
    }
    stop.cancelled().await;
}

/// `SILENT_SOCKETS` TCP connections that never send a byte, each opened again when the
/// relay closes it.
async fn never_handshake(t: &Target, from: IpAddr, stop: &CancellationToken, tally: &Tally) {
    let socket = async || {
        loop {
            match unless_stopped(stop, wire_client::tcp_from(t.addr, from, None)).await {
                None => return,
                Some(Ok(tcp)) => match unless_stopped(stop, until_eof(tcp)).await {
                    None => return,
                    Some(()) => tally.closed(),
                },
                Some(Err(e)) => tally.refused(&e),
            }
            if !pause(stop, RETRY).await {
                return;
            }
        }
    };
    futures::future::join_all((0..SILENT_SOCKETS).map(|_| socket())).await;
}

async fn until_eof(mut tcp: tokio::net::TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(1..) = tcp.read(&mut buf).await {}
}

/// `FRAME_CONNS` anonymous connections, each sending the start of a frame it never
/// finishes, and opened again when the relay closes it.
async fn unfinished_frames(t: &Target, from: IpAddr, stop: &CancellationToken, tally: &Tally) {
    let conn = async || {
        loop {
            match unless_stopped(stop, t.anonymous(from)).await {
                None => return,
                Some(Ok(ws)) => {
                    tally.accepted();
                    match unless_stopped(stop, hold_unfinished_frame(ws)).await {
                        None => return,
                        Some(_) => tally.closed(),
                    }
                }
                Some(Err(e)) => tally.refused(&e),
            }
            if !pause(stop, RETRY).await {
                return;
            }
        }
    };
    futures::future::join_all((0..FRAME_CONNS).map(|_| conn())).await;
}

/// Writes the start of a masked binary frame announcing `FRAME_ANNOUNCED` bytes and
/// `FRAME_SENT` of them, under the WebSocket layer (through TLS for wss://), then reads until
/// the relay closes the connection.
async fn hold_unfinished_frame(mut ws: Ws) -> Result<()> {
    let mut bytes = vec![0x82, 0x80 | 127];
    bytes.extend_from_slice(&FRAME_ANNOUNCED.to_be_bytes());
    bytes.extend_from_slice(&rand::random::<[u8; 4]>());
    bytes.resize(bytes.len() + FRAME_SENT, b'f');
    let stream = ws.get_mut();
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    while let Some(Ok(m)) = ws.next().await {
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
    Ok(())
}

/// Signs in as the account with mail waiting, on a socket with a small receive buffer, and
/// reads nothing for longer than the relay's write deadline; then reads what came, to see
/// whether the relay closed it. Again until `stop`.
async fn never_read(t: &Target, from: IpAddr, stop: &CancellationToken, tally: &Tally) {
    let sign_in = async || t.signed_in(from, &t.stall, Some(STALL_RECV_BUFFER)).await;
    while let Some(ws) = connect_until_stopped(stop, tally, &sign_in).await {
        tally.accepted();
        if !pause(stop, crate::hostile::STALL_HOLD).await {
            return;
        }
        if tokio::time::timeout(CLOSE_PATIENCE, drain(ws))
            .await
            .is_ok()
        {
            tally.closed();
        }
    }
}

/// Reads `ws` to its end.
async fn drain(mut ws: Ws) {
    while let Some(Ok(_)) = ws.next().await {}
}

/// Registers handles from one address, one after another, until `stop`.
async fn registrations(t: &Target, net: u8, from: IpAddr, stop: &CancellationToken, tally: &Tally) {
    for n in 0u64.. {
        let attempt = async {
            let (mut ws, nonce) =
                wire_client::connect_from(&t.endpoint, t.addr, from, None).await?;
            wire_client::register_on(&mut ws, &nonce, format!("bulk{net}x{n}")).await
        };
        match unless_stopped(stop, attempt).await {
            None => return,
            Some(Ok(_)) => tally.accepted(),
            Some(Err(e)) => tally.refused(&e),
        }
    }
}

/// Connects with `connect` and floods (`flood`) until `stop`, connecting again whenever the
/// relay ends or refuses the connection.
async fn keep_flooding(
    stop: &CancellationToken,
    tally: &Tally,
    connect: impl AsyncFn() -> Result<Ws>,
    window: Option<usize>,
    mut frame: impl FnMut(u64) -> ClientFrame,
) {
    while let Some(ws) = connect_until_stopped(stop, tally, &connect).await {
        if !flood(ws, stop, tally, window, &mut frame).await {
            return;
        }
        tally.closed();
    }
}

/// Sends `frame(1)`, `frame(2)`, ... on `ws` with at most `window` of them unanswered (None:
/// without waiting, for frames that have no answer), counting every answer and every error
/// frame, until `stop` (false) or until the relay ends the connection (true).
async fn flood(
    ws: Ws,
    stop: &CancellationToken,
    tally: &Tally,
    window: Option<usize>,
    frame: &mut impl FnMut(u64) -> ClientFrame,
) -> bool {
    let (mut sink, mut stream) = ws.split();
    let unanswered = Semaphore::new(window.unwrap_or(0));
    let reader = async {
        while let Ok(f) = wire_client::read_frame(&mut stream).await {
            if wire_client::answer_to(&f).is_some() {
                tally.answer(&f);
                unanswered.add_permits(1);
            } else if let RelayFrame::Error { code, .. } = f {
                tally.error(code);
            }
        }
    };
    let writer = async {
        for req in 1.. {
            if window.is_some() {
                match unanswered.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
            }
            if sink.send(wire_client::message(&frame(req))).await.is_err() {
                return;
            }
        }
    };
    tokio::pin!(reader, writer);
    tokio::select! {
        _ = stop.cancelled() => false,
        () = &mut reader => true,
        () = &mut writer => {
            // A write failed: the relay ended the connection; its last frames may still be
            // in the read half.
            let _ = tokio::time::timeout(CLOSE_PATIENCE, &mut reader).await;
            true
        }
    }
}
