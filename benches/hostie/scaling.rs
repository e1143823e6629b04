//! The scaling run (`cargo bench --bench hostie -- --scaling`): how every cost grows with
//! nodes, sessions and Redis shards, and the capacity model derived from the per-unit costs.
//!
//! One machine, everything on loopback: `redis-server` (one, then a 3-shard Cluster), up to
//! eight hostie node processes on fixed ports, `sessions_per_node` simulated gateways per node
//! (worker processes of ≤ 9,500 sockets, pinging every 10 s like the real client), nginx in
//! front of the nodes as in the Compose topology, and the HTTP load generator.
//!
//! 1. **Growth** (1, 2, 4, 8 nodes, the same sessions per node, the new nodes' gateways all
//!    connecting at once): per node RSS per session, idle CPU per 1,000 sessions, Redis
//!    commands per second; Redis memory and CPU per registration and per idle session; then
//!    discovery at 64 concurrent, each connection asking one node for tokens held by the
//!    others (warm: 10,000 tokens, the remote cache filled). Costs per discovery are net of the
//!    idle window's rates (the pings of 150,000 gateways are not a discovery's cost).
//! 2. At the largest size: cold discoveries (no token asked twice within the cache TTL), and
//!    hot tokens (64 concurrent on one token, on ten), with the gateways' JSON-RPC rate.
//! 3. **Storms** at the largest size: every gateway disconnecting, then connecting at once
//!    (Redis CPU per release and per registration, memory per session); `FLUSHALL`; Redis
//!    restarted empty; one node killed (its gateways reconnect through nginx with the real
//!    client's backoff) with discoveries on the survivors meanwhile; a rolling update of every
//!    node with drain as the chart runs it (a new node first), discoveries through nginx and
//!    straight to the nodes meanwhile.
//! 4. The same growth (2 and 4 nodes) and connect storm on a 3-shard Cluster, per shard.
//!
//! A wrong answer fails the run (a 404 or a non-200 for a gateway that stayed connected, an
//! answer past the deadline); the smoke mode runs every step with small counts.

use crate::Args;
use crate::lb::Nginx;
use crate::load::{self, LoadResult};
use crate::procs::{Hostie, TICKS_PER_SEC, Worker, WorkerArgs, release_binary};
use crate::report::us;
use crate::scenarios::{DEADLINE, PING};
use crate::topology::{self, Server, Topology};
use hostie_testkit::fleet::token;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sessions per gateway worker process (fd limit: ≈ 19.9k sockets per process).
const PER_WORKER: usize = 9_500;
/// Tokens each asked node is asked for in the warm rows: few enough that each comes back well
/// within the remote cache's TTL (5 s) even at 8 nodes (≈ 600 discoveries/s per node), so that
/// every row after the warm-up is a cache hit.
const WARM_TOKENS: usize = 1_000;
/// Load connections for discovery rows (as in the main run).
const CONCURRENCY: usize = 64;
/// Discoveries per second offered to each node in the fixed-rate rows: the same work per node
/// at every size (8 nodes: 3,200/s, well under the machine's saturation).
const PACED_PER_NODE: f64 = 400.0;
/// Connections per node in the fixed-rate rows.
const PACED_CONNS: usize = 8;

struct Plan {
    counts: Vec<usize>,
    per_node: usize,
    idle: Duration,
    load: Duration,
    smoke: bool,
    /// Only the largest size and its rolling restart (`--rolling-restart-only`).
    rolling_restart_only: bool,
}

/// A Markdown table with a title and notes under it.
struct Table {
    title: String,
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    fn new(title: &str, head: &[&'static str]) -> Self {
        Self {
            title: title.to_owned(),
            head: head.to_vec(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n| {} |\n|", self.title, self.head.join(" | "));
        out.push_str(&"---|".repeat(self.head.len()));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        for n in &self.notes {
            out.push_str(&format!("\n{n}\n"));
        }
        out
    }
}

/// Redis counters of the data servers at one moment.
struct RedisSnap {
    servers: Vec<ServerSnap>,
}

#[derive(Clone, Copy, Default)]
struct ServerSnap {
    cpu: f64,
    memory: u64,
    commands: u64,
    publishes: u64,
}

fn calls(info: &HashMap<String, String>, cmd: &str) -> u64 {
    info.get(&format!("cmdstat_{cmd}"))
        .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn redis_snap(servers: &[Server]) -> RedisSnap {
    let mut out = Vec::new();
    for s in servers {
        let info = topology::redis_info(s.port, &["cpu", "memory", "stats", "commandstats"]).await;
        let num = |k: &str| {
            info.get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        out.push(ServerSnap {
            cpu: num("used_cpu_sys") + num("used_cpu_user"),
            memory: num("used_memory") as u64,
            commands: num("total_commands_processed") as u64,
            publishes: calls(&info, "publish") + calls(&info, "spublish"),
        });
    }
    RedisSnap { servers: out }
}

impl RedisSnap {
    /// Per server: CPU seconds spent since `before`.
    fn cpu_since(&self, before: &RedisSnap) -> Vec<f64> {
        self.zip(before, |a, b| a.cpu - b.cpu)
    }

    fn memory_since(&self, before: &RedisSnap) -> Vec<f64> {
        self.zip(before, |a, b| a.memory as f64 - b.memory as f64)
    }

    fn commands_since(&self, before: &RedisSnap) -> f64 {
        self.zip(before, |a, b| a.commands.saturating_sub(b.commands) as f64)
            .iter()
            .sum()
    }

    fn publishes_since(&self, before: &RedisSnap) -> f64 {
        self.zip(before, |a, b| {
            a.publishes.saturating_sub(b.publishes) as f64
        })
        .iter()
        .sum()
    }

    fn zip(&self, before: &RedisSnap, f: impl Fn(&ServerSnap, &ServerSnap) -> f64) -> Vec<f64> {
        self.servers
            .iter()
            .zip(&before.servers)
            .map(|(a, b)| f(a, b))
            .collect()
    }
}

/// "7.1 µs" for one server, "2.3 + 2.4 + 2.5 = 7.2 µs" for shards.
fn per_server(values: &[f64], unit: &str, digits: usize) -> String {
    let total: f64 = values.iter().sum();
    if values.len() == 1 {
        format!("{total:.digits$} {unit}")
    } else {
        let parts: Vec<String> = values.iter().map(|v| format!("{v:.digits$}")).collect();
        format!("{} = {total:.digits$} {unit}", parts.join(" + "))
    }
}

/// The processes of a rig and the machine: CPU ticks at one moment.
struct CpuSnap {
    at: Instant,
    /// Per node slot: its CPU ticks and context switches, `None` when no node runs there.
    nodes: Vec<Option<(u64, u64)>>,
    machine: topology::MachineTicks,
}

/// CPU spent in a window, seconds per second ("cores"), or seconds.
struct CpuWindow {
    secs: f64,
    /// Per node (live nodes at both ends), seconds.
    nodes: Vec<f64>,
    machine: f64,
    redis: Vec<f64>,
    /// The nodes' context switches (voluntary and preempted), all nodes.
    switches: f64,
}

impl CpuWindow {
    fn node_total(&self) -> f64 {
        self.nodes.iter().sum()
    }

    /// What this window spent beyond `idle`'s rates, per unit of `work`, µs: nodes, Redis
    /// (per server), machine.
    fn net_per(&self, idle: &CpuWindow, work: f64) -> (f64, Vec<f64>, f64) {
        let per = |spent: f64, idle_spent: f64| {
            ((spent - idle_spent / idle.secs.max(1e-9) * self.secs) * 1e6 / work.max(1.0)).max(0.0)
        };
        (
            per(self.node_total(), idle.node_total()),
            self.redis
                .iter()
                .zip(&idle.redis)
                .map(|(a, b)| per(*a, *b))
                .collect(),
            per(self.machine, idle.machine),
        )
    }

    /// The nodes' context switches beyond `idle`'s rate, per unit of `work`.
    fn switches_per(&self, idle: &CpuWindow, work: f64) -> f64 {
        ((self.switches - idle.switches / idle.secs.max(1e-9) * self.secs) / work.max(1.0)).max(0.0)
    }
}

/// Every node, its gateways, nginx, on one Redis topology.
struct Rig {
    topology: Topology,
    /// The hostie binary its nodes run, and the name its rows carry.
    binary: PathBuf,
    label: &'static str,
    url: String,
    ports: Vec<(u16, u16)>,
    /// The ports of the rolling update's surge node: a new node started before the first
    /// drain, as the chart's `updateStrategy` (maxSurge 1, maxUnavailable 0) does. In nginx's
    /// upstream list and the gateways' reconnect lists from the start, refusing until then.
    spare: (u16, u16),
    /// How long a new node is ready before the next drain (the chart's `minReadySeconds`).
    min_ready: Duration,
    nodes: Vec<Option<Hostie>>,
    base_rss: Vec<u64>,
    workers: Vec<Vec<Worker>>,
    lb: Nginx,
    per_node: usize,
    extra: Vec<String>,
    /// Redis CPU (s/s, per server) and commands per second of one node holding no session:
    /// its heartbeat, what every idle window holds once per node whatever its sessions.
    empty_node_cpu: Vec<f64>,
    empty_node_commands: f64,
    /// Redis CPU (s/s, per server) with no node at all: the server's own housekeeping.
    baseline_cpu: Vec<f64>,
}

fn public(port: u16) -> SocketAddr {
    hostie_testkit::loopback(port)
}

/// A free loopback port below the kernel's ephemeral range (32768 and up on Linux): a port
/// reserved for a node that starts later, or again after a restart, must not be taken meanwhile
/// as the source port of one of the 150,000 gateways' outgoing connections (it was: a node of
/// the 4-node step could not bind its port).
fn reserved_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 5_000) as u16;
    loop {
        let p = start + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(
            p < 32_000,
            "no free loopback port below the ephemeral range"
        );
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

impl Rig {
    fn new(topology: Topology, plan: &Plan, max_nodes: usize) -> Self {
        let ports: Vec<(u16, u16)> = (0..max_nodes)
            .map(|_| (reserved_port(), reserved_port()))
            .collect();
        let spare = (reserved_port(), reserved_port());
        let lb = Nginx::start(
            &ports
                .iter()
                .chain([&spare])
                .map(|p| public(p.0))
                .collect::<Vec<_>>(),
        );
        let spread = if plan.smoke { "500ms" } else { "5s" };
        Self {
            url: topology.url(),
            binary: release_binary().to_path_buf(),
            label: topology.name(),
            topology,
            nodes: (0..max_nodes).map(|_| None).collect(),
            base_rss: vec![0; max_nodes],
            workers: (0..max_nodes).map(|_| Vec::new()).collect(),
            ports,
            spare,
            min_ready: if plan.smoke {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(5)
            },
            lb,
            per_node: plan.per_node,
            empty_node_cpu: Vec::new(),
            empty_node_commands: 0.0,
            baseline_cpu: Vec::new(),
            // Anti-entropy once per idle window, so that every window holds one per node.
            extra: vec![
                "--anti-entropy-interval".into(),
                format!("{}ms", plan.idle.as_millis()),
                "--drain-spread".into(),
                spread.into(),
                // Below the fd limit (20,000): a node that would take more refuses them with
                // 503 (its gateways try another) instead of running out of descriptors, when
                // it stops accepting on every port, discoveries included.
                "--max-sessions".into(),
                "19500".into(),
            ],
        }
    }

    /// Its nodes run `binary`, and its rows are named `label`.
    fn running(mut self, binary: &Path, label: &'static str) -> Self {
        self.binary = binary.to_path_buf();
        self.label = label;
        self
    }

    fn name(&self) -> &'static str {
        self.label
    }

    async fn start_node(&mut self, k: usize) {
        let node = self.spawn_node(self.ports[k], &format!("n{k}")).await;
        self.base_rss[k] = node.rss_kib();
        self.nodes[k] = Some(node);
    }

    /// A node named `name` on `ports`, ready and settled for 300 ms when returned.
    async fn spawn_node(&self, ports: (u16, u16), name: &str) -> Hostie {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let node =
            Hostie::spawn_binary(&self.binary, &self.url, "bench", name, &extra, Some(ports)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        node
    }

    /// Measures Redis with no node (its own housekeeping: `serverCron`, ≈ 0.2 % of a core),
    /// then starts node 0 and measures what it adds with no session (its heartbeat), for `idle`
    /// each.
    async fn start_empty(&mut self, idle: Duration) {
        let cpu0 = self.cpu();
        let redis0 = self.redis().await;
        tokio::time::sleep(idle).await;
        let (w, _) = self.window(&cpu0, &redis0).await;
        self.baseline_cpu = w.redis.iter().map(|c| c / w.secs).collect();
        self.start_node(0).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu0 = self.cpu();
        let redis0 = self.redis().await;
        tokio::time::sleep(idle).await;
        let (w, redis1) = self.window(&cpu0, &redis0).await;
        self.empty_node_cpu = w
            .redis
            .iter()
            .zip(&self.baseline_cpu)
            .map(|(c, base)| (c / w.secs - base).max(0.0))
            .collect();
        self.empty_node_commands = redis1.commands_since(&redis0) / w.secs;
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|k| self.nodes[*k].is_some())
            .collect()
    }

    fn node(&self, k: usize) -> &Hostie {
        self.nodes[k].as_ref().expect("a live node")
    }

    /// Node `k`'s gateways: registered at node `k`; after a close, the last node's go through
    /// nginx (the node-kill storm), the others to a node picked at random for each attempt
    /// (the surge node's ports among them), as a Service would send them (nginx holds two
    /// sockets per proxied session, and one process ≈ 19,900).
    fn spawn_gateways(&mut self, k: usize) {
        let last = self.nodes.len() - 1;
        let reconnect: Vec<SocketAddr> = if k == last {
            vec![self.lb.addr]
        } else {
            self.ports
                .iter()
                .chain([&self.spare])
                .map(|p| public(p.0))
                .collect()
        };
        let addrs = [public(self.ports[k].0)];
        let prefix = format!("s{k}");
        self.workers[k] = (0..self.per_node.div_ceil(PER_WORKER))
            .map(|w| {
                let from = w * PER_WORKER;
                Worker::spawn(WorkerArgs {
                    addrs: &addrs,
                    reconnect_to: &reconnect,
                    prefix: &prefix,
                    from,
                    count: PER_WORKER.min(self.per_node - from),
                    ping: PING,
                })
            })
            .collect();
    }

    fn connected(&self) -> usize {
        self.workers.iter().flatten().map(Worker::connected).sum()
    }

    /// Sessions the spawned gateways hold when all are connected.
    fn sessions(&self) -> usize {
        self.workers.iter().filter(|w| !w.is_empty()).count() * self.per_node
    }

    async fn wait_connected(&self, total: usize, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.connected() >= total {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    fn cpu(&self) -> CpuSnap {
        CpuSnap {
            at: Instant::now(),
            nodes: (0..self.nodes.len())
                .map(|k| {
                    self.nodes[k]
                        .as_ref()
                        .map(|h| (h.cpu_ticks(), h.switches()))
                })
                .collect(),
            machine: topology::machine_ticks(),
        }
    }

    async fn redis(&self) -> RedisSnap {
        redis_snap(&self.data_servers()).await
    }

    fn data_servers(&self) -> Vec<Server> {
        self.topology.data_servers()
    }

    /// The window from `(cpu, redis)` to now.
    async fn window(&self, cpu0: &CpuSnap, redis0: &RedisSnap) -> (CpuWindow, RedisSnap) {
        let cpu1 = self.cpu();
        let redis1 = self.redis().await;
        let t = |a: u64, b: u64| a.saturating_sub(b) as f64 / TICKS_PER_SEC;
        let both = |k: usize| cpu1.nodes[k].zip(cpu0.nodes[k]);
        let w = CpuWindow {
            secs: cpu1.at.duration_since(cpu0.at).as_secs_f64(),
            nodes: (0..cpu1.nodes.len())
                .map(|k| both(k).map_or(0.0, |((a, _), (b, _))| t(a, b)))
                .collect(),
            machine: t(cpu1.machine.busy, cpu0.machine.busy),
            redis: redis1.cpu_since(redis0),
            switches: (0..cpu1.nodes.len())
                .filter_map(|k| both(k).map(|((_, a), (_, b))| a.saturating_sub(b) as f64))
                .sum(),
        };
        (w, redis1)
    }

    /// Tokens of node `k`'s gateways.
    fn tokens_of(&self, k: usize) -> Vec<String> {
        (0..self.per_node)
            .map(|i| token(&format!("s{k}"), i))
            .collect()
    }

    /// Every token, node by node.
    fn all_tokens(&self) -> Vec<String> {
        (0..self.nodes.len())
            .filter(|k| !self.workers[*k].is_empty())
            .flat_map(|k| self.tokens_of(k))
            .collect()
    }

    /// For each live node, the discovery paths it is asked: up to `limit` tokens held by the
    /// other live nodes, interleaved (by itself when it is alone).
    fn cross_paths(&self, limit: usize) -> Vec<(SocketAddr, Arc<Vec<String>>)> {
        self.cross_paths_among(&self.live(), limit)
    }

    /// [`Rig::cross_paths`] among the nodes `live` only.
    fn cross_paths_among(
        &self,
        live: &[usize],
        limit: usize,
    ) -> Vec<(SocketAddr, Arc<Vec<String>>)> {
        live.iter()
            .map(|&asked| {
                let owners: Vec<usize> = if live.len() == 1 {
                    vec![asked]
                } else {
                    live.iter().copied().filter(|k| *k != asked).collect()
                };
                let mut paths = Vec::new();
                'fill: for i in 0..self.per_node {
                    for &k in &owners {
                        if paths.len() >= limit {
                            break 'fill;
                        }
                        paths.push(format!("/v0/hosties/{}", token(&format!("s{k}"), i)));
                    }
                }
                // Each asked node starts at its own point of the list, so that the askers do not
                // ask the same token at the same moment (its owner's single-flight and port
                // reuse would then share one round trip among them).
                let start = paths.len() / live.len().max(1)
                    * live.iter().position(|k| *k == asked).unwrap_or(0);
                let len = paths.len();
                paths.rotate_left(start.min(len));
                (self.node(asked).http, Arc::new(paths))
            })
            .collect()
    }

    fn rpcs(&self, k: usize) -> usize {
        self.workers[k].iter().map(Worker::rpcs).sum()
    }
}

/// Asks every path, spread over `targets` (path `i` to target `i % len`); each answer's status.
async fn sweep_spread(targets: &[SocketAddr], paths: &[String], concurrency: usize) -> Vec<u16> {
    let n = targets.len().max(1);
    let runs = targets.iter().enumerate().map(|(t, addr)| {
        let mine: Vec<String> = paths.iter().skip(t).step_by(n).cloned().collect();
        load::sweep_statuses(*addr, Arc::new(mine), (concurrency / n).max(1))
    });
    let parts = futures_util::future::join_all(runs).await;
    let mut out = vec![0; paths.len()];
    for (t, part) in parts.into_iter().enumerate() {
        for (j, status) in part.into_iter().enumerate() {
            out[t + j * n] = status;
        }
    }
    out
}

/// What [`until_discoverable`] saw.
struct Recovery {
    took: Option<Duration>,
    missing: usize,
    not_found: usize,
    unavailable: usize,
}

/// Sweeps `tokens` on `targets` again and again until each answered 200 once, for at most
/// `limit`: when the last one did, how many 404s and 503s were seen on the way.
async fn until_discoverable(
    targets: &[SocketAddr],
    tokens: &[String],
    since: Instant,
    limit: Duration,
) -> Recovery {
    let mut missing: Vec<String> = tokens.iter().map(|t| format!("/v0/hosties/{t}")).collect();
    let (mut not_found, mut unavailable) = (0, 0);
    while since.elapsed() < limit {
        let statuses = sweep_spread(targets, &missing, CONCURRENCY).await;
        not_found += statuses.iter().filter(|s| **s == 404).count();
        unavailable += statuses.iter().filter(|s| **s == 503).count();
        missing = missing
            .into_iter()
            .zip(statuses)
            .filter(|(_, s)| *s != 200)
            .map(|(p, _)| p)
            .collect();
        if missing.is_empty() {
            return Recovery {
                took: Some(since.elapsed()),
                missing: 0,
                not_found,
                unavailable,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Recovery {
        took: None,
        missing: missing.len(),
        not_found,
        unavailable,
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(
        || "never".to_owned(),
        |d| format!("{:.2} s", d.as_secs_f64()),
    )
}

/// Per-unit costs measured on the largest standalone size, for the capacity model.
#[derive(Default, Clone)]
struct UnitCosts {
    rss_kib_per_session: f64,
    idle_cores_per_1k: f64,
    node_us_per_cold: f64,
    redis_us_per_cold: f64,
    redis_us_per_warm: f64,
    redis_bytes_per_session: f64,
    redis_us_per_registration: f64,
    redis_us_per_release: f64,
    redis_us_per_idle_session_min: f64,
    /// A node's own Redis cost whatever its sessions (heartbeat), µs per second.
    redis_us_per_node_s: f64,
    registrations_per_node_s: f64,
}

/// What a growth step measured.
struct Step {
    n: usize,
    idle: CpuWindow,
    costs: UnitCosts,
}

/// How long the registration window runs on after the last gateway connected.
const SETTLE: Duration = Duration::from_secs(2);

async fn grow(
    rig: &mut Rig,
    n: usize,
    prev_idle: Option<&CpuWindow>,
    plan: &Plan,
    livez: f64,
    tables: &mut [Table; 3],
    wrong: &mut Vec<String>,
) -> Step {
    let name = rig.name();
    // Nodes 0..first already hold their gateways.
    let first = rig.workers.iter().filter(|w| !w.is_empty()).count();
    for k in first..n {
        if rig.nodes[k].is_none() {
            rig.start_node(k).await;
        }
    }
    let cpu0 = rig.cpu();
    let redis0 = rig.redis().await;
    for k in first..n {
        rig.spawn_gateways(k);
    }
    let total = n * rig.per_node;
    let added = (n - first) * rig.per_node;
    let Some(took) = rig.wait_connected(total, Duration::from_secs(300)).await else {
        wrong.push(format!(
            "{name}, {n} nodes: {} of {total} gateways registered after 300 s",
            rig.connected()
        ));
        return Step {
            n,
            idle: CpuWindow {
                secs: 1.0,
                nodes: vec![],
                machine: 0.0,
                redis: vec![],
                switches: 0.0,
            },
            costs: UnitCosts::default(),
        };
    };
    // Settle: the last registrations' writes and the first pings.
    tokio::time::sleep(SETTLE).await;
    let (reg_window, redis1) = rig.window(&cpu0, &redis0).await;
    let mem = redis1.memory_since(&redis0);
    // Net of what Redis spends anyway: the previous step's idle rates (housekeeping,
    // heartbeats, the existing sessions' anti-entropy), or before the first step the server's
    // housekeeping and one empty node.
    let redis_idle_rate: Vec<f64> = match prev_idle {
        Some(w) => w.redis.iter().map(|c| c / w.secs).collect(),
        None => rig
            .baseline_cpu
            .iter()
            .zip(&rig.empty_node_cpu)
            .map(|(b, e)| b + e)
            .collect(),
    };
    let reg_cpu: Vec<f64> = reg_window
        .redis
        .iter()
        .zip(&redis_idle_rate)
        .map(|(s, rate)| (s - rate * reg_window.secs).max(0.0) * 1e6 / added as f64)
        .collect();
    // The nodes' and the machine's CPU per registration, net of what the sessions already
    // there cost when idle (the previous step's idle window).
    let (reg_node_us, reg_machine_us) = {
        let (node_rate, machine_rate) = prev_idle.map_or((0.0, 0.0), |w| {
            (w.node_total() / w.secs, w.machine / w.secs)
        });
        let net =
            |spent: f64, rate: f64| (spent - rate * reg_window.secs).max(0.0) * 1e6 / added as f64;
        (
            net(reg_window.node_total(), node_rate),
            net(reg_window.machine, machine_rate),
        )
    };
    let reg_publishes = redis1.publishes_since(&redis0) / added as f64;
    let rss: Vec<f64> = rig
        .live()
        .into_iter()
        .map(|k| rig.node(k).rss_kib().saturating_sub(rig.base_rss[k]) as f64 / rig.per_node as f64)
        .collect();
    let rss_mean = rss.iter().sum::<f64>() / rss.len() as f64;
    let rss_max = rss.iter().copied().fold(0.0, f64::max);

    // Idle window: the sessions only ping; heartbeats and one anti-entropy per node.
    let cpu0 = rig.cpu();
    let redis0 = rig.redis().await;
    tokio::time::sleep(plan.idle).await;
    let (idle, redis1) = rig.window(&cpu0, &redis0).await;
    let per_node_idle: Vec<f64> = idle.nodes.iter().copied().filter(|c| *c > 0.0).collect();
    let idle_pct_per_1k = per_node_idle.iter().sum::<f64>()
        / idle.secs
        / per_node_idle.len().max(1) as f64
        / (rig.per_node as f64 / 1000.0)
        * 100.0;
    let idle_pct_max = per_node_idle
        .iter()
        .map(|c| c / idle.secs / (rig.per_node as f64 / 1000.0) * 100.0)
        .fold(0.0, f64::max);
    let commands_per_node = redis1.commands_since(&redis0) / idle.secs / n as f64;
    // Per idle session: the window's Redis CPU without the server's housekeeping and what n
    // empty nodes cost (heartbeats).
    let redis_idle: Vec<f64> = idle
        .redis
        .iter()
        .zip(rig.empty_node_cpu.iter().zip(&rig.baseline_cpu))
        .map(|(s, (node, base))| {
            (s - (base + node * n as f64) * idle.secs).max(0.0) * 1e6
                / total as f64
                / (idle.secs / 60.0)
        })
        .collect();
    let heartbeat_us: f64 = rig.empty_node_cpu.iter().sum::<f64>() * 1e6;
    // The new sessions already idle (ping) inside the registration window: on average from the
    // middle of the registrations to the window's end. That is not registration work: taken
    // off at what one more session costs idle (this step's idle rate against the last's).
    let idle_lifetime = took.as_secs_f64() / 2.0 + SETTLE.as_secs_f64();
    let (prev_node_rate, prev_machine_rate) = prev_idle.map_or((0.0, 0.0), |w| {
        (w.node_total() / w.secs, w.machine / w.secs)
    });
    let idle_of_new = |now_rate: f64, prev_rate: f64| {
        ((now_rate - prev_rate).max(0.0) / added as f64) * idle_lifetime * 1e6
    };
    let reg_node_us =
        (reg_node_us - idle_of_new(idle.node_total() / idle.secs, prev_node_rate)).max(0.0);
    let reg_machine_us =
        (reg_machine_us - idle_of_new(idle.machine / idle.secs, prev_machine_rate)).max(0.0);

    // Warm cross-node discoveries: 64 concurrent over every node; with more nodes, the same
    // 64 on nodes 0 and 1 only (the work of the 2-node row with the others up); and a fixed
    // rate per node (each node's work the same at every size, as when a deployment scales out).
    let every = rig.live();
    let ctx = WarmCtx {
        plan,
        idle: &idle,
        livez,
    };
    let (r, redis_us, publishes) = warm_row(
        rig,
        &every,
        WarmLoad::Concurrent,
        &ctx,
        &mut tables[2],
        wrong,
    )
    .await;
    if n >= 4 && !plan.smoke {
        warm_row(
            rig,
            &every[..2],
            WarmLoad::Concurrent,
            &ctx,
            &mut tables[2],
            wrong,
        )
        .await;
    }
    if n >= 2 {
        warm_row(
            rig,
            &every,
            WarmLoad::Paced(PACED_PER_NODE),
            &ctx,
            &mut tables[2],
            wrong,
        )
        .await;
    }

    tables[0].rows.push(vec![
        name.to_owned(),
        n.to_string(),
        total.to_string(),
        format!("{rss_mean:.1} (max {rss_max:.1})"),
        format!("{idle_pct_per_1k:.3} % (max {idle_pct_max:.3} %)"),
        format!(
            "{commands_per_node:.1} ({:.1} of them with no session)",
            rig.empty_node_commands
        ),
        format!("{:.0}/s", added as f64 / took.as_secs_f64()),
        format!(
            "nodes {reg_node_us:.0} µs, machine {reg_machine_us:.0} µs; {reg_publishes:.2} PUBLISH ({:.0} deliveries)",
            reg_publishes * n as f64
        ),
        format!("{:.2}", idle.machine / idle.secs),
    ]);
    tables[1].rows.push(vec![
        name.to_owned(),
        n.to_string(),
        per_server(
            &mem.iter().map(|m| m / added as f64).collect::<Vec<_>>(),
            "B",
            0,
        ),
        per_server(&reg_cpu, "µs", 1),
        per_server(&redis_idle, "µs", 2),
        per_server(&redis_us, "µs", 1),
        format!("{publishes:.2}"),
    ]);
    eprintln!(
        "bench: {name}, {n} nodes: {total} sessions ({added} in {took:?}); RSS {rss_mean:.1} KiB/session; \
         idle {idle_pct_per_1k:.3} %/1k; {commands_per_node:.1} cmd/s/node; warm {:.0}/s p99 {}",
        r.rate(),
        us(r.quantile_us(0.99))
    );
    Step {
        n,
        costs: UnitCosts {
            rss_kib_per_session: rss_mean,
            idle_cores_per_1k: idle_pct_per_1k / 100.0,
            redis_us_per_warm: redis_us.iter().sum(),
            redis_bytes_per_session: mem.iter().sum::<f64>() / added as f64,
            redis_us_per_registration: reg_cpu.iter().sum(),
            redis_us_per_idle_session_min: redis_idle.iter().sum(),
            redis_us_per_node_s: heartbeat_us,
            registrations_per_node_s: added as f64 / took.as_secs_f64() / (n - first) as f64,
            ..UnitCosts::default()
        },
        idle,
    }
}

/// How a warm-discovery row loads the asked nodes.
#[derive(Clone, Copy)]
enum WarmLoad {
    /// [`CONCURRENCY`] connections over the asked nodes, each asking again once answered.
    Concurrent,
    /// This many discoveries per second offered to each asked node ([`PACED_CONNS`] each).
    Paced(f64),
}

/// What every warm row of one step is measured against.
struct WarmCtx<'a> {
    plan: &'a Plan,
    /// The step's idle window: costs are net of its rates.
    idle: &'a CpuWindow,
    /// The `/livez` floor's rate.
    livez: f64,
}

/// One row of warm cross-node discoveries: `asked` are asked for up to [`WARM_TOKENS`] tokens
/// of the others (3 s of warm-up first), the cost net of `idle`. The answers, Redis µs per
/// discovery (per server) and PUBLISHes per discovery.
async fn warm_row(
    rig: &Rig,
    asked: &[usize],
    how: WarmLoad,
    ctx: &WarmCtx<'_>,
    table: &mut Table,
    wrong: &mut Vec<String>,
) -> (LoadResult, Vec<f64>, f64) {
    let (name, n) = (rig.name(), rig.live().len());
    let targets = rig.cross_paths_among(asked, WARM_TOKENS);
    let load = |d: Duration| {
        let targets = &targets;
        async move {
            match how {
                WarmLoad::Concurrent => load::run_spread(targets, CONCURRENCY, d, DEADLINE).await,
                WarmLoad::Paced(rate) => {
                    load::run_spread_paced(targets, PACED_CONNS, rate, d, DEADLINE).await
                }
            }
        }
    };
    let _ = load(Duration::from_secs(3)).await;
    let cpu0 = rig.cpu();
    let redis0 = rig.redis().await;
    let r = load(ctx.plan.load).await;
    let (w, redis1) = rig.window(&cpu0, &redis0).await;
    let kind = match (how, n) {
        (_, 1) => "same node".to_owned(),
        (WarmLoad::Concurrent, _) if asked.len() == n => "cross node, every node asked".to_owned(),
        (WarmLoad::Concurrent, _) => format!(
            "cross node, nodes {} asked ({} idle)",
            asked
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            n - asked.len()
        ),
        (WarmLoad::Paced(rate), _) => format!("cross node, {rate:.0}/s offered per node"),
    };
    judge(
        &r,
        &format!("{name}, {n} nodes, warm discovery ({kind})"),
        wrong,
    );
    let (node_us, redis_us, machine_us) = w.net_per(ctx.idle, r.ok as f64);
    let publishes = redis1.publishes_since(&redis0) / r.ok.max(1) as f64;
    table.rows.push(vec![
        name.to_owned(),
        n.to_string(),
        kind,
        format!("{:.0}/s", r.rate()),
        us(r.quantile_us(0.5)),
        us(r.quantile_us(0.99)),
        format!("{node_us:.1}"),
        format!("{:.1}", w.switches_per(ctx.idle, r.ok as f64)),
        format!("{:.1}", redis_us.iter().sum::<f64>()),
        format!("{machine_us:.1}"),
        match how {
            WarmLoad::Concurrent => format!("{:.1} %", r.rate() / ctx.livez.max(1.0) * 100.0),
            WarmLoad::Paced(_) => "—".to_owned(),
        },
        format!("{}/{} ok", r.ok, r.requests),
    ]);
    (r, redis_us, publishes)
}

/// During a storm: every answer a 200 or a 503 ("unsure, retry": a node whose Redis call
/// timed out on a saturated machine says so), within the deadline; else a wrong answer.
fn judge_storm(r: &LoadResult, what: &str, wrong: &mut Vec<String>) {
    let bad = r.requests - r.ok - r.others.get(&503).copied().unwrap_or(0);
    if bad > 0 || r.slow > 0 || r.requests == 0 {
        wrong.push(format!(
            "{what}: {bad} of {} answers neither a 200 nor a 503, {} past the deadline ({} 404; {})",
            r.requests,
            r.slow,
            r.not_found,
            r.others_summary()
        ));
    }
}

/// [`grow`] to each of `counts` in turn, each step net of the one before: the last step, and
/// the Redis µs per warm discovery at each count.
async fn grow_series(
    rig: &mut Rig,
    counts: &[usize],
    plan: &Plan,
    livez: f64,
    tables: &mut [Table; 3],
    wrong: &mut Vec<String>,
) -> (Step, Vec<(usize, f64)>) {
    let mut last: Option<Step> = None;
    let mut warm = Vec::new();
    for &n in counts {
        let prev = last.as_ref().map(|s| &s.idle);
        let step = grow(rig, n, prev, plan, livez, tables, wrong).await;
        warm.push((n, step.costs.redis_us_per_warm));
        last = Some(step);
    }
    (last.expect("at least one node count"), warm)
}

/// Every answer of a run of hits was a 200 within the deadline; else a wrong answer.
fn judge(r: &LoadResult, what: &str, wrong: &mut Vec<String>) {
    if r.ok != r.requests || r.slow > 0 || r.requests == 0 {
        wrong.push(format!(
            "{what}: {} of {} answers were not a 200 within the deadline ({} 404, {} other: {}; {} slow)",
            r.requests - r.ok + r.slow,
            r.requests,
            r.not_found,
            r.other,
            r.others_summary(),
            r.slow
        ));
    }
}

/// Cold discoveries and hot tokens at the rig's current size; rows of `table`.
async fn discovery_shapes(
    rig: &Rig,
    plan: &Plan,
    idle: &CpuWindow,
    costs: &mut UnitCosts,
    table: &mut Table,
    wrong: &mut Vec<String>,
) {
    let live = rig.live();
    let n = live.len();
    // Cold: every path list long enough that no token comes back within the cache TTL.
    let targets = rig.cross_paths(usize::MAX);
    let cpu0 = rig.cpu();
    let redis0 = rig.redis().await;
    let r = load::run_spread(&targets, CONCURRENCY, plan.load, DEADLINE).await;
    let (w, redis1) = rig.window(&cpu0, &redis0).await;
    judge(&r, &format!("{n} nodes, cold discovery"), wrong);
    let (node_us, redis_us, machine_us) = w.net_per(idle, r.ok as f64);
    costs.node_us_per_cold = node_us;
    costs.redis_us_per_cold = redis_us.iter().sum();
    let publishes = redis1.publishes_since(&redis0) / r.ok.max(1) as f64;
    let per_target = targets.iter().map(|t| t.1.len()).min().unwrap_or(0);
    table.rows.push(vec![
        format!("cold: {per_target} tokens per asked node, none asked twice"),
        format!("{:.0}/s", r.rate()),
        us(r.quantile_us(0.5)),
        us(r.quantile_us(0.99)),
        format!(
            "node {node_us:.1}, Redis {}, machine {machine_us:.1}; {publishes:.2} PUBLISH",
            per_server(&redis_us, "", 1)
        ),
        "".into(),
        format!("{}/{} ok", r.ok, r.requests),
    ]);
    let warm = r.rate();

    // Hot: one token, then ten, of node 0, asked on every other node.
    for hot in [1usize, 10] {
        let paths: Arc<Vec<String>> = Arc::new(
            (0..hot)
                .map(|i| format!("/v0/hosties/{}", token("s0", i)))
                .collect(),
        );
        let askers: Vec<(SocketAddr, Arc<Vec<String>>)> = live
            .iter()
            .filter(|k| **k != 0 || n == 1)
            .map(|k| (rig.node(*k).http, paths.clone()))
            .collect();
        let rpc0 = rig.rpcs(0);
        let cpu0 = rig.cpu();
        let redis0 = rig.redis().await;
        let r = load::run_spread(&askers, CONCURRENCY, plan.load, DEADLINE).await;
        let (w, _) = rig.window(&cpu0, &redis0).await;
        let rpcs = rig.rpcs(0).saturating_sub(rpc0) as f64 / r.elapsed.as_secs_f64();
        judge(&r, &format!("{n} nodes, hot tokens ({hot})"), wrong);
        let (node_us, redis_us, machine_us) = w.net_per(idle, r.ok as f64);
        table.rows.push(vec![
            format!(
                "hot: {hot} token(s) of node 0, asked on the {} other node(s)",
                askers.len()
            ),
            format!(
                "{:.0}/s ({:.0} % of cold)",
                r.rate(),
                r.rate() / warm.max(1.0) * 100.0
            ),
            us(r.quantile_us(0.5)),
            us(r.quantile_us(0.99)),
            format!(
                "node {node_us:.1}, Redis {}, machine {machine_us:.1}",
                per_server(&redis_us, "", 1)
            ),
            format!(
                "{rpcs:.0}/s in all ({:.0}/s per token), {:.2} per discovery",
                rpcs / hot as f64,
                rpcs * r.elapsed.as_secs_f64() / r.ok.max(1) as f64
            ),
            format!("{}/{} ok", r.ok, r.requests),
        ]);
    }
}

/// Every gateway gone, then every gateway connecting at once: Redis CPU per release and per
/// registration, Redis memory per session, the time until every token is discoverable.
async fn connect_storm(
    rig: &mut Rig,
    idle: &CpuWindow,
    costs: &mut UnitCosts,
    table: &mut Table,
    wrong: &mut Vec<String>,
) {
    let name = rig.name();
    let total = rig.sessions();
    let live = rig.live();
    let targets: Vec<SocketAddr> = live.iter().map(|k| rig.node(*k).http).collect();
    let redis_idle_rate: Vec<f64> = idle.redis.iter().map(|s| s / idle.secs).collect();

    // Release: every gateway disconnects; done when Redis holds no token key any more.
    let redis0 = rig.redis().await;
    let released = Instant::now();
    for w in &mut rig.workers {
        w.clear();
    }
    let keys_left = wait_tokens_gone(rig, Duration::from_secs(120)).await;
    let release_took = released.elapsed();
    let redis1 = rig.redis().await;
    if keys_left > 0 {
        wrong.push(format!(
            "{name}: {keys_left} token keys left in Redis 120 s after every gateway closed"
        ));
    }
    let release_cpu: Vec<f64> = redis1
        .cpu_since(&redis0)
        .iter()
        .zip(&redis_idle_rate)
        .map(|(c, r)| (c - r * release_took.as_secs_f64()).max(0.0) * 1e6 / total as f64)
        .collect();
    let freed: Vec<f64> = redis0
        .memory_since(&redis1)
        .iter()
        .map(|m| m / total as f64)
        .collect();

    // Every gateway at once.
    let redis0 = rig.redis().await;
    let started = Instant::now();
    for k in &live {
        rig.spawn_gateways(*k);
    }
    let connected = rig.wait_connected(total, Duration::from_secs(300)).await;
    // Registration's cost ends here; the sweeps below (a lookup each) are not part of it.
    let took = started.elapsed();
    let redis1 = rig.redis().await;
    let tokens = rig.all_tokens();
    let rec = until_discoverable(&targets, &tokens, started, Duration::from_secs(400)).await;
    let reg_cpu: Vec<f64> = redis1
        .cpu_since(&redis0)
        .iter()
        .zip(&redis_idle_rate)
        .map(|(c, r)| (c - r * took.as_secs_f64()).max(0.0) * 1e6 / total as f64)
        .collect();
    if rec.took.is_none() || rec.not_found > 0 {
        wrong.push(format!(
            "{name}: connect storm: {} tokens never discoverable, {} 404s for connected gateways",
            rec.missing, rec.not_found
        ));
    }
    costs.redis_us_per_release = release_cpu.iter().sum();
    costs.redis_us_per_registration = reg_cpu.iter().sum();
    costs.redis_bytes_per_session = freed.iter().sum();
    table.rows.push(vec![
        name.to_owned(),
        format!("every gateway closes ({total}, {} nodes)", live.len()),
        format!("all records gone in {:.2} s", release_took.as_secs_f64()),
        format!(
            "Redis {} per release (net of idle); {} freed per session",
            per_server(&release_cpu, "µs", 1),
            per_server(&freed, "B", 0)
        ),
    ]);
    table.rows.push(vec![
        name.to_owned(),
        format!("every gateway connects at once ({total})"),
        format!(
            "all registered {}, all discoverable {} ({} 503 on the way)",
            secs(connected),
            secs(rec.took),
            rec.unavailable
        ),
        format!(
            "Redis {} per registration (net of idle); {:.0} registrations/s",
            per_server(&reg_cpu, "µs", 1),
            total as f64 / connected.unwrap_or(took).as_secs_f64()
        ),
    ]);
}

/// Waits until Redis holds no token key; how many are left at `limit`.
async fn wait_tokens_gone(rig: &Rig, limit: Duration) -> usize {
    let started = Instant::now();
    loop {
        let mut left = 0;
        for s in rig.data_servers() {
            left += count_keys(s.port, "bench:tok:*").await;
        }
        if left == 0 || started.elapsed() >= limit {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keys matching `pattern` on one server (`SCAN`, so that Redis is never blocked long).
async fn count_keys(port: u16, pattern: &str) -> usize {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connects for SCAN");
    let mut cursor: u64 = 0;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        n += keys.len();
        cursor = next;
        if cursor == 0 {
            return n;
        }
    }
}

/// `FLUSHALL`, then Redis restarted empty: the time until every session is discoverable
/// again, and the Redis CPU the re-assertion took. Every gateway stays connected throughout:
/// a 404 is a wrong answer.
async fn redis_loss(rig: &mut Rig, table: &mut Table, wrong: &mut Vec<String>) {
    let tokens = rig.all_tokens();
    let targets: Vec<SocketAddr> = rig.live().iter().map(|k| rig.node(*k).http).collect();
    for restart in [false, true] {
        let what = if restart {
            "Redis restarted empty (SIGKILL, same port)"
        } else {
            "FLUSHALL"
        };
        let redis0 = rig.redis().await;
        let started = Instant::now();
        let Topology::Standalone(server) = &mut rig.topology else {
            unreachable!("the Redis-loss storms run on one Redis")
        };
        tokio::task::block_in_place(|| {
            if restart {
                server.restart_empty();
            } else {
                let out = server.cli(&["FLUSHALL"]);
                assert_eq!(out.trim(), "OK", "FLUSHALL: {out}");
            }
        });
        let rec = until_discoverable(&targets, &tokens, started, Duration::from_secs(120)).await;
        let redis1 = rig.redis().await;
        // After a restart the server's CPU account starts again from zero.
        let cpu: f64 = if restart {
            redis1.servers.iter().map(|s| s.cpu).sum()
        } else {
            redis1.cpu_since(&redis0).iter().sum()
        };
        if rec.took.is_none() || rec.not_found > 0 {
            wrong.push(format!(
                "{what}: {} tokens never discoverable again, {} 404s for connected gateways",
                rec.missing, rec.not_found
            ));
        }
        table.rows.push(vec![
            rig.name().to_owned(),
            format!(
                "{what}, {} sessions on {} nodes",
                tokens.len(),
                targets.len()
            ),
            format!(
                "all discoverable again {} ({} 503 on the way, 0 expected 404: {})",
                secs(rec.took),
                rec.unavailable,
                rec.not_found
            ),
            format!(
                "Redis CPU {cpu:.2} s until then, re-assertion and the sweeps' lookups ({:.1} µs per session)",
                cpu * 1e6 / tokens.len() as f64
            ),
        ]);
    }
}

/// The last node killed: its gateways reconnect through nginx; discoveries of the survivors'
/// tokens on the survivors meanwhile.
async fn node_kill(rig: &mut Rig, plan: &Plan, table: &mut Table, wrong: &mut Vec<String>) {
    let victim = *rig.live().last().expect("nodes");
    let victims = rig.tokens_of(victim);
    let reconnects0: usize = rig.workers[victim].iter().map(Worker::reconnects).sum();
    let nginx0 = rig.lb.cpu_ticks();
    // The survivors' warm discovery load, as before the kill.
    let survivors: Vec<usize> = rig.live().into_iter().filter(|k| *k != victim).collect();
    let targets = rig.cross_paths_among(&survivors, WARM_TOKENS);
    let before = load::run_spread(&targets, CONCURRENCY, plan.load, DEADLINE).await;
    judge(&before, "survivors before the kill", wrong);
    let survivor_addrs: Vec<SocketAddr> = survivors.iter().map(|k| rig.node(*k).http).collect();
    let killed = Instant::now();
    rig.nodes[victim].as_mut().expect("the victim").kill9();
    rig.nodes[victim] = None;
    let during = load::run_spread(&targets, CONCURRENCY, plan.load, DEADLINE);
    let back = until_discoverable(&survivor_addrs, &victims, killed, Duration::from_secs(120));
    let (during, back) = tokio::join!(during, back);
    judge_storm(&during, "survivors during the node-kill storm", wrong);
    if back.took.is_none() {
        wrong.push(format!(
            "node kill: {} of {} tokens never discoverable again",
            back.missing,
            victims.len()
        ));
    }
    let reconnects: usize = rig.workers[victim]
        .iter()
        .map(Worker::reconnects)
        .sum::<usize>()
        - reconnects0;
    let nginx = (rig.lb.cpu_ticks() - nginx0) as f64 / TICKS_PER_SEC;
    table.rows.push(vec![
        rig.name().to_owned(),
        format!(
            "node {victim} of {} killed holding {} sessions; they reconnect through nginx",
            survivors.len() + 1,
            victims.len()
        ),
        format!(
            "all discoverable again {} after SIGKILL ({reconnects} reconnects; {} 404 and {} 503 while they were away)",
            secs(back.took),
            back.not_found,
            back.unavailable
        ),
        format!(
            "survivors' discoveries: p50 {} p99 {} during, {} {} before; {}/{} ok ({}); nginx CPU {nginx:.2} s",
            us(during.quantile_us(0.5)),
            us(during.quantile_us(0.99)),
            us(before.quantile_us(0.5)),
            us(before.quantile_us(0.99)),
            during.ok,
            during.requests,
            during.others_summary()
        ),
    ]);
    // Back on its ports, empty, for the rolling restart.
    rig.start_node(victim).await;
}

/// A rolling update of every node as the chart runs it (`updateStrategy`: maxSurge 1,
/// maxUnavailable 0; `minReadySeconds`): a new node starts first (on the spare ports) and is
/// ready for `min_ready`, then an old one is drained (SIGTERM) and started again on its ports,
/// which makes it the next step's new node; the last old node is drained and not started
/// again, the surge node taking its place. So every drain happens with as many nodes up as
/// before it, and its gateways find the room a new node has. Discoveries of every token
/// through nginx and straight to the nodes up meanwhile: none past the deadline; the 404s are
/// counted (a gateway between its sessions is not registered anywhere).
///
/// Restarting in place without the surge (as this bench did before) leaves the survivors of
/// each drain with the whole cluster's sessions: at 8 × 17,000 against `--max-sessions 19500`,
/// 99.6 % full, and the gateways' refused reconnects back off for minutes.
async fn rolling_restart(rig: &mut Rig, table: &mut Table, wrong: &mut Vec<String>) {
    let tokens = rig.all_tokens();
    let paths: Vec<String> = {
        // Interleaved across the nodes' token lists, so the load touches every node's.
        let n = rig.live().len();
        let per = rig.per_node;
        (0..per)
            .flat_map(|i| (0..n).map(move |k| (k, i)))
            .map(|(k, i)| format!("/v0/hosties/{}", token(&format!("s{k}"), i)))
            .collect()
    };
    let paths = Arc::new(paths);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Two loads side by side: through nginx (what clients see), and straight to the nodes that
    // are up (hostie alone, without the balancer's queue and retries).
    let up: Arc<std::sync::Mutex<Vec<(usize, SocketAddr)>>> = Arc::new(std::sync::Mutex::new(
        rig.live().iter().map(|k| (*k, rig.node(*k).http)).collect(),
    ));
    let lb = rig.lb.addr;
    // The load generator's own stalls, to tell them from hostie's in the late answers.
    let lag = load::LagProbe::start();
    let load_on = |targets: Box<dyn Fn() -> Vec<SocketAddr> + Send>| {
        let (paths, done) = (paths.clone(), done.clone());
        tokio::spawn(async move {
            let mut total = LoadResult::empty();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let t: Vec<_> = targets().into_iter().map(|a| (a, paths.clone())).collect();
                let r = load::run_spread(&t, 16, Duration::from_secs(1), DEADLINE).await;
                total.merge(&r);
            }
            total
        })
    };
    let via_lb = load_on(Box::new(move || vec![lb]));
    let direct = load_on(Box::new({
        let up = up.clone();
        move || {
            let up = up.lock().unwrap_or_else(|p| p.into_inner());
            up.iter().map(|(_, a)| *a).collect()
        }
    }));
    let started = Instant::now();
    let mut drains = Vec::new();
    // What the nodes themselves counted: each node's counters before its drain, and every
    // node's at the end (the restarted nodes count from zero); less the counts before.
    let mut counted = std::collections::BTreeMap::new();
    for k in rig.live() {
        for (key, v) in discovery_counts(rig.node(k).admin).await {
            *counted.entry(key).or_default() -= v;
        }
    }
    let old = rig.live();
    let last = *old.last().expect("a live node");
    // The surge node, named and listed after the others; it takes the last old node's place.
    let surge_slot = rig.nodes.len();
    let surge = rig.spawn_node(rig.spare, &format!("n{surge_slot}")).await;
    up.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((surge_slot, surge.http));
    tokio::time::sleep(rig.min_ready).await;
    for &k in &old {
        // Out of the direct load's targets before its drain: its one-second rounds that
        // began with it end first.
        up.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(j, _)| *j != k);
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let before_drain = discovery_counts(rig.node(k).admin).await;
        add_counts(&mut counted, before_drain);
        let t0 = Instant::now();
        let exited = rig.nodes[k]
            .as_mut()
            .expect("a live node")
            .drain(Duration::from_secs(60))
            .await;
        if !exited {
            wrong.push(format!(
                "rolling restart: node {k} did not exit within 60 s of SIGTERM"
            ));
        }
        drains.push(t0.elapsed().as_secs_f64());
        rig.nodes[k] = None;
        if k == last {
            break;
        }
        rig.start_node(k).await;
        up.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((k, rig.node(k).http));
        tokio::time::sleep(rig.min_ready).await;
    }
    // The surge node in the last one's slot, on ports that are now its own.
    std::mem::swap(&mut rig.ports[last], &mut rig.spare);
    rig.base_rss[last] = surge.rss_kib();
    rig.nodes[last] = Some(surge);
    // Up to 240 s, in steps of 10 s with the count so far (a stall and a slow trickle differ).
    let waited = Instant::now();
    let mut all = None;
    for _ in 0..24 {
        if rig
            .wait_connected(tokens.len(), Duration::from_secs(10))
            .await
            .is_some()
        {
            all = Some(waited.elapsed());
            break;
        }
        eprintln!(
            "bench: rolling restart: {} of {} gateways connected {:.0} s after the last drain",
            rig.connected(),
            tokens.len(),
            waited.elapsed().as_secs_f64()
        );
    }
    if all.is_none() {
        // Who is missing (by the node their gateways first registered at), where the others
        // are, and what the nodes answered the reconnects: why they are not back.
        let missing: Vec<String> = (0..rig.nodes.len())
            .map(|k| {
                let held: usize = rig.workers[k].iter().map(Worker::connected).sum();
                format!("s{k} {}", rig.per_node.saturating_sub(held))
            })
            .collect();
        let mut sessions = Vec::new();
        let mut results = std::collections::BTreeMap::new();
        for k in rig.live() {
            let c = node_counts(rig.node(k).admin).await;
            sessions.push(format!(
                "n{k} {:.0}",
                c.get("sessions").copied().unwrap_or(0.0)
            ));
            add_counts(
                &mut results,
                c.into_iter()
                    .filter(|(k, _)| k.starts_with("registration"))
                    .collect(),
            );
        }
        eprintln!(
            "bench: rolling restart: gateways not back after 240 s, by their first node: {}; \
             sessions per node: {}; the nodes' registration results since their start: {results:?}",
            missing.join(", "),
            sessions.join(", ")
        );
    }
    let targets: Vec<SocketAddr> = rig.live().iter().map(|k| rig.node(*k).http).collect();
    let rec = until_discoverable(&targets, &tokens, Instant::now(), Duration::from_secs(180)).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = via_lb.await.expect("the load task");
    for k in rig.live() {
        add_counts(&mut counted, discovery_counts(rig.node(k).admin).await);
    }
    let counted = counted
        .iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    let d = direct.await.expect("the load task");
    let lag = lag.stop();
    let (lag_p99, lag_max) = load::LagProbe::summary(&lag);
    let slow = rig.lb.slow();
    let stalls = format!(
        "the load generator's own wake-ups late by p99 {}, max {}; of the answers past the \
         deadline, in time but for its stall during them: {} through nginx, {} straight; \
         nginx took ≥ 2 s over {} discoveries: {} of them waiting ≥ 2 s on the nodes (all tries), \
         {} tried more than one node, nginx's own time beyond the nodes' at most {:.3} s",
        us(lag_p99.as_micros() as u64),
        us(lag_max.as_micros() as u64),
        load::LagProbe::explains(&lag, &r.late, DEADLINE),
        load::LagProbe::explains(&lag, &d.late, DEADLINE),
        slow.count,
        slow.upstream,
        slow.retried,
        slow.max_own,
    );
    eprintln!("bench: rolling restart: {stalls}");
    // 503 ("unsure, retry") is a right answer while nodes come and go; anything else but a
    // 200 or a 404 is not, nor is an answer past the deadline.
    for (r, how) in [(&r, "through nginx"), (&d, "straight to the nodes")] {
        let bad = r.other - r.others.get(&503).copied().unwrap_or(0);
        if r.slow > 0 || bad > 0 || r.requests == 0 {
            wrong.push(format!(
                "rolling restart, {how}: {} answers past the deadline, {bad} neither 200, 404 nor 503 ({}) of {}",
                r.slow,
                r.others_summary(),
                r.requests
            ));
        }
    }
    // A 404 is wrong only for a gateway that is connected: judged once all are.
    if all.is_some() && (rec.took.is_none() || rec.not_found > 0) {
        wrong.push(format!(
            "rolling restart: {} connected of {}; afterwards {} tokens not discoverable within \
             180 s ({} 404 and {} 503 answers on the way)",
            rig.connected(),
            tokens.len(),
            rec.missing,
            rec.not_found,
            rec.unavailable
        ));
    }
    let reconnects: usize = rig.workers.iter().flatten().map(Worker::reconnects).sum();
    table.rows.push(vec![
        rig.name().to_owned(),
        format!(
            "rolling update of all {} nodes with drain, a new node first (maxSurge 1, maxUnavailable 0, ready {} s before each drain), {} sessions",
            drains.len(),
            rig.min_ready.as_secs_f64(),
            tokens.len()
        ),
        format!(
            "{:.1} s in all, 1.2 s before each drain included (drains {}); every gateway back {} after the last drain (waited ≤ 240 s), every token discoverable {} after that ({} missing at the end; {} 404 and {} 503 answers on the way); {reconnects} reconnects so far",
            started.elapsed().as_secs_f64(),
            drains
                .iter()
                .map(|d| format!("{d:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            secs(all),
            secs(rec.took),
            rec.missing,
            rec.not_found,
            rec.unavailable
        ),
        [(&r, "through nginx"), (&d, "straight to the nodes up")]
            .iter()
            .map(|(r, how)| {
                format!(
                    "discoveries {how}: {} answers, {} 200, {} 404 (gateway between sessions), {} other ({}), {} past the deadline; p99 {}",
                    r.requests,
                    r.ok,
                    r.not_found,
                    r.other,
                    r.others_summary(),
                    r.slow,
                    us(r.quantile_us(0.99))
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
            + &format!("; the nodes' own counts of their discoveries (a node's last ones before its exit left out): {counted}; {stalls}"),
    ]);
}

/// A node's discoveries so far as its own metrics count them: by outcome, and how many of
/// them its handler took more than 2.5 s over (the histogram's last bucket below 5 s).
async fn discovery_counts(admin: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    node_counts(admin)
        .await
        .into_iter()
        .filter(|(k, _)| !k.starts_with("registration") && k != "sessions")
        .collect()
}

/// [`discovery_counts`], its registration attempts by result (`registration {result}`) and
/// its sessions (`sessions`).
async fn node_counts(admin: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(res) = reqwest::get(format!("http://{admin}/metrics")).await else {
        return out;
    };
    let text = res.text().await.unwrap_or_default();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        let key = if let Some(rest) = series.strip_prefix("hostie_discoveries_total{outcome=\"") {
            rest.trim_end_matches("\"}").to_owned()
        } else if let Some(rest) = series.strip_prefix("hostie_registrations_total{result=\"") {
            format!("registration {}", rest.trim_end_matches("\"}"))
        } else if series == "hostie_sessions" {
            "sessions".to_owned()
        } else if series.starts_with("hostie_discovery_overruns_total") {
            "handler past the deadline".to_owned()
        } else if series.starts_with("hostie_discovery_duration_seconds_count") {
            "over 2.5 s".to_owned()
        } else if series.starts_with("hostie_discovery_duration_seconds_bucket")
            && series.contains("le=\"2.5\"")
        {
            *out.entry("over 2.5 s".to_owned()).or_default() -= value;
            continue;
        } else {
            continue;
        };
        *out.entry(key).or_default() += value;
    }
    out
}

fn add_counts(
    total: &mut std::collections::BTreeMap<String, f64>,
    more: std::collections::BTreeMap<String, f64>,
) {
    for (k, v) in more {
        *total.entry(k).or_default() += v;
    }
}

/// The capacity model: what the measured per-unit costs say a size needs. `anti_entropy`:
/// the interval the figures were measured with (the default is 60 s).
fn capacity_model(c: &UnitCosts, cluster_overhead: f64, anti_entropy: Duration) -> String {
    // Sessions per node process: 19,000 (fd limit 20,000), planned at 70 % so that the
    // survivors of a lost node take its gateways.
    const PER_NODE: f64 = 19_000.0 * UTIL;
    const BASE_MIB: f64 = 10.0;
    // Anti-entropy is the whole per-session Redis cost of an idle session (pings never reach
    // Redis); measured every `anti_entropy`, planned at the default 60 s.
    let per_session_min = c.redis_us_per_idle_session_min * anti_entropy.as_secs_f64() / 60.0;
    let mut out = String::from("### Capacity model (derived from the costs above)\n\n");
    out.push_str(&format!(
        "Assumptions: gateways ping every 10 s (the real client) and reconnect once a day \
         (deploys, restarts: one registration and one release each); one discovery per bot \
         start, every one cold (no cache hit); a node is one core and ≤ 19,000 sessions (fd \
         limit 20,000), both planned at 70 % (13,300 sessions), so that the survivors of a lost \
         node take its gateways; a node's base RSS ≈ {BASE_MIB:.0} MiB; Redis ≈ one core per \
         server or shard, planned at 70 %; anti-entropy every 60 s (the default; measured every \
         {} s and scaled).\n\n",
        anti_entropy.as_secs()
    ));
    out.push_str(&format!(
        "Per-unit costs used (the largest standalone size above): node RSS {:.1} KiB per \
         session (and ≈ 9.5 KiB of kernel socket memory outside it); node idle CPU {:.4} cores \
         per 1,000 sessions; node CPU {:.1} µs per cold discovery (the asked and the owner \
         node); Redis {:.1} µs per cold discovery, {:.2} µs per idle session per minute, {:.0} µs \
         per node per second (heartbeat), {:.1} µs per registration, {:.1} µs per release, {:.0} B \
         per session.\n\n",
        c.rss_kib_per_session,
        c.idle_cores_per_1k,
        c.node_us_per_cold,
        c.redis_us_per_cold,
        per_session_min,
        c.redis_us_per_node_s,
        c.redis_us_per_registration,
        c.redis_us_per_release,
        c.redis_bytes_per_session
    ));
    out.push_str(
        "| size | nodes (1 core, ≤ 13,300 sessions) | node CPU | memory per node (RSS) | Redis CPU | Redis memory | Redis | runs out first |\n|---|---|---|---|---|---|---|---|\n",
    );
    for gateways in [100_000.0, 1_000_000.0, 10_000_000.0_f64] {
        let by_sockets = (gateways / PER_NODE).ceil();
        let idle_cores = gateways / 1000.0 * c.idle_cores_per_1k;
        let by_cpu = (idle_cores / UTIL).ceil();
        let nodes = by_sockets.max(by_cpu).max(2.0);
        let mem_mib = BASE_MIB + gateways / nodes * c.rss_kib_per_session / 1024.0;
        let churn = gateways / 86_400.0;
        let redis_cores = (nodes * c.redis_us_per_node_s
            + gateways * per_session_min / 60.0
            + churn * (c.redis_us_per_registration + c.redis_us_per_release))
            / 1e6;
        let redis_mib = gateways * c.redis_bytes_per_session / 1_048_576.0;
        let first = if redis_cores > UTIL {
            "Redis CPU: one server is not enough"
        } else if by_sockets >= by_cpu {
            "node sockets (sessions per process)"
        } else {
            "node CPU (pings)"
        };
        out.push_str(&format!(
            "| {} registered gateways | {nodes:.0} | {idle_cores:.2} cores ({:.0} % of {nodes:.0}) | {mem_mib:.0} MiB | {redis_cores:.3} cores | {redis_mib:.0} MiB | {} | {first} |\n",
            thousands(gateways),
            idle_cores / nodes * 100.0,
            redis_kind(redis_cores, cluster_overhead),
        ));
    }
    for rate in [1_000.0, 10_000.0, 100_000.0_f64] {
        let node_cores = rate * c.node_us_per_cold / 1e6;
        let nodes = (node_cores / UTIL).ceil().max(2.0);
        let redis_cores = rate * c.redis_us_per_cold / 1e6;
        let first = if redis_cores > UTIL {
            "Redis CPU: one server is not enough"
        } else {
            "node CPU (add nodes)"
        };
        out.push_str(&format!(
            "| {} cold discoveries/s | {nodes:.0} | {node_cores:.2} cores | — | {redis_cores:.3} cores | — | {} | {first} |\n",
            thousands(rate),
            redis_kind(redis_cores, cluster_overhead),
        ));
    }
    let per_redis_discoveries = UTIL * 1e6 / c.redis_us_per_cold.max(1e-9);
    let per_redis_gateways = UTIL * 1e6
        / (per_session_min / 60.0
            + (c.redis_us_per_registration + c.redis_us_per_release) / 86_400.0
            + c.redis_us_per_node_s / PER_NODE);
    out.push_str(&format!(
        "\nOne Redis at 70 % of its core carries about {} cold discoveries/s, or {} registered \
         gateways (anti-entropy, heartbeats, daily churn), or a mix in proportion. A node's core \
         at 70 % carries about {:.0} cold discoveries/s; a node took {:.0} new sessions/s \
         when its gateways connected at once. A Cluster's shards together were \
         measured using {:.0} % of one server's Redis CPU per warm discovery with as many nodes: \
         the shard counts above include that.\n",
        thousands(per_redis_discoveries),
        thousands(per_redis_gateways),
        UTIL * 1e6 / c.node_us_per_cold.max(1e-9),
        c.registrations_per_node_s,
        cluster_overhead * 100.0
    ));
    out
}

/// What Redis `cores` (standalone-equivalent CPU) need: one server while it fits in 70 % of
/// a core, else a Cluster whose shards each take 70 % of a core of the work scaled by the
/// Cluster's measured overhead (its total CPU per unit of work over standalone's).
fn redis_kind(cores: f64, cluster_overhead: f64) -> String {
    if cores <= UTIL {
        "one Redis (standalone, or Sentinel for failover)".into()
    } else {
        format!(
            "Cluster, {:.0} shards",
            (cores * cluster_overhead / UTIL).ceil().max(3.0)
        )
    }
}

/// Every core and every Redis is planned at 70 %.
const UTIL: f64 = 0.7;

fn thousands(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6).replace(".0M", "M")
    } else {
        format!("{:.0}k", v / 1e3)
    }
}

/// The whole scaling run: its Markdown, and every wrong answer seen.
pub(crate) async fn run(args: &Args) -> (String, Vec<String>) {
    let plan = Plan {
        counts: if args.smoke {
            vec![1, 2]
        } else {
            vec![1, 2, 4, 8]
        },
        per_node: args.sessions_per_node,
        idle: Duration::from_secs(args.idle_cpu_seconds),
        load: Duration::from_secs(args.seconds),
        smoke: args.smoke,
        rolling_restart_only: args.rolling_restart_only,
    };
    let mut wrong = Vec::new();
    let mut tables = [
        Table::new(
            "Per node, as nodes are added (the same sessions per node)",
            &[
                "topology",
                "nodes",
                "sessions",
                "RSS KiB per session (mean, max over nodes)",
                "idle CPU per 1,000 sessions, % of a core (mean, max)",
                "Redis commands/s per node, idle",
                "registrations/s (new nodes' gateways at once)",
                "per registration (net of idle, the new sessions' own pings included)",
                "machine busy when idle, cores of 2",
            ],
        ),
        Table::new(
            "Redis cost per unit of work (per server; per shard on the Cluster)",
            &[
                "topology",
                "nodes",
                "memory per registered session",
                "CPU per registration",
                "CPU per idle session per minute (beyond the nodes' heartbeats)",
                "CPU per warm cross-node discovery (net of idle)",
                "PUBLISH per discovery",
            ],
        ),
        Table::new(
            "Warm cross-node discovery (1,000 tokens per asked node held by the others, remote cache warm; fixed-rate rows: 8 connections per node)",
            &[
                "topology",
                "nodes",
                "kind",
                "throughput",
                "p50",
                "p99",
                "node CPU µs/discovery (all nodes, net of idle)",
                "node context switches/discovery (voluntary and preempted)",
                "Redis µs",
                "machine µs",
                "of the /livez floor",
                "answers",
            ],
        ),
    ];
    let mut shapes = Table::new(
        "Discovery shapes at the largest size (64 concurrent)",
        &[
            "load",
            "throughput",
            "p50",
            "p99",
            "CPU µs per discovery (net of idle)",
            "gateway JSON-RPCs",
            "answers",
        ],
    );
    let mut storms = Table::new(
        "Storms at the largest size",
        &["topology", "storm", "recovery", "cost"],
    );

    let max = *plan.counts.last().expect("node counts");
    let mut rig = Rig::new(Topology::standalone(), &plan, max);
    rig.start_empty(plan.idle).await;
    // The floor: bare /livez at 64 concurrent on the first node's admin listener.
    let livez = load::run_spread(
        &[(rig.node(0).admin, Arc::new(vec!["/livez".to_owned()]))],
        CONCURRENCY,
        plan.load,
        DEADLINE,
    )
    .await;
    let floor_note = format!(
        "Floor in the same run: `/livez` at 64 concurrent {:.0}/s, p50 {}, p99 {}.",
        livez.rate(),
        us(livez.quantile_us(0.5)),
        us(livez.quantile_us(0.99))
    );
    if let Some(baseline) = &args.baseline_binary {
        drop(rig);
        for (binary, label) in [
            (baseline.as_path(), "standalone, before (--baseline-binary)"),
            (release_binary(), "standalone, after (this build)"),
        ] {
            let mut rig = Rig::new(Topology::standalone(), &plan, max).running(binary, label);
            rig.start_empty(plan.idle).await;
            grow_series(
                &mut rig,
                &plan.counts,
                &plan,
                livez.rate(),
                &mut tables,
                &mut wrong,
            )
            .await;
        }
        tables[2].notes.push(floor_note);
        let text = tables.iter().map(|t| t.markdown() + "\n").collect();
        return (text, wrong);
    }
    if plan.rolling_restart_only {
        let n = *plan.counts.last().expect("node counts");
        grow_series(&mut rig, &[n], &plan, livez.rate(), &mut tables, &mut wrong).await;
        rolling_restart(&mut rig, &mut storms, &mut wrong).await;
        return (storms.markdown(), wrong);
    }
    let (last, standalone_warm) = grow_series(
        &mut rig,
        &plan.counts,
        &plan,
        livez.rate(),
        &mut tables,
        &mut wrong,
    )
    .await;
    let Step {
        idle, mut costs, n, ..
    } = last;
    shapes.title = format!("{} ({n} nodes, standalone)", shapes.title);
    discovery_shapes(&rig, &plan, &idle, &mut costs, &mut shapes, &mut wrong).await;
    connect_storm(&mut rig, &idle, &mut costs, &mut storms, &mut wrong).await;
    redis_loss(&mut rig, &mut storms, &mut wrong).await;
    node_kill(&mut rig, &plan, &mut storms, &mut wrong).await;
    rolling_restart(&mut rig, &mut storms, &mut wrong).await;
    drop(rig);

    // The Cluster: growth and the connect storm, per shard.
    let cluster_counts: Vec<usize> = if plan.smoke { vec![2] } else { vec![2, 4] };
    let mut rig = Rig::new(
        Topology::cluster(),
        &plan,
        *cluster_counts.last().expect("counts"),
    );
    rig.start_empty(plan.idle).await;
    let (last, _) = grow_series(
        &mut rig,
        &cluster_counts,
        &plan,
        livez.rate(),
        &mut tables,
        &mut wrong,
    )
    .await;
    let Step {
        idle: c_idle,
        costs: mut c_costs,
        n: c_n,
    } = last;
    connect_storm(&mut rig, &c_idle, &mut c_costs, &mut storms, &mut wrong).await;
    drop(rig);
    // The Cluster's Redis CPU per warm discovery over all shards, against one server's with
    // as many nodes.
    let same_n = standalone_warm
        .iter()
        .find(|(n, _)| *n == c_n)
        .map_or(costs.redis_us_per_warm, |(_, us)| *us);
    let overhead = (c_costs.redis_us_per_warm / same_n.max(1e-9)).max(1.0);

    tables[2].notes.push(floor_note);
    let mut text = String::new();
    for t in tables.iter().chain([&shapes, &storms]) {
        text.push_str(&t.markdown());
        text.push('\n');
    }
    text.push_str(&capacity_model(&costs, overhead, plan.idle));
    (text, wrong)
}
