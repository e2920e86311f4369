//! Sizes in bytes as the config writes them: `16384`, `16KiB`, `32MiB`, `1GiB`.
//! Written here rather than taken from a crate: four suffixes, and the crates
//! also accept decimal units (`MB`) and fractions we would rather refuse.

use std::{fmt, str::FromStr};

/// A configured size, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?}: write a number of bytes, or a number and KiB, MiB or GiB, e.g. 32MiB")]
pub struct ByteSizeError(String);

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ByteSizeError(s.to_owned());
        let text = s.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        if digits == 0 {
            return Err(err());
        }
        let value: u64 = text[..digits].parse().map_err(|_| err())?;
        let unit = match &text[digits..] {
            "" => 1,
            "KiB" => KIB,
            "MiB" => MIB,
            "GiB" => GIB,
            _ => return Err(err()),
        };
        value.checked_mul(unit).map(ByteSize).ok_or_else(err)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::raw::from_text(deserializer)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n != 0 && n % GIB == 0 => write!(f, "{}GiB", n / GIB),
            n if n != 0 && n % MIB == 0 => write!(f, "{}MiB", n / MIB),
            n if n != 0 && n % KIB == 0 => write!(f, "{}KiB", n / KIB),
            n => write!(f, "{n} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        for (s, want) in [
            ("0", 0),
            ("16384", 16384),
            ("16KiB", 16 * KIB),
            ("32MiB", 32 * MIB),
            ("1GiB", GIB),
            (" 2MiB ", 2 * MIB),
        ] {
            assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(want)), "{s}");
        }
        for bad in [
            "",
            "MiB",
            "32MB",
            "32mib",
            "32 MiB",
            "1.5MiB",
            "-1",
            "32MiB4",
            "99999999999999999999",
            "17179869184GiB",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        for (n, want) in [
            (32 * MIB, "32MiB"),
            (16 * KIB, "16KiB"),
            (GIB, "1GiB"),
            (1500, "1500 bytes"),
        ] {
            assert_eq!(ByteSize(n).to_string(), want);
        }
    }

    #[test]
    fn reads_text_and_plain_numbers_from_yaml() {
        let read =
            |yaml: &str| serde_yaml_ng::from_str::<ByteSize>(yaml).map_err(|e| e.to_string());
        assert_eq!(read("32MiB"), Ok(ByteSize(32 * MIB)));
        assert_eq!(read("4096"), Ok(ByteSize(4096)));
        assert!(read("lots").unwrap_err().contains("KiB, MiB or GiB"));
    }
}
