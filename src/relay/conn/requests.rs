//! The requests an authenticated connection answers one at a time: directory lookups,
//! prekeys, sender certificates, rekeying and the rest (`request`), with their limits.
//!
//! Owns each request's answer and error sentence. Must not push envelopes.

use super::*;

/// Answers one request of an authenticated connection.
pub(super) async fn request(
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
pub(super) fn rate_limited(req: u64, what: &str) -> RelayFrame {
    error(
        Some(req),
        ErrorCode::RateLimited,
        format!("too many {what} in a short time; wait a moment and try again"),
    )
}

pub(super) fn one_time_quota(max: u32) -> String {
    format!("the directory holds at most {max} one-time prekeys of each kind per account")
}

/// Whether a registration or rekey carries more one-time keys than the directory holds.
pub(super) fn too_many_one_time(relay: &Relay, keys: &wire::KeyUpload) -> bool {
    let max = relay.config.max_one_time_prekeys as usize;
    keys.one_time_prekeys.len() > max || keys.one_time_kyber.len() > max
}

/// The writer could not commit the envelope (it logged why).
pub(super) fn not_stored(req: u64) -> RelayFrame {
    error(
        Some(req),
        ErrorCode::Internal,
        "the relay could not store the envelope; try again",
    )
}

pub(super) fn store_error(req: u64, e: StoreError) -> RelayFrame {
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
pub(super) async fn rekey(
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
