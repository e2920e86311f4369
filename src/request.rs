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
