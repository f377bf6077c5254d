//! A thin wrapper over libsignal: key generation, prekey bundles, sealing and opening secret
//! messages.
//!
//! Owns the translation between wire types and libsignal types. Every key agreement, ratchet
//! step, signature and cipher is libsignal's; nothing here invents cryptography. Time and
//! randomness are passed in so tests can fix them. Must not touch SQL directly (it goes
//! through `signal_store::Stores`) nor the network.

use std::collections::HashSet;
use std::time::SystemTime;

use libsignal_protocol::{
    CiphertextMessageType, PreKeySignalMessage, SenderKeyMessage, SignalMessage,
    UnidentifiedSenderMessageContent, group_decrypt, message_decrypt_prekey,
    message_decrypt_signal, sealed_sender_decrypt_to_usmc,
};
use libsignal_protocol::{
    DeviceId, GenericSignedPreKey, IdentityKey, IdentityKeyPair, KeyPair, KyberPreKeyId,
    KyberPreKeyRecord, PreKeyBundle, PreKeyId, PreKeyRecord, ProtocolAddress, PublicKey,
    SenderCertificate, SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord, Timestamp, kem,
    process_prekey_bundle, sealed_sender_encrypt,
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
/// then, not now, or a recipient who was offline for a day would drop good messages. Both
/// signatures are checked every time; the manager keeps a `CheckedCerts` across messages.
pub async fn open(
    stores: &mut Stores<'_>,
    envelope: &[u8],
    trust_root: &PublicKey,
    local_account: &str,
    received_at: SystemTime,
) -> Result<Opened> {
    let mut certs = CheckedCerts::new(*trust_root);
    let unsealed = unseal(stores, envelope, &mut certs, received_at).await?;
    let plaintext = decrypt(stores, &unsealed, local_account, &mut rand::rng()).await?;
    Ok(Opened {
        sender: unsealed.sender,
        plaintext,
    })
}

/// A sealed envelope whose outer layer is open and whose sender certificate checked out; the
/// message inside is still encrypted to the session with the sender.
pub struct Unsealed {
    content: UnidentifiedSenderMessageContent,
    /// The sender's account id, as certified.
    pub sender: String,
    /// The identity key the certificate vouches for.
    pub sender_key: Vec<u8>,
}

/// Sender certificates found signed under the relay's trust root, so that each one's two
/// signatures are checked once rather than with every message it comes with.
///
/// Whether a certificate's signatures hold is a function of its bytes and the root alone, so
/// a certificate byte-for-byte equal to one libsignal accepted needs only its expiry checked
/// again (the one part of libsignal's check that depends on the time). Everything else is
/// libsignal's `SenderCertificate::validate`.
pub struct CheckedCerts {
    root: PublicKey,
    signed: HashSet<Box<[u8]>>,
}

/// Certificates remembered at most; a sender renews its certificate about daily, so this is
/// many more than a client's contacts need. Past it, the memory starts again.
const CHECKED_CERTS: usize = 1024;

impl CheckedCerts {
    pub fn new(root: PublicKey) -> CheckedCerts {
        CheckedCerts {
            root,
            signed: HashSet::new(),
        }
    }

    /// The trust root certificates are checked against.
    pub fn root(&self) -> &PublicKey {
        &self.root
    }

    /// Whether `cert` is valid under the root at `at`, as libsignal's `validate` decides.
    pub fn validate(&mut self, cert: &SenderCertificate, at: SystemTime) -> Result<bool> {
        let bytes = cert.serialized()?;
        if self.signed.contains(bytes) {
            return Ok(ts(at) <= cert.expiration()?);
        }
        let valid = cert.validate(&self.root, ts(at))?;
        if valid {
            if self.signed.len() >= CHECKED_CERTS {
                self.signed.clear();
            }
            self.signed.insert(bytes.into());
        }
        Ok(valid)
    }
}

/// Opens the sealed-sender layer and checks the certificate against the trust root as of
/// `received_at`, without touching any session: the caller can look an unknown sender up
/// before decrypting. libsignal's `sealed_sender_decrypt` does the same two steps as this and
/// `decrypt`; split, the outer layer is opened once instead of twice.
pub async fn unseal(
    stores: &Stores<'_>,
    envelope: &[u8],
    certs: &mut CheckedCerts,
    received_at: SystemTime,
) -> Result<Unsealed> {
    let content = sealed_sender_decrypt_to_usmc(envelope, &stores.identity).await?;
    let cert = content.sender()?;
    if !certs.validate(cert, received_at)? {
        return Err(SignalProtocolError::InvalidSealedSenderMessage(
            "sender certificate not valid under the relay's trust root".into(),
        ));
    }
    let sender = cert.sender_uuid()?.to_string();
    let sender_key = IdentityKey::new(cert.key()?).serialize().to_vec();
    Ok(Unsealed {
        content,
        sender,
        sender_key,
    })
}

impl Unsealed {
    /// For a group message (under a sender key), the distribution id it names; None for a
    /// 1:1 session message.
    pub fn distribution_id(&self) -> Option<[u8; 16]> {
        if self.content.msg_type().ok()? != CiphertextMessageType::SenderKey {
            return None;
        }
        let contents = self.content.contents().ok()?;
        Some(
            *SenderKeyMessage::try_from(contents)
                .ok()?
                .distribution_id()
                .as_bytes(),
        )
    }

    /// Whether it carries a group message (sender key) rather than a 1:1 one.
    pub fn is_group(&self) -> bool {
        self.content.msg_type().ok() == Some(CiphertextMessageType::SenderKey)
    }
}

/// Decrypts the message inside an unsealed envelope, advancing the session with its sender.
pub async fn decrypt<R: Rng + CryptoRng>(
    stores: &mut Stores<'_>,
    unsealed: &Unsealed,
    local_account: &str,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let cert = unsealed.content.sender()?;
    if unsealed.sender == local_account && cert.sender_device_id()? == device() {
        return Err(SignalProtocolError::SealedSenderSelfSend);
    }
    let from = ProtocolAddress::new(unsealed.sender.clone(), cert.sender_device_id()?);
    let contents = unsealed.content.contents()?;
    match unsealed.content.msg_type()? {
        CiphertextMessageType::Whisper => {
            message_decrypt_signal(
                &SignalMessage::try_from(contents)?,
                &from,
                &mut stores.sessions,
                &mut stores.identity,
                rng,
            )
            .await
        }
        CiphertextMessageType::PreKey => {
            message_decrypt_prekey(
                &PreKeySignalMessage::try_from(contents)?,
                &from,
                &mut stores.sessions,
                &mut stores.identity,
                &mut stores.prekeys,
                &stores.signed,
                &mut stores.kyber,
                rng,
            )
            .await
        }
        // A group message under the certified sender's sender key: only a key they sent us
        // themselves, 1:1, is under their address (`group_crypto::accept_sender_key`).
        CiphertextMessageType::SenderKey => {
            group_decrypt(contents, &mut stores.sender_keys, &from).await
        }
        other => Err(SignalProtocolError::InvalidMessage(
            other,
            "a sealed envelope must carry a session or sender-key message",
        )),
    }
}

/// Whether a sender certificate is still good for at least `margin_ms`.
pub fn cert_fresh(cert: &SenderCertificate, now: SystemTime, margin_ms: u64) -> bool {
    cert.expiration()
        .map(|e| e.epoch_millis() > ts(now).epoch_millis() + margin_ms)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libsignal_protocol::ServerCertificate;

    use super::*;

    /// A certificate for `key` from a server under `root`, expiring at `expires` (Unix ms).
    fn cert_under(root: &KeyPair, key: &IdentityKeyPair, expires: u64) -> SenderCertificate {
        let mut rng = rand::rng();
        let server = KeyPair::generate(&mut rng);
        let server_cert =
            ServerCertificate::new(1, server.public_key, &root.private_key, &mut rng).unwrap();
        SenderCertificate::new(
            "alice-account".into(),
            None,
            *key.public_key(),
            device(),
            Timestamp::from_epoch_millis(expires),
            server_cert,
            &server.private_key,
            &mut rng,
        )
        .unwrap()
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn a_certificate_checked_once_still_expires() {
        let mut rng = rand::rng();
        let root = KeyPair::generate(&mut rng);
        let alice = IdentityKeyPair::generate(&mut rng);
        let cert = cert_under(&root, &alice, 10_000);
        let mut certs = CheckedCerts::new(root.public_key);
        assert!(certs.validate(&cert, at(5_000)).unwrap());
        // Remembered now; the second answer must still follow the clock.
        assert!(certs.validate(&cert, at(10_000)).unwrap());
        assert!(!certs.validate(&cert, at(10_001)).unwrap());
        // The same bytes, read again from an envelope, are the same certificate.
        let again = SenderCertificate::deserialize(cert.serialized().unwrap()).unwrap();
        assert!(certs.validate(&again, at(9_000)).unwrap());
    }

    #[test]
    fn a_certificate_under_another_root_is_refused_every_time() {
        let mut rng = rand::rng();
        let root = KeyPair::generate(&mut rng);
        let other = KeyPair::generate(&mut rng);
        let alice = IdentityKeyPair::generate(&mut rng);
        let mut certs = CheckedCerts::new(root.public_key);
        let good = cert_under(&root, &alice, 10_000);
        let forged = cert_under(&other, &alice, 10_000);
        assert!(certs.validate(&good, at(1)).unwrap());
        assert!(!certs.validate(&forged, at(1)).unwrap());
        assert!(!certs.validate(&forged, at(1)).unwrap());
    }

    #[test]
    fn an_expired_certificate_is_not_remembered_as_signed() {
        let mut rng = rand::rng();
        let root = KeyPair::generate(&mut rng);
        let alice = IdentityKeyPair::generate(&mut rng);
        let mut certs = CheckedCerts::new(root.public_key);
        let good = cert_under(&root, &alice, 10_000);
        assert!(!certs.validate(&good, at(20_000)).unwrap());
        assert!(certs.signed.is_empty());
        assert!(certs.validate(&good, at(1)).unwrap());
    }
}
