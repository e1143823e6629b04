//! A keep-alive HTTP/1.1 load generator (hyper's connection-level client): `concurrency`
//! connections, each sending its next request as soon as the previous answer is read, for a
//! bounded time. Latencies go into an HDR histogram (µs).

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

pub struct LoadResult {
    pub hist: Histogram<u64>,
    pub requests: u64,
    pub elapsed: Duration,
    /// Answers by status class.
    pub ok: u64,
    pub not_found: u64,
    pub other: u64,
    /// Answers slower than `slow` (e.g. a discovery deadline).
    pub slow: u64,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn quantile_us(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }
}

pub struct LoadSpec {
    pub addr: SocketAddr,
    pub concurrency: usize,
    pub duration: Duration,
    /// Request paths, taken round-robin (per connection, starting at its index).
    pub paths: Arc<Vec<String>>,
    pub slow: Duration,
    /// At most this many requests per connection (bounds sweeps over a token list).
    pub max_per_conn: Option<usize>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

pub async fn run(spec: LoadSpec) -> LoadResult {
    let deadline = Instant::now() + spec.duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..spec.concurrency {
        let paths = spec.paths.clone();
        let (addr, slow, max) = (spec.addr, spec.slow, spec.max_per_conn);
        let stride = spec.concurrency;
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let (mut ok, mut not_found, mut other, mut slowc) = (0u64, 0u64, 0u64, 0u64);
            let tcp = TcpStream::connect(addr)
                .await
                .expect("load generator connects");
            tcp.set_nodelay(true).expect("TCP_NODELAY");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .expect("HTTP/1.1 handshake");
            let driver = tokio::spawn(conn);
            let mut i = c;
            let mut sent = 0usize;
            while Instant::now() < deadline && max.is_none_or(|m| sent < m) {
                let path = &paths[i % paths.len()];
                // Connection c takes paths c, c + C, c + 2C, …: a sweep of
                // `len / C` requests per connection covers every path once.
                i += stride;
                let req = hyper::Request::get(path.as_str())
                    .header("host", "bench")
                    .body(Empty::<Bytes>::new())
                    .expect("a valid request");
                let t0 = Instant::now();
                let Ok(res) = sender.send_request(req).await else {
                    break;
                };
                let status = res.status().as_u16();
                let _ = res.into_body().collect().await;
                let took = t0.elapsed();
                hist.saturating_record(took.as_micros().max(1) as u64);
                match status {
                    200 => ok += 1,
                    404 => not_found += 1,
                    _ => other += 1,
                }
                if took >= slow {
                    slowc += 1;
                }
                sent += 1;
            }
            driver.abort();
            (hist, ok, not_found, other, slowc)
        }));
    }
    let mut total = LoadResult {
        hist: histogram(),
        requests: 0,
        elapsed: Duration::ZERO,
        ok: 0,
        not_found: 0,
        other: 0,
        slow: 0,
    };
    for t in tasks {
        let (hist, ok, nf, other, slow) = t.await.expect("load task completes");
        total.hist.add(&hist).expect("histograms share bounds");
        total.ok += ok;
        total.not_found += nf;
        total.other += other;
        total.slow += slow;
    }
    total.elapsed = started.elapsed();
    total.requests = total.ok + total.not_found + total.other;
    total
}

/// Asks each path once over `concurrency` keep-alive connections; whether each answered 200.
pub async fn sweep(addr: SocketAddr, paths: Arc<Vec<String>>, concurrency: usize) -> Vec<bool> {
    let mut tasks = Vec::new();
    for c in 0..concurrency.min(paths.len().max(1)) {
        let paths = paths.clone();
        tasks.push(tokio::spawn(async move {
            let mut found = Vec::new();
            let Ok(tcp) = TcpStream::connect(addr).await else {
                return found;
            };
            let _ = tcp.set_nodelay(true);
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
            else {
                return found;
            };
            let driver = tokio::spawn(conn);
            for i in (c..paths.len()).step_by(concurrency) {
                let req = hyper::Request::get(paths[i].as_str())
                    .header("host", "bench")
                    .body(Empty::<Bytes>::new())
                    .expect("a valid request");
                let Ok(res) = sender.send_request(req).await else {
                    break;
                };
                let ok = res.status() == 200;
                let _ = res.into_body().collect().await;
                found.push((i, ok));
            }
            driver.abort();
            found
        }));
    }
    let mut result = vec![false; paths.len()];
    for t in tasks {
        for (i, ok) in t.await.expect("sweep task completes") {
            result[i] = ok;
        }
    }
    result
}
