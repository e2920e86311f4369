//! What the hand-written `Check` reader (`portcullis::ext_authz::check_request`)
//! must say about a byte string, judged against prost's decoding of the same bytes
//! with `envoy-types`' generated `CheckRequest`. Shared by the property test
//! (`tests/check_decode_prop.rs`) and the fuzz target (`fuzz/fuzz_targets/
//! check_decode.rs`), which include this file by path.
//!
//! The relation, exactly:
//!
//! 1. prost accepts ⇒ the reader accepts and reads the same method, host, path,
//!    headers, source principal and certificate, TLS flag and body. One
//!    exception, about input Envoy never sends: a group (wire type 3), which
//!    prost skips and the reader refuses (`WireError::Group`).
//! 2. Whatever the bytes, when the reader accepts, it invents nothing: every
//!    string it returns is made of pieces of the input (a header name lower-cased,
//!    invalid UTF-8 replaced by U+FFFD, `header_map` values joined with `,`), and
//!    the body is a slice of the input.
//!
//! prost rejecting does not make the reader reject: by design the reader does not
//! look inside the fields it skips (destination, metadata, context extensions,
//! the TLS session's contents), reads strings lossily instead of refusing
//! invalid UTF-8, and (like protobuf's own C++ parser for unknown fields) is
//! lenient with field number 0, keys past 32 bits and a tenth varint byte above 1.
//! What it then returns is still bound by 2.

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use portcullis::ext_authz::{check_request, WireError};
use portcullis::request::AuthzRequest;
use prost::Message;
use std::collections::BTreeMap;

/// What the reader must return for a message prost decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub method: String,
    pub host: String,
    pub path: String,
    pub principal: String,
    pub certificate: String,
    pub tls: bool,
    pub body: Vec<u8>,
    /// Lower-cased name → the values the header may have: one, unless the
    /// `headers` map held the name in several spellings (`A` and `a`), where
    /// prost's `HashMap` keeps no order to tell which one came last.
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Expected {
    /// What the reader must read from the message `request`.
    pub fn of(request: &CheckRequest) -> Self {
        let attributes = request.attributes.clone().unwrap_or_default();
        let source = attributes.source.unwrap_or_default();
        let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
        let raw_headers = http.header_map.map(|m| m.headers).unwrap_or_default();
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if raw_headers.is_empty() {
            for (name, value) in http.headers {
                headers
                    .entry(name.to_ascii_lowercase())
                    .or_default()
                    .push(value);
            }
        } else {
            // `header_map` lists a repeated header once per value; the reader
            // joins them with `,`, as HTTP does.
            for header in raw_headers {
                let value = if header.raw_value.is_empty() {
                    header.value
                } else {
                    String::from_utf8_lossy(&header.raw_value).into_owned()
                };
                let values = headers.entry(header.key.to_ascii_lowercase()).or_default();
                match values.first_mut() {
                    Some(joined) => {
                        joined.push(',');
                        joined.push_str(&value);
                    }
                    None => values.push(value),
                }
            }
        }
        let body = if http.raw_body.is_empty() {
            http.body.into_bytes()
        } else {
            http.raw_body
        };
        Self {
            tls: attributes.tls_session.is_some()
                || !source.principal.is_empty()
                || !source.certificate.is_empty(),
            method: http.method,
            host: http.host,
            path: http.path,
            principal: source.principal,
            certificate: source.certificate,
            body,
            headers,
        }
    }

    /// Where `request` differs from what was expected, if anywhere.
    pub fn differences(&self, request: &AuthzRequest) -> Vec<String> {
        let mut out = Vec::new();
        let mut same = |field: &str, want: &dyn std::fmt::Debug, got: &dyn std::fmt::Debug| {
            let (want, got) = (format!("{want:?}"), format!("{got:?}"));
            if want != got {
                out.push(format!("{field}: prost {want}, reader {got}"));
            }
        };
        let source = request.source();
        same("method", &self.method, &request.method());
        same("host", &self.host, &request.host());
        same("path", &self.path, &request.path());
        same("principal", &self.principal, &source.principal);
        same("certificate", &self.certificate, &source.certificate);
        same("tls", &self.tls, &source.tls);
        same("body", &self.body, &request.body());
        let got: BTreeMap<&str, &str> = request.headers().iter().collect();
        let names = |m: Vec<&str>| m.join(" ");
        same(
            "header names",
            &names(self.headers.keys().map(String::as_str).collect()),
            &names(got.keys().copied().collect()),
        );
        for (name, values) in &self.headers {
            match got.get(name.as_str()) {
                Some(value) if values.iter().any(|v| v == value) => {}
                got => out.push(format!("header {name:?}: prost {values:?}, reader {got:?}")),
            }
        }
        out
    }
}

/// Checks the relation of the module docs on one byte string; `Err` says how it
/// is broken. Never panics, whatever the reader does short of panicking itself.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    let read = check_request(bytes);
    if let Ok(request) = &read {
        invents_nothing(bytes, request)?;
    }
    let Ok(decoded) = CheckRequest::decode(bytes) else {
        return Ok(());
    };
    let request = match read {
        Ok(request) => request,
        Err(WireError::Group(..)) => return Ok(()),
        Err(e) => return Err(format!("prost accepts, the reader refuses: {e}")),
    };
    let expected = Expected::of(&decoded);
    let differences = expected.differences(&request);
    if differences.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the reader differs from prost: {}",
        differences.join("; ")
    ))
}

/// Relation 2: every string of `request` is made of pieces of `input`.
fn invents_nothing(input: &[u8], request: &AuthzRequest) -> Result<(), String> {
    let lowered = input.to_ascii_lowercase();
    let source = request.source();
    let mut strings: Vec<(&str, &str, &[u8])> = vec![
        ("method", request.method(), input),
        ("host", request.host(), input),
        ("path", request.path(), input),
        ("principal", source.principal, input),
        ("certificate", source.certificate, input),
    ];
    for name in request.header_names() {
        strings.push(("header name", name, &lowered));
    }
    for (_, value) in request.headers().iter() {
        strings.push(("header value", value, input));
    }
    for (field, text, haystack) in strings {
        let mut pieces = text.split(['\u{fffd}', ',']);
        if let Some(piece) = pieces.find(|p| !contains(haystack, p.as_bytes())) {
            return Err(format!(
                "the reader invented {field} {text:?}: {piece:?} is not in the input"
            ));
        }
    }
    if !contains(input, request.body()) {
        return Err("the reader invented a body".into());
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
