//! Measurements taken side by side in alternating slices, for the pairs whose
//! ratio BENCHMARKS.md sets a target on (null-authz against portcullis, directly and
//! through Envoy; the floor of (b) against (b)).
//!
//! On a shared VM the speed of the machine drifts over seconds: measured one after
//! the other, a pair of 5 s runs can land in a fast and a slow window and read
//! 0.66× one round, 0.97× the next. Cut into slices that alternate (A B, B A, A B,
//! ...), both sides see the same windows, and their sums compare what the two
//! servers cost rather than when each one ran.

use super::harness::{measure, Measured};
use super::load::{self, Load, LoadResult, Requests};
use super::procs::Process;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What one side sends in each slice.
pub enum Traffic<'a> {
    /// Direct gRPC `Check`s: per slice, the requests to send (one shared cycle,
    /// or a chunk of a fresh-token pool each) for at most the slice's length.
    Grpc {
        addr: SocketAddr,
        slices: Vec<Arc<Requests<Bytes>>>,
        concurrency: usize,
        expect: i32,
    },
    /// `wrk` through Envoy with fixed headers (slices of whole seconds: wrk's
    /// resolution).
    Wrk {
        listener: SocketAddr,
        path: &'a str,
        headers: Vec<String>,
        concurrency: usize,
        out: &'a Path,
        pin: Option<String>,
    },
}

/// One side of a comparison: its row's name, the processes whose CPU it reads,
/// portcullis' metrics address when it is portcullis, and its traffic.
pub struct Side<'a> {
    pub name: &'a str,
    pub watched: Vec<(&'a str, &'a Process)>,
    pub metrics: Option<SocketAddr>,
    pub traffic: Traffic<'a>,
}

impl Side<'_> {
    async fn slice(&self, i: usize, length: Duration) -> anyhow::Result<Measured> {
        measure(self.name, &self.watched, self.metrics, || async {
            match &self.traffic {
                Traffic::Grpc {
                    addr,
                    slices,
                    concurrency,
                    expect,
                } => {
                    load::grpc_check(
                        *addr,
                        Arc::clone(&slices[i % slices.len()]),
                        Load::Concurrency(*concurrency),
                        length,
                        *expect,
                    )
                    .await
                }
                Traffic::Wrk {
                    listener,
                    path,
                    headers,
                    concurrency,
                    out,
                    pin,
                } => {
                    let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
                    load::wrk(
                        *listener,
                        path,
                        &refs,
                        None,
                        *concurrency,
                        length,
                        out,
                        pin.as_deref(),
                    )
                }
            }
        })
        .await
    }
}

/// Runs `slices` slices of `length` for every side, rotating which side goes first,
/// and `between()` after each round of slices (a measurement of the harness' own,
/// in the same windows); returns one row per side summing its slices.
pub async fn run(
    sides: &[Side<'_>],
    slices: usize,
    length: Duration,
    mut between: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Measured>> {
    let mut taken: Vec<Vec<Measured>> = sides.iter().map(|_| Vec::new()).collect();
    for i in 0..slices {
        for k in 0..sides.len() {
            let s = (i + k) % sides.len();
            taken[s].push(sides[s].slice(i, length).await?);
        }
        between()?;
    }
    Ok(taken.into_iter().map(merge).collect())
}

/// One row from its slices: requests and seconds add up, CPU per request is
/// weighted by each slice's requests, and latency percentiles (load tool and
/// handler) are the median of the slices' that sent anything (a pooled percentile
/// would need every latency; the ratios do not use them).
pub fn merge(slices: Vec<Measured>) -> Measured {
    let requests: u64 = slices.iter().map(|m| m.load.requests).sum();
    let seconds: f64 = slices.iter().map(|m| m.load.seconds).sum();
    let n = requests.max(1) as f64;
    let mut cpu_us = BTreeMap::new();
    for m in &slices {
        for (who, us) in &m.cpu_us {
            *cpu_us.entry(who.clone()).or_insert(0.0) += us * m.load.requests as f64 / n;
        }
    }
    let middle = |f: &dyn Fn(&Measured) -> Option<f64>| -> Option<f64> {
        let mut v: Vec<f64> = slices
            .iter()
            .filter(|m| m.load.requests > 0)
            .filter_map(f)
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    Measured {
        name: slices.first().map_or_else(String::new, |m| m.name.clone()),
        load: LoadResult {
            requests,
            unexpected: slices.iter().map(|m| m.load.unexpected).sum(),
            seconds,
            rps: requests as f64 / seconds.max(1e-9),
            p50_us: middle(&|m| Some(m.load.p50_us)).unwrap_or(0.0),
            p99_us: middle(&|m| Some(m.load.p99_us)).unwrap_or(0.0),
        },
        cpu_us,
        handler_p50_us: middle(&|m| m.handler_p50_us),
        handler_p99_us: middle(&|m| m.handler_p99_us),
    }
}
