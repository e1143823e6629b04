//! A keep-alive HTTP/1.1 load generator: `concurrency` connections, each sending its next
//! request as soon as the previous answer is read, for a bounded time. Latencies go into an HDR
//! histogram (µs).
//!
//! The generator shares the machine's two cores with what it measures, so every microsecond it
//! spends is taken from hostie: each connection is one task that writes its request and parses
//! the answer with `httparse` in place (hyper's client needs a second task per connection and
//! cost ≈ 1.5 × as much CPU per request).

use hdrhistogram::Histogram;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 client connection.
struct Conn {
    tcp: TcpStream,
    request: Vec<u8>,
    /// Bytes read and not yet consumed (an answer arrives whole or in parts).
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Self {
            tcp,
            request: Vec::with_capacity(128),
            buf: Vec::with_capacity(4096),
        })
    }

    /// `GET path`; the answer's status once its whole body has been read. Answers must carry a
    /// `Content-Length` (hostie's do); anything else is an error, as is a closed connection.
    async fn get(&mut self, path: &str) -> io::Result<u16> {
        self.request.clear();
        self.request.extend_from_slice(b"GET ");
        self.request.extend_from_slice(path.as_bytes());
        self.request
            .extend_from_slice(b" HTTP/1.1\r\nHost: bench\r\n\r\n");
        self.tcp.write_all(&self.request).await?;
        loop {
            if let Some((status, len)) = parse(&self.buf)? {
                self.buf.drain(..len);
                return Ok(status);
            }
            if self.tcp.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// A complete answer at the start of `buf`: its status and its length (head and body).
fn parse(buf: &[u8]) -> io::Result<Option<(u16, usize)>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    let head = match res.parse(buf).map_err(|e| invalid(&e.to_string()))? {
        httparse::Status::Complete(head) => head,
        httparse::Status::Partial => return Ok(None),
    };
    let body = res
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or_else(|| invalid("answer without a Content-Length"))?;
    let status = res.code.ok_or_else(|| invalid("no status"))?;
    Ok((buf.len() >= head + body).then_some((status, head + body)))
}

pub(crate) struct LoadResult {
    pub(crate) hist: Histogram<u64>,
    pub(crate) requests: u64,
    pub(crate) elapsed: Duration,
    /// Answers by status class.
    pub(crate) ok: u64,
    pub(crate) not_found: u64,
    pub(crate) other: u64,
    /// Answers slower than `slow` (e.g. a discovery deadline).
    pub(crate) slow: u64,
    /// The `other` answers by status.
    pub(crate) others: std::collections::BTreeMap<u16, u64>,
    /// The slow answers: when each was sent and how long it took (the first [`LATE_KEPT`]).
    pub(crate) late: Vec<(Instant, Duration)>,
}

/// Slow answers kept with their times, at most (for [`LagProbe::explains`]).
const LATE_KEPT: usize = 100_000;

/// How late the load generator's own tasks run: a task on the same runtime that sleeps
/// [`LagProbe::PERIOD`] again and again and records how much later than asked it woke. An
/// answer measured late while the generator itself was stalled may have arrived in time.
pub(crate) struct LagProbe {
    samples: Arc<std::sync::Mutex<Vec<(Instant, Duration)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LagProbe {
    const PERIOD: Duration = Duration::from_millis(10);

    pub(crate) fn start() -> Self {
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                let asked = Instant::now();
                tokio::time::sleep(Self::PERIOD).await;
                let woke = Instant::now();
                let lag = woke.duration_since(asked).saturating_sub(Self::PERIOD);
                kept.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((woke, lag));
            }
        });
        Self { samples, task }
    }

    /// Stops it; its samples: when each wake-up came and how late.
    pub(crate) fn stop(self) -> Vec<(Instant, Duration)> {
        self.task.abort();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Of `late` answers (sent at, took), how many would have been within `deadline` but for
    /// the generator's own longest stall during them: a wake-up after the request was sent
    /// whose lateness began before its answer was read.
    pub(crate) fn explains(
        samples: &[(Instant, Duration)],
        late: &[(Instant, Duration)],
        deadline: Duration,
    ) -> usize {
        late.iter()
            .filter(|(sent, took)| {
                let end = *sent + *took;
                let start = samples.partition_point(|(at, _)| *at < *sent);
                let stall = samples[start..]
                    .iter()
                    // Each sleep begins after the previous wake-up: stalls begin in order.
                    .take_while(|(at, lag)| at.checked_sub(*lag).is_none_or(|s| s <= end))
                    .map(|(at, lag)| {
                        // Only the part of the stall inside the request counts.
                        let began = at.checked_sub(*lag).unwrap_or(*sent).max(*sent);
                        at.min(&end).saturating_duration_since(began)
                    })
                    .max()
                    .unwrap_or_default();
                took.saturating_sub(stall) < deadline
            })
            .count()
    }

    /// The samples' p99 and largest lag.
    pub(crate) fn summary(samples: &[(Instant, Duration)]) -> (Duration, Duration) {
        let mut lags: Vec<Duration> = samples.iter().map(|(_, l)| *l).collect();
        lags.sort_unstable();
        let p99 = lags
            .get((lags.len() * 99 / 100).min(lags.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default();
        (p99, lags.last().copied().unwrap_or_default())
    }
}

impl LoadResult {
    pub(crate) fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn quantile_us(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }
}

pub(crate) struct LoadSpec {
    pub(crate) addr: SocketAddr,
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    /// Request paths, taken round-robin (per connection, starting at its index).
    pub(crate) paths: Arc<Vec<String>>,
    pub(crate) slow: Duration,
    /// At most this many requests per connection (bounds sweeps over a token list).
    pub(crate) max_per_conn: Option<usize>,
    /// An open-ish loop: each connection sends at most one request per `pace` (its ticks
    /// spread over the connections), skipping the ticks a slow answer overran; `None` sends
    /// the next request as soon as the last is answered.
    pub(crate) pace: Option<Duration>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

pub(crate) async fn run(spec: LoadSpec) -> LoadResult {
    let deadline = Instant::now() + spec.duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..spec.concurrency {
        let paths = spec.paths.clone();
        let (addr, slow, max) = (spec.addr, spec.slow, spec.max_per_conn);
        let stride = spec.concurrency;
        let mut ticks = spec.pace.map(|pace| {
            let phase = pace.mul_f64(c as f64 / stride as f64);
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + phase, pace);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            t
        });
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let (mut ok, mut not_found, mut other, mut slowc) = (0u64, 0u64, 0u64, 0u64);
            let mut late = Vec::new();
            let mut others = std::collections::BTreeMap::<u16, u64>::new();
            let mut conn = Conn::open(addr).await.expect("load generator connects");
            let mut i = c;
            let mut sent = 0usize;
            while Instant::now() < deadline && max.is_none_or(|m| sent < m) {
                if let Some(t) = ticks.as_mut() {
                    t.tick().await;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                let path = &paths[i % paths.len()];
                // Connection c takes paths c, c + C, c + 2C, …: a sweep of
                // `len / C` requests per connection covers every path once.
                i += stride;
                let t0 = Instant::now();
                let Ok(status) = conn.get(path).await else {
                    break;
                };
                let took = t0.elapsed();
                hist.saturating_record(took.as_micros().max(1) as u64);
                match status {
                    200 => ok += 1,
                    404 => not_found += 1,
                    s => {
                        other += 1;
                        *others.entry(s).or_default() += 1;
                    }
                }
                if took >= slow {
                    slowc += 1;
                    if late.len() < LATE_KEPT {
                        late.push((t0, took));
                    }
                }
                sent += 1;
            }
            let mut r = LoadResult::empty();
            r.hist = hist;
            (r.ok, r.not_found, r.other, r.slow, r.others) = (ok, not_found, other, slowc, others);
            r.late = late;
            r
        }));
    }
    let mut total = LoadResult::empty();
    for t in tasks {
        total.merge(&t.await.expect("load task completes"));
    }
    total.elapsed = started.elapsed();
    total.requests = total.ok + total.not_found + total.other;
    total
}

impl LoadResult {
    /// Adds another run's answers (runs side by side: the longer elapsed time is kept).
    pub(crate) fn merge(&mut self, other: &LoadResult) {
        self.hist.add(&other.hist).expect("histograms share bounds");
        self.requests += other.requests;
        self.ok += other.ok;
        self.not_found += other.not_found;
        self.other += other.other;
        self.slow += other.slow;
        for (status, n) in &other.others {
            *self.others.entry(*status).or_default() += n;
        }
        let room = LATE_KEPT.saturating_sub(self.late.len());
        self.late.extend(other.late.iter().take(room));
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    pub(crate) fn empty() -> Self {
        Self {
            hist: histogram(),
            requests: 0,
            elapsed: Duration::ZERO,
            ok: 0,
            not_found: 0,
            other: 0,
            slow: 0,
            others: std::collections::BTreeMap::new(),
            late: Vec::new(),
        }
    }

    /// "503 ×12, 502 ×3" (empty when every answer was a 200 or a 404).
    pub(crate) fn others_summary(&self) -> String {
        self.others
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// [`run`] against several servers at once, each with its own paths: `concurrency`
/// connections dealt out over `targets` as evenly as they go (at least one each).
pub(crate) async fn run_spread(
    targets: &[(SocketAddr, Arc<Vec<String>>)],
    concurrency: usize,
    duration: Duration,
    slow: Duration,
) -> LoadResult {
    let n = targets.len().max(1);
    spread(targets, duration, slow, |i| {
        (
            (concurrency / n + usize::from(i < concurrency % n)).max(1),
            None,
        )
    })
    .await
}

/// [`run`] against several servers at once, each offered `rate` requests per second over
/// `per_target` connections (the same work per server whatever their number).
pub(crate) async fn run_spread_paced(
    targets: &[(SocketAddr, Arc<Vec<String>>)],
    per_target: usize,
    rate: f64,
    duration: Duration,
    slow: Duration,
) -> LoadResult {
    let pace = Duration::from_secs_f64(per_target as f64 / rate.max(1e-3));
    spread(targets, duration, slow, |_| (per_target, Some(pace))).await
}

/// One [`run`] per target side by side, target `i` with `conns(i)`'s connections and pace.
async fn spread(
    targets: &[(SocketAddr, Arc<Vec<String>>)],
    duration: Duration,
    slow: Duration,
    conns: impl Fn(usize) -> (usize, Option<Duration>),
) -> LoadResult {
    let runs = targets.iter().enumerate().map(|(i, (addr, paths))| {
        let (concurrency, pace) = conns(i);
        run(LoadSpec {
            addr: *addr,
            concurrency,
            duration,
            paths: paths.clone(),
            slow,
            max_per_conn: None,
            pace,
        })
    });
    let mut total = LoadResult::empty();
    for r in futures_util::future::join_all(runs).await {
        total.merge(&r);
    }
    total
}

/// Asks each path once over `concurrency` keep-alive connections; whether each answered 200.
pub(crate) async fn sweep(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    concurrency: usize,
) -> Vec<bool> {
    sweep_statuses(addr, paths, concurrency)
        .await
        .into_iter()
        .map(|s| s == 200)
        .collect()
}

/// Asks each path once over `concurrency` keep-alive connections; each answer's status (0: no
/// answer, the connection failed).
pub(crate) async fn sweep_statuses(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    concurrency: usize,
) -> Vec<u16> {
    let mut tasks = Vec::new();
    for c in 0..concurrency.min(paths.len().max(1)) {
        let paths = paths.clone();
        tasks.push(tokio::spawn(async move {
            let mut found = Vec::new();
            let Ok(mut conn) = Conn::open(addr).await else {
                return found;
            };
            for i in (c..paths.len()).step_by(concurrency) {
                let Ok(status) = conn.get(&paths[i]).await else {
                    break;
                };
                found.push((i, status));
            }
            found
        }));
    }
    let mut result = vec![0; paths.len()];
    for t in tasks {
        for (i, status) in t.await.expect("sweep task completes") {
            result[i] = status;
        }
    }
    result
}
