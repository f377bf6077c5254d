//! One client connection on the relay: the challenge, authentication or registration, then
//! the request loop and the push of queued envelopes within the delivery window (and of
//! online-only ones, outside it: see `online_only`).
//!
//! Owns a single WebSocket. Must not read envelope contents: bodies and sealed envelopes are
//! passed to the store as opaque bytes. Any fault here ends only this connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use libsignal_protocol::IdentityKey;
use rand::RngCore;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

mod fanout;

use super::blobs::{self, BlobSession, Owner};
use super::handshake::{Failed, Ws};
use super::limits::Ticket;
use super::liveness::{Due, Liveness};
use super::online_only;
use super::push::{Acked, Pusher, Step};
use super::rate::Bucket;
use super::stats::{ConnState, Reason};
use super::store::{NewEnvelope, Origin, Queued, StoreError, Stored};
use super::transport::WriteFault;
use super::writer::Enqueued;
use super::{Relay, Signals};
use crate::wire::{
    self, B64, ClientFrame, ErrorCode, FrameError, KeyChangeVia, MAX_PAYLOAD_BYTES,
    MAX_PREKEYS_PER_UPLOAD, Payload, RelayFrame, SignedKey,
};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a connection ends.
enum End {
    /// The peer went away or broke the WebSocket.
    Gone,
    /// We close it after telling the peer why.
    Close(ErrorCode, String),
}

/// Reads the next text/binary payload and shows it to the tap, if any.
async fn next_payload(relay: &Relay, ws: &mut Ws) -> Result<Vec<u8>, End> {
    let payload = read_payload(relay, ws).await?;
    if let Some(tap) = &relay.config.tap {
        tap(&payload);
    }
    Ok(payload)
}

/// Reads the next text/binary payload; pings, pongs and frames are handled by tungstenite.
async fn read_payload(relay: &Relay, ws: &mut Ws) -> Result<Vec<u8>, End> {
    loop {
        let next = ws.next().await;
        if let Some(Ok(_)) = next {
            // A whole frame: what arrived so far is no frame in progress.
            ws.get_mut().settle();
        }
        match next {
            None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                return Err(End::Gone);
            }
            Some(Err(WsError::Capacity(e))) => {
                relay.stats.record_rejection(Reason::TooLarge);
                return Err(End::Close(
                    ErrorCode::TooLarge,
                    format!("frame refused: {e}"),
                ));
            }
            Some(Err(_)) => return Err(End::Gone),
            Some(Ok(Message::Text(t))) => return Ok(t.as_bytes().to_vec()),
            Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
            Some(Ok(Message::Close(_))) => return Err(End::Gone),
            Some(Ok(_)) => continue,
        }
    }
}

async fn send(ws: &mut Ws, frame: &RelayFrame) -> Result<(), End> {
    ws.send(Message::text(frame.encode()))
        .await
        .map_err(|_| End::Gone)
}

/// Queues `frame` without flushing: a batch of frames then leaves in one write.
async fn feed(ws: &mut Ws, frame: &RelayFrame) -> Result<(), End> {
    ws.feed(Message::text(frame.encode()))
        .await
        .map_err(|_| End::Gone)
}

/// Writes out what `feed` queued.
async fn flush(ws: &mut Ws) -> Result<(), End> {
    ws.flush().await.map_err(|_| End::Gone)
}

/// When the connection's next ping or deadline check is due.
fn next_check(ws: &Ws, live: &Liveness) -> Instant {
    live.next_check(&ws.get_ref().clock(), Instant::now())
}

/// Pings the peer if it has been quiet, or ends a connection that is silent past the idle
/// deadline or has left a frame unfinished past the frame deadline.
async fn keep_alive(relay: &Relay, ws: &mut Ws, live: &mut Liveness) -> Result<(), End> {
    match live.check(&ws.get_ref().clock(), Instant::now()) {
        Due::Nothing => Ok(()),
        Due::Ping => ws
            .send(Message::Ping(Default::default()))
            .await
            .map_err(|_| End::Gone),
        Due::Close(reason) => {
            relay.stats.record_rejection(reason);
            Err(End::Gone)
        }
    }
}

fn liveness(relay: &Relay) -> Liveness {
    let c = &relay.config;
    Liveness::new(c.ping_interval, c.idle_timeout, c.frame_timeout)
}

fn error(req: Option<u64>, code: ErrorCode, message: impl Into<String>) -> RelayFrame {
    RelayFrame::Error {
        req,
        code,
        message: message.into(),
    }
}

fn too_large(req: u64) -> RelayFrame {
    error(
        Some(req),
        ErrorCode::TooLarge,
        format!("a message may carry at most {MAX_PAYLOAD_BYTES} bytes"),
    )
}

fn frame_error(e: FrameError) -> RelayFrame {
    match e {
        FrameError::TooLarge(_) => error(None, ErrorCode::TooLarge, e.to_string()),
        FrameError::Malformed(_) => error(None, ErrorCode::Malformed, e.to_string()),
    }
}

/// Serves one accepted TCP connection to its end; `ticket` is its place in the caps.
pub(crate) async fn serve(
    relay: Arc<Relay>,
    stream: TcpStream,
    peer: SocketAddr,
    mut ticket: Ticket,
    conn_id: u64,
    shutdown: CancellationToken,
) {
    let mut ws = match super::handshake::handshake(&relay, stream, &shutdown).await {
        Ok(ws) => ws,
        Err(Failed::TimedOut) => {
            relay.stats.record_rejection(Reason::HandshakeTimeout);
            tracing::debug!(%peer, "handshake not done in time");
            return;
        }
        Err(Failed::Other) => return,
    };
    let _ = ticket.enter(ConnState::SigningIn);
    let end = tokio::select! {
        e = session(&relay, &mut ws, &mut ticket, conn_id, &shutdown) => e,
        _ = shutdown.cancelled() => End::Gone,
    };
    if let End::Close(code, message) = end {
        let _ = send(&mut ws, &error(None, code, message)).await;
    }
    let _ = ws.close(None).await;
    if ws.get_ref().fault() == Some(WriteFault::TimedOut) {
        relay.stats.record_rejection(Reason::WriteTimeout);
        tracing::debug!(%peer, "connection dropped: the peer does not read");
    }
}

async fn session(
    relay: &Arc<Relay>,
    ws: &mut Ws,
    ticket: &mut Ticket,
    conn_id: u64,
    shutdown: &CancellationToken,
) -> End {
    let mut nonce = vec![0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    let challenge = RelayFrame::Challenge {
        nonce: B64(nonce.clone()),
        version: wire::PROTOCOL_VERSION,
        trust_root: relay.authority.trust_root().serialize().to_vec().into(),
    };
    if let Err(e) = send(ws, &challenge).await {
        return e;
    }
    let first = match tokio::time::timeout(relay.config.auth_timeout, next_payload(relay, ws)).await
    {
        Err(_) => {
            relay.stats.record_rejection(Reason::AuthTimeout);
            return End::Close(
                ErrorCode::NotAuthenticated,
                "no authentication within the time limit".into(),
            );
        }
        Ok(Err(e)) => return e,
        Ok(Ok(bytes)) => bytes,
    };
    let frame = match ClientFrame::decode(&first) {
        Ok(f) => f,
        Err(e) => {
            return End::Close(
                ErrorCode::NotAuthenticated,
                format!("the first frame must authenticate; {e}"),
            );
        }
    };
    let account = match frame {
        ClientFrame::Anonymous => {
            if let Err(reason) = ticket.enter(ConnState::Anonymous) {
                relay.stats.record_rejection(reason);
                let _ = send(ws, &super::handshake::refusal(relay, reason)).await;
                return End::Gone;
            }
            if let Err(e) = send(ws, &RelayFrame::AnonymousOk).await {
                return e;
            }
            return anonymous(relay, ws).await;
        }
        ClientFrame::Auth {
            account_id,
            signature,
        } => match authenticate(relay, &account_id, &nonce, &signature.0).await {
            Ok(handle) => (account_id, handle),
            Err(e) => return e,
        },
        ClientFrame::Register {
            handle,
            keys,
            signature,
            claim,
        } => match register(
            relay,
            source(ws),
            handle.clone(),
            keys,
            &nonce,
            &signature.0,
            claim,
        )
        .await
        {
            Ok(account_id) => (account_id, handle),
            Err(e) => return e,
        },
        _ => {
            return End::Close(
                ErrorCode::NotAuthenticated,
                "authenticate before sending anything else".into(),
            );
        }
    };
    let (account_id, handle) = account;
    let signals = Signals {
        kick: shutdown.child_token(),
        ..Signals::default()
    };
    let _ = ticket.enter(ConnState::SignedIn);
    // A newer connection for the account ends this one even while it waits in a write.
    ws.get_mut().interrupt_writes_on(signals.kick.clone());
    let seat = relay.go_online(&account_id, conn_id, &signals);
    let end = authenticated(relay, ws, &account_id, &handle, &signals, &nonce).await;
    drop(seat);
    if signals.kick.is_cancelled() && !shutdown.is_cancelled() {
        relay.stats.record_rejection(Reason::Kicked);
    }
    end
}

async fn authenticate(
    relay: &Arc<Relay>,
    account_id: &str,
    nonce: &[u8],
    signature: &[u8],
) -> Result<String, End> {
    let id = account_id.to_string();
    let account = relay
        .db(move |db| db.account_by_id(&id))
        .await
        .map_err(internal)?;
    // One answer for an unknown account and a bad signature, so that sign-in cannot be used
    // to learn which account ids exist.
    match account {
        Some(a) if verify(&a.identity_key, nonce, signature) => Ok(a.handle),
        _ => Err(End::Close(
            ErrorCode::AuthFailed,
            "authentication failed".into(),
        )),
    }
}

fn verify(identity_key: &[u8], nonce: &[u8], signature: &[u8]) -> bool {
    IdentityKey::decode(identity_key)
        .map(|k| {
            k.public_key()
                .verify_signature(&wire::auth_message(nonce), signature)
        })
        .unwrap_or(false)
}

/// Whether every signed prekey of an upload verifies under `identity_key`: the signature
/// is over the prekey's serialized public key, as `client::crypto` makes it. Checked before
/// anything is stored, so the directory never hands out a key its owner did not sign.
/// Run off the async threads: a full upload is a few hundred verifications.
async fn prekeys_signed(identity_key: &[u8], keys: Vec<SignedKey>) -> bool {
    let Ok(identity) = IdentityKey::decode(identity_key) else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        keys.iter().all(|k| {
            identity
                .public_key()
                .verify_signature(&k.public.0, &k.signature.0)
        })
    })
    .await
    .unwrap_or(false)
}

/// The signed prekeys of a registration or rekey: the signed EC prekey, the last-resort
/// Kyber key and every one-time Kyber key.
fn signed_keys(keys: &wire::KeyUpload) -> Vec<SignedKey> {
    let mut all = vec![keys.signed_prekey.clone(), keys.kyber_last_resort.clone()];
    all.extend(keys.one_time_kyber.iter().cloned());
    all
}

/// Requests in a row refused for a rate or a quota before the connection is closed. A
/// client backs off after a refusal; one that goes on asking costs the relay a TLS record, a
/// JSON answer and a bucket check each time (a bundle drain got 120,000 refusals in 20 s,
/// half a core). Sends are not counted: a client sending its queue after a wait may meet a
/// full mailbox with each of them.
const MAX_REFUSED_IN_A_ROW: u32 = 64;

const BAD_PREKEY_SIGNATURE: &str =
    "a prekey's signature does not verify under the account's identity key";

/// The address registrations and anonymous blobs are counted against (see
/// `limits::source`).
fn source(ws: &Ws) -> IpAddr {
    match ws.get_ref().peer_addr() {
        Ok(a) => super::limits::source(a.ip()),
        Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

fn internal(e: StoreError) -> End {
    tracing::error!(error = %e, "store failure");
    End::Close(
        ErrorCode::Internal,
        "the relay could not complete the request".into(),
    )
}

async fn register(
    relay: &Arc<Relay>,
    source: IpAddr,
    handle: String,
    keys: wire::KeyUpload,
    nonce: &[u8],
    signature: &[u8],
    claim: Option<String>,
) -> Result<String, End> {
    if !relay.rates.registrations.take(&source) {
        tracing::info!("registration refused: too many from one address");
        return Err(End::Close(
            ErrorCode::RateLimited,
            "too many registrations from your network address; try again in an hour".into(),
        ));
    }
    if !wire::valid_handle(&handle) {
        return Err(End::Close(
            ErrorCode::InvalidHandle,
            "a handle is 1 to 32 characters of a-z, 0-9, '_', '.', '-'".into(),
        ));
    }
    // Stored and compared only in canonical form, so the same key with trailing bytes
    // is the same key (already registered), not a new one.
    let Some(identity_key) = crate::identity::canonical(&keys.identity_key.0) else {
        return Err(End::Close(
            ErrorCode::Malformed,
            "the identity key is not a valid key".into(),
        ));
    };
    let mut keys = keys;
    keys.identity_key = B64(identity_key);
    if !verify(&keys.identity_key.0, nonce, signature) {
        return Err(End::Close(
            ErrorCode::AuthFailed,
            "the challenge signature does not verify".into(),
        ));
    }
    if keys.one_time_prekeys.len() > MAX_PREKEYS_PER_UPLOAD
        || keys.one_time_kyber.len() > MAX_PREKEYS_PER_UPLOAD
    {
        return Err(End::Close(
            ErrorCode::TooLarge,
            format!("at most {MAX_PREKEYS_PER_UPLOAD} one-time keys of each kind per upload"),
        ));
    }
    if too_many_one_time(relay, &keys) {
        return Err(End::Close(
            ErrorCode::QuotaExceeded,
            one_time_quota(relay.config.max_one_time_prekeys),
        ));
    }
    if !prekeys_signed(&keys.identity_key.0, signed_keys(&keys)).await {
        return Err(End::Close(
            ErrorCode::Malformed,
            BAD_PREKEY_SIGNATURE.into(),
        ));
    }
    if let Some(code) = claim {
        let (h, now) = (handle.clone(), now_ms());
        return match relay
            .db(move |db| db.claim_reset(&h, code.as_bytes(), &keys, now))
            .await
        {
            Ok(Some(account_id)) => {
                tracing::info!("a reset handle was claimed with new keys");
                Ok(account_id)
            }
            Ok(None) => Err(End::Close(
                ErrorCode::AuthFailed,
                "that claim code is not valid for this handle; ask the relay's operator".into(),
            )),
            Err(e @ StoreError::KeyTaken) => Err(End::Close(ErrorCode::HandleTaken, e.to_string())),
            Err(e) => Err(internal(e)),
        };
    }
    let account_id = uuid::Uuid::new_v4().to_string();
    let mut token = vec![0u8; 16];
    rand::rng().fill_bytes(&mut token);
    let id = account_id.clone();
    let now = now_ms();
    match relay
        .db(move |db| db.register(&id, &handle, &keys, &token, now))
        .await
    {
        Ok(()) => Ok(account_id),
        Err(e @ (StoreError::HandleTaken(_) | StoreError::KeyTaken)) => {
            Err(End::Close(ErrorCode::HandleTaken, e.to_string()))
        }
        Err(e) => Err(internal(e)),
    }
}

/// An anonymous connection may only submit sealed envelopes and use the blob store (as its
/// source address: it has no account).
async fn anonymous(relay: &Arc<Relay>, ws: &mut Ws) -> End {
    let mut blob_session = BlobSession::new(Owner::Address(source(ws)));
    let mut committing = Committing::default();
    let mut live = liveness(relay);
    loop {
        let wake = next_check(ws, &live);
        let bytes = tokio::select! {
            _ = tokio::time::sleep_until(wake), if committing.has_room() => {
                if let Err(e) = keep_alive(relay, ws, &mut live).await {
                    return e;
                }
                continue;
            }
            reply = committing.next() => {
                if let Err(e) = committing.send_due(ws, reply).await {
                    return e;
                }
                continue;
            }
            b = next_payload(relay, ws), if committing.has_room() => match b {
                Ok(b) => b,
                Err(e) => return e,
            },
        };
        let accepted = match ClientFrame::decode(&bytes) {
            Err(e) => Accepted::now(frame_error(e)),
            Ok(ClientFrame::SendSealed { req, envelope, .. })
                if envelope.0.len() > MAX_PAYLOAD_BYTES =>
            {
                Accepted::now(too_large(req))
            }
            Ok(ClientFrame::SendSealed {
                req,
                to,
                access_token,
                envelope,
                recipient_key,
                online_only: true,
                ..
            }) => {
                let origin = Origin::Sealed {
                    access_token: access_token.0,
                    recipient_key: recipient_key.map(|k| k.0),
                };
                pass_on(relay, req, to, origin, envelope.0, SEALED_NO_RECIPIENT)
            }
            Ok(ClientFrame::SendSealed {
                req,
                to,
                access_token,
                envelope,
                expires_at,
                recipient_key,
                online_only: false,
            }) => {
                let key = recipient_key.map(|k| k.0);
                send_sealed(relay, req, to, access_token.0, envelope.0, expires_at, key).await
            }
            Ok(ClientFrame::SendMulti {
                req,
                envelope,
                recipients,
                expires_at,
                online_only,
            }) => match fanout::sealed(relay, req, &envelope.0, recipients, expires_at) {
                Ok(copies) => {
                    let f = fanout::FanOut {
                        req,
                        copies,
                        online_only,
                    };
                    fanout::submit(relay, f, SEALED_NO_RECIPIENT, true).await
                }
                Err(refusal) => Accepted::Now(refusal),
            },
            Ok(f) if blobs::is_blob_request(&f) => {
                Accepted::now(blobs::request(relay, &mut blob_session, f).await)
            }
            Ok(_) => Accepted::now(error(
                None,
                ErrorCode::Forbidden,
                "an anonymous connection may only send sealed envelopes and use the blob store",
            )),
        };
        if let Err(e) = committing.answer(ws, accepted).await {
            return e;
        }
    }
}

/// Queues a sealed envelope. Whether the recipient exists, the access token and the
/// identity key the sender encrypted to are checked by the writer as it inserts.
async fn send_sealed(
    relay: &Arc<Relay>,
    req: u64,
    to: String,
    access_token: Vec<u8>,
    envelope: Vec<u8>,
    expires_at: Option<u64>,
    recipient_key: Option<Vec<u8>>,
) -> Accepted {
    let committed = relay
        .writer
        .enqueue(NewEnvelope {
            recipient: to,
            origin: Origin::Sealed {
                access_token,
                recipient_key,
            },
            payload: envelope,
            received_at: now_ms(),
            expires_at,
        })
        .await;
    Accepted::Later(answer_when_committed(req, committed, SEALED_NO_RECIPIENT))
}

/// One answer for "no such account" and "wrong token", so that the sealed path cannot be
/// used to probe which account ids exist.
const SEALED_NO_RECIPIENT: &str = "no such recipient, or the access token is wrong";

/// Hands an online-only envelope to its recipient's connection, or drops it if there is
/// none (see `online_only`); answered in turn with the envelopes before it, and the same
/// way whether the recipient was online or not.
fn pass_on(
    relay: &Arc<Relay>,
    req: u64,
    to: String,
    origin: Origin,
    payload: Vec<u8>,
    no_recipient: &'static str,
) -> Accepted {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Accepted::now(too_large(req));
    }
    let passed = online_only::pass_on(
        relay.clone(),
        NewEnvelope {
            recipient: to,
            origin,
            payload,
            received_at: now_ms(),
            expires_at: None,
        },
    );
    Accepted::Later(answer_when_committed(req, passed, no_recipient))
}

/// Writes out the online-only envelopes handed to this connection, never to be acked.
async fn push_online_only(ws: &mut Ws, items: Vec<Queued>) -> Result<(), End> {
    if items.is_empty() {
        return Ok(());
    }
    for q in items {
        let received_at = q.received_at;
        let frame = RelayFrame::Deliver {
            id: 0,
            received_at,
            payload: payload(q),
            online_only: true,
        };
        feed(ws, &frame).await?;
    }
    flush(ws).await
}

/// What a delivery frame carries of `q`.
fn payload(q: Queued) -> Payload {
    if q.sealed {
        Payload::Sealed {
            envelope: q.payload.into(),
        }
    } else {
        Payload::Normal {
            from: q.sender.unwrap_or_default(),
            from_handle: q.sender_handle.unwrap_or_default(),
            body: q.payload.into(),
        }
    }
}

/// Queues a normal envelope from `from`.
async fn send_normal(
    relay: &Arc<Relay>,
    from: &str,
    from_handle: &str,
    req: u64,
    to: String,
    body: Vec<u8>,
    expires_at: Option<u64>,
) -> Accepted {
    if body.len() > MAX_PAYLOAD_BYTES {
        return Accepted::now(too_large(req));
    }
    // The writer checks that the recipient exists as it inserts: no separate lookup.
    let committed = relay
        .writer
        .enqueue(NewEnvelope {
            recipient: to,
            origin: Origin::Account {
                id: from.to_string(),
                handle: from_handle.to_string(),
            },
            payload: body,
            received_at: now_ms(),
            expires_at,
        })
        .await;
    Accepted::Later(answer_when_committed(req, committed, "no such recipient"))
}

/// What a connection answers to an envelope: at once (a refusal), or once the envelope is
/// committed, so that an `ok` always means it is on disk.
enum Accepted {
    Now(Box<RelayFrame>),
    Later(BoxFuture<'static, RelayFrame>),
}

impl Accepted {
    fn now(reply: RelayFrame) -> Self {
        Accepted::Now(Box::new(reply))
    }
}

/// The `ok` for envelope `req`, given once it is committed (the writer has handed it to the
/// recipient's connection by then). A refused envelope is answered `not_found` with
/// `no_recipient`.
fn answer_when_committed(
    req: u64,
    committed: impl Future<Output = Enqueued> + Send + 'static,
    no_recipient: &'static str,
) -> BoxFuture<'static, RelayFrame> {
    Box::pin(async move {
        match committed.await {
            Some(Stored::Queued(_)) => RelayFrame::Ok { req },
            Some(Stored::NoRecipient) => error(Some(req), ErrorCode::NotFound, no_recipient),
            Some(Stored::StaleKey) => error(
                Some(req),
                ErrorCode::IdentityChanged,
                "the recipient's identity key has changed; look them up again",
            ),
            Some(Stored::OverQuota(quota)) => {
                error(Some(req), ErrorCode::QuotaExceeded, quota.message())
            }
            None => not_stored(req),
        }
    })
}

/// The answers a connection owes for envelopes still on their way to the disk, in the order
/// the envelopes came.
#[derive(Default)]
struct Committing(FuturesOrdered<BoxFuture<'static, RelayFrame>>);

impl Committing {
    /// Envelopes one connection may have waiting for a commit before it stops reading more.
    const MAX: usize = 256;

    fn has_room(&self) -> bool {
        self.0.len() < Self::MAX
    }

    /// Answers now, or queues the answer for when the envelope is committed.
    async fn answer(&mut self, ws: &mut Ws, accepted: Accepted) -> Result<(), End> {
        match accepted {
            Accepted::Now(reply) => send(ws, &reply).await,
            Accepted::Later(f) => {
                self.0.push_back(f);
                Ok(())
            }
        }
    }

    /// Sends `first` and every other answer already due, in one write: one group commit
    /// often completes many of a connection's envelopes at once.
    async fn send_due(&mut self, ws: &mut Ws, first: RelayFrame) -> Result<(), End> {
        feed(ws, &first).await?;
        while let Some(Some(reply)) = self.0.next().now_or_never() {
            feed(ws, &reply).await?;
        }
        flush(ws).await
    }

    /// The next answer due; pending forever while nothing waits, for use in `select!`.
    async fn next(&mut self) -> RelayFrame {
        match self.0.next().await {
            Some(reply) => reply,
            None => std::future::pending().await,
        }
    }
}

/// Carries out the pusher's steps on the socket and the queue.
async fn carry_out(
    relay: &Arc<Relay>,
    ws: &mut Ws,
    account_id: &str,
    steps: Vec<Step>,
) -> Result<(), End> {
    for step in steps {
        match step {
            Step::Deliver(q) => {
                let (id, received_at) = (q.id, q.received_at);
                let frame = RelayFrame::Deliver {
                    id,
                    received_at,
                    payload: payload(q),
                    online_only: false,
                };
                feed(ws, &frame).await?;
            }
            Step::Remove(id, urgency) => relay.writer.remove(account_id, id, urgency).await,
            Step::Flush => flush(ws).await?,
            Step::Drained => send(ws, &RelayFrame::Drained).await?,
        }
    }
    Ok(())
}

/// A round of reads of the queue, pushing what they find while the pusher asks for more.
async fn push(
    relay: &Arc<Relay>,
    ws: &mut Ws,
    account_id: &str,
    pusher: &mut Pusher,
) -> Result<(), End> {
    pusher.start_round();
    while let Some(read) = pusher.next_read() {
        let id = account_id.to_string();
        let batch = relay
            .db(move |db| db.pending(&id, read.after, read.room))
            .await
            .map_err(internal)?;
        let steps = pusher.read(read, batch, now_ms());
        carry_out(relay, ws, account_id, steps).await?;
    }
    Ok(())
}

/// Counts an ack of an envelope not in flight on this connection; past the rate, the
/// connection is closed.
fn unknown_ack(relay: &Relay, bucket: &mut Option<Bucket>) -> Result<(), End> {
    let rate = relay.rates.unknown_acks();
    let bucket = bucket.get_or_insert_with(|| Bucket::new(rate));
    if bucket.take(rate) {
        return Ok(());
    }
    tracing::info!("connection closed: too many acks of envelopes not delivered on it");
    Err(End::Close(
        ErrorCode::RateLimited,
        "too many acks of envelopes not delivered on this connection".into(),
    ))
}

async fn authenticated(
    relay: &Arc<Relay>,
    ws: &mut Ws,
    account_id: &str,
    handle: &str,
    signals: &Signals,
    nonce: &[u8],
) -> End {
    let hello = RelayFrame::Authenticated {
        account_id: account_id.to_string(),
        handle: handle.to_string(),
    };
    if let Err(e) = send(ws, &hello).await {
        return e;
    }
    if let Err(e) = send_prekey_count(relay, ws, account_id).await {
        return e;
    }
    let mut pusher = Pusher::new(relay.config.delivery_window);
    // Acks of envelopes not in flight here, against `RateLimits::unknown_acks_per_minute`.
    let mut unknown_acks = None;
    let mut blob_session = BlobSession::new(Owner::Account(account_id.to_string()));
    // Acks from an earlier connection of this account have taken effect, so nothing it
    // acknowledged is pushed again.
    relay.writer.flush().await;
    if let Err(e) = push(relay, ws, account_id, &mut pusher).await {
        return e;
    }
    let mut committing = Committing::default();
    let mut refused_in_a_row = 0;
    let mut live = liveness(relay);
    loop {
        let wake = next_check(ws, &live);
        let bytes = tokio::select! {
            reply = committing.next() => {
                if let Err(e) = committing.send_due(ws, reply).await {
                    return e;
                }
                continue;
            }
            _ = tokio::time::sleep_until(wake), if committing.has_room() => {
                if let Err(e) = keep_alive(relay, ws, &mut live).await {
                    return e;
                }
                continue;
            }
            _ = signals.kick.cancelled() => {
                return End::Close(ErrorCode::Forbidden, "another connection signed in for this account".into());
            }
            () = signals.mail.arrived() => {
                let steps = pusher.mail(signals.mail.take(), now_ms());
                if let Err(e) = carry_out(relay, ws, account_id, steps).await {
                    return e;
                }
                if let Err(e) = push(relay, ws, account_id, &mut pusher).await {
                    return e;
                }
                continue;
            }
            () = signals.online_only.arrived() => {
                if let Err(e) = push_online_only(ws, signals.online_only.take()).await {
                    return e;
                }
                continue;
            }
            () = signals.mail.committed(), if pusher.awaiting_commit() => {
                if let Err(e) = push(relay, ws, account_id, &mut pusher).await {
                    return e;
                }
                continue;
            }
            _ = signals.refill.notified() => {
                if let Err(e) = send_prekey_count(relay, ws, account_id).await {
                    return e;
                }
                continue;
            }
            b = next_payload(relay, ws), if committing.has_room() => match b {
                Ok(b) => b,
                Err(e) => return e,
            },
        };
        let frame = match ClientFrame::decode(&bytes) {
            Ok(f) => f,
            Err(e) => {
                if let Err(e) = send(ws, &frame_error(e)).await {
                    return e;
                }
                continue;
            }
        };
        let result = match frame {
            ClientFrame::Ack { id } => match pusher.ack(id) {
                // The delete is queued behind earlier writes, not waited for: what the
                // connection pushes next comes after `id` anyway.
                Acked::InFlight(urgency) => {
                    relay.writer.remove(account_id, id, urgency).await;
                    push(relay, ws, account_id, &mut pusher).await
                }
                // Ignored without touching the database; a flood of them ends the
                // connection.
                Acked::Unknown => unknown_ack(relay, &mut unknown_acks),
            },
            ClientFrame::Send {
                req,
                to,
                body,
                online_only: true,
                ..
            } => {
                let origin = Origin::Account {
                    id: account_id.to_string(),
                    handle: handle.to_string(),
                };
                let accepted = pass_on(relay, req, to, origin, body.0, "no such recipient");
                committing.answer(ws, accepted).await
            }
            ClientFrame::Send {
                req,
                to,
                body,
                expires_at,
                online_only: false,
            } => {
                let accepted =
                    send_normal(relay, account_id, handle, req, to, body.0, expires_at).await;
                committing.answer(ws, accepted).await
            }
            ClientFrame::SendGroup {
                req,
                to,
                body,
                expires_at,
                online_only,
            } => {
                let from = (account_id, handle);
                let accepted = match fanout::normal(relay, req, from, to, body.0, expires_at) {
                    Ok(copies) => {
                        let f = fanout::FanOut {
                            req,
                            copies,
                            online_only,
                        };
                        fanout::submit(relay, f, "no such recipient", false).await
                    }
                    Err(refusal) => Accepted::Now(refusal),
                };
                committing.answer(ws, accepted).await
            }
            other => {
                // Acks sent before a request have taken effect by its answer.
                relay.writer.flush().await;
                let upload = matches!(other, ClientFrame::UploadPreKeys { .. });
                let reply = if blobs::is_blob_request(&other) {
                    blobs::request(relay, &mut blob_session, other).await
                } else {
                    request(relay, account_id, nonce, other).await
                };
                let accepted = matches!(reply, RelayFrame::Ok { .. });
                let refused = matches!(
                    reply,
                    RelayFrame::Error {
                        code: ErrorCode::RateLimited | ErrorCode::QuotaExceeded,
                        ..
                    }
                );
                refused_in_a_row = if refused { refused_in_a_row + 1 } else { 0 };
                match send(ws, &reply).await {
                    // The count the client watches has changed.
                    Ok(()) if upload && accepted => send_prekey_count(relay, ws, account_id).await,
                    Ok(()) if refused_in_a_row >= MAX_REFUSED_IN_A_ROW => {
                        relay.stats.record_rejection(Reason::RefusedInARow);
                        tracing::info!("connection closed: it goes on asking while refused");
                        Err(End::Close(
                            ErrorCode::RateLimited,
                            format!(
                                "{MAX_REFUSED_IN_A_ROW} requests in a row were refused for a rate or a quota; wait before asking again"
                            ),
                        ))
                    }
                    sent => sent,
                }
            }
        };
        if let Err(e) = result {
            return e;
        }
    }
}

async fn send_prekey_count(relay: &Arc<Relay>, ws: &mut Ws, account_id: &str) -> Result<(), End> {
    let id = account_id.to_string();
    let (ec, kyber) = relay
        .db(move |db| db.prekey_count(&id))
        .await
        .map_err(internal)?;
    send(ws, &RelayFrame::PreKeyCount { ec, kyber }).await
}

/// Answers one request of an authenticated connection.
async fn request(
    relay: &Arc<Relay>,
    account_id: &str,
    nonce: &[u8],
    frame: ClientFrame,
) -> RelayFrame {
    match frame {
        ClientFrame::Lookup {
            req,
            handle: None,
            account_id: None,
        }
        | ClientFrame::Lookup {
            req,
            handle: Some(_),
            account_id: Some(_),
        } => error(
            Some(req),
            ErrorCode::Malformed,
            "a lookup names exactly one of handle and account_id",
        ),
        ClientFrame::Lookup {
            req,
            handle,
            account_id: by_id,
        } => {
            if !relay.rates.lookups.take(&account_id.to_string()) {
                return rate_limited(req, "directory lookups");
            }
            let found = relay
                .db(move |db| {
                    let account = match (handle, by_id) {
                        (Some(h), _) => db.account_by_handle(&h),
                        (_, Some(id)) => db.account_by_id(&id),
                        (None, None) => Ok(None),
                    }?;
                    account
                        .map(|a| Ok((db.key_history(&a.account_id)?, a)))
                        .transpose()
                })
                .await;
            match found {
                Ok(Some((key_changes, a))) => RelayFrame::Account {
                    req,
                    account_id: a.account_id,
                    handle: a.handle,
                    identity_key: a.identity_key.into(),
                    access_token: a.access_token.into(),
                    key_changes,
                },
                Ok(None) => error(
                    Some(req),
                    ErrorCode::NotFound,
                    "no account with that handle",
                ),
                Err(e) => store_error(req, e),
            }
        }
        ClientFrame::FetchBundle {
            req,
            account_id: of,
        } => {
            if !relay
                .rates
                .bundles_by_requester
                .take(&account_id.to_string())
            {
                return rate_limited(req, "prekey bundle requests");
            }
            // Beyond its rate, a target's bundles come without one-time keys: sessions can
            // still be set up (with the last-resort Kyber key), and a drain cannot empty the
            // pools its real contacts need.
            let one_time = relay.rates.bundles_of_target.take(&of);
            let woken = of.clone();
            match relay.db(move |db| db.take_bundle(&of, one_time)).await {
                Ok(bundle) => {
                    // The owner may want to top up its one-time keys.
                    if one_time {
                        relay.refill(&woken);
                    }
                    RelayFrame::Bundle { req, bundle }
                }
                Err(StoreError::NotFound) => {
                    error(Some(req), ErrorCode::NotFound, "no such account")
                }
                Err(e) => store_error(req, e),
            }
        }
        ClientFrame::GetSenderCert { req } => {
            let id = account_id.to_string();
            let account = relay.db(move |db| db.account_by_id(&id)).await;
            match account {
                Ok(Some(a)) => match relay.authority.issue(&a.account_id, &a.identity_key) {
                    Ok(certificate) => RelayFrame::SenderCert {
                        req,
                        certificate: certificate.into(),
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "certificate issue failed");
                        error(
                            Some(req),
                            ErrorCode::Internal,
                            "the relay could not issue a certificate",
                        )
                    }
                },
                Ok(None) => error(Some(req), ErrorCode::NotFound, "no such account"),
                Err(e) => store_error(req, e),
            }
        }
        ClientFrame::UploadPreKeys {
            req,
            prekeys,
            kyber,
        } => {
            if prekeys.len() > MAX_PREKEYS_PER_UPLOAD || kyber.len() > MAX_PREKEYS_PER_UPLOAD {
                return error(
                    Some(req),
                    ErrorCode::TooLarge,
                    format!("at most {MAX_PREKEYS_PER_UPLOAD} keys of each kind per upload"),
                );
            }
            if !relay.rates.uploads.take(&account_id.to_string()) {
                return rate_limited(req, "prekey uploads");
            }
            let id = account_id.to_string();
            let identity_key = match relay.db(move |db| db.account_by_id(&id)).await {
                Ok(Some(a)) => a.identity_key,
                Ok(None) => return error(Some(req), ErrorCode::NotFound, "no such account"),
                Err(e) => return store_error(req, e),
            };
            if !prekeys_signed(&identity_key, kyber.clone()).await {
                return error(Some(req), ErrorCode::Malformed, BAD_PREKEY_SIGNATURE);
            }
            let (id, max) = (account_id.to_string(), relay.config.max_one_time_prekeys);
            match relay
                .db(move |db| db.upload_prekeys(&id, &prekeys, &kyber, max))
                .await
            {
                Ok(true) => RelayFrame::Ok { req },
                Ok(false) => error(Some(req), ErrorCode::QuotaExceeded, one_time_quota(max)),
                Err(e) => store_error(req, e),
            }
        }
        ClientFrame::SendSealed { req, .. } | ClientFrame::SendMulti { req, .. } => error(
            Some(req),
            ErrorCode::Forbidden,
            "sealed envelopes go over an anonymous connection, never one that names the sender",
        ),
        ClientFrame::Auth { .. } | ClientFrame::Register { .. } | ClientFrame::Anonymous => error(
            None,
            ErrorCode::Forbidden,
            "this connection is already authenticated",
        ),
        ClientFrame::Rekey {
            req,
            keys,
            proof,
            endorsement,
        } => {
            rekey(
                relay,
                account_id,
                nonce,
                req,
                keys,
                &proof.0,
                &endorsement.0,
            )
            .await
        }
        // Acks and envelopes are handled by the caller, which owns the delivery window and
        // the answers still waiting for a commit; blob requests by `blobs`, with the
        // connection's `BlobSession`.
        ClientFrame::Ack { .. }
        | ClientFrame::Send { .. }
        | ClientFrame::SendGroup { .. }
        | ClientFrame::BlobCreate { .. }
        | ClientFrame::BlobPut { .. }
        | ClientFrame::BlobStatus { .. }
        | ClientFrame::BlobGet { .. }
        | ClientFrame::BlobFetched { .. } => error(None, ErrorCode::Malformed, "unexpected frame"),
    }
}

/// The answer to a request beyond its rate.
fn rate_limited(req: u64, what: &str) -> RelayFrame {
    error(
        Some(req),
        ErrorCode::RateLimited,
        format!("too many {what} in a short time; wait a moment and try again"),
    )
}

fn one_time_quota(max: u32) -> String {
    format!("the directory holds at most {max} one-time prekeys of each kind per account")
}

/// Whether a registration or rekey carries more one-time keys than the directory holds.
fn too_many_one_time(relay: &Relay, keys: &wire::KeyUpload) -> bool {
    let max = relay.config.max_one_time_prekeys as usize;
    keys.one_time_prekeys.len() > max || keys.one_time_kyber.len() > max
}

/// The writer could not commit the envelope (it logged why).
fn not_stored(req: u64) -> RelayFrame {
    error(
        Some(req),
        ErrorCode::Internal,
        "the relay could not store the envelope; try again",
    )
}

fn store_error(req: u64, e: StoreError) -> RelayFrame {
    tracing::error!(error = %e, "store failure");
    error(
        Some(req),
        ErrorCode::Internal,
        "the relay could not complete the request; try again",
    )
}

/// Replaces the account's identity key. The connection proved the current key at sign-in;
/// the current key must also endorse the new one, and the new one must sign this
/// connection's challenge, so neither a hijacked session nor a replayed request can do it.
async fn rekey(
    relay: &Arc<Relay>,
    account_id: &str,
    nonce: &[u8],
    req: u64,
    keys: wire::KeyUpload,
    proof: &[u8],
    endorsement: &[u8],
) -> RelayFrame {
    let id = account_id.to_string();
    let current = match relay.db(move |db| db.account_by_id(&id)).await {
        Ok(Some(a)) => a.identity_key,
        Ok(None) => return error(Some(req), ErrorCode::NotFound, "no such account"),
        Err(e) => return store_error(req, e),
    };
    let Some(new_key) = crate::identity::canonical(&keys.identity_key.0) else {
        return error(
            Some(req),
            ErrorCode::Malformed,
            "the new identity key is not a valid key",
        );
    };
    let mut keys = keys;
    keys.identity_key = B64(new_key);
    // Clients check this endorsement themselves when they learn of the change, over the
    // canonical key: it must hold over exactly what is stored.
    let endorsed = crate::identity::endorses(&current, &keys.identity_key.0, endorsement);
    if !endorsed || !verify(&keys.identity_key.0, nonce, proof) {
        return error(
            Some(req),
            ErrorCode::AuthFailed,
            "the key change is not signed by both the current and the new identity key",
        );
    }
    if keys.one_time_prekeys.len() > MAX_PREKEYS_PER_UPLOAD
        || keys.one_time_kyber.len() > MAX_PREKEYS_PER_UPLOAD
    {
        return too_large(req);
    }
    if too_many_one_time(relay, &keys) {
        return error(
            Some(req),
            ErrorCode::QuotaExceeded,
            one_time_quota(relay.config.max_one_time_prekeys),
        );
    }
    if !prekeys_signed(&keys.identity_key.0, signed_keys(&keys)).await {
        return error(Some(req), ErrorCode::Malformed, BAD_PREKEY_SIGNATURE);
    }
    let (id, now) = (account_id.to_string(), now_ms());
    let endorsement = endorsement.to_vec();
    match relay
        .db(move |db| db.rekey(&id, &keys, KeyChangeVia::Rekey, Some(&endorsement), now))
        .await
    {
        Ok(()) => {
            tracing::info!("an account replaced its identity key");
            RelayFrame::Ok { req }
        }
        Err(StoreError::KeyTaken) => error(
            Some(req),
            ErrorCode::HandleTaken,
            "that identity key belongs to another account",
        ),
        Err(e) => store_error(req, e),
    }
}
