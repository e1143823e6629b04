//! Real Redis topologies for the Sentinel and Cluster tests (and later the benchmark): a
//! [`RedisCluster`] of primaries and replicas, and a [`RedisSentinelGroup`] of one primary,
//! one replica and three sentinels. Debian's `redis-server` on free loopback ports, each
//! instance in its own temporary directory, every process killed when dropped. Never mocked;
//! a machine without `redis-server` or `redis-cli` fails saying how to install them.
//!
//! Every method blocks the calling thread (it runs `redis-cli` and polls): in an async test,
//! call them inside `tokio::task::block_in_place`. Every wait is bounded and panics with what
//! it last saw when the bound passes.

use crate::free_port;
use crate::redis_server::{require, server_binary};
use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The number of hash slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

/// How long an instance may take to answer its first `PING`.
const PING_WITHIN: Duration = Duration::from_secs(5);
/// How long a new cluster may take to agree on every slot.
const CLUSTER_OK_WITHIN: Duration = Duration::from_secs(20);
/// How long a sentinel group may take to discover its replica and the other sentinels.
const SENTINELS_READY_WITHIN: Duration = Duration::from_secs(20);
/// How long a failover (manual or after a kill) may take.
const FAILOVER_WITHIN: Duration = Duration::from_secs(20);
/// Between two polls.
const POLL: Duration = Duration::from_millis(50);

/// Ports this process already handed to an instance (and a cluster node's bus port): tests
/// run in parallel, and `free_port` alone may give two of them the same released port.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free loopback port not handed out before in this process; with `bus`, `port + 10000`
/// (a cluster node's bus port) is below 65536 and free too.
fn pick_port(bus: bool) -> u16 {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for _ in 0..1_000 {
        let port = free_port();
        if handed.contains(&port) {
            continue;
        }
        if bus {
            let Some(bus_port) = port.checked_add(10_000) else {
                continue;
            };
            if handed.contains(&bus_port) || TcpListener::bind(("127.0.0.1", bus_port)).is_err() {
                continue;
            }
            handed.insert(bus_port);
        }
        handed.insert(port);
        return port;
    }
    panic!("no free loopback port (with bus port: {bus}) in 1000 tries");
}

/// Runs `redis-cli -p port args…` (an option such as `-c` may lead `args`); its standard
/// output, or `None` when it could not connect or failed.
fn try_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cli(port: u16, args: &[&str]) -> String {
    require("redis-cli");
    try_cli(port, args).unwrap_or_else(|| panic!("redis-cli -p {port} {args:?} ran"))
}

/// `ROLE`'s first line (`master`, `slave` or `sentinel`), or `None` when the port answers not.
fn role(port: u16) -> Option<String> {
    try_cli(port, &["ROLE"]).and_then(|out| out.lines().next().map(|l| l.trim().to_owned()))
}

/// The `field:value` lines of an `INFO` (or `CLUSTER INFO`) answer.
fn info_fields(info: &str) -> HashMap<String, String> {
    info.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Polls `done` every [`POLL`] until it returns `true`; panics with `what` and `last()` when
/// `within` passes. Returns the time it took.
fn wait_until(
    within: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    last: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        if start.elapsed() > within {
            panic!("{what}: not within {within:?}; last seen:\n{}", last());
        }
        std::thread::sleep(POLL);
    }
}

/// One `redis-server` process (data node or sentinel) in its own temporary directory.
struct Instance {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// What it was started with, to start it again.
    args: Vec<String>,
}

impl Instance {
    /// Starts `redis-server` with `args(port, dir)` on a new port (with `bus`: its bus port
    /// free too); ready (it answered `PING`) when returned. A port taken meanwhile by someone
    /// else makes the server exit at once: then again on another port, a few times.
    fn spawn(bus: bool, args: impl Fn(u16, &Path) -> Vec<String>) -> Self {
        require(&server_binary());
        require("redis-cli");
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = pick_port(bus);
            let log = dir.path().join("redis.log");
            let mut args = args(port, dir.path());
            args.extend(["--daemonize".into(), "no".into(), "--logfile".into()]);
            args.push(log.display().to_string());
            let child = Command::new(server_binary())
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            let mut instance = Self {
                port,
                child: Some(child),
                dir,
                args,
            };
            let end = Instant::now() + PING_WITHIN;
            while Instant::now() < end {
                if try_cli(port, &["PING"]).is_some_and(|out| out.trim() == "PONG") {
                    return instance;
                }
                let exited = instance
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if exited.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            last_log = instance.log_tail();
            instance.kill();
        }
        panic!("redis-server did not start in 5 tries; its last log:\n{last_log}");
    }

    fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it again after [`Instance::kill`]: same port, same directory (a cluster node
    /// keeps its `nodes.conf`, so its identity and slots), no data. Ready when returned.
    fn start_again(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.port);
        let child = Command::new(server_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let end = Instant::now() + PING_WITHIN;
        while Instant::now() < end {
            if try_cli(self.port, &["PING"]).is_some_and(|out| out.trim() == "PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "{} did not start again; its log:\n{}",
            self.port,
            self.log_tail()
        );
    }

    /// SIGKILL, then reaped: gone at once, nothing saved.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of its log (for a panic message).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to start a [`RedisCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `--cluster-node-timeout`: how long a node may be unreachable before it is failed over.
    pub node_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            node_timeout: Duration::from_millis(2_000),
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct ClusterNode {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// The primary's id for a replica, `-` for a primary.
    primary_id: String,
    /// Owned slot ranges, inclusive (the `[slot->-id]` migration marks left out).
    slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_primary(&self) -> bool {
        self.has_flag("master")
    }

    /// Flagged failed or suspected by the node asked.
    fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }

    fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next()?.to_owned();
            let addr = fields.next()?;
            let port = addr
                .split(['@', ','])
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields.next()?.split(',').map(str::to_owned).collect();
            let primary_id = fields.next()?.to_owned();
            let slots = fields
                .skip(4)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(ClusterNode {
                id,
                port,
                flags,
                primary_id,
                slots,
            })
        })
        .collect()
}

/// A running Redis Cluster on loopback: `primaries` primaries (at least 3, `redis-cli --cluster
/// create`'s minimum) sharing the 16384 slots, each with `replicas_per_primary` replicas.
/// Empty, persisting nothing; every instance killed when dropped.
pub struct RedisCluster {
    nodes: Vec<Instance>,
}

impl RedisCluster {
    /// Starts and creates the cluster with [`ClusterOptions::default`]; every instance says
    /// `cluster_state:ok`, every slot is covered and every replica is in sync when returned.
    pub fn start(primaries: usize, replicas_per_primary: usize) -> Self {
        Self::start_with(primaries, replicas_per_primary, ClusterOptions::default())
    }

    /// [`RedisCluster::start`] with `options`.
    pub fn start_with(
        primaries: usize,
        replicas_per_primary: usize,
        options: ClusterOptions,
    ) -> Self {
        assert!(
            primaries >= 3,
            "redis-cli --cluster create needs at least 3 primaries, not {primaries}"
        );
        let timeout_ms = options.node_timeout.as_millis().to_string();
        let count = primaries * (1 + replicas_per_primary);
        let nodes = (0..count)
            .map(|_| {
                Instance::spawn(true, |port, dir| {
                    let mut args = data_args(port, dir);
                    args.extend(
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            &format!("nodes-{port}.conf"),
                            "--cluster-node-timeout",
                            &timeout_ms,
                        ]
                        .map(str::to_owned),
                    );
                    args
                })
            })
            .collect();
        let cluster = Self { nodes };
        let addrs: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas_per_primary.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok(CLUSTER_OK_WITHIN);
        let expected = cluster.ports().len();
        wait_until(
            CLUSTER_OK_WITHIN,
            "every node knows every node and every replica is in sync",
            || {
                cluster.ports().iter().all(|&p| {
                    let nodes = cluster.nodes_seen_by(p);
                    nodes.len() == expected
                        && nodes.iter().filter(|n| n.is_primary()).count() == primaries
                }) && cluster
                    .ports()
                    .iter()
                    .all(|&p| cluster.in_sync_if_replica(p))
            },
            || cluster.cli(cluster.ports()[0], &["CLUSTER", "NODES"]),
        );
        cluster
    }

    /// Every instance's port, killed ones included, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of the instances still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.port)
            .collect()
    }

    /// `redis://127.0.0.1:P/` for each live primary (in the view of a live instance).
    pub fn seeds(&self) -> Vec<String> {
        self.primaries()
            .into_iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// hostie's `--redis-url` for this cluster: `redis+cluster://` with every live instance as
    /// a seed.
    pub fn hostie_url(&self) -> String {
        let seeds: Vec<String> = self
            .live_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Runs `redis-cli -c` (following `MOVED`) on a live instance; its output.
    pub fn cli_any(&self, args: &[&str]) -> String {
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        cli(self.any_live(), &all)
    }

    /// The ports of the live primaries (in the view of a live instance), sorted.
    pub fn primaries(&self) -> Vec<u16> {
        let live = self.live_ports();
        let mut ports: Vec<u16> = self
            .view()
            .into_iter()
            .filter(|n| n.is_primary() && !n.is_failing() && live.contains(&n.port))
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The ports of `primary`'s replicas (in the view of a live instance), sorted.
    pub fn replicas_of(&self, primary: u16) -> Vec<u16> {
        let view = self.view();
        let id = view
            .iter()
            .find(|n| n.port == primary)
            .map(|n| n.id.clone())
            .unwrap_or_else(|| panic!("{primary} is a cluster node"));
        let mut ports: Vec<u16> = view
            .iter()
            .filter(|n| n.primary_id == id)
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The port of the primary owning `slot` (in the view of a live instance).
    pub fn primary_for_slot(&self, slot: u16) -> u16 {
        self.view()
            .iter()
            .find(|n| n.is_primary() && n.owns(slot))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no primary owns slot {slot}"))
    }

    /// `CLUSTER KEYSLOT key`, asked of a live instance.
    pub fn keyslot(&self, key: &str) -> u16 {
        let out = self.cli(self.any_live(), &["CLUSTER", "KEYSLOT", key]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key}: {out}"))
    }

    /// Runs `redis-cli -p port args…` (lead `args` with `-c` to follow `MOVED`); its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, args)
    }

    /// SIGKILLs the instance on `port` (reaped; nothing saved). Its slots stay down until its
    /// replica takes over: see [`RedisCluster::wait_ok`].
    pub fn kill(&mut self, port: u16) {
        self.node_mut(port).kill();
    }

    /// Starts the instance on `port`, killed before, again: same identity and slots (its
    /// `nodes.conf` kept), no data, as a primary that restarts without persistence. Waits
    /// until the cluster is ok ([`RedisCluster::wait_ok`]); returns the time that took.
    pub fn restart_empty(&mut self, port: u16) -> Duration {
        let started = Instant::now();
        self.node_mut(port).start_again();
        self.wait_ok(Duration::from_secs(20));
        started.elapsed()
    }

    /// `CLUSTER FAILOVER` on `replica_port`, then waits until it says it is a primary, the
    /// cluster is ok again ([`RedisCluster::wait_ok`]), the old primary replicates it in sync
    /// and every live instance sees both so.
    /// Returns the time until the replica said it is a primary.
    pub fn failover(&self, replica_port: u16) -> Duration {
        let old_primary = {
            let view = self.nodes_seen_by(replica_port);
            let me = view
                .iter()
                .find(|n| n.has_flag("myself"))
                .expect("CLUSTER NODES has myself");
            assert!(!me.is_primary(), "{replica_port} is a replica");
            view.iter()
                .find(|n| n.id == me.primary_id)
                .map(|n| n.port)
                .expect("the replica's primary is known")
        };
        let out = self.cli(replica_port, &["CLUSTER", "FAILOVER"]);
        assert_eq!(
            out.trim(),
            "OK",
            "CLUSTER FAILOVER on {replica_port}: {out}"
        );
        let took = wait_until(
            FAILOVER_WITHIN,
            &format!("{replica_port} reports itself a primary after CLUSTER FAILOVER"),
            || role(replica_port).as_deref() == Some("master"),
            || self.cli(replica_port, &["CLUSTER", "NODES"]),
        );
        self.wait_ok(FAILOVER_WITHIN);
        let old_running = self.live_ports().contains(&old_primary);
        wait_until(
            FAILOVER_WITHIN,
            "the old primary replicates the new one and every live replica is in sync",
            || {
                (!old_running || replica_in_sync_with(old_primary, replica_port))
                    && self.live_ports().iter().all(|&p| {
                        self.in_sync_if_replica(p)
                            && self.sees_failover(p, replica_port, old_primary, old_running)
                    })
            },
            || self.cli(replica_port, &["CLUSTER", "NODES"]),
        );
        took
    }

    /// Waits until every live instance says `cluster_state:ok` with every slot ok, and sees
    /// every slot owned by a live primary that it does not suspect (so right after a
    /// [`RedisCluster::kill`] of a primary, this waits for its replica to take over). Returns
    /// the time it took; panics after `within`.
    pub fn wait_ok(&self, within: Duration) -> Duration {
        wait_until(
            within,
            "every live instance says cluster_state:ok with every slot on a live primary",
            || self.live_ports().iter().all(|&p| self.ok_seen_by(p)),
            || {
                self.live_ports()
                    .iter()
                    .map(|&p| {
                        let info = try_cli(p, &["CLUSTER", "INFO"]).unwrap_or_default();
                        let nodes = try_cli(p, &["CLUSTER", "NODES"]).unwrap_or_default();
                        format!("== {p}\n{info}{nodes}")
                    })
                    .collect()
            },
        )
    }

    /// Moves `slot` and its keys to the primary on `to_port`: `SETSLOT IMPORTING` on it,
    /// `SETSLOT MIGRATING` on the owner, `MIGRATE` the keys in batches, then `SETSLOT NODE` on
    /// both (and every other live primary); waits until every live instance sees the new
    /// owner.
    pub fn migrate_slot(&self, slot: u16, to_port: u16) {
        let from_port = self.primary_for_slot(slot);
        if from_port == to_port {
            return;
        }
        let id = |port: u16| self.cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
        let (from_id, to_id) = (id(from_port), id(to_port));
        let s = slot.to_string();
        let ok = |port: u16, args: &[&str]| {
            let out = self.cli(port, args);
            assert_eq!(out.trim(), "OK", "{args:?} on {port}: {out}");
        };
        ok(to_port, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]);
        ok(from_port, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]);
        loop {
            let keys = self.cli(from_port, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to = to_port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to, "", "0", "5000", "KEYS"];
            args.extend(&keys);
            ok(from_port, &args);
        }
        ok(to_port, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        ok(from_port, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        for p in self.primaries() {
            if p != from_port && p != to_port {
                ok(p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
            }
        }
        wait_until(
            FAILOVER_WITHIN,
            &format!("every live instance sees slot {slot} on {to_port}"),
            || {
                self.live_ports().iter().all(|&p| {
                    self.nodes_seen_by(p)
                        .iter()
                        .any(|n| n.port == to_port && n.owns(slot))
                })
            },
            || self.cli(to_port, &["CLUSTER", "NODES"]),
        );
    }

    fn node_mut(&mut self, port: u16) -> &mut Instance {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("{port} is a node of this cluster"))
    }

    fn any_live(&self) -> u16 {
        *self.live_ports().first().expect("a live cluster instance")
    }

    /// `CLUSTER NODES` asked of `port`, parsed (empty when it answers not).
    fn nodes_seen_by(&self, port: u16) -> Vec<ClusterNode> {
        parse_cluster_nodes(&try_cli(port, &["CLUSTER", "NODES"]).unwrap_or_default())
    }

    /// `CLUSTER NODES` of the first live instance that answers.
    fn view(&self) -> Vec<ClusterNode> {
        self.live_ports()
            .into_iter()
            .map(|p| self.nodes_seen_by(p))
            .find(|v| !v.is_empty())
            .expect("a live cluster instance answers CLUSTER NODES")
    }

    fn ok_seen_by(&self, port: u16) -> bool {
        let info = info_fields(&try_cli(port, &["CLUSTER", "INFO"]).unwrap_or_default());
        let all = CLUSTER_SLOTS.to_string();
        if info.get("cluster_state").map(String::as_str) != Some("ok")
            || info.get("cluster_slots_ok") != Some(&all)
        {
            return false;
        }
        let live = self.live_ports();
        let owners: Vec<ClusterNode> = self
            .nodes_seen_by(port)
            .into_iter()
            .filter(|n| n.is_primary() && !n.is_failing() && live.contains(&n.port))
            .collect();
        (0..CLUSTER_SLOTS).all(|slot| owners.iter().any(|n| n.owns(slot)))
    }

    /// `port` sees `new` as a primary and (when it runs) `old` as its replica.
    fn sees_failover(&self, port: u16, new: u16, old: u16, old_running: bool) -> bool {
        let view = self.nodes_seen_by(port);
        let find = |p: u16| view.iter().find(|n| n.port == p);
        find(new).zip(find(old)).is_some_and(|(new, old)| {
            new.is_primary() && (!old_running || old.primary_id == new.id)
        })
    }

    /// A primary, or a replica whose link to its primary is up.
    fn in_sync_if_replica(&self, port: u16) -> bool {
        let info = info_fields(&try_cli(port, &["INFO", "replication"]).unwrap_or_default());
        match info.get("role").map(String::as_str) {
            Some("master") => true,
            Some("slave") => info.get("master_link_status").map(String::as_str) == Some("up"),
            _ => false,
        }
    }
}

/// How to start a [`RedisSentinelGroup`].
#[derive(Debug, Clone)]
pub struct SentinelOptions {
    /// The monitored primary's name (`sentinel monitor <name> …`).
    pub master_name: String,
    /// `sentinel down-after-milliseconds`: how long the primary may be unreachable before a
    /// sentinel thinks it down.
    pub down_after: Duration,
}

impl Default for SentinelOptions {
    fn default() -> Self {
        Self {
            master_name: "hostie".to_owned(),
            down_after: Duration::from_millis(1_000),
        }
    }
}

/// A running Sentinel group on loopback: one primary, one replica of it, and three sentinels
/// monitoring it with quorum 2. Empty, persisting nothing; every process killed when dropped.
pub struct RedisSentinelGroup {
    data: Vec<Instance>,
    sentinels: Vec<Instance>,
    master_name: String,
}

impl RedisSentinelGroup {
    /// Starts the group with [`SentinelOptions::default`] (name `hostie`); every sentinel
    /// reports the primary and knows the replica and the two other sentinels when returned.
    pub fn start() -> Self {
        Self::start_with(SentinelOptions::default())
    }

    /// [`RedisSentinelGroup::start`] with `options`.
    pub fn start_with(options: SentinelOptions) -> Self {
        let instance_args = |replica_of: Option<u16>| {
            move |port: u16, dir: &Path| {
                let mut args = data_args(port, dir);
                if let Some(primary) = replica_of {
                    args.extend(["--replicaof".to_owned(), "127.0.0.1".to_owned()]);
                    args.push(primary.to_string());
                }
                args
            }
        };
        let primary = Instance::spawn(false, instance_args(None));
        let primary_port = primary.port;
        let replica = Instance::spawn(false, instance_args(Some(primary_port)));
        let replica_port = replica.port;
        wait_until(
            SENTINELS_READY_WITHIN,
            "the replica is in sync",
            || replica_in_sync_with(replica_port, primary_port),
            || try_cli(replica_port, &["INFO", "replication"]).unwrap_or_default(),
        );
        let name = options.master_name.clone();
        let down_after = options.down_after.as_millis();
        let sentinels = (0..3)
            .map(|_| {
                Instance::spawn(false, |port, dir| {
                    // Sentinel rewrites its config file: it lives in the writable temp dir.
                    let conf = dir.join("sentinel.conf");
                    let text = [
                        format!("port {port}"),
                        "bind 127.0.0.1".to_owned(),
                        format!("dir {}", dir.display()),
                        format!("sentinel monitor {name} 127.0.0.1 {primary_port} 2"),
                        format!("sentinel down-after-milliseconds {name} {down_after}"),
                        format!("sentinel failover-timeout {name} 5000"),
                    ]
                    .join("\n");
                    std::fs::write(&conf, text + "\n").expect("sentinel.conf written");
                    vec![conf.display().to_string(), "--sentinel".to_owned()]
                })
            })
            .collect();
        let group = Self {
            data: vec![primary, replica],
            sentinels,
            master_name: options.master_name,
        };
        wait_until(
            SENTINELS_READY_WITHIN,
            "every sentinel reports the primary and knows the replica and the other sentinels",
            || {
                group.sentinel_ports().iter().all(|&s| {
                    let master = group.sentinel_master(s);
                    group.reported_by(s) == Some(primary_port)
                        && master.get("num-slaves").map(String::as_str) == Some("1")
                        && master.get("num-other-sentinels").map(String::as_str) == Some("2")
                })
            },
            || group.sentinel_report(),
        );
        group
    }

    /// `127.0.0.1:P` of each sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinel_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// hostie's `--redis-url` for this group: `redis+sentinel://` with every sentinel and the
    /// primary's name.
    pub fn hostie_url(&self) -> String {
        format!(
            "redis+sentinel://{}/{}",
            self.sentinel_addrs().join(","),
            self.master_name
        )
    }

    /// The ports of the sentinels.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The ports of the two data instances (primary and replica, in start order).
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|d| d.port).collect()
    }

    /// The monitored primary's name (`hostie` by default).
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The primary's port, as the first sentinel that answers reports it.
    pub fn primary_port(&self) -> u16 {
        self.sentinel_ports()
            .into_iter()
            .find_map(|s| self.reported_by(s))
            .expect("a sentinel reports the primary")
    }

    /// SIGKILLs the primary, then waits until every sentinel reports the replica as the new
    /// primary and it answers `ROLE` as master. Returns the time from the kill until then.
    pub fn kill_primary(&mut self) -> Duration {
        let old = self.primary_port();
        let instance = self
            .data
            .iter_mut()
            .find(|d| d.port == old)
            .expect("the primary is a data instance");
        let start = Instant::now();
        instance.kill();
        self.wait_moved_from(old);
        start.elapsed()
    }

    /// `SENTINEL FAILOVER <name>`, then waits until every sentinel reports the new primary and
    /// it answers `ROLE` as master. Returns that time; then makes the old primary, if running,
    /// a replica of the new one (`REPLICAOF`, what Sentinel does by itself only ~10 s later)
    /// and waits (bounded) until it is in sync, so that a next failover can run at once.
    pub fn failover(&self) -> Duration {
        let old = self.primary_port();
        let sentinel = self.sentinel_ports()[0];
        let start = Instant::now();
        let out = self.cli(sentinel, &["SENTINEL", "FAILOVER", &self.master_name]);
        assert_eq!(out.trim(), "OK", "SENTINEL FAILOVER: {out}");
        let new = self.wait_moved_from(old);
        let took = start.elapsed();
        if self.data.iter().any(|d| d.port == old && d.is_running()) {
            // Sentinel itself turns a demoted primary that still runs into a replica only
            // about 10 s later (it waits 4 publish periods after it reported itself master):
            // the kit does now what Sentinel would do then.
            let out = self.cli(old, &["REPLICAOF", "127.0.0.1", &new.to_string()]);
            assert!(out.trim().starts_with("OK"), "REPLICAOF on {old}: {out}");
            wait_until(
                FAILOVER_WITHIN,
                &format!("the old primary {old} replicates the new one {new} in sync"),
                || replica_in_sync_with(old, new),
                || try_cli(old, &["INFO", "replication"]).unwrap_or_default(),
            );
        }
        took
    }

    /// Runs `redis-cli -p port args…` against a data instance or a sentinel; its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, args)
    }

    /// Waits until every sentinel reports a primary other than `old` and it answers `ROLE`
    /// as master; returns its port.
    fn wait_moved_from(&self, old: u16) -> u16 {
        let mut new = None;
        wait_until(
            FAILOVER_WITHIN,
            &format!("every sentinel reports a new primary instead of {old}"),
            || {
                let reported: Vec<Option<u16>> = self
                    .sentinel_ports()
                    .iter()
                    .map(|&s| self.reported_by(s))
                    .collect();
                new = reported[0];
                new.is_some_and(|p| p != old)
                    && reported.iter().all(|r| *r == new)
                    && new.and_then(role).as_deref() == Some("master")
            },
            || self.sentinel_report(),
        );
        new.expect("a new primary")
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` asked of sentinel `port`: the primary's port.
    fn reported_by(&self, port: u16) -> Option<u16> {
        let out = try_cli(
            port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.master_name],
        )?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// `SENTINEL MASTER <name>` asked of sentinel `port`, as fields.
    fn sentinel_master(&self, port: u16) -> HashMap<String, String> {
        let out = try_cli(port, &["SENTINEL", "MASTER", &self.master_name]).unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((k.trim().to_owned(), v.trim().to_owned())),
                _ => None,
            })
            .collect()
    }

    /// What each sentinel says (for a panic message).
    fn sentinel_report(&self) -> String {
        self.sentinel_ports()
            .iter()
            .map(|&s| {
                let m = self.sentinel_master(s);
                let get = |k: &str| m.get(k).cloned().unwrap_or_default();
                format!(
                    "sentinel {s}: primary {:?} flags {} slaves {} other sentinels {}\n",
                    self.reported_by(s),
                    get("flags"),
                    get("num-slaves"),
                    get("num-other-sentinels")
                )
            })
            .collect()
    }
}

/// `port` is a replica of `primary` with its link up.
fn replica_in_sync_with(port: u16, primary: u16) -> bool {
    let info = info_fields(&try_cli(port, &["INFO", "replication"]).unwrap_or_default());
    info.get("role").map(String::as_str) == Some("slave")
        && info.get("master_port") == Some(&primary.to_string())
        && info.get("master_link_status").map(String::as_str) == Some("up")
}

/// The flags every data instance (cluster node, primary, replica) starts with: loopback,
/// nothing persisted, replicas synced at once (the default waits 5 s before the first sync).
fn data_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync-delay",
        "0",
        "--dir",
        &dir.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_three_primary_cluster_routes_a_key_to_its_slot_owner() {
        let start = Instant::now();
        let cluster = RedisCluster::start(3, 0);
        eprintln!("3-primary cluster ok after {:?}", start.elapsed());
        assert_eq!(cluster.primaries().len(), 3);
        assert_eq!(cluster.seeds().len(), 3);
        let slot = cluster.keyslot("hostie:node:{n1}");
        let owner = cluster.primary_for_slot(slot);
        let other = *cluster.ports().iter().find(|&&p| p != owner).unwrap();
        // Written through a node that does not own the slot, following MOVED.
        let out = cluster.cli(other, &["-c", "SET", "hostie:node:{n1}", "v"]);
        assert_eq!(out.trim(), "OK");
        assert_eq!(cluster.cli(owner, &["GET", "hostie:node:{n1}"]).trim(), "v");
        assert!(
            cluster
                .cli(other, &["GET", "hostie:node:{n1}"])
                .starts_with("MOVED")
        );
        assert_eq!(
            cluster
                .cli(owner, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
                .trim(),
            "1"
        );

        let to = *cluster.primaries().iter().find(|&&p| p != owner).unwrap();
        cluster.migrate_slot(slot, to);
        assert_eq!(cluster.primary_for_slot(slot), to);
        assert_eq!(cluster.cli(to, &["GET", "hostie:node:{n1}"]).trim(), "v");
    }

    #[test]
    fn a_cluster_with_replicas_survives_a_failover_and_a_primary_kill() {
        let start = Instant::now();
        let mut cluster = RedisCluster::start(3, 1);
        eprintln!("3+3 cluster ok after {:?}", start.elapsed());
        let slot = cluster.keyslot("k");
        cluster.cli(cluster.ports()[0], &["-c", "SET", "k", "1"]);

        let owner = cluster.primary_for_slot(slot);
        let replica = cluster.replicas_of(owner)[0];
        let call = Instant::now();
        let took = cluster.failover(replica);
        eprintln!(
            "CLUSTER FAILOVER: {replica} primary after {took:?}, every instance agreeing and \
             the old primary in sync after {:?}",
            call.elapsed()
        );
        assert_eq!(cluster.primary_for_slot(slot), replica);
        assert_eq!(cluster.replicas_of(replica), vec![owner]);
        assert_eq!(cluster.cli(replica, &["GET", "k"]).trim(), "1");

        let victim = *cluster.primaries().iter().find(|&&p| p != replica).unwrap();
        let heir = cluster.replicas_of(victim)[0];
        let victim_slot = cluster
            .view()
            .iter()
            .find(|n| n.port == victim)
            .unwrap()
            .slots[0]
            .0;
        cluster.kill(victim);
        let took = cluster.wait_ok(FAILOVER_WITHIN);
        eprintln!("kill -9 of primary {victim}: {heir} took over, cluster ok after {took:?}");
        assert_eq!(cluster.primary_for_slot(victim_slot), heir);
        assert!(!cluster.primaries().contains(&victim));
        assert_eq!(cluster.cli(heir, &["-c", "GET", "k"]).trim(), "1");
    }

    #[test]
    fn a_sentinel_group_moves_its_primary_on_failover_and_on_a_kill() {
        let start = Instant::now();
        let mut group = RedisSentinelGroup::start();
        eprintln!("sentinel group ready after {:?}", start.elapsed());
        assert_eq!(group.master_name(), "hostie");
        assert_eq!(group.sentinel_addrs().len(), 3);
        let first = group.primary_port();
        assert_eq!(first, group.data_ports()[0]);
        group.cli(first, &["SET", "k", "1"]);

        let call = Instant::now();
        let took = group.failover();
        eprintln!("failover() returned after {:?}", call.elapsed());
        let second = group.primary_port();
        eprintln!("SENTINEL FAILOVER: {first} -> {second} after {took:?}");
        assert_ne!(second, first);
        assert_eq!(role(second).as_deref(), Some("master"));
        assert_eq!(group.cli(second, &["GET", "k"]).trim(), "1");

        let took = group.kill_primary();
        let third = group.primary_port();
        eprintln!("kill -9 of primary {second}: {third} primary after {took:?}");
        assert_eq!(third, first);
        assert_eq!(group.cli(third, &["GET", "k"]).trim(), "1");
    }
}
