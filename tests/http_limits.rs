//! The HTTP listener bounds every connection (`server.http`): a request head that
//! never completes is cut off after `header_read_timeout`, a connection that
//! sends nothing is closed after `idle_timeout`, at most `max_connections` are
//! served at once, and a body larger than the webhook route reads is refused
//! (413) before it is read whole.

use portcullis::config::Config;
use portcullis::server::Server;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn serve(http: &str) -> SocketAddr {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), "rules: []\n").unwrap();
    let text = format!(
        "server:\n  grpc_listen: 127.0.0.1:0\n  http_listen: 127.0.0.1:0\n  http: {{ {http} }}\npolicy: policy.yaml\n"
    );
    let file = dir.path().join("portcullis.yaml");
    std::fs::write(&file, text).unwrap();
    let server = Server::bind(&Config::load(&file).unwrap()).await.unwrap();
    let addr = server.http_addr();
    tokio::spawn(async move {
        let _dir = dir;
        server.run(std::future::pending()).await
    });
    addr
}

/// Reads until the server closes the connection; how long that took (or `None`
/// after `limit`), and what it sent.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, String)> {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((start.elapsed(), String::from_utf8_lossy(&received).into()))
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_cut_off() {
    let addr = serve("header_read_timeout: 1s, idle_timeout: 60s").await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    // A head without its final empty line, then nothing: a slow-loris client.
    slow.write_all(b"POST /webhooks/clerk HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (after, sent) = until_closed(&mut slow, Duration::from_secs(10))
        .await
        .expect("the connection is closed, not kept forever");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    assert!(!sent.contains("200"), "nothing was served: {sent}");

    // A complete request on a fresh connection is served as usual.
    let ok = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let addr = serve("header_read_timeout: 30s, idle_timeout: 1s").await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let (after, _) = until_closed(&mut idle, Duration::from_secs(10))
        .await
        .expect("an idle connection is closed");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn at_most_max_connections_are_served_at_once() {
    let addr = serve("max_connections: 2").await;
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    // Let the server accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let third = client.get(format!("http://{addr}/healthz")).send().await;
    assert!(third.is_err(), "a third connection waits: {third:?}");
    drop(first);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let answered = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .expect("served once a connection closed");
    assert_eq!(answered.status(), 200);
}

#[tokio::test]
async fn a_body_larger_than_the_route_reads_is_refused() {
    let addr = serve("max_connections: 16").await;
    let webhook = reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/clerk"))
        .body(vec![b'x'; 300 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 413, "webhooks stop at 256 KiB");
}
