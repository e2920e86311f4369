//! The matchers a rule's `to` is made of: path patterns, host patterns, methods.
//! Each is parsed once at load (its constructor is the validation) and matched
//! without allocation on the hot path, except for `{name}` captures.

use super::path::NormalizedPath;
use std::fmt;

/// Why a pattern in a policy is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("path pattern {0:?} must start with '/'")]
    NotAbsolute(String),
    #[error("in path pattern {0:?}, '**' may only be the last segment")]
    DoubleStarNotLast(String),
    #[error("in path pattern {0:?}, '*' must be a whole segment ('/*' or '/**')")]
    PartialWildcard(String),
    #[error(
        "in path pattern {0:?}, capture names must be letters, digits or '_' (e.g. '{{user_id}}')"
    )]
    BadCaptureName(String),
    #[error("path pattern {0:?} captures '{1}' twice")]
    DuplicateCapture(String, String),
    #[error("path pattern {0:?} does not normalize: {1}")]
    NotNormal(String, String),
    #[error("host pattern {0:?} is empty or has a '*' other than a leading '*.'")]
    BadHost(String),
    #[error("method {0:?} is not an HTTP method token (e.g. GET, POST)")]
    BadMethod(String),
    #[error("service pattern {0:?} is not a SPIFFE ID pattern: write spiffe://TRUST_DOMAIN/path, with '*' for a whole segment")]
    BadSpiffe(String),
    #[error("service pattern {0:?} is outside the trust domain {1:?}")]
    ForeignTrustDomain(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Any,
    /// `{name}`: exactly one segment, captured into `params.name`.
    Capture(String),
    /// `**` (last only): zero or more segments, so `/api/**` also covers `/api`.
    Rest,
}

/// A path pattern of docs/policy.md: exact segments, `/*`, `/**`, `{name}` captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
}

impl PathPattern {
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        if !source.starts_with('/') {
            return Err(PatternError::NotAbsolute(source.to_owned()));
        }
        let raw: Vec<&str> = source.split('/').filter(|s| !s.is_empty()).collect();
        let mut segments = Vec::with_capacity(raw.len());
        let mut captures: Vec<&str> = Vec::new();
        for (i, part) in raw.iter().enumerate() {
            let segment = match *part {
                "**" if i + 1 == raw.len() => Segment::Rest,
                "**" => return Err(PatternError::DoubleStarNotLast(source.to_owned())),
                "*" => Segment::Any,
                p if p.starts_with('{') && p.ends_with('}') => {
                    let name = &p[1..p.len() - 1];
                    let valid = !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !name.starts_with(|c: char| c.is_ascii_digit());
                    if !valid {
                        return Err(PatternError::BadCaptureName(source.to_owned()));
                    }
                    if captures.contains(&name) {
                        return Err(PatternError::DuplicateCapture(
                            source.to_owned(),
                            name.to_owned(),
                        ));
                    }
                    captures.push(name);
                    Segment::Capture(name.to_owned())
                }
                p if p.contains('*') => {
                    return Err(PatternError::PartialWildcard(source.to_owned()))
                }
                "." | ".." => {
                    return Err(PatternError::NotNormal(
                        source.to_owned(),
                        "dot segments never match a normalized path".into(),
                    ))
                }
                p => {
                    // Literals are compared with decoded request segments, so a
                    // pattern must itself be written decoded.
                    if p.contains(['%', '\\', '{', '}']) {
                        return Err(PatternError::NotNormal(
                            source.to_owned(),
                            "write literal segments decoded, without '%', '\\', '{' or '}'".into(),
                        ));
                    }
                    Segment::Literal(p.to_owned())
                }
            };
            segments.push(segment);
        }
        Ok(Self {
            source: source.to_owned(),
            segments,
        })
    }

    /// The names this pattern captures, in order.
    pub fn captures(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Capture(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The first literal segment, if the pattern starts with one (for indexing).
    pub fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(l)) => Some(l),
            _ => None,
        }
    }

    /// Matches `path`, appending `{name}` captures to `params` on success.
    pub fn matches(&self, path: &NormalizedPath, params: &mut Vec<(String, String)>) -> bool {
        let actual = path.segments();
        let mark = params.len();
        let mut i = 0;
        for segment in &self.segments {
            match segment {
                Segment::Rest => return true,
                _ if i >= actual.len() => break,
                Segment::Literal(l) if *l != actual[i] => break,
                Segment::Literal(_) | Segment::Any => {}
                Segment::Capture(name) => params.push((name.clone(), actual[i].clone())),
            }
            i += 1;
        }
        let matched = i == actual.len() && i == self.segments.len();
        if !matched {
            params.truncate(mark);
        }
        matched
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A host pattern: exact (`api.example.com`), or a leading wildcard (`*.example.com`).
/// Case-insensitive; a request's `:port` is ignored unless the pattern names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pattern: String,
}

impl HostPattern {
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        let pattern = source.trim().to_ascii_lowercase();
        let wildcard_ok = match pattern.strip_prefix("*.") {
            Some(rest) => !rest.contains('*') && !rest.is_empty(),
            None => !pattern.contains('*'),
        };
        if pattern.is_empty() || !wildcard_ok {
            return Err(PatternError::BadHost(source.to_owned()));
        }
        Ok(Self { pattern })
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let host = if strip_port(&self.pattern) != self.pattern {
            host.as_str()
        } else {
            strip_port(&host)
        };
        match self.pattern.strip_prefix('*') {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            None => host == self.pattern,
        }
    }
}

fn strip_port(host: &str) -> &str {
    // `[::1]:8080` keeps its brackets; `example.com:8080` loses the port.
    if let Some(end) = host.rfind(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// An HTTP method token, upper-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method(String);

impl Method {
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        let valid = !source.is_empty() && source.chars().all(|c| c.is_ascii_alphabetic());
        if !valid {
            return Err(PatternError::BadMethod(source.to_owned()));
        }
        Ok(Self(source.to_ascii_uppercase()))
    }

    pub fn matches(&self, method: &str) -> bool {
        self.0.eq_ignore_ascii_case(method)
    }
}

/// A SPIFFE ID pattern of `from.services`: `spiffe://TD/ns/*/sa/videos`, where `*`
/// stands for exactly one path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffePattern {
    source: String,
    trust_domain: String,
    /// `None` is `*`.
    segments: Vec<Option<String>>,
}

impl SpiffePattern {
    /// Parses a pattern; its trust domain must be `trust_domain`.
    pub fn parse(source: &str, trust_domain: &str) -> Result<Self, PatternError> {
        let bad = || PatternError::BadSpiffe(source.to_owned());
        let rest = source.strip_prefix("spiffe://").ok_or_else(bad)?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        let td_ok = !td.is_empty()
            && td
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c));
        if !td_ok {
            return Err(bad());
        }
        if td != trust_domain {
            return Err(PatternError::ForeignTrustDomain(
                source.to_owned(),
                trust_domain.to_owned(),
            ));
        }
        let mut segments = Vec::new();
        if !path.is_empty() {
            for segment in path.split('/') {
                let literal_ok = !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                match segment {
                    "*" => segments.push(None),
                    _ if literal_ok => segments.push(Some(segment.to_owned())),
                    _ => return Err(bad()),
                }
            }
        }
        Ok(Self {
            source: source.to_owned(),
            trust_domain: td.to_owned(),
            segments,
        })
    }

    pub fn matches(&self, spiffe_id: &str) -> bool {
        let Some(rest) = spiffe_id.strip_prefix("spiffe://") else {
            return false;
        };
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        if td != self.trust_domain {
            return false;
        }
        let actual: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        actual.len() == self.segments.len()
            && self
                .segments
                .iter()
                .zip(&actual)
                .all(|(want, have)| want.as_deref().is_none_or(|w| w == *have))
    }
}

impl fmt::Display for SpiffePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_match(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        let pattern = PathPattern::parse(pattern).unwrap();
        let path = NormalizedPath::parse(path).unwrap();
        let mut params = Vec::new();
        pattern.matches(&path, &mut params).then_some(params)
    }

    #[test]
    fn path_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("/healthz", "/healthz", true),
            ("/healthz", "/healthz/", true),
            ("/healthz", "/healthz/x", false),
            ("/healthz", "/health", false),
            ("/api/videos", "/api/videos?page=2", true),
            ("/api/*", "/api/videos", true),
            ("/api/*", "/api", false),
            ("/api/*", "/api/videos/1", false),
            ("/api/**", "/api", true),
            ("/api/**", "/api/videos/1/comments", true),
            ("/api/**", "/apix", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
            ("/", "/", true),
            ("/", "/x", false),
            ("/api/*/comments", "/api/7/comments", true),
            ("/api/*/comments", "/api/7/likes", false),
            ("/pkg.Service/Method", "/pkg.Service/Method", true),
            ("/pkg.Service/*", "/pkg.Service/Other", true),
            ("/api/videos/**", "/api/videos/../admin", false),
            ("/api/admin/**", "/api/videos/../admin", true),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(
                path_match(pattern, path).is_some(),
                *want,
                "{pattern} against {path}"
            );
        }
    }

    #[test]
    fn captures_segments_into_params() {
        let params = path_match("/user_modules/user/{user_id}", "/user_modules/user/42").unwrap();
        assert_eq!(params, vec![("user_id".to_string(), "42".to_string())]);
        let params = path_match("/c/{a}/x/{b}/**", "/c/1/x/two/rest/of").unwrap();
        assert_eq!(params.len(), 2);
        assert_eq!(params[1], ("b".to_string(), "two".to_string()));
        assert!(path_match("/user/{id}", "/user").is_none());
    }

    #[test]
    fn invalid_path_patterns() {
        let cases: &[&str] = &[
            "api",
            "/api/**/x",
            "/api/v*",
            "/api/{}",
            "/api/{a-b}",
            "/x/{id}/{id}",
            "/api/../admin",
            "/api/%2e",
        ];
        for pattern in cases {
            assert!(
                PathPattern::parse(pattern).is_err(),
                "{pattern} should be rejected"
            );
        }
    }

    #[test]
    fn host_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("api.example.com", "api.example.com", true),
            ("api.example.com", "API.Example.com", true),
            ("api.example.com", "api.example.com:8443", true),
            ("api.example.com", "evil.com", false),
            ("api.example.com", "api.example.com.evil.com", false),
            ("*.example.com", "api.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "evilexample.com", false),
            ("api.example.com:8443", "api.example.com:8443", true),
            ("api.example.com:8443", "api.example.com", false),
            ("[::1]", "[::1]:80", true),
        ];
        for (pattern, host, want) in cases {
            let p = HostPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(host), *want, "{pattern} against {host}");
        }
        assert!(HostPattern::parse("api.*.com").is_err());
        assert!(HostPattern::parse("").is_err());
    }

    #[test]
    fn spiffe_patterns() {
        let td = "example.org";
        let cases: &[(&str, &str, bool)] = &[
            (
                "spiffe://example.org/ns/default/sa/videos",
                "spiffe://example.org/ns/default/sa/videos",
                true,
            ),
            (
                "spiffe://example.org/ns/default/sa/videos",
                "spiffe://example.org/ns/default/sa/channels",
                false,
            ),
            (
                "spiffe://example.org/ns/*/sa/videos",
                "spiffe://example.org/ns/prod/sa/videos",
                true,
            ),
            (
                "spiffe://example.org/ns/*/sa/videos",
                "spiffe://example.org/ns/prod/sa/videos/x",
                false,
            ),
            (
                "spiffe://example.org/ns/default/sa/*",
                "spiffe://example.org/ns/default/sa/any",
                true,
            ),
            (
                "spiffe://example.org/ns/default/sa/*",
                "spiffe://evil.org/ns/default/sa/any",
                false,
            ),
            (
                "spiffe://example.org/ns/default/sa/*",
                "https://example.org/ns/default/sa/any",
                false,
            ),
            ("spiffe://example.org", "spiffe://example.org", true),
        ];
        for (pattern, id, want) in cases {
            let p = SpiffePattern::parse(pattern, td).unwrap();
            assert_eq!(p.matches(id), *want, "{pattern} against {id}");
        }
        assert!(matches!(
            SpiffePattern::parse("spiffe://other.org/ns/a/sa/b", td),
            Err(PatternError::ForeignTrustDomain(..))
        ));
        for bad in [
            "example.org/ns/a",
            "spiffe://Example.org/x",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/b*",
        ] {
            assert!(SpiffePattern::parse(bad, td).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods() {
        assert!(Method::parse("get").unwrap().matches("GET"));
        assert!(!Method::parse("GET").unwrap().matches("POST"));
        assert!(Method::parse("GE T").is_err());
    }
}
