//! A connection's first seconds on the relay: the TLS and WebSocket handshakes under one
//! deadline, and the answer to a connection the caps refused.
//!
//! Owns the WebSocket limits (`ws_config`) and the refusal frames (`full`, `rate_limited`),
//! each saying what happened and what to do. Must not authenticate or read requests: a
//! connection it hands on goes to `conn`.

use std::io;
use std::sync::Arc;

use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::Relay;
use super::stats::Reason;
use super::transport::{self, Stream};
use crate::wire::{ErrorCode, MAX_FRAME_BYTES, RelayFrame, WS_BUFFER_BYTES};

pub(crate) type Ws = WebSocketStream<Stream>;

/// The WebSocket layer refuses messages beyond this outright (the connection is then closed);
/// between `MAX_FRAME_BYTES` and this, a frame gets an error and the connection lives on.
/// It bounds what one connection can make the relay buffer.
pub(crate) const HARD_LIMIT: usize = 2 * MAX_FRAME_BYTES;

pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .max_message_size(Some(HARD_LIMIT))
        .max_frame_size(Some(HARD_LIMIT))
}

/// How a handshake failed.
pub(crate) enum Failed {
    /// Not done within `handshake_timeout`.
    TimedOut,
    /// The peer broke it off or spoke something else, or the relay is stopping.
    Other,
}

/// Runs the TLS (if served) and WebSocket handshakes on `tcp`, together bounded by
/// `handshake_timeout` and given up when `shutdown` fires. Writes on the result are bounded
/// by `write_timeout` and interrupted by `shutdown`.
pub(crate) async fn handshake(
    relay: &Relay,
    tcp: TcpStream,
    shutdown: &CancellationToken,
) -> Result<Ws, Failed> {
    let config = &relay.config;
    let both = async {
        let stream = transport::accept(
            config.tls.as_ref(),
            tcp,
            config.write_timeout,
            shutdown.clone(),
        )
        .await?;
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
            .await
            .map_err(io::Error::other)
    };
    tokio::select! {
        done = tokio::time::timeout(config.handshake_timeout, both) => match done {
            Ok(Ok(ws)) => Ok(ws),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "handshake failed");
                Err(Failed::Other)
            }
            Err(_) => Err(Failed::TimedOut),
        },
        _ = shutdown.cancelled() => Err(Failed::Other),
    }
}

/// What a client refused for `reason` is told.
pub(crate) fn refusal(relay: &Relay, reason: Reason) -> RelayFrame {
    let caps = relay.limits.caps();
    let (code, message) = match reason {
        Reason::PerAddress => (
            ErrorCode::RateLimited,
            format!(
                "too many connections from your address (at most {}); close some or try again later",
                caps.per_address
            ),
        ),
        Reason::UnauthenticatedPerAddress => (
            ErrorCode::RateLimited,
            format!(
                "too many connections from your address are not signed in (at most {}); try again in a few seconds",
                caps.unauthenticated_per_address
            ),
        ),
        Reason::SigningInQuota => (
            ErrorCode::RateLimited,
            "too many connections are signing in to the relay right now; try again in a few seconds"
                .to_string(),
        ),
        Reason::AnonymousQuota => (
            ErrorCode::RateLimited,
            "the relay has too many anonymous connections open right now; try again later"
                .to_string(),
        ),
        _ => (
            ErrorCode::Full,
            "the relay is at its connection limit; try again later".to_string(),
        ),
    };
    RelayFrame::Error {
        req: None,
        code,
        message,
    }
}

/// Answers a connection the caps refused: handshake, the refusal frame, close. `_permit`
/// is its place among the refusals under way.
pub(crate) async fn refuse(
    relay: Arc<Relay>,
    tcp: TcpStream,
    reason: Reason,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let Ok(mut ws) = handshake(&relay, tcp, &shutdown).await else {
        return;
    };
    let frame = refusal(&relay, reason);
    let _ = ws.send(Message::text(frame.encode())).await;
    let _ = ws.close(None).await;
}
