//! How the chat screen writes times and days: in a time zone handed in from outside, with the
//! user's `time_format`.
//!
//! Pure given its `Zone`: the terminal loop passes `Zone::Local` (the system's zone, looked up
//! per timestamp so that a date across a daylight-saving change is right); tests pass a fixed
//! offset. Reads no clock; never decides what is shown where.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone};

/// The format of message times unless the config says otherwise.
pub const DEFAULT_TIME_FORMAT: &str = "%H:%M";

/// The zone times are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The system's zone (`TZ`, or /etc/localtime).
    Local,
    Fixed(FixedOffset),
}

impl Zone {
    /// UTC, for tests and for a system whose zone cannot be read.
    pub fn utc() -> Zone {
        Zone::Fixed(FixedOffset::east_opt(0).expect("0 is a valid offset"))
    }

    /// The wall-clock time of `ms` (Unix ms) in this zone.
    fn at(self, ms: u64) -> NaiveDateTime {
        let utc = DateTime::from_timestamp_millis(ms.min(i64::MAX as u64) as i64)
            .unwrap_or_default()
            .naive_utc();
        match self {
            Zone::Local => Local.from_utc_datetime(&utc).naive_local(),
            Zone::Fixed(off) => off.from_utc_datetime(&utc).naive_local(),
        }
    }

    /// The day `ms` falls on in this zone: what a date separator compares.
    pub fn day(self, ms: u64) -> NaiveDate {
        self.at(ms).date()
    }
}

/// Why a `time_format` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "time_format {0:?} is not a strftime format chrono understands (e.g. \"%H:%M\" or \"%I:%M %p\"); fix it in the config file"
)]
pub struct BadFormat(String);

/// Message times in a zone, written with a checked strftime format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    pub zone: Zone,
    format: String,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            zone: Zone::utc(),
            format: DEFAULT_TIME_FORMAT.to_string(),
        }
    }
}

impl Clock {
    /// Checks `format` once, so drawing can never meet a format that fails.
    pub fn new(zone: Zone, format: &str) -> Result<Clock, BadFormat> {
        let probe = NaiveDateTime::default();
        let mut out = String::new();
        if format.trim().is_empty() || write!(out, "{}", probe.format(format)).is_err() {
            return Err(BadFormat(format.to_string()));
        }
        Ok(Clock {
            zone,
            format: format.to_string(),
        })
    }

    /// The time of a message, as the user asked for it.
    pub fn time(&self, ms: u64) -> String {
        let mut out = String::new();
        // Checked in `new`; should chrono still refuse, the time is left out, not a panic.
        let _ = write!(out, "{}", self.zone.at(ms).format(&self.format));
        out
    }

    /// A day for a separator line: "Thursday 3 December 2026".
    pub fn date(&self, day: NaiveDate) -> String {
        day.format("%A %-d %B %Y").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-03 23:30:00 UTC.
    const LATE: u64 = 1_796_340_600_000;

    #[test]
    fn times_and_days_follow_the_zone_handed_in() {
        let utc = Clock::default();
        assert_eq!(utc.time(LATE), "23:30");
        assert_eq!(utc.date(utc.zone.day(LATE)), "Thursday 3 December 2026");
        let paris = Zone::Fixed(FixedOffset::east_opt(3600).unwrap());
        let c = Clock::new(paris, "%I:%M %p").unwrap();
        assert_eq!(c.time(LATE), "12:30 AM");
        assert_eq!(c.date(c.zone.day(LATE)), "Friday 4 December 2026");
    }

    #[test]
    fn a_bad_format_is_refused_with_a_sentence() {
        let e = Clock::new(Zone::utc(), "%Q").unwrap_err().to_string();
        assert!(
            e.contains("time_format") && e.contains("config file"),
            "{e}"
        );
        assert!(Clock::new(Zone::utc(), "").is_err());
    }
}
