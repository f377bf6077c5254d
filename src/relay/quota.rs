//! Queue quotas: how much mail may wait at the relay per recipient, per sending account and,
//! for sealed mail (which has no sender the relay knows), per recipient again.
//!
//! Owns the quota decision (`over_quota`), which every queue backend calls, and the running
//! totals (`QueueUsage`) that the backends owning their queue alone (SQLite, memory) check
//! each new envelope against. Those are counted once from the queue when the backend opens
//! and then kept up to date with every insert and delete, so a check costs a few hash
//! lookups, never a SUM over the queue. A batch that fails leaves them wrong, so the backend
//! counts them from the queue again then (a rare path: the store is failing).
//! Must not touch the database or a socket (the backend hands it what it stored and deleted).

use std::collections::HashMap;

/// The limits, from `RelayConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Bytes of envelopes waiting for one recipient, all kinds.
    pub recipient_bytes: u64,
    /// Envelopes waiting for one recipient, all kinds.
    pub recipient_envelopes: u64,
    /// Bytes of normal mail one account has waiting, over all its recipients.
    pub sender_bytes: u64,
    /// Envelopes of normal mail one account has waiting, over all its recipients.
    pub sender_envelopes: u64,
    /// Bytes of sealed mail waiting for one recipient (anyone holding its access token may
    /// send it, so this is the bound a sealed flood meets).
    pub sealed_bytes: u64,
    /// Envelopes of sealed mail waiting for one recipient.
    pub sealed_envelopes: u64,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            recipient_bytes: 256 * 1024 * 1024,
            recipient_envelopes: 100_000,
            sender_bytes: 128 * 1024 * 1024,
            sender_envelopes: 50_000,
            sealed_bytes: 128 * 1024 * 1024,
            sealed_envelopes: 50_000,
        }
    }
}

/// Which quota an envelope would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// The recipient has as much mail waiting as the relay keeps for anyone.
    Recipient,
    /// The sending account has as much normal mail waiting as the relay keeps for anyone.
    Sender,
    /// The recipient has as much sealed mail waiting as the relay keeps.
    Sealed,
}

impl Quota {
    /// What the refusal tells the sender.
    pub fn message(self) -> &'static str {
        match self {
            Quota::Recipient | Quota::Sealed => {
                "the recipient's mailbox at the relay is full; try again once they have collected their mail"
            }
            Quota::Sender => {
                "you have as much mail waiting at the relay as it keeps for one account; try again once some of it is delivered"
            }
        }
    }
}

/// What is waiting under one key of the totals (a recipient, a sending account, a
/// recipient's sealed mail).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub envelopes: u64,
}

/// Which quota queuing `e` would break, if any, given what is waiting for its recipient, from
/// its sending account (`sender`, counted for normal mail) and sealed for its recipient
/// (`sealed`, counted for sealed mail). The one decision every queue backend makes, over
/// totals it keeps its own way.
pub fn over_quota(
    limits: &QueueLimits,
    recipient: Usage,
    sender: Usage,
    sealed: Usage,
    e: &Entry<'_>,
) -> Option<Quota> {
    let over = |u: Usage, bytes: u64, envelopes: u64| {
        u.envelopes.saturating_add(1) > envelopes || u.bytes.saturating_add(e.bytes) > bytes
    };
    if over(
        recipient,
        limits.recipient_bytes,
        limits.recipient_envelopes,
    ) {
        return Some(Quota::Recipient);
    }
    match e.sender {
        Some(_) if over(sender, limits.sender_bytes, limits.sender_envelopes) => {
            Some(Quota::Sender)
        }
        None if over(sealed, limits.sealed_bytes, limits.sealed_envelopes) => Some(Quota::Sealed),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Recipient,
    Sender,
    Sealed,
}

/// One envelope's part in the totals: who it is for, who sent it (normal mail) or that it
/// is sealed, and its size.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub recipient: &'a str,
    /// The sending account of a normal envelope; None for a sealed one.
    pub sender: Option<&'a str>,
    pub bytes: u64,
}

/// The running totals and the log of this batch's changes.
#[derive(Debug, Default)]
pub struct QueueUsage {
    limits: QueueLimits,
    recipient: HashMap<String, Usage>,
    sender: HashMap<String, Usage>,
    sealed: HashMap<String, Usage>,
}

impl QueueUsage {
    pub fn new(limits: QueueLimits) -> QueueUsage {
        QueueUsage {
            limits,
            ..QueueUsage::default()
        }
    }

    fn table(&mut self, t: Table) -> &mut HashMap<String, Usage> {
        match t {
            Table::Recipient => &mut self.recipient,
            Table::Sender => &mut self.sender,
            Table::Sealed => &mut self.sealed,
        }
    }

    fn get(&self, t: Table, key: &str) -> Usage {
        let map = match t {
            Table::Recipient => &self.recipient,
            Table::Sender => &self.sender,
            Table::Sealed => &self.sealed,
        };
        map.get(key).copied().unwrap_or_default()
    }

    /// Adds (or, with `add` false, takes away) one envelope of `bytes` under `key`.
    /// Allocates only for a key not counted yet.
    fn change(&mut self, t: Table, key: &str, bytes: u64, envelopes: u64, add: bool) {
        let map = self.table(t);
        if add {
            let u = match map.get_mut(key) {
                Some(u) => u,
                None => map.entry(key.to_string()).or_default(),
            };
            u.bytes += bytes;
            u.envelopes += envelopes;
        } else if let Some(u) = map.get_mut(key) {
            u.bytes = u.bytes.saturating_sub(bytes);
            u.envelopes = u.envelopes.saturating_sub(envelopes);
            if u.envelopes == 0 {
                map.remove(key);
            }
        }
    }

    fn tables<'a>(e: &Entry<'a>) -> [(Table, &'a str); 2] {
        match e.sender {
            Some(s) => [(Table::Recipient, e.recipient), (Table::Sender, s)],
            None => [
                (Table::Recipient, e.recipient),
                (Table::Sealed, e.recipient),
            ],
        }
    }

    /// Which quota queuing `e` would break, if any (see `over_quota`).
    pub fn check(&self, e: &Entry<'_>) -> Option<Quota> {
        let sender = e
            .sender
            .map_or_else(Usage::default, |s| self.get(Table::Sender, s));
        over_quota(
            &self.limits,
            self.get(Table::Recipient, e.recipient),
            sender,
            self.get(Table::Sealed, e.recipient),
            e,
        )
    }

    /// Counts `e` as queued.
    pub fn add(&mut self, e: &Entry<'_>) {
        for (t, key) in Self::tables(e) {
            self.change(t, key, e.bytes, 1, true);
        }
    }

    /// Counts `e` as gone.
    pub fn remove(&mut self, e: &Entry<'_>) {
        for (t, key) in Self::tables(e) {
            self.change(t, key, e.bytes, 1, false);
        }
    }

    /// Counts `envelopes` envelopes of `e.bytes` bytes in all: the totals found in the queue.
    pub fn load(&mut self, e: &Entry<'_>, envelopes: u64) {
        for (t, key) in Self::tables(e) {
            self.change(t, key, e.bytes, envelopes, true);
        }
    }

    pub fn limits(&self) -> QueueLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> QueueLimits {
        QueueLimits {
            recipient_bytes: 100,
            recipient_envelopes: 3,
            sender_bytes: 60,
            sender_envelopes: 10,
            sealed_bytes: 1000,
            sealed_envelopes: 2,
        }
    }

    fn normal<'a>(to: &'a str, from: &'a str, bytes: u64) -> Entry<'a> {
        Entry {
            recipient: to,
            sender: Some(from),
            bytes,
        }
    }

    #[test]
    fn each_quota_is_enforced_and_freed_by_removal() {
        let mut u = QueueUsage::new(limits());
        let e = normal("bob", "alice", 30);
        assert_eq!(u.check(&e), None);
        u.add(&e);
        u.add(&e);
        assert_eq!(u.check(&e), Some(Quota::Sender));
        assert_eq!(u.check(&normal("bob", "carol", 30)), None);
        u.add(&normal("bob", "carol", 1));
        assert_eq!(u.check(&normal("bob", "carol", 1)), Some(Quota::Recipient));
        assert_eq!(u.check(&normal("dave", "carol", 1)), None);
        u.remove(&e);
        assert_eq!(u.check(&normal("bob", "alice", 30)), None);
        let sealed = Entry {
            recipient: "eve",
            sender: None,
            bytes: 1,
        };
        u.add(&sealed);
        u.add(&sealed);
        assert_eq!(u.check(&sealed), Some(Quota::Sealed));
    }
}
