//! A connection's first step: proving an account's identity key over the relay's nonce, or
//! registering a new account (or claiming a reset handle) with signed prekeys.
//!
//! Owns the checks of those signatures. Must not serve requests: an identity proven here is
//! handed to `account`.

use super::*;

pub(super) async fn authenticate(
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

pub(super) fn verify(identity_key: &[u8], nonce: &[u8], signature: &[u8]) -> bool {
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
pub(super) async fn prekeys_signed(identity_key: &[u8], keys: Vec<SignedKey>) -> bool {
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
pub(super) fn signed_keys(keys: &wire::KeyUpload) -> Vec<SignedKey> {
    let mut all = vec![keys.signed_prekey.clone(), keys.kyber_last_resort.clone()];
    all.extend(keys.one_time_kyber.iter().cloned());
    all
}

pub(super) const BAD_PREKEY_SIGNATURE: &str =
    "a prekey's signature does not verify under the account's identity key";

pub(super) async fn register(
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
