//! Creating a profile's keys and registering them, and minting one-time prekeys later.
//!
//! Owns the key tables' lifecycle (what is generated, with which ids) and the profile's
//! registration record. Must not run the session: that is the manager's.

use std::time::SystemTime;

use libsignal_protocol::{
    IdentityKeyPair, KyberPreKeyId, PreKeyStore as _, SignedPreKeyStore as _,
};
use rand::{CryptoRng, Rng};

use super::conn::{self, LinkError};
use super::crypto;
use super::signal_store::Stores;
use super::store::{self, Registration, Store, StoreError};
use crate::tls::{self, Endpoint, Pin, TlsError};
use crate::wire::{KeyUpload, PreKey, SignedKey};

/// How many one-time prekeys of each kind are uploaded at a time.
pub const PREKEY_BATCH: u32 = 100;
/// Below this many left at the relay, the client uploads a new batch.
pub const PREKEY_LOW: u32 = 20;

const SIGNED_PREKEY_ID: u32 = 1;
const LAST_RESORT_KYBER_ID: u32 = 1;

/// One-time EC prekey ids cycle through 1..=0xFF_FFFF (libsignal's 24-bit medium range,
/// without 0); Kyber ones through 2..=0xFF_FFFF, above the last-resort key's id.
const EC_IDS: u32 = 0xFF_FFFF;
const KYBER_IDS: u32 = 0xFF_FFFE;

/// The id of the `seq`th one-time EC prekey ever minted (from 1).
fn ec_id(seq: u32) -> u32 {
    (seq - 1) % EC_IDS + 1
}

/// The id of one-time Kyber prekey number `seq` (numbering starts at 2).
fn kyber_id(seq: u32) -> u32 {
    (seq - 2) % KYBER_IDS + 2
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Transport(#[from] TlsError),
    #[error("key generation failed")]
    Keys(#[from] libsignal_protocol::SignalProtocolError),
    #[error(
        "this profile is already registered as {handle:?}; use another --data-dir or --profile for a second account"
    )]
    AlreadyRegistered { handle: String },
    #[error("{0:?} is not a valid handle: use 1 to 32 characters of a-z, 0-9, '_', '.', '-'")]
    InvalidHandle(String),
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The profile's own identity and registration id.
pub fn identity(store: &Store) -> Result<(IdentityKeyPair, u32), StoreError> {
    let raw = store.get("identity")?.ok_or(StoreError::NotRegistered)?;
    let pair = IdentityKeyPair::try_from(raw.as_slice()).map_err(corrupt)?;
    let reg = store
        .get("registration_id")?
        .ok_or(StoreError::NotRegistered)?;
    let reg = u32::from_le_bytes(reg.as_slice().try_into().map_err(corrupt)?);
    Ok((pair, reg))
}

/// Generates `n` one-time EC and Kyber prekeys, stores their private halves and returns the
/// public halves to upload. Runs in one transaction with the id counters.
pub async fn mint_one_time<R: Rng + CryptoRng>(
    store: &Store,
    n: u32,
    now: SystemTime,
    rng: &mut R,
) -> Result<(Vec<PreKey>, Vec<SignedKey>), AccountError> {
    let (identity, reg) = identity(store)?;
    let tx = store
        .conn()
        .unchecked_transaction()
        .map_err(StoreError::from)?;
    let minted = mint(&tx, &identity, reg, n, now, rng).await?;
    tx.commit().map_err(StoreError::from)?;
    Ok(minted)
}

/// Deletes unused one-time prekeys beyond the `keep` most recently minted of each kind (never
/// the last-resort key); returns how many went. The relay hands out the oldest first and
/// holds a bounded number, so the oldest unused keys are ones it handed out long ago (whose
/// first messages never came) or no longer holds. "Recent" follows the mint counters, not
/// the ids, which wrap.
pub fn prune_one_time(store: &Store, keep: u32) -> Result<usize, StoreError> {
    let conn = store.conn();
    // Without counters nothing was ever minted, so there is nothing to prune.
    let (Some(next_ec), Some(next_kyber)) = (
        counter(conn, "next_prekey_id")?,
        counter(conn, "next_kyber_id")?,
    ) else {
        return Ok(0);
    };
    if next_ec < 2 || next_kyber < 3 {
        return Ok(0);
    }
    store.prune_one_time(
        keep,
        (ec_id(next_ec - 1), EC_IDS),
        (kyber_id(next_kyber - 1), KYBER_IDS),
    )
}

/// A mint counter (the number the next key gets), if any key of its kind was ever minted.
fn counter(conn: &rusqlite::Connection, key: &str) -> Result<Option<u32>, StoreError> {
    store::get(conn, key)?
        .map(|v| {
            v.as_slice()
                .try_into()
                .map(u32::from_le_bytes)
                .map_err(corrupt)
        })
        .transpose()
}

/// The body of `mint_one_time`, inside the caller's transaction and for a given identity.
async fn mint<R: Rng + CryptoRng>(
    conn: &rusqlite::Connection,
    identity: &IdentityKeyPair,
    reg: u32,
    n: u32,
    now: SystemTime,
    rng: &mut R,
) -> Result<(Vec<PreKey>, Vec<SignedKey>), AccountError> {
    let mut stores = Stores::new(conn, identity, reg);
    let next_ec = counter(conn, "next_prekey_id")?.unwrap_or(1);
    // Kyber ids start above the last-resort key's.
    let next_kyber = counter(conn, "next_kyber_id")?
        .unwrap_or(1)
        .max(LAST_RESORT_KYBER_ID + 1);
    let mut ec = Vec::with_capacity(n as usize);
    let mut kyber = Vec::with_capacity(n as usize);
    for i in 0..n {
        let id = ec_id(next_ec + i);
        let record = crypto::one_time_prekey(id, rng);
        stores.prekeys.save_pre_key(id.into(), &record).await?;
        ec.push(crypto::wire_prekey(&record)?);
        let kid = kyber_id(next_kyber + i);
        let record = crypto::kyber_prekey(kid, identity, now, rng)?;
        stores
            .kyber
            .save(KyberPreKeyId::from(kid), &record, false)?;
        kyber.push(crypto::wire_kyber(&record)?);
    }
    store::set(conn, "next_prekey_id", &(next_ec + n).to_le_bytes())?;
    store::set(conn, "next_kyber_id", &(next_kyber + n).to_le_bytes())?;
    Ok((ec, kyber))
}

/// Writes a fresh identity with its signed, last-resort and one-time prekeys into `conn`
/// (replacing any there), and returns what to upload.
async fn fresh_keys<R: Rng + CryptoRng>(
    conn: &rusqlite::Connection,
    now: SystemTime,
    rng: &mut R,
) -> Result<(IdentityKeyPair, KeyUpload), AccountError> {
    conn.execute_batch(
        "DELETE FROM prekeys; DELETE FROM signed_prekeys; DELETE FROM kyber_prekeys;
         DELETE FROM kyber_used;",
    )
    .map_err(StoreError::from)?;
    let identity = IdentityKeyPair::generate(rng);
    let reg = crypto::registration_id(rng);
    store::set(conn, "identity", &identity.serialize())?;
    store::set(conn, "registration_id", &reg.to_le_bytes())?;
    let signed = crypto::signed_prekey(SIGNED_PREKEY_ID, &identity, now, rng)?;
    let last_resort = crypto::kyber_prekey(LAST_RESORT_KYBER_ID, &identity, now, rng)?;
    {
        let mut stores = Stores::new(conn, &identity, reg);
        stores
            .signed
            .save_signed_pre_key(SIGNED_PREKEY_ID.into(), &signed)
            .await?;
        stores
            .kyber
            .save(LAST_RESORT_KYBER_ID.into(), &last_resort, true)?;
    }
    let (one_time_prekeys, one_time_kyber) =
        mint(conn, &identity, reg, PREKEY_BATCH, now, rng).await?;
    let keys = KeyUpload {
        identity_key: identity.identity_key().serialize().to_vec().into(),
        registration_id: reg,
        signed_prekey: crypto::wire_signed(&signed)?,
        kyber_last_resort: crypto::wire_kyber(&last_resort)?,
        one_time_prekeys,
        one_time_kyber,
    };
    Ok((identity, keys))
}

/// The profile key holding how the relay's TLS certificate is trusted (`tls::Pin`).
const TLS_PIN: &str = "tls_pin";

/// How this profile trusts its relay's TLS certificate: None for a profile registered over
/// `ws://` (or before sotto spoke TLS).
pub fn tls_pin(store: &Store) -> Result<Option<Pin>, AccountError> {
    match store.get(TLS_PIN)? {
        Some(raw) => Ok(Some(Pin::decode(&raw)?)),
        None => Ok(None),
    }
}

/// Replaces the pinned certificate with `fingerprint`, after the relay's operator replaced
/// the certificate and the user compared the new fingerprint with theirs.
pub fn set_tls_pin(store: &Store, fingerprint: tls::Fingerprint) -> Result<(), AccountError> {
    store.set(TLS_PIN, &Pin::Certificate(fingerprint).encode())?;
    Ok(())
}

/// Where this profile's relay is and how to trust it: the relay recorded at init (or
/// `relay_url` instead), checked against the pinned certificate. `ws://` off this machine is
/// refused unless `insecure_transport`.
pub fn endpoint(
    store: &Store,
    relay_url: Option<&str>,
    insecure_transport: bool,
) -> Result<Endpoint, AccountError> {
    let reg = store.registration()?;
    let url = relay_url.unwrap_or(&reg.relay_url);
    Ok(Endpoint::new(url, tls_pin(store)?, insecure_transport)?)
}

/// Replaces this profile's identity key, at the relay and here. The new keys are written in
/// a transaction that commits only once the relay has accepted them, so a failure leaves the
/// profile as it was. Sessions made with the old key end; contacts see the change.
pub async fn rekey<R: Rng + CryptoRng>(
    store: &Store,
    relay_url: &str,
    now: SystemTime,
    rng: &mut R,
) -> Result<(), AccountError> {
    let endpoint = endpoint(store, Some(relay_url), false)?;
    rekey_at(store, &endpoint, now, rng).await
}

/// As `rekey`, at a given endpoint (see `endpoint`).
pub async fn rekey_at<R: Rng + CryptoRng>(
    store: &Store,
    endpoint: &Endpoint,
    now: SystemTime,
    rng: &mut R,
) -> Result<(), AccountError> {
    let reg = store.registration()?;
    let (current, _) = identity(store)?;
    let tx = store
        .conn()
        .unchecked_transaction()
        .map_err(StoreError::from)?;
    let (new, keys) = fresh_keys(&tx, now, rng).await?;
    conn::rekey(
        endpoint,
        &reg.account_id,
        &current,
        &reg.trust_root,
        keys,
        &new,
    )
    .await?;
    tx.execute("DELETE FROM sessions", [])
        .map_err(StoreError::from)?;
    tx.commit().map_err(StoreError::from)?;
    Ok(())
}

/// Creates the profile's keys and registers `handle` at `relay_url`.
pub async fn init<R: Rng + CryptoRng>(
    store: &Store,
    handle: &str,
    relay_url: &str,
    now: SystemTime,
    rng: &mut R,
) -> Result<Registration, AccountError> {
    init_claiming(store, handle, relay_url, None, false, now, rng).await
}

/// As `init`; with `claim`, takes over `handle` after the relay operator reset it (the code
/// comes from `sotto relay admin reset-handle`), keeping its account so contacts see a key
/// change rather than a stranger.
///
/// The relay's TLS certificate is pinned at this first contact: a chain that verifies for the
/// URL's host against the web PKI roots is recorded as CA-verified, any other certificate by
/// its SHA-256 (see `tls_pin`). A `ws://` URL off this machine is refused unless
/// `insecure_transport`, before anything is sent.
pub async fn init_claiming<R: Rng + CryptoRng>(
    store: &Store,
    handle: &str,
    relay_url: &str,
    claim: Option<String>,
    insecure_transport: bool,
    now: SystemTime,
    rng: &mut R,
) -> Result<Registration, AccountError> {
    if let Ok(r) = store.registration() {
        return Err(AccountError::AlreadyRegistered { handle: r.handle });
    }
    if !crate::wire::valid_handle(handle) {
        return Err(AccountError::InvalidHandle(handle.to_string()));
    }
    let (endpoint, first_contact) = Endpoint::first_contact(relay_url, insecure_transport)?;
    // A failed earlier attempt may have left keys that were never registered: start afresh.
    // The keys are committed together (one sync, not one per prekey), and before the relay
    // hears of them.
    let tx = store
        .conn()
        .unchecked_transaction()
        .map_err(StoreError::from)?;
    tx.execute_batch("DELETE FROM profile;")
        .map_err(StoreError::from)?;
    let (identity, keys) = fresh_keys(&tx, now, rng).await?;
    tx.commit().map_err(StoreError::from)?;
    let registered = conn::register(&endpoint, handle, keys, &identity, claim).await?;
    let tx = store
        .conn()
        .unchecked_transaction()
        .map_err(StoreError::from)?;
    store::set(&tx, "account_id", registered.account_id.as_bytes())?;
    store::set(&tx, "handle", handle.as_bytes())?;
    store::set(&tx, "relay_url", relay_url.as_bytes())?;
    store::set(&tx, "trust_root", &registered.trust_root)?;
    if let Some(seen) = first_contact.seen() {
        if let Some(why) = &seen.not_ca {
            tracing::info!(reason = %why, "relay certificate not CA-verified; pinning it");
        }
        store::set(&tx, TLS_PIN, &seen.pin.encode())?;
    }
    tx.commit().map_err(StoreError::from)?;
    Ok(store.registration()?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn ids(store: &Store, table: &str) -> BTreeSet<u32> {
        let only_one_time = if table == "kyber_prekeys" {
            "WHERE last_resort = 0"
        } else {
            ""
        };
        let sql = format!("SELECT id FROM {table} {only_one_time}");
        let mut stmt = store.conn().prepare(&sql).unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// After 16.7 million keys the ids start again from the bottom: the keys kept must be the
    /// newest batch, not the highest ids (which are the older batch).
    #[tokio::test]
    async fn pruning_keeps_the_newest_keys_when_ids_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (now, rng) = (SystemTime::now(), &mut rand::rng());
        fresh_keys(store.conn(), now, rng).await.unwrap();
        store
            .conn()
            .execute_batch("DELETE FROM prekeys; DELETE FROM kyber_prekeys WHERE last_resort = 0")
            .unwrap();
        // 150 before the end of each id cycle: two batches of 100 run across it.
        store
            .set("next_prekey_id", &(EC_IDS - 149).to_le_bytes())
            .unwrap();
        store
            .set("next_kyber_id", &(KYBER_IDS + 1 - 149).to_le_bytes())
            .unwrap();
        let (older_ec, older_kyber) = mint_one_time(&store, PREKEY_BATCH, now, rng).await.unwrap();
        let (newer_ec, newer_kyber) = mint_one_time(&store, PREKEY_BATCH, now, rng).await.unwrap();
        assert!(newer_ec.iter().any(|k| k.id == 1), "the ids wrapped");
        assert!(newer_kyber.iter().any(|k| k.id == 2), "the ids wrapped");
        assert_eq!(ids(&store, "prekeys").len(), 200);

        let deleted = prune_one_time(&store, PREKEY_BATCH).unwrap();

        assert_eq!(deleted, 200);
        let newer: BTreeSet<u32> = newer_ec.iter().map(|k| k.id).collect();
        assert_eq!(ids(&store, "prekeys"), newer);
        let newer: BTreeSet<u32> = newer_kyber.iter().map(|k| k.id).collect();
        assert_eq!(ids(&store, "kyber_prekeys"), newer);
        assert!(
            older_ec
                .iter()
                .all(|k| !ids(&store, "prekeys").contains(&k.id))
        );
        // The last-resort key stays.
        let last_resort: u32 = store
            .conn()
            .query_row(
                "SELECT count(*) FROM kyber_prekeys WHERE last_resort = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((last_resort, older_kyber.len()), (1, 100));
    }
}
