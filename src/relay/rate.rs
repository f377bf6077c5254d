//! Rate limits: token buckets for what one source may ask of the relay per unit of time
//! (registrations per IP, prekey uploads, bundle fetches and lookups per account, bundles
//! handed out with one-time keys per target, unknown acks per connection, blobs started per
//! owner).
//!
//! Owns the buckets and their clock, tokio's (`tokio::time::Instant`), so a test with a paused
//! clock can move them. Must not touch sockets or the database: callers ask `take` and act on
//! the answer. Idle buckets are forgotten (a full bucket is the same as none), so the maps
//! stay as small as the set of recently active sources.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The relay's rate limits; 0 turns a limit off. Each allows a burst of its full amount, then
/// refills evenly over its period (e.g. 10 per hour: 10 at once, then one every 6 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `register` frames per source IP address per hour (claims of a reset included).
    pub registrations_per_ip_per_hour: u32,
    /// `upload_pre_keys` requests per account per hour.
    pub prekey_uploads_per_hour: u32,
    /// Bundles of one account handed out with one-time keys per minute; beyond this a bundle
    /// carries no one-time EC prekey and the last-resort Kyber key, so a drain cannot empty
    /// the account's pools.
    pub bundles_per_target_per_minute: u32,
    /// `fetch_bundle` requests per requesting account per minute; beyond, `rate_limited`.
    pub bundles_per_requester_per_minute: u32,
    /// `lookup` requests per account per minute; beyond, `rate_limited`.
    pub lookups_per_minute: u32,
    /// Acks per connection per minute for envelopes not in flight on it (ignored either way);
    /// beyond, the connection is closed with `rate_limited`.
    pub unknown_acks_per_minute: u32,
    /// `blob_create` requests per owner (account, or address of an anonymous connection) per
    /// minute; beyond, `rate_limited`.
    pub blob_creates_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            registrations_per_ip_per_hour: 30,
            prekey_uploads_per_hour: 10,
            bundles_per_target_per_minute: 20,
            bundles_per_requester_per_minute: 60,
            lookups_per_minute: 300,
            unknown_acks_per_minute: 600,
            blob_creates_per_minute: 60,
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

/// `amount` per `period`, with a burst of `amount`; an amount of 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub amount: u32,
    pub period: Duration,
}

impl Rate {
    pub fn per_hour(amount: u32) -> Rate {
        Rate {
            amount,
            period: HOUR,
        }
    }
    pub fn per_minute(amount: u32) -> Rate {
        Rate {
            amount,
            period: MINUTE,
        }
    }
}

/// One source's tokens.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: Rate) -> Bucket {
        Bucket {
            tokens: rate.amount as f64,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let per_sec = rate.amount as f64 / rate.period.as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(rate.amount as f64);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: Rate) -> bool {
        if rate.amount == 0 {
            return true;
        }
        self.refill(rate, Instant::now());
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn full(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= rate.amount as f64
    }
}

/// A bucket per key, all at one rate.
pub struct Buckets<K> {
    rate: Rate,
    map: Mutex<(HashMap<K, Bucket>, usize)>,
}

/// Keys tracked before full buckets are first swept out.
const SWEEP_AT: usize = 1024;

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(rate: Rate) -> Buckets<K> {
        Buckets {
            rate,
            map: Mutex::new((HashMap::new(), SWEEP_AT)),
        }
    }

    /// Takes one of `key`'s tokens; false when it has none left (the caller refuses).
    pub fn take(&self, key: &K) -> bool {
        if self.rate.amount == 0 {
            return true;
        }
        // Every critical section leaves the map consistent, so a poisoned lock is usable.
        let mut guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (map, sweep_at) = &mut *guard;
        if map.len() >= *sweep_at {
            let now = Instant::now();
            let rate = self.rate;
            map.retain(|_, b| !b.full(rate, now));
            *sweep_at = (map.len() * 2).max(SWEEP_AT);
        }
        let rate = self.rate;
        map.entry(key.clone())
            .or_insert_with(|| Bucket::new(rate))
            .take(rate)
    }
}

/// The relay-wide buckets, one set per limit.
pub struct Limiter {
    pub limits: RateLimits,
    pub registrations: Buckets<IpAddr>,
    pub uploads: Buckets<String>,
    pub bundles_of_target: Buckets<String>,
    pub bundles_by_requester: Buckets<String>,
    pub lookups: Buckets<String>,
    pub blob_creates: Buckets<String>,
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Limiter {
        Limiter {
            limits,
            registrations: Buckets::new(Rate::per_hour(limits.registrations_per_ip_per_hour)),
            uploads: Buckets::new(Rate::per_hour(limits.prekey_uploads_per_hour)),
            bundles_of_target: Buckets::new(Rate::per_minute(limits.bundles_per_target_per_minute)),
            bundles_by_requester: Buckets::new(Rate::per_minute(
                limits.bundles_per_requester_per_minute,
            )),
            lookups: Buckets::new(Rate::per_minute(limits.lookups_per_minute)),
            blob_creates: Buckets::new(Rate::per_minute(limits.blob_creates_per_minute)),
        }
    }

    /// The per-connection rate of unknown acks.
    pub fn unknown_acks(&self) -> Rate {
        Rate::per_minute(self.limits.unknown_acks_per_minute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_burst_then_refills_evenly() {
        let b = Buckets::new(Rate::per_minute(3));
        for _ in 0..3 {
            assert!(b.take(&"a"));
        }
        assert!(!b.take(&"a"));
        assert!(b.take(&"b"), "another key has its own bucket");
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(b.take(&"a"));
        assert!(!b.take(&"a"));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_no_limit_and_full_buckets_are_forgotten() {
        let off = Buckets::new(Rate::per_minute(0));
        for _ in 0..10_000 {
            assert!(off.take(&1u32));
        }
        let b = Buckets::new(Rate::per_minute(1));
        for k in 0..SWEEP_AT as u32 {
            assert!(b.take(&k));
        }
        tokio::time::advance(MINUTE).await;
        assert!(b.take(&u32::MAX));
        assert_eq!(b.map.lock().unwrap().0.len(), 1);
    }
}
