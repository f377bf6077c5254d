//! Read receipts we owe: the peers' messages the user has just displayed, per thread, paced
//! like delivery receipts (`receipts::Receipts`) and sent in the thread they answer.
//!
//! Part of the manager (it works on `Manager`'s state). Sending is `send::send_receipts`;
//! applying a peer's read receipt is `receive::apply`. Must not send anything itself, and
//! owes nothing when the user turned read receipts off (`Settings::read_receipts`).

use super::Manager;

impl Manager {
    /// The user has just seen these messages (contact handle, secret, id) for the first
    /// time: each is owed a read receipt in its own thread.
    pub(super) fn owe_reads(&mut self, seen: Vec<(String, bool, String)>) {
        if !self.settings.read_receipts {
            return;
        }
        let now = tokio::time::Instant::now();
        for (handle, secret, id) in seen {
            self.reads.owe((handle, secret), id, now);
        }
    }
}
