//! The part of Envoy's `envoy.service.auth.v3.CheckRequest` portcullis reads, as
//! protobuf messages of its own: wire-compatible with Envoy's (same field numbers
//! and wire types), so Envoy's encoding decodes into them.
//!
//! Why not `envoy-types`' generated `CheckRequest`: it decodes every string into a
//! fresh `String` and the headers into a `HashMap` with SipHash — on a Check with
//! twenty headers, more work than all of portcullis' decision (SPEC §11,
//! `BENCHMARKS.md`). Here strings are `Bytes` slices of the buffer the message
//! arrived in (no copy), headers a list, and fields portcullis never reads
//! (destination, metadata, context extensions, the TLS session's contents, ...)
//! are skipped unread. A `map<string, string>` is, on the wire, a repeated
//! message of `key = 1` and `value = 2`: [`MapEntry`].
//!
//! Strings are checked for UTF-8 where they become the request model
//! ([`super`]), not here: a bad byte costs that value, not the whole Check.

use bytes::Bytes;

/// `envoy.service.auth.v3.CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `envoy.service.auth.v3.AttributeContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
    /// Sent only with `include_tls_session`; only its presence is read.
    #[prost(message, optional, tag = "12")]
    pub tls_session: Option<Present>,
}

/// `AttributeContext.Peer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    #[prost(bytes = "bytes", tag = "4")]
    pub principal: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub certificate: Bytes,
}

/// `AttributeContext.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(bytes = "bytes", tag = "2")]
    pub method: Bytes,
    /// `map<string, string> headers = 3`.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<MapEntry>,
    #[prost(bytes = "bytes", tag = "4")]
    pub path: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub host: Bytes,
    #[prost(bytes = "bytes", tag = "11")]
    pub body: Bytes,
    /// Sent instead of `body` with `pack_as_bytes: true`.
    #[prost(bytes = "bytes", tag = "12")]
    pub raw_body: Bytes,
    /// Sent instead of `headers` with `encode_raw_headers: true`.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// One entry of a `map<string, string>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MapEntry {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub raw_value: Bytes,
}

/// A message whose presence is all that is read; its fields are skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Present {}
