//! Group fan-out on a connection: one request (`send_multi` on an anonymous connection,
//! `send_group` on an account's), one envelope per recipient, queued all or none, and one
//! answer for the whole request.
//!
//! Owns the checks a fan-out must pass before anything is queued (the recipient cap, each
//! copy's size, and for a sealed-sender v2 message that it names exactly the recipients
//! listed), the split into the copies the recipients are sent, and the answer. Must not
//! read what the envelope carries: of an SSv2 message it reads only the recipient header
//! libsignal's `SealedSenderV2SentMessage::parse` reads, and never decrypts anything. The
//! all-or-nothing rule itself is the queue's (`store::rules::queue_unit`, which every
//! backend applies to what `Writer::enqueue_all` hands over).

use std::collections::HashSet;
use std::sync::Arc;

use libsignal_protocol::{Aci, SealedSenderV2SentMessage, ServiceId};

use super::{Accepted, error, not_stored, now_ms, too_large};
use crate::relay::Relay;
use crate::relay::online_only;
use crate::relay::store::{NewEnvelope, Origin, Outcome, Stored};
use crate::relay::writer::Fanned;
use crate::wire::{CHANGED_RECIPIENTS, ErrorCode, MAX_PAYLOAD_BYTES, RelayFrame, SealedRecipient};

/// A fan-out as it arrived: the recipients and what each is sent.
pub(super) struct FanOut {
    pub req: u64,
    pub copies: Vec<NewEnvelope>,
    pub online_only: bool,
}

/// A `send_multi`: the SSv2 message split into one sealed envelope per listed recipient
/// (its received form, which `sealed_sender_decrypt_to_usmc` opens), each carrying the
/// recipient's access token and key for the writer's checks. Refused whole, with the answer,
/// if the list is empty or over the cap, names an account twice or a non-account, does not
/// match the message's recipients, or a copy is over the payload limit.
pub(super) fn sealed(
    relay: &Relay,
    req: u64,
    envelope: &[u8],
    recipients: Vec<SealedRecipient>,
    expires_at: Option<u64>,
) -> Result<Vec<NewEnvelope>, Box<RelayFrame>> {
    within_cap(relay, req, recipients.len())?;
    let malformed = |message: String| Box::new(error(Some(req), ErrorCode::Malformed, message));
    let message = SealedSenderV2SentMessage::parse(envelope).map_err(|_| {
        malformed("the envelope is not a sealed-sender v2 message for several recipients".into())
    })?;
    let mut listed = HashSet::with_capacity(recipients.len());
    let mut ids = Vec::with_capacity(recipients.len());
    for r in &recipients {
        let id = uuid::Uuid::parse_str(&r.to)
            .map_err(|_| malformed(format!("{:?} is not an account id", r.to)))?;
        let id = ServiceId::from(Aci::from(id));
        if !listed.insert(id) {
            return Err(malformed(format!("{} is named twice", r.to)));
        }
        ids.push(id);
    }
    let named: HashSet<ServiceId> = message.recipients.keys().copied().collect();
    if named != listed {
        return Err(malformed(
            "the envelope's recipients are not the accounts listed with it".into(),
        ));
    }
    let received_at = now_ms();
    let mut copies = Vec::with_capacity(recipients.len());
    for (r, id) in recipients.into_iter().zip(ids) {
        // Every listed id is in the message: the two sets are equal.
        let Some(part) = message.recipients.get(&id) else {
            continue;
        };
        if part.devices.is_empty() {
            return Err(malformed(format!(
                "the envelope carries no key for {}; leave them out of the list",
                r.to
            )));
        }
        let payload = message
            .received_message_parts_for_recipient(part)
            .as_ref()
            .concat();
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Box::new(too_large(req)));
        }
        copies.push(NewEnvelope {
            recipient: r.to,
            origin: Origin::Sealed {
                access_token: r.access_token.0,
                recipient_key: r.recipient_key.map(|k| k.0),
            },
            payload,
            received_at,
            expires_at,
        });
    }
    Ok(copies)
}

/// A `send_group` from the signed-in account: the body once per recipient. Refused whole if
/// the list is empty, over the cap or names an account twice, or the body is too large.
pub(super) fn normal(
    relay: &Relay,
    req: u64,
    from: (&str, &str),
    to: Vec<String>,
    body: Vec<u8>,
    expires_at: Option<u64>,
) -> Result<Vec<NewEnvelope>, Box<RelayFrame>> {
    within_cap(relay, req, to.len())?;
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(Box::new(too_large(req)));
    }
    let mut seen = HashSet::with_capacity(to.len());
    if let Some(twice) = to.iter().find(|t| !seen.insert(t.as_str())) {
        return Err(Box::new(error(
            Some(req),
            ErrorCode::Malformed,
            format!("{twice} is named twice"),
        )));
    }
    let received_at = now_ms();
    let origin = Origin::Account {
        id: from.0.to_string(),
        handle: from.1.to_string(),
    };
    Ok(to
        .into_iter()
        .map(|recipient| NewEnvelope {
            recipient,
            origin: origin.clone(),
            payload: body.clone(),
            received_at,
            expires_at,
        })
        .collect())
}

/// Refuses a fan-out to no one or to more than the relay's cap.
fn within_cap(relay: &Relay, req: u64, n: usize) -> Result<(), Box<RelayFrame>> {
    let max = relay.config.max_group_recipients;
    if n == 0 {
        return Err(Box::new(error(
            Some(req),
            ErrorCode::Malformed,
            "a group message names at least one recipient",
        )));
    }
    if n > max {
        return Err(Box::new(error(
            Some(req),
            ErrorCode::TooLarge,
            format!(
                "a group message may go to at most {max} recipients at this relay, and this one names {n}; send it in parts"
            ),
        )));
    }
    Ok(())
}

/// Queues the copies all or none (or, online only, hands each to its recipient's connection
/// once every check passed); answered once that is done. `no_recipient` is the answer when
/// an account is missing or a token wrong (on the sealed path one sentence for both, naming
/// nobody, so that it cannot probe which accounts exist).
pub(super) async fn submit(
    relay: &Arc<Relay>,
    f: FanOut,
    no_recipient: &'static str,
    sealed: bool,
) -> Accepted {
    let req = f.req;
    let fanned: futures_util::future::BoxFuture<'static, Fanned> = if f.online_only {
        Box::pin(online_only::pass_on_all(relay.clone(), f.copies))
    } else {
        Box::pin(relay.writer.enqueue_all(f.copies).await)
    };
    Accepted::Later(Box::pin(async move {
        answer(req, fanned.await, no_recipient, sealed)
    }))
}

/// The one answer to a fan-out: `ok`, or the refusal that stopped it. A missing account or
/// wrong token comes first (on the sealed path the same sentence as 1:1), then changed keys,
/// naming every such recipient after `CHANGED_RECIPIENTS`, then a full mailbox.
fn answer(req: u64, fanned: Fanned, no_recipient: &'static str, sealed: bool) -> RelayFrame {
    let refused = match fanned {
        Some(Outcome::Queued(_)) => return RelayFrame::Ok { req },
        Some(Outcome::Refused(refused)) => refused,
        None => return not_stored(req),
    };
    let named = |which: Stored| -> Vec<&str> {
        refused
            .iter()
            .filter(|(_, s)| *s == which)
            .map(|(to, _)| to.as_str())
            .collect()
    };
    let missing = named(Stored::NoRecipient);
    if !missing.is_empty() {
        let message = match sealed {
            true => no_recipient.to_string(),
            false => format!("{no_recipient}; {CHANGED_RECIPIENTS}{}", missing.join(", ")),
        };
        return error(Some(req), ErrorCode::NotFound, message);
    }
    let changed = named(Stored::StaleKey);
    if !changed.is_empty() {
        return error(
            Some(req),
            ErrorCode::IdentityChanged,
            format!(
                "the identity key of {} of the recipients has changed; look them up again; {CHANGED_RECIPIENTS}{}",
                changed.len(),
                changed.join(", ")
            ),
        );
    }
    match refused.first() {
        Some((_, Stored::OverQuota(quota))) => {
            error(Some(req), ErrorCode::QuotaExceeded, quota.message())
        }
        _ => not_stored(req),
    }
}
