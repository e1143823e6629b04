//! Test harness: nodes started through `startup` on port 0 (alone, or as a cluster on one
//! Redis), and small utilities. Simulated gateways, node processes, `redis-server` and headless
//! Chromium come from the shared test kit (`hostie_testkit`, also used by the benchmark) and
//! are re-exported here so that tests need one `use crate::helpers::*`.

use hostie::config::Config;
use hostie::node::Node;
use hostie::startup::{Application, Backends};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) use hostie_testkit::browser::{Browser, Dom};
pub(crate) use hostie_testkit::gateway::{Behavior, Gateway, GatewayOptions};
pub(crate) use hostie_testkit::node_process::{NodeProcess, Signal};
use hostie_testkit::redis_server::RedisServer;

pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // One crypto provider for every rustls user in the test process (reqwest, tokio-rustls).
        let _ = rustls::crypto::ring::default_provider().install_default();
        if std::env::var_os("RUST_LOG").is_some() {
            hostie::telemetry::init(Some(hostie::config::LogFormat::Pretty));
        }
    });
}

/// Test defaults: loopback port 0, short timers, no rate limit.
pub(crate) fn test_config() -> Config {
    let mut c = Config::for_tests();
    c.discovery_deadline = Duration::from_millis(1000);
    c.drain_spread = Duration::from_millis(100);
    c.drain_grace = Duration::from_secs(3);
    c.discovery_rate = 0;
    // Tests see that a discovery reached its session by the gateway's request count; the
    // reuse window is tested on its own (rpc::a_hot_token_costs_its_gateway_one_request_per_reuse_window).
    c.port_reuse = Duration::ZERO;
    c
}

pub(crate) struct TestNode {
    pub(crate) http: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) tls: Option<SocketAddr>,
    pub(crate) node: Arc<Node>,
    pub(crate) client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A node built from `config` exactly as `main` builds it (Redis when `redis_url` is set).
pub(crate) async fn spawn_node(config: Config) -> TestNode {
    init();
    let app = Application::build(&config)
        .await
        .expect("test node builds on port 0");
    start(app)
}

/// Several nodes given clones of one `Backends` form an in-process cluster.
pub(crate) async fn spawn_node_on(config: Config, backends: Backends) -> TestNode {
    init();
    let app = Application::build_with(&config, backends)
        .await
        .expect("test node builds on port 0");
    start(app)
}

fn start(app: Application) -> TestNode {
    let (tx, rx) = oneshot::channel::<()>();
    let (http, admin, tls, node) = (
        app.http_addr(),
        app.admin_addr(),
        app.tls_addr(),
        app.node().clone(),
    );
    let task = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestNode {
        http,
        admin,
        tls,
        node,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        task: Some(task),
    }
}

impl TestNode {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// GET `path` with this `Accept` value (`None`: no header); status, headers and body.
    pub(crate) async fn get_as(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut req = self.client.get(self.url(path));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let res = req.send().await.unwrap();
        let (status, headers) = (res.status().as_u16(), res.headers().clone());
        (status, headers, res.text().await.unwrap())
    }

    /// `GET /v0/hosties/{segment}`; the segment is sent as given (already percent-encoded).
    pub(crate) async fn discover(&self, segment: &str) -> (u16, Value) {
        let res = self
            .client
            .get(self.url(&format!("/v0/hosties/{segment}")))
            .send()
            .await
            .expect("discovery request reaches the node");
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub(crate) async fn admin_get(&self, path: &str) -> (u16, String) {
        let res = self
            .client
            .get(format!("http://{}{}", self.admin, path))
            .send()
            .await
            .expect("admin request reaches the node");
        (res.status().as_u16(), res.text().await.unwrap_or_default())
    }

    /// The value of one sample line of `/metrics`, e.g. `hostie_discoveries_total{outcome="hit"}`.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("series {series} not in /metrics"))
            .trim()
            .parse()
            .expect("a metric value is a number")
    }

    /// Sends the shutdown trigger (drain starts) without waiting.
    pub(crate) fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Triggers shutdown and waits for the node to finish draining and stop.
    pub(crate) async fn stop(mut self) {
        self.trigger_shutdown();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("node stops within 10 s")
                .expect("node task did not panic")
                .expect("node ran without error");
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// Polls `check` every 10 ms until it is true or `within` passes.
pub(crate) async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A node configuration in cluster mode on `redis`, with a test's own key prefix and short
/// liveness timers.
pub(crate) fn cluster_config(redis: &RedisServer, prefix: &str) -> Config {
    let mut c = test_config();
    c.redis_url = Some(redis.url());
    c.redis_prefix = prefix.to_owned();
    c.heartbeat_interval = Duration::from_millis(200);
    c.heartbeat_ttl = Duration::from_secs(1);
    c
}

/// A way a Redis keeps answering reads but refuses writes, and its undoing (the kit's).
pub(crate) struct WriteRefusal {
    pub(crate) name: &'static str,
    pub(crate) refuse: fn(&RedisServer),
    pub(crate) restore: fn(&RedisServer),
}

/// A demoted primary (a replica of a primary it cannot reach: data kept, read-only), full
/// memory with nothing to evict, and a failover pause (writes, `PUBLISH` and scripts wait).
pub(crate) const WRITE_REFUSALS: [WriteRefusal; 3] = [
    WriteRefusal {
        name: "read-only replica",
        refuse: RedisServer::read_only,
        restore: RedisServer::writable,
    },
    WriteRefusal {
        name: "maxmemory, noeviction",
        refuse: fill_to_maxmemory,
        restore: RedisServer::lift_maxmemory,
    },
    WriteRefusal {
        name: "CLIENT PAUSE WRITE",
        refuse: pause_writes,
        restore: RedisServer::unpause,
    },
];

fn fill_to_maxmemory(redis: &RedisServer) {
    redis.fill_to_maxmemory();
}

fn pause_writes(redis: &RedisServer) {
    redis.pause(20_000, false);
}

/// `n` nodes on one Redis, sharing `prefix`.
pub(crate) async fn spawn_cluster(n: usize, redis: &RedisServer, prefix: &str) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(spawn_node(cluster_config(redis, prefix)).await);
    }
    nodes
}

/// A key prefix no other test uses.
pub(crate) fn prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A unique token per test, so that tests never see each other's registrations.
pub(crate) fn token(tag: &str) -> String {
    format!("insecure_{tag}_{}", uuid::Uuid::new_v4())
}

/// The real `hostie` binary as a child process (for SIGKILL, SIGTERM, exit codes and logs),
/// with JSON logs kept and one worker, ready when returned.
pub(crate) async fn spawn_process(args: &[&str]) -> NodeProcess {
    init();
    NodeProcess::command(env!("CARGO_BIN_EXE_hostie"))
        .args(["--log-format", "json", "--workers", "1"])
        .args(args)
        .capture_logs()
        .spawn()
        .await
}

/// [`spawn_process`] in cluster mode on the Redis at `url` under `prefix`, with `args`.
pub(crate) async fn spawn_cluster_process(url: &str, prefix: &str, args: &[&str]) -> NodeProcess {
    let mut all = vec!["--redis-url", url, "--redis-prefix", prefix];
    all.extend_from_slice(args);
    spawn_process(&all).await
}

/// Like [`spawn_process`], with the logs written to the file `log` as the node runs (a node
/// that logs a lot, under faults or churn, would block on a captured pipe nobody reads).
pub(crate) async fn spawn_process_logging_to(args: &[&str], log: &std::path::Path) -> NodeProcess {
    init();
    NodeProcess::command(env!("CARGO_BIN_EXE_hostie"))
        .args(["--log-format", "json", "--workers", "1"])
        .args(args)
        .log_to(log)
        .spawn()
        .await
}

/// Asserts that an error body under `/v0/hosties` carries the all-zero answer fields
/// (docs/protocol.md, "Error bodies"): clients that read only those behave as on a 404.
pub(crate) fn assert_zero_answer_fields(body: &Value, what: &str) {
    assert_eq!(
        (&body["host"], &body["ip"], &body["port"]),
        (
            &serde_json::json!("0.0.0.0"),
            &serde_json::json!("0.0.0.0"),
            &serde_json::json!(0)
        ),
        "{what}: {body}"
    );
}

/// `GET /v0/hosties/{token}` on any address; status, body and how long it took.
pub(crate) async fn discover_at(addr: SocketAddr, token: &str) -> (u16, Value, Duration) {
    let started = std::time::Instant::now();
    let res = reqwest::get(format!("http://{addr}/v0/hosties/{token}"))
        .await
        .expect("discovery request reaches the node");
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

/// What the fault suites start: `count` node processes (node `i` on `url(i)`, logging to
/// `logs/node{i}.log`) with short timers (heartbeat 200 ms, TTL 1 s, deadline 1 s, Redis
/// timeout 200 ms), sixty gateways spread over them and ten tokens never registered, the
/// harness judging them (every gateway discoverable on every node when returned, `/readyz`
/// sampled every 100 ms), and the load's seed (`HOSTIE_FAULT_SEED` repeats a run's picks,
/// not its timing).
pub(crate) async fn start_fault_cluster(
    name: &str,
    count: usize,
    url: impl Fn(usize) -> String,
    prefix: &str,
    logs: &std::path::Path,
) -> (
    Vec<NodeProcess>,
    std::sync::Arc<hostie_testkit::chaos::Harness>,
    u64,
) {
    use hostie_testkit::chaos::{Harness, Target, fastrand};
    let mut nodes = Vec::new();
    for i in 0..count {
        let (url, node_id) = (url(i), fault_node_id(prefix, i));
        let args = [
            "--redis-url",
            &url,
            "--redis-prefix",
            prefix,
            "--node-id",
            &node_id,
            "--heartbeat-interval",
            "200ms",
            "--heartbeat-ttl",
            "1s",
            "--rpc-timeout",
            "1s",
            "--redis-timeout",
            "200ms",
            "--discovery-rate",
            "0",
        ];
        let log = logs.join(format!("node{i}.log"));
        nodes.push(spawn_process_logging_to(&args, &log).await);
    }
    let targets = nodes
        .iter()
        .map(|n| Target {
            http: n.http,
            admin: n.admin,
        })
        .collect();
    let harness = Harness::new(targets, Duration::from_secs(1));
    let never: Vec<String> = (0..10).map(|i| token(&format!("never{i}"))).collect();
    harness.add_never_registered(&never);
    for g in 0..FAULT_GATEWAYS {
        harness.open(&token(&format!("g{g}")), g % count).await;
    }
    let ready = harness
        .await_settled(std::time::Instant::now(), Duration::from_secs(10))
        .await;
    assert!(
        ready.is_some(),
        "{name}: every gateway discoverable on every node before the fault"
    );
    harness.start_readyz_probe(Duration::from_millis(100));
    let seed = std::env::var("HOSTIE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    (nodes, harness, seed)
}

/// The discovery load of the fault suites: eight workers, 20 ms apart, 15 % of the asks for
/// tokens never registered.
pub(crate) fn fault_load(
    harness: &std::sync::Arc<hostie_testkit::chaos::Harness>,
    seed: u64,
) -> hostie_testkit::chaos::Load {
    harness.start_load(hostie_testkit::chaos::LoadSpec {
        workers: 8,
        pause: Duration::from_millis(20),
        never_share: 0.15,
        seed,
    })
}

/// The gateways [`start_fault_cluster`] opens.
pub(crate) const FAULT_GATEWAYS: usize = 60;

/// Node `i`'s id in [`start_fault_cluster`].
pub(crate) fn fault_node_id(prefix: &str, i: usize) -> String {
    format!("{prefix}-node{i}")
}

/// The last warnings and errors of each node's log in `logs` (`node{i}.log`), for a failed
/// fault scenario's report.
pub(crate) fn node_warnings(logs: &std::path::Path, count: usize, last: usize) -> String {
    let mut out = String::new();
    for i in 0..count {
        let log = std::fs::read_to_string(logs.join(format!("node{i}.log"))).unwrap_or_default();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
            .collect();
        out.push_str(&format!(
            "  node {i}: {} warnings; the last ones:\n",
            warnings.len()
        ));
        for l in warnings.iter().rev().take(last).rev() {
            out.push_str(&format!(
                "    {}\n",
                l.chars().take(300).collect::<String>()
            ));
        }
    }
    out
}
