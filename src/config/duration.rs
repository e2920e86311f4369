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
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(err());
        }
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
            if digits == 0 {
                return Err(err());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = match &rest[..unit_len] {
                "ms" => Duration::from_millis(value),
                "s" => Duration::from_secs(value),
                "m" => Duration::from_secs(value.checked_mul(60).ok_or_else(err)?),
                "h" => Duration::from_secs(value.checked_mul(3600).ok_or_else(err)?),
                "d" => Duration::from_secs(value.checked_mul(86400).ok_or_else(err)?),
                _ => return Err(err()),
            };
            total = total.checked_add(unit).ok_or_else(err)?;
            rest = &rest[unit_len..];
        }
        Ok(Self(total))
    }
}

impl<'de> serde::Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::raw::from_text(deserializer)
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
        ] {
            assert!(bad.parse::<ConfigDuration>().is_err(), "{bad}");
        }
    }
}
