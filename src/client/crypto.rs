//! A thin wrapper over libsignal: key generation, prekey bundles, sealing and opening secret
//! messages.
//!
//! Owns the translation between wire types and libsignal types. Every key agreement, ratchet
//! step, signature and cipher is libsignal's; nothing here invents cryptography. Time and
//! randomness are passed in so tests can fix them. Must not touch SQL directly (it goes
//! through `signal_store::Stores`) nor the network.

use std::time::SystemTime;

use libsignal_protocol::{
    DeviceId, GenericSignedPreKey, IdentityKey, IdentityKeyPair, KeyPair, KyberPreKeyId,
    KyberPreKeyRecord, PreKeyBundle, PreKeyId, PreKeyRecord, ProtocolAddress, PublicKey,
    SenderCertificate, SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord, Timestamp, kem,
    process_prekey_bundle, sealed_sender_decrypt, sealed_sender_encrypt,
};
use rand::{CryptoRng, Rng};

use super::signal_store::Stores;
use crate::wire::{self, PreKey, SignedKey};

pub type Result<T> = std::result::Result<T, SignalProtocolError>;

/// Every account has exactly one device: secret conversations are bound to it.
pub fn device() -> DeviceId {
    // 1 is always a valid device id.
    DeviceId::new(1).unwrap_or_else(|_| unreachable!())
}

/// The key under which libsignal's per-address state (sessions, identities) is stored.
pub fn address_key(account_id: &str) -> String {
    format!("{account_id}.{}", u32::from(device()))
}

pub fn address(account_id: &str) -> ProtocolAddress {
    ProtocolAddress::new(account_id.to_string(), device())
}

fn ts(now: SystemTime) -> Timestamp {
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp::from_epoch_millis(ms)
}

/// A registration id as libsignal expects: 14 bits, never zero.
pub fn registration_id<R: Rng>(rng: &mut R) -> u32 {
    rng.random_range(1..=0x3FFF)
}

pub fn signed_prekey<R: Rng + CryptoRng>(
    id: u32,
    identity: &IdentityKeyPair,
    now: SystemTime,
    rng: &mut R,
) -> Result<SignedPreKeyRecord> {
    let pair = KeyPair::generate(rng);
    let signature = identity
        .private_key()
        .calculate_signature(&pair.public_key.serialize(), rng)?;
    Ok(SignedPreKeyRecord::new(
        SignedPreKeyId::from(id),
        ts(now),
        &pair,
        &signature,
    ))
}

pub fn kyber_prekey<R: Rng + CryptoRng>(
    id: u32,
    identity: &IdentityKeyPair,
    now: SystemTime,
    rng: &mut R,
) -> Result<KyberPreKeyRecord> {
    let pair = kem::KeyPair::generate(kem::KeyType::Kyber1024, rng);
    let signature = identity
        .private_key()
        .calculate_signature(&pair.public_key.serialize(), rng)?;
    Ok(KyberPreKeyRecord::new(
        KyberPreKeyId::from(id),
        ts(now),
        &pair,
        &signature,
    ))
}

pub fn one_time_prekey<R: Rng + CryptoRng>(id: u32, rng: &mut R) -> PreKeyRecord {
    PreKeyRecord::new(PreKeyId::from(id), &KeyPair::generate(rng))
}

pub fn wire_prekey(r: &PreKeyRecord) -> Result<PreKey> {
    Ok(PreKey {
        id: r.id()?.into(),
        public: r.public_key()?.serialize().to_vec().into(),
    })
}

pub fn wire_signed(r: &SignedPreKeyRecord) -> Result<SignedKey> {
    Ok(SignedKey {
        id: r.id()?.into(),
        public: r.public_key()?.serialize().to_vec().into(),
        signature: r.signature()?.into(),
    })
}

pub fn wire_kyber(r: &KyberPreKeyRecord) -> Result<SignedKey> {
    Ok(SignedKey {
        id: r.id()?.into(),
        public: r.public_key()?.serialize().to_vec().into(),
        signature: r.signature()?.into(),
    })
}

/// Converts a directory bundle to libsignal's; signatures are checked by libsignal when the
/// session is set up.
pub fn bundle(b: &wire::Bundle) -> Result<PreKeyBundle> {
    let prekey = b
        .prekey
        .as_ref()
        .map(|p| {
            Ok::<_, SignalProtocolError>((
                PreKeyId::from(p.id),
                PublicKey::deserialize(&p.public.0)?,
            ))
        })
        .transpose()?;
    PreKeyBundle::new(
        b.registration_id,
        device(),
        prekey,
        SignedPreKeyId::from(b.signed_prekey.id),
        PublicKey::deserialize(&b.signed_prekey.public.0)?,
        b.signed_prekey.signature.0.clone(),
        KyberPreKeyId::from(b.kyber.id),
        kem::PublicKey::deserialize(&b.kyber.public.0)?,
        b.kyber.signature.0.clone(),
        IdentityKey::decode(&b.identity_key.0)?,
    )
}

/// Sets up a session with the bundle's owner (PQXDH).
pub async fn start_session<R: Rng + CryptoRng>(
    stores: &mut Stores<'_>,
    b: &wire::Bundle,
    now: SystemTime,
    rng: &mut R,
) -> Result<()> {
    let bundle = bundle(b)?;
    process_prekey_bundle(
        &address(&b.account_id),
        &mut stores.sessions,
        &mut stores.identity,
        &bundle,
        now,
        rng,
    )
    .await
}

/// Encrypts `plaintext` for `to` and wraps it in a sealed-sender envelope.
pub async fn seal<R: Rng + CryptoRng>(
    stores: &mut Stores<'_>,
    to: &str,
    cert: &SenderCertificate,
    plaintext: &[u8],
    now: SystemTime,
    rng: &mut R,
) -> Result<Vec<u8>> {
    sealed_sender_encrypt(
        &address(to),
        cert,
        plaintext,
        &mut stores.sessions,
        &mut stores.identity,
        now,
        rng,
    )
    .await
}

/// What `open` found inside an envelope.
pub struct Opened {
    pub sender: String,
    pub plaintext: Vec<u8>,
}

/// Checks the envelope's sender certificate against the relay's trust root and decrypts it.
/// `received_at` is when the relay accepted the envelope: the certificate must have been valid
/// then, not now, or a recipient who was offline for a day would drop good messages.
pub async fn open(
    stores: &mut Stores<'_>,
    envelope: &[u8],
    trust_root: &PublicKey,
    local_account: &str,
    received_at: SystemTime,
) -> Result<Opened> {
    let r = sealed_sender_decrypt(
        envelope,
        trust_root,
        ts(received_at),
        None,
        local_account.to_string(),
        device(),
        &mut stores.identity,
        &mut stores.sessions,
        &mut stores.prekeys,
        &stores.signed,
        &mut stores.kyber,
    )
    .await?;
    Ok(Opened {
        sender: r.sender_uuid,
        plaintext: r.message,
    })
}

/// The sender named by an envelope's certificate, checked against the trust root, without
/// touching any session: used to look an unknown sender up before decrypting.
/// The sender named by an envelope's certificate and the identity key it certifies.
pub async fn peek_sender(
    stores: &mut Stores<'_>,
    envelope: &[u8],
    trust_root: &PublicKey,
    received_at: SystemTime,
) -> Result<(String, Vec<u8>)> {
    let usmc =
        libsignal_protocol::sealed_sender_decrypt_to_usmc(envelope, &stores.identity).await?;
    let cert = usmc.sender()?;
    if !cert.validate(trust_root, ts(received_at))? {
        return Err(SignalProtocolError::InvalidSealedSenderMessage(
            "sender certificate not valid under the relay's trust root".into(),
        ));
    }
    Ok((
        cert.sender_uuid()?.to_string(),
        IdentityKey::new(cert.key()?).serialize().to_vec(),
    ))
}

/// Whether a sender certificate is still good for at least `margin_ms`.
pub fn cert_fresh(cert: &SenderCertificate, now: SystemTime, margin_ms: u64) -> bool {
    cert.expiration()
        .map(|e| e.epoch_millis() > ts(now).epoch_millis() + margin_ms)
        .unwrap_or(false)
}
