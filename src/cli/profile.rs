//! The profile commands that read or change the profile without a running chat: `contacts`,
//! `history`, `info`, `pin-cert` and `rekey`.
//!
//! Owns their output (`history` in the one JSON shape of `sotto::client::export`). Must not
//! start the manager: these work on the store directly (`rekey` talks to the relay once).

use std::io::Write as _;
use std::path::Path;

use anyhow::{Result, anyhow};
use serde::Serialize;
use sotto::client::account;
use sotto::client::export::ExportedMessage;
use sotto::client::store::{Store, lock_profile};
use sotto::client::trust;

/// A contact as `contacts --json` prints it.
#[derive(Serialize)]
struct ContactLine<'a> {
    handle: &'a str,
    account_id: &'a str,
    /// Marked verified after comparing safety numbers (cleared by a key change).
    verified: bool,
    /// The safety number changed and the change is not accepted: secret sending blocked.
    key_changed: bool,
    /// Blocked: what they send is dropped, and the chat screen hides them.
    blocked: bool,
}

pub fn contacts(dir: &Path, json: bool) -> Result<()> {
    let store = Store::open(dir)?;
    store.registration()?;
    let mut out = std::io::stdout().lock();
    for c in store.contacts()? {
        if json {
            let line = ContactLine {
                handle: &c.handle,
                account_id: &c.account_id,
                verified: c.verified,
                key_changed: c.key_changed,
                blocked: c.blocked,
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        } else {
            let state = if c.blocked {
                "blocked"
            } else if c.key_changed {
                "safety number CHANGED"
            } else if c.verified {
                "verified"
            } else {
                "not verified"
            };
            writeln!(out, "{}\t{}\t{state}", c.handle, c.account_id)?;
        }
    }
    Ok(())
}

/// `sotto block HANDLE [--undo]`.
pub fn block(dir: &Path, handle: &str, blocked: bool) -> Result<()> {
    let _lock = sotto::client::store::lock_profile(dir)?;
    let store = Store::open(dir)?;
    store.registration()?;
    let c = known(&store, handle)?;
    store.set_blocked(&c.account_id, blocked)?;
    if blocked {
        println!(
            "{handle} is blocked: nothing they send reaches you (`sotto block --undo {handle}` to undo)"
        );
    } else {
        println!("{handle} can reach you again");
    }
    Ok(())
}

/// `sotto remove HANDLE`.
pub fn remove(dir: &Path, handle: &str) -> Result<()> {
    let _lock = sotto::client::store::lock_profile(dir)?;
    let store = Store::open(dir)?;
    store.registration()?;
    let c = known(&store, handle)?;
    let messages = store.remove_contact(&c.account_id)?;
    println!("{handle} is removed, with {messages} messages");
    Ok(())
}

pub(super) fn known(store: &Store, handle: &str) -> Result<sotto::client::store::Contact> {
    store
        .contact_by_handle(handle)?
        .ok_or_else(|| anyhow!("{handle:?} is not among your contacts (see `sotto contacts`)"))
}

pub fn history(dir: &Path, handle: &str, secret: bool, limit: usize) -> Result<()> {
    let store = Store::open(dir)?;
    let me = store.registration()?.handle;
    let contact = known(&store, handle)?;
    let mut out = std::io::stdout().lock();
    for m in store.history(&contact.account_id, secret, limit)? {
        writeln!(out, "{}", ExportedMessage::new(&m, &me).to_line())?;
    }
    Ok(())
}

pub fn info(dir: &Path) -> Result<()> {
    let store = Store::open(dir)?;
    let reg = store.registration()?;
    println!("handle:      {}", reg.handle);
    println!("account id:  {}", reg.account_id);
    println!("relay:       {}", reg.relay_url);
    println!("trust root:  {}", fingerprint(&reg.trust_root));
    println!("relay TLS:   {}", tls_line(&store)?);
    println!("profile dir: {}", dir.display());
    Ok(())
}

pub fn pin_cert(dir: &Path, fingerprint: &str) -> Result<()> {
    let _lock = lock_profile(dir)?;
    let store = Store::open(dir)?;
    store.registration()?;
    let fp = sotto::tls::parse_fingerprint(fingerprint).ok_or_else(|| {
        anyhow!("{fingerprint:?} is not a SHA-256 fingerprint; give the 64 hex digits (colons optional) the relay prints")
    })?;
    account::set_tls_pin(&store, fp)?;
    println!("relay TLS certificate: {}", tls_line(&store)?);
    Ok(())
}

pub async fn rekey(dir: &Path, relay_url: Option<&str>, insecure: bool) -> Result<()> {
    let _lock = lock_profile(dir)?;
    let store = Store::open(dir)?;
    let endpoint = account::endpoint(&store, relay_url, insecure)?;
    account::rekey_at(
        &store,
        &endpoint,
        std::time::SystemTime::now(),
        &mut rand::rng(),
    )
    .await?;
    println!(
        "your identity key is replaced; your contacts will see that your safety number changed"
    );
    Ok(())
}

/// How the profile trusts its relay's TLS certificate, for `init` and `info`.
pub fn tls_line(store: &Store) -> Result<String> {
    Ok(match account::tls_pin(store)? {
        Some(pin) => pin.describe(),
        None => "none (plain ws://)".to_string(),
    })
}

/// A public key shown in groups of four hex digits, for comparing by eye.
pub fn fingerprint(key: &[u8]) -> String {
    trust::grouped(&trust::hex(key), 4)
}
