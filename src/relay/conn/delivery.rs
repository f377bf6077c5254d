//! Carrying out what the pusher (`relay::push`) decides: delivery frames, deletions of
//! expired envelopes, flushes, `drained`; reads of the queue; online-only envelopes; and the
//! count of acks of envelopes never delivered here.
//!
//! Owns the socket writes of delivery. Must not decide what is pushed when: `Pusher` does.

use super::*;

/// Writes out the online-only envelopes handed to this connection, never to be acked.
pub(super) async fn push_online_only(ws: &mut Ws, items: Vec<Queued>) -> Result<(), End> {
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
pub(super) fn payload(q: Queued) -> Payload {
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

/// Carries out the pusher's steps on the socket and the queue.
pub(super) async fn carry_out(
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
pub(super) async fn push(
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
pub(super) fn unknown_ack(relay: &Relay, bucket: &mut Option<Bucket>) -> Result<(), End> {
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
