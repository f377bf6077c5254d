//! The client's connection to the relay: connect, answer the challenge, reconnect with
//! backoff, match answers to requests, and pass everything else (deliveries, counts) on.
//!
//! Owns one WebSocket at a time, either authenticated as the account or anonymous (for sealed
//! envelopes, so the relay never links them to the sender's connection). Must not touch the
//! store: it forwards frames, and the manager decides what they mean.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use libsignal_protocol::IdentityKeyPair;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::tls::{CertificateChanged, Endpoint};
use crate::wire::{
    self, ClientFrame, ErrorCode, KeyUpload, MAX_FRAME_BYTES, RelayFrame, ReqId, WS_BUFFER_BYTES,
};

/// A WebSocket to the relay, over TLS or not.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a request waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("cannot reach the relay at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("not connected to the relay; try again once the status line says online")]
    Offline,
    #[error("the relay did not answer in time")]
    Timeout,
    #[error("{}", refusal(.code, .message))]
    Refused { code: ErrorCode, message: String },
    #[error(
        "the relay's trust root differs from the one pinned at init; refusing to talk to it (run `sotto info` to compare)"
    )]
    TrustRootChanged,
    #[error(transparent)]
    CertificateChanged(CertificateChanged),
    #[error("the relay speaks protocol version {0}, this client {v}; update the older side", v = wire::PROTOCOL_VERSION)]
    Version(u32),
    #[error("the relay spoke out of turn: {0}")]
    Protocol(String),
}

/// What a refusal tells the user: the relay's limits in words of what to do, anything else
/// in the relay's own words.
fn refusal(code: &ErrorCode, message: &str) -> String {
    match code {
        ErrorCode::RateLimited => {
            "the relay is limiting how fast you send; wait a moment and try again".into()
        }
        ErrorCode::QuotaExceeded => format!("the relay is holding as much as it allows: {message}"),
        _ => format!("the relay refused: {message}"),
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// Who a link speaks as. Both kinds check the relay's trust root against the one pinned at
/// init: a sealed envelope handed to an impostor relay is lost, if not readable.
#[derive(Clone)]
pub enum Hello {
    Account {
        account_id: String,
        identity: IdentityKeyPair,
        trust_root: Vec<u8>,
    },
    Anonymous {
        trust_root: Vec<u8>,
    },
}

/// What a link tells its owner.
#[derive(Debug)]
pub enum LinkEvent {
    Online,
    Offline { reason: String, retry_in: Duration },
    Frame(RelayFrame),
}

type Pending = Arc<Mutex<HashMap<ReqId, oneshot::Sender<RelayFrame>>>>;

/// A handle to a connection task that keeps itself connected.
pub struct Link {
    out: mpsc::Sender<ClientFrame>,
    online: Arc<AtomicBool>,
    next_req: AtomicU64,
    pending: Pending,
}

impl Link {
    /// Starts a task that connects to `endpoint` as `hello` and stays connected until `cancel`.
    /// Frames that answer no request go to `events`.
    pub fn spawn(
        endpoint: Endpoint,
        hello: Hello,
        events: mpsc::Sender<LinkEvent>,
        cancel: CancellationToken,
    ) -> Link {
        let (out_tx, out_rx) = mpsc::channel(64);
        let online = Arc::new(AtomicBool::new(false));
        let pending: Pending = Arc::default();
        tokio::spawn(run(
            endpoint,
            hello,
            out_rx,
            events,
            online.clone(),
            pending.clone(),
            cancel,
        ));
        Link {
            out: out_tx,
            online,
            next_req: AtomicU64::new(1),
            pending,
        }
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Sends a request built around a fresh request id and waits for its answer. An `Error`
    /// frame comes back as `LinkError::Refused`.
    pub async fn request(
        &self,
        make: impl FnOnce(ReqId) -> ClientFrame,
    ) -> Result<RelayFrame, LinkError> {
        self.submit(make).await?.answer().await
    }

    /// Sends a request without waiting for its answer, so the caller can go on with other
    /// work (and other requests) while the relay works on it. Requests leave in the order
    /// they are submitted.
    pub async fn submit(
        &self,
        make: impl FnOnce(ReqId) -> ClientFrame,
    ) -> Result<Reply, LinkError> {
        if !self.is_online() {
            return Err(LinkError::Offline);
        }
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(req, tx);
        if self.out.send(make(req)).await.is_err() {
            lock(&self.pending).remove(&req);
            return Err(LinkError::Offline);
        }
        Ok(Reply {
            req,
            rx,
            pending: self.pending.clone(),
        })
    }

    /// Sends a frame that has no answer (an ack).
    pub async fn send(&self, frame: ClientFrame) -> Result<(), LinkError> {
        if !self.is_online() {
            return Err(LinkError::Offline);
        }
        self.out.send(frame).await.map_err(|_| LinkError::Offline)
    }
}

/// The relay's answer to a submitted request, still to come.
pub struct Reply {
    req: ReqId,
    rx: oneshot::Receiver<RelayFrame>,
    pending: Pending,
}

impl Reply {
    /// Waits for the answer, at most `REQUEST_TIMEOUT`. An `Error` frame comes back as
    /// `LinkError::Refused`.
    pub async fn answer(self) -> Result<RelayFrame, LinkError> {
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.rx).await;
        lock(&self.pending).remove(&self.req);
        match answer {
            Err(_) => Err(LinkError::Timeout),
            // The connection dropped with the request in flight.
            Ok(Err(_)) => Err(LinkError::Offline),
            Ok(Ok(RelayFrame::Error { code, message, .. })) => {
                Err(LinkError::Refused { code, message })
            }
            Ok(Ok(frame)) => Ok(frame),
        }
    }
}

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashMap<ReqId, oneshot::Sender<RelayFrame>>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run(
    endpoint: Endpoint,
    hello: Hello,
    mut out: mpsc::Receiver<ClientFrame>,
    events: mpsc::Sender<LinkEvent>,
    online: Arc<AtomicBool>,
    pending: Pending,
    cancel: CancellationToken,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let reason = tokio::select! {
            _ = cancel.cancelled() => return,
            c = connect(&endpoint, &hello) => match c {
                Ok(mut ws) => {
                    backoff = BACKOFF_START;
                    drop_stale(&mut out);
                    online.store(true, Ordering::Release);
                    if events.send(LinkEvent::Online).await.is_err() {
                        return;
                    }
                    let reason = serve(&mut ws, &mut out, &events, &pending, &cancel).await;
                    online.store(false, Ordering::Release);
                    // Requests in flight fail now rather than at their timeout.
                    lock(&pending).clear();
                    let _ = ws.close(None).await;
                    if cancel.is_cancelled() {
                        return;
                    }
                    reason
                }
                Err(e) => e.to_string(),
            },
        };
        // Jitter keeps a crowd of clients from reconnecting in lockstep after a relay restart.
        let retry_in = backoff.mul_f64(rand::rng().random_range(0.8..1.2));
        tracing::info!(%reason, ?retry_in, "relay connection down");
        if events
            .send(LinkEvent::Offline { reason, retry_in })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(retry_in) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Empties frames queued for a connection that broke before they went out. Their requests
/// have already failed as `Offline` and will be made again, so sending them now would repeat
/// them. Stale acks go too: the relay redelivers what was not acked on the new connection,
/// and the client drops the duplicate and acks it then.
fn drop_stale(out: &mut mpsc::Receiver<ClientFrame>) {
    while out.try_recv().is_ok() {}
}

/// Relays frames both ways until the connection breaks; returns why it ended.
async fn serve(
    ws: &mut Ws,
    out: &mut mpsc::Receiver<ClientFrame>,
    events: &mpsc::Sender<LinkEvent>,
    pending: &Pending,
    cancel: &CancellationToken,
) -> String {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return "shutting down".into(),
            frame = out.recv() => {
                let Some(frame) = frame else { return "shutting down".into() };
                if let Err(e) = ws.send(Message::text(frame.encode())).await {
                    return format!("send failed: {e}");
                }
            }
            msg = ws.next() => {
                let bytes = match msg {
                    None => return "the relay closed the connection".into(),
                    Some(Err(e)) => return format!("connection lost: {e}"),
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Close(_))) => return "the relay closed the connection".into(),
                    Some(Ok(_)) => continue,
                };
                let frame = match RelayFrame::decode(&bytes) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable frame from relay");
                        continue;
                    }
                };
                let req = match &frame {
                    RelayFrame::Account { req, .. }
                    | RelayFrame::Bundle { req, .. }
                    | RelayFrame::SenderCert { req, .. }
                    | RelayFrame::BlobCreated { req, .. }
                    | RelayFrame::BlobStatus { req, .. }
                    | RelayFrame::BlobData { req, .. }
                    | RelayFrame::Ok { req } => Some(*req),
                    RelayFrame::Error { req, .. } => *req,
                    _ => None,
                };
                match req.and_then(|r| lock(pending).remove(&r)) {
                    Some(waiter) => {
                        let _ = waiter.send(frame);
                    }
                    None => {
                        if let RelayFrame::Error { code, message, .. } = &frame {
                            tracing::warn!(?code, %message, "relay error");
                        }
                        if events.send(LinkEvent::Frame(frame)).await.is_err() {
                            return "shutting down".into();
                        }
                    }
                }
            }
        }
    }
}

async fn next_frame(ws: &mut Ws) -> Result<RelayFrame, LinkError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return RelayFrame::decode(t.as_bytes())
                    .map_err(|e| LinkError::Protocol(e.to_string()));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(_)) | None => {
                return Err(LinkError::Protocol(
                    "connection closed during sign-in".into(),
                ));
            }
            Some(Err(e)) => return Err(LinkError::Protocol(e.to_string())),
        }
    }
}

/// Opens a WebSocket to the relay at `endpoint`, over TLS for a `wss://` URL; `config` None
/// means tungstenite's defaults. A pinned relay presenting another certificate fails with
/// `CertificateChanged` during the TLS handshake, before any frame is sent.
pub async fn dial(endpoint: &Endpoint, config: Option<WebSocketConfig>) -> Result<Ws, LinkError> {
    let connector = match endpoint.tls_config() {
        Some(tls) => Connector::Rustls(tls),
        None => Connector::Plain,
    };
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        endpoint.url(),
        config,
        true,
        Some(connector),
    )
    .await
    .map_err(|e| match CertificateChanged::find(&e) {
        Some(changed) => LinkError::CertificateChanged(changed),
        None => LinkError::Unreachable {
            url: endpoint.url().to_string(),
            reason: e.to_string(),
        },
    })?;
    Ok(ws)
}

async fn open(endpoint: &Endpoint) -> Result<(Ws, Vec<u8>, Vec<u8>), LinkError> {
    let mut ws = dial(endpoint, Some(ws_config())).await?;
    match next_frame(&mut ws).await? {
        RelayFrame::Challenge {
            nonce, trust_root, ..
        } => Ok((ws, nonce.0, trust_root.0)),
        other => Err(LinkError::Protocol(format!(
            "expected a challenge, got {other:?}"
        ))),
    }
}

async fn finish_sign_in(ws: &mut Ws) -> Result<RelayFrame, LinkError> {
    match next_frame(ws).await? {
        RelayFrame::Error { code, message, .. } => Err(LinkError::Refused { code, message }),
        f => Ok(f),
    }
}

async fn connect(endpoint: &Endpoint, hello: &Hello) -> Result<Ws, LinkError> {
    let (mut ws, nonce, trust_root) = open(endpoint).await?;
    let pinned = match hello {
        Hello::Account { trust_root, .. } | Hello::Anonymous { trust_root } => trust_root,
    };
    if *pinned != trust_root {
        return Err(LinkError::TrustRootChanged);
    }
    let frame = match hello {
        Hello::Anonymous { .. } => ClientFrame::Anonymous,
        Hello::Account {
            account_id,
            identity,
            ..
        } => {
            let signature = identity
                .private_key()
                .calculate_signature(&wire::auth_message(&nonce), &mut rand::rng())
                .map_err(|e| LinkError::Protocol(e.to_string()))?;
            ClientFrame::Auth {
                account_id: account_id.clone(),
                signature: signature.to_vec().into(),
            }
        }
    };
    ws.send(Message::text(frame.encode()))
        .await
        .map_err(|e| LinkError::Protocol(e.to_string()))?;
    match finish_sign_in(&mut ws).await? {
        RelayFrame::Authenticated { .. } | RelayFrame::AnonymousOk => Ok(ws),
        other => Err(LinkError::Protocol(format!(
            "unexpected answer to sign-in: {other:?}"
        ))),
    }
}

/// What a successful registration returns.
pub struct Registered {
    pub account_id: String,
    pub trust_root: Vec<u8>,
}

/// Registers `handle` with `keys` at `endpoint` over a connection of its own.
pub async fn register(
    endpoint: &Endpoint,
    handle: &str,
    keys: KeyUpload,
    identity: &IdentityKeyPair,
    claim: Option<String>,
) -> Result<Registered, LinkError> {
    let (mut ws, nonce, trust_root) = open(endpoint).await?;
    let signature = identity
        .private_key()
        .calculate_signature(&wire::auth_message(&nonce), &mut rand::rng())
        .map_err(|e| LinkError::Protocol(e.to_string()))?;
    let frame = ClientFrame::Register {
        handle: handle.to_string(),
        keys,
        signature: signature.to_vec().into(),
        claim,
    };
    ws.send(Message::text(frame.encode()))
        .await
        .map_err(|e| LinkError::Protocol(e.to_string()))?;
    let answer = finish_sign_in(&mut ws).await;
    let _ = ws.close(None).await;
    match answer? {
        RelayFrame::Authenticated { account_id, .. } => Ok(Registered {
            account_id,
            trust_root,
        }),
        other => Err(LinkError::Protocol(format!(
            "unexpected answer to registration: {other:?}"
        ))),
    }
}

/// Replaces the account's identity key at the relay over a connection of its own: signs in
/// with the current key, then sends the new keys with the new key's proof over this
/// connection's challenge and the current key's endorsement.
pub async fn rekey(
    endpoint: &Endpoint,
    account_id: &str,
    current: &IdentityKeyPair,
    pinned_trust_root: &[u8],
    keys: KeyUpload,
    new: &IdentityKeyPair,
) -> Result<(), LinkError> {
    let (mut ws, nonce, trust_root) = open(endpoint).await?;
    if trust_root != pinned_trust_root {
        return Err(LinkError::TrustRootChanged);
    }
    let sign = |key: &IdentityKeyPair, msg: &[u8]| {
        key.private_key()
            .calculate_signature(msg, &mut rand::rng())
            .map(|s| s.to_vec())
            .map_err(|e| LinkError::Protocol(e.to_string()))
    };
    let auth = ClientFrame::Auth {
        account_id: account_id.to_string(),
        signature: sign(current, &wire::auth_message(&nonce))?.into(),
    };
    let rekey = ClientFrame::Rekey {
        req: 1,
        proof: sign(new, &wire::auth_message(&nonce))?.into(),
        endorsement: sign(current, &wire::rekey_message(&keys.identity_key.0))?.into(),
        keys,
    };
    for frame in [auth, rekey] {
        ws.send(Message::text(frame.encode()))
            .await
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
    }
    let answer = loop {
        match finish_sign_in(&mut ws).await? {
            RelayFrame::Ok { req: 1 } => break Ok(()),
            RelayFrame::Error {
                req: Some(1),
                code,
                message,
            } => break Err(LinkError::Refused { code, message }),
            // Sign-in answers, counts and deliveries: the key change is what we wait for.
            _ => continue,
        }
    };
    let _ = ws.close(None).await;
    answer
}
