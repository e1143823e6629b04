//! The registry contract, run against both implementations: a seeded model test of random
//! operations compared with a plain model, plus liveness (heartbeat, sweep) on Redis, on one
//! Redis and on a 3-primary Redis Cluster (where every command must stay in one slot).

use crate::helpers::{WRITE_REFUSALS, init};
use hostie::memory_broker::MemoryBroker;
use hostie::metrics::Metrics;
use hostie::model::{NodeId, SessionId, SessionRecord, newest_first};
use hostie::protocol::{PeerHint, TokenHash};
use hostie::redis_common::{Keys, RedisConns, RedisTopology};
use hostie::registry::{Admission, MemoryRegistry, RedisRegistry, Registry};
use hostie_testkit::redis_server::RedisServer;
use hostie_testkit::redis_topology::RedisCluster;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CAP: usize = 3;

/// xorshift64*: a reproducible sequence without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

fn record(token: TokenHash, node: &NodeId, at: u64) -> SessionRecord {
    SessionRecord {
        session: SessionId::new(),
        node: node.clone(),
        token,
        registered_at_us: at,
        host: "127.0.0.1".into(),
        port_hint: Some(18789),
        peer: PeerHint::Ask,
        source: None,
        host_from: None,
        rejected_host: false,
        version: None,
    }
}

/// Where a Redis registry keeps its data: one Redis, or a Redis Cluster.
enum Store {
    One(RedisServer),
    Cluster(RedisCluster),
}

impl Store {
    fn url(&self) -> String {
        match self {
            Self::One(r) => r.url(),
            Self::Cluster(c) => c.hostie_url(),
        }
    }

    /// One prefix per store: each test starts its own.
    fn prefix(&self) -> String {
        match self {
            Self::One(r) => format!("contract{}", r.port),
            Self::Cluster(c) => format!("contract{}", c.ports()[0]),
        }
    }

    /// `redis-cli` on the server that holds the key (`-c` follows `MOVED` on a Cluster).
    fn cli(&self, args: &[&str]) -> String {
        match self {
            Self::One(r) => r.cli(args),
            Self::Cluster(c) => c.cli_any(args),
        }
    }

    /// Empties every server.
    fn flush(&self) {
        match self {
            Self::One(r) => assert_eq!(r.cli(&["FLUSHALL"]).trim(), "OK"),
            Self::Cluster(c) => {
                for p in c.primaries() {
                    assert_eq!(c.cli(p, &["FLUSHALL"]).trim(), "OK");
                }
            }
        }
    }
}

fn redis_registry(store: &Store, node: &str, ttl: Duration) -> Arc<dyn Registry> {
    let op_timeout = Duration::from_secs(1);
    let topology = RedisTopology::parse(&store.url()).unwrap();
    Arc::new(RedisRegistry::new(
        Arc::new(RedisConns::new(topology, op_timeout).unwrap()),
        Keys::new(&store.prefix()),
        NodeId(node.into()),
        ttl,
        Arc::new(Metrics::new("test")),
    ))
}

async fn model_test(registry: Arc<dyn Registry>, seed: u64) {
    let nodes: Vec<NodeId> = ["a", "b", "c"]
        .iter()
        .map(|n| NodeId((*n).into()))
        .collect();
    for n in &nodes {
        registry.heartbeat(n).await.unwrap();
    }
    let tokens: Vec<TokenHash> = (0..5u8).map(|i| TokenHash([i; 32])).collect();
    let mut model: HashMap<TokenHash, Vec<SessionRecord>> = HashMap::new();
    let mut rng = Rng(seed);
    let mut clock = 1_000_000u64;
    for step in 0..400 {
        let token = tokens[rng.below(tokens.len())];
        match rng.below(10) {
            0..=3 => {
                clock += 1 + rng.below(3) as u64;
                let r = record(token, &nodes[rng.below(nodes.len())], clock);
                let got = registry.register(&r, CAP, &[]).await.unwrap();
                let list = model.entry(token).or_default();
                let shared = list.iter().any(|o| o.node != r.node);
                let want = if list.len() < CAP {
                    list.push(r);
                    Admission::Admitted { shared }
                } else {
                    Admission::TokenFull
                };
                assert_eq!(got, want, "step {step}: register");
            }
            4..=5 => {
                let list = model.entry(token).or_default();
                // Fenced: releasing an id that is not there removes nothing.
                let session = if list.is_empty() || rng.below(4) == 0 {
                    SessionId::new()
                } else {
                    list.remove(rng.below(list.len())).session
                };
                registry.release(&token, session).await.unwrap();
            }
            6 => {
                let node = &nodes[rng.below(nodes.len())];
                registry.release_node(node).await.unwrap();
                for list in model.values_mut() {
                    list.retain(|r| &r.node != node);
                }
                registry.heartbeat(node).await.unwrap();
            }
            _ => {}
        }
        let mut want = model.get(&token).cloned().unwrap_or_default();
        newest_first(&mut want);
        let got = registry.candidates(&token).await.unwrap();
        assert_eq!(got.records, want, "step {step}: candidates newest first");
    }
    // Re-assertion restores exactly what was lost.
    let everything: Vec<SessionRecord> = model.values().flatten().cloned().collect();
    for n in &nodes {
        registry.release_node(n).await.unwrap();
        registry.heartbeat(n).await.unwrap();
    }
    registry.reassert(&everything).await.unwrap();
    for token in &tokens {
        let mut want = model.get(token).cloned().unwrap_or_default();
        newest_first(&mut want);
        assert_eq!(registry.candidates(token).await.unwrap().records, want);
    }
}

#[tokio::test]
async fn memory_registry_keeps_the_contract() {
    for seed in [1, 42, 0xDEAD_BEEF] {
        model_test(
            Arc::new(MemoryRegistry::new(
                MemoryBroker::new(),
                Duration::from_secs(10),
            )),
            seed,
        )
        .await;
    }
}

#[tokio::test]
async fn redis_registry_keeps_the_contract() {
    init();
    contract_on(Store::One(RedisServer::start())).await;
}

#[tokio::test]
async fn redis_cluster_registry_keeps_the_contract() {
    init();
    contract_on(Store::Cluster(RedisCluster::start(3, 0))).await;
}

async fn contract_on(store: Store) {
    for seed in [1, 42, 0xDEAD_BEEF] {
        store.flush();
        model_test(redis_registry(&store, "a", Duration::from_secs(60)), seed).await;
    }
}

#[tokio::test]
async fn dead_nodes_are_reported_at_once_and_swept_only_while_dead() {
    init();
    dead_nodes_on(Store::One(RedisServer::start())).await;
}

#[tokio::test]
async fn dead_nodes_on_a_cluster_are_swept_slot_by_slot() {
    init();
    dead_nodes_on(Store::Cluster(RedisCluster::start(3, 0))).await;
}

async fn dead_nodes_on(redis: Store) {
    let short = redis_registry(&redis, "short", Duration::from_millis(300));
    let long = redis_registry(&redis, "long", Duration::from_secs(60));
    let (dying, living) = (NodeId("short".into()), NodeId("long".into()));
    short.heartbeat(&dying).await.unwrap();
    let hb = long.heartbeat(&living).await.unwrap();
    assert!(hb.fresh, "a node's first beat is fresh");
    assert!(!long.heartbeat(&living).await.unwrap().fresh);
    let token = TokenHash([9; 32]);
    let old = record(token, &dying, 1);
    let new = record(token, &living, 2);
    assert_eq!(
        short.register(&old, CAP, &[]).await.unwrap(),
        Admission::Admitted { shared: false }
    );
    assert_eq!(
        long.register(&new, CAP, &[]).await.unwrap(),
        Admission::Admitted { shared: true },
        "another live node holds the token"
    );
    assert_eq!(long.candidates(&token).await.unwrap().records.len(), 2);
    // Not dead yet: a sweep is fenced off.
    assert_eq!(long.sweep(&dying).await.unwrap(), 0);

    tokio::time::sleep(Duration::from_millis(400)).await;
    // Reported by the next heartbeat once its TTL ran out (the node then hides its records),
    // and still in the registry until swept.
    let hb = long.heartbeat(&living).await.unwrap();
    assert_eq!(hb.dead, vec![dying.clone()]);
    assert_eq!(hb.alive, 1);
    assert_eq!(long.candidates(&token).await.unwrap().records.len(), 2);
    assert_eq!(
        redis
            .cli(&["HLEN", &Keys::new(&redis.prefix()).token(&token)])
            .trim(),
        "2",
        "hidden, not yet removed"
    );
    assert_eq!(long.sweep(&dying).await.unwrap(), 1);
    assert!(long.heartbeat(&living).await.unwrap().dead.is_empty());
    let pfx = redis.prefix();
    assert_eq!(
        redis.cli(&["HLEN", &Keys::new(&pfx).token(&token)]).trim(),
        "1"
    );
    assert_eq!(
        redis
            .cli(&["EXISTS", &Keys::new(&pfx).node_sessions(&dying)])
            .trim(),
        "0"
    );

    // A dead node's record no longer makes a token shared.
    let newer = record(token, &living, 3);
    assert_eq!(
        long.register(&newer, CAP, &[]).await.unwrap(),
        Admission::Admitted { shared: false }
    );

    // On one Redis, a swept node's lookups say the registry lost its data, until it beats
    // again (on a Cluster the lookup reads the token's shard only: the beat alone says so).
    if matches!(redis, Store::One(_)) {
        assert!(!short.candidates(&token).await.unwrap().complete);
        assert!(long.candidates(&token).await.unwrap().complete);
    }
    assert!(
        short.heartbeat(&dying).await.unwrap().fresh,
        "fresh: re-assert"
    );
    assert!(short.candidates(&token).await.unwrap().complete);
}

#[tokio::test]
async fn a_peer_is_unsettled_from_a_lost_entry_until_its_reassertion_worked() {
    init();
    unsettled_on(Store::One(RedisServer::start())).await;
}

#[tokio::test]
async fn a_peer_is_unsettled_on_a_cluster_too() {
    init();
    unsettled_on(Store::Cluster(RedisCluster::start(3, 0))).await;
}

/// Peers distrust "no session" while a node's records may be missing: from the beat that found
/// its entry gone (Redis lost data) until its first beat after a re-assertion that worked.
async fn unsettled_on(redis: Store) {
    let ttl = Duration::from_millis(300);
    let (a, b) = (
        redis_registry(&redis, "a", Duration::from_secs(60)),
        redis_registry(&redis, "b", ttl),
    );
    let (a_id, b_id) = (NodeId("a".into()), NodeId("b".into()));
    let holding = |sessions| hostie::registry::NodeStats {
        sessions,
        ..Default::default()
    };
    a.heartbeat(&a_id).await.unwrap();
    a.set_stats(&a_id, &holding(5));
    b.set_stats(&b_id, &holding(3));
    assert!(b.heartbeat(&b_id).await.unwrap().fresh);
    assert_eq!(
        a.heartbeat(&a_id).await.unwrap().unsettled,
        1,
        "b found its entry gone"
    );
    assert_eq!(
        b.heartbeat(&b_id).await.unwrap().unsettled,
        0,
        "never itself"
    );
    // b's next beat after a re-assertion that worked (set_settled(true) is the default).
    assert_eq!(a.heartbeat(&a_id).await.unwrap().unsettled, 0);

    b.set_settled(false);
    b.heartbeat(&b_id).await.unwrap();
    assert_eq!(
        a.heartbeat(&a_id).await.unwrap().unsettled,
        1,
        "its re-assertion failed"
    );
    b.set_settled(true);
    b.heartbeat(&b_id).await.unwrap();
    assert_eq!(a.heartbeat(&a_id).await.unwrap().unsettled, 0);

    // A node without sessions has nothing to re-assert: starting one unsettles nobody.
    let c = redis_registry(&redis, "c", ttl);
    let c_id = NodeId("c".into());
    c.set_stats(&c_id, &holding(0));
    assert!(c.heartbeat(&c_id).await.unwrap().fresh);
    assert_eq!(a.heartbeat(&a_id).await.unwrap().unsettled, 0);

    // Unsettled, then dead: no longer waited for once its entry ran out.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(b.heartbeat(&b_id).await.unwrap().fresh, "b's entry ran out");
    assert_eq!(a.heartbeat(&a_id).await.unwrap().unsettled, 1);
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(a.heartbeat(&a_id).await.unwrap().unsettled, 0, "b is dead");
}

#[tokio::test]
async fn redis_down_is_an_error_not_an_empty_answer() {
    init();
    let mut store = Store::One(RedisServer::start());
    let registry = redis_registry(&store, "a", Duration::from_secs(60));
    let Store::One(redis) = &mut store else {
        unreachable!()
    };
    registry.check().await.unwrap();
    redis.stop();
    assert!(registry.check().await.is_err());
    assert!(registry.candidates(&TokenHash([1; 32])).await.is_err());
    assert!(registry.heartbeat(&NodeId("a".into())).await.is_err());
}

#[tokio::test]
async fn readiness_fails_while_redis_answers_reads_but_refuses_writes() {
    init();
    let store = Store::One(RedisServer::start());
    let registry = redis_registry(&store, "a", Duration::from_secs(60));
    let Store::One(redis) = &store else {
        unreachable!()
    };
    let node = NodeId("a".into());
    registry.heartbeat(&node).await.unwrap();
    registry.check().await.unwrap();
    let token = TokenHash([2; 32]);
    for refusal in &WRITE_REFUSALS {
        let refuse = refusal.name;
        (refusal.refuse)(redis);
        let started = Instant::now();
        assert!(registry.check().await.is_err(), "{refuse:?}: not ready");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{refuse:?}: bounded"
        );
        assert!(
            registry.candidates(&token).await.is_ok(),
            "{refuse:?}: reads work"
        );
        assert!(
            registry.heartbeat(&node).await.is_err(),
            "{refuse:?}: beats fail"
        );
        (refusal.restore)(redis);
        registry.check().await.unwrap();
    }
}

/// A record whose node is not in the heartbeats at all (its owner died between writing it
/// and its set member) is removed on request; one of a node with a heartbeat entry is not.
async fn orphans_on(redis: Store) {
    let live = redis_registry(&redis, "live", Duration::from_secs(60));
    let token = TokenHash([7; 32]);
    let (ghost, alive) = (NodeId("ghost".into()), NodeId("live".into()));
    live.heartbeat(&alive).await.unwrap();
    let orphan = record(token, &ghost, 1);
    let kept = record(token, &alive, 2);
    live.register(&orphan, CAP, &[]).await.unwrap();
    live.register(&kept, CAP, &[]).await.unwrap();
    assert!(!live.drop_orphan(&kept).await.unwrap(), "its node beats");
    assert!(
        live.drop_orphan(&orphan).await.unwrap(),
        "its node is unknown"
    );
    assert_eq!(live.candidates(&token).await.unwrap().records, vec![kept]);
}

#[tokio::test]
async fn records_of_nodes_gone_from_the_heartbeats_are_dropped_on_request() {
    init();
    orphans_on(Store::One(RedisServer::start())).await;
    orphans_on(Store::Cluster(RedisCluster::start(3, 0))).await;
}
