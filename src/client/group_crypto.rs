//! A thin wrapper over libsignal's sender keys: the distribution message that shares our
//! chain with a member, and sealing a group message once for every member (sealed sender v2).
//!
//! Owns the translation between group ids and libsignal's distribution ids and addresses.
//! Every key, chain step, signature and cipher is libsignal's; nothing here invents
//! cryptography. Must not touch SQL directly (it goes through `signal_store::Stores`), decide
//! membership, nor touch the network. Opening is `crypto::decrypt`'s (a sender-key message
//! arrives in the same sealed envelope as a 1:1 one).

use libsignal_protocol::{
    CiphertextMessageType, ContentHint, SenderCertificate, SenderKeyDistributionMessage, ServiceId,
    SessionStore as _, SignalProtocolError, UnidentifiedSenderMessageContent,
    create_sender_key_distribution_message, group_encrypt, process_sender_key_distribution_message,
    sealed_sender_multi_recipient_encrypt,
};
use rand::{CryptoRng, Rng};
use uuid::Uuid;

use super::crypto::{Result, address};
use super::signal_store::Stores;

/// libsignal's name for a group's current set of sender keys.
pub fn distribution(id: &[u8; 16]) -> Uuid {
    Uuid::from_bytes(*id)
}

/// Our sender-key distribution message for `distribution_id`, making our sender key first if
/// we have none: what a member needs to read what we send to the group from now on (not
/// before: the chain only moves forward).
pub async fn sender_key_message<R: Rng + CryptoRng>(
    stores: &mut Stores<'_>,
    own_account: &str,
    distribution_id: &[u8; 16],
    rng: &mut R,
) -> Result<Vec<u8>> {
    let skdm = create_sender_key_distribution_message(
        &address(own_account),
        distribution(distribution_id),
        &mut stores.sender_keys,
        rng,
    )
    .await?;
    Ok(skdm.serialized().to_vec())
}

/// Takes `sender`'s distribution message, which must be for `distribution_id` (the group's
/// current one); a message for any other is refused.
pub async fn accept_sender_key(
    stores: &mut Stores<'_>,
    sender: &str,
    skdm: &[u8],
    distribution_id: &[u8; 16],
) -> Result<()> {
    let skdm = SenderKeyDistributionMessage::try_from(skdm)?;
    if skdm.distribution_id()? != distribution(distribution_id) {
        return Err(SignalProtocolError::InvalidArgument(
            "a sender key for another distribution than the group's".into(),
        ));
    }
    process_sender_key_distribution_message(&address(sender), &skdm, &mut stores.sender_keys).await
}

/// Encrypts `plaintext` under our sender key and seals it once for every one of
/// `recipients` (account ids, each with a session already). libsignal stores the advanced
/// chain before `group_encrypt` returns, in the caller's transaction: the caller commits it
/// before the envelope leaves.
pub async fn seal<R: Rng + CryptoRng>(
    stores: &mut Stores<'_>,
    own_account: &str,
    distribution_id: &[u8; 16],
    cert: &SenderCertificate,
    plaintext: &[u8],
    recipients: &[String],
    rng: &mut R,
) -> Result<Vec<u8>> {
    let message = group_encrypt(
        &mut stores.sender_keys,
        &address(own_account),
        distribution(distribution_id),
        plaintext,
        rng,
    )
    .await?;
    let usmc = UnidentifiedSenderMessageContent::new(
        CiphertextMessageType::SenderKey,
        cert.clone(),
        message.serialized().to_vec(),
        ContentHint::Default,
        None,
    )?;
    let addresses: Vec<_> = recipients.iter().map(|r| address(r)).collect();
    let mut sessions = Vec::with_capacity(addresses.len());
    for a in &addresses {
        sessions.push(
            stores
                .sessions
                .load_session(a)
                .await?
                .ok_or_else(|| SignalProtocolError::SessionNotFound(a.clone()))?,
        );
    }
    let addresses: Vec<_> = addresses.iter().collect();
    let sessions: Vec<_> = sessions.iter().collect();
    sealed_sender_multi_recipient_encrypt(
        &addresses,
        &sessions,
        std::iter::empty::<ServiceId>(),
        &usmc,
        &stores.identity,
        rng,
    )
    .await
}
