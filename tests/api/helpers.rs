//! Test harness: nodes started through `startup` on port 0, and gateways that speak exactly
//! like the real wechaty `Io` client (captured handshake of protocol.md §2.1).

use futures_util::{SinkExt, StreamExt};
use hostie::config::Config;
use hostie::node::Node;
use hostie::startup::{Application, Backends};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use crate::redis_server::free_port;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

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
    c.rpc_timeout = Duration::from_millis(1000);
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

/// How a simulated gateway answers `getHostieGrpcPort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Like the real `Io` with a service port.
    Port(u16),
    /// Answers after a delay.
    PortAfter(u16, Duration),
    /// Echoes the id as a string.
    PortStringId(u16),
    /// `result: null` (what a real client answers to an unknown method).
    Null,
    /// A JSON-RPC error object.
    ErrorObject,
    /// Never answers (wechaty started with `ioToken`, or an old client).
    Silent,
    /// First a reply with an id the registry never sent, then the right one.
    UnknownIdThen(u16),
}

pub struct GatewayOptions {
    pub token: Option<String>,
    pub subprotocol: Option<String>,
    pub path: String,
    pub behavior: Behavior,
    pub ping_every: Option<Duration>,
    pub extra_headers: Vec<(String, String)>,
}

impl GatewayOptions {
    /// A current wechaty `Io` client with service port `port`.
    pub fn new(token: &str, port: u16) -> Self {
        Self {
            token: Some(token.to_owned()),
            subprotocol: Some(format!("io|0.0.1|fake-wechaty-id||{port}")),
            path: "/v0/websocket".into(),
            behavior: Behavior::Port(port),
            ping_every: None,
            extra_headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.extra_headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn subprotocol(mut self, s: &str) -> Self {
        self.subprotocol = Some(s.to_owned());
        self
    }

    pub fn behavior(mut self, b: Behavior) -> Self {
        self.behavior = b;
        self
    }

    pub fn path(mut self, p: &str) -> Self {
        self.path = p.to_owned();
        self
    }

    pub fn no_token(mut self) -> Self {
        self.token = None;
        self
    }

    pub fn ping_every(mut self, d: Duration) -> Self {
        self.ping_every = Some(d);
        self
    }
}

/// A refused upgrade: status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

pub struct Gateway {
    /// `getHostieGrpcPort` requests received.
    pub requests: Arc<AtomicUsize>,
    /// The `name` of every text frame the registry sent.
    pub names: Arc<Mutex<Vec<String>>>,
    /// The subprotocol the registry echoed.
    pub echoed: Option<String>,
    /// `Some(code)` once the connection ended (`None` code: no close frame).
    closed: watch::Receiver<Option<Option<u16>>>,
    out: mpsc::UnboundedSender<Message>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    pub async fn connect(addr: SocketAddr, opts: GatewayOptions) -> Result<Gateway, Refused> {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect to node");
        Self::connect_over(tcp, addr, opts).await
    }

    pub async fn connect_over<S>(
        stream: S,
        addr: SocketAddr,
        opts: GatewayOptions,
    ) -> Result<Gateway, Refused>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The captured upgrade request of wechaty@1.20.2, header for header.
        let mut req = tungstenite::http::Request::builder()
            .method("GET")
            .uri(format!("ws://{addr}{}", opts.path));
        if let Some(token) = &opts.token {
            req = req.header("Authorization", format!("Token {token}"));
        }
        req = req
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", generate_key())
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header(
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits",
            );
        if let Some(sub) = &opts.subprotocol {
            req = req.header("Sec-WebSocket-Protocol", sub);
        }
        for (k, v) in &opts.extra_headers {
            req = req.header(k, v);
        }
        let req = req
            .header("Host", addr.to_string())
            .body(())
            .expect("a valid request");
        let (ws, response) = match tokio_tungstenite::client_async(req, stream).await {
            Ok(ok) => ok,
            Err(tungstenite::Error::Http(res)) => {
                let status = res.status().as_u16();
                let body =
                    String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned();
                return Err(Refused { status, body });
            }
            Err(e) => panic!("websocket handshake failed: {e}"),
        };
        let echoed = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (closed_tx, closed) = watch::channel(None);
        let requests = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(Mutex::new(Vec::new()));

        // Like the real client: a `sys` frame first on every connect.
        let _ = out.send(Message::text(
            json!({"name":"sys","payload":"Wechaty version 1.20.2 with CUID: test"}).to_string(),
        ));
        let writer = tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let reply_out = out.clone();
        let (req_count, seen) = (requests.clone(), names.clone());
        let behavior = opts.behavior;
        let reader = tokio::spawn(async move {
            let mut code = None;
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Text(text) => {
                        let v: Value = serde_json::from_str(&text).expect("registry sends JSON");
                        let name = v["name"].as_str().unwrap_or_default().to_owned();
                        seen.lock().unwrap().push(name.clone());
                        if name == "jsonrpc" && v["payload"]["method"] == "getHostieGrpcPort" {
                            req_count.fetch_add(1, Ordering::SeqCst);
                            answer(&reply_out, behavior, v["payload"]["id"].clone());
                        }
                    }
                    Message::Binary(_) => panic!("the registry must never send binary frames"),
                    Message::Close(frame) => {
                        code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                        break;
                    }
                    _ => {}
                }
            }
            let _ = closed_tx.send(Some(code));
        });
        let mut tasks = vec![writer, reader];
        if let Some(every) = opts.ping_every {
            let ping_out = out.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if ping_out.send(Message::Ping(Vec::new().into())).is_err() {
                        break;
                    }
                }
            }));
        }
        Ok(Gateway {
            requests,
            names,
            echoed,
            closed,
            out,
            tasks,
        })
    }

    pub fn send_text(&self, text: impl Into<String>) {
        let _ = self.out.send(Message::text(text.into()));
    }

    pub fn send(&self, msg: Message) {
        let _ = self.out.send(msg);
    }

    /// Closes like `Io.stop()`: a close frame without a code.
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }

    /// Closes with a normal close frame.
    pub fn close_normal(&self) {
        let _ = self.out.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })));
    }

    /// Waits until the registry ends the connection; `Some(code)` of its close frame.
    pub async fn closed_within(&self, within: Duration) -> Option<Option<u16>> {
        let mut rx = self.closed.clone();
        tokio::time::timeout(within, rx.wait_for(|c| c.is_some()))
            .await
            .ok()
            .and_then(|r| r.ok().map(|c| c.expect("waited for Some")))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn answer(out: &mpsc::UnboundedSender<Message>, behavior: Behavior, id: Value) {
    let reply =
        |payload: Value| Message::text(json!({"name":"jsonrpc","payload":payload}).to_string());
    match behavior {
        Behavior::Port(p) => {
            let _ = out.send(reply(json!({"id":id,"jsonrpc":"2.0","result":p})));
        }
        Behavior::PortAfter(p, delay) => {
            let out = out.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = out.send(reply(json!({"id":id,"jsonrpc":"2.0","result":p})));
            });
        }
        Behavior::PortStringId(p) => {
            let id = id.as_i64().expect("registry ids are integers").to_string();
            let _ = out.send(reply(json!({"id":id,"jsonrpc":"2.0","result":p})));
        }
        Behavior::Null => {
            let _ = out.send(reply(json!({"id":id,"jsonrpc":"2.0","result":null})));
        }
        Behavior::ErrorObject => {
            let _ = out.send(reply(json!({
                "error":{"code":-32601,"message":"Method not found"},"id":id,"jsonrpc":"2.0"
            })));
        }
        Behavior::Silent => {}
        Behavior::UnknownIdThen(p) => {
            let _ = out.send(reply(json!({"id":424242,"jsonrpc":"2.0","result":1})));
            let _ = out.send(reply(json!({"id":id,"jsonrpc":"2.0","result":p})));
        }
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

/// The real `hostie` binary as a child process (for SIGKILL and SIGTERM), ready when returned.
pub struct ProcessNode {
    pub child: std::process::Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

impl ProcessNode {
    pub async fn spawn(args: &[&str]) -> Self {
        init();
        let (http, admin) = (free_port(), free_port());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hostie"))
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--log-format", "json", "--workers", "1"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the hostie binary starts");
        let node = Self {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        };
        let ready = eventually(Duration::from_secs(10), || node.readyz_status_is(200)).await;
        assert!(ready, "the hostie process became ready");
        node
    }

    pub async fn readyz_status_is(&self, status: u16) -> bool {
        reqwest::get(format!("http://{}/readyz", self.admin))
            .await
            .is_ok_and(|r| r.status().as_u16() == status)
    }

    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {signal} delivered");
    }

    /// Waits for the process to exit; its exit status.
    pub async fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything the process logged to stdout (after it exited).
    pub fn logs(&mut self) -> String {
        let mut logs = String::new();
        if let Some(out) = self.child.stdout.as_mut() {
            std::io::Read::read_to_string(out, &mut logs).unwrap();
        }
        logs
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /v0/hosties/{token}` on any address; status, body and how long it took.
pub async fn discover_at(addr: SocketAddr, token: &str) -> (u16, Value, Duration) {
    let started = std::time::Instant::now();
    let res = reqwest::get(format!("http://{addr}/v0/hosties/{token}"))
        .await
        .expect("discovery request reaches the node");
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}
