//! Request paths as policy sees them: normalized once, before any rule runs.
//!
//! A path rule is only as good as the agreement between what we match and what the
//! upstream serves. We therefore match the most-resolved form a server could reach
//! (`docs/security.md`): the query is cut off, percent-encoding is decoded exactly
//! once, `//` is merged, `.` and `..` segments are removed (RFC 3986 §5.2.4) *after*
//! decoding, so `/api/%2e%2e/admin` is `/admin`. A segment whose name before its
//! first `;` is a dot segment (`..;x`, a Tomcat path parameter) counts as that dot
//! segment, as Envoy's `normalize_path` folds it. What has no single meaning across
//! servers is rejected outright: an encoded `/` or `\` (or any backslash, or a NUL),
//! an escape left after the one decode that names a delimiter (`%252e`, which a
//! server that decodes twice reads as `.`), a character that Unicode folding turns
//! into a delimiter (`\u{FF0E}` is `.` under NFKC), and a dot segment followed by an
//! encoded `;` (`..%3B`, a parameter to some servers and a name to others).

use std::fmt;

/// Why a request path cannot be normalized; such a request is answered 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// `%2F` or `%5C`: an encoded separator that servers disagree about.
    #[error("the path contains an encoded '/' or '\\' ({0})")]
    EncodedSeparator(String),
    /// A backslash, which some servers treat as a separator.
    #[error("the path contains a backslash")]
    Backslash,
    /// A `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-encoding")]
    BadPercentEncoding,
    /// A NUL or other control character after decoding.
    #[error("the path contains a control character")]
    ControlCharacter,
    /// The decoded bytes are not UTF-8.
    #[error("the path is not valid UTF-8 after decoding")]
    NotUtf8,
    /// An escape left after the one decode that names a delimiter (`%252e`
    /// decodes to `%2e`): a server that decodes twice reads `.`, `/`, `%`, ….
    #[error("the path is percent-encoded twice ({0} after decoding)")]
    DoubleEncoded(String),
    /// A character that Unicode folding (NFKC, or a look-alike mapping) turns into
    /// `.`, `/`, `\`, `%`, `;`, `?` or `#`.
    #[error(
        "the path contains U+{:04X}, which Unicode folding turns into a path delimiter",
        u32::from(*.0)
    )]
    FoldsToDelimiter(char),
    /// `.` or `..` followed by an encoded `;` (`..%3B`): a path parameter to some
    /// servers, part of the name to others.
    #[error("the path contains a dot segment followed by an encoded ';'")]
    EncodedParameter,
}

/// A normalized request path: decoded segments, no empty, `.` or `..` segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    segments: Vec<String>,
}

impl NormalizedPath {
    /// Normalizes a raw `:path` (query and fragment allowed; they are cut off).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let end = raw.find(['?', '#']).unwrap_or(raw.len());
        let raw = &raw[..end];
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        if raw.contains('\\') {
            return Err(PathError::Backslash);
        }
        let mut segments: Vec<String> = Vec::new();
        for encoded in raw.split('/') {
            let segment = decode_segment(encoded)?;
            match dot_segment(encoded, &segment)? {
                Some("") | Some(".") => {}
                Some(_) => {
                    segments.pop();
                }
                None => segments.push(segment),
            }
        }
        Ok(Self { segments })
    }

    /// The decoded segments, root first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for segment in &self.segments {
            write!(f, "/{segment}")?;
        }
        Ok(())
    }
}

/// `""`, `"."` or `".."` when `decoded` (the segment `encoded`, decoded) is empty
/// or a dot segment, with or without `;` parameters; `None` for a name.
fn dot_segment<'a>(encoded: &str, decoded: &'a str) -> Result<Option<&'a str>, PathError> {
    let name = decoded.split(';').next().unwrap_or_default();
    if !matches!(name, "" | "." | "..") {
        return Ok(None);
    }
    if name.len() == decoded.len() {
        return Ok(Some(name));
    }
    // Parameters follow: only a `;` sent as is starts them for Envoy and Tomcat.
    if name.is_empty() {
        return Ok(None); // `;x` is a name for Envoy; an empty one only to Tomcat
    }
    let raw_name = encoded.split(';').next().unwrap_or_default();
    if decode_segment(raw_name)? == name {
        Ok(Some(name))
    } else {
        Err(PathError::EncodedParameter)
    }
}

/// Decodes one segment's percent-escapes, once, and refuses what a server could
/// read differently.
fn decode_segment(encoded: &str) -> Result<String, PathError> {
    if !encoded.contains('%') {
        check_decoded(encoded)?;
        return Ok(encoded.to_owned());
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or(PathError::BadPercentEncoding)?;
            let byte = escaped_byte(hex).ok_or(PathError::BadPercentEncoding)?;
            if byte == b'/' || byte == b'\\' {
                let hex = String::from_utf8_lossy(hex);
                return Err(PathError::EncodedSeparator(format!("%{hex}")));
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    check_decoded(&decoded)?;
    Ok(decoded)
}

/// The delimiters a second decode or a Unicode fold must not be able to produce.
const DELIMITERS: &[u8] = b"./\\%;?#";

/// Refuses, in a decoded segment, control characters, an escape of a delimiter
/// (only possible if the client encoded a `%`), and characters that fold into one.
fn check_decoded(decoded: &str) -> Result<(), PathError> {
    if decoded.is_ascii() {
        if decoded.bytes().any(|b| b.is_ascii_control()) {
            return Err(PathError::ControlCharacter);
        }
    } else {
        for c in decoded.chars() {
            if c.is_control() {
                return Err(PathError::ControlCharacter);
            }
            if FOLDS_TO_DELIMITER.binary_search(&c).is_ok() {
                return Err(PathError::FoldsToDelimiter(c));
            }
        }
    }
    for (at, _) in decoded.match_indices('%') {
        let hex = decoded.as_bytes().get(at + 1..at + 3).unwrap_or_default();
        if escaped_byte(hex).is_some_and(|b| DELIMITERS.contains(&b)) {
            return Err(PathError::DoubleEncoded(decoded[at..at + 3].to_owned()));
        }
    }
    Ok(())
}

/// The byte two hex digits name (and nothing else: no sign, no other length).
fn escaped_byte(hex: &[u8]) -> Option<u8> {
    let [high, low] = hex else {
        return None;
    };
    let digit = |b: &u8| char::from(*b).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

/// Characters whose NFKC form contains `.`, `/`, `\`, `%`, `;`, `?` or `#` (so
/// `\u{2025}` is `..`, `\u{2100}` is `a/c`), computed from Unicode 14 data, plus
/// look-alikes some libraries fold by hand: the division, fraction and set-minus
/// slashes (U+2215, U+2044, U+2216, U+29F5) and the ideographic full stops IDNA
/// maps to `.` (U+3002, U+FF61). Sorted, for a binary search.
#[rustfmt::skip]
const FOLDS_TO_DELIMITER: &[char] = &[
    '\u{037E}', '\u{2024}', '\u{2025}', '\u{2026}', '\u{2044}', '\u{2047}', '\u{2048}', '\u{2049}',
    '\u{2100}', '\u{2101}', '\u{2105}', '\u{2106}', '\u{2215}', '\u{2216}', '\u{2488}', '\u{2489}',
    '\u{248A}', '\u{248B}', '\u{248C}', '\u{248D}', '\u{248E}', '\u{248F}', '\u{2490}', '\u{2491}',
    '\u{2492}', '\u{2493}', '\u{2494}', '\u{2495}', '\u{2496}', '\u{2497}', '\u{2498}', '\u{2499}',
    '\u{249A}', '\u{249B}', '\u{29F5}', '\u{3002}', '\u{33C2}', '\u{33C7}', '\u{33D8}', '\u{FE14}',
    '\u{FE16}', '\u{FE19}', '\u{FE30}', '\u{FE52}', '\u{FE54}', '\u{FE56}', '\u{FE5F}', '\u{FE68}',
    '\u{FE6A}', '\u{FF03}', '\u{FF05}', '\u{FF0E}', '\u{FF0F}', '\u{FF1B}', '\u{FF1F}', '\u{FF3C}',
    '\u{FF61}', '\u{1F100}',
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_the_upstream_would() {
        let cases: &[(&str, &str)] = &[
            ("/", "/"),
            ("/api/videos", "/api/videos"),
            ("/api/videos/", "/api/videos"),
            ("/api/videos?x=/admin", "/api/videos"),
            ("/api/videos#frag", "/api/videos"),
            ("/api//admin", "/api/admin"),
            ("//api///admin//", "/api/admin"),
            ("/api/./videos", "/api/videos"),
            ("/api/videos/../admin", "/api/admin"),
            ("/api/%2e%2e/admin", "/admin"),
            ("/api/%2E%2E/admin", "/admin"),
            ("/api/videos/%2e%2e/%2e%2e/api/admin", "/api/admin"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/caf%C3%A9", "/café"),
            ("/a%20b", "/a b"),
            ("/pkg.Service/Method", "/pkg.Service/Method"),
            // Decoded exactly once; an escape of a non-delimiter may stay.
            ("/a%2541", "/a%41"),
            ("/100%25", "/100%"),
            // A dot segment with `;` parameters is that dot segment, as Envoy
            // and Tomcat read it.
            ("/api/..;/admin", "/admin"),
            ("/api/.;/x", "/api/x"),
            ("/api/..;jsessionid=1/admin", "/admin"),
            ("/api/videos/..;/admin", "/api/admin"),
            ("/api/%2e%2e;/admin", "/admin"),
            ("/api/..;x;y/admin", "/admin"),
            ("/api/x/..;", "/api"),
            ("/api/videos;x/../admin", "/api/admin"),
            // Other parameters stay part of the name, as Envoy forwards them.
            ("/api/videos;jsessionid=1", "/api/videos;jsessionid=1"),
            ("/api/;x/admin", "/api/;x/admin"),
            ("/api/...;/admin", "/api/...;/admin"),
        ];
        for (raw, want) in cases {
            let got = NormalizedPath::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(got.to_string(), *want, "normalizing {raw}");
        }
    }

    #[test]
    fn rejects_ambiguous_paths() {
        let cases: &[(&str, PathError)] = &[
            ("api/videos", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            (
                "/api/videos/..%2fadmin",
                PathError::EncodedSeparator("%2f".into()),
            ),
            ("/api%2Fadmin", PathError::EncodedSeparator("%2F".into())),
            ("/api%5cadmin", PathError::EncodedSeparator("%5c".into())),
            ("/api\\..\\admin", PathError::Backslash),
            ("/api/%zz", PathError::BadPercentEncoding),
            ("/api/%2", PathError::BadPercentEncoding),
            ("/api/%00", PathError::ControlCharacter),
            ("/api/%ff", PathError::NotUtf8),
            // A server that decodes twice would see `..`, `/`, `\`, `%`, `?`.
            (
                "/api/%252e%252e/admin",
                PathError::DoubleEncoded("%2e".into()),
            ),
            ("/api/%252E", PathError::DoubleEncoded("%2E".into())),
            (
                "/api/videos/..%252fadmin",
                PathError::DoubleEncoded("%2f".into()),
            ),
            ("/api%255cadmin", PathError::DoubleEncoded("%5c".into())),
            ("/api/%25252e", PathError::DoubleEncoded("%25".into())),
            ("/api/%25%32%65", PathError::DoubleEncoded("%2e".into())),
            ("/api/admin%253f/x", PathError::DoubleEncoded("%3f".into())),
            ("/api/..%253b/admin", PathError::DoubleEncoded("%3b".into())),
            // `..%3B`: a parameter to a server that decodes first, a name to Envoy.
            ("/api/..%3b/admin", PathError::EncodedParameter),
            ("/api/videos/..%3Bx/admin", PathError::EncodedParameter),
            ("/api/.%3b;/x", PathError::EncodedParameter),
            (
                "/api/%EF%BC%8E%EF%BC%8E/admin",
                PathError::FoldsToDelimiter('\u{FF0E}'),
            ),
            (
                "/api/\u{2025}/admin",
                PathError::FoldsToDelimiter('\u{2025}'),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(
                NormalizedPath::parse(raw).as_ref(),
                Err(want),
                "parsing {raw}"
            );
        }
    }

    #[test]
    fn rejects_characters_that_fold_into_delimiters() {
        let look_alikes = [
            '\u{FF0E}', '\u{FF0F}', '\u{FF3C}', '\u{2024}', '\u{FE52}', '\u{2215}', '\u{2044}',
            '\u{FE68}', '\u{2216}', '\u{29F5}', '\u{2025}', '\u{FF1B}', '\u{FF05}', '\u{2100}',
        ];
        for c in look_alikes {
            let encoded: String = c.to_string().bytes().map(|b| format!("%{b:02X}")).collect();
            for raw in [format!("/api/{encoded}admin"), format!("/api/x{c}")] {
                assert_eq!(
                    NormalizedPath::parse(&raw),
                    Err(PathError::FoldsToDelimiter(c)),
                    "parsing {raw}"
                );
            }
        }
        assert!(
            FOLDS_TO_DELIMITER.windows(2).all(|w| w[0] < w[1]),
            "sorted, for the binary search"
        );
    }
}
