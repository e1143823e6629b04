//! Redis topologies under failover: three real node processes on a Redis Cluster (3 primaries,
//! with or without a replica each) or a Sentinel group (1 primary, 1 replica, 3 sentinels),
//! sixty simulated gateways and a continuous discovery load, judged like the fault suite
//! (`hostie_testkit::chaos`): never a `200` naming a session not alive then, never an answer
//! past the deadline, never a `404` for a token with a live session, and every node answers
//! every token right again within the stated time of the failover's end.
//!
//! Run with `cargo test --test api topology_faults -- --nocapture` to see each table and the
//! measured failover and recovery times.

use crate::helpers::*;
use hostie::model::NodeId;
use hostie::redis_common::Keys;
use hostie_testkit::chaos::{Checker, Harness, Load, LoadSpec, Target, fastrand};
use hostie_testkit::redis_topology::{RedisCluster, RedisSentinelGroup};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `--rpc-timeout`: the whole discovery deadline.
const DEADLINE: Duration = Duration::from_secs(1);
const NODES: usize = 3;
const GATEWAYS: usize = 60;
const BASELINE: Duration = Duration::from_secs(2);
const TAIL: Duration = Duration::from_secs(2);
/// Routing is whole again within this of the failover's end (a few heartbeats: 200 ms each,
/// TTL 1 s).
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// What the nodes run on.
enum Store {
    Cluster(RedisCluster),
    Sentinel(RedisSentinelGroup),
}

impl Store {
    fn url(&self) -> String {
        match self {
            Self::Cluster(c) => c.hostie_url(),
            Self::Sentinel(s) => s.hostie_url(),
        }
    }
}

struct Topo {
    name: &'static str,
    store: Store,
    prefix: String,
    nodes: Vec<NodeProcess>,
    harness: Arc<Harness>,
    logs: tempfile::TempDir,
    seed: u64,
}

impl Topo {
    async fn start(name: &'static str, store: Store) -> Self {
        let prefix = prefix();
        let logs = tempfile::tempdir().expect("a log directory");
        let url = store.url();
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let node_id = node_id(&prefix, i);
            let args = [
                "--redis-url",
                &url,
                "--redis-prefix",
                &prefix,
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
            let log = logs.path().join(format!("node{i}.log"));
            nodes.push(spawn_process_logging_to(&args, &log).await);
        }
        let targets = nodes
            .iter()
            .map(|n| Target {
                http: n.http,
                admin: n.admin,
            })
            .collect();
        let harness = Harness::new(targets, DEADLINE);
        let never: Vec<String> = (0..10).map(|i| token(&format!("never{i}"))).collect();
        harness.add_never_registered(&never);
        for g in 0..GATEWAYS {
            harness.open(&token(&format!("g{g}")), g % NODES).await;
        }
        let ready = harness
            .await_settled(Instant::now(), Duration::from_secs(10))
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
        Self {
            name,
            store,
            prefix,
            nodes,
            harness,
            logs,
            seed,
        }
    }

    fn load(&self) -> Load {
        self.harness.start_load(LoadSpec {
            workers: 8,
            pause: Duration::from_millis(20),
            never_share: 0.15,
            seed: self.seed,
        })
    }

    fn cluster(&mut self) -> &mut RedisCluster {
        match &mut self.store {
            Store::Cluster(c) => c,
            Store::Sentinel(_) => panic!("{} runs on Sentinel", self.name),
        }
    }

    /// The slot of node `i`'s channel (and session set).
    fn node_slot(&mut self, i: usize) -> u16 {
        let channel = Keys::new(&self.prefix).node_channel(&NodeId(node_id(&self.prefix, i)));
        self.cluster().keyslot(&channel)
    }

    /// The slot of the heartbeat set.
    fn heartbeat_slot(&mut self) -> u16 {
        let key = Keys::new(&self.prefix).nodes();
        self.cluster().keyslot(&key)
    }

    /// Runs `fault` under load and judges: every gateway stays connected, so no `404` is
    /// expected, and everything answers right within [`RECOVERY_BOUND`] of the fault's end.
    async fn judge_fault(mut self, fault: impl FnOnce(&mut Self) -> String) {
        let load = self.load();
        tokio::time::sleep(BASELINE).await;
        // Gateways keep arriving during the failover: a registration the old primary took and
        // the new one never saw must be written again (judged with the rest at the end).
        let stop = Arc::new(AtomicBool::new(false));
        let joining = {
            let (harness, stop) = (self.harness.clone(), stop.clone());
            tokio::spawn(async move {
                let mut joined = 0;
                while !stop.load(Ordering::SeqCst) {
                    harness
                        .open(&token(&format!("join{joined}")), joined % NODES)
                        .await;
                    joined += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                joined
            })
        };
        let from = Instant::now();
        let what = blocking(|| fault(&mut self));
        let to = Instant::now();
        stop.store(true, Ordering::SeqCst);
        let joined = joining.await.expect("the joining gateways");
        let recovered = self.harness.await_recovery(to, RECOVERY_BOUND).await;
        let settled = self.harness.await_settled(to, RECOVERY_BOUND).await;
        tokio::time::sleep(TAIL).await;
        let mut checker = Checker::new(&format!("{} (seed {})", self.name, self.seed), DEADLINE);
        checker
            .fault(from, to, RECOVERY_BOUND)
            .recovered(recovered)
            .settled(settled);
        let samples = load.stop().await;
        checker.ready_at_end();
        let verdict = checker.judge(&self.harness, &samples);
        let mut out = verdict.table();
        let since = |at: Option<Instant>| {
            at.map(|t| format!("{:.2} s", t.duration_since(to).as_secs_f64()))
                .unwrap_or_else(|| "never".into())
        };
        out.push_str(&format!(
            "  {what}; fault lasted {:.2} s, {joined} gateways joined during it; routing whole {} after it ({} until misses are 404 again)\n",
            to.duration_since(from).as_secs_f64(),
            since(recovered),
            since(settled),
        ));
        let lost = self.harness.unexpected_ends();
        let keep = std::env::var_os("HOSTIE_FAULT_KEEP_LOGS").is_some();
        if !verdict.failures().is_empty() || !lost.is_empty() || keep {
            for i in 0..NODES {
                let log = std::fs::read_to_string(self.logs.path().join(format!("node{i}.log")))
                    .unwrap_or_default();
                for l in log
                    .lines()
                    .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
                    .rev()
                    .take(6)
                {
                    out.push_str(&format!(
                        "    node {i}: {}\n",
                        l.chars().take(300).collect::<String>()
                    ));
                }
            }
            let kept = self.logs.keep();
            out.push_str(&format!("  node logs kept in {}\n", kept.display()));
        }
        println!("{out}");
        assert!(lost.is_empty(), "{}: sessions lost: {lost:?}", self.name);
        verdict.assert_ok();
        drop(self.nodes);
    }
}

fn node_id(prefix: &str, i: usize) -> String {
    format!("{prefix}-node{i}")
}

fn cluster_with_replicas() -> Store {
    Store::Cluster(blocking(|| RedisCluster::start(3, 1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_routes_without_faults() {
    let store = Store::Cluster(blocking(|| RedisCluster::start(3, 0)));
    let t = Topo::start("Cluster (3 primaries), no fault", store).await;
    t.judge_fault(|_| {
        std::thread::sleep(Duration::from_secs(2));
        "no fault".into()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_manual_failover_of_a_node_channel_shard() {
    let t = Topo::start(
        "Cluster CLUSTER FAILOVER of node 0's shard",
        cluster_with_replicas(),
    )
    .await;
    t.judge_fault(|t| {
        let slot = t.node_slot(0);
        let cluster = t.cluster();
        let primary = cluster.primary_for_slot(slot);
        let replica = cluster.replicas_of(primary)[0];
        let took = cluster.failover(replica);
        format!(
            "replica {replica} took over from {primary} in {:.2} s",
            took.as_secs_f64()
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_primary_killed_under_the_heartbeats() {
    let t = Topo::start(
        "Cluster primary of the heartbeat slot killed",
        cluster_with_replicas(),
    )
    .await;
    t.judge_fault(|t| {
        let slot = t.heartbeat_slot();
        let cluster = t.cluster();
        let primary = cluster.primary_for_slot(slot);
        let started = Instant::now();
        cluster.kill(primary);
        let took = cluster.wait_ok(Duration::from_secs(20));
        format!(
            "primary {primary} killed; cluster ok again after {:.2} s",
            started.elapsed().max(took).as_secs_f64()
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_channel_slot_migrated() {
    let t = Topo::start(
        "Cluster slot of node 0's channel migrated",
        cluster_with_replicas(),
    )
    .await;
    t.judge_fault(|t| {
        let slot = t.node_slot(0);
        let cluster = t.cluster();
        let from = cluster.primary_for_slot(slot);
        let to = *cluster
            .primaries()
            .iter()
            .find(|&&p| p != from)
            .expect("another primary");
        let started = Instant::now();
        cluster.migrate_slot(slot, to);
        format!(
            "slot {slot} moved from {from} to {to} in {:.2} s",
            started.elapsed().as_secs_f64()
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_primary_killed() {
    let store = Store::Sentinel(blocking(RedisSentinelGroup::start));
    let t = Topo::start("Sentinel primary killed", store).await;
    t.judge_fault(|t| {
        let Store::Sentinel(group) = &mut t.store else {
            unreachable!()
        };
        let took = group.kill_primary();
        format!(
            "sentinels named the replica after {:.2} s",
            took.as_secs_f64()
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover() {
    let store = Store::Sentinel(blocking(RedisSentinelGroup::start));
    let t = Topo::start("SENTINEL FAILOVER", store).await;
    t.judge_fault(|t| {
        let Store::Sentinel(group) = &mut t.store else {
            unreachable!()
        };
        let took = group.failover();
        format!("sentinels switched after {:.2} s", took.as_secs_f64())
    })
    .await;
}
