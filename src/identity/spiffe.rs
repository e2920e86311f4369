//! SPIFFE IDs and trust domains (SPIFFE-ID spec §2; docs/security.md). The constructors are
//! the validation: a [`SpiffeId`] or [`TrustDomain`] that exists is well-formed.
//!
//! The rules, as the SPIFFE-ID spec and its reference implementations state them:
//! the scheme is exactly `spiffe`; the trust domain is non-empty, at most 255
//! bytes, of lower-case letters, digits, `.`, `-` and `_` (no userinfo, no port);
//! the path is empty or `/`-separated segments of letters, digits, `.`, `-`, `_`,
//! none empty, none `.` or `..`, no trailing `/`; no query, no fragment, no
//! percent-encoding; the whole ID at most 2048 bytes. Pure: no I/O.

use std::fmt;
use std::str::FromStr;

/// The longest SPIFFE ID, in bytes (SPIFFE-ID §2.3).
pub const MAX_ID_LEN: usize = 2048;
/// The longest trust domain name, in bytes (SPIFFE-ID §2.3: a URI host).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME_PREFIX: &str = "spiffe://";

/// Why a string is not a SPIFFE ID or trust domain. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// Nothing was given.
    #[error("empty SPIFFE ID: write spiffe://TRUST-DOMAIN/PATH")]
    Empty,
    /// The scheme is missing or not `spiffe` (exactly, lower case).
    #[error("a SPIFFE ID starts with `spiffe://` (lower case), e.g. spiffe://example.org/ns/default/sa/web")]
    WrongScheme,
    /// `spiffe://` with no trust domain after it.
    #[error("the trust domain is missing: write spiffe://TRUST-DOMAIN/...")]
    EmptyTrustDomain,
    /// A character outside `[a-z0-9._-]` in the trust domain.
    #[error("trust domain character {0:?} is not allowed: use lower-case letters, digits, '.', '-' and '_'")]
    TrustDomainChar(char),
    /// `host:port` in the authority.
    #[error("a trust domain has no port: remove the ':PORT'")]
    Port,
    /// `user@host` in the authority.
    #[error("a trust domain has no user info: remove the 'USER@'")]
    UserInfo,
    /// The trust domain is longer than 255 bytes.
    #[error("the trust domain is {0} bytes long; at most 255 are allowed")]
    TrustDomainTooLong(usize),
    /// `?...` after the path.
    #[error("a SPIFFE ID has no query: remove the '?...'")]
    Query,
    /// `#...` after the path.
    #[error("a SPIFFE ID has no fragment: remove the '#...'")]
    Fragment,
    /// `//` in the path.
    #[error("the path has an empty segment ('//'): remove it")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("the path has a '.' or '..' segment, which is not allowed")]
    DotSegment,
    /// A character outside `[a-zA-Z0-9._-]` in the path (including `%`).
    #[error("path character {0:?} is not allowed: use letters, digits, '.', '-' and '_' (no percent-encoding)")]
    PathChar(char),
    /// The path ends with `/`.
    #[error("the path ends with '/': remove the trailing slash")]
    TrailingSlash,
    /// The whole ID is longer than 2048 bytes.
    #[error("the SPIFFE ID is {0} bytes long; at most 2048 are allowed")]
    TooLong(usize),
}

/// A SPIFFE trust domain, e.g. `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or a trust domain's own ID
    /// (`spiffe://example.org`, no path).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        if name.starts_with(SCHEME_PREFIX) {
            let id = SpiffeId::new(name)?;
            return if id.path().is_empty() {
                Ok(id.trust_domain)
            } else {
                Err(SpiffeIdError::PathChar('/'))
            };
        }
        if name.contains("://") {
            return Err(SpiffeIdError::WrongScheme);
        }
        validate_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own ID, `spiffe://TD` (the URI SAN of its CA).
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            trust_domain: self.clone(),
            path: String::new(),
        }
    }

    /// The Kubernetes-style workload ID `spiffe://TD/ns/NAMESPACE/sa/NAME`.
    pub fn service(&self, namespace: &str, name: &str) -> Result<SpiffeId, SpiffeIdError> {
        for segment in [namespace, name] {
            if segment.contains('/') {
                return Err(SpiffeIdError::PathChar('/'));
            }
        }
        let path = format!("/ns/{namespace}/sa/{name}");
        validate_path(&path)?;
        SpiffeId::assemble(self.clone(), path)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A SPIFFE ID: `spiffe://TRUST-DOMAIN[/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Empty, or starting with `/`.
    path: String,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn new(id: &str) -> Result<Self, SpiffeIdError> {
        if id.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if id.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong(id.len()));
        }
        let rest = id
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(SpiffeIdError::WrongScheme)?;
        // Query and fragment first: they may contain '/' themselves.
        if rest.contains('#') {
            return Err(SpiffeIdError::Fragment);
        }
        if rest.contains('?') {
            return Err(SpiffeIdError::Query);
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        validate_trust_domain(authority)?;
        validate_path(path)?;
        Ok(Self {
            trust_domain: TrustDomain(authority.to_owned()),
            path: path.to_owned(),
        })
    }

    fn assemble(trust_domain: TrustDomain, path: String) -> Result<Self, SpiffeIdError> {
        let len = SCHEME_PREFIX.len() + trust_domain.0.len() + path.len();
        if len > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong(len));
        }
        Ok(Self { trust_domain, path })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether this ID belongs to `trust_domain`.
    pub fn is_member_of(&self, trust_domain: &TrustDomain) -> bool {
        &self.trust_domain == trust_domain
    }

    /// `NS` of the `/ns/NS/sa/NAME` form, if the path has that form.
    pub fn namespace(&self) -> Option<&str> {
        self.ns_sa().map(|(ns, _)| ns)
    }

    /// `NAME` of the `/ns/NS/sa/NAME` form, if the path has that form.
    pub fn service_account(&self) -> Option<&str> {
        self.ns_sa().map(|(_, sa)| sa)
    }

    fn ns_sa(&self) -> Option<(&str, &str)> {
        let mut segments = self.path.strip_prefix('/')?.split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME_PREFIX}{}{}", self.trust_domain, self.path)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn validate_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if name.contains('@') {
        return Err(SpiffeIdError::UserInfo);
    }
    if name.contains(':') {
        return Err(SpiffeIdError::Port);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(SpiffeIdError::TrustDomainChar(c));
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong(name.len()));
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(segments) = path.strip_prefix('/') else {
        return Err(SpiffeIdError::PathChar(path.chars().next().unwrap_or('/')));
    };
    if segments.is_empty() || path.ends_with('/') {
        return Err(SpiffeIdError::TrailingSlash);
    }
    for segment in segments.split('/') {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(SpiffeIdError::PathChar(c));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use SpiffeIdError as E;

    #[test]
    fn valid_ids() {
        for (id, td, path) in [
            ("spiffe://example.org", "example.org", ""),
            (
                "spiffe://example.org/ns/default/sa/web",
                "example.org",
                "/ns/default/sa/web",
            ),
            ("spiffe://a_b-c.9/x", "a_b-c.9", "/x"),
            (
                "spiffe://example.org/Upper/Case.Ok-_",
                "example.org",
                "/Upper/Case.Ok-_",
            ),
            ("spiffe://example.org/...", "example.org", "/..."),
            (
                "spiffe://td/9eebccd2-12bf-40a6-b262-65fe0487d453",
                "td",
                "/9eebccd2-12bf-40a6-b262-65fe0487d453",
            ),
        ] {
            let parsed = SpiffeId::new(id).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(parsed.trust_domain().as_str(), td, "{id}");
            assert_eq!(parsed.path(), path, "{id}");
            assert_eq!(parsed.to_string(), id, "{id} round-trips");
        }
    }

    #[test]
    fn invalid_ids() {
        let long_path = format!("spiffe://example.org/{}", "a".repeat(MAX_ID_LEN));
        let long_td = format!("spiffe://{}", "a".repeat(256));
        for (id, expected) in [
            ("", E::Empty),
            ("example.org/ns/a", E::WrongScheme),
            ("SPIFFE://example.org", E::WrongScheme),
            ("https://example.org/x", E::WrongScheme),
            ("spiffe:/example.org", E::WrongScheme),
            ("spiffe://", E::EmptyTrustDomain),
            ("spiffe:///path", E::EmptyTrustDomain),
            ("spiffe://Example.org", E::TrustDomainChar('E')),
            ("spiffe://exa mple.org", E::TrustDomainChar(' ')),
            ("spiffe://example.org:8443/x", E::Port),
            ("spiffe://user@example.org/x", E::UserInfo),
            ("spiffe://example.org/x?a=b", E::Query),
            ("spiffe://example.org/x#frag", E::Fragment),
            ("spiffe://example.org/", E::TrailingSlash),
            ("spiffe://example.org/x/", E::TrailingSlash),
            ("spiffe://example.org//x", E::EmptySegment),
            ("spiffe://example.org/a/./b", E::DotSegment),
            ("spiffe://example.org/a/..", E::DotSegment),
            ("spiffe://example.org/a%2Fb", E::PathChar('%')),
            ("spiffe://example.org/a b", E::PathChar(' ')),
            ("spiffe://example.org/caf\u{e9}", E::PathChar('\u{e9}')),
            (long_path.as_str(), E::TooLong(long_path.len())),
            (long_td.as_str(), E::TrustDomainTooLong(256)),
        ] {
            assert_eq!(SpiffeId::new(id), Err(expected), "{id:?}");
        }
    }

    #[test]
    fn the_longest_id_is_accepted() {
        let prefix = "spiffe://example.org/";
        let id = format!("{prefix}{}", "a".repeat(MAX_ID_LEN - prefix.len()));
        assert_eq!(id.len(), MAX_ID_LEN);
        assert!(SpiffeId::new(&id).is_ok());
    }

    #[test]
    fn namespace_and_service_account() {
        for (id, ns, sa) in [
            (
                "spiffe://example.org/ns/default/sa/web",
                Some("default"),
                Some("web"),
            ),
            ("spiffe://example.org/ns/default/sa", None, None),
            ("spiffe://example.org/ns/default/sa/web/extra", None, None),
            ("spiffe://example.org/sa/web/ns/default", None, None),
            ("spiffe://example.org", None, None),
        ] {
            let id = SpiffeId::new(id).unwrap();
            assert_eq!((id.namespace(), id.service_account()), (ns, sa), "{id}");
        }
    }

    #[test]
    fn trust_domains() {
        assert_eq!(
            TrustDomain::new("example.org").unwrap().as_str(),
            "example.org"
        );
        assert_eq!(
            TrustDomain::new("spiffe://example.org").unwrap().as_str(),
            "example.org"
        );
        for (name, expected) in [
            ("", E::EmptyTrustDomain),
            ("Example.org", E::TrustDomainChar('E')),
            ("example.org:443", E::Port),
            ("https://example.org", E::WrongScheme),
            ("spiffe://example.org/path", E::PathChar('/')),
            ("example.org/path", E::TrustDomainChar('/')),
        ] {
            assert_eq!(TrustDomain::new(name), Err(expected), "{name:?}");
        }
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(td.id().to_string(), "spiffe://example.org");
        let web = td.service("default", "web").unwrap();
        assert_eq!(web.to_string(), "spiffe://example.org/ns/default/sa/web");
        assert!(web.is_member_of(&td));
        assert!(!web.is_member_of(&TrustDomain::new("other.org").unwrap()));
        assert_eq!(td.service("default", "a/b"), Err(E::PathChar('/')));
        assert_eq!(td.service("default", ""), Err(E::TrailingSlash));
        assert!(td.service("de fault", "web").is_err());
    }
}
