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
use hostie_testkit::chaos::{Checker, Harness, Load};
use hostie_testkit::redis_server::RedisServer;
use hostie_testkit::redis_topology::{RedisCluster, RedisSentinelGroup};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `--rpc-timeout`: the whole discovery deadline.
const DEADLINE: Duration = Duration::from_secs(1);
const NODES: usize = 3;
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
        let (nodes, harness, seed) =
            start_fault_cluster(name, NODES, |_| url.clone(), &prefix, logs.path()).await;
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
        fault_load(&self.harness, self.seed)
    }

    fn cluster(&mut self) -> &mut RedisCluster {
        match &mut self.store {
            Store::Cluster(c) => c,
            Store::Sentinel(_) => panic!("{} runs on Sentinel", self.name),
        }
    }

    /// The slot of node `i`'s channel (and session set).
    fn node_slot(&mut self, i: usize) -> u16 {
        let channel = Keys::new(&self.prefix).node_channel(&NodeId(fault_node_id(&self.prefix, i)));
        self.cluster().keyslot(&channel)
    }

    /// The slot of the heartbeat set.
    fn heartbeat_slot(&mut self) -> u16 {
        let key = Keys::new(&self.prefix).nodes();
        self.cluster().keyslot(&key)
    }

    /// Runs `fault` under load and judges: every gateway stays connected, so no `404` is
    /// expected, and everything answers right within [`RECOVERY_BOUND`] of the fault's end.
    /// With `failover`, every node must have counted the topology change.
    async fn judge_fault(mut self, failover: bool, fault: impl FnOnce(&mut Self) -> String) {
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
            out.push_str(&node_warnings(self.logs.path(), NODES, 6));
            let kept = self.logs.keep();
            out.push_str(&format!("  node logs kept in {}\n", kept.display()));
        }
        let mut noticed = 0.0;
        for node in &self.nodes {
            noticed += metric(node, "hostie_redis_topology_changes_total").await;
        }
        out.push_str(&format!(
            "  topology changes noticed by the nodes: {noticed}\n"
        ));
        println!("{out}");
        assert!(lost.is_empty(), "{}: sessions lost: {lost:?}", self.name);
        if failover {
            assert!(
                noticed >= NODES as f64,
                "{}: every node noticed the failover ({noticed})",
                self.name
            );
        }
        verdict.assert_ok();
        drop(self.nodes);
    }
}

/// A counter's value on a node's `/metrics` (0 when absent or unreachable).
async fn metric(node: &NodeProcess, name: &str) -> f64 {
    let Ok(res) = reqwest::get(format!("http://{}/metrics", node.admin)).await else {
        return 0.0;
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn cluster_with_replicas() -> Store {
    Store::Cluster(blocking(|| RedisCluster::start(3, 1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_routes_without_faults() {
    let store = Store::Cluster(blocking(|| RedisCluster::start(3, 0)));
    let t = Topo::start("Cluster (3 primaries), no fault", store).await;
    t.judge_fault(false, |_| {
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
    t.judge_fault(true, |t| {
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
    t.judge_fault(true, |t| {
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
async fn cluster_primary_restarted_empty_without_a_replica() {
    let store = Store::Cluster(blocking(|| RedisCluster::start(3, 0)));
    let t = Topo::start("Cluster primary (no replica) restarted empty", store).await;
    t.judge_fault(true, |t| {
        let slot = t.node_slot(1);
        let cluster = t.cluster();
        let primary = cluster.primary_for_slot(slot);
        cluster.kill(primary);
        std::thread::sleep(Duration::from_secs(1));
        let took = cluster.restart_empty(primary);
        format!(
            "primary {primary} down 1 s, then back empty; cluster ok {:.2} s after its start",
            took.as_secs_f64()
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
    t.judge_fault(false, |t| {
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
    t.judge_fault(true, |t| {
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
    t.judge_fault(true, |t| {
        let Store::Sentinel(group) = &mut t.store else {
            unreachable!()
        };
        let took = group.failover();
        format!("sentinels switched after {:.2} s", took.as_secs_f64())
    })
    .await;
}

/// On a 3-primary Cluster, where a node's records are removed step by step (claim, delete
/// token by token, finish) instead of by one script: a drained node's tokens are 404 on its
/// peer at once, and a killed node's are 503 (its channel's "nobody listening" proves nothing
/// on a Cluster) until its heartbeat runs out, then 404, its records swept from every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_drain_and_node_kill() {
    let cluster = blocking(|| RedisCluster::start(3, 0));
    let (url, pfx) = (cluster.hostie_url(), prefix());
    let keys = Keys::new(&pfx);
    let process = |name: &'static str| {
        let (url, pfx) = (url.clone(), pfx.clone());
        async move {
            spawn_process(&[
                "--redis-url",
                &url,
                "--redis-prefix",
                &pfx,
                "--node-id",
                name,
                "--heartbeat-interval",
                "200ms",
                "--heartbeat-ttl",
                "1s",
                "--drain-spread",
                "300ms",
                "--drain-grace",
                "5s",
            ])
            .await
        }
    };
    let mut leaving = process("leaving").await;
    let mut dying = process("dying").await;
    let mut config = test_config();
    config.redis_url = Some(url.clone());
    config.redis_prefix = pfx.clone();
    config.heartbeat_interval = Duration::from_millis(200);
    config.heartbeat_ttl = Duration::from_secs(1);
    let staying = spawn_node(config).await;
    // Tokens on every shard: twelve per node.
    let (mut on_leaving, mut on_dying, mut gateways) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..12 {
        for (node, list) in [(&leaving, &mut on_leaving), (&dying, &mut on_dying)] {
            let t = token(&format!("c{i}"));
            gateways.push(
                Gateway::connect(node.http, GatewayOptions::new(&t, 7000))
                    .await
                    .unwrap(),
            );
            list.push(t);
        }
    }
    for t in on_leaving.iter().chain(&on_dying) {
        assert_eq!(staying.discover(t).await.0, 200, "routed across nodes");
    }

    leaving.signal(Signal::Term);
    assert!(
        eventually(Duration::from_secs(1), || leaving.readyz_status_is(503)).await,
        "/readyz is 503 within 1 s"
    );
    for t in &on_leaving {
        assert_eq!(
            discover_at(staying.http, t).await.0,
            404,
            "a drained node's records are removed at once"
        );
    }
    let status = leaving.exited_within(Duration::from_secs(8)).await;
    assert!(status.is_some_and(|s| s.success()), "drained and exited");
    let leaving_set = keys.node_sessions(&NodeId("leaving".into()));
    assert_eq!(cluster.cli_any(&["EXISTS", &leaving_set]).trim(), "0");

    let killed = Instant::now();
    dying.kill9();
    for t in &on_dying {
        let (status, _, took) = discover_at(staying.http, t).await;
        assert!(
            status == 503 || status == 404,
            "never a wrong 200 for a killed node's token: {status}"
        );
        assert!(took <= Duration::from_millis(1100), "within the deadline");
    }
    let swept = eventually(Duration::from_secs(5), || async {
        let mut all = true;
        for t in &on_dying {
            all &= discover_at(staying.http, t).await.0 == 404;
        }
        all
    })
    .await;
    assert!(swept, "404 once the killed node's heartbeat ran out");
    println!(
        "killed node's tokens 404 after {:.2} s (TTL 1 s)",
        killed.elapsed().as_secs_f64()
    );
    let dying_set = keys.node_sessions(&NodeId("dying".into()));
    let gone = eventually(Duration::from_secs(2), || async {
        cluster.cli_any(&["EXISTS", &dying_set]).trim() == "0"
    })
    .await;
    assert!(gone, "the killed node's set is swept");
    for t in &on_dying {
        let hash = hostie::protocol::Token::new(t.clone()).unwrap().hash();
        assert_eq!(
            cluster.cli_any(&["HLEN", &keys.token(&hash)]).trim(),
            "0",
            "its records are swept from every shard"
        );
    }
    assert_eq!(cluster.cli_any(&["ZCARD", &keys.nodes()]).trim(), "1");
}

/// A node hears Sentinel's `+switch-master` and moves to the new primary at once, not at its
/// next heartbeat (5 s apart here): within a second of the switch both nodes said so in their
/// logs and a token registered before is routed across them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_switch_is_heard_before_the_next_heartbeat() {
    let group = blocking(RedisSentinelGroup::start);
    let (url, pfx) = (group.hostie_url(), prefix());
    let logs = tempfile::tempdir().expect("a log directory");
    let mut nodes = Vec::new();
    for i in 0..2 {
        let args = [
            "--redis-url",
            &url,
            "--redis-prefix",
            &pfx,
            "--heartbeat-interval",
            "5s",
            "--heartbeat-ttl",
            "10s",
        ];
        let log = logs.path().join(format!("node{i}.log"));
        nodes.push(spawn_process_logging_to(&args, &log).await);
    }
    let t = token("switch");
    let _gw = Gateway::connect(nodes[0].http, GatewayOptions::new(&t, 5151))
        .await
        .unwrap();
    assert_eq!(discover_at(nodes[1].http, &t).await.0, 200);
    let took = blocking(|| group.failover());
    let switched = Instant::now();
    let heard = eventually(Duration::from_secs(1), || async {
        (0..2).all(|i| {
            std::fs::read_to_string(logs.path().join(format!("node{i}.log")))
                .unwrap_or_default()
                .contains("Sentinel switched the primary")
        })
    })
    .await;
    assert!(heard, "both nodes heard +switch-master within 1 s");
    let routed = eventually(Duration::from_secs(1), || async {
        discover_at(nodes[1].http, &t).await.0 == 200
    })
    .await;
    assert!(
        routed,
        "routed across the nodes again within 1 s of the switch"
    );
    println!(
        "sentinels switched in {:.2} s; heard and routed again {:.2} s after (heartbeat 5 s)",
        took.as_secs_f64(),
        switched.elapsed().as_secs_f64()
    );
}

/// A record whose owner is in no heartbeat (it died between writing the record and its set
/// member) is not asked for ever: the first discovery that finds nobody on the owner's channel
/// removes it and answers 404 — on a Cluster (where the two go to two shards) and on one Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_records_are_removed_by_the_first_discovery() {
    let cluster = blocking(|| RedisCluster::start(3, 0));
    orphan_removed_on(&cluster.hostie_url(), |args| cluster.cli_any(args)).await;
    let redis = blocking(RedisServer::start);
    orphan_removed_on(&redis.url(), |args| redis.cli(args)).await;
}

async fn orphan_removed_on(url: &str, cli: impl Fn(&[&str]) -> String) {
    let pfx = prefix();
    let mut config = test_config();
    config.redis_url = Some(url.to_owned());
    config.redis_prefix = pfx.clone();
    config.heartbeat_interval = Duration::from_millis(200);
    config.heartbeat_ttl = Duration::from_secs(1);
    let node = spawn_node(config).await;
    // Trusted: the node's first beats are behind it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = token("orphan");
    let hash = hostie::protocol::Token::new(t.clone()).unwrap().hash();
    let session = uuid::Uuid::new_v4();
    let orphan = serde_json::json!({
        "session": session,
        "node": "ghost",
        "token": hash.to_hex(),
        "registered_at_us": 1,
        "host": "127.0.0.1",
        "port_hint": 1,
        "peer": "Ask",
    });
    let key = Keys::new(&pfx).token(&hash);
    let set = blocking(|| cli(&["HSET", &key, &session.to_string(), &orphan.to_string()]));
    assert_eq!(set.trim(), "1", "{set}");
    let (status, _, took) = discover_at(node.http, &t).await;
    assert_eq!((status, url), (404, url), "the orphan is gone for sure");
    assert!(took < Duration::from_millis(1000));
    let left = blocking(|| cli(&["HLEN", &key]));
    assert_eq!((left.trim(), url), ("0", url), "and removed");
}
