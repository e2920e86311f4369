//! Load generators: direct gRPC `Check` with pre-serialized requests, and HTTP/1.1
//! through Envoy at a fixed rate. Both are bounded in time *and* in count, and
//! record every latency (exact percentiles from a sorted vector; a run keeps at most
//! a few hundred thousand samples).
//!
//! Closed loop (`Load::Concurrency`): N workers, each sending its next request when
//! the previous one answered. Open loop (`Load::Rate`): requests are due on a fixed
//! schedule and a latency is measured from the *due* time, so a stall is not hidden
//! (no coordinated omission).

use bytes::{Buf as _, BufMut as _, Bytes};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// How the load is offered.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// This many requests in flight at all times.
    Concurrency(usize),
    /// This many requests per second, spread over `connections` connections.
    Rate { per_second: u32, connections: usize },
}

/// What one load run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadResult {
    pub requests: u64,
    /// Answers that were not the expected kind (e.g. a 503 where a 200 was due).
    pub unexpected: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl LoadResult {
    fn from_latencies(mut latencies: Vec<u32>, unexpected: u64, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        let pick = |q: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            f64::from(latencies[i])
        };
        let seconds = elapsed.as_secs_f64();
        LoadResult {
            requests: latencies.len() as u64,
            unexpected,
            seconds,
            rps: latencies.len() as f64 / seconds.max(1e-9),
            p50_us: pick(0.50),
            p99_us: pick(0.99),
        }
    }
}

/// Requests to send, in order; each is sent once (a pool of fresh tokens) or the
/// list is cycled (`cycle`). The run stops when the pool is used up.
pub struct Requests<T> {
    items: Vec<T>,
    cycle: bool,
    next: AtomicUsize,
}

impl<T: Clone> Requests<T> {
    pub fn cycle(items: Vec<T>) -> Arc<Self> {
        Arc::new(Self {
            items,
            cycle: true,
            next: AtomicUsize::new(0),
        })
    }

    pub fn once(items: Vec<T>) -> Arc<Self> {
        Arc::new(Self {
            items,
            cycle: false,
            next: AtomicUsize::new(0),
        })
    }

    fn take(&self) -> Option<T> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if self.cycle {
            Some(self.items[i % self.items.len()].clone())
        } else {
            self.items.get(i).cloned()
        }
    }
}

/// A gRPC codec that sends bytes as they are (the request was serialized before the
/// run) and hands back the response bytes undecoded.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The `status.code` of a serialized `CheckResponse` (google.rpc.Code; 0 = OK).
pub fn check_code(response: &[u8]) -> i32 {
    use prost::Message as _;
    envoy_types::pb::envoy::service::auth::v3::CheckResponse::decode(response)
        .ok()
        .and_then(|r| r.status)
        .map_or(-1, |s| s.code)
}

/// Drives `Check` on `addr` with `requests` (serialized `CheckRequest`s) for at most
/// `duration`; `expect` is the gRPC status code every answer should carry.
pub async fn grpc_check(
    addr: SocketAddr,
    requests: Arc<Requests<Bytes>>,
    load: Load,
    duration: Duration,
    expect: i32,
) -> anyhow::Result<LoadResult> {
    // Like Envoy, a few HTTP/2 connections multiplexing many streams.
    let connections = match load {
        Load::Concurrency(n) => n.clamp(1, 2),
        Load::Rate { connections, .. } => connections,
    };
    let mut channels = Vec::new();
    for _ in 0..connections {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        channels.push(channel);
    }
    let send = move |channel: tonic::transport::Channel, body: Bytes| async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let response = grpc
            .unary(
                tonic::Request::new(body),
                http::uri::PathAndQuery::from_static(CHECK_PATH),
                RawCodec,
            )
            .await?;
        Ok::<bool, anyhow::Error>(check_code(response.get_ref()) == expect)
    };
    drive(channels, requests, load, duration, send).await
}

/// Sends `GET path` with the headers of each item of `requests` to Envoy at `addr`
/// over HTTP/1.1 keep-alive connections; `expect` is the HTTP status due.
pub async fn http_get(
    addr: SocketAddr,
    path: &'static str,
    requests: Arc<Requests<Vec<(String, String)>>>,
    load: Load,
    duration: Duration,
    expect: u16,
) -> anyhow::Result<LoadResult> {
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::rt::TokioIo;
    let connections = match load {
        Load::Concurrency(n) => n,
        Load::Rate { connections, .. } => connections,
    };
    let mut senders = Vec::new();
    for _ in 0..connections {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        senders.push(Arc::new(tokio::sync::Mutex::new(sender)));
    }
    let send = move |sender: Arc<
        tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
    >,
                     headers: Vec<(String, String)>| async move {
        let mut builder = http::Request::get(path).header("host", "api.example.com");
        for (k, v) in &headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let mut sender = sender.lock().await;
        sender.ready().await?;
        let response = sender.send_request(builder.body(Empty::new())?).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok::<bool, anyhow::Error>(status == expect)
    };
    drive(senders, requests, load, duration, send).await
}

/// Runs the load over `conns` (one per worker in closed loop, round-robin in open
/// loop) until `duration` passes or `requests` runs out.
async fn drive<C, T, F, Fut>(
    conns: Vec<C>,
    requests: Arc<Requests<T>>,
    load: Load,
    duration: Duration,
    send: F,
) -> anyhow::Result<LoadResult>
where
    C: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    F: Fn(C, T) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<bool>> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    match load {
        Load::Concurrency(n) => {
            for w in 0..n {
                let conn = conns[w % conns.len()].clone();
                let (requests, send) = (Arc::clone(&requests), send.clone());
                workers.spawn(async move {
                    let (mut latencies, mut unexpected) = (Vec::new(), 0u64);
                    while Instant::now() < deadline {
                        let Some(item) = requests.take() else { break };
                        let sent = Instant::now();
                        let ok = send(conn.clone(), item).await?;
                        latencies.push(micros(sent.elapsed()));
                        unexpected += u64::from(!ok);
                    }
                    Ok::<_, anyhow::Error>((latencies, unexpected))
                });
            }
        }
        Load::Rate {
            per_second,
            connections,
        } => {
            // One worker per connection, each with its share of the schedule.
            let interval = Duration::from_secs_f64(connections as f64 / f64::from(per_second));
            for (w, conn) in conns.into_iter().enumerate() {
                let (requests, send) = (Arc::clone(&requests), send.clone());
                let offset = interval.mul_f64(w as f64 / connections as f64);
                workers.spawn(async move {
                    let (mut latencies, mut unexpected) = (Vec::new(), 0u64);
                    let mut due = started + offset;
                    while due < deadline {
                        tokio::time::sleep_until(due.into()).await;
                        let Some(item) = requests.take() else { break };
                        let ok = send(conn.clone(), item).await?;
                        latencies.push(micros(due.elapsed()));
                        unexpected += u64::from(!ok);
                        due += interval;
                    }
                    Ok::<_, anyhow::Error>((latencies, unexpected))
                });
            }
        }
    }
    let (mut latencies, mut unexpected) = (Vec::new(), 0);
    while let Some(done) = workers.join_next().await {
        let (l, u) = done??;
        latencies.extend(l);
        unexpected += u;
    }
    Ok(LoadResult::from_latencies(
        latencies,
        unexpected,
        started.elapsed(),
    ))
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// `wrk` against Envoy: fixed connections and duration, one thread. With
/// `tokens_file`, each request carries the next token of the file and wrk stops when
/// the file is used up (fresh tokens, never a cache hit).
#[allow(clippy::too_many_arguments)]
pub fn wrk(
    addr: SocketAddr,
    path: &str,
    headers: &[&str],
    tokens_file: Option<&std::path::Path>,
    connections: usize,
    duration: Duration,
    dir: &std::path::Path,
    pin: Option<&str>,
) -> anyhow::Result<LoadResult> {
    let script = dir.join("bench.lua");
    let lua = match tokens_file {
        Some(file) => format!(
            r#"local tokens = {{}}
for line in io.lines("{file}") do tokens[#tokens + 1] = line end
local i = 0
local h = nil
request = function()
  if h == nil then
    h = {{}}
    for k, v in pairs(wrk.headers) do h[k] = v end
  end
  i = i + 1
  if i > #tokens then wrk.thread:stop() ; i = #tokens end
  h["Authorization"] = "Bearer " .. tokens[i]
  return wrk.format("GET", "{path}", h)
end
"#,
            file = file.display()
        ),
        None => String::new(),
    };
    let mut command = match pin {
        Some(cpus) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", cpus, "wrk"]);
            c
        }
        None => std::process::Command::new("wrk"),
    };
    command.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{}s", duration.as_secs_f64().ceil().max(1.0) as u64),
        "--latency",
        "-H",
        "Host: api.example.com",
    ]);
    for h in headers {
        command.args(["-H", h]);
    }
    if tokens_file.is_some() {
        std::fs::write(&script, lua)?;
        command.arg("-s").arg(&script);
    }
    command.arg(format!("http://{addr}{path}"));
    let output = command.output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    parse_wrk(&text)
}

/// Requests, duration, non-2xx and the 50%/99% latencies of `wrk --latency`.
fn parse_wrk(text: &str) -> anyhow::Result<LoadResult> {
    let mut result = LoadResult::default();
    let unit = |v: &str| -> f64 {
        let (num, mult) = if let Some(n) = v.strip_suffix("us") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix("ms") {
            (n, 1e3)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1e6)
        } else {
            (v, 1.0)
        };
        num.parse::<f64>().unwrap_or(0.0) * mult
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => result.p50_us = unit(v),
            ["99%", v] => result.p99_us = unit(v),
            [n, "requests", "in", secs, ..] => {
                result.requests = n.parse()?;
                result.seconds = unit(secs.trim_end_matches(',')) / 1e6;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => result.unexpected = n.parse()?,
            _ => {}
        }
    }
    anyhow::ensure!(result.requests > 0, "wrk made no request:\n{text}");
    result.rps = result.requests as f64 / result.seconds.max(1e-9);
    Ok(result)
}
