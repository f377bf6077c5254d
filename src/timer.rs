//! Disappearing-message timers as the user writes them: `30s`, `5m`, `1h`, `1d`, `off`.
//!
//! Owns the accepted range (5 s to 24 h) and the spelling of durations in both directions.
//! Pure: no clock, no I/O.

/// Shortest and longest timer, in seconds.
pub const MIN_SECS: u32 = 5;
pub const MAX_SECS: u32 = 24 * 60 * 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    #[error("{0:?} is not a timer: write a number and a unit (30s, 5m, 1h, 1d) or off")]
    Syntax(String),
    #[error("{0} is outside the allowed range: timers run from 5s to 24h")]
    Range(String),
}

/// Parses a timer; `Ok(None)` means off.
pub fn parse(s: &str) -> Result<Option<u32>, TimerError> {
    let t = s.trim().to_ascii_lowercase();
    if t == "off" {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit_secs: u64 = match unit {
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hr" | "hrs" => 3600,
        "d" | "day" | "days" => 86_400,
        _ => return Err(TimerError::Syntax(s.to_string())),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| TimerError::Syntax(s.to_string()))?;
    let secs = n.saturating_mul(unit_secs);
    if secs < u64::from(MIN_SECS) || secs > u64::from(MAX_SECS) {
        return Err(TimerError::Range(s.trim().to_string()));
    }
    Ok(Some(secs as u32))
}

/// Checks that `secs` is within the allowed range.
pub fn check(secs: u32) -> Result<u32, TimerError> {
    if (MIN_SECS..=MAX_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(TimerError::Range(short(secs)))
    }
}

/// The shortest exact spelling: 30s, 90s, 5m, 1h, 1d.
pub fn short(secs: u32) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_range_and_units() {
        assert_eq!(parse("5s"), Ok(Some(5)));
        assert_eq!(parse("30s"), Ok(Some(30)));
        assert_eq!(parse("5m"), Ok(Some(300)));
        assert_eq!(parse(" 1H "), Ok(Some(3600)));
        assert_eq!(parse("1d"), Ok(Some(86_400)));
        assert_eq!(parse("24h"), Ok(Some(86_400)));
        assert_eq!(parse("off"), Ok(None));
    }

    #[test]
    fn refuses_out_of_range_and_nonsense() {
        assert!(matches!(parse("4s"), Err(TimerError::Range(_))));
        assert!(matches!(parse("25h"), Err(TimerError::Range(_))));
        assert!(matches!(parse("2d"), Err(TimerError::Range(_))));
        assert!(parse("99999999999999999999d").is_err());
        for bad in ["abc", "", "s", "5", "5x", "-5s", "5 s"] {
            assert!(matches!(parse(bad), Err(TimerError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn short_spelling_round_trips() {
        for secs in [5, 30, 90, 300, 3600, 5400, 86_400] {
            assert_eq!(parse(&short(secs)), Ok(Some(secs)));
        }
        assert_eq!(short(300), "5m");
    }
}
