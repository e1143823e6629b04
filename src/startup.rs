//! Build (bind every listener, port 0 allowed) → expose the bound addresses → run until a
//! shutdown trigger, then drain. `main` and the tests start exactly this.

use crate::bus::redis::SubscriberSettings;
use crate::bus::{Bus, MemoryTransport, RedisTransport, Transport};
use crate::config::Config;
use crate::http::{self, AppState, client_addr::TrustedProxies};
use crate::hub::Hub;
use crate::memory_broker::MemoryBroker;
use crate::metrics::Metrics;
use crate::model::NodeId;
use crate::node::liveness::{self, LivenessSettings};
use crate::node::reach::{self, ReachSettings};
use crate::node::remote_cache::RemoteCache;
use crate::node::{Node, NodeSettings};
use crate::redis_common::conns::watch_sentinel_events;
use crate::redis_common::{Keys, RedisConns, RedisTopology};
use crate::registry::{MemoryRegistry, RedisRegistry, Registry};
use crate::session::SessionSettings;
use crate::tls::CertReloader;
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// Where registry and bus live. Nodes given the same backends form a cluster: in-process over
/// memory (tests), or across processes over Redis. The embedded default is one node alone.
#[derive(Clone)]
pub enum Backends {
    Memory {
        registry: Arc<MemoryRegistry>,
        broker: Arc<MemoryBroker>,
    },
    Redis {
        url: String,
        prefix: String,
    },
}

/// Tokens whose remote sessions a node remembers (≈ 250 B each: at most ≈ 16 MiB).
const REMOTE_CACHE_TOKENS: usize = 65_536;

impl Backends {
    /// In-process backends; a node's tracking of a token lasts `tracking_ttl` (pass the
    /// nodes' `--heartbeat-ttl`, the remote cache's lifetime).
    pub fn memory(tracking_ttl: Duration) -> Self {
        let broker = MemoryBroker::new();
        Self::Memory {
            registry: Arc::new(MemoryRegistry::new(broker.clone(), tracking_ttl)),
            broker,
        }
    }

    /// The registry and the bus transport of node `node` on these backends.
    fn connect(
        &self,
        config: &Config,
        node: &NodeId,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<(Arc<dyn Registry>, Arc<dyn Transport>)> {
        match self {
            Self::Memory { registry, broker } => Ok((
                registry.clone(),
                Arc::new(MemoryTransport::new(broker.clone(), node.clone())),
            )),
            Self::Redis { url, prefix } => {
                // The one Redis deadline (docs/redis.md): shorter than the discovery deadline
                // (checked with the flags), so a hung Redis still leaves time to answer from
                // the hub or with a 503.
                let op_timeout = config.redis_timeout();
                let topology = RedisTopology::parse(url)
                    .map_err(|e| anyhow::anyhow!("invalid value for '--redis-url': {e}"))?;
                tracing::info!(?topology, "Redis topology");
                let conns = Arc::new(RedisConns::new(topology, op_timeout).context("--redis-url")?);
                tokio::spawn(watch_sentinel_events(Arc::downgrade(&conns)));
                let keys = Keys::new(prefix);
                let registry = RedisRegistry::new(
                    conns.clone(),
                    keys.clone(),
                    node.clone(),
                    config.heartbeat_ttl,
                    metrics.clone(),
                );
                let subscriber = SubscriberSettings {
                    op_timeout,
                    probe_every: config.heartbeat_interval,
                };
                let transport =
                    RedisTransport::new(subscriber, conns, keys, node.clone(), metrics.clone());
                Ok((Arc::new(registry), Arc::new(transport)))
            }
        }
    }

    fn mode(&self) -> &'static str {
        match self {
            Self::Memory { .. } => "embedded",
            Self::Redis { .. } => "cluster",
        }
    }
}

pub struct Application {
    node: Arc<Node>,
    http_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    public: Server,
    admin: Server,
    state: web::Data<AppState>,
    liveness: LivenessSettings,
    /// The TLS pair and how often its files are read again (`--tls-reload-interval`).
    tls_reload: Option<(Arc<CertReloader>, Duration)>,
    /// `--probe-reachability`.
    reach: Option<ReachSettings>,
}

/// How long actix waits for in-flight requests after the drain, before dropping connections.
const SERVER_STOP_TIMEOUT_SECS: u64 = 2;

impl Application {
    /// Builds a node from configuration: Redis cluster mode with `--redis-url`, else the
    /// embedded single node.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let backends = match &config.redis_url {
            Some(url) => Backends::Redis {
                url: url.clone(),
                prefix: config.redis_prefix.clone(),
            },
            None => Backends::memory(config.heartbeat_ttl),
        };
        Self::build_with(config, backends).await
    }

    /// Builds a node on the given backends, binding every listener.
    pub async fn build_with(config: &Config, backends: Backends) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
        metrics.max_sessions.set(config.max_sessions as i64);
        let node_id = NodeId(config.node_id());
        let hub = Arc::new(Hub::new(
            config.max_sessions as usize,
            config.max_sessions_per_source as usize,
            config.fallback_port,
            metrics.clone(),
        ));
        let (registry, transport) = backends.connect(config, &node_id, &metrics)?;
        let bus = Bus::start(node_id.clone(), transport, metrics.clone());
        let settings = NodeSettings {
            id: node_id,
            discovery_deadline: config.discovery_deadline,
            max_sessions_per_token: config.max_sessions_per_token as usize,
            drain_spread: config.drain_spread,
            drain_grace: config.drain_grace,
            registry_settle: config.heartbeat_ttl,
            session_order: config.session_order,
        };
        let remote = RemoteCache::new(
            config.heartbeat_ttl,
            REMOTE_CACHE_TOKENS,
            config.redis_timeout(),
        );
        let node = Node::new(settings, hub, registry, bus, remote, metrics);
        announce(&node).await;

        let state = web::Data::new(AppState {
            node: node.clone(),
            proxies: TrustedProxies::new(config.trusted_proxies.0.clone()),
            untrusted: Default::default(),
            limiter: http::discovery_limiter(config.discovery_rate, config.discovery_burst),
            max_frame_bytes: config.max_frame_bytes as usize,
            session: SessionSettings {
                idle_timeout: config.idle_timeout,
                rpc_timeout: config.discovery_deadline,
                port_reuse: config.port_reuse,
                max_json_depth: config.max_json_depth as usize,
            },
        });
        let workers = config.workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |n| n as usize,
        );

        let http_listener = bind("--listen", config.listen)?;
        let http_addr = http_listener.local_addr()?;
        let public_state = state.clone();
        let mut public = HttpServer::new(move || {
            App::new()
                .app_data(public_state.clone())
                .configure(http::public_routes)
        })
        .workers(workers)
        // Without it, a JSON-RPC request written to a gateway right after a pong waits for
        // that pong's ACK (Nagle's algorithm), which the gateway delays: milliseconds added
        // to discoveries whenever pings are in flight.
        .tcp_nodelay(true)
        .client_request_timeout(config.handshake_timeout)
        .shutdown_timeout(SERVER_STOP_TIMEOUT_SECS)
        .disable_signals()
        .listen(http_listener)?;

        let (mut tls_addr, mut tls_reload) = (None, None);
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            let pair = Arc::new(CertReloader::load(cert, key)?);
            let tls = crate::tls::server_config(&pair)?;
            let listener = bind("--tls-listen", config.tls_listen)?;
            tls_addr = Some(listener.local_addr()?);
            public = public.listen_rustls_0_23(listener, tls)?;
            if !config.tls_reload_interval.is_zero() {
                tls_reload = Some((pair, config.tls_reload_interval));
            }
        }

        let admin_listener = bind("--admin-listen", config.admin_listen)?;
        let admin_addr = admin_listener.local_addr()?;
        let admin_node = web::Data::new(node.clone());
        let admin = HttpServer::new(move || {
            App::new()
                .app_data(admin_node.clone())
                .configure(http::admin_routes)
        })
        .workers(1)
        .shutdown_timeout(SERVER_STOP_TIMEOUT_SECS)
        .disable_signals()
        .listen(admin_listener)?;

        tracing::info!(
            node = %node.id(),
            http = %http_addr,
            tls = ?tls_addr,
            admin = %admin_addr,
            mode = backends.mode(),
            "hostie listening"
        );
        Ok(Self {
            node,
            http_addr,
            tls_addr,
            admin_addr,
            public: public.run(),
            admin: admin.run(),
            state,
            liveness: LivenessSettings {
                interval: config.heartbeat_interval,
                anti_entropy: config.anti_entropy_interval,
                ttl: config.heartbeat_ttl,
            },
            tls_reload,
            reach: config.probe_reachability.then(|| ReachSettings {
                interval: config.probe_interval,
                timeout: config.probe_timeout,
                rate: config.probe_rate,
                deny: config.probe_deny.0.clone(),
            }),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Serves until `shutdown` resolves (or a server fails), then drains and stops.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let public_handle = self.public.handle();
        let admin_handle = self.admin.handle();
        let mut public = tokio::spawn(self.public);
        let mut admin = tokio::spawn(self.admin);
        let sweeper = self.state.limiter.clone().map(|limiter| {
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    every.tick().await;
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            })
        });
        let liveness = tokio::spawn(liveness::run(self.node.clone(), self.liveness));
        let reach = self
            .reach
            .map(|settings| tokio::spawn(reach::run(self.node.clone(), settings)));
        let tls_reload = self.tls_reload.map(|(pair, every)| {
            let node = self.node.clone();
            tokio::spawn(pair.run(every, move |r| node.metrics().tls_reload(r)))
        });
        let failed = tokio::select! {
            () = shutdown => None,
            r = &mut public => Some(("public", r)),
            r = &mut admin => Some(("admin", r)),
        };
        if let Some(s) = &sweeper {
            s.abort();
        }
        if let Some(t) = &tls_reload {
            t.abort();
        }
        if let Some(r) = &reach {
            r.abort();
        }
        // Stopped before the drain removes this node's records, so nothing re-asserts them.
        liveness.abort();
        let _ = liveness.await;
        if let Some((which, result)) = failed {
            let reason = match result {
                Ok(Ok(())) => "stopped".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            anyhow::bail!("the {which} server ended unexpectedly: {reason}");
        }
        self.node.drain().await;
        public_handle.stop(true).await;
        admin_handle.stop(true).await;
        // Both servers have stopped; their join results carry nothing more to report.
        let _ = tokio::join!(public, admin);
        tracing::info!(node = %self.node.id(), "stopped");
        Ok(())
    }
}

/// Before serving: a first heartbeat (so records written from now on are offered) and the
/// bus subscription, each waited for briefly. Neither is fatal: a node started while Redis is
/// down serves local sessions, stays unready, and joins when Redis answers.
async fn announce(node: &Node) {
    if let Err(e) = node.registry().heartbeat(node.id()).await {
        tracing::warn!(error = %crate::telemetry::ErrorChain(&e), "first heartbeat failed; starting unready");
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while node.bus().check().is_err() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Connections the kernel queues for a listener before it drops SYNs. std's `bind` listens with
/// 128, which overflows when a few hundred gateways reconnect at once (a dropped SYN costs the
/// client a 1 s retransmit); actix's own backlog setting only applies to addresses it binds.
const LISTEN_BACKLOG: i32 = 4096;

fn bind(flag: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let listen = || -> std::io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        Ok(socket.into())
    };
    listen().with_context(|| format!("{flag}: cannot listen on {addr}"))
}
