//! The client's clock: Unix milliseconds that advance with tokio's clock.
//!
//! Expiry times are stored as wall-clock milliseconds (they must survive a restart), but the
//! sweeper sleeps on tokio's clock. Deriving one from the other keeps them in step, and lets a
//! test with tokio's paused clock move both. Owns no state beyond its starting point.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: u64,
    base: Instant,
}

impl Clock {
    /// A clock reading the system time now.
    pub fn system() -> Clock {
        let ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock::starting_at(ms)
    }

    /// A clock that reads `ms` now and advances with tokio's clock from here.
    pub fn starting_at(ms: u64) -> Clock {
        Clock {
            base_ms: ms,
            base: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }

    /// The tokio instant at which this clock reads `ms` (now, if that is past).
    pub fn instant_at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms.saturating_sub(self.base_ms))
    }
}
