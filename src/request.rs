//! The request model: what an adapter (ext_authz gRPC, HTTP `/check`) extracts from
//! its wire type, and all the rest of portcullis reads. No wire types past here.
//!
//! Strings are [`Text`]: UTF-8 checked once, and shared with the buffer the
//! request arrived in rather than copied out of it (SPEC §11: no per-request
//! allocation of header maps).

use bytes::Bytes;

/// An immutable UTF-8 string that may share the buffer it was decoded from.
pub type Text = bytestring::ByteString;

/// One request to decide on, independent of how it arrived.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthzRequest {
    /// `:method`, e.g. `GET`.
    pub method: Text,
    /// `:authority` / `Host`.
    pub host: Text,
    /// The raw `:path`, query included, exactly as the client sent it.
    pub path: Text,
    /// Request headers, names lower-cased; repeated headers joined with `,`.
    pub headers: Headers,
    /// The hop that sent the request to Envoy, as Envoy authenticated it.
    pub source: Source,
    /// The request body, when Envoy sends it (`with_request_body`, on webhook
    /// routes); empty otherwise.
    pub body: Bytes,
}

/// Request headers by lower-case name. A list, not a hash map: a request has a
/// few dozen headers, and a scan of them is cheaper than hashing. Should a name
/// appear twice, the last value counts (as in a protobuf map); every occurrence
/// is seen by [`Headers::names`], so stripping misses none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(Vec<(Text, Text)>);

impl Headers {
    /// An empty list with room for `n` headers.
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// The value of header `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| **k == *name)
            .map(|(_, v)| &**v)
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<Text>, value: impl Into<Text>) {
        let (name, value) = (name.into(), value.into());
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Appends a header the caller knows to be new (an adapter filling the list
    /// from a map that has each name once).
    pub fn push(&mut self, name: Text, value: Text) {
        self.0.push((name, value));
    }

    /// The value of `name` for appending to, if present.
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Text> {
        self.0
            .iter_mut()
            .rev()
            .find(|(k, _)| **k == *name)
            .map(|(_, v)| v)
    }

    /// Every header name, as sent (a repeated name more than once).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| &**k)
    }

    /// Every header, with the value that counts for each name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| !self.0[i + 1..].iter().any(|(later, _)| later == k))
            .map(|(_, (k, v))| (&**k, &**v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<Text>, V: Into<Text>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut headers = Headers::default();
        for (k, v) in iter {
            headers.insert(k, v);
        }
        headers
    }
}

impl<K: Into<Text>, V: Into<Text>, const N: usize> From<[(K, V); N]> for Headers {
    fn from(headers: [(K, V); N]) -> Self {
        headers.into_iter().collect()
    }
}

/// A map from name to value (what CEL's `request.headers` sees).
impl serde::Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// What Envoy knows about the connection the request arrived on (east-west, SPEC
/// §4). Envoy verified the peer's certificate itself; these fields are only as
/// trustworthy as the Envoy asking, which is why portcullis re-checks the SVID
/// rules on the certificate it is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// `attributes.source.principal`: the peer's identity from its verified client
    /// certificate (the URI SAN for an SVID); empty without mTLS.
    pub principal: Text,
    /// `attributes.source.certificate`: the peer's certificate as URL-encoded PEM
    /// (ext_authz `include_peer_certificate: true`); empty when not sent.
    pub certificate: Text,
    /// Whether the hop was TLS (`tls_session` sent, or a peer identity present).
    pub tls: bool,
}

impl AuthzRequest {
    /// A header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
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
        let (_, query) = self.path.split_once('?')?;
        let query = query.split('#').next().unwrap_or(query);
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], path: &str) -> AuthzRequest {
        AuthzRequest {
            method: "GET".into(),
            host: "h".into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..AuthzRequest::default()
        }
    }

    #[test]
    fn headers_keep_the_last_value_of_a_name_and_list_every_occurrence() {
        let mut headers = Headers::default();
        headers.push("x-a".into(), "1".into());
        headers.push("x-b".into(), "2".into());
        headers.push("x-a".into(), "3".into());
        assert_eq!(headers.get("x-a"), Some("3"));
        assert_eq!(headers.get("x-c"), None);
        assert_eq!(headers.names().collect::<Vec<_>>(), ["x-a", "x-b", "x-a"]);
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            [("x-b", "2"), ("x-a", "3")]
        );
        headers.insert("x-b", "4");
        assert_eq!((headers.get("x-b"), headers.len()), (Some("4"), 3));
        let map = serde_json::to_value(&headers).expect("serializes");
        assert_eq!(map, serde_json::json!({ "x-a": "3", "x-b": "4" }));
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
