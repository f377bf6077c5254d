//! When an open connection must be pinged or closed: the idle deadline (nothing heard, not
//! even a pong) and the deadline on a frame that has started arriving.
//!
//! Owns the timing decisions only, over the `ReadClock` the transport keeps. Must not touch
//! the socket: `conn` sends the ping or closes the connection when told to.

use std::time::Duration;

use tokio::time::Instant;

use super::stats::Reason;
use super::transport::ReadClock;

/// What the connection must do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    Nothing,
    Ping,
    Close(Reason),
}

pub(crate) struct Liveness {
    ping_interval: Duration,
    idle_timeout: Duration,
    frame_timeout: Duration,
    last_ping: Option<Instant>,
}

impl Liveness {
    pub fn new(ping_interval: Duration, idle_timeout: Duration, frame_timeout: Duration) -> Self {
        Liveness {
            ping_interval,
            idle_timeout,
            frame_timeout,
            last_ping: None,
        }
    }

    /// When the next ping is due: `ping_interval` after the later of the last bytes heard and
    /// the last ping sent.
    fn ping_at(&self, clock: &ReadClock) -> Instant {
        let since = match self.last_ping {
            Some(p) if p > clock.last_read => p,
            _ => clock.last_read,
        };
        since + self.ping_interval
    }

    /// When `check` may next have something to do. A frame that starts arriving after this
    /// is computed is noticed at the latest `frame_timeout` later, then closed on time.
    pub fn next_check(&self, clock: &ReadClock, now: Instant) -> Instant {
        let frame = match clock.unsettled_since {
            Some(t) => t + self.frame_timeout,
            None => now + self.frame_timeout,
        };
        self.ping_at(clock)
            .min(clock.last_read + self.idle_timeout)
            .min(frame)
    }

    pub fn check(&mut self, clock: &ReadClock, now: Instant) -> Due {
        if now >= clock.last_read + self.idle_timeout {
            return Due::Close(Reason::IdleTimeout);
        }
        if clock
            .unsettled_since
            .is_some_and(|t| now >= t + self.frame_timeout)
        {
            return Due::Close(Reason::FrameTimeout);
        }
        if now >= self.ping_at(clock) {
            self.last_ping = Some(now);
            return Due::Ping;
        }
        Due::Nothing
    }
}
