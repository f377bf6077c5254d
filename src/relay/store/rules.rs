//! The directory's and the queue's decisions, as functions every backend calls over the facts
//! it looked up: who may queue to an account, who may claim a reset, how many prekeys and
//! blobs an account may hold, what a blob fetch does to its row.
//!
//! Owns those decisions, so that no backend states them in its own queries and all of them
//! answer alike (the queue quotas' decision is `quota::over_quota`). Must not touch a
//! database: each function is pure.

use super::{Created, NewEnvelope, Origin, Outcome, StoreError, Stored};

/// What the queue knows of a recipient's account for the sealed-sender check.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub access_token: &'a [u8],
    pub identity_key: &'a [u8],
}

/// Why an envelope from `origin` to a recipient whose account is `found` (None: no such
/// account) must not be queued, if it must not.
pub fn refusal(found: Option<Recipient<'_>>, origin: &Origin) -> Option<Stored> {
    match origin {
        Origin::Account { .. } => found.is_none().then_some(Stored::NoRecipient),
        Origin::Sealed {
            access_token,
            recipient_key,
        } => check_sealed(found, access_token, recipient_key.as_deref()),
    }
}

/// Why a sealed envelope must not be queued, if it must not: no such account or a wrong
/// access token give one answer, so that the sealed path cannot probe which accounts exist;
/// an identity key the recipient no longer has (`recipient_key`, if the sender named the
/// key it encrypted to) is `StaleKey`, and only after the token matched.
pub fn check_sealed(
    found: Option<Recipient<'_>>,
    access_token: &[u8],
    recipient_key: Option<&[u8]>,
) -> Option<Stored> {
    match found {
        None => Some(Stored::NoRecipient),
        Some(a) if !crate::relay::same_secret(a.access_token, access_token) => {
            Some(Stored::NoRecipient)
        }
        Some(a) if recipient_key.is_some_and(|k| k != a.identity_key) => Some(Stored::StaleKey),
        Some(_) => None,
    }
}

/// Queues every copy of a unit in order through `queue_one` (which queues one envelope under
/// a new id, or says why it must not be queued), going on after a refusal so that the sender
/// learns of every refused recipient at once. Returns the unit's outcome and, when it is
/// refused, the copies `queue_one` did queue: a unit is queued all or none, so the backend
/// takes those back (their rows, their part in the totals, their ids).
pub fn queue_unit<E>(
    unit: &[NewEnvelope],
    mut queue_one: impl FnMut(&NewEnvelope) -> Result<Result<u64, Stored>, E>,
) -> Result<(Outcome, Vec<&NewEnvelope>), E> {
    let mut ids = Vec::with_capacity(unit.len());
    let mut queued = Vec::with_capacity(unit.len());
    let mut refused = Vec::new();
    for e in unit {
        match queue_one(e)? {
            Ok(id) => {
                ids.push(id);
                queued.push(e);
            }
            Err(why) => refused.push((e.recipient.clone(), why)),
        }
    }
    Ok(if refused.is_empty() {
        (Outcome::Queued(ids), Vec::new())
    } else {
        (Outcome::Refused(refused), queued)
    })
}

/// Which refusal a registration meets when an account exists whose handle or identity key is
/// the new one's: `found_handle` is that account's handle (None: no such account).
pub fn registration_conflict(found_handle: Option<&str>, handle: &str) -> Option<StoreError> {
    match found_handle {
        None => None,
        Some(h) if h == handle => Some(StoreError::HandleTaken(handle.to_string())),
        Some(_) => Some(StoreError::KeyTaken),
    }
}

/// Whether `code` claims a reset armed with `armed` until `expires_at` (Unix ms) at `now`.
/// A code armed before expiries were recorded has none and is treated as expired. The
/// compare takes the same time wherever the codes differ.
pub fn claim_allowed(armed: Option<&[u8]>, expires_at: Option<u64>, code: &[u8], now: u64) -> bool {
    let Some(armed) = armed else {
        return false;
    };
    crate::relay::same_secret(armed, code) && expires_at.is_some_and(|e| now <= e)
}

/// Whether an account may hold `held` one-time prekeys (EC, Kyber) with a cap of `max` each.
pub fn prekeys_fit(held: (u32, u32), max: u32) -> bool {
    held.0 <= max && held.1 <= max
}

/// Whether an owner holding `count` blobs that reserve `bytes` may add one of `size` bytes.
pub fn admit_blob(count: u64, bytes: u64, size: u64, max_blobs: u64, max_bytes: u64) -> Created {
    if count >= max_blobs {
        return Created::TooMany(count);
    }
    if bytes.saturating_add(size) > max_bytes {
        return Created::TooManyBytes(bytes);
    }
    Created::Yes
}

/// A blob's `recipients_left` after one more fetch, or None when that fetch was the last and
/// the row goes. 0 means fetches do not count (only expiry or retention delete the blob).
pub fn after_fetch(recipients_left: u32) -> Option<u32> {
    match recipients_left {
        0 => Some(0),
        1 => None,
        n => Some(n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(token: &[u8], key: Option<&[u8]>) -> Origin {
        Origin::Sealed {
            access_token: token.to_vec(),
            recipient_key: key.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn a_sealed_sender_cannot_tell_a_missing_account_from_a_wrong_token() {
        let bob = Recipient {
            access_token: b"token",
            identity_key: b"key",
        };
        let missing = refusal(None, &sealed(b"token", None));
        let wrong = refusal(Some(bob), &sealed(b"guess", Some(b"key")));
        assert_eq!(missing, Some(Stored::NoRecipient));
        assert_eq!(wrong, missing);
        // A stale key is told only to a sender who proved the token.
        assert_eq!(refusal(Some(bob), &sealed(b"guess", Some(b"old"))), missing);
        assert_eq!(
            refusal(Some(bob), &sealed(b"token", Some(b"old"))),
            Some(Stored::StaleKey)
        );
        assert_eq!(refusal(Some(bob), &sealed(b"token", Some(b"key"))), None);
        assert_eq!(refusal(Some(bob), &sealed(b"token", None)), None);
    }

    #[test]
    fn a_reset_is_claimed_only_with_the_armed_code_before_it_expires() {
        assert!(claim_allowed(Some(b"code"), Some(10), b"code", 10));
        assert!(!claim_allowed(Some(b"code"), Some(10), b"code", 11));
        assert!(!claim_allowed(Some(b"code"), Some(10), b"cod", 1));
        assert!(!claim_allowed(Some(b"code"), None, b"code", 1));
        assert!(!claim_allowed(None, Some(10), b"", 1));
    }

    #[test]
    fn caps_and_fetch_counts() {
        assert!(prekeys_fit((200, 200), 200));
        assert!(!prekeys_fit((0, 201), 200));
        assert_eq!(admit_blob(2, 0, 1, 2, 10), Created::TooMany(2));
        assert_eq!(admit_blob(1, 6, 5, 2, 10), Created::TooManyBytes(6));
        assert_eq!(admit_blob(1, 5, 5, 2, 10), Created::Yes);
        assert_eq!(after_fetch(0), Some(0));
        assert_eq!(after_fetch(1), None);
        assert_eq!(after_fetch(3), Some(2));
    }
}
