//! Test harness: nodes started through `startup` on port 0 (alone, or as a cluster on one
//! Redis), and small utilities. Gateways are in `gateway.rs`, process nodes in `process.rs`;
//! both are re-exported here so that tests need one `use crate::helpers::*`.

use hostie::config::Config;
use hostie::node::Node;
use hostie::startup::{Application, Backends};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::gateway::{Behavior, Gateway, GatewayOptions};
pub use crate::process::{ProcessNode, discover_at};
pub use crate::redis_server::free_port;

pub fn init() {
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
pub fn test_config() -> Config {
    let mut c = Config::for_tests();
    c.discovery_deadline = Duration::from_millis(1000);
    c.drain_spread = Duration::from_millis(100);
    c.drain_grace = Duration::from_secs(3);
    c.discovery_rate = 0;
    c
}

pub struct TestNode {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub tls: Option<SocketAddr>,
    pub node: Arc<Node>,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A node built from `config` exactly as `main` builds it (Redis when `redis_url` is set).
pub async fn spawn_node(config: Config) -> TestNode {
    init();
    let app = Application::build(&config)
        .await
        .expect("test node builds on port 0");
    start(app)
}

/// Several nodes given clones of one `Backends` form an in-process cluster.
pub async fn spawn_node_on(config: Config, backends: Backends) -> TestNode {
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
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// `GET /v0/hosties/{segment}`; the segment is sent as given (already percent-encoded).
    pub async fn discover(&self, segment: &str) -> (u16, Value) {
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

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let res = self
            .client
            .get(format!("http://{}{}", self.admin, path))
            .send()
            .await
            .expect("admin request reaches the node");
        (res.status().as_u16(), res.text().await.unwrap_or_default())
    }

    /// The value of one sample line of `/metrics`, e.g. `hostie_discoveries_total{outcome="hit"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("series {series} not in /metrics"))
            .trim()
            .parse()
            .expect("a metric value is a number")
    }

    /// Sends the shutdown trigger (drain starts) without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Triggers shutdown and waits for the node to finish draining and stop.
    pub async fn stop(mut self) {
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
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
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
pub fn cluster_config(redis: &crate::redis_server::RedisServer, prefix: &str) -> Config {
    let mut c = test_config();
    c.redis_url = Some(redis.url());
    c.redis_prefix = prefix.to_owned();
    c.heartbeat_interval = Duration::from_millis(200);
    c.heartbeat_ttl = Duration::from_secs(1);
    c
}

/// `n` nodes on one Redis, sharing `prefix`.
pub async fn spawn_cluster(
    n: usize,
    redis: &crate::redis_server::RedisServer,
    prefix: &str,
) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(spawn_node(cluster_config(redis, prefix)).await);
    }
    nodes
}

/// A key prefix no other test uses.
pub fn prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A unique token per test, so that tests never see each other's registrations.
pub fn token(tag: &str) -> String {
    format!("insecure_{tag}_{}", uuid::Uuid::new_v4())
}
