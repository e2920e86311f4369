//! The request model: what an adapter (ext_authz gRPC, HTTP `/check`) extracts from
//! its wire type, and all the rest of portcullis reads. No wire types past here.

use std::collections::HashMap;

/// One request to decide on, independent of how it arrived.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthzRequest {
    /// `:method`, e.g. `GET`.
    pub method: String,
    /// `:authority` / `Host`.
    pub host: String,
    /// The raw `:path`, query included, exactly as the client sent it.
    pub path: String,
    /// Request headers, names lower-cased; repeated headers joined with `,`.
    pub headers: HashMap<String, String>,
    /// The hop that sent the request to Envoy, as Envoy authenticated it.
    pub source: Source,
    /// The request body, when Envoy sends it (`with_request_body`, on webhook
    /// routes); empty otherwise.
    pub body: Vec<u8>,
}

/// What Envoy knows about the connection the request arrived on (east-west, SPEC
/// §4). Envoy verified the peer's certificate itself; these fields are only as
/// trustworthy as the Envoy asking, which is why portcullis re-checks the SVID
/// rules on the certificate it is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// `attributes.source.principal`: the peer's identity from its verified client
    /// certificate (the URI SAN for an SVID); empty without mTLS.
    pub principal: String,
    /// `attributes.source.certificate`: the peer's certificate as URL-encoded PEM
    /// (ext_authz `include_peer_certificate: true`); empty when not sent.
    pub certificate: String,
    /// Whether the hop was TLS (`tls_session` sent, or a peer identity present).
    pub tls: bool,
}

impl AuthzRequest {
    /// A header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
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
