//! Request paths as policy sees them: normalized once, before any rule runs.
//!
//! A path rule is only as good as the agreement between what we match and what the
//! upstream serves. We therefore match the most-resolved form a server could reach
//! (SPEC §7): the query is cut off, percent-encoding is decoded exactly once, `//` is
//! merged, `.` and `..` segments are removed (RFC 3986 §5.2.4) *after* decoding, so
//! `/api/%2e%2e/admin` is `/admin`. An encoded `/` or `\` (or any backslash, or a NUL)
//! has no single meaning across servers, so such a path is rejected outright.

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
            match segment.as_str() {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                _ => segments.push(segment),
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

fn decode_segment(encoded: &str) -> Result<String, PathError> {
    if !encoded.contains('%') {
        if encoded.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter);
        }
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
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadPercentEncoding)?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadPercentEncoding)?;
            if byte == b'/' || byte == b'\\' {
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
    if decoded.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    Ok(decoded)
}

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
            // Decoded exactly once: %252e stays a literal "%2e" segment.
            ("/api/%252e%252e/admin", "/api/%2e%2e/admin"),
            ("/pkg.Service/Method", "/pkg.Service/Method"),
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
        ];
        for (raw, want) in cases {
            assert_eq!(
                NormalizedPath::parse(raw).as_ref(),
                Err(want),
                "parsing {raw}"
            );
        }
    }
}
