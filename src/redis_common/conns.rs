//! Redis command connections: created by the deadpool-redis pool, then shared.
//!
//! deadpool-redis checks every connection it hands out with an `UNWATCH`+`PING` round trip,
//! which would double the Redis round trips of every discovery (the budget in docs/redis.md:
//! lookup, request publish, reply publish). A `MultiplexedConnection` is built to be shared by many tasks, so
//! the node keeps a few of them, taken from the pool once, and drops one only when it fails;
//! the next command gets a fresh one from the pool (whose connect is bounded by its timeouts).
//!
//! Each thread sticks to one slot. A connection's driver task runs on the runtime of the thread
//! that created it, so a worker thread that always uses "its" connection never wakes another
//! thread to reach Redis (the profile showed those wake-ups as the largest cost).

use crate::config::redis_url::RedisTopology;
use deadpool_redis::{Connection, Pool};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, RedisFuture, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Connections the pool may open (commands and publishes; the subscriber has its own).
const POOL_SIZE: usize = 16;

/// Shared connections per node: one per thread that talks to Redis (HTTP workers, the main
/// runtime), modulo this.
const SHARED: usize = 4;

/// Commands in flight at once when a batch cannot be one pipeline (a Cluster: its keys live in
/// many slots, and redis-rs refuses a pipeline across slots).
const BATCH_CONCURRENCY: usize = 64;

thread_local! {
    /// This thread's slot, assigned round-robin on first use.
    static SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

fn my_slot() -> usize {
    SLOT.with(|slot| match slot.get() {
        Some(i) => i,
        None => {
            let i = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SHARED;
            slot.set(Some(i));
            i
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no Redis connection")]
    Connect(#[source] deadpool_redis::PoolError),
    #[error("no Redis connection")]
    Open(#[source] redis::RedisError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// A command connection of any topology: one Redis (standalone, or the primary Sentinel
/// named when it was opened), or a Redis Cluster (routing each command by its key's slot).
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Where command connections come from.
enum Connector {
    /// One Redis, through deadpool-redis.
    Pool(Pool),
    /// The primary the sentinels name at the time of the connect. Not deadpool-redis' sentinel
    /// manager: it does not say which primary a connection reached, and a connection left on a
    /// demoted primary must be found and dropped (see [`RedisConns::watch_topology`]).
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        config: redis::AsyncConnectionConfig,
    },
    /// A Redis Cluster. Not deadpool-redis' cluster manager: it can set neither timeouts nor
    /// retries, and redis-rs' defaults (16 retries, waits from 1.28 s) are far beyond hostie's
    /// Redis deadline.
    Cluster(ClusterClient),
}

/// One shared connection and, on Sentinel, the primary it reached (`host:port`).
#[derive(Clone)]
struct Slot {
    conn: Conn,
    primary: Option<String>,
}

pub struct RedisConns {
    topology: RedisTopology,
    connector: Connector,
    slots: [Mutex<Option<Slot>>; SHARED],
    op_timeout: Duration,
    /// Topology changes seen (a new primary, a restarted one): whoever holds state that
    /// depends on where the data lives (the subscriber, the records) compares it.
    generation: AtomicU64,
    /// What the last [`Self::watch_topology`] saw: the primary's address (Sentinel); the
    /// highest epoch and each primary's run id (Cluster).
    seen: Mutex<Option<String>>,
    max_epoch: AtomicU64,
    run_ids: Mutex<HashMap<String, String>>,
    /// When the last topology change was seen.
    moved_at: Mutex<Option<std::time::Instant>>,
    /// A change not yet taken by [`Self::take_moved`].
    unreported: std::sync::atomic::AtomicBool,
    moved_now: tokio::sync::Notify,
}

impl RedisConns {
    /// Command connections for `topology`, none opened yet.
    pub fn new(topology: RedisTopology, op_timeout: Duration) -> Result<Self, RedisPoolError> {
        let connector = match &topology {
            RedisTopology::Standalone { url } => Connector::Pool(redis_pool(url, op_timeout)?),
            RedisTopology::Sentinel {
                sentinels,
                master,
                tls,
                username,
                password,
                db,
            } => {
                let mut redis_info = redis::RedisConnectionInfo::default().set_db(*db);
                if let Some(u) = username {
                    redis_info = redis_info.set_username(u);
                }
                if let Some(p) = password {
                    redis_info = redis_info.set_password(p);
                }
                let mut node =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
                if *tls {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                let client = SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(RedisPoolError::Url)?;
                Connector::Sentinel {
                    client: tokio::sync::Mutex::new(client),
                    config: connection_config(op_timeout),
                }
            }
            RedisTopology::Cluster { seeds } => Connector::Cluster(
                cluster_client(seeds, op_timeout)
                    .build()
                    .map_err(RedisPoolError::Url)?,
            ),
        };
        if topology.uses_tls() {
            install_crypto_provider();
        }
        Ok(Self {
            topology,
            connector,
            slots: Default::default(),
            op_timeout,
            generation: AtomicU64::new(0),
            seen: Mutex::default(),
            max_epoch: AtomicU64::new(0),
            run_ids: Mutex::default(),
            moved_at: Mutex::default(),
            unreported: Default::default(),
            moved_now: tokio::sync::Notify::new(),
        })
    }

    pub fn topology(&self) -> &RedisTopology {
        &self.topology
    }

    /// Whether keys of one command batch may live on different servers (a Cluster): then
    /// commands are sent side by side, never in one pipeline or script.
    pub fn is_cluster(&self) -> bool {
        matches!(self.connector, Connector::Cluster(_))
    }

    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// How many topology changes [`Self::watch_topology`] has seen.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn moved(&self) {
        *self.moved_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        self.unreported.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.moved_now.notify_waiters();
    }

    /// Completes at the next topology change (one that happens while it is awaited).
    pub async fn moved_notice(&self) {
        self.moved_now.notified().await;
    }

    /// Whether the topology changed since the last call: seen by [`Self::watch_topology`],
    /// from the heartbeat or from Sentinel's `+switch-master` ([`watch_sentinel_events`]).
    pub fn take_moved(&self) -> bool {
        self.unreported.swap(false, Ordering::SeqCst)
    }

    /// Whether [`Self::watch_topology`] saw the topology change within `within`: until every
    /// node has noticed and re-asserted, what was written through the old primary may be
    /// missing.
    pub fn moved_within(&self, within: Duration) -> bool {
        self.moved_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < within)
    }

    fn slot(&self, i: usize) -> std::sync::MutexGuard<'_, Option<Slot>> {
        // The slot holds an Option that is replaced whole: never half-written.
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new command connection, and on Sentinel the primary it reached.
    async fn open(&self) -> Result<Slot, CommandError> {
        match &self.connector {
            Connector::Pool(pool) => Ok(Slot {
                conn: Conn::Single(Connection::take(
                    pool.get().await.map_err(CommandError::Connect)?,
                )),
                primary: None,
            }),
            Connector::Sentinel { client, config } => {
                let primary = client
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(CommandError::Open)?;
                let address = primary.get_connection_info().addr().to_string();
                let conn = primary
                    .get_multiplexed_async_connection_with_config(config)
                    .await
                    .map_err(CommandError::Open)?;
                Ok(Slot {
                    conn: Conn::Single(conn),
                    primary: Some(address),
                })
            }
            Connector::Cluster(client) => Ok(Slot {
                conn: Conn::Cluster(
                    client
                        .get_async_connection()
                        .await
                        .map_err(CommandError::Open)?,
                ),
                primary: None,
            }),
        }
    }

    async fn connection(&self, i: usize) -> Result<Conn, CommandError> {
        if let Some(slot) = self.slot(i).clone() {
            return Ok(slot.conn);
        }
        // A connection opened across a topology change may have reached the old primary
        // (resolved before the change, stored after the slots were cleared): opened again.
        for _ in 0..2 {
            let generation = self.generation();
            let fresh = self.open().await?;
            if self.generation() != generation {
                continue;
            }
            let conn = fresh.conn.clone();
            *self.slot(i) = Some(fresh);
            return Ok(conn);
        }
        Err(CommandError::Open(redis::RedisError::from((
            redis::ErrorKind::Io,
            "the Redis topology changed while connecting",
        ))))
    }

    /// Runs one command (or pipeline, or script) on a shared connection, bounded by the
    /// operation timeout. A connection that failed or hung is dropped, and so is one that
    /// reached a replica (`READONLY`: a primary demoted by a failover keeps its clients).
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, CommandError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let i = my_slot();
        let attempt = async {
            let conn = self.connection(i).await?;
            f(conn).await.map_err(CommandError::from)
        };
        let result = tokio::time::timeout(self.op_timeout, attempt)
            .await
            .unwrap_or(Err(CommandError::Timeout(self.op_timeout)));
        // A cluster connection repairs its node connections and slot map itself, and one
        // unreachable shard must not cost the others: it is dropped only when it is beyond
        // repair. Reopening it connects to every node of the cluster.
        let cluster = self.is_cluster();
        let broken = match &result {
            Err(CommandError::Redis(e)) if cluster => e.is_unrecoverable_error(),
            Err(CommandError::Redis(e)) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                    || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            }
            Err(CommandError::Timeout(_)) => !cluster,
            _ => false,
        };
        if broken {
            self.slot(i).take();
        }
        result
    }

    /// Two commands in one round trip of wall time: one pipeline on one Redis; on a Cluster,
    /// where their keys may hash to different slots, sent side by side.
    pub async fn pair<A, B>(&self, a: Cmd, b: Cmd) -> Result<(A, B), CommandError>
    where
        A: redis::FromRedisValue,
        B: redis::FromRedisValue,
    {
        self.run(|mut conn| async move {
            match conn {
                Conn::Single(_) => {
                    redis::pipe()
                        .add_command(a)
                        .add_command(b)
                        .query_async(&mut conn)
                        .await
                }
                Conn::Cluster(_) => {
                    let mut other = conn.clone();
                    tokio::try_join!(a.query_async(&mut conn), b.query_async(&mut other))
                }
            }
        })
        .await
    }

    /// Commands whose replies are not needed, in as few round trips as the topology allows:
    /// one pipeline on one Redis; on a Cluster, side by side (at most [`BATCH_CONCURRENCY`]
    /// in flight). The integer replies are summed (the number of fields deleted, say).
    pub async fn batch(&self, commands: Vec<Cmd>) -> Result<i64, CommandError> {
        use futures_util::{StreamExt, TryStreamExt};
        if commands.is_empty() {
            return Ok(0);
        }
        self.run(|mut conn| async move {
            let sum = |values: Vec<Value>| {
                values
                    .iter()
                    .map(|v| match v {
                        Value::Int(n) => *n,
                        _ => 0,
                    })
                    .sum::<i64>()
            };
            match conn {
                Conn::Single(_) => {
                    let mut pipe = redis::pipe();
                    for c in commands {
                        pipe.add_command(c);
                    }
                    pipe.query_async::<Vec<Value>>(&mut conn).await.map(sum)
                }
                Conn::Cluster(_) => futures_util::stream::iter(commands)
                    .map(|c| {
                        let mut conn = conn.clone();
                        async move { c.query_async::<Value>(&mut conn).await }
                    })
                    .buffer_unordered(BATCH_CONCURRENCY)
                    .try_collect::<Vec<Value>>()
                    .await
                    .map(sum),
            }
        })
        .await
    }

    /// Checks where the data lives now, at most once per call (every heartbeat): on Sentinel,
    /// the primary the sentinels name; on a Cluster, whether a failover happened or a primary
    /// restarted ([`Self::watch_cluster`]). Returns whether it changed since the last call.
    /// On Sentinel, every connection to another server is dropped here: a primary demoted by
    /// `SENTINEL FAILOVER` goes on taking writes for seconds before Sentinel reconfigures it,
    /// and those writes would be lost.
    pub async fn watch_topology(&self) -> Result<bool, CommandError> {
        let seen = match &self.connector {
            Connector::Pool(_) => return Ok(false),
            Connector::Sentinel { client, .. } => {
                let resolve = async {
                    let primary = client.lock().await.async_get_client().await?;
                    redis::RedisResult::Ok(primary.get_connection_info().addr().to_string())
                };
                let primary = tokio::time::timeout(self.op_timeout, resolve)
                    .await
                    .map_err(|_| CommandError::Timeout(self.op_timeout))?
                    .map_err(CommandError::Open)?;
                for i in 0..SHARED {
                    let mut slot = self.slot(i);
                    if slot
                        .as_ref()
                        .is_some_and(|s| s.primary.as_deref() != Some(primary.as_str()))
                    {
                        slot.take();
                    }
                }
                primary
            }
            Connector::Cluster(_) => return self.watch_cluster().await,
        };
        let mut last = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let changed = last.as_ref().is_some_and(|l| *l != seen);
        *last = Some(seen);
        if changed {
            self.moved();
        }
        Ok(changed)
    }

    /// The Cluster part of [`Self::watch_topology`]: the cluster's epoch, which every failover
    /// (and slot move) raises, from any node (`CLUSTER INFO`; only a higher one is news, as a
    /// node may not have heard of the latest yet); and each primary's run id (`INFO server` on
    /// all of them, side by side), which a primary that restarted without a failover (empty,
    /// if it does not persist) changes, while its address and slots stay.
    async fn watch_cluster(&self) -> Result<bool, CommandError> {
        let info = self.run(|mut conn| async move {
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async::<String>(&mut conn)
                .await
        });
        let all = self.run(|conn| async move {
            let Conn::Cluster(mut conn) = conn else {
                unreachable!("a Cluster's connections are cluster connections");
            };
            let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            let mut cmd = redis::cmd("INFO");
            cmd.arg("server");
            conn.route_command(cmd, all).await
        });
        // Each on its own: a primary that does not answer `INFO` leaves the epoch to tell.
        let (info, all) = tokio::join!(info, all);
        if let (Err(e), Err(_)) = (&info, &all) {
            return Err(CommandError::Open(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no cluster node answered",
                crate::telemetry::ErrorChain(e).to_string(),
            ))));
        }
        // Stored plus one: 0 is "not seen yet".
        let failed_over = info.ok().and_then(|info| {
            let epoch = info
                .lines()
                .find_map(|l| l.strip_prefix("cluster_current_epoch:"))
                .and_then(|e| e.trim().parse::<u64>().ok())?;
            let before = self.max_epoch.fetch_max(epoch + 1, Ordering::SeqCst);
            Some(before != 0 && epoch + 1 > before)
        });
        let failed_over = failed_over.unwrap_or(false);
        let run_ids = all.map(|all| run_ids(&all)).unwrap_or_default();
        let mut last = self.run_ids.lock().unwrap_or_else(|p| p.into_inner());
        let restarted = run_ids
            .iter()
            .any(|(addr, id)| last.get(addr).is_some_and(|old| old != id));
        // Merged, not replaced: a primary that is down now (no answer) is compared again
        // when it is back.
        last.extend(run_ids);
        drop(last);
        let changed = failed_over || restarted;
        if changed {
            self.moved();
        }
        Ok(changed)
    }

    /// A client for the subscriber on one Redis: the standalone server, or the primary the
    /// sentinels name now. Not for a Cluster (see [`Self::cluster_subscriber`]).
    pub async fn subscriber_client(&self) -> Result<redis::Client, CommandError> {
        match (&self.connector, &self.topology) {
            (Connector::Sentinel { client, .. }, _) => client
                .lock()
                .await
                .async_get_client()
                .await
                .map_err(CommandError::Open),
            (_, RedisTopology::Standalone { url }) => {
                redis::Client::open(url.as_str()).map_err(CommandError::Open)
            }
            _ => unreachable!("a Cluster's subscriber is a cluster connection"),
        }
    }

    /// A new RESP3 cluster connection for the subscriber, delivering pushes to `push`.
    pub async fn cluster_subscriber(
        &self,
        push: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> Result<ClusterConnection, CommandError> {
        let RedisTopology::Cluster { seeds } = &self.topology else {
            unreachable!("only a Cluster has a cluster subscriber");
        };
        cluster_client(seeds, self.op_timeout)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push)
            .build()
            .map_err(CommandError::Open)?
            .get_async_connection()
            .await
            .map_err(CommandError::Open)
    }
}

/// Each primary's run id by address, from the per-node replies of `INFO server` sent to all of
/// them (a node that answered with an error is left out).
fn run_ids(all: &Value) -> HashMap<String, String> {
    let Value::Map(entries) = all else {
        return HashMap::new();
    };
    entries
        .iter()
        .filter_map(|(addr, info)| {
            let addr = redis::from_redis_value_ref::<String>(addr).ok()?;
            let info = redis::from_redis_value_ref::<String>(info).ok()?;
            let id = info.lines().find_map(|l| l.strip_prefix("run_id:"))?;
            Some((addr, id.trim().to_owned()))
        })
        .collect()
}

/// On Sentinel, listens to the sentinels' `+switch-master` notices (one sentinel at a time,
/// the next one when it fails) and checks the topology at once on a switch of this primary,
/// instead of at the next heartbeat: the sooner a node leaves a demoted primary, the shorter
/// the time it reads data that lacks what others wrote to the new one. The heartbeat's check
/// stays, for a notice that was missed. Ends when `conns` is dropped; does nothing on other
/// topologies.
pub async fn watch_sentinel_events(conns: std::sync::Weak<RedisConns>) {
    use futures_util::StreamExt;
    let (sentinels, master, op_timeout) = match conns.upgrade() {
        Some(c) => match c.topology() {
            RedisTopology::Sentinel {
                sentinels, master, ..
            } => (sentinels.clone(), master.clone(), c.op_timeout),
            _ => return,
        },
        None => return,
    };
    let mut next = 0;
    loop {
        let url = &sentinels[next % sentinels.len()];
        next += 1;
        let subscribed = async {
            let mut pubsub = redis::Client::open(url.as_str())?
                .get_async_pubsub()
                .await?;
            pubsub.subscribe("+switch-master").await?;
            redis::RedisResult::Ok(pubsub)
        };
        if let Ok(Ok(pubsub)) = tokio::time::timeout(op_timeout, subscribed).await {
            let mut notices = pubsub.into_on_message();
            loop {
                let notice = tokio::select! {
                    n = notices.next() => n,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        if conns.strong_count() == 0 {
                            return;
                        }
                        continue;
                    }
                };
                let Some(notice) = notice else {
                    break;
                };
                // "<name> <old ip> <old port> <new ip> <new port>"
                let text = String::from_utf8_lossy(notice.get_payload_bytes()).into_owned();
                if text.split(' ').next() != Some(master.as_str()) {
                    continue;
                }
                let Some(conns) = conns.upgrade() else {
                    return;
                };
                tracing::info!(notice = %text, "Sentinel switched the primary");
                if let Err(e) = conns.watch_topology().await {
                    tracing::debug!(error = %crate::telemetry::ErrorChain(&e), "cannot check the Redis topology");
                }
            }
        }
        if conns.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A cluster client whose every wait fits in hostie's Redis deadline: redis-rs' defaults
/// (16 retries, the first after 1.28 s) would outlast any discovery.
fn cluster_client(seeds: &[String], op_timeout: Duration) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.to_vec())
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(100)
        .connection_timeout(op_timeout)
        .response_timeout(op_timeout)
}

/// redis-rs builds its TLS configuration with rustls' process-wide provider; hostie's own
/// listeners pass theirs explicitly, so for `rediss` the same one (ring) is installed.
fn install_crypto_provider() {
    // An error means a provider is installed already: that one is used.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A pool of multiplexed Redis connections whose waits, connects, recycles and replies are all
/// bounded by `op_timeout`, so that a hung Redis cannot hold a request past its deadline.
///
/// The redis crate bounds every reply by its own default response timeout (500 ms in 1.x) and
/// every connect by another (1 s); deadpool-redis' `Config::create_pool` keeps those defaults.
/// Both are set here to hostie's one Redis deadline (`--redis-timeout`) through
/// `Manager::new_with_config`, so that no limit but that one decides when Redis is too slow.
pub fn redis_pool(url: &str, op_timeout: Duration) -> Result<Pool, RedisPoolError> {
    let manager = deadpool_redis::Manager::new_with_config(url, connection_config(op_timeout))
        .map_err(RedisPoolError::Url)?;
    let timeouts = deadpool_redis::Timeouts {
        wait: Some(op_timeout),
        create: Some(op_timeout),
        recycle: Some(op_timeout),
    };
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .timeouts(timeouts)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(RedisPoolError::Build)
}

/// Connection settings with hostie's Redis deadline in place of the redis crate's defaults.
pub fn connection_config(op_timeout: Duration) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(op_timeout))
        .set_response_timeout(Some(op_timeout))
}

#[derive(Debug, thiserror::Error)]
pub enum RedisPoolError {
    #[error("invalid Redis URL")]
    Url(#[source] redis::RedisError),
    #[error("cannot build the connection pool")]
    Build(#[source] deadpool_redis::BuildError),
}
