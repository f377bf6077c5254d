//! An authenticated connection's loop: requests in, pushes out, acks, kicks by a newer
//! connection, prekey refills, and normal (readable) sends.
//!
//! Owns the order in which these are served. Must not read sealed envelopes.

use super::*;

/// Requests in a row refused for a rate or a quota before the connection is closed. A
/// client backs off after a refusal; one that goes on asking costs the relay a TLS record, a
/// JSON answer and a bucket check each time (a bundle drain got 120,000 refusals in 20 s,
/// half a core). Sends are not counted: a client sending its queue after a wait may meet a
/// full mailbox with each of them.
pub(super) const MAX_REFUSED_IN_A_ROW: u32 = 64;

/// Queues a normal envelope from `from`.
pub(super) async fn send_normal(
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

pub(super) async fn authenticated(
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

pub(super) async fn send_prekey_count(
    relay: &Arc<Relay>,
    ws: &mut Ws,
    account_id: &str,
) -> Result<(), End> {
    let id = account_id.to_string();
    let (ec, kyber) = relay
        .db(move |db| db.prekey_count(&id))
        .await
        .map_err(internal)?;
    send(ws, &RelayFrame::PreKeyCount { ec, kyber }).await
}
