//! The hand-written `Check` reader (`src/ext_authz/decode.rs`) against prost's
//! decoding of the same bytes with `envoy-types`' generated `CheckRequest`, on
//! generated requests (every field the reader reads, and the ones it skips:
//! addresses, destination, labels, context extensions, the TLS session, the
//! request time), on their concatenations (protobuf merges), truncations and
//! corruptions, and on arbitrary bytes. The relation asserted is spelled out in
//! `check_decode/oracle.rs`, which the `check_decode` fuzz target shares.

#[path = "check_decode/oracle.rs"]
mod oracle;

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, HeaderMap, HeaderValue, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request, TlsSession,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::Timestamp;
use oracle::Expected;
use portcullis::ext_authz::check_request;
use portcullis::request::AuthzRequest;
use prop::collection::{hash_map, vec};
use proptest::prelude::*;
use prost::Message;
use std::collections::HashMap;

/// Text as Envoy sends it, and any text at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9/._~%:;=, \"-]{0,16}",
        1 => any::<String>(),
    ]
}

/// Header names from a small pool, so names repeat, in either case.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-cA-C]{1,2}",
        1 => "(:path|:method|authorization|cookie|x-forwarded-client-cert)",
        1 => "[a-zA-Z0-9:_-]{0,12}",
    ]
}

fn headers() -> impl Strategy<Value = HashMap<String, String>> {
    hash_map(name(), text(), 0..8)
}

fn header_map() -> impl Strategy<Value = Option<HeaderMap>> {
    let raw_value = prop_oneof![Just(Vec::new()), vec(any::<u8>(), 0..12)];
    let header = (name(), text(), raw_value).prop_map(|(key, value, raw_value)| HeaderValue {
        key,
        value,
        raw_value,
    });
    proptest::option::of(vec(header, 0..8).prop_map(|headers| HeaderMap { headers }))
}

fn address() -> impl Strategy<Value = Option<Address>> {
    proptest::option::of(("[0-9.:a-f]{0,15}", any::<u32>(), 0..2i32).prop_map(
        |(ip, port, protocol)| Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                protocol,
                address: ip,
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        },
    ))
}

fn peer() -> impl Strategy<Value = Option<Peer>> {
    let peer = (address(), text(), headers(), text(), text()).prop_map(
        |(address, service, labels, principal, certificate)| Peer {
            address,
            service,
            labels,
            principal,
            certificate,
        },
    );
    proptest::option::of(peer)
}

fn http_request() -> impl Strategy<Value = HttpRequest> {
    let read = (
        text(),
        headers(),
        header_map(),
        text(),
        text(),
        text(),
        vec(any::<u8>(), 0..16),
    );
    let skipped = (text(), text(), text(), text(), any::<i64>(), text());
    (read, skipped).prop_map(
        |(
            (method, headers, header_map, path, host, body, raw_body),
            (id, scheme, query, fragment, size, protocol),
        )| HttpRequest {
            id,
            method,
            headers,
            header_map,
            path,
            host,
            scheme,
            query,
            fragment,
            size,
            protocol,
            body,
            raw_body,
        },
    )
}

fn check_request_message() -> impl Strategy<Value = CheckRequest> {
    let time = proptest::option::of(
        (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }),
    );
    let request = (time, proptest::option::of(http_request()))
        .prop_map(|(time, http)| Request { time, http });
    let tls_session = proptest::option::of(text().prop_map(|sni| TlsSession { sni }));
    let attributes = (
        peer(),
        peer(),
        proptest::option::of(request),
        hash_map(text(), text(), 0..3),
        tls_session,
    )
        .prop_map(
            |(source, destination, request, context_extensions, tls_session)| AttributeContext {
                source,
                destination,
                request,
                context_extensions,
                tls_session,
                ..Default::default()
            },
        );
    proptest::option::weighted(0.95, attributes).prop_map(|attributes| CheckRequest { attributes })
}

/// One change to an encoded message.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<usize>().prop_map(Edit::Remove),
    ];
    vec(edit, 1..4)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match *edit {
            Edit::Set(at, b) if len > 0 => bytes[at % len] = b,
            Edit::Insert(at, b) => bytes.insert(at % (len + 1), b),
            Edit::Remove(at) if len > 0 => {
                bytes.remove(at % len);
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    /// What Envoy sends: the reader reads exactly what prost decodes.
    #[test]
    fn requests_read_as_prost_decodes_them(message in check_request_message()) {
        let bytes = message.encode_to_vec();
        let decoded = CheckRequest::decode(bytes.as_slice()).expect("prost decodes its own encoding");
        prop_assert_eq!(&decoded, &message);
        let read = check_request(&bytes);
        prop_assert!(read.is_ok(), "the reader refuses a valid message: {:?}", read.err());
        let differences = Expected::of(&decoded).differences(&read.unwrap());
        prop_assert!(differences.is_empty(), "{}", differences.join("\n"));
        prop_assert_eq!(oracle::check(&bytes), Ok(()));
    }

    /// Two messages back to back are one, merged: last string wins, embedded
    /// messages merge, repeated fields and maps add up.
    #[test]
    fn concatenated_requests_merge_as_in_prost(
        first in check_request_message(),
        second in check_request_message(),
    ) {
        let mut bytes = first.encode_to_vec();
        bytes.extend(second.encode_to_vec());
        let mut merged = first;
        merged.merge(second.encode_to_vec().as_slice()).expect("prost merges");
        let read = check_request(&bytes);
        prop_assert!(read.is_ok(), "the reader refuses a valid message: {:?}", read.err());
        let differences = Expected::of(&merged).differences(&read.unwrap());
        prop_assert!(differences.is_empty(), "{}", differences.join("\n"));
        prop_assert_eq!(oracle::check(&bytes), Ok(()));
    }

    /// A message cut short: the reader refuses exactly when prost does (the one
    /// top-level field, `attributes`, is either whole or truncated).
    #[test]
    fn truncated_requests_fail_as_in_prost(message in check_request_message(), cut in any::<usize>()) {
        let bytes = message.encode_to_vec();
        let prefix = &bytes[..cut % (bytes.len() + 1)];
        prop_assert_eq!(
            check_request(prefix).is_ok(),
            CheckRequest::decode(prefix).is_ok(),
            "prefix {:02x?}", prefix
        );
        prop_assert_eq!(oracle::check(prefix), Ok(()));
    }

    /// A message with a few bytes changed, inserted or removed.
    #[test]
    fn corrupted_requests_keep_the_relation(message in check_request_message(), edits in edits()) {
        let bytes = apply(message.encode_to_vec(), &edits);
        prop_assert_eq!(oracle::check(&bytes), Ok(()), "bytes {:02x?}", bytes);
    }

    /// Any bytes at all: no panic, nothing invented, prost's verdict respected.
    #[test]
    fn arbitrary_bytes_keep_the_relation(bytes in vec(any::<u8>(), 0..256)) {
        prop_assert_eq!(oracle::check(&bytes), Ok(()), "bytes {:02x?}", bytes);
    }
}

/// The comparison is not vacuous: a reading that differs from the message in
/// any one field is reported.
#[test]
fn a_wrong_reading_is_noticed() {
    let message = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: "spiffe://example.org/ns/a/sa/b".into(),
                ..Default::default()
            }),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/a".into(),
                    host: "h".into(),
                    headers: [("X-A".to_owned(), "1".to_owned())].into(),
                    body: "b".into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    };
    let expected = Expected::of(&message);
    let reading = |method: &str,
                   path: &str,
                   headers: &[(&str, &str)],
                   principal: &str,
                   body: &'static [u8]| {
        AuthzRequest::builder()
            .method(method)
            .host("h")
            .path(path)
            .headers(headers.iter().copied())
            .peer(principal, "", !principal.is_empty())
            .body(body)
            .build()
    };
    let principal = "spiffe://example.org/ns/a/sa/b";
    let right = reading("GET", "/a", &[("x-a", "1")], principal, b"b");
    assert_eq!(expected.differences(&right), Vec::<String>::new());
    for wrong in [
        reading("POST", "/a", &[("x-a", "1")], principal, b"b"),
        reading("GET", "/b", &[("x-a", "1")], principal, b"b"),
        reading("GET", "/a", &[("x-a", "2")], principal, b"b"),
        reading("GET", "/a", &[], principal, b"b"),
        reading("GET", "/a", &[("x-a", "1"), ("x-b", "1")], principal, b"b"),
        reading("GET", "/a", &[("x-a", "1")], "", b"b"),
        reading("GET", "/a", &[("x-a", "1")], principal, b""),
    ] {
        assert_ne!(
            expected.differences(&wrong),
            Vec::<String>::new(),
            "{wrong:?}"
        );
    }
}

/// A field 3 inside a `headers` map entry, which the fuzzer found: prost skips
/// it (a map entry has fields 1 and 2 only), and so does the reader now.
#[test]
fn a_field_3_in_a_map_entry_is_skipped_as_prost_skips_it() {
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    for input in [
        "0a0f220d120b1a090a01611201761a0177",
        "0a0e220c120a1a080a01611201761801",
    ] {
        oracle::check(&hex(input)).unwrap_or_else(|e| panic!("{input}: {e}"));
        let request = portcullis::ext_authz::check_request(&hex(input)).unwrap();
        assert_eq!(request.header("a"), Some("v"), "{input}");
    }
}
