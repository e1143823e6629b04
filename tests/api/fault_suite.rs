//! The fault suite: a cluster of three real node processes on a real `redis-server`, sixty
//! simulated gateways and a continuous discovery load, through one fault each: Redis frozen,
//! paused, out of memory, read-only, killed and restarted empty; a node frozen past its
//! heartbeat TTL; a node cut off from Redis by a partition; gateways churning. Every answer is
//! judged against the model of live sessions (`hostie_testkit::chaos`): never a `200` naming
//! a session not alive then, never an answer past the deadline, never a `404` for a token with
//! a live session outside the windows a scenario declares, never a `503` for a node's own live
//! session; and the time until every node answers every token right again is bounded.
//!
//! Run with `cargo test --test api fault_suite -- --nocapture` to see each scenario's table.

use crate::helpers::*;
use hostie_testkit::chaos::{Checker, Harness, Load, fastrand};
use hostie_testkit::loopback;
use hostie_testkit::redis_server::RedisServer;
use hostie_testkit::tcp_proxy::{Mode, TcpProxy};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `--rpc-timeout`: the whole discovery deadline.
const DEADLINE: Duration = Duration::from_secs(1);
/// `--heartbeat-interval` and `--heartbeat-ttl`.
const INTERVAL: Duration = Duration::from_millis(200);
const TTL: Duration = Duration::from_secs(1);
const NODES: usize = 3;
/// Load before the fault, the fault, load after the recovery.
const BASELINE: Duration = Duration::from_secs(2);
const HOLD: Duration = Duration::from_secs(3);
const TAIL: Duration = Duration::from_secs(2);
/// Every scenario must answer everything right again within this of the fault's end.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// Runs blocking work (`redis-cli`, `kill`, starting `redis-server`) without stalling the
/// runtime's other tasks: the gateways and the load keep their timing.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// One scenario's cluster: Redis, three node processes (node `cut`, if any, reaching Redis
/// through a proxy), sixty gateways spread over the nodes, and the harness.
struct Cluster {
    name: &'static str,
    started: Instant,
    redis: RedisServer,
    prefix: String,
    nodes: Vec<NodeProcess>,
    proxy: Option<TcpProxy>,
    harness: Arc<Harness>,
    logs: tempfile::TempDir,
    seed: u64,
}

impl Cluster {
    async fn start(name: &'static str, cut: Option<usize>) -> Self {
        let started = Instant::now();
        let redis = blocking(RedisServer::start);
        let proxy = match cut {
            Some(_) => Some(TcpProxy::start(loopback(redis.port)).await),
            None => None,
        };
        let prefix = prefix();
        let logs = tempfile::tempdir().expect("a log directory");
        let url = |i| match (&proxy, cut) {
            (Some(proxy), Some(c)) if c == i => format!("redis://{}/", proxy.addr()),
            _ => redis.url(),
        };
        let (nodes, harness, seed) =
            start_fault_cluster(name, NODES, url, &prefix, logs.path()).await;
        Self {
            name,
            started,
            redis,
            prefix,
            nodes,
            proxy,
            harness,
            logs,
            seed,
        }
    }

    fn load(&self) -> Load {
        fault_load(&self.harness, self.seed)
    }

    fn checker(&self) -> Checker {
        Checker::new(&format!("{} (seed {})", self.name, self.seed), DEADLINE)
    }

    /// When Redis will hold node `node` dead: its heartbeat's alive-until (Redis's clock,
    /// `P:nodes`), as an instant of this process.
    fn heartbeat_expiry(&self, node: usize) -> Instant {
        let asked = Instant::now();
        let score = blocking(|| {
            self.redis.cli(&[
                "ZSCORE",
                &format!("{}:nodes", self.prefix),
                &fault_node_id(&self.prefix, node),
            ])
        });
        let now = blocking(|| self.redis.cli(&["TIME"]));
        let mut now = now.lines().map(|l| l.trim().parse::<u64>().unwrap_or(0));
        let now_ms = now.next().unwrap_or(0) * 1000 + now.next().unwrap_or(0) / 1000;
        let score: f64 = score
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("node {node} has a heartbeat: {score:?}"));
        let left = Duration::from_millis((score as u64).saturating_sub(now_ms));
        asked + left
    }

    /// Stops the load, judges it, prints the table (with the tail of each node's warnings
    /// when something failed) and asserts.
    async fn finish(self, load: Load, checker: &mut Checker) {
        let samples = load.stop().await;
        checker.ready_at_end();
        let verdict = checker.judge(&self.harness, &samples);
        let mut out = verdict.table();
        out.push_str(&format!(
            "  ran {:.1} s\n",
            self.started.elapsed().as_secs_f64()
        ));
        if !verdict.failures().is_empty() {
            for (i, node) in self.nodes.iter().enumerate() {
                out.push_str(&format!("  node {i} metrics: {}\n", metrics(node).await));
            }
            out.push_str(&node_warnings(self.logs.path(), NODES, 4));
        }
        // HOSTIE_FAULT_KEEP_LOGS=1 keeps them after a pass too, to read a recovery's story.
        if !verdict.failures().is_empty() || std::env::var_os("HOSTIE_FAULT_KEEP_LOGS").is_some() {
            let kept = self.logs.keep();
            out.push_str(&format!("  node logs kept in {}\n", kept.display()));
        }
        println!("{out}");
        verdict.assert_ok();
    }
}

/// The counters that tell a fault's story, from a node's `/metrics`, in one line.
async fn metrics(node: &NodeProcess) -> String {
    let Ok(res) = reqwest::get(format!("http://{}/metrics", node.admin)).await else {
        return "unreachable".to_owned();
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            !l.starts_with('#')
                && [
                    "hostie_bus_requests_total",
                    "hostie_discoveries_total",
                    "hostie_redis_errors_total",
                    "hostie_reassertions_total",
                    "hostie_swept_records_total",
                ]
                .iter()
                .any(|m| l.starts_with(m))
                && !l.ends_with(" 0")
        })
        .map(|l| l.replace("hostie_", ""))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A Redis fault: `begin`, `HOLD`, `end`; every gateway stays connected, so no `404` is
/// expected for any of them, each node answers its own sessions throughout, `/readyz` turns
/// 503 during the fault, and everything answers right within `RECOVERY_BOUND` of its end.
async fn redis_fault(
    name: &'static str,
    begin: impl FnOnce(&mut RedisServer),
    end: impl FnOnce(&mut RedisServer),
) {
    let mut c = Cluster::start(name, None).await;
    let load = c.load();
    tokio::time::sleep(BASELINE).await;
    let from = Instant::now();
    blocking(|| begin(&mut c.redis));
    tokio::time::sleep(HOLD).await;
    blocking(|| end(&mut c.redis));
    let to = Instant::now();
    let recovered = c.harness.await_recovery(to, RECOVERY_BOUND).await;
    let settled = c.harness.await_settled(to, RECOVERY_BOUND).await;
    tokio::time::sleep(TAIL).await;
    let mut checker = c.checker();
    checker
        .fault(from, to, RECOVERY_BOUND)
        .recovered(recovered)
        .settled(settled)
        .unready_during(&[0, 1, 2], from, to);
    c.finish(load, &mut checker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_by_sigstop() {
    redis_fault(
        "Redis SIGSTOP 3 s",
        |r| r.signal(Signal::Stop),
        |r| r.signal(Signal::Cont),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_clients_paused_for_writes() {
    redis_fault(
        "Redis CLIENT PAUSE 3000 WRITE",
        |r| r.pause(HOLD.as_millis() as u64, false),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_clients_paused_for_everything() {
    redis_fault(
        "Redis CLIENT PAUSE 3000 ALL",
        |r| r.pause(HOLD.as_millis() as u64, true),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory() {
    redis_fault(
        "Redis maxmemory reached (noeviction)",
        |r| {
            r.fill_to_maxmemory();
        },
        |r| r.lift_maxmemory(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_read_only() {
    redis_fault(
        "Redis read-only (REPLICAOF a dead port)",
        |r| r.read_only(),
        |r| r.writable(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty() {
    redis_fault(
        "Redis killed, restarted empty 3 s later",
        |r| r.stop(),
        |r| r.start_again(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_frozen_past_its_heartbeat_ttl() {
    let victim = 1;
    let peers = [0, 2];
    let c = Cluster::start("node SIGSTOP 3 s (TTL 1 s)", None).await;
    let load = c.load();
    tokio::time::sleep(BASELINE).await;
    let tokens = c.harness.tokens_on(victim);
    // A frozen process answers nothing: the load (a load balancer's readiness probe) leaves it.
    c.harness.exclude_node(victim).await;
    let from = Instant::now();
    blocking(|| c.nodes[victim].signal(Signal::Stop));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dead_at = c.heartbeat_expiry(victim);
    tokio::time::sleep(HOLD.saturating_sub(from.elapsed())).await;
    blocking(|| c.nodes[victim].signal(Signal::Cont));
    let to = Instant::now();
    c.harness.include_node(victim);
    let recovered = c.harness.await_recovery(to, RECOVERY_BOUND).await;
    let settled = c.harness.await_settled(to, RECOVERY_BOUND).await;
    tokio::time::sleep(TAIL).await;
    let mut checker = c.checker();
    checker
        .fault(from, to, RECOVERY_BOUND)
        .recovered(recovered)
        .settled(settled)
        // Its heartbeat ran out: the peers sweep its records, its tokens are 404 until it
        // wakes up and writes them again.
        .allow_404(
            &tokens,
            &peers,
            dead_at,
            recovered.unwrap_or(to + RECOVERY_BOUND),
        )
        // Once it is swept, nobody waits for it: each peer pays at most one deadline per
        // token it had cached, then answers fast.
        .fast_after(
            &tokens,
            &peers,
            from + TTL + INTERVAL + DEADLINE,
            to,
            DEADLINE / 4,
        );
    c.finish(load, &mut checker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_partitioned_from_redis() {
    let cut = 2;
    let peers = [0, 1];
    let c = Cluster::start("node cut off from Redis 4 s (black hole)", Some(cut)).await;
    let proxy = c.proxy.as_ref().expect("the cut node's proxy");
    let load = c.load();
    tokio::time::sleep(BASELINE).await;
    let tokens = c.harness.tokens_on(cut);
    let from = Instant::now();
    proxy.set(Mode::Blackhole);
    // A beat already on its way may still land; after that the score stays.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dead_at = c.heartbeat_expiry(cut);
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(from.elapsed())).await;
    proxy.set(Mode::Pass);
    let to = Instant::now();
    let recovered = c.harness.await_recovery(to, RECOVERY_BOUND).await;
    let settled = c.harness.await_settled(to, RECOVERY_BOUND).await;
    tokio::time::sleep(TAIL).await;
    let mut checker = c.checker();
    checker
        .fault(from, to, RECOVERY_BOUND)
        .recovered(recovered)
        .settled(settled)
        // The cut node keeps its sessions and answers them itself (no 404 allowed from it);
        // its peers cannot reach it, and once its heartbeat ran out they sweep it: 404.
        .allow_404(
            &tokens,
            &peers,
            dead_at,
            recovered.unwrap_or(to + RECOVERY_BOUND),
        )
        .unready_during(&[cut], from, to);
    c.finish(load, &mut checker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_churn_under_load() {
    let c = Cluster::start("gateway churn, no fault", None).await;
    let load = c.load();
    let mut rng = fastrand::Rng::with_seed(c.seed);
    let churn_until = Instant::now() + Duration::from_secs(10);
    let mut fresh = 0usize;
    let (mut opened, mut closed) = (0usize, 0usize);
    while Instant::now() < churn_until {
        let live = c.harness.live();
        let pick = rng.f64();
        if pick < 0.3 && live.len() > FAULT_GATEWAYS / 2 {
            // A gateway stops.
            c.harness.close(live[rng.usize(..live.len())].port);
            closed += 1;
        } else if pick < 0.6 && !live.is_empty() {
            // A gateway reconnects, through the load balancer, to any node.
            let old = &live[rng.usize(..live.len())];
            c.harness.close(old.port);
            c.harness.open(&old.token, rng.usize(..NODES)).await;
            (opened, closed) = (opened + 1, closed + 1);
        } else if pick < 0.8 && !live.is_empty() {
            // A second gateway for a token (an HA pair, a reconnect overlapping the old one).
            let token = &live[rng.usize(..live.len())].token;
            if c.harness.live_sessions(token).len() < 3 {
                c.harness.open(token, rng.usize(..NODES)).await;
                opened += 1;
            }
        } else {
            // A new gateway.
            c.harness
                .open(&token(&format!("fresh{fresh}")), rng.usize(..NODES))
                .await;
            fresh += 1;
            opened += 1;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // After the churn every node agrees with the model at once.
    let settled = c.harness.await_settled(Instant::now(), DEADLINE).await;
    let mut checker = c.checker();
    let consistent = settled.is_some();
    c.finish(load, &mut checker).await;
    println!("gateway churn: {opened} sessions opened, {closed} closed");
    assert!(
        consistent,
        "after the churn, every node answers every live token's newest port and 404 for the rest"
    );
}
