//! Accounts at a relay without client profiles: keys made with libsignal (through
//! `sotto::client::crypto`), registration and challenge/response sign-in spoken directly in
//! `sotto::wire` frames over tokio-tungstenite, as `sotto::client::conn` does it.
//!
//! Keeps nothing on disk, so `--mode idle` can hold thousands of signed-in connections; the
//! keys live only as long as the run. Uploads no one-time prekeys (the relay does not require
//! them), only what `register` must carry.
//!
//! `--mode hostile` speaks through the same primitives from other loopback addresses
//! (`connect_from`), and needs the relay's refusals as values: a step the relay refuses fails
//! with a `Refused` in its error chain.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, Stream, StreamExt};
use libsignal_protocol::IdentityKeyPair;
use sotto::client::crypto;
use sotto::tls::Endpoint;
use sotto::wire::{
    self, ClientFrame, ErrorCode, KeyUpload, MAX_FRAME_BYTES, RelayFrame, SignedKey,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Ids of the signed EC prekey and the Kyber last-resort key; one of each per account.
const SIGNED_PREKEY_ID: u32 = 1;
const LAST_RESORT_KYBER_ID: u32 = 1;

/// The relay answered a step with an `error` frame.
#[derive(Debug)]
pub struct Refused {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the relay refused: {:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Refused {}

/// A registered account: what signing in needs.
pub struct Account {
    pub account_id: String,
    identity: IdentityKeyPair,
}

/// Small buffers: this process holds the client end of every connection, and tungstenite's
/// default 128 KiB read buffer each would make that gigabytes. Larger frames still fit: the
/// buffer grows for them.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// Registers `handle` with fresh keys over a connection of its own, then closes it.
pub async fn register(relay: &Endpoint, handle: String) -> Result<Account> {
    let (mut ws, nonce) = open(relay).await?;
    // The relay sees the connection end like any client's; there is nothing to wait for.
    register_on(&mut ws, &nonce, handle).await
}

/// Registers `handle` with fresh keys on `ws`, whose challenge carried `nonce`.
pub async fn register_on(ws: &mut Ws, nonce: &[u8], handle: String) -> Result<Account> {
    let (identity, keys) = fresh_keys()?;
    let frame = ClientFrame::Register {
        signature: sign(&identity, nonce)?.into(),
        handle: handle.clone(),
        keys,
        claim: None,
    };
    send(ws, &frame).await?;
    let account_id = match next_frame(ws).await? {
        RelayFrame::Authenticated { account_id, .. } => account_id,
        RelayFrame::Error { code, message, .. } => {
            return Err(anyhow::Error::new(Refused { code, message }))
                .with_context(|| format!("registering {handle:?}"));
        }
        other => bail!("unexpected answer to registering {handle:?}: {other:?}"),
    };
    Ok(Account {
        account_id,
        identity,
    })
}

/// Opens a connection signed in as `account` and returns it once the relay has sent
/// everything it sends a new connection: `authenticated`, `pre_key_count` and `drained`.
pub async fn sign_in(relay: &Endpoint, account: &Account) -> Result<Ws> {
    let (mut ws, nonce) = open(relay).await?;
    auth(&mut ws, &nonce, account).await?;
    loop {
        match next_frame(&mut ws).await? {
            RelayFrame::PreKeyCount { .. } => {}
            RelayFrame::Drained => return Ok(ws),
            other => return refusal(other, "signing in"),
        }
    }
}

/// Connects and reads the challenge; returns its nonce.
async fn open(relay: &Endpoint) -> Result<(Ws, Vec<u8>)> {
    let mut ws = sotto::client::conn::dial(relay, Some(ws_config()))
        .await
        .with_context(|| format!("cannot connect to the relay at {}", relay.url()))?;
    let nonce = challenge(&mut ws).await?;
    Ok((ws, nonce))
}

/// A TCP connection to the relay at `addr` from the local address `from` (another loopback
/// address than 127.0.0.1 is another client to the relay's per-address caps), with a receive
/// buffer of `recv_buffer` bytes if given (small: the peer's writes block soon).
pub async fn tcp_from(
    addr: SocketAddr,
    from: IpAddr,
    recv_buffer: Option<u32>,
) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4().context("cannot create a socket")?;
    // Bound before connecting, or the kernel picks 127.0.0.1.
    socket
        .bind(SocketAddr::new(from, 0))
        .with_context(|| format!("cannot bind a socket to {from}"))?;
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    let tcp = socket
        .connect(addr)
        .await
        .with_context(|| format!("cannot connect from {from} to the relay at {addr}"))?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// The TLS (for wss://) and WebSocket handshakes over `tcp`, then the challenge: the
/// connection and the challenge's nonce.
pub async fn connect_over(relay: &Endpoint, tcp: TcpStream) -> Result<(Ws, Vec<u8>)> {
    let connector = match relay.tls_config() {
        Some(tls) => Connector::Rustls(tls),
        None => Connector::Plain,
    };
    let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(
        relay.url(),
        tcp,
        Some(ws_config()),
        Some(connector),
    )
    .await
    .context("the handshake with the relay failed")?;
    let nonce = challenge(&mut ws).await?;
    Ok((ws, nonce))
}

/// `tcp_from` and `connect_over` in one.
pub async fn connect_from(
    relay: &Endpoint,
    addr: SocketAddr,
    from: IpAddr,
    recv_buffer: Option<u32>,
) -> Result<(Ws, Vec<u8>)> {
    connect_over(relay, tcp_from(addr, from, recv_buffer).await?).await
}

/// Declares `ws` (challenge read) anonymous, for sealed sending.
pub async fn anonymous(ws: &mut Ws) -> Result<()> {
    send(ws, &ClientFrame::Anonymous).await?;
    match next_frame(ws).await? {
        RelayFrame::AnonymousOk => Ok(()),
        other => refusal(other, "declaring the connection anonymous"),
    }
}

/// Signs `ws` (challenge read, with `nonce`) in as `account`; returns at `authenticated`,
/// before the relay pushes what is queued.
pub async fn auth(ws: &mut Ws, nonce: &[u8], account: &Account) -> Result<()> {
    let frame = ClientFrame::Auth {
        account_id: account.account_id.clone(),
        signature: sign(&account.identity, nonce)?.into(),
    };
    send(ws, &frame).await?;
    match next_frame(ws).await? {
        RelayFrame::Authenticated { .. } => Ok(()),
        other => refusal(other, "signing in"),
    }
}

/// Sends request `frame` numbered `req` and returns the relay's answer to it; other frames
/// (deliveries, counts) are skipped. An `error` answer fails with `Refused`.
pub async fn request(ws: &mut Ws, req: u64, frame: &ClientFrame) -> Result<RelayFrame> {
    send(ws, frame).await?;
    loop {
        let f = next_frame(ws).await?;
        if answer_to(&f) == Some(req) {
            return match f {
                RelayFrame::Error { code, message, .. } => {
                    Err(anyhow::Error::new(Refused { code, message }))
                }
                f => Ok(f),
            };
        }
    }
}

/// The request a frame answers, if it answers one.
pub fn answer_to(f: &RelayFrame) -> Option<u64> {
    match f {
        RelayFrame::Error { req, .. } => *req,
        RelayFrame::Ok { req }
        | RelayFrame::Account { req, .. }
        | RelayFrame::Bundle { req, .. }
        | RelayFrame::SenderCert { req, .. } => Some(*req),
        _ => None,
    }
}

/// An `error` frame as a failed step, anything else as a protocol surprise.
fn refusal<T>(f: RelayFrame, what: &str) -> Result<T> {
    match f {
        RelayFrame::Error { code, message, .. } => {
            Err(anyhow::Error::new(Refused { code, message })).context(what.to_string())
        }
        other => bail!("unexpected frame while {what}: {other:?}"),
    }
}

/// `n` fresh one-time Kyber keys of `account`, ids from `first`, signed by its identity key
/// (or, with `signed` false, with an empty signature).
pub fn kyber_keys(account: &Account, first: u32, n: u32, signed: bool) -> Result<Vec<SignedKey>> {
    let now = SystemTime::now();
    (first..first + n)
        .map(|id| {
            let r = crypto::kyber_prekey(id, &account.identity, now, &mut rand::rng())
                .context("cannot make a Kyber prekey")?;
            let mut k = crypto::wire_kyber(&r)?;
            if !signed {
                k.signature = Vec::new().into();
            }
            Ok(k)
        })
        .collect()
}

/// Reads the challenge; returns its nonce.
async fn challenge(ws: &mut Ws) -> Result<Vec<u8>> {
    match next_frame(ws).await? {
        RelayFrame::Challenge { nonce, version, .. } if version == wire::PROTOCOL_VERSION => {
            Ok(nonce.0)
        }
        RelayFrame::Challenge { version, .. } => bail!(
            "the relay speaks protocol version {version}, this tool {}",
            wire::PROTOCOL_VERSION
        ),
        RelayFrame::Error { code, message, .. } => {
            Err(anyhow::Error::new(Refused { code, message })).context("connecting")
        }
        other => bail!("expected a challenge, got {other:?}"),
    }
}

pub async fn send(ws: &mut Ws, frame: &ClientFrame) -> Result<()> {
    ws.send(message(frame))
        .await
        .context("cannot send to the relay")
}

/// `frame` as the WebSocket message that carries it.
pub fn message(frame: &ClientFrame) -> Message {
    Message::text(frame.encode())
}

async fn next_frame(ws: &mut Ws) -> Result<RelayFrame> {
    read_frame(ws).await
}

/// The next frame from the relay on `stream` (a whole connection or its read half), past
/// pings and pongs.
pub async fn read_frame<S>(stream: &mut S) -> Result<RelayFrame>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) => {
                return RelayFrame::decode(t.as_bytes())
                    .map_err(|e| anyhow!("undecodable frame from the relay: {e}"));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(_)) | None => bail!("the relay closed the connection"),
            Some(Err(e)) => bail!("connection to the relay lost: {e}"),
        }
    }
}

/// Signs the challenge as the client does: libsignal's XEdDSA over `wire::auth_message`.
fn sign(identity: &IdentityKeyPair, nonce: &[u8]) -> Result<Vec<u8>> {
    let signature = identity
        .private_key()
        .calculate_signature(&wire::auth_message(nonce), &mut rand::rng())
        .context("cannot sign the challenge")?;
    Ok(signature.to_vec())
}

/// A new identity with the keys `register` must upload: a signed EC prekey and a signed
/// Kyber last-resort prekey, no one-time keys.
fn fresh_keys() -> Result<(IdentityKeyPair, KeyUpload)> {
    let mut rng = rand::rng();
    let now = SystemTime::now();
    let identity = IdentityKeyPair::generate(&mut rng);
    let signed = crypto::signed_prekey(SIGNED_PREKEY_ID, &identity, now, &mut rng)
        .context("cannot make a signed prekey")?;
    let last_resort = crypto::kyber_prekey(LAST_RESORT_KYBER_ID, &identity, now, &mut rng)
        .context("cannot make a Kyber prekey")?;
    let keys = KeyUpload {
        identity_key: identity.identity_key().serialize().to_vec().into(),
        registration_id: crypto::registration_id(&mut rng),
        signed_prekey: crypto::wire_signed(&signed)?,
        kyber_last_resort: crypto::wire_kyber(&last_resort)?,
        one_time_prekeys: Vec::new(),
        one_time_kyber: Vec::new(),
    };
    Ok((identity, keys))
}
