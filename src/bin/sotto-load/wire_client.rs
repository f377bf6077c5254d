//! Accounts at a relay without client profiles: keys made with libsignal (through
//! `sotto::client::crypto`), registration and challenge/response sign-in spoken directly in
//! `sotto::wire` frames over tokio-tungstenite, as `sotto::client::conn` does it.
//!
//! Keeps nothing on disk, so `--mode idle` can hold thousands of signed-in connections; the
//! keys live only as long as the run. Uploads no one-time prekeys (the relay does not require
//! them), only what `register` must carry.

use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, Stream, StreamExt};
use libsignal_protocol::IdentityKeyPair;
use sotto::client::crypto;
use sotto::tls::Endpoint;
use sotto::wire::{self, ClientFrame, KeyUpload, MAX_FRAME_BYTES, RelayFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Ids of the signed EC prekey and the Kyber last-resort key; one of each per account.
const SIGNED_PREKEY_ID: u32 = 1;
const LAST_RESORT_KYBER_ID: u32 = 1;

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
    let (identity, keys) = fresh_keys()?;
    let frame = ClientFrame::Register {
        signature: sign(&identity, &nonce)?.into(),
        handle: handle.clone(),
        keys,
        claim: None,
    };
    send(&mut ws, &frame).await?;
    let account_id = match next_frame(&mut ws).await? {
        RelayFrame::Authenticated { account_id, .. } => account_id,
        RelayFrame::Error { code, message, .. } => {
            bail!("the relay refused to register {handle:?}: {code:?}: {message}")
        }
        other => bail!("unexpected answer to registering {handle:?}: {other:?}"),
    };
    // The relay sees the connection end like any client's; there is nothing to wait for.
    drop(ws);
    Ok(Account {
        account_id,
        identity,
    })
}

/// Opens a connection signed in as `account` and returns it once the relay has sent
/// everything it sends a new connection: `authenticated`, `pre_key_count` and `drained`.
pub async fn sign_in(relay: &Endpoint, account: &Account) -> Result<Ws> {
    let (mut ws, nonce) = open(relay).await?;
    let frame = ClientFrame::Auth {
        account_id: account.account_id.clone(),
        signature: sign(&account.identity, &nonce)?.into(),
    };
    send(&mut ws, &frame).await?;
    let mut authenticated = false;
    loop {
        match next_frame(&mut ws).await? {
            RelayFrame::Authenticated { .. } => authenticated = true,
            RelayFrame::PreKeyCount { .. } if authenticated => {}
            RelayFrame::Drained if authenticated => return Ok(ws),
            RelayFrame::Error { code, message, .. } => {
                bail!("the relay refused to sign in: {code:?}: {message}")
            }
            other => bail!("unexpected frame while signing in: {other:?}"),
        }
    }
}

/// Connects and reads the challenge; returns its nonce.
async fn open(relay: &Endpoint) -> Result<(Ws, Vec<u8>)> {
    let mut ws = sotto::client::conn::dial(relay, Some(ws_config()))
        .await
        .with_context(|| format!("cannot connect to the relay at {}", relay.url()))?;
    match next_frame(&mut ws).await? {
        RelayFrame::Challenge { nonce, version, .. } if version == wire::PROTOCOL_VERSION => {
            Ok((ws, nonce.0))
        }
        RelayFrame::Challenge { version, .. } => bail!(
            "the relay speaks protocol version {version}, this tool {}",
            wire::PROTOCOL_VERSION
        ),
        RelayFrame::Error { code, message, .. } => {
            bail!("the relay refused the connection: {code:?}: {message}")
        }
        other => bail!("expected a challenge, got {other:?}"),
    }
}

async fn send(ws: &mut Ws, frame: &ClientFrame) -> Result<()> {
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
