//! Envoy's `envoy.service.auth.v3.CheckRequest`, read off the wire straight into
//! the request model.
//!
//! Why not `envoy-types`' generated `CheckRequest`: it decodes every string into a
//! `String` of its own and the headers into a `HashMap` hashed with SipHash — on
//! a Check with twenty headers, more work than all of portcullis' decision
//! (`BENCHMARKS.md`). This reader walks the message once, copies the strings
//! portcullis reads into the request's one buffer ([`RequestBuilder`]) and skips
//! everything else (destination, metadata, context extensions, the TLS session's
//! contents, ...) unread.
//!
//! The fields read, by number (`external_auth.proto`, `attribute_context.proto`,
//! `base.proto` of Envoy's API):
//!
//! ```text
//! CheckRequest      1 attributes
//! AttributeContext  1 source (Peer), 4 request (Request), 12 tls_session (presence)
//! Peer              1 address (Address), 4 principal, 5 certificate
//! Address           1 socket_address (SocketAddress)
//! SocketAddress     2 address
//! Request           2 http (HttpRequest)
//! HttpRequest       2 method, 3 headers (map<string, string>), 4 path, 5 host,
//!                   11 body, 12 raw_body, 13 header_map (HeaderMap)
//! map entry         1 key, 2 value
//! HeaderMap         1 headers (HeaderValue)
//! HeaderValue       1 key, 2 value, 3 raw_value
//! ```
//!
//! Protobuf's rules hold: fields in any order, the last of a repeated scalar
//! wins, an embedded message sent twice merges. A field portcullis reads with the
//! wrong wire type, or a truncated message, is an error: the Check fails with
//! `INVALID_ARGUMENT` (Envoy then denies, unless told to fail open).

use crate::request::{AuthzRequest, RequestBuilder};
use bytes::{Buf, Bytes};
use envoy_types::ext_authz::v3::pb::CheckResponse;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;

/// The codec of `Check`: this reader for requests, prost for responses.
#[derive(Debug, Default)]
pub struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckResponse;
    type Decode = AuthzRequest;
    type Encoder = tonic_prost::ProstEncoder<CheckResponse>;
    type Decoder = CheckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckDecoder
    }
}

/// Decodes one `CheckRequest` message.
#[derive(Debug)]
pub struct CheckDecoder;

impl Decoder for CheckDecoder {
    type Item = AuthzRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<AuthzRequest>, Status> {
        let len = src.remaining();
        let request = if src.chunk().len() >= len {
            // Read in place: tonic hands over a whole message in one buffer.
            let request = check_request(&src.chunk()[..len]);
            src.advance(len);
            request
        } else {
            check_request(&src.copy_to_bytes(len))
        };
        request
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("the CheckRequest does not parse: {e}")))
    }
}

/// Why a message does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the message ends inside a field")]
    Truncated,
    #[error("a varint runs past 10 bytes")]
    Varint,
    #[error("field {0} is a group (wire type {1}), which Envoy never sends")]
    Group(u32, u8),
    #[error("field {0} has wire type {1} where a message or string belongs")]
    NotLengthDelimited(u32, u8),
}

/// One field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    /// A length-delimited field: a string, bytes, or an embedded message.
    Bytes(&'a [u8]),
    /// A varint or fixed-width number (never read here).
    Number(u8),
}

impl<'a> Value<'a> {
    fn bytes(self, tag: u32) -> Result<&'a [u8], WireError> {
        match self {
            Value::Bytes(bytes) => Ok(bytes),
            Value::Number(wire_type) => Err(WireError::NotLengthDelimited(tag, wire_type)),
        }
    }
}

/// The fields of one message, in wire order. Stops after an error.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn of(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, byte) in self.rest.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.rest.len() < 10 {
            WireError::Truncated
        } else {
            WireError::Varint
        })
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let n = usize::try_from(n).map_err(|_| WireError::Truncated)?;
        if n > self.rest.len() {
            return Err(WireError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn field(&mut self) -> Result<(u32, Value<'a>), WireError> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).unwrap_or(u32::MAX);
        let wire_type = (key & 7) as u8;
        let value = match wire_type {
            0 => {
                self.varint()?;
                Value::Number(0)
            }
            1 => {
                self.take(8)?;
                Value::Number(1)
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Number(5)
            }
            _ => return Err(WireError::Group(tag, wire_type)),
        };
        Ok((tag, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

/// What one message's fields say, deferred before it becomes a request.
#[derive(Default)]
struct Deferred<'a> {
    tls_session: bool,
    body: &'a [u8],
    raw_body: &'a [u8],
    /// `header_map` entries (`encode_raw_headers: true`): when there are any,
    /// they are the headers.
    raw_headers: Vec<(&'a [u8], &'a [u8])>,
}

/// Reads a whole `CheckRequest`.
pub fn check_request(message: &[u8]) -> Result<AuthzRequest, WireError> {
    let mut request = RequestBuilder::with_capacity(message.len());
    let mut deferred = Deferred::default();
    for field in Fields::of(message) {
        if let (1, value) = field? {
            attribute_context(value.bytes(1)?, &mut request, &mut deferred)?;
        }
    }
    if !deferred.raw_headers.is_empty() {
        request.clear_headers();
        for (name, value) in &deferred.raw_headers {
            request.join_header_bytes(name, value);
        }
    }
    // `pack_as_bytes: true` sends `raw_body`; otherwise the body is a string.
    let body = if deferred.raw_body.is_empty() {
        deferred.body
    } else {
        deferred.raw_body
    };
    if !body.is_empty() {
        request.set_body(Bytes::copy_from_slice(body));
    }
    // `tls_session` is sent only with `include_tls_session`; a peer identity or
    // certificate also means the hop was TLS.
    let tls = deferred.tls_session || request.has_peer();
    request.set_tls(tls);
    Ok(request.build())
}

fn attribute_context<'a>(
    message: &'a [u8],
    request: &mut RequestBuilder,
    deferred: &mut Deferred<'a>,
) -> Result<(), WireError> {
    for field in Fields::of(message) {
        match field? {
            (1, value) => {
                for field in Fields::of(value.bytes(1)?) {
                    match field? {
                        (1, value) => socket_address(value.bytes(1)?, request)?,
                        (4, value) => request.set_principal_bytes(value.bytes(4)?),
                        (5, value) => request.set_certificate_bytes(value.bytes(5)?),
                        _ => {}
                    }
                }
            }
            (4, value) => {
                for field in Fields::of(value.bytes(4)?) {
                    if let (2, value) = field? {
                        http_request(value.bytes(2)?, request, deferred)?;
                    }
                }
            }
            (12, _) => deferred.tls_session = true,
            _ => {}
        }
    }
    Ok(())
}

/// `Peer.address`: the IP of `Address.socket_address` (a pipe address has none).
fn socket_address(message: &[u8], request: &mut RequestBuilder) -> Result<(), WireError> {
    for field in Fields::of(message) {
        if let (1, value) = field? {
            for field in Fields::of(value.bytes(1)?) {
                if let (2, value) = field? {
                    request.set_address_bytes(value.bytes(2)?);
                }
            }
        }
    }
    Ok(())
}

fn http_request<'a>(
    message: &'a [u8],
    request: &mut RequestBuilder,
    deferred: &mut Deferred<'a>,
) -> Result<(), WireError> {
    for field in Fields::of(message) {
        match field? {
            (2, value) => request.set_method_bytes(value.bytes(2)?),
            (3, value) => {
                let (name, value) = key_value(value.bytes(3)?, false)?;
                request.push_header_bytes(name, value);
            }
            (4, value) => request.set_path_bytes(value.bytes(4)?),
            (5, value) => request.set_host_bytes(value.bytes(5)?),
            (11, value) => deferred.body = value.bytes(11)?,
            (12, value) => deferred.raw_body = value.bytes(12)?,
            (13, value) => {
                for field in Fields::of(value.bytes(13)?) {
                    if let (1, value) = field? {
                        deferred.raw_headers.push(key_value(value.bytes(1)?, true)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A map entry's key (field 1) and value (field 2), or, with `raw`, a
/// `HeaderValue`'s key and `raw_value` (field 3) when set, else its `value`. A
/// map entry has no field 3: it is skipped, as prost skips it. Empty when absent.
fn key_value(message: &[u8], raw: bool) -> Result<(&[u8], &[u8]), WireError> {
    let (mut key, mut value, mut raw_value): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    for field in Fields::of(message) {
        match field? {
            (1, v) => key = v.bytes(1)?,
            (2, v) => value = v.bytes(2)?,
            (3, v) if raw => raw_value = v.bytes(3)?,
            _ => {}
        }
    }
    Ok((
        key,
        if raw_value.is_empty() {
            value
        } else {
            raw_value
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_bounds() {
        let mut f = Fields::of(&[0xac, 0x02, 0x01]);
        assert_eq!(f.varint(), Ok(300));
        assert_eq!(f.varint(), Ok(1));
        assert_eq!(Fields::of(&[0x80]).varint(), Err(WireError::Truncated));
        assert_eq!(Fields::of(&[0xff; 11]).varint(), Err(WireError::Varint));
        // A length past the end of the message.
        assert_eq!(
            Fields::of(&[0x0a, 0x05, b'a']).next(),
            Some(Err(WireError::Truncated))
        );
        // A group, and a message where a string belongs.
        assert_eq!(check_request(&[0x0b]).err(), Some(WireError::Group(1, 3)));
        assert_eq!(
            check_request(&[0x08, 0x01]).err(),
            Some(WireError::NotLengthDelimited(1, 0))
        );
        // Numbers of fields not read are skipped.
        let skipped = [0x10, 0x01, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x25, 0, 0, 0, 0];
        assert!(check_request(&skipped).is_ok());
    }
}
