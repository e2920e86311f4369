//! A plain HTTP/1.1 client that sends the request target byte-for-byte.
//!
//! URL libraries (reqwest's `url`) resolve `..` and `%2e%2e` before sending, which
//! would hide exactly the path tricks the proxy must withstand. This client writes
//! whatever path it is given, over a fresh connection per request.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use super::echo::Seen;

/// The `Host` every request carries unless a test sets another.
pub const DEFAULT_HOST: &str = "api.example.test";

/// A request being built; [`RequestBuilder::send`] sends it.
#[must_use]
pub struct RequestBuilder {
    addr: SocketAddr,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    /// TLS to the server (name `localhost`), when set.
    tls: Option<tokio_rustls::TlsConnector>,
    body: Vec<u8>,
}

impl RequestBuilder {
    /// A `method` request for the raw request target `path` to `addr`.
    pub fn new(addr: SocketAddr, method: Method, path: &str) -> Self {
        Self {
            addr,
            method,
            path: path.to_owned(),
            headers: vec![("host".to_owned(), DEFAULT_HOST.to_owned())],
            tls: None,
            body: Vec::new(),
        }
    }

    /// Sends the request over TLS made by `connector`, verifying the server as
    /// `localhost`.
    pub fn over_tls(mut self, connector: tokio_rustls::TlsConnector) -> Self {
        self.tls = Some(connector);
        self
    }

    /// Adds a header (or replaces `host`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if name.eq_ignore_ascii_case("host") {
            self.headers.retain(|(existing, _)| existing != "host");
        }
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends `body` (with its `content-length`).
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Sends the request and reads the whole response; panics if that fails.
    pub async fn send(self) -> Response {
        self.try_send().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends the request and reads the whole response.
    pub async fn try_send(self) -> Result<Response, String> {
        let context = format!("{} {} to {}", self.method, self.path, self.addr);
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("{context}: connect: {e}"))?;
        match self.tls.clone() {
            None => self.exchange(stream, &context).await,
            Some(connector) => {
                let name =
                    rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name");
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("{context}: TLS handshake: {e}"))?;
                self.exchange(stream, &context).await
            }
        }
    }

    async fn exchange<IO>(self, stream: IO, context: &str) -> Result<Response, String>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{context}: handshake: {e}"))?;
        tokio::spawn(connection);

        let mut request = http::Request::builder()
            .method(self.method)
            .uri(self.path.as_str());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(self.body)))
            .map_err(|e| format!("{context}: invalid request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{context}: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("{context}: reading the body: {e}"))?
            .to_bytes();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The value of header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; panics (showing the body) when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// What the echo upstream saw, when this response is the upstream's answer
    /// (`None` for answers made by Envoy or portcullis).
    pub fn upstream(&self) -> Option<Seen> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.text())
    }
}
