//! The relay's sealed-sender authority: its trust root and server certificate, created on first
//! start and kept in the relay database, and the sender certificates it issues to accounts.
//!
//! Owns the relay's private keys. Must not touch sockets; all signing is libsignal's.

use std::time::{SystemTime, UNIX_EPOCH};

use libsignal_protocol::{
    DeviceId, IdentityKey, KeyPair, PrivateKey, PublicKey, SenderCertificate, ServerCertificate,
    Timestamp,
};

use super::store::{Directory, StoreError};

/// The key id of our server certificate; libsignal reserves a few ids for Signal's own
/// servers and a revoked one, so ours stays clear of them.
const SERVER_KEY_ID: u32 = 1;

/// How long an issued sender certificate is valid.
pub const SENDER_CERT_LIFETIME_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the relay's stored keys are unreadable ({0}); the data directory is damaged")]
    Corrupt(String),
    #[error("could not issue a certificate")]
    Signal(#[from] libsignal_protocol::SignalProtocolError),
}

pub struct Authority {
    trust_root: PublicKey,
    server_key: PrivateKey,
    server_cert: ServerCertificate,
}

impl Authority {
    /// Loads the authority from the store, creating it on first start.
    pub fn load_or_create(store: &mut dyn Directory) -> Result<Self, CertError> {
        if let Some(authority) = Self::load(store)? {
            return Ok(authority);
        }
        let mut rng = rand::rng();
        let root = KeyPair::generate(&mut rng);
        let server = KeyPair::generate(&mut rng);
        let server_cert = ServerCertificate::new(
            SERVER_KEY_ID,
            server.public_key,
            &root.private_key,
            &mut rng,
        )?;
        // The root's private half is kept so that a later version can rotate the server key;
        // it never leaves this database. One transaction: a crash half-way would otherwise
        // mint a new trust root on the next start, and every client would refuse the relay.
        store.add_meta(&[
            ("trust_root_private", &root.private_key.serialize()),
            ("trust_root_public", &root.public_key.serialize()),
            ("server_private", &server.private_key.serialize()),
            ("server_cert", server_cert.serialized()?),
        ])?;
        // What is kept, not what was made here: relays starting together on an empty shared
        // database each make keys, and only the first writer's are stored. Serving its own
        // would have a relay issue certificates that clients of the others refuse.
        Self::load(store)?.ok_or_else(|| CertError::Corrupt("keys written but not found".into()))
    }

    /// The authority the store holds, if it holds all of it.
    fn load(store: &mut dyn Directory) -> Result<Option<Self>, CertError> {
        fn corrupt(e: impl std::fmt::Display) -> CertError {
            CertError::Corrupt(e.to_string())
        }
        let (Some(root), Some(key), Some(cert)) = (
            store.meta("trust_root_public")?,
            store.meta("server_private")?,
            store.meta("server_cert")?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Authority {
            trust_root: PublicKey::deserialize(&root).map_err(corrupt)?,
            server_key: PrivateKey::deserialize(&key).map_err(corrupt)?,
            server_cert: ServerCertificate::deserialize(&cert).map_err(corrupt)?,
        }))
    }

    pub fn trust_root(&self) -> &PublicKey {
        &self.trust_root
    }

    /// A sender certificate for `account_id` (device 1) holding `identity_key`.
    pub fn issue(&self, account_id: &str, identity_key: &[u8]) -> Result<Vec<u8>, CertError> {
        let key = IdentityKey::decode(identity_key)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let device = DeviceId::new(1).map_err(|e| CertError::Corrupt(e.to_string()))?;
        let cert = SenderCertificate::new(
            account_id.to_string(),
            None,
            *key.public_key(),
            device,
            Timestamp::from_epoch_millis(now + SENDER_CERT_LIFETIME_MS),
            self.server_cert.clone(),
            &self.server_key,
            &mut rand::rng(),
        )?;
        Ok(cert.serialized()?.to_vec())
    }
}
