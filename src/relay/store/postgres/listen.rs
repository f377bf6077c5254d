//! The PostgreSQL bus: the queue's commits `NOTIFY` the channel `CHANNEL` with the committing
//! relay's instance and the recipient (`word`), and each relay `LISTEN`s on a connection of
//! its own, in a thread, handing what other relays said to the relay (`bus::Heard`).
//!
//! Owns the channel, the word's format and the listening connection, remade whenever it is
//! lost (then `Heard::Missed`: PostgreSQL keeps no notifications for a session that is gone).
//! Must not carry envelope bytes nor decide what a connection pushes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::super::bus::{Bus, Hear, Heard, Listening};
use super::connect;

/// The channel the queue's commits notify (public for tools that count the words).
pub const CHANNEL: &str = "sotto_mail";

/// How often the listening thread looks whether it should stop.
const POLL: Duration = Duration::from_millis(200);
/// Longest pause between attempts to remake a lost listening connection.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// What a commit by relay `instance` says about mail for `account`: no envelope bytes, no
/// sender.
pub(super) fn word(instance: u64, account: &str) -> String {
    format!("{instance:016x} {account}")
}

/// The account a word from another relay than `instance` names; None for this relay's own
/// words (its connections had the mail handed over already) and for anything malformed.
fn from_other(instance: u64, payload: &str) -> Option<&str> {
    let (from, account) = payload.split_once(' ')?;
    let from = u64::from_str_radix(from, 16).ok()?;
    (from != instance && !account.is_empty()).then_some(account)
}

/// Listens for the words of the relays sharing database `url`, but for those of `instance`.
pub struct PgBus {
    url: String,
    instance: u64,
}

impl PgBus {
    pub fn new(url: &str, instance: u64) -> PgBus {
        PgBus {
            url: url.to_string(),
            instance,
        }
    }
}

impl Bus for PgBus {
    fn shared(&self) -> bool {
        true
    }

    fn listen(self: Box<Self>, hear: Hear) -> Listening {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("relay-pg-listen".into())
            .spawn(move || self.run(&hear, &stopping));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start listening to the other relays; mail they commit reaches connections here only when these read the queue");
        }
        Listening::until(stop)
    }
}

impl PgBus {
    /// Listens until `stop`, remaking the connection whenever it is lost.
    fn run(&self, hear: &Hear, stop: &AtomicBool) {
        let mut retry = Duration::from_millis(100);
        while !stop.load(Ordering::Relaxed) {
            match self.listen_once(hear, stop) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "listening to the other relays failed; trying again");
                }
            }
            let until = std::time::Instant::now() + retry;
            while std::time::Instant::now() < until {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(POLL.min(retry));
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// One listening connection, until `stop` (Ok) or until it fails.
    fn listen_once(&self, hear: &Hear, stop: &AtomicBool) -> super::super::Result<()> {
        let mut client = connect(&self.url)?;
        client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        // Whatever was said while nobody here listened is lost: every connection reads the
        // queue (at the first start nobody is online yet, and this costs nothing).
        hear(Heard::Missed);
        while !stop.load(Ordering::Relaxed) {
            {
                let mut notifications = client.notifications();
                let mut words = notifications.timeout_iter(POLL);
                while let Some(n) = words.next()? {
                    if let Some(account) = from_other(self.instance, n.payload()) {
                        hear(Heard::Mail {
                            account: account.to_string(),
                        });
                    }
                }
            }
            if client.is_closed() {
                return Err(super::super::StoreError::Backend(
                    "the listening connection was closed".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_hears_the_others_words_not_its_own_and_ignores_garbage() {
        assert_eq!(from_other(7, &word(9, "acct")), Some("acct"));
        assert_eq!(from_other(7, &word(7, "acct")), None);
        for bad in ["", "zz acct", "0000000000000009", "0000000000000009 "] {
            assert_eq!(from_other(7, bad), None, "{bad:?}");
        }
    }
}
