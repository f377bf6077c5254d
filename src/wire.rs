//! The frames exchanged between a client and the relay: the only protocol definition.
//!
//! Owns the frame types, their JSON encoding, the size limit and handle validation.
//! Must not do I/O: callers read and write WebSocket messages and hand the bytes here.
//! Binary fields travel as standard base64 strings (`B64`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Protocol version spoken by this build; the relay announces its own in `Challenge`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts (WebSocket message and frame alike).
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// WebSocket read and write buffer size on both sides. tungstenite's default (128 KiB) is
/// zero-filled on every read and held by every idle connection; almost every frame is far
/// smaller, and a larger one grows the buffer for itself.
pub const WS_BUFFER_BYTES: usize = 8 * 1024;

/// Largest message body or sealed envelope (decoded bytes) a relay accepts. Base64 makes it
/// 4/3 as large inside a frame, and a `deliver` adds its own fields: this bound keeps the
/// delivered frame under `MAX_FRAME_BYTES`, so what the relay accepts it can also deliver.
pub const MAX_PAYLOAD_BYTES: usize = 160 * 1024;

/// Largest chunk of a blob (raw bytes) one `blob_put` or `blob_data` carries. Base64 makes it
/// 4/3 as large inside a frame (about 171 KiB), well under `MAX_FRAME_BYTES`.
pub const MAX_BLOB_CHUNK: u32 = 128 * 1024;

/// Largest number of one-time prekeys of one kind accepted in a single upload.
pub const MAX_PREKEYS_PER_UPLOAD: usize = 200;

/// A request number chosen by the client; the relay echoes it in the answer.
pub type ReqId = u64;

/// Bytes that travel as a base64 string inside JSON.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct B64(pub Vec<u8>);

impl std::fmt::Debug for B64 {
    // Frames may carry ciphertexts and keys; a Debug print shows only the length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for B64 {
    fn from(v: Vec<u8>) -> Self {
        B64(v)
    }
}

impl From<&[u8]> for B64 {
    fn from(v: &[u8]) -> Self {
        B64(v.to_vec())
    }
}

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

/// A one-time EC prekey as published in the directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreKey {
    pub id: u32,
    pub public: B64,
}

/// A prekey signed by the account's identity key (the signed EC prekey, or any Kyber prekey).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignedKey {
    pub id: u32,
    pub public: B64,
    pub signature: B64,
}

/// What `Register` uploads: everything another client needs to start a session with us.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyUpload {
    pub identity_key: B64,
    pub registration_id: u32,
    pub signed_prekey: SignedKey,
    pub kyber_last_resort: SignedKey,
    pub one_time_prekeys: Vec<PreKey>,
    pub one_time_kyber: Vec<SignedKey>,
}

/// A prekey bundle handed out by the directory; one-time keys in it are never handed out again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bundle {
    pub account_id: String,
    pub handle: String,
    pub identity_key: B64,
    pub registration_id: u32,
    pub signed_prekey: SignedKey,
    pub prekey: Option<PreKey>,
    /// A one-time Kyber prekey if any is left, else the last-resort one.
    pub kyber: SignedKey,
}

/// How an account's identity key was replaced.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyChangeVia {
    /// By the account itself, with the old key's endorsement of the new one.
    Rekey,
    /// By the relay's operator, for a user who lost their device: no endorsement exists.
    Reset,
}

/// One entry of an account's key-change log, as the directory hands it out with a lookup.
/// Clients check `endorsement` themselves: the relay's word is not enough.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyChange {
    pub old_key: B64,
    pub new_key: B64,
    pub via: KeyChangeVia,
    /// The old key's signature over `rekey_message(new_key)`; absent for a reset.
    pub endorsement: Option<B64>,
    /// Unix ms.
    pub at: u64,
}

/// One recipient of a multi-recipient sealed envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRecipient {
    /// The recipient's account id (a UUID; the SSv2 message names the same ServiceId).
    pub to: String,
    pub access_token: B64,
    /// As in SendSealed: the identity key the sender encrypted to.
    #[serde(default)]
    pub recipient_key: Option<B64>,
}

/// Frames a client sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Prove the account by signing `auth_message(challenge)` with the identity key.
    Auth { account_id: String, signature: B64 },
    /// Create an account; the signature over `auth_message(challenge)` proves the key is held.
    /// A successful registration also authenticates the connection.
    Register {
        handle: String,
        keys: KeyUpload,
        signature: B64,
        /// The code from the relay operator's reset of `handle`, to take it over with new keys.
        #[serde(default)]
        claim: Option<String>,
    },
    /// Declare this connection anonymous: it may then only submit sealed envelopes.
    Anonymous,
    /// Directory: find an account by handle or by account id (exactly one of them).
    Lookup {
        req: ReqId,
        handle: Option<String>,
        account_id: Option<String>,
    },
    /// Directory: take a prekey bundle of an account.
    FetchBundle { req: ReqId, account_id: String },
    /// Ask for a fresh sender certificate for sealed sending.
    GetSenderCert { req: ReqId },
    /// Add one-time prekeys to the directory.
    UploadPreKeys {
        req: ReqId,
        prekeys: Vec<PreKey>,
        kyber: Vec<SignedKey>,
    },
    /// A normal message: the relay sees the sender (the connection's account) and the body.
    Send {
        req: ReqId,
        to: String,
        body: B64,
        /// Unix ms after which the relay may drop the message undelivered.
        #[serde(default)]
        expires_at: Option<u64>,
        /// Deliver only to a connected recipient, never queue (see `SendSealed`).
        #[serde(default, skip_serializing_if = "is_false")]
        online_only: bool,
    },
    /// A sealed-sender envelope, accepted only on an anonymous connection.
    SendSealed {
        req: ReqId,
        to: String,
        access_token: B64,
        envelope: B64,
        /// Unix ms after which the relay may drop the envelope undelivered.
        expires_at: Option<u64>,
        /// The identity key the sender encrypted to; the relay refuses the envelope with
        /// `identity_changed` if the recipient's key is another one now.
        #[serde(default)]
        recipient_key: Option<B64>,
        /// Online only (ephemeral, e.g. a typing indicator): the relay pushes it to the
        /// recipient's connection if there is one and otherwise drops it; it is never stored,
        /// and the answer is the same either way.
        #[serde(default, skip_serializing_if = "is_false")]
        online_only: bool,
    },
    /// A sealed-sender v2 message for several recipients (libsignal's
    /// `sealed_sender_multi_recipient_encrypt` output), accepted only on an anonymous
    /// connection. The relay splits it per recipient and queues one envelope each, all or none.
    SendMulti {
        req: ReqId,
        envelope: B64,
        recipients: Vec<SealedRecipient>,
        expires_at: Option<u64>,
        #[serde(default, skip_serializing_if = "is_false")]
        online_only: bool,
    },
    /// A normal (readable) message for several accounts, on the account connection: queued
    /// once per recipient, all or none.
    SendGroup {
        req: ReqId,
        to: Vec<String>,
        body: B64,
        expires_at: Option<u64>,
        #[serde(default, skip_serializing_if = "is_false")]
        online_only: bool,
    },
    /// The recipient has durably stored envelope `id`; the relay may delete it.
    Ack { id: u64 },
    /// Blob store: reserve a blob of `size` ciphertext bytes. The relay deletes it at
    /// `expires_at` (Unix ms), once `recipients` downloads have called `blob_fetched`, or after
    /// its retention period. Accepted on both kinds of connection: on an anonymous one the
    /// blob is tied to no account.
    BlobCreate {
        req: ReqId,
        size: u64,
        #[serde(default)]
        expires_at: Option<u64>,
        recipients: u32,
    },
    /// Store `data` (at most `MAX_BLOB_CHUNK` bytes) at `offset`, which must be the blob's
    /// stored length; answered `ok` once it is on disk.
    BlobPut {
        req: ReqId,
        blob_id: String,
        offset: u64,
        data: B64,
    },
    /// How much of a blob the relay holds: where an interrupted upload resumes.
    BlobStatus { req: ReqId, blob_id: String },
    /// Read up to `len` bytes (at most `MAX_BLOB_CHUNK`) of a complete blob from `offset`.
    BlobGet {
        req: ReqId,
        blob_id: String,
        offset: u64,
        len: u32,
    },
    /// This recipient holds the whole blob; counted once per call against its `recipients`.
    BlobFetched { req: ReqId, blob_id: String },
    /// Replace this account's identity key and prekeys. `proof` is the new key's signature
    /// over `auth_message(challenge)` of this connection; `endorsement` is the current key's
    /// signature over `rekey_message(new identity key)`.
    Rekey {
        req: ReqId,
        keys: KeyUpload,
        proof: B64,
        endorsement: B64,
    },
}

/// What a delivered envelope carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    Normal {
        from: String,
        from_handle: String,
        body: B64,
    },
    Sealed {
        envelope: B64,
    },
}

/// Frames the relay sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayFrame {
    /// First frame on every connection.
    Challenge {
        nonce: B64,
        version: u32,
        trust_root: B64,
    },
    /// The connection now acts for `account_id`.
    Authenticated {
        account_id: String,
        handle: String,
    },
    /// The connection is anonymous.
    AnonymousOk,
    /// How many one-time prekeys the directory still holds for this account.
    PreKeyCount {
        ec: u32,
        kyber: u32,
    },
    Account {
        req: ReqId,
        account_id: String,
        handle: String,
        identity_key: B64,
        access_token: B64,
        /// The account's latest key changes, oldest first: how `identity_key` descends from
        /// the keys its contacts may hold.
        #[serde(default)]
        key_changes: Vec<KeyChange>,
    },
    Bundle {
        req: ReqId,
        bundle: Bundle,
    },
    SenderCert {
        req: ReqId,
        certificate: B64,
    },
    /// The request succeeded; for sends, the envelope is committed to the queue.
    Ok {
        req: ReqId,
    },
    /// A queued envelope for this account, or an online-only one (never acknowledged).
    Deliver {
        /// The queue's id, for the `ack`; 0 for an online-only envelope.
        id: u64,
        received_at: u64,
        payload: Payload,
        /// Sent online only: it was never stored, and must not be acknowledged.
        #[serde(default, skip_serializing_if = "is_false")]
        online_only: bool,
    },
    /// Everything queued when the connection authenticated has been pushed.
    Drained,
    /// A blob was reserved: upload it in chunks of at most `chunk_size` bytes.
    BlobCreated {
        req: ReqId,
        blob_id: String,
        chunk_size: u32,
    },
    /// How much of a blob is stored (`stored` bytes from the start, of `size`).
    BlobStatus {
        req: ReqId,
        size: u64,
        stored: u64,
    },
    /// Bytes of a blob from `offset`; fewer than asked only at its end.
    BlobData {
        req: ReqId,
        offset: u64,
        data: B64,
    },
    Error {
        req: Option<ReqId>,
        code: ErrorCode,
        message: String,
    },
}

/// Machine-readable reason in an `Error` frame.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Malformed,
    TooLarge,
    NotAuthenticated,
    AuthFailed,
    HandleTaken,
    InvalidHandle,
    NotFound,
    Forbidden,
    /// Too many requests of this kind too fast; wait and try again.
    RateLimited,
    /// A quota (mail waiting at the relay, prekeys held) is used up; try again later.
    QuotaExceeded,
    Full,
    IdentityChanged,
    Internal,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The bytes a client signs to answer a challenge; the prefix keeps the signature from being
/// valid for anything else the identity key signs.
pub fn auth_message(nonce: &[u8]) -> Vec<u8> {
    let mut m = b"sotto-auth-v1:".to_vec();
    m.extend_from_slice(nonce);
    m
}

/// The bytes the current identity key signs to endorse a new one.
pub fn rekey_message(new_identity_key: &[u8]) -> Vec<u8> {
    let mut m = b"sotto-rekey-v1:".to_vec();
    m.extend_from_slice(new_identity_key);
    m
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge(usize),
    #[error("frame is not valid: {0}")]
    Malformed(String),
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, FrameError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(|e| FrameError::Malformed(e.to_string()))
}

impl ClientFrame {
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        decode(bytes)
    }
    pub fn encode(&self) -> String {
        // Serializing these plain enums cannot fail: no maps with non-string keys, no floats.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl RelayFrame {
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        decode(bytes)
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What precedes the account ids in the message of an `identity_changed` answer to a
/// fan-out (`send_multi`): "…; recipients: ID, ID".
pub const CHANGED_RECIPIENTS: &str = "recipients: ";

/// The account ids an `identity_changed` answer to a fan-out names: those whose identity
/// key is no longer the one the sender encrypted to. Empty when the message names none.
pub fn changed_recipients(message: &str) -> Vec<String> {
    message
        .rsplit_once(CHANGED_RECIPIENTS)
        .map(|(_, ids)| {
            ids.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes in a blob id: 128 random bits.
const BLOB_ID_BYTES: usize = 16;

/// A fresh random blob id: 32 lowercase hex digits.
pub fn new_blob_id() -> String {
    let bytes: [u8; BLOB_ID_BYTES] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` has the one form blob ids take: exactly 32 lowercase hex digits. The relay
/// names files after blob ids, so nothing else (no `/`, no `..`) may pass.
pub fn valid_blob_id(id: &str) -> bool {
    id.len() == BLOB_ID_BYTES * 2 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A handle is 1–32 characters of `[a-z0-9_.-]`.
pub fn valid_handle(h: &str) -> bool {
    (1..=32).contains(&h.len())
        && h.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bytes_are_base64() {
        let f = ClientFrame::Send {
            req: 7,
            to: "acc".into(),
            body: B64(vec![0, 255, 1]),
            expires_at: None,
            online_only: false,
        };
        let s = f.encode();
        assert!(s.contains("\"type\":\"send\""), "{s}");
        assert!(s.contains("\"AP8B\""), "{s}");
        assert_eq!(ClientFrame::decode(s.as_bytes()).unwrap(), f);
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused() {
        let big = vec![b' '; MAX_FRAME_BYTES + 1];
        assert!(matches!(
            ClientFrame::decode(&big),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            ClientFrame::decode(br#"{"type":"launch_missiles"}"#),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            ClientFrame::decode(br#"{"type":"ack","id":"x"}"#),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_maximal_payload_still_fits_a_delivery_frame() {
        let frame = RelayFrame::Deliver {
            id: u64::MAX,
            received_at: u64::MAX,
            payload: Payload::Normal {
                from: "f".repeat(36),
                from_handle: "h".repeat(32),
                body: B64(vec![0xff; MAX_PAYLOAD_BYTES]),
            },
            online_only: true,
        };
        assert!(frame.encode().len() < MAX_FRAME_BYTES);
    }

    #[test]
    fn a_maximal_blob_chunk_fits_a_frame_both_ways() {
        let id = new_blob_id();
        let put = ClientFrame::BlobPut {
            req: u64::MAX,
            blob_id: id,
            offset: u64::MAX,
            data: B64(vec![0xff; MAX_BLOB_CHUNK as usize]),
        };
        let put = put.encode();
        assert!(put.len() < MAX_FRAME_BYTES, "{}", put.len());
        assert!(ClientFrame::decode(put.as_bytes()).is_ok());
        let data = RelayFrame::BlobData {
            req: u64::MAX,
            offset: u64::MAX,
            data: B64(vec![0xff; MAX_BLOB_CHUNK as usize]),
        };
        let data = data.encode();
        assert!(data.len() < MAX_FRAME_BYTES, "{}", data.len());
        assert!(RelayFrame::decode(data.as_bytes()).is_ok());
    }

    #[test]
    fn blob_ids_are_validated_strictly() {
        let id = new_blob_id();
        assert!(valid_blob_id(&id), "{id}");
        assert_ne!(id, new_blob_id());
        for bad in [
            "",
            "../x",
            "../../../../../../etc/passwd",
            &id[..31],
            &format!("{id}0"),
            "0123456789ABCDEF0123456789abcdef",
            &format!("{}/", &id[..31]),
            &format!("{}.", &id[..31]),
        ] {
            assert!(!valid_blob_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn handles_are_validated() {
        assert!(valid_handle("alice"));
        assert!(valid_handle("a.b-c_9"));
        assert!(!valid_handle(""));
        assert!(!valid_handle("Alice"));
        assert!(!valid_handle("al ice"));
        assert!(!valid_handle(&"a".repeat(33)));
        assert!(valid_handle(&"a".repeat(32)));
    }

    #[test]
    fn fan_out_frames_round_trip() {
        let multi = ClientFrame::SendMulti {
            req: 3,
            envelope: B64(vec![0x22, 1, 2]),
            recipients: vec![
                SealedRecipient {
                    to: "0b6f5c1e-0000-4000-8000-000000000001".into(),
                    access_token: B64(vec![7; 16]),
                    recipient_key: Some(B64(vec![5; 33])),
                },
                SealedRecipient {
                    to: "0b6f5c1e-0000-4000-8000-000000000002".into(),
                    access_token: B64(vec![8; 16]),
                    recipient_key: None,
                },
            ],
            expires_at: Some(9),
            online_only: false,
        };
        let s = multi.encode();
        assert!(s.contains("\"type\":\"send_multi\""), "{s}");
        assert!(!s.contains("online_only"), "{s}");
        assert_eq!(ClientFrame::decode(s.as_bytes()).unwrap(), multi);
        let group = ClientFrame::SendGroup {
            req: 4,
            to: vec!["a".into(), "b".into()],
            body: B64(b"hi".to_vec()),
            expires_at: None,
            online_only: true,
        };
        let s = group.encode();
        assert!(s.contains("\"type\":\"send_group\""), "{s}");
        assert_eq!(ClientFrame::decode(s.as_bytes()).unwrap(), group);
        // A recipient without `recipient_key` still decodes.
        let bare = br#"{"type":"send_multi","req":1,"envelope":"AA==","expires_at":null,
            "recipients":[{"to":"x","access_token":"AA=="}]}"#;
        assert!(matches!(
            ClientFrame::decode(bare),
            Ok(ClientFrame::SendMulti { recipients, online_only: false, .. })
                if recipients[0].recipient_key.is_none()
        ));
    }

    #[test]
    fn changed_recipients_are_read_from_the_message() {
        let message = format!("keys changed; look them up again; {CHANGED_RECIPIENTS}a-1, b-2");
        assert_eq!(changed_recipients(&message), ["a-1", "b-2"]);
        assert!(changed_recipients("the recipient's identity key has changed").is_empty());
    }

    #[test]
    fn debug_of_bytes_hides_content() {
        assert_eq!(format!("{:?}", B64(b"secret".to_vec())), "B64(6 bytes)");
    }
}
