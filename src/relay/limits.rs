//! Who may hold how many connections: caps in total, per source address, and separate
//! quotas for connections that have not signed in (handshaking, awaiting sign-in) and for
//! anonymous ones, so neither can take the slots signed-in users need.
//!
//! Owns the counts behind those caps and the `Ticket` each connection holds from accept to
//! its end (dropping it gives the slot back). Must not touch sockets or frames: the accept
//! loop and `conn` ask, and tell the client why when the answer is no.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use super::stats::{ConnState, Reason, Stats};

/// The address a client's connections and registrations are counted against: its IPv4
/// address, or its IPv6 /64 (one host usually has a whole /64 to pick from, so counting
/// single IPv6 addresses would let it past every per-address cap).
pub(crate) fn source(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        ip => ip,
    }
}

/// The caps; see `RelayConfig` for what each means and its default.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub total: usize,
    pub per_address: usize,
    pub signing_in: usize,
    pub anonymous: usize,
    pub unauthenticated_per_address: usize,
}

#[derive(Default)]
struct PerAddress {
    total: usize,
    /// Handshaking, signing in or anonymous.
    unauthenticated: usize,
}

#[derive(Default)]
struct Counts {
    total: usize,
    signing_in: usize,
    anonymous: usize,
    by_address: HashMap<IpAddr, PerAddress>,
}

pub(crate) struct Limits {
    caps: Caps,
    counts: Mutex<Counts>,
    stats: Arc<Stats>,
}

fn unauthenticated(state: ConnState) -> bool {
    state != ConnState::SignedIn
}

fn signing_in(state: ConnState) -> bool {
    matches!(state, ConnState::Handshaking | ConnState::SigningIn)
}

impl Limits {
    pub fn new(caps: Caps, stats: Arc<Stats>) -> Limits {
        Limits {
            caps,
            counts: Mutex::default(),
            stats,
        }
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Every critical section leaves the counts consistent.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a just-accepted connection from `ip` (as handshaking), or says which cap it
    /// would break.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Reason> {
        let mut counts = self.lock();
        let at = counts.by_address.get(&ip);
        let (addr_total, addr_unauth) = at.map_or((0, 0), |a| (a.total, a.unauthenticated));
        if counts.total >= self.caps.total {
            return Err(Reason::Full);
        }
        if addr_total >= self.caps.per_address {
            return Err(Reason::PerAddress);
        }
        if addr_unauth >= self.caps.unauthenticated_per_address {
            return Err(Reason::UnauthenticatedPerAddress);
        }
        if counts.signing_in >= self.caps.signing_in {
            return Err(Reason::SigningInQuota);
        }
        counts.total += 1;
        counts.signing_in += 1;
        let a = counts.by_address.entry(ip).or_default();
        a.total += 1;
        a.unauthenticated += 1;
        drop(counts);
        self.stats.moved(None, Some(ConnState::Handshaking));
        Ok(Ticket {
            limits: self.clone(),
            ip,
            state: ConnState::Handshaking,
        })
    }

    fn release(&self, ip: IpAddr, state: ConnState) {
        let mut counts = self.lock();
        counts.total -= 1;
        if signing_in(state) {
            counts.signing_in -= 1;
        }
        if state == ConnState::Anonymous {
            counts.anonymous -= 1;
        }
        if let Some(a) = counts.by_address.get_mut(&ip) {
            a.total -= 1;
            if unauthenticated(state) {
                a.unauthenticated -= 1;
            }
            if a.total == 0 {
                counts.by_address.remove(&ip);
            }
        }
        drop(counts);
        self.stats.moved(Some(state), None);
    }
}

/// One connection's place in the counts, from accept until dropped.
pub(crate) struct Ticket {
    limits: Arc<Limits>,
    ip: IpAddr,
    state: ConnState,
}

impl Ticket {
    /// Moves the connection on to `to` (forward only: handshaking, signing in, then anonymous
    /// or signed in). Only becoming anonymous can be refused, at `max_anonymous`.
    pub fn enter(&mut self, to: ConnState) -> Result<(), Reason> {
        let from = self.state;
        if from == to {
            return Ok(());
        }
        let mut counts = self.limits.lock();
        if to == ConnState::Anonymous && counts.anonymous >= self.limits.caps.anonymous {
            return Err(Reason::AnonymousQuota);
        }
        if signing_in(from) && !signing_in(to) {
            counts.signing_in -= 1;
        }
        if to == ConnState::Anonymous {
            counts.anonymous += 1;
        }
        if unauthenticated(from)
            && !unauthenticated(to)
            && let Some(a) = counts.by_address.get_mut(&self.ip)
        {
            a.unauthenticated -= 1;
        }
        drop(counts);
        self.state = to;
        self.limits.stats.moved(Some(from), Some(to));
        Ok(())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.limits.release(self.ip, self.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_is_one_source_for_its_whole_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source(a), source(b));
        assert_ne!(source(a), source(other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    fn limits() -> Arc<Limits> {
        let caps = Caps {
            total: 4,
            per_address: 3,
            signing_in: 2,
            anonymous: 1,
            unauthenticated_per_address: 2,
        };
        Arc::new(Limits::new(caps, Arc::default()))
    }

    #[test]
    fn caps_hold_and_slots_come_back() {
        let l = limits();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut t1 = l.admit(a).unwrap();
        let t2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Reason::UnauthenticatedPerAddress));
        assert_eq!(l.admit(b).err(), Some(Reason::SigningInQuota));
        t1.enter(ConnState::SigningIn).unwrap();
        t1.enter(ConnState::SignedIn).unwrap();
        let mut t3 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Reason::PerAddress));
        t3.enter(ConnState::Anonymous).unwrap();
        let mut t4 = l.admit(b).unwrap();
        assert_eq!(t4.enter(ConnState::Anonymous), Err(Reason::AnonymousQuota));
        assert_eq!(l.admit(b).err(), Some(Reason::Full));
        drop((t1, t2, t3, t4));
        let counts = l.lock();
        assert_eq!(
            (counts.total, counts.signing_in, counts.anonymous),
            (0, 0, 0)
        );
        assert!(counts.by_address.is_empty());
    }
}
