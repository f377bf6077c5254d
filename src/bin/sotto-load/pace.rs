//! `--rate`: the open-loop send schedule shared by every sender of a run.
//!
//! Message k of sender i is due at `start + (k·N + i) / R`: the senders interleave, so the
//! offered load is R messages per second in total, evenly spread. A send that is late (the
//! previous one blocked) goes out at once and the schedule does not shift, so a slow system
//! meets the same offered load and shows it as latency, not as a lower rate.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy)]
pub struct Pace {
    start: Instant,
    senders: usize,
    rate: f64,
}

impl Pace {
    /// A schedule of `rate` messages per second across `senders`, starting at `start`.
    pub fn new(start: Instant, senders: usize, rate: f64) -> Pace {
        Pace {
            start,
            senders,
            rate,
        }
    }

    /// When message `k` of sender `i` is due.
    pub fn due(&self, i: usize, k: usize) -> Instant {
        let slot = (k * self.senders + i) as f64;
        // Rounded to the nanosecond, so that slots land where decimal arithmetic says.
        self.start + Duration::from_nanos((slot * 1e9 / self.rate).round() as u64)
    }

    /// Waits until message `k` of sender `i` is due; returns at once if it is overdue.
    pub async fn wait(&self, i: usize, k: usize) {
        tokio::time::sleep_until(self.due(i, k)).await;
    }
}

/// Waits for message `k` of sender `i` if the run is paced; unpaced runs send at once.
pub async fn wait(pace: Option<&Pace>, i: usize, k: usize) {
    if let Some(p) = pace {
        p.wait(i, k).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_interleave_at_the_offered_rate() {
        let start = Instant::now();
        let p = Pace::new(start, 10, 1000.0);
        assert_eq!(p.due(0, 0), start);
        assert_eq!(p.due(3, 0) - start, Duration::from_millis(3));
        // Message 1 of sender 0 follows message 0 of sender 9.
        assert_eq!(p.due(0, 1) - start, Duration::from_millis(10));
        assert_eq!(p.due(9, 99) - start, Duration::from_millis(999));
    }
}
