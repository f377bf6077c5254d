//! The PostgreSQL bus: the queue's commits `NOTIFY` the channel `CHANNEL` with the committing
//! relay's instance and the recipient (`word`), sign-ins with their number and the account
//! (`SIGNED_IN_SQL`), online-only envelopes whole (`online_only_word`), and each relay `LISTEN`s on a connection of its own, in a thread,
//! handing what it heard to the relay (`bus::Heard`).
//!
//! Owns the channel, the words' format and the listening connection, remade whenever it is
//! lost (then `Heard::Missed`, and the sign-ins of the accounts online here are looked up:
//! PostgreSQL keeps no notifications for a session that is gone).
//! Must not carry queued envelopes' bytes nor decide what a connection pushes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::super::Queued;
use super::super::bus::{Bus, Hear, Heard, Listening, Seats};
use super::connect;
use crate::wire::B64;

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

/// The statement that sends each word of the text array `$1` on `CHANNEL` (when the
/// transaction commits).
pub(super) fn notify_all_sql() -> String {
    format!("SELECT count(pg_notify('{CHANNEL}', w)) FROM unnest($1::text[]) AS w")
}

/// The word a sign-in sends, as an SQL expression over the new number `signed_in` and the
/// account `$1`: `in <number> <account>`. Sent by every relay, heard by all, its own
/// included (its own connections are older, or the very one that signed in).
pub(super) const SIGNED_IN_SQL: &str = "'in ' || signed_in || ' ' || $1";

/// PostgreSQL refuses a notification payload of 8,000 bytes or more.
const MAX_WORD: usize = 7999;

/// An online-only envelope for `to`, as relay `instance` hands it to the others:
/// `oo <instance> <json>`. None if it is too large for a word.
pub(super) fn online_only_word(instance: u64, to: &str, q: &Queued) -> Option<String> {
    let passed = Passed {
        to: to.to_string(),
        sender: q.sender.clone(),
        sender_handle: q.sender_handle.clone(),
        sealed: q.sealed,
        payload: B64(q.payload.clone()),
        received_at: q.received_at,
    };
    let word = format!(
        "oo {instance:016x} {}",
        serde_json::to_string(&passed).ok()?
    );
    (word.len() <= MAX_WORD).then_some(word)
}

/// An online-only envelope in a word (see `online_only_word`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Passed {
    to: String,
    sender: Option<String>,
    sender_handle: Option<String>,
    sealed: bool,
    payload: B64,
    received_at: u64,
}

/// What relay `instance` makes of a word: mail or an online-only envelope from another
/// relay (its own were handed over in process already), or a sign-in anywhere; None for its
/// own and anything malformed.
fn heard(instance: u64, payload: &str) -> Option<Heard> {
    let (head, rest) = payload.split_once(' ')?;
    if head == "oo" {
        let (from, json) = rest.split_once(' ')?;
        if u64::from_str_radix(from, 16).ok()? == instance {
            return None;
        }
        let p: Passed = serde_json::from_str(json).ok()?;
        return Some(Heard::OnlineOnly {
            account: p.to,
            envelope: Queued {
                id: 0,
                sender: p.sender,
                sender_handle: p.sender_handle,
                sealed: p.sealed,
                payload: p.payload.0,
                received_at: p.received_at,
                expires_at: None,
            },
        });
    }
    if head == "in" {
        let (seq, account) = rest.split_once(' ')?;
        let seq = seq.parse().ok()?;
        return (!account.is_empty()).then(|| Heard::SignedIn {
            account: account.to_string(),
            seq,
        });
    }
    let from = u64::from_str_radix(head, 16).ok()?;
    (from != instance && !rest.is_empty()).then(|| Heard::Mail {
        account: rest.to_string(),
    })
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

    fn listen(self: Box<Self>, hear: Hear, seats: Seats) -> Listening {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("relay-pg-listen".into())
            .spawn(move || self.run(&hear, &seats, &stopping));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start listening to the other relays; mail they commit reaches connections here only when these read the queue");
        }
        Listening::until(stop)
    }
}

impl PgBus {
    /// Listens until `stop`, remaking the connection whenever it is lost.
    fn run(&self, hear: &Hear, seats: &Seats, stop: &AtomicBool) {
        let mut retry = Duration::from_millis(100);
        while !stop.load(Ordering::Relaxed) {
            match self.listen_once(hear, seats, stop) {
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
    fn listen_once(
        &self,
        hear: &Hear,
        seats: &Seats,
        stop: &AtomicBool,
    ) -> super::super::Result<()> {
        let mut client = connect(&self.url)?;
        client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        // Whatever was said while nobody here listened is lost: every connection reads the
        // queue, and the sign-ins since are looked up (at the first start nobody is online
        // yet, and this costs nothing).
        hear(Heard::Missed);
        let seated = seats();
        if !seated.is_empty() {
            let accounts: Vec<&str> = seated.iter().map(|(a, _)| a.as_str()).collect();
            let rows = client.query(
                "SELECT account_id, signed_in FROM accounts WHERE account_id = ANY($1)",
                &[&accounts],
            )?;
            for row in rows {
                let (account, seq): (String, u64) = (row.get(0), super::u64_of(row.get(1)));
                if seated.iter().any(|(a, mine)| *a == account && *mine < seq) {
                    hear(Heard::SignedIn { account, seq });
                }
            }
        }
        while !stop.load(Ordering::Relaxed) {
            {
                let mut notifications = client.notifications();
                let mut words = notifications.timeout_iter(POLL);
                while let Some(n) = words.next()? {
                    if let Some(h) = heard(self.instance, n.payload()) {
                        hear(h);
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
    fn a_relay_hears_the_others_mail_and_online_only_envelopes_every_sign_in_and_ignores_garbage() {
        let mail = |account: &str| Heard::Mail {
            account: account.into(),
        };
        assert_eq!(heard(7, &word(9, "acct")), Some(mail("acct")));
        assert_eq!(heard(7, &word(7, "acct")), None);
        assert_eq!(
            heard(7, "in 42 acct"),
            Some(Heard::SignedIn {
                account: "acct".into(),
                seq: 42
            })
        );
        // An online-only envelope crosses whole, but not back to the relay that sent it.
        let typing = Queued {
            id: 0,
            sender: None,
            sender_handle: None,
            sealed: true,
            payload: vec![7; 300],
            received_at: 5,
            expires_at: None,
        };
        let w = online_only_word(9, "acct", &typing).unwrap();
        assert_eq!(
            heard(7, &w),
            Some(Heard::OnlineOnly {
                account: "acct".into(),
                envelope: typing.clone()
            })
        );
        assert_eq!(heard(9, &w), None);
        // One too large for a notification is not sent (and dropped, as a full inbox would).
        let large = Queued {
            payload: vec![7; 6000],
            ..typing
        };
        assert_eq!(online_only_word(9, "acct", &large), None);
        for bad in [
            "",
            "oo 0000000000000009",
            "oo 0000000000000009 {}",
            "zz acct",
            "0000000000000009",
            "0000000000000009 ",
            "in",
            "in 42",
            "in 42 ",
            "in x acct",
            "in -1 acct",
        ] {
            assert_eq!(heard(7, bad), None, "{bad:?}");
        }
    }
}
