//! An anonymous connection: sealed envelopes (one recipient, or several through `fanout`) and
//! the blob store, with no account behind it.
//!
//! Owns the sealed path's single answer for "no such account" and "wrong token". Must not
//! learn who sends: nothing here is tied to an account.

use super::*;

/// An anonymous connection may only submit sealed envelopes and use the blob store (as its
/// source address: it has no account).
pub(super) async fn anonymous(relay: &Arc<Relay>, ws: &mut Ws) -> End {
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
pub(super) async fn send_sealed(
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
pub(super) const SEALED_NO_RECIPIENT: &str = "no such recipient, or the access token is wrong";

/// Hands an online-only envelope to its recipient's connection, or drops it if there is
/// none (see `online_only`); answered in turn with the envelopes before it, and the same
/// way whether the recipient was online or not.
pub(super) fn pass_on(
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
