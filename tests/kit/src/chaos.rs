//! A chaos harness for a hostie cluster: simulated gateways whose sessions are kept in a model,
//! a discovery load that records every answer, and a checker that judges every answer against
//! the model.
//!
//! - **The model** ([`Harness`]): per token, its sessions, each with a port unique in the run
//!   (every gateway answers `getHostieGrpcPort` with its own port, so a `200` names exactly one
//!   session), the node it registered on, when its handshake started and completed, when the
//!   test sent its close, and when its end was seen (the registry's close frame, or the
//!   connection dropping).
//! - **The load** ([`Harness::start_load`]): workers that loop until stopped, each asking one
//!   node (picked at random among those not excluded) for one token (registered, or never
//!   registered) and recording a [`Sample`].
//! - **The checker** ([`Checker`]): over the samples, counts and latencies, and the verdicts:
//!   a `200` that names no session of the token alive during the request (*wrong 200*); an
//!   answer later than the deadline + 300 ms (*late*); a `404` for a token that had a session
//!   alive throughout the request and 100 ms before it, outside a declared window (*wrong
//!   404*); a `503` from a node for a token it holds a live session of (*own 503*); a `503`
//!   outside the fault and its recovery; any other status or a failed request; a session the
//!   test did not close that ended; and, when asked, `/readyz` during the fault and after, and
//!   answers that stay slow after a dead node's records are gone. Recovery (on every node, every
//!   live token answers `200` with its newest session's port, every other registered token
//!   `404`) is measured by [`Harness::await_recovery`].
//!
//! Times are `std::time::Instant`s of the test process; the table shows them in seconds since
//! the harness started.

/// The random numbers of the load, for scenarios that pick their own (churn).
pub use fastrand;

use crate::gateway::{Gateway, GatewayOptions};
use crate::node_process::http_status;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How much later than the deadline an answer may come before it counts as late.
pub const LATE_SLACK: Duration = Duration::from_millis(300);
/// How long after its close was seen a session may still be named by a `200`.
pub const CLOSE_SLACK: Duration = Duration::from_millis(50);
/// How long before a request a session must have been registered for a `404` to be wrong.
pub const REGISTER_SLACK: Duration = Duration::from_millis(100);
/// How long a client waits for an answer beyond the deadline.
pub const CLIENT_SLACK: Duration = Duration::from_secs(2);
/// The host every simulated gateway is discovered at (its client address).
pub const GATEWAY_HOST: &str = "127.0.0.1";

/// One node's addresses.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Registration and discovery.
    pub http: SocketAddr,
    /// `/readyz`.
    pub admin: SocketAddr,
}

/// One session of the model.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub port: u16,
    pub node: usize,
    /// Before the handshake started (the registry may know it from here on).
    pub opening: Instant,
    /// After the handshake completed (every node must know it 100 ms later).
    pub opened: Instant,
    /// When the test sent its close.
    pub close_sent: Option<Instant>,
    /// When its end was seen: the registry's close frame or the connection dropping.
    pub ended: Option<Instant>,
}

impl Session {
    /// Whether a `200` naming this session is right for a request over `[start, end]`.
    fn may_be_named(&self, start: Instant, end: Instant) -> bool {
        self.opening <= end && self.ended.is_none_or(|e| start <= e + CLOSE_SLACK)
    }

    /// Whether the session was live throughout `[start - REGISTER_SLACK, end]`.
    fn live_throughout(&self, start: Instant, end: Instant) -> bool {
        let closed = self.close_sent.or(self.ended);
        self.opened + REGISTER_SLACK <= start && closed.is_none_or(|c| c >= end)
    }

    /// Neither closed by the test nor seen ended.
    pub fn is_live(&self) -> bool {
        self.close_sent.is_none() && self.ended.is_none()
    }
}

#[derive(Default)]
struct Model {
    sessions: Vec<Session>,
    by_port: HashMap<u16, usize>,
    by_token: HashMap<String, Vec<usize>>,
}

/// One discovery the load made.
#[derive(Debug, Clone)]
pub struct Sample {
    pub token: Arc<str>,
    pub node: usize,
    pub start: Instant,
    pub end: Instant,
    /// `None`: no HTTP answer (timeout, connection failed).
    pub status: Option<u16>,
    pub port: Option<u64>,
    pub host: Option<String>,
    /// The body, or the request's error.
    pub body: String,
    /// What the checker knew when it found this answer wrong (the sessions it had).
    pub note: String,
}

impl Sample {
    pub fn took(&self) -> Duration {
        self.end - self.start
    }
}

/// What [`Harness::start_load`] runs.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub workers: usize,
    /// Each worker's pause between two requests.
    pub pause: Duration,
    /// How often a token of [`Harness::add_never_registered`] is asked.
    pub never_share: f64,
    pub seed: u64,
}

/// A running load; [`Load::stop`] ends it and returns the samples.
pub struct Load {
    stop: CancellationToken,
    workers: Vec<JoinHandle<()>>,
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Load {
    /// Stops the workers (each finishes its request) and returns every sample.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.cancel();
        for w in self.workers {
            w.await.expect("a load worker did not panic");
        }
        std::mem::take(&mut *lock(&self.samples))
    }

    /// Samples so far.
    pub fn len(&self) -> usize {
        lock(&self.samples).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One `/readyz` probe.
#[derive(Debug, Clone, Copy)]
pub struct ReadyzSample {
    pub node: usize,
    pub at: Instant,
    /// `None`: no answer within a second.
    pub status: Option<u16>,
}

/// The cluster under test, its gateways and the model of their sessions.
pub struct Harness {
    targets: Vec<Target>,
    deadline: Duration,
    model: Mutex<Model>,
    gateways: Mutex<HashMap<u16, Arc<Gateway>>>,
    next_port: AtomicU32,
    enabled: Vec<AtomicBool>,
    in_flight: Vec<AtomicUsize>,
    readyz: Arc<Mutex<Vec<ReadyzSample>>>,
    never: Mutex<Vec<String>>,
    epoch: Instant,
    stop: CancellationToken,
    ping_every: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Harness {
    /// A harness for the nodes at `targets`, whose discovery deadline is `deadline`.
    pub fn new(targets: Vec<Target>, deadline: Duration) -> Arc<Self> {
        Arc::new(Self {
            enabled: targets.iter().map(|_| AtomicBool::new(true)).collect(),
            in_flight: targets.iter().map(|_| AtomicUsize::new(0)).collect(),
            targets,
            deadline,
            model: Mutex::default(),
            gateways: Mutex::default(),
            next_port: AtomicU32::new(10_000),
            readyz: Arc::default(),
            never: Mutex::default(),
            epoch: Instant::now(),
            stop: CancellationToken::new(),
            ping_every: Duration::from_secs(5),
        })
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    pub fn nodes(&self) -> usize {
        self.targets.len()
    }

    pub fn target(&self, node: usize) -> Target {
        self.targets[node]
    }

    /// Seconds since the harness started, for printing.
    pub fn at(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// Registers a new session of `token` on `node`, with a port no other session of the run
    /// has; returns the port. Panics when the registry refuses it.
    pub async fn open(self: &Arc<Self>, token: &str, node: usize) -> u16 {
        let port = u16::try_from(self.next_port.fetch_add(1, Ordering::SeqCst))
            .expect("fewer than 55,000 sessions per run");
        let opts = GatewayOptions::new(token, port).ping_every(self.ping_every);
        let opening = Instant::now();
        let gateway = Gateway::connect(self.targets[node].http, opts)
            .await
            .unwrap_or_else(|r| panic!("node {node} refused a registration: {r:?}"));
        let opened = Instant::now();
        {
            let mut m = lock(&self.model);
            let i = m.sessions.len();
            m.sessions.push(Session {
                token: token.to_owned(),
                port,
                node,
                opening,
                opened,
                close_sent: None,
                ended: None,
            });
            m.by_port.insert(port, i);
            m.by_token.entry(token.to_owned()).or_default().push(i);
        }
        let gateway = Arc::new(gateway);
        lock(&self.gateways).insert(port, gateway.clone());
        let (me, stop) = (Arc::downgrade(self), self.stop.clone());
        tokio::spawn(async move {
            let ended = tokio::select! {
                () = stop.cancelled() => return,
                ended = gateway.closed_within(Duration::from_secs(24 * 3600)) => ended,
            };
            if let (Some(_), Some(me)) = (ended, me.upgrade()) {
                let mut m = lock(&me.model);
                if let Some(&i) = m.by_port.get(&port) {
                    m.sessions[i].ended.get_or_insert(Instant::now());
                }
            }
        });
        port
    }

    /// Closes the session with `port` like `Io.stop()` (the close is recorded before it is
    /// sent); its end is recorded when the registry's close frame arrives.
    pub fn close(&self, port: u16) {
        {
            let mut m = lock(&self.model);
            let i = m.by_port[&port];
            m.sessions[i].close_sent.get_or_insert(Instant::now());
        }
        if let Some(gw) = lock(&self.gateways).remove(&port) {
            gw.close();
        }
    }

    /// Tokens that are never registered: the load asks them too, and
    /// [`Harness::await_settled`] expects `404` for them.
    pub fn add_never_registered(&self, tokens: &[String]) {
        lock(&self.never).extend_from_slice(tokens);
    }

    /// A copy of every session so far.
    pub fn sessions(&self) -> Vec<Session> {
        lock(&self.model).sessions.clone()
    }

    /// Tokens with a live session on `node`.
    pub fn tokens_on(&self, node: usize) -> Vec<String> {
        let m = lock(&self.model);
        let set: HashSet<&str> = m
            .sessions
            .iter()
            .filter(|s| s.node == node && s.is_live())
            .map(|s| s.token.as_str())
            .collect();
        set.into_iter().map(str::to_owned).collect()
    }

    /// Every token ever registered.
    pub fn tokens(&self) -> Vec<String> {
        lock(&self.model).by_token.keys().cloned().collect()
    }

    /// Live sessions of `token`, oldest first.
    pub fn live_sessions(&self, token: &str) -> Vec<Session> {
        let m = lock(&self.model);
        m.by_token.get(token).map_or_else(Vec::new, |ix| {
            ix.iter()
                .map(|&i| m.sessions[i].clone())
                .filter(Session::is_live)
                .collect()
        })
    }

    /// Every live session, oldest first.
    pub fn live(&self) -> Vec<Session> {
        lock(&self.model)
            .sessions
            .iter()
            .filter(|s| s.is_live())
            .cloned()
            .collect()
    }

    /// Per token with a live session, the port its newest live session answers.
    pub fn expected_ports(&self) -> Vec<(String, u16)> {
        let m = lock(&self.model);
        let mut newest: HashMap<&str, &Session> = HashMap::new();
        for s in m.sessions.iter().filter(|s| s.is_live()) {
            let e = newest.entry(&s.token).or_insert(s);
            if s.opened >= e.opened {
                *e = s;
            }
        }
        newest
            .into_iter()
            .map(|(t, s)| (t.to_owned(), s.port))
            .collect()
    }

    /// Sessions the test did not close that ended.
    pub fn unexpected_ends(&self) -> Vec<Session> {
        lock(&self.model)
            .sessions
            .iter()
            .filter(|s| s.close_sent.is_none() && s.ended.is_some())
            .cloned()
            .collect()
    }

    /// Stops sending load to `node` and waits until its requests in flight are answered (or
    /// have given up): a node about to be frozen must not hold requests that cannot finish.
    pub async fn exclude_node(&self, node: usize) {
        self.enabled[node].store(false, Ordering::SeqCst);
        let end = Instant::now() + self.deadline + CLIENT_SLACK + Duration::from_secs(1);
        while self.in_flight[node].load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < end, "requests to node {node} never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends load to `node` again.
    pub fn include_node(&self, node: usize) {
        self.enabled[node].store(true, Ordering::SeqCst);
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(self.deadline + CLIENT_SLACK)
            .build()
            .expect("an HTTP client")
    }

    /// Starts the load; it runs until [`Load::stop`].
    pub fn start_load(self: &Arc<Self>, spec: LoadSpec) -> Load {
        let stop = self.stop.child_token();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..spec.workers)
            .map(|w| {
                let (me, spec, stop, samples) =
                    (self.clone(), spec.clone(), stop.clone(), samples.clone());
                tokio::spawn(async move { me.work(w, spec, stop, samples).await })
            })
            .collect();
        Load {
            stop,
            workers,
            samples,
        }
    }

    async fn work(
        &self,
        worker: usize,
        spec: LoadSpec,
        stop: CancellationToken,
        samples: Arc<Mutex<Vec<Sample>>>,
    ) {
        let mut rng = fastrand::Rng::with_seed(spec.seed.wrapping_add(worker as u64));
        let client = self.client();
        let never: Vec<Arc<str>> = lock(&self.never)
            .iter()
            .map(|t| Arc::from(t.as_str()))
            .collect();
        let mut known: Vec<Arc<str>> = Vec::new();
        while !stop.is_cancelled() {
            if known.len() != lock(&self.model).by_token.len() {
                known = self.tokens().into_iter().map(Arc::from).collect();
            }
            let token = if known.is_empty() || (!never.is_empty() && rng.f64() < spec.never_share) {
                never[rng.usize(..never.len())].clone()
            } else {
                known[rng.usize(..known.len())].clone()
            };
            let Some(node) = self.claim_node(&mut rng) else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let sample = self.ask(&client, node, token).await;
            self.in_flight[node].fetch_sub(1, Ordering::SeqCst);
            lock(&samples).push(sample);
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(spec.pause) => {}
            }
        }
    }

    /// A random node that takes load, counted in flight before it is checked, so that
    /// [`Harness::exclude_node`] never misses a request.
    fn claim_node(&self, rng: &mut fastrand::Rng) -> Option<usize> {
        let first = rng.usize(..self.targets.len());
        (0..self.targets.len())
            .map(|k| (first + k) % self.targets.len())
            .find(|&n| {
                self.in_flight[n].fetch_add(1, Ordering::SeqCst);
                let on = self.enabled[n].load(Ordering::SeqCst);
                if !on {
                    self.in_flight[n].fetch_sub(1, Ordering::SeqCst);
                }
                on
            })
    }

    /// `GET /v0/hosties/{token}` on `node`.
    async fn ask(&self, client: &reqwest::Client, node: usize, token: Arc<str>) -> Sample {
        let url = format!("http://{}/v0/hosties/{token}", self.targets[node].http);
        let start = Instant::now();
        let result = async {
            let res = client.get(&url).send().await?;
            let status = res.status().as_u16();
            Ok::<_, reqwest::Error>((status, res.text().await?))
        }
        .await;
        let end = Instant::now();
        let (status, body) = match result {
            Ok((status, body)) => (Some(status), body),
            Err(e) => (None, error_chain(&e)),
        };
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        Sample {
            token,
            node,
            start,
            end,
            status,
            port: json["port"].as_u64(),
            host: json["host"].as_str().map(str::to_owned),
            body,
            note: String::new(),
        }
    }

    /// Waits until every token with a live session answers `200` with its newest session's
    /// port on every node, checking all of them in rounds: the end of the first round that was
    /// all right, or `None` once `within` from `from` has passed. The recovery of a fault.
    pub async fn await_recovery(&self, from: Instant, within: Duration) -> Option<Instant> {
        self.await_right(from, within, false).await
    }

    /// Like [`Harness::await_recovery`], and besides every registered token without a live
    /// session and every token never registered answers `404` on every node: the cluster
    /// answers every question right again (a node that cannot vouch for a miss answers it
    /// `503` for a while after a fault).
    pub async fn await_settled(&self, from: Instant, within: Duration) -> Option<Instant> {
        self.await_right(from, within, true).await
    }

    async fn await_right(&self, from: Instant, within: Duration, misses: bool) -> Option<Instant> {
        let client = self.client();
        loop {
            let live = self.expected_ports();
            let live_tokens: HashSet<&str> = live.iter().map(|(t, _)| t.as_str()).collect();
            let mut gone: Vec<String> = Vec::new();
            if misses {
                gone = self
                    .tokens()
                    .into_iter()
                    .filter(|t| !live_tokens.contains(t.as_str()))
                    .collect();
                gone.extend(lock(&self.never).iter().cloned());
            }
            let expected = live
                .iter()
                .map(|(t, p)| (t.as_str(), Some(*p)))
                .chain(gone.iter().map(|t| (t.as_str(), None)));
            let mut checks = Vec::new();
            for (token, port) in expected {
                for target in &self.targets {
                    let url = format!("http://{}/v0/hosties/{token}", target.http);
                    let client = &client;
                    checks.push(async move {
                        let Ok(res) = client.get(&url).send().await else {
                            return false;
                        };
                        let status = res.status().as_u16();
                        let text = res.text().await.unwrap_or_default();
                        let body: serde_json::Value =
                            serde_json::from_str(&text).unwrap_or_default();
                        match port {
                            Some(port) => {
                                status == 200 && body["port"].as_u64() == Some(u64::from(port))
                            }
                            None => status == 404,
                        }
                    });
                }
            }
            let mut all_right = true;
            let mut pending = futures_util::stream::iter(checks).buffer_unordered(16);
            while let Some(ok) = pending.next().await {
                all_right &= ok;
            }
            let now = Instant::now();
            if all_right {
                return Some(now);
            }
            if now >= from + within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Probes `/readyz` of every node every `every` until the harness is dropped.
    pub fn start_readyz_probe(self: &Arc<Self>, every: Duration) {
        for node in 0..self.targets.len() {
            let (admin, out, stop) = (
                self.targets[node].admin,
                self.readyz.clone(),
                self.stop.clone(),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let at = Instant::now();
                    let status = http_status(admin, "/readyz").await;
                    lock(&out).push(ReadyzSample { node, at, status });
                }
            });
        }
    }

    /// Every `/readyz` probe so far.
    pub fn readyz_samples(&self) -> Vec<ReadyzSample> {
        lock(&self.readyz).clone()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

/// A `404` for `tokens` answered by `nodes` during `[from, to]` that the scenario expects.
#[derive(Debug, Clone)]
struct Allow404 {
    tokens: HashSet<String>,
    nodes: Vec<usize>,
    from: Instant,
    to: Instant,
}

/// Slow answers for `tokens` from `nodes` over `[from, to]`: each (node, token) may pay one
/// deadline (requests overlapping the first slow one), the rest must be faster than `fast`.
#[derive(Debug, Clone)]
struct FastAfter {
    tokens: HashSet<String>,
    nodes: Vec<usize>,
    from: Instant,
    to: Instant,
    fast: Duration,
}

/// `/readyz` of `nodes` must be non-200 at least once during `[from, to]`.
#[derive(Debug, Clone)]
struct Unready {
    nodes: Vec<usize>,
    from: Instant,
    to: Instant,
}

/// What a scenario expects; [`Checker::judge`] turns samples into a [`Verdict`].
pub struct Checker {
    name: String,
    deadline: Duration,
    fault: Option<(Instant, Instant)>,
    recovered: Option<Instant>,
    /// `None`: not measured; `Some(None)`: never within the bound.
    settled: Option<Option<Instant>>,
    recovery_bound: Duration,
    allow_404: Vec<Allow404>,
    fast_after: Vec<FastAfter>,
    unready: Vec<Unready>,
    ready_at_end: bool,
}

impl Checker {
    pub fn new(name: &str, deadline: Duration) -> Self {
        Self {
            name: name.to_owned(),
            deadline,
            fault: None,
            recovered: None,
            settled: None,
            recovery_bound: Duration::ZERO,
            allow_404: Vec::new(),
            fast_after: Vec::new(),
            unready: Vec::new(),
            ready_at_end: false,
        }
    }

    /// The fault lasted `[from, to]`; everything must answer right within `bound` of `to`.
    pub fn fault(&mut self, from: Instant, to: Instant, bound: Duration) -> &mut Self {
        self.fault = Some((from, to));
        self.recovery_bound = bound;
        self
    }

    /// What [`Harness::await_recovery`] returned.
    pub fn recovered(&mut self, at: Option<Instant>) -> &mut Self {
        self.recovered = at;
        self
    }

    /// What [`Harness::await_settled`] returned: misses must answer `404` again within the
    /// bound too, and a `503` is expected until then.
    pub fn settled(&mut self, at: Option<Instant>) -> &mut Self {
        self.settled = Some(at);
        self
    }

    /// A `404` for one of `tokens` answered by one of `nodes` is expected when the request
    /// overlaps `[from, to]`.
    pub fn allow_404(
        &mut self,
        tokens: &[String],
        nodes: &[usize],
        from: Instant,
        to: Instant,
    ) -> &mut Self {
        self.allow_404.push(Allow404 {
            tokens: tokens.iter().cloned().collect(),
            nodes: nodes.to_vec(),
            from,
            to,
        });
        self
    }

    /// Requests for `tokens` to `nodes` starting in `[from, to]` answer within `fast`, except
    /// at most one deadline paid per (node, token): requests that started before the first
    /// slow one of theirs ended.
    pub fn fast_after(
        &mut self,
        tokens: &[String],
        nodes: &[usize],
        from: Instant,
        to: Instant,
        fast: Duration,
    ) -> &mut Self {
        self.fast_after.push(FastAfter {
            tokens: tokens.iter().cloned().collect(),
            nodes: nodes.to_vec(),
            from,
            to,
            fast,
        });
        self
    }

    /// `/readyz` of each of `nodes` is not 200 at least once during `[from, to]` (needs
    /// [`Harness::start_readyz_probe`]).
    pub fn unready_during(&mut self, nodes: &[usize], from: Instant, to: Instant) -> &mut Self {
        self.unready.push(Unready {
            nodes: nodes.to_vec(),
            from,
            to,
        });
        self
    }

    /// Every node's last `/readyz` probe answered 200.
    pub fn ready_at_end(&mut self) -> &mut Self {
        self.ready_at_end = true;
        self
    }

    /// When a `503` is expected: from the fault's start until everything answered right again
    /// (settled, else recovered), or until its bound when that never came.
    fn unavailable_until(&self) -> Option<(Instant, Instant)> {
        let (from, to) = self.fault?;
        let back = match self.settled {
            Some(settled) => settled,
            None => self.recovered,
        };
        Some((from, back.unwrap_or(to + self.recovery_bound)))
    }

    /// Judges `samples` against the sessions of `harness`.
    pub fn judge(&self, harness: &Harness, samples: &[Sample]) -> Verdict {
        let model = lock(&harness.model);
        let sessions_of = |token: &str| -> Vec<&Session> {
            model.by_token.get(token).map_or_else(Vec::new, |ix| {
                ix.iter().map(|&i| &model.sessions[i]).collect()
            })
        };
        let late_after = self.deadline + LATE_SLACK;
        let unavailable = self.unavailable_until();
        let mut v = Verdict {
            name: self.name.clone(),
            total: samples.len(),
            ..Verdict::default()
        };
        let mut latencies: Vec<Duration> = samples.iter().map(Sample::took).collect();
        latencies.sort_unstable();
        v.p50 = percentile(&latencies, 50);
        v.p99 = percentile(&latencies, 99);
        v.max = latencies.last().copied().unwrap_or_default();

        for s in samples {
            let token: &str = &s.token;
            let mine = sessions_of(token);
            let live_throughout = |node: Option<usize>| {
                mine.iter()
                    .any(|x| node.is_none_or(|n| x.node == n) && x.live_throughout(s.start, s.end))
            };
            if s.took() > late_after {
                v.late.push(s.clone());
            }
            match s.status {
                Some(200) => {
                    v.ok += 1;
                    let named = s
                        .port
                        .and_then(|p| u16::try_from(p).ok())
                        .and_then(|p| model.by_port.get(&p))
                        .map(|&i| &model.sessions[i]);
                    let right = named.is_some_and(|x| {
                        x.token == token
                            && x.may_be_named(s.start, s.end)
                            && s.host.as_deref() == Some(GATEWAY_HOST)
                    });
                    if !right {
                        let mut wrong = s.clone();
                        wrong.note = match named {
                            Some(x) => format!("names {}", describe(harness, x)),
                            None => "names no session".to_owned(),
                        };
                        v.wrong_200.push(wrong);
                    }
                }
                Some(404) => {
                    v.not_found += 1;
                    let excused = self.allow_404.iter().any(|a| {
                        a.tokens.contains(token)
                            && a.nodes.contains(&s.node)
                            && s.start <= a.to
                            && s.end >= a.from
                    });
                    if live_throughout(None) {
                        if excused {
                            v.excused_404 += 1;
                        } else {
                            let mut wrong = s.clone();
                            wrong.note = mine
                                .iter()
                                .filter(|x| x.live_throughout(s.start, s.end))
                                .map(|x| describe(harness, x))
                                .collect::<Vec<_>>()
                                .join(", ");
                            v.wrong_404.push(wrong);
                        }
                    }
                }
                Some(503) => {
                    v.unavailable += 1;
                    if live_throughout(Some(s.node)) {
                        v.own_503.push(s.clone());
                    }
                    let expected =
                        unavailable.is_some_and(|(from, to)| s.start <= to && s.end >= from);
                    if !expected {
                        v.unavailable_outside.push(s.clone());
                    }
                }
                _ => v.other.push(s.clone()),
            }
        }
        drop(model);

        for f in &self.fast_after {
            v.fast_checked.get_or_insert(0);
            let mut by_pair: HashMap<(usize, &str), Vec<&Sample>> = HashMap::new();
            for s in samples.iter().filter(|s| {
                f.nodes.contains(&s.node)
                    && f.tokens.contains(&*s.token)
                    && s.start >= f.from
                    && s.start <= f.to
            }) {
                by_pair.entry((s.node, &s.token)).or_default().push(s);
                *v.fast_checked.get_or_insert(0) += 1;
            }
            for mut pair in by_pair.into_values() {
                pair.sort_by_key(|s| s.start);
                let Some(first_slow) = pair.iter().find(|s| s.took() >= f.fast) else {
                    continue;
                };
                let paid_until = first_slow.end;
                v.slow_after.extend(
                    pair.iter()
                        .filter(|s| s.took() >= f.fast && s.start > paid_until)
                        .map(|s| (*s).clone()),
                );
            }
        }

        let readyz = harness.readyz_samples();
        for u in &self.unready {
            for &node in &u.nodes {
                let seen = readyz.iter().any(|r| {
                    r.node == node && r.at >= u.from && r.at <= u.to && r.status != Some(200)
                });
                v.readyz_checks.push((
                    format!("node {node} /readyz not 200 during the fault"),
                    seen,
                ));
            }
        }
        if self.ready_at_end {
            for node in 0..harness.nodes() {
                let last = readyz
                    .iter()
                    .filter(|r| r.node == node)
                    .max_by_key(|r| r.at);
                v.readyz_checks.push((
                    format!("node {node} /readyz 200 at the end"),
                    last.is_some_and(|r| r.status == Some(200)),
                ));
            }
        }

        v.unexpected_ends = harness.unexpected_ends();
        v.fault = self.fault.map(|(a, b)| (harness.at(a), harness.at(b)));
        v.recovered = self.recovered.map(|r| harness.at(r));
        v.recovery = self
            .fault
            .and_then(|(_, to)| self.recovered.map(|r| r.saturating_duration_since(to)));
        v.settled = self.settled.map(|s| s.map(|at| harness.at(at)));
        v.settle = self.settled.map(|s| {
            s.zip(self.fault)
                .map(|(at, (_, to))| at.saturating_duration_since(to))
        });
        v.recovery_expected = self.fault.is_some();
        v.recovery_bound = self.recovery_bound;
        v.epoch = Some(harness.epoch);
        v
    }
}

/// A session for a table: its port, node and life in seconds since the harness started.
fn describe(harness: &Harness, s: &Session) -> String {
    let end = s
        .close_sent
        .or(s.ended)
        .map_or("live".to_owned(), |e| format!("{:.3} s", harness.at(e)));
    format!(
        "port {} of token …{} on node {}, {:.3} s–{end}",
        s.port,
        &s.token[s.token.len().saturating_sub(8)..],
        s.node,
        harness.at(s.opened)
    )
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// The judgement of one scenario: counts, latencies, violations.
#[derive(Default)]
pub struct Verdict {
    pub name: String,
    pub total: usize,
    pub ok: usize,
    pub not_found: usize,
    pub unavailable: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub wrong_200: Vec<Sample>,
    pub wrong_404: Vec<Sample>,
    pub late: Vec<Sample>,
    pub own_503: Vec<Sample>,
    pub unavailable_outside: Vec<Sample>,
    pub other: Vec<Sample>,
    pub slow_after: Vec<Sample>,
    /// Requests [`Checker::fast_after`] looked at (`None`: not asked).
    pub fast_checked: Option<usize>,
    /// `404`s a declared window excused.
    pub excused_404: usize,
    pub readyz_checks: Vec<(String, bool)>,
    pub unexpected_ends: Vec<Session>,
    /// Seconds since the harness started.
    pub fault: Option<(f64, f64)>,
    pub recovered: Option<f64>,
    pub recovery: Option<Duration>,
    /// When misses answered `404` again (`None`: not measured; `Some(None)`: never).
    pub settled: Option<Option<f64>>,
    pub settle: Option<Option<Duration>>,
    pub recovery_expected: bool,
    pub recovery_bound: Duration,
    epoch: Option<Instant>,
}

/// Examples of each violation printed.
const EXAMPLES: usize = 5;

impl Verdict {
    fn secs(&self, t: Instant) -> f64 {
        self.epoch
            .map_or(0.0, |e| t.saturating_duration_since(e).as_secs_f64())
    }

    /// Each violated expectation, with its count.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let counts = [
            ("wrong 200", self.wrong_200.len()),
            ("wrong 404", self.wrong_404.len()),
            ("late", self.late.len()),
            ("own 503", self.own_503.len()),
            ("503 outside the fault", self.unavailable_outside.len()),
            ("other answers", self.other.len()),
            ("slow after the sweep", self.slow_after.len()),
            ("sessions ended unasked", self.unexpected_ends.len()),
        ];
        for (what, n) in counts {
            if n > 0 {
                f.push(format!("{what}: {n}"));
            }
        }
        if self.total == 0 {
            f.push("no request was made".to_owned());
        }
        if self.recovery_expected {
            match self.recovery {
                None => f.push(format!(
                    "never recovered within {:?} of the fault's end",
                    self.recovery_bound
                )),
                Some(r) if r > self.recovery_bound => f.push(format!(
                    "recovered in {r:?}, more than {:?}",
                    self.recovery_bound
                )),
                Some(_) => {}
            }
            match self.settle {
                Some(None) => f.push(format!(
                    "misses never answered 404 again within {:?} of the fault's end",
                    self.recovery_bound
                )),
                Some(Some(s)) if s > self.recovery_bound => f.push(format!(
                    "misses answered 404 again after {s:?}, more than {:?}",
                    self.recovery_bound
                )),
                _ => {}
            }
        }
        for (check, ok) in &self.readyz_checks {
            if !ok {
                f.push(format!("failed: {check}"));
            }
        }
        f
    }

    /// The scenario's table: counts, latencies, verdicts, timeline, and examples of every
    /// violation.
    pub fn table(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut t = String::new();
        let _ = writeln!(t, "== {} ==", self.name);
        let _ = writeln!(
            t,
            "  requests    200    404    503  other | p50 ms  p99 ms  max ms"
        );
        let _ = writeln!(
            t,
            "  {:>8} {:>6} {:>6} {:>6} {:>6} | {:>6.1} {:>7.1} {:>7.1}",
            self.total,
            self.ok,
            self.not_found,
            self.unavailable,
            self.other.len(),
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
        );
        let slow = match self.fast_checked {
            Some(n) => format!("{} of {n}", self.slow_after.len()),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            t,
            "  wrong 200: {} | wrong 404: {} (allowed: {}) | late: {} | own 503: {} | 503 outside fault: {} | slow after sweep: {} | sessions ended unasked: {}",
            self.wrong_200.len(),
            self.wrong_404.len(),
            self.excused_404,
            self.late.len(),
            self.own_503.len(),
            self.unavailable_outside.len(),
            slow,
            self.unexpected_ends.len(),
        );
        let recovery = match (self.recovery_expected, self.recovery) {
            (false, _) => "-".to_owned(),
            (true, Some(r)) => {
                format!("{:.2} s (bound {:?})", r.as_secs_f64(), self.recovery_bound)
            }
            (true, None) => format!("NONE within {:?}", self.recovery_bound),
        };
        match self.fault {
            Some((from, to)) => {
                let _ = writeln!(
                    t,
                    "  fault {from:.2}–{to:.2} s | recovered at {} | recovery: {recovery}{}",
                    self.recovered
                        .map_or("-".to_owned(), |r| format!("{r:.2} s")),
                    match self.settle {
                        None => String::new(),
                        Some(Some(s)) =>
                            format!(" | misses 404 again after {:.2} s", s.as_secs_f64()),
                        Some(None) => " | misses never 404 again".to_owned(),
                    }
                );
            }
            None => {
                let _ = writeln!(t, "  no fault");
            }
        }
        for (check, ok) in &self.readyz_checks {
            let _ = writeln!(t, "  {}: {check}", if *ok { "ok" } else { "FAILED" });
        }
        let lists = [
            ("wrong 200", &self.wrong_200),
            ("wrong 404", &self.wrong_404),
            ("late", &self.late),
            ("own 503", &self.own_503),
            ("503 outside the fault", &self.unavailable_outside),
            ("other", &self.other),
            ("slow after the sweep", &self.slow_after),
        ];
        for (what, list) in lists {
            for s in list.iter().take(EXAMPLES) {
                let _ = writeln!(
                    t,
                    "  {what}: node {} token …{} {:.3}–{:.3} s ({:.0} ms) {} {}{}",
                    s.node,
                    &s.token[s.token.len().saturating_sub(8)..],
                    self.secs(s.start),
                    self.secs(s.end),
                    ms(s.took()),
                    s.status.map_or("no answer".to_owned(), |c| c.to_string()),
                    s.body.chars().take(120).collect::<String>(),
                    if s.note.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", s.note)
                    },
                );
            }
            if list.len() > EXAMPLES {
                let _ = writeln!(t, "  {what}: … {} more", list.len() - EXAMPLES);
            }
        }
        for s in self.unexpected_ends.iter().take(EXAMPLES) {
            let _ = writeln!(
                t,
                "  ended unasked: port {} on node {} at {:.3} s",
                s.port,
                s.node,
                s.ended.map_or(0.0, |e| self.secs(e)),
            );
        }
        let failures = self.failures();
        if failures.is_empty() {
            let _ = writeln!(t, "  PASS");
        } else {
            let _ = writeln!(t, "  FAIL: {}", failures.join("; "));
        }
        t
    }

    /// Prints the table (one `println!`, so that parallel scenarios do not interleave).
    pub fn print(&self) {
        println!("{}", self.table());
    }

    /// Panics, naming each violated expectation, when there is any (print the table first:
    /// it shows examples of each).
    pub fn assert_ok(&self) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "{}: {}",
            self.name,
            failures.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(1);

    /// A harness without nodes whose model holds `sessions`: (token, port, node, opened at
    /// ms, closed at ms), times from `t0`.
    fn model(sessions: &[(&str, u16, usize, u64, Option<u64>)]) -> (Arc<Harness>, Instant) {
        let h = Harness::new(Vec::new(), D);
        let t0 = h.epoch;
        let mut m = lock(&h.model);
        for &(token, port, node, opened, closed) in sessions {
            let i = m.sessions.len();
            let at = |ms| t0 + Duration::from_millis(ms);
            m.sessions.push(Session {
                token: token.to_owned(),
                port,
                node,
                opening: at(opened),
                opened: at(opened),
                close_sent: closed.map(at),
                ended: closed.map(at),
            });
            m.by_port.insert(port, i);
            m.by_token.entry(token.to_owned()).or_default().push(i);
        }
        drop(m);
        (h, t0)
    }

    /// A sample over `[from, to]` ms.
    fn sample(t0: Instant, token: &str, node: usize, from: u64, to: u64, status: u16) -> Sample {
        Sample {
            token: Arc::from(token),
            node,
            start: t0 + Duration::from_millis(from),
            end: t0 + Duration::from_millis(to),
            status: Some(status),
            port: None,
            host: None,
            body: String::new(),
            note: String::new(),
        }
    }

    fn found(mut s: Sample, port: u64, host: &str) -> Sample {
        s.port = Some(port);
        s.host = Some(host.to_owned());
        s
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_200_must_name_a_session_of_the_token_alive_during_the_request() {
        let (h, t0) = model(&[("a", 1, 0, 0, Some(1000)), ("b", 2, 0, 0, None)]);
        let ok = |from, to, port| found(sample(t0, "a", 0, from, to, 200), port, GATEWAY_HOST);
        let samples = [
            ok(500, 510, 1),
            // Within the close's slack, and a request that began while it was alive.
            ok(1040, 1045, 1),
            ok(900, 1200, 1),
            // Wrong: closed long before, another token's session, no session, another host,
            // a token never registered.
            ok(1100, 1110, 1),
            ok(500, 510, 2),
            ok(500, 510, 9),
            found(sample(t0, "a", 0, 500, 510, 200), 1, "10.0.0.1"),
            found(sample(t0, "never", 0, 500, 510, 200), 1, GATEWAY_HOST),
        ];
        let v = Checker::new("t", D).judge(&h, &samples);
        assert_eq!(v.ok, 8);
        assert_eq!(v.wrong_200.len(), 5);
        assert!(v.wrong_200.iter().all(|s| s.start >= ms(t0, 500)));
        assert_eq!(v.failures(), ["wrong 200: 5"]);
    }

    #[test]
    fn a_404_is_wrong_only_with_a_session_live_throughout_and_outside_a_window() {
        let (h, t0) = model(&[
            ("a", 1, 0, 0, None),
            ("b", 2, 0, 1000, None),
            ("c", 3, 0, 0, Some(500)),
        ]);
        let samples = [
            sample(t0, "a", 0, 200, 210, 404),
            // Registered less than 100 ms before; closed during the request.
            sample(t0, "b", 0, 1050, 1060, 404),
            sample(t0, "c", 0, 400, 600, 404),
            // Inside the window, from the node it names; from another node.
            sample(t0, "a", 1, 2000, 2010, 404),
            sample(t0, "a", 0, 2000, 2010, 404),
            sample(t0, "never", 0, 100, 110, 404),
        ];
        let mut c = Checker::new("t", D);
        c.allow_404(&["a".to_owned()], &[1], ms(t0, 1900), ms(t0, 2500));
        let v = c.judge(&h, &samples);
        assert_eq!(v.not_found, 6);
        assert_eq!(v.excused_404, 1);
        let wrong: Vec<_> = v.wrong_404.iter().map(|s| (s.node, s.start)).collect();
        assert_eq!(wrong, [(0, ms(t0, 200)), (0, ms(t0, 2000))]);
    }

    #[test]
    fn a_503_is_expected_only_during_the_fault_and_never_for_a_nodes_own_session() {
        let (h, t0) = model(&[("a", 1, 0, 0, None)]);
        let late = found(sample(t0, "a", 1, 100, 1401, 200), 1, GATEWAY_HOST);
        let mut no_answer = sample(t0, "a", 1, 100, 200, 0);
        no_answer.status = None;
        let samples = [
            sample(t0, "a", 0, 2500, 2510, 503),
            sample(t0, "a", 1, 2500, 2510, 503),
            sample(t0, "a", 1, 3400, 3600, 503),
            sample(t0, "a", 1, 500, 510, 503),
            sample(t0, "a", 1, 4000, 4010, 503),
            found(sample(t0, "a", 1, 100, 1400, 200), 1, GATEWAY_HOST),
            late,
            no_answer,
            sample(t0, "a", 1, 100, 200, 500),
        ];
        let mut c = Checker::new("t", D);
        c.fault(ms(t0, 2000), ms(t0, 3000), Duration::from_secs(1))
            .recovered(Some(ms(t0, 3500)));
        let v = c.judge(&h, &samples);
        assert_eq!(v.unavailable, 5);
        assert_eq!(v.own_503.len(), 1);
        assert_eq!(v.own_503[0].node, 0);
        let outside: Vec<_> = v.unavailable_outside.iter().map(|s| s.start).collect();
        assert_eq!(outside, [ms(t0, 500), ms(t0, 4000)]);
        assert_eq!(v.late.len(), 1, "1.3 s is on time, 1.301 s is late");
        assert_eq!(v.other.len(), 2);
        assert_eq!(v.recovery, Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_503_for_a_miss_is_expected_until_misses_settle_and_they_must() {
        let (h, t0) = model(&[("a", 1, 0, 0, None)]);
        let samples = [sample(t0, "never", 1, 4000, 4010, 503)];
        let judge = |settled: Option<Option<u64>>| {
            let mut c = Checker::new("t", D);
            c.fault(ms(t0, 2000), ms(t0, 3000), Duration::from_secs(2))
                .recovered(Some(ms(t0, 3500)));
            if let Some(settled) = settled {
                c.settled(settled.map(|s| ms(t0, s)));
            }
            c.judge(&h, &samples).failures()
        };
        assert_eq!(judge(None), ["503 outside the fault: 1"]);
        assert!(judge(Some(Some(4100))).is_empty());
        assert_eq!(
            judge(Some(Some(5100))),
            ["misses answered 404 again after 2.1s, more than 2s"]
        );
        assert_eq!(judge(Some(None)).len(), 1, "{:?}", judge(Some(None)));
    }

    #[test]
    fn after_the_sweep_each_node_pays_one_deadline_per_token_at_most() {
        let (h, t0) = model(&[("a", 1, 2, 0, None)]);
        let samples = [
            sample(t0, "a", 0, 1100, 2100, 503),
            sample(t0, "a", 0, 1500, 2500, 503),
            sample(t0, "a", 0, 2200, 2210, 404),
            sample(t0, "a", 0, 2300, 2700, 503),
            // Another node, outside the window.
            sample(t0, "a", 1, 1100, 2100, 503),
            sample(t0, "a", 0, 3100, 4100, 503),
        ];
        let mut c = Checker::new("t", D);
        c.fast_after(&["a".to_owned()], &[0], ms(t0, 1000), ms(t0, 3000), D / 4);
        let v = c.judge(&h, &samples);
        assert_eq!(v.fast_checked, Some(4));
        let slow: Vec<_> = v.slow_after.iter().map(|s| s.start).collect();
        assert_eq!(slow, [ms(t0, 2300)]);
    }

    #[test]
    fn no_recovery_a_slow_one_or_a_session_ending_unasked_fails() {
        let (h, t0) = model(&[("a", 1, 0, 0, None)]);
        let samples = [found(sample(t0, "a", 0, 10, 20, 200), 1, GATEWAY_HOST)];
        let judge = |recovered: Option<u64>| {
            let mut c = Checker::new("t", D);
            c.fault(ms(t0, 0), ms(t0, 1000), Duration::from_secs(2))
                .recovered(recovered.map(|r| ms(t0, r)));
            c.judge(&h, &samples).failures()
        };
        assert!(judge(Some(2900)).is_empty());
        assert_eq!(judge(Some(3100)).len(), 1);
        assert_eq!(judge(None).len(), 1);
        lock(&h.model).sessions[0].ended = Some(ms(t0, 500));
        assert_eq!(judge(Some(2900)), ["sessions ended unasked: 1"]);
        assert_eq!(
            Checker::new("t", D).judge(&h, &[]).failures(),
            ["sessions ended unasked: 1", "no request was made"]
        );
    }
}
