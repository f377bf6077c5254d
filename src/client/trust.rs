//! Trust in a contact's identity key: safety numbers (libsignal's fingerprints), the user's
//! verified mark, and what happens when a contact's key changes.
//!
//! Owns the `verified` and `key_changed` state of contacts. A changed key blocks secret
//! sending (see `signal_store::Identities::is_trusted_identity`) until the user accepts it.
//! Must not touch the network: the manager learns of changes and calls in here.

use libsignal_protocol::{Fingerprint, IdentityKey};
use rusqlite::params;

use super::account;
use super::crypto;
use super::store::{Contact, Message, MessageKind, Store, StoreError};

/// Fingerprint format version and hash iterations, as libsignal's apps use them.
const FINGERPRINT_VERSION: u32 = 2;
const FINGERPRINT_ITERATIONS: u32 = 5200;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0:?} is not among your contacts (see `sotto contacts`)")]
    NotAContact(String),
    #[error(
        "{0} is a group; safety numbers and keys are about people: verify its members one by one (/group members, `sotto group members`)"
    )]
    NotAPerson(String),
    #[error("a stored identity key is unreadable; the profile is damaged")]
    BadKey(#[from] libsignal_protocol::SignalProtocolError),
    #[error("the safety number could not be computed: {0}")]
    Fingerprint(String),
    #[error(
        "that is not a scanned safety number: expected the hex printed by `sotto verify HANDLE --scannable`"
    )]
    NotScannable,
}

impl From<rusqlite::Error> for TrustError {
    fn from(e: rusqlite::Error) -> Self {
        TrustError::Store(e.into())
    }
}

/// What `/verify` and `sotto verify` show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    pub handle: String,
    /// 60 digits in 12 groups of 5, separated by spaces.
    pub display: String,
    /// The scannable form (what the QR code holds).
    pub scannable: Vec<u8>,
    pub verified: bool,
    pub key_changed: bool,
}

// libsignal's fingerprint error implements Debug and Display but not std::error::Error.
fn fp_err(e: libsignal_protocol::FingerprintError) -> TrustError {
    TrustError::Fingerprint(format!("{e:?}"))
}

fn contact(store: &Store, handle: &str) -> Result<Contact, TrustError> {
    if crate::client::group_handle(handle) {
        return Err(TrustError::NotAPerson(handle.to_string()));
    }
    store
        .contact_by_handle(handle)?
        .ok_or_else(|| TrustError::NotAContact(handle.to_string()))
}

fn fingerprint(store: &Store, c: &Contact) -> Result<Fingerprint, TrustError> {
    let reg = store.registration()?;
    let (own, _) = account::identity(store)?;
    Fingerprint::new(
        FINGERPRINT_VERSION,
        FINGERPRINT_ITERATIONS,
        reg.account_id.as_bytes(),
        own.identity_key(),
        c.account_id.as_bytes(),
        &IdentityKey::decode(&c.identity_key)?,
    )
    .map_err(fp_err)
}

/// The safety number of the conversation with `handle`: the same on both sides.
pub fn safety_number(store: &Store, handle: &str) -> Result<SafetyNumber, TrustError> {
    let c = contact(store, handle)?;
    let fp = fingerprint(store, &c)?;
    let digits = fp.display_string().map_err(fp_err)?;
    let display = grouped(&digits, 5);
    Ok(SafetyNumber {
        handle: c.handle,
        display,
        scannable: fp.scannable.serialize().map_err(fp_err)?,
        verified: c.verified,
        key_changed: c.key_changed,
    })
}

/// Compares the other side's scannable safety number (hex, as `--scannable` prints it) with
/// ours; true means both sides hold each other's real keys.
pub fn compare(store: &Store, handle: &str, theirs_hex: &str) -> Result<bool, TrustError> {
    let hex: String = theirs_hex.chars().filter(|c| !c.is_whitespace()).collect();
    if !hex.len().is_multiple_of(2) {
        return Err(TrustError::NotScannable);
    }
    let theirs = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| TrustError::NotScannable)?;
    let c = contact(store, handle)?;
    fingerprint(store, &c)?
        .scannable
        .compare(&theirs)
        .map_err(|_| TrustError::NotScannable)
}

/// `s` (ASCII digits or hex) in groups of `n` separated by spaces, for reading aloud.
pub fn grouped(s: &str, n: usize) -> String {
    s.as_bytes()
        .chunks(n)
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lower-case hex, for `--scannable`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The scannable form as a QR code drawn with Unicode half blocks, two modules a character
/// high, with a quiet zone: readable by a phone camera from a terminal.
pub fn qr(scannable: &[u8]) -> String {
    match qrcode::QrCode::new(scannable) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
        Err(_) => String::from("(no QR code: the safety number did not fit)"),
    }
}

/// Records the user's verdict after comparing safety numbers.
pub fn set_verified(store: &Store, handle: &str, verified: bool) -> Result<(), TrustError> {
    let c = contact(store, handle)?;
    store.conn().execute(
        "UPDATE contacts SET verified = ?2 WHERE account_id = ?1",
        params![c.account_id, verified],
    )?;
    Ok(())
}

/// The user accepts a contact's new key: secret sending is allowed again (to the new key,
/// which is already the contact's: libsignal trusts nothing else).
pub fn accept_change(store: &Store, handle: &str, now: u64) -> Result<bool, TrustError> {
    let c = contact(store, handle)?;
    let work = store.atomic()?;
    let n = store.conn().execute(
        "UPDATE contacts SET key_changed = 0 WHERE account_id = ?1 AND key_changed = 1",
        [&c.account_id],
    )?;
    if n > 0 {
        record(
            store,
            &c.account_id,
            KeyEvent::Accepted,
            Some(&c.identity_key),
            now,
        )?;
    }
    work.commit()?;
    Ok(n > 0)
}

/// Something that happened to a contact's identity key, kept in the contact's key-change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEvent {
    /// The contact replaced their key, endorsed by the old one (checked here).
    Rekeyed,
    /// The relay's operator reset the contact's account (a lost device): the operator's word.
    Reset,
    /// The user accepted the new key.
    Accepted,
    /// The relay (or someone between us and it) offered a prekey bundle with another key.
    RefusedBundle,
    /// The directory named another key with no change the old key endorsed.
    RefusedDirectory,
    /// A sealed message came certified for another key than the contact's.
    RefusedCertificate,
}

impl KeyEvent {
    const ALL: [KeyEvent; 6] = [
        KeyEvent::Rekeyed,
        KeyEvent::Reset,
        KeyEvent::Accepted,
        KeyEvent::RefusedBundle,
        KeyEvent::RefusedDirectory,
        KeyEvent::RefusedCertificate,
    ];

    /// How the log table spells it.
    fn name(self) -> &'static str {
        match self {
            KeyEvent::Rekeyed => "rekeyed",
            KeyEvent::Reset => "reset",
            KeyEvent::Accepted => "accepted",
            KeyEvent::RefusedBundle => "refused_bundle",
            KeyEvent::RefusedDirectory => "refused_directory",
            KeyEvent::RefusedCertificate => "refused_certificate",
        }
    }

    /// Whether this event is a refused substitution: a sign of an attack.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            KeyEvent::RefusedBundle | KeyEvent::RefusedDirectory | KeyEvent::RefusedCertificate
        )
    }

    /// What it means, for the user.
    pub fn describe(self) -> &'static str {
        match self {
            KeyEvent::Rekeyed => "changed their key (signed by their old key)",
            KeyEvent::Reset => "key replaced by the relay operator's reset (lost device)",
            KeyEvent::Accepted => "you accepted the new key",
            KeyEvent::RefusedBundle => {
                "refused: the relay offered session keys under another identity key"
            }
            KeyEvent::RefusedDirectory => {
                "refused: the relay named another key that their old key never endorsed"
            }
            KeyEvent::RefusedCertificate => {
                "refused: a secret message certified for a key that is not theirs"
            }
        }
    }
}

/// One entry of a contact's key-change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLogEntry {
    /// Unix ms.
    pub at: u64,
    pub event: KeyEvent,
}

/// Adds an event to `contact_id`'s key-change log, inside the caller's transaction if any.
pub fn record(
    store: &Store,
    contact_id: &str,
    event: KeyEvent,
    key: Option<&[u8]>,
    now: u64,
) -> Result<(), TrustError> {
    store.conn().execute(
        "INSERT INTO key_log (contact, at, event, key) VALUES (?1, ?2, ?3, ?4)",
        params![contact_id, now as i64, event.name(), key],
    )?;
    Ok(())
}

/// `handle`'s key-change log, oldest first.
pub fn key_log(store: &Store, handle: &str) -> Result<Vec<KeyLogEntry>, TrustError> {
    let c = contact(store, handle)?;
    let mut st = store
        .conn()
        .prepare_cached("SELECT at, event FROM key_log WHERE contact = ?1 ORDER BY seq")?;
    let rows = st.query_map([&c.account_id], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
    })?;
    let mut log = Vec::new();
    for row in rows {
        let (at, name) = row?;
        // An event this version does not know is left out rather than misnamed.
        if let Some(event) = KeyEvent::ALL.into_iter().find(|e| e.name() == name) {
            log.push(KeyLogEntry { at, event });
        }
    }
    Ok(log)
}

/// Records that `contact_id`'s identity key is now `new_key`, if it differs from the one we
/// hold; `how` is the event the change is logged as. The caller has checked the change (see
/// `identity::path`). Clears the verified mark, blocks secret sending until accepted, drops
/// the session with the old key (its messages stay), and puts a line in both threads.
/// Returns the lines.
pub fn key_changed(
    store: &Store,
    contact_id: &str,
    new_key: &[u8],
    how: KeyEvent,
    now: u64,
) -> Result<Vec<Message>, TrustError> {
    let Some(c) = store.contact_by_id(contact_id)? else {
        return Ok(Vec::new());
    };
    if c.identity_key == new_key {
        return Ok(Vec::new());
    }
    IdentityKey::decode(new_key)?;
    let work = store.atomic()?;
    let tx = store.conn();
    tx.execute(
        "UPDATE contacts SET identity_key = ?2, verified = 0, key_changed = 1
         WHERE account_id = ?1",
        params![contact_id, new_key],
    )?;
    tx.execute(
        "DELETE FROM sessions WHERE address = ?1",
        [crypto::address_key(contact_id)],
    )?;
    record(store, contact_id, how, Some(new_key), now)?;
    let mut lines = Vec::new();
    for secret in [false, true] {
        let mut m = Message::notice(
            format!("key-change-{}-{now}-{}", c.account_id, u8::from(secret)),
            &c.handle,
            secret,
            false,
            MessageKind::KeyChange,
            format!("{}'s safety number changed", c.handle),
            now,
        );
        if let Some(seq) = store.insert_message(contact_id, &m, now)? {
            m.seq = seq;
            lines.push(m);
        }
    }
    work.commit()?;
    Ok(lines)
}
