//! libsignal's store traits over the client's SQLite connection.
//!
//! Owns the key tables (prekeys, signed prekeys, Kyber prekeys and their use log, sessions,
//! group sender keys);
//! peer identities are read from the contacts' records, never written. Each adapter borrows a connection, which may be an open transaction, so a
//! whole decrypt and the message insert commit or roll back together. Must not touch the
//! network, and must not hold its own transaction: the caller decides what is atomic.

use async_trait::async_trait;
use libsignal_protocol::{
    Direction, GenericSignedPreKey, IdentityChange, IdentityKey, IdentityKeyPair, IdentityKeyStore,
    KyberPreKeyId, KyberPreKeyRecord, KyberPreKeyStore, PreKeyId, PreKeyRecord, PreKeyStore,
    ProtocolAddress, PublicKey, SenderKeyRecord, SenderKeyStore, SessionRecord, SessionStore,
    SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord, SignedPreKeyStore,
};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

type SignalResult<T> = Result<T, SignalProtocolError>;

/// A database failure inside a libsignal callback; `is_storage_failure` recognises it so that
/// the caller can retry instead of treating the message as undecryptable.
fn db_err(e: rusqlite::Error) -> SignalProtocolError {
    SignalProtocolError::ApplicationCallbackError("sqlite", Box::new(DbFailure(e.to_string())))
}

/// rusqlite's error is not `UnwindSafe`, which libsignal's callback error requires.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DbFailure(String);

/// Whether a libsignal error came from our storage rather than from the message.
pub fn is_storage_failure(e: &SignalProtocolError) -> bool {
    matches!(
        e,
        SignalProtocolError::ApplicationCallbackError("sqlite", _)
    )
}

fn address_key(a: &ProtocolAddress) -> String {
    super::crypto::address_key(a.name())
}

/// All of libsignal's stores for one operation, each borrowing the same connection.
pub struct Stores<'a> {
    pub identity: Identities<'a>,
    pub sessions: Sessions<'a>,
    pub prekeys: PreKeys<'a>,
    pub signed: SignedPreKeys<'a>,
    pub kyber: KyberPreKeys<'a>,
    pub sender_keys: SenderKeys<'a>,
}

impl<'a> Stores<'a> {
    pub fn new(conn: &'a Connection, own: &'a IdentityKeyPair, registration_id: u32) -> Self {
        Stores {
            identity: Identities {
                conn,
                own,
                registration_id,
            },
            sessions: Sessions(conn),
            prekeys: PreKeys(conn),
            signed: SignedPreKeys(conn),
            kyber: KyberPreKeys(conn),
            sender_keys: SenderKeys(conn),
        }
    }
}

pub struct Identities<'a> {
    conn: &'a Connection,
    own: &'a IdentityKeyPair,
    registration_id: u32,
}

impl Identities<'_> {
    /// The contact's key and whether a change of it awaits the user's acceptance. The
    /// contact's record is the one place a peer's key is kept: the key a session is set up
    /// with, a sealed message is opened with, the safety number is computed over and the
    /// verified mark is about.
    fn contact(&self, address: &ProtocolAddress) -> SignalResult<Option<(IdentityKey, bool)>> {
        let row: Option<(Vec<u8>, bool)> = self
            .conn
            .prepare_cached("SELECT identity_key, key_changed FROM contacts WHERE account_id = ?1")
            .and_then(|mut st| st.query_row([address.name()], |r| Ok((r.get(0)?, r.get(1)?))))
            .optional()
            .map_err(db_err)?;
        row.map(|(k, changed)| Ok((IdentityKey::decode(&k)?, changed)))
            .transpose()
    }
}

#[async_trait(?Send)]
impl IdentityKeyStore for Identities<'_> {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(*self.own)
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }

    /// libsignal saves the peer's identity with every message, after `is_trusted_identity`
    /// said yes, so the key is already the contact's. A different one is never written here:
    /// replacing a contact's key is a key change (`trust::key_changed`), with its warning.
    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        match self.contact(address)? {
            Some((known, _)) if known == *identity => Ok(IdentityChange::from_changed(false)),
            _ => Err(SignalProtocolError::UntrustedIdentity(address.clone())),
        }
    }

    /// Only the contact's own key is trusted, in both directions; anyone else's, or any key
    /// of an account that is not a contact, is not. Sending is also refused while a change
    /// of the contact's key awaits acceptance (`trust::key_changed` sets that,
    /// `trust::accept_change` clears it). Receiving from the changed key is allowed: the user
    /// sees the message after the "safety number changed" line that recorded it.
    async fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        direction: Direction,
    ) -> SignalResult<bool> {
        Ok(match self.contact(address)? {
            Some((known, changed)) => {
                known == *identity && !(changed && direction == Direction::Sending)
            }
            None => false,
        })
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        Ok(self.contact(address)?.map(|(k, _)| k))
    }
}

pub struct Sessions<'a>(&'a Connection);

#[async_trait(?Send)]
impl SessionStore for Sessions<'_> {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        let raw: Option<Vec<u8>> = self
            .0
            .prepare_cached("SELECT record FROM sessions WHERE address = ?1")
            .and_then(|mut st| st.query_row([address_key(address)], |r| r.get(0)))
            .optional()
            .map_err(db_err)?;
        raw.map(|r| SessionRecord::deserialize(&r)).transpose()
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: &SessionRecord,
    ) -> SignalResult<()> {
        let serialized = record.serialize()?;
        self.0
            // Updated in place, not replaced: REPLACE deletes the row and inserts it anew, which
            // rewrites the address index and frees and takes overflow pages on every message.
            .prepare_cached(
                "INSERT INTO sessions (address, record) VALUES (?1, ?2)
                 ON CONFLICT(address) DO UPDATE SET record = excluded.record",
            )
            .and_then(|mut st| st.execute(params![address_key(address), serialized]))
            .map_err(db_err)?;
        Ok(())
    }
}

pub struct PreKeys<'a>(&'a Connection);

#[async_trait(?Send)]
impl PreKeyStore for PreKeys<'_> {
    async fn get_pre_key(&self, prekey_id: PreKeyId) -> SignalResult<PreKeyRecord> {
        let raw: Option<Vec<u8>> = self
            .0
            .prepare_cached("SELECT record FROM prekeys WHERE id = ?1")
            .and_then(|mut st| st.query_row([u32::from(prekey_id)], |r| r.get(0)))
            .optional()
            .map_err(db_err)?;
        PreKeyRecord::deserialize(&raw.ok_or(SignalProtocolError::InvalidPreKeyId)?)
    }

    async fn save_pre_key(
        &mut self,
        prekey_id: PreKeyId,
        record: &PreKeyRecord,
    ) -> SignalResult<()> {
        let serialized = record.serialize()?;
        self.0
            .prepare_cached("INSERT OR REPLACE INTO prekeys (id, record) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![u32::from(prekey_id), serialized]))
            .map_err(db_err)?;
        Ok(())
    }

    async fn remove_pre_key(&mut self, prekey_id: PreKeyId) -> SignalResult<()> {
        self.0
            .prepare_cached("DELETE FROM prekeys WHERE id = ?1")
            .and_then(|mut st| st.execute([u32::from(prekey_id)]))
            .map_err(db_err)?;
        Ok(())
    }
}

pub struct SignedPreKeys<'a>(&'a Connection);

#[async_trait(?Send)]
impl SignedPreKeyStore for SignedPreKeys<'_> {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        let raw: Option<Vec<u8>> = self
            .0
            .prepare_cached("SELECT record FROM signed_prekeys WHERE id = ?1")
            .and_then(|mut st| st.query_row([u32::from(id)], |r| r.get(0)))
            .optional()
            .map_err(db_err)?;
        SignedPreKeyRecord::deserialize(&raw.ok_or(SignalProtocolError::InvalidSignedPreKeyId)?)
    }

    async fn save_signed_pre_key(
        &mut self,
        id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        let serialized = record.serialize()?;
        self.0
            .prepare_cached("INSERT OR REPLACE INTO signed_prekeys (id, record) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![u32::from(id), serialized]))
            .map_err(db_err)?;
        Ok(())
    }
}

pub struct KyberPreKeys<'a>(&'a Connection);

impl KyberPreKeys<'_> {
    /// Stores a Kyber prekey; `last_resort` ones are kept after use, one-time ones are not.
    pub fn save(
        &self,
        id: KyberPreKeyId,
        record: &KyberPreKeyRecord,
        last_resort: bool,
    ) -> SignalResult<()> {
        let serialized = record.serialize()?;
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO kyber_prekeys (id, record, last_resort)
                 VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut st| st.execute(params![u32::from(id), serialized, last_resort]))
            .map_err(db_err)?;
        Ok(())
    }
}

#[async_trait(?Send)]
impl KyberPreKeyStore for KyberPreKeys<'_> {
    async fn get_kyber_pre_key(&self, id: KyberPreKeyId) -> SignalResult<KyberPreKeyRecord> {
        let raw: Option<Vec<u8>> = self
            .0
            .prepare_cached("SELECT record FROM kyber_prekeys WHERE id = ?1")
            .and_then(|mut st| st.query_row([u32::from(id)], |r| r.get(0)))
            .optional()
            .map_err(db_err)?;
        KyberPreKeyRecord::deserialize(&raw.ok_or(SignalProtocolError::InvalidKyberPreKeyId)?)
    }

    async fn save_kyber_pre_key(
        &mut self,
        id: KyberPreKeyId,
        record: &KyberPreKeyRecord,
    ) -> SignalResult<()> {
        self.save(id, record, false)
    }

    /// A one-time Kyber key is deleted on use. A last-resort key stays, so each
    /// (key, signed prekey, base key) triple it was used with is logged, and a second use of
    /// the same triple, which can only be a replayed pre-key message, is refused.
    async fn mark_kyber_pre_key_used(
        &mut self,
        id: KyberPreKeyId,
        ec_prekey_id: SignedPreKeyId,
        base_key: &PublicKey,
    ) -> SignalResult<()> {
        let last_resort: Option<bool> = self
            .0
            .prepare_cached("SELECT last_resort FROM kyber_prekeys WHERE id = ?1")
            .and_then(|mut st| st.query_row([u32::from(id)], |r| r.get(0)))
            .optional()
            .map_err(db_err)?;
        match last_resort {
            None => Err(SignalProtocolError::InvalidKyberPreKeyId),
            Some(false) => {
                self.0
                    .prepare_cached("DELETE FROM kyber_prekeys WHERE id = ?1")
                    .and_then(|mut st| st.execute([u32::from(id)]))
                    .map_err(db_err)?;
                Ok(())
            }
            Some(true) => {
                let inserted = self
                    .0
                    .prepare_cached(
                        "INSERT OR IGNORE INTO kyber_used (kyber_id, signed_id, base_key)
                         VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            u32::from(id),
                            u32::from(ec_prekey_id),
                            base_key.serialize().as_ref()
                        ])
                    })
                    .map_err(db_err)?;
                if inserted == 0 {
                    return Err(SignalProtocolError::InvalidMessage(
                        libsignal_protocol::CiphertextMessageType::PreKey,
                        "replayed pre-key message for a last-resort Kyber key",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Group sender keys (ours and each member's), by address and distribution id. libsignal's
/// `group_encrypt` stores the advanced chain here before it returns, so the step is in the
/// caller's transaction and commits before the envelope it made can leave.
pub struct SenderKeys<'a>(&'a Connection);

#[async_trait(?Send)]
impl SenderKeyStore for SenderKeys<'_> {
    async fn store_sender_key(
        &mut self,
        sender: &ProtocolAddress,
        distribution_id: Uuid,
        record: &SenderKeyRecord,
    ) -> SignalResult<()> {
        let serialized = record.serialize()?;
        self.0
            .prepare_cached(
                "INSERT INTO sender_keys (address, distribution_id, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT(address, distribution_id) DO UPDATE SET record = excluded.record",
            )
            .and_then(|mut st| {
                st.execute(params![
                    address_key(sender),
                    &distribution_id.as_bytes()[..],
                    serialized
                ])
            })
            .map_err(db_err)?;
        Ok(())
    }

    async fn load_sender_key(
        &mut self,
        sender: &ProtocolAddress,
        distribution_id: Uuid,
    ) -> SignalResult<Option<SenderKeyRecord>> {
        let raw: Option<Vec<u8>> = self
            .0
            .prepare_cached(
                "SELECT record FROM sender_keys WHERE address = ?1 AND distribution_id = ?2",
            )
            .and_then(|mut st| {
                st.query_row(
                    params![address_key(sender), &distribution_id.as_bytes()[..]],
                    |r| r.get(0),
                )
            })
            .optional()
            .map_err(db_err)?;
        raw.map(|r| SenderKeyRecord::deserialize(&r)).transpose()
    }
}
