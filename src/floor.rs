//! The cryptography floor: one secret message sealed and opened with libsignal's own
//! in-memory stores, no disk and no network. Benchmarks and `sotto-load` measure sotto
//! against it; the application never uses it.

use std::time::SystemTime;

use libsignal_protocol::{
    DeviceId, IdentityKeyPair, IdentityKeyStore, InMemSignalProtocolStore, KeyPair,
    KyberPreKeyStore, PreKeyStore, PublicKey, SenderCertificate, ServerCertificate,
    SignedPreKeyStore, Timestamp, process_prekey_bundle, sealed_sender_decrypt,
    sealed_sender_encrypt,
};

use crate::client::crypto;

/// A trust root, and a sender certificate under it for `account` holding `key`.
pub fn certificate(account: &str, key: &IdentityKeyPair) -> (PublicKey, SenderCertificate) {
    let mut rng = rand::rng();
    let root = KeyPair::generate(&mut rng);
    let server = KeyPair::generate(&mut rng);
    // Freshly generated keys and a valid device id: these cannot fail.
    let server_cert = ServerCertificate::new(1, server.public_key, &root.private_key, &mut rng)
        .expect("server certificate");
    let cert = SenderCertificate::new(
        account.to_string(),
        None,
        *key.public_key(),
        DeviceId::new(1).expect("device 1"),
        Timestamp::from_epoch_millis(u64::MAX / 2),
        server_cert,
        &server.private_key,
        &mut rng,
    )
    .expect("sender certificate");
    (root.public_key, cert)
}

/// alice and bob with an established session in libsignal's in-memory stores.
pub struct InMemPair {
    alice: InMemSignalProtocolStore,
    bob: InMemSignalProtocolStore,
    root: PublicKey,
    cert: SenderCertificate,
}

const BOB: &str = "bob-account";

impl InMemPair {
    pub async fn new() -> InMemPair {
        let mut rng = rand::rng();
        let now = SystemTime::now();
        let a_key = IdentityKeyPair::generate(&mut rng);
        let b_key = IdentityKeyPair::generate(&mut rng);
        let mut alice = InMemSignalProtocolStore::new(a_key, 1).expect("store");
        let mut bob = InMemSignalProtocolStore::new(b_key, 2).expect("store");
        let signed = crypto::signed_prekey(1, &b_key, now, &mut rng).expect("signed prekey");
        let kyber = crypto::kyber_prekey(1, &b_key, now, &mut rng).expect("kyber prekey");
        let pre = crypto::one_time_prekey(1, &mut rng);
        bob.save_signed_pre_key(1.into(), &signed)
            .await
            .expect("save");
        bob.save_kyber_pre_key(1.into(), &kyber)
            .await
            .expect("save");
        bob.save_pre_key(1.into(), &pre).await.expect("save");
        let bundle = crypto::bundle(&crate::wire::Bundle {
            account_id: BOB.into(),
            handle: "bob".into(),
            identity_key: b_key.identity_key().serialize().to_vec().into(),
            registration_id: bob.get_local_registration_id().await.expect("reg id"),
            signed_prekey: crypto::wire_signed(&signed).expect("wire"),
            prekey: Some(crypto::wire_prekey(&pre).expect("wire")),
            kyber: crypto::wire_kyber(&kyber).expect("wire"),
        })
        .expect("bundle");
        process_prekey_bundle(
            &crypto::address(BOB),
            &mut alice.session_store,
            &mut alice.identity_store,
            &bundle,
            now,
            &mut rng,
        )
        .await
        .expect("session");
        let (root, cert) = certificate("alice-account", &a_key);
        let mut pair = InMemPair {
            alice,
            bob,
            root,
            cert,
        };
        // Past the pre-key message: what follows rides the ratchet.
        pair.seal_open(b"warm up").await;
        pair
    }

    /// Seals `plaintext` from alice to bob and opens it; returns the opened length.
    pub async fn seal_open(&mut self, plaintext: &[u8]) -> usize {
        let mut rng = rand::rng();
        let env = sealed_sender_encrypt(
            &crypto::address(BOB),
            &self.cert,
            plaintext,
            &mut self.alice.session_store,
            &mut self.alice.identity_store,
            SystemTime::now(),
            &mut rng,
        )
        .await
        .expect("seal");
        sealed_sender_decrypt(
            &env,
            &self.root,
            Timestamp::from_epoch_millis(1),
            None,
            BOB.to_string(),
            crypto::device(),
            &mut self.bob.identity_store,
            &mut self.bob.session_store,
            &mut self.bob.pre_key_store,
            &self.bob.signed_pre_key_store,
            &mut self.bob.kyber_pre_key_store,
        )
        .await
        .expect("open")
        .message
        .len()
    }
}
