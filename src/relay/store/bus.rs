//! Word between relays that share one database: "mail for this account was committed" from
//! whichever relay committed it, "this account signed in anew" from the relay it signed in
//! on, online-only envelopes (typing indicators, never queued) for accounts connected
//! elsewhere, and "you may have missed some of that" when the word could not be heard for a
//! while. A `Bus` is the listening end; the speaking end is inside the backend's writes
//! (PostgreSQL's `NOTIFY`, sent only if the transaction commits).
//!
//! Owns the contract between the store layer and the relay's online table: what is heard and
//! what each word obliges the relay to do. Must not carry queued envelopes' bytes (the queue
//! is the truth; a word only says "read it") nor touch sockets. A backend only one relay can use
//! (SQLite, memory) has nothing to hear: `Alone`.

use std::sync::Arc;

use super::Queued;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a relay hears from the others sharing its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Another relay committed mail for `account`: its connection here, if any, must read
    /// the queue.
    Mail { account: String },
    /// An online-only envelope for `account` (see `relay::online_only`), sent to another
    /// relay: its connection here, if any, is handed it; otherwise it is dropped.
    OnlineOnly { account: String, envelope: Queued },
    /// `account` signed in on a connection whose place in the order of sign-ins is `seq`
    /// (see `Directory::sign_in`): its connection here, if it signed in earlier, must end.
    SignedIn { account: String, seq: u64 },
    /// Words may have been lost (the listening connection was made anew): every connection
    /// here must read the queue. (Sign-ins missed meanwhile are looked up and heard as
    /// `SignedIn`, see `Seats`.)
    Missed,
}

/// Where a relay's bus hands what it hears. Called on the bus's own thread; it must not block.
pub type Hear = Box<dyn Fn(Heard) + Send + Sync>;

/// The accounts signed in at this relay, each with its connection's place in the order of
/// sign-ins (those that have learnt it): after words may have been lost, the bus looks up
/// which of them have signed in since, elsewhere. Called on the bus's thread; must not block.
pub type Seats = Box<dyn Fn() -> Vec<(String, u64)> + Send + Sync>;

/// The listening end of the word between relays on one database.
pub trait Bus: Send {
    /// Whether other relays may commit to this queue. If so, mail handed over in process
    /// cannot be pushed straight away: another relay's commit may precede it in the queue
    /// while its word is still on the way, so the connection reads the queue instead.
    fn shared(&self) -> bool;

    /// Starts listening, handing every word to `hear` until the returned `Listening` is
    /// dropped. Failures to (re)connect are logged and retried in the background: the
    /// relay's own mail keeps flowing meanwhile, and a `Missed` follows every reconnection.
    fn listen(self: Box<Self>, hear: Hear, seats: Seats) -> Listening;
}

/// A bus being listened to; dropping it stops the listening (within a moment).
pub struct Listening(Option<Arc<AtomicBool>>);

impl Listening {
    /// A listening that holds nothing: the bus had nothing to hear.
    pub fn nothing() -> Listening {
        Listening(None)
    }

    /// A listening that sets `stop` when dropped; its thread polls it.
    pub(super) fn until(stop: Arc<AtomicBool>) -> Listening {
        Listening(Some(stop))
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(stop) = &self.0 {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// The bus of a backend no other relay can share.
pub struct Alone;

impl Bus for Alone {
    fn shared(&self) -> bool {
        false
    }

    fn listen(self: Box<Self>, _hear: Hear, _seats: Seats) -> Listening {
        Listening::nothing()
    }
}
