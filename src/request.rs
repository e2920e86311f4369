//! The request model: what an adapter (ext_authz gRPC, HTTP `/check`) extracts from
//! its wire type, and all the rest of portcullis reads. No wire types past here.
//!
//! Every string of a request lives in one buffer, back to back, and the model
//! keeps where each one lies: building a request is one allocation and a copy of
//! each string, checked for UTF-8 once (BENCHMARKS.md: no per-request allocation of
//! header maps, no `String` per header value).

use bytes::Bytes;

/// One request to decide on, independent of how it arrived. Built with
/// [`AuthzRequest::builder`].
#[derive(Clone, Default)]
pub struct AuthzRequest {
    /// Every string below, back to back.
    text: String,
    method: Span,
    host: Span,
    path: Span,
    /// `(name, value)`, names lower-cased.
    headers: Vec<(Span, Span)>,
    principal: Span,
    certificate: Span,
    /// The client's IP address as text: Envoy's `attributes.source.address`, or
    /// what the HTTP mode believes (docs/gateways.md: `server.trusted_proxies`).
    address: Span,
    tls: bool,
    body: Bytes,
}

/// Where one string lies in [`AuthzRequest::text`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// What Envoy knows about the connection the request arrived on (east-west,
/// docs/security.md). Envoy verified the peer's certificate itself; these fields are only as
/// trustworthy as the Envoy asking, which is why portcullis re-checks the SVID
/// rules on the certificate it is shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Source<'a> {
    /// `attributes.source.principal`: the peer's identity from its verified client
    /// certificate (the URI SAN for an SVID); empty without mTLS.
    pub principal: &'a str,
    /// `attributes.source.certificate`: the peer's certificate as URL-encoded PEM
    /// (ext_authz `include_peer_certificate: true`); empty when not sent.
    pub certificate: &'a str,
    /// Whether the hop was TLS (`tls_session` sent, or a peer identity present).
    pub tls: bool,
}

impl AuthzRequest {
    /// Starts a request.
    pub fn builder() -> RequestBuilder {
        RequestBuilder::with_capacity(0)
    }

    fn str(&self, span: Span) -> &str {
        // Spans are made by the builder at char boundaries of `text`; an
        // impossible one reads as empty rather than panicking.
        self.text
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }

    /// `:method`, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.str(self.method)
    }

    /// `:authority` / `Host`.
    pub fn host(&self) -> &str {
        self.str(self.host)
    }

    /// The raw `:path`, query included, exactly as the client sent it.
    pub fn path(&self) -> &str {
        self.str(self.path)
    }

    /// The hop that sent the request to Envoy, as Envoy authenticated it.
    pub fn source(&self) -> Source<'_> {
        Source {
            principal: self.str(self.principal),
            certificate: self.str(self.certificate),
            tls: self.tls,
        }
    }

    /// The client's IP address (Envoy's `attributes.source.address`, or the
    /// HTTP mode's client address); empty when unknown. What `rate_limit`
    /// `per: ip` counts.
    pub fn client_address(&self) -> &str {
        self.str(self.address)
    }

    /// The request body, when Envoy sends it (`with_request_body`, on webhook
    /// routes); empty otherwise.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// A header by lower-case name. Should a name appear twice (repeated
    /// headers are joined with `,` before they get here), the last value counts,
    /// as in a protobuf map.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| self.str(*k) == name)
            .map(|(_, v)| self.str(*v))
    }

    /// Every header name as sent, a repeated one more than once: what stripping
    /// looks at, so it misses none.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|(k, _)| self.str(*k))
    }

    /// Every header, with the value that counts for each name.
    pub fn headers(&self) -> Headers<'_> {
        Headers(self)
    }

    /// The value of cookie `name`, from the `cookie` header(s).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")?
            .split([';', ','])
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim().trim_matches('"'))
    }

    /// The first value of query parameter `name` (not percent-decoded: tokens are
    /// base64url and need none).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        let (_, query) = self.path().split_once('?')?;
        let query = query.split('#').next().unwrap_or(query);
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

/// Two requests are equal when they say the same, however their strings lie.
impl PartialEq for AuthzRequest {
    fn eq(&self, other: &Self) -> bool {
        self.method() == other.method()
            && self.host() == other.host()
            && self.path() == other.path()
            && self.source() == other.source()
            && self.client_address() == other.client_address()
            && self.body == other.body
            && self.headers().iter().eq(other.headers().iter())
    }
}

impl std::fmt::Debug for AuthzRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values are left out: they hold credentials.
        f.debug_struct("AuthzRequest")
            .field("method", &self.method())
            .field("host", &self.host())
            .field("path", &self.path())
            .field("headers", &self.header_names().collect::<Vec<_>>())
            .field("source", &self.source())
            .field("client_address", &self.client_address())
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The headers of a request, by name: CEL's `request.headers` map.
#[derive(Clone, Copy)]
pub struct Headers<'a>(&'a AuthzRequest);

impl<'a> Headers<'a> {
    /// Every header in arrival order, with the value that counts for each name
    /// (a name repeated is listed once, at its last place).
    pub fn iter(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let request = self.0;
        let all = &request.headers;
        all.iter()
            .enumerate()
            .filter(move |(i, (k, _))| {
                let name = request.str(*k);
                !all[i + 1..]
                    .iter()
                    .any(|(later, _)| request.str(*later) == name)
            })
            .map(move |(_, (k, v))| (request.str(*k), request.str(*v)))
    }
}

impl serde::Serialize for Headers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// Builds an [`AuthzRequest`], appending each string to its one buffer.
#[derive(Default)]
pub struct RequestBuilder {
    request: AuthzRequest,
}

impl RequestBuilder {
    /// A builder whose buffer holds `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            request: AuthzRequest {
                text: String::with_capacity(capacity),
                ..AuthzRequest::default()
            },
        }
    }

    fn push(&mut self, text: &str) -> Span {
        let start = self.request.text.len();
        self.request.text.push_str(text);
        // A request is at most the gRPC message limit (4 MiB): offsets fit u32.
        Span {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(self.request.text.len()).unwrap_or(u32::MAX),
        }
    }

    /// Appends wire bytes as text: Envoy sends UTF-8 (protobuf strings are);
    /// anything else is not refused but has each bad sequence replaced by U+FFFD,
    /// so it can never equal a configured name or value by accident.
    fn push_lossy(&mut self, bytes: &[u8]) -> Span {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.push(text),
            Err(_) => self.push(&String::from_utf8_lossy(bytes)),
        }
    }

    /// A header name from the wire, lower-cased (Envoy sends lower-case names;
    /// anything else is lowered here, so stripping and lookups see it).
    fn push_name(&mut self, bytes: &[u8]) -> Span {
        let span = self.push_lossy(bytes);
        let (start, end) = (span.start as usize, span.end as usize);
        if let Some(name) = self.request.text.get_mut(start..end) {
            name.make_ascii_lowercase();
        }
        span
    }

    pub fn method(mut self, method: &str) -> Self {
        self.set_method_bytes(method.as_bytes());
        self
    }

    pub fn host(mut self, host: &str) -> Self {
        self.set_host_bytes(host.as_bytes());
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        self.set_path_bytes(path.as_bytes());
        self
    }

    /// Adds header `name` (lower-cased here).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.push_header_bytes(name.as_bytes(), value.as_bytes());
        self
    }

    /// Adds every `(name, value)` of `headers`.
    pub fn headers<K: AsRef<str>, V: AsRef<str>>(
        self,
        headers: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        headers
            .into_iter()
            .fold(self, |b, (k, v)| b.header(k.as_ref(), v.as_ref()))
    }

    /// The peer Envoy saw (`attributes.source`).
    pub fn peer(mut self, principal: &str, certificate: &str, tls: bool) -> Self {
        self.set_principal_bytes(principal.as_bytes());
        self.set_certificate_bytes(certificate.as_bytes());
        self.set_tls(tls);
        self
    }

    /// The client's IP address, as text.
    pub fn client_address(mut self, address: &str) -> Self {
        self.set_address_bytes(address.as_bytes());
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.request.body = body.into();
        self
    }

    pub fn build(self) -> AuthzRequest {
        self.request
    }
}

/// What an adapter fills in from wire bytes (the ext_authz decoder): the same
/// builder, taking bytes that may not be UTF-8.
impl RequestBuilder {
    pub(crate) fn set_method_bytes(&mut self, bytes: &[u8]) {
        self.request.method = self.push_lossy(bytes);
    }

    pub(crate) fn set_host_bytes(&mut self, bytes: &[u8]) {
        self.request.host = self.push_lossy(bytes);
    }

    pub(crate) fn set_path_bytes(&mut self, bytes: &[u8]) {
        self.request.path = self.push_lossy(bytes);
    }

    pub(crate) fn set_principal_bytes(&mut self, bytes: &[u8]) {
        self.request.principal = self.push_lossy(bytes);
    }

    pub(crate) fn set_certificate_bytes(&mut self, bytes: &[u8]) {
        self.request.certificate = self.push_lossy(bytes);
    }

    pub(crate) fn set_address_bytes(&mut self, bytes: &[u8]) {
        self.request.address = self.push_lossy(bytes);
    }

    pub(crate) fn set_tls(&mut self, tls: bool) {
        self.request.tls = tls;
    }

    pub(crate) fn set_body(&mut self, body: Bytes) {
        self.request.body = body;
    }

    /// Adds a header from the wire.
    pub(crate) fn push_header_bytes(&mut self, name: &[u8], value: &[u8]) {
        let name = self.push_name(name);
        let value = self.push_lossy(value);
        self.request.headers.push((name, value));
    }

    /// Adds a header from the wire, joining its value to an earlier header of the
    /// same name with `,` (Envoy's `header_map` lists repeated headers apart).
    /// Every adapter that sees repeated headers apart (the ext_authz decoder, the
    /// Envoy dynamic module) joins them here, so a policy, a credential or a
    /// `when` reads the same value through each.
    pub fn join_header_bytes(&mut self, name: &[u8], value: &[u8]) {
        let name = self.push_name(name);
        let value = self.push_lossy(value);
        let request = &self.request;
        let earlier = request
            .headers
            .iter()
            .position(|(k, _)| request.str(*k) == request.str(name));
        match earlier {
            None => self.request.headers.push((name, value)),
            Some(i) => {
                let joined = format!(
                    "{},{}",
                    request.str(request.headers[i].1),
                    request.str(value)
                );
                let joined = self.push(&joined);
                self.request.headers[i].1 = joined;
            }
        }
    }

    /// Drops the headers added so far (their text stays in the buffer).
    pub(crate) fn clear_headers(&mut self) {
        self.request.headers.clear();
    }

    /// Whether the request has any peer identity yet (`tls` follows from it).
    pub(crate) fn has_peer(&self) -> bool {
        self.request.principal.start != self.request.principal.end
            || self.request.certificate.start != self.request.certificate.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], path: &str) -> AuthzRequest {
        headers
            .iter()
            .fold(
                AuthzRequest::builder().method("GET").host("h").path(path),
                |b, (k, v)| b.header(k, v),
            )
            .build()
    }

    #[test]
    fn headers_keep_the_last_value_of_a_name_and_list_every_occurrence() {
        let mut b = AuthzRequest::builder();
        b.push_header_bytes(b"x-a", b"1");
        b.push_header_bytes(b"X-B", b"2");
        b.push_header_bytes(b"x-a", b"3");
        let r = b.build();
        assert_eq!(r.header("x-a"), Some("3"));
        assert_eq!(r.header("x-b"), Some("2"), "names are lower-cased");
        assert_eq!(r.header("x-c"), None);
        assert_eq!(r.header_names().collect::<Vec<_>>(), ["x-a", "x-b", "x-a"]);
        assert_eq!(
            r.headers().iter().collect::<Vec<_>>(),
            [("x-b", "2"), ("x-a", "3")]
        );
        let map = serde_json::to_value(r.headers()).expect("serializes");
        assert_eq!(map, serde_json::json!({ "x-a": "3", "x-b": "2" }));
    }

    #[test]
    fn joined_headers_and_replaced_bytes() {
        let mut b = AuthzRequest::builder();
        b.join_header_bytes(b"x-role", b"ADMIN");
        b.join_header_bytes(b"cookie", b"a=1");
        b.join_header_bytes(b"X-Role", b"USER");
        b.set_path_bytes(b"/caf\xe9");
        b.push_header_bytes(b"x-bad\xff", b"v\xff");
        let r = b.build();
        assert_eq!(r.header("x-role"), Some("ADMIN,USER"));
        assert_eq!(r.header("cookie"), Some("a=1"));
        assert_eq!(r.path(), "/caf\u{fffd}");
        assert_eq!(r.header("x-bad\u{fffd}"), Some("v\u{fffd}"));
    }

    #[test]
    fn equal_requests_compare_equal_however_built() {
        let a = request(&[("a", "1"), ("b", "2")], "/p");
        let mut b = AuthzRequest::builder().path("/p").host("h");
        b.push_header_bytes(b"a", b"1");
        b.push_header_bytes(b"b", b"2");
        let b = b.method("GET").build();
        assert_eq!(a, b);
        assert_ne!(a, request(&[("a", "1")], "/p"));
        let debug = format!("{a:?}");
        assert!(
            debug.contains("\"a\"") && !debug.contains("\"1\""),
            "{debug}"
        );
    }

    #[test]
    fn cookies_and_query() {
        let r = request(
            &[("cookie", "a=1; __session=tok.en.sig; __session_x=no")],
            "/p?x=1&access_token=abc&y",
        );
        assert_eq!(r.cookie("__session"), Some("tok.en.sig"));
        assert_eq!(r.cookie("__sess"), None);
        assert_eq!(r.query_param("access_token"), Some("abc"));
        assert_eq!(r.query_param("y"), None);
        assert_eq!(request(&[], "/p").cookie("a"), None);
    }
}
