//! Durations as the mesh writes them: `500ms`, `30s`, `5m`, `24h`, `7d`, or a
//! combination such as `1h30m`.

use std::{fmt, str::FromStr, time::Duration};

/// A configured duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: write a number and a unit, e.g. 500ms, 30s, 5m, 24h, 7d")]
pub struct DurationError(String);

impl FromStr for ConfigDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError(s.to_owned());
        let text = s.trim();
        // humantime reads more than the mesh writes: `5M` is five months to it, `1y`
        // 365.25 days, and it takes weeks, fractions, spaces and a bare `0`. Only
        // digits and the letters of ms, s, m, h and d reach it, ending in a unit.
        let documented = text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"mshd".contains(&b))
            && text.ends_with(|c: char| c.is_ascii_alphabetic());
        if !documented {
            return Err(err());
        }
        humantime::parse_duration(text).map(Self).map_err(|_| err())
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("24h", Duration::from_secs(86400)),
            ("7d", Duration::from_secs(7 * 86400)),
            ("1h30m", Duration::from_secs(5400)),
            ("0s", Duration::ZERO),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<ConfigDuration>(), Ok(ConfigDuration(want)), "{s}");
        }
        for bad in [
            "",
            "30",
            "s",
            "5 m",
            "-5s",
            "1.5h",
            "5x",
            "99999999999999999999d",
            // What humantime alone would take.
            "0",
            "5M",
            "1y",
            "2w",
            "1h 30m",
            "5min",
            "3days",
            "10ns",
            "1.5s",
        ] {
            assert!(bad.parse::<ConfigDuration>().is_err(), "{bad}");
        }
    }
}
