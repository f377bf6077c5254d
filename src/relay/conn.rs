//! One client connection on the relay: its life from the TCP accept to its end, the socket
//! helpers its parts share, and the choice between an anonymous and an authenticated
//! session. The parts: `auth` (proving an identity, registering), `account` (the
//! authenticated loop), `requests` (its one-at-a-time requests), `anonymous` (sealed sends,
//! `fanout` for several recipients), `answer` (send answers in order as commits finish) and
//! `delivery` (carrying out the I/O-free `relay::push::Pusher`).
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

mod account;
mod anonymous;
mod answer;
mod auth;
mod delivery;
mod fanout;
mod requests;

use account::*;
use anonymous::*;
use answer::*;
use auth::*;
use delivery::*;
use requests::*;

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
    // Taken after the seat: a sign-in elsewhere numbered later is then sure to find this
    // connection (its word follows its number, which follows this one).
    // Only relays sharing the database number sign-ins: alone, the online table orders an
    // account's connections, and a sign-in costs no trip through the blocking pool.
    if relay.shared {
        let id = account_id.clone();
        match relay.db(move |db| db.sign_in(&id)).await {
            Ok(Some(seq)) => relay.signed_in(&account_id, conn_id, seq),
            Ok(None) => {}
            Err(e) => return internal(e),
        }
    }
    let end = authenticated(relay, ws, &account_id, &handle, &signals, &nonce).await;
    drop(seat);
    if signals.kick.is_cancelled() && !shutdown.is_cancelled() {
        relay.stats.record_rejection(Reason::Kicked);
    }
    end
}

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
