//! What the attacker of one `--mode hostile` phase saw: the relay's error frames by code,
//! the requests it accepted, and the attacker's connections the relay ended (refused or
//! closed). Shared by an attack's tasks; read once the phase is over.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sotto::wire::{ErrorCode, RelayFrame};

use crate::wire_client::Refused;

#[derive(Default)]
pub struct Tally {
    errors: Mutex<BTreeMap<String, u64>>,
    accepted: AtomicU64,
    closed: AtomicU64,
}

impl Tally {
    /// An `error` frame with `code`.
    pub fn error(&self, code: ErrorCode) {
        let name = serde_json::to_value(code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{code:?}"));
        *self.errors.lock().unwrap().entry(name).or_default() += 1;
    }

    /// A request the relay granted (a connection, an `ok`, a bundle, an account).
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection the relay ended.
    pub fn closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// A frame that answers a request: an error by its code, anything else as accepted.
    pub fn answer(&self, f: &RelayFrame) {
        match f {
            RelayFrame::Error { code, .. } => self.error(*code),
            _ => self.accepted(),
        }
    }

    /// A connection the relay did not let through (refused with a frame, then closed, or
    /// closed at once): its code, if it sent one, and the close.
    pub fn refused(&self, e: &anyhow::Error) {
        if let Some(r) = e.downcast_ref::<Refused>() {
            self.error(r.code);
        }
        self.closed();
    }

    /// The tally as JSON fields of the phase's line.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "attacker_errors": *self.errors.lock().unwrap(),
            "attacker_accepted": self.accepted.load(Ordering::Relaxed),
            "attacker_closed": self.closed.load(Ordering::Relaxed),
        })
    }
}
