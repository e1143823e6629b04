//! The discovery path below the full stack: real hub, bus, registry and remote cache on the
//! in-memory backends, gateways replaced by tasks that answer the hub's port requests, and
//! paused time, so that every share of the deadline is exact and the tests take no real time.

use super::*;
use crate::bus::{Bus, MemoryTransport};
use crate::hub::{Hub, SessionCmd};
use crate::memory_broker::MemoryBroker;
use crate::metrics::{Label, Metrics};
use crate::model::{NodeId, RpcOutcome};
use crate::node::remote_cache::RemoteCache;
use crate::node::{Node, NodeSettings};
use crate::protocol::Token;
use crate::registry::{MemoryRegistry, Registry};
use std::sync::Arc;
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(3);
const FALLBACK_PORT: u16 = 8788;
const SETTLE: Duration = Duration::from_secs(5);

/// How a simulated gateway answers `getHostieGrpcPort`.
#[derive(Debug, Clone, Copy)]
enum Gateway {
    Port(u16),
    Failed,
    /// Never answers (and never closes).
    Silent,
}

/// Nodes sharing one in-memory registry and broker: an in-process cluster.
struct Cluster {
    registry: Arc<MemoryRegistry>,
    broker: Arc<MemoryBroker>,
    clock_us: std::sync::atomic::AtomicU64,
}

impl Cluster {
    fn new() -> Self {
        let broker = MemoryBroker::new();
        Self {
            registry: Arc::new(MemoryRegistry::new(broker.clone(), Duration::from_secs(10))),
            broker,
            clock_us: 1.into(),
        }
    }

    /// Nodes of these ids, in order.
    fn nodes<const N: usize>(&self, ids: [&str; N]) -> [Arc<Node>; N] {
        ids.map(|id| self.node(id))
    }

    fn node(&self, id: &str) -> Arc<Node> {
        let id = NodeId(id.into());
        let metrics = Arc::new(Metrics::new("test"));
        let transport = MemoryTransport::new(self.broker.clone(), id.clone());
        let bus = Bus::start(id.clone(), Arc::new(transport), metrics.clone());
        let settings = NodeSettings {
            id,
            discovery_deadline: DEADLINE,
            max_sessions_per_token: 10,
            drain_spread: Duration::from_secs(1),
            drain_grace: Duration::from_secs(1),
            registry_settle: SETTLE,
            session_order: crate::model::SessionOrder::Source,
        };
        let hub = Arc::new(Hub::new(100, 0, FALLBACK_PORT, metrics.clone()));
        let remote = RemoteCache::new(Duration::from_secs(10), 100, Duration::from_millis(500));
        Node::new(settings, hub, self.registry.clone(), bus, remote, metrics)
    }

    /// Registers a session of `token` on `node`, newer than every earlier one, whose client
    /// answers like `gateway`; its subprotocol port is `hint`.
    async fn gateway(
        &self,
        node: &Node,
        token: &TokenHash,
        hint: u16,
        gateway: Gateway,
    ) -> SessionRecord {
        let at = self
            .clock_us
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let record = SessionRecord {
            registered_at_us: at,
            host: format!("10.0.0.{hint}"),
            port_hint: Some(hint),
            ..SessionRecord::example(*token, &node.id().0)
        };
        let (tx, mut rx) = mpsc::channel(8);
        node.register(Arc::new(record.clone()), true, tx)
            .await
            .expect("admitted");
        tokio::spawn(async move {
            let mut unanswered = Vec::new();
            while let Some(cmd) = rx.recv().await {
                let SessionCmd::AskPort(waiter) = cmd else {
                    continue;
                };
                match gateway {
                    Gateway::Port(p) => drop(waiter.send(RpcOutcome::Port(p))),
                    Gateway::Failed => drop(waiter.send(RpcOutcome::Failed)),
                    Gateway::Silent => unanswered.push(waiter),
                }
            }
        });
        record
    }
}

fn token(name: &str) -> TokenHash {
    Token::new(name).expect("a non-empty token").hash()
}

fn lookups(node: &Node, source: LookupSource) -> u64 {
    node.metrics()
        .lookups
        .with_label_values(&[source.label()])
        .get()
}

/// Discovers `token` from `node`; the result and how long it took.
async fn timed(node: &Node, token: &TokenHash) -> (Result<Discovered, DiscoveryError>, Duration) {
    let started = Instant::now();
    let result = node.discover(token).await;
    (result, started.elapsed())
}

fn port(result: &Result<Discovered, DiscoveryError>) -> Option<(u16, DiscoveryOutcome)> {
    result.as_ref().ok().map(|d| (d.answer.port, d.outcome))
}

/// Discovers `token` from `node` until its records are cached: read twice (the doorkeeper
/// asks to track it), the `track` answers, then a lookup sent after it is stored. Every answer
/// must be `want`.
async fn warm(node: &Node, token: &TokenHash, want: u16) {
    for _ in 0..2 {
        assert_eq!(
            port(&node.discover(token).await),
            Some((want, DiscoveryOutcome::Hit))
        );
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        port(&node.discover(token).await),
        Some((want, DiscoveryOutcome::Hit))
    );
}

fn notices(node: &Node) -> u64 {
    node.metrics().registration_notices.get()
}

#[tokio::test(start_paused = true)]
async fn the_newest_session_is_asked_first() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let t = token("newest");
    cluster.gateway(&a, &t, 1, Gateway::Port(1001)).await;
    let newest = cluster.gateway(&a, &t, 2, Gateway::Port(1002)).await;
    for node in [&a, &b] {
        let (result, took) = timed(node, &t).await;
        assert_eq!(port(&result), Some((1002, DiscoveryOutcome::Hit)));
        assert_eq!(result.unwrap().answer.host, newest.host);
        assert_eq!(took, Duration::ZERO, "answered without waiting");
    }
    // The owner holds every session of the token: no registry lookup.
    assert_eq!(lookups(&a, LookupSource::Hub), 1);
    assert_eq!(lookups(&a, LookupSource::Registry), 0);
    assert_eq!(lookups(&b, LookupSource::Registry), 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_newest_session_gets_its_share_then_the_next_answers() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let t = token("silent-newest");
    cluster.gateway(&b, &t, 1, Gateway::Port(1001)).await;
    cluster.gateway(&b, &t, 2, Gateway::Silent).await;
    let (result, took) = timed(&a, &t).await;
    assert_eq!(port(&result), Some((1001, DiscoveryOutcome::Hit)));
    // The deadline less the answering margin (1/20), split evenly between two candidates;
    // the owner answers the silent one's fallback at 9/10 of that share, so that its answer
    // arrives in time (the bus carries it in whole milliseconds), and the older session is
    // asked next.
    let share = (DEADLINE - DEADLINE / 20) / 2;
    let owner_wait = (share - share / 10).as_millis() as u64;
    assert_eq!(took, Duration::from_millis(owner_wait));
}

#[tokio::test(start_paused = true)]
async fn a_fallback_port_is_kept_while_older_sessions_get_their_chance() {
    let cluster = Cluster::new();
    let a = cluster.node("a");
    let t = token("fallback");
    cluster.gateway(&a, &t, 1, Gateway::Silent).await;
    cluster.gateway(&a, &t, 2, Gateway::Failed).await;
    let (result, took) = timed(&a, &t).await;
    // The newest failed at once: its subprotocol port is kept, the older silent one gets
    // all the time left, and does no better.
    assert_eq!(port(&result), Some((2, DiscoveryOutcome::Fallback)));
    assert_eq!(took, DEADLINE - DEADLINE / 20);
}

#[tokio::test(start_paused = true)]
async fn a_silent_only_session_answers_its_subprotocol_port_before_the_deadline() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let t = token("silent-only");
    cluster.gateway(&b, &t, 7, Gateway::Silent).await;
    let (result, took) = timed(&a, &t).await;
    assert_eq!(port(&result), Some((7, DiscoveryOutcome::Timeout)));
    assert!(
        took < DEADLINE,
        "answered within the deadline, took {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_miss_is_answered_at_once() {
    let cluster = Cluster::new();
    let a = cluster.node("a");
    let (result, took) = timed(&a, &token("nobody")).await;
    assert!(
        matches!(result, Err(DiscoveryError::NotFound)),
        "{result:?}"
    );
    assert_eq!(took, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn cached_candidates_are_used_until_a_registration_notice_drops_them() {
    let cluster = Cluster::new();
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    let t = token("cached");
    cluster.gateway(&b, &t, 1, Gateway::Port(1001)).await;
    warm(&a, &t, 1001).await;
    assert_eq!(lookups(&a, LookupSource::Registry), 3);
    assert_eq!(lookups(&a, LookupSource::Cache), 0);
    assert_eq!(
        port(&a.discover(&t).await),
        Some((1001, DiscoveryOutcome::Hit))
    );
    assert_eq!(lookups(&a, LookupSource::Registry), 3);
    assert_eq!(lookups(&a, LookupSource::Cache), 1);
    // A newer session on a third node: its notice drops what `a` remembered.
    cluster.gateway(&c, &t, 2, Gateway::Port(1002)).await;
    assert_eq!(
        port(&a.discover(&t).await),
        Some((1002, DiscoveryOutcome::Hit))
    );
    assert_eq!(lookups(&a, LookupSource::Registry), 4);
    assert_eq!(lookups(&a, LookupSource::Cache), 1);
    // A local registration drops it too.
    cluster.gateway(&a, &t, 3, Gateway::Port(1003)).await;
    assert_eq!(
        port(&a.discover(&t).await),
        Some((1003, DiscoveryOutcome::Hit))
    );
    assert_eq!(lookups(&a, LookupSource::Cache), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cached_session_found_gone_falls_back_to_the_registry() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let t = token("gone");
    let record = cluster.gateway(&b, &t, 1, Gateway::Port(1001)).await;
    warm(&a, &t, 1001).await;
    // The session closes: no notice reaches `a`, whose cache still names it.
    b.release(&record).await;
    let (result, took) = timed(&a, &t).await;
    assert!(
        matches!(result, Err(DiscoveryError::NotFound)),
        "{result:?}"
    );
    assert_eq!(took, Duration::ZERO, "a gone session is not waited for");
    assert_eq!(lookups(&a, LookupSource::Cache), 1);
    assert_eq!(lookups(&a, LookupSource::Registry), 4);
}

#[tokio::test(start_paused = true)]
async fn a_candidate_on_a_node_off_the_bus_is_skipped_at_once() {
    let cluster = Cluster::new();
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    let t = token("dead-owner");
    cluster.gateway(&c, &t, 1, Gateway::Port(1001)).await;
    cluster.gateway(&b, &t, 2, Gateway::Port(1002)).await;
    // `b` dies without a word: its record stays in the registry, its bus end is gone.
    drop(b);
    let (result, took) = timed(&a, &t).await;
    assert_eq!(port(&result), Some((1001, DiscoveryOutcome::Hit)));
    assert_eq!(took, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_draining_owner_answers_nothing_and_the_next_candidate_does() {
    let cluster = Cluster::new();
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    let t = token("draining-owner");
    cluster.gateway(&c, &t, 1, Gateway::Port(1001)).await;
    cluster.gateway(&b, &t, 2, Gateway::Port(1002)).await;
    assert_eq!(
        port(&a.discover(&t).await),
        Some((1002, DiscoveryOutcome::Hit))
    );
    // `a` remembers b's session; b drains: its records go, its sessions are no longer offered,
    // and its Leave drops what `a` remembered, so that `a` reads the registry again at once.
    b.drain().await;
    let (result, took) = timed(&a, &t).await;
    assert_eq!(port(&result), Some((1001, DiscoveryOutcome::Hit)));
    assert_eq!(took, Duration::ZERO);
    assert_eq!(lookups(&a, LookupSource::Registry), 2);
    assert_eq!(
        lookups(&a, LookupSource::Cache),
        0,
        "the Leave dropped the cache"
    );
}

#[tokio::test(start_paused = true)]
async fn the_owner_answers_for_a_live_session_the_registry_lost() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let t = token("lost-record");
    let record = cluster.gateway(&a, &t, 1, Gateway::Port(1001)).await;
    // The registry loses the record (a refused write, a flush): a peer registering the token
    // too makes it shared, so the owner reads the registry instead of its hub alone.
    let other = cluster.gateway(&b, &t, 2, Gateway::Port(1002)).await;
    cluster
        .registry
        .release(&record.token, record.session)
        .await
        .unwrap();
    b.release(&other).await;
    let (result, took) = timed(&a, &t).await;
    assert_eq!(port(&result), Some((1001, DiscoveryOutcome::Hit)));
    assert_eq!(took, Duration::ZERO);
    assert_eq!(
        lookups(&a, LookupSource::Registry),
        1,
        "it read the registry"
    );
    // The peer cannot know of it: while it trusts the registry that is a 404.
    assert!(matches!(
        b.discover(&t).await,
        Err(DiscoveryError::NotFound)
    ));
}

#[tokio::test(start_paused = true)]
async fn no_session_is_unsure_for_the_settle_time_after_a_write_failed() {
    let cluster = Cluster::new();
    let a = cluster.node("a");
    let t = token("unsure");
    assert!(matches!(
        a.discover(&t).await,
        Err(DiscoveryError::NotFound)
    ));
    a.distrust_registry();
    assert!(!a.registry_trusted());
    let result = a.discover(&t).await;
    assert!(
        matches!(result, Err(DiscoveryError::Untrusted)),
        "{result:?}"
    );
    assert_eq!(result.unwrap_err().outcome(), DiscoveryOutcome::Error);
    tokio::time::advance(SETTLE - Duration::from_millis(1)).await;
    assert!(matches!(
        a.discover(&t).await,
        Err(DiscoveryError::Untrusted)
    ));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(a.registry_trusted());
    assert!(matches!(
        a.discover(&t).await,
        Err(DiscoveryError::NotFound)
    ));
    // A live session is answered whatever the trust.
    cluster.gateway(&a, &t, 1, Gateway::Port(1001)).await;
    a.distrust_registry();
    assert_eq!(
        port(&a.discover(&t).await),
        Some((1001, DiscoveryOutcome::Hit))
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_peer_is_never_asked_cached_or_not() {
    let cluster = Cluster::new();
    let [a, b, c, d] = cluster.nodes(["a", "b", "c", "d"]);
    let t = token("hung-owner");
    cluster.gateway(&c, &t, 1, Gateway::Port(1001)).await;
    // `b` hangs (a paused process): its session never answers, its bus end stays subscribed.
    cluster.gateway(&b, &t, 2, Gateway::Silent).await;
    let (result, took) = timed(&a, &t).await;
    assert_eq!(port(&result), Some((1001, DiscoveryOutcome::Hit)));
    assert!(
        took > Duration::from_secs(1),
        "the hung owner had its share"
    );
    warm(&a, &t, 1001).await;
    // The cache still names b's session (it answered its fallback in time, so it stayed).
    // The heartbeat then finds b dead: it is never asked again, from the cache ...
    a.set_dead_peers([NodeId("b".into())]);
    let cached = lookups(&a, LookupSource::Cache);
    let (result, took) = timed(&a, &t).await;
    assert_eq!(port(&result), Some((1001, DiscoveryOutcome::Hit)));
    assert_eq!(took, Duration::ZERO);
    assert_eq!(
        lookups(&a, LookupSource::Cache),
        cached + 1,
        "answered from the cache"
    );
    // ... nor from the registry.
    d.set_dead_peers([NodeId("b".into()), NodeId("d".into())]);
    let (result, took) = timed(&d, &t).await;
    assert_eq!(port(&result), Some((1001, DiscoveryOutcome::Hit)));
    assert_eq!(took, Duration::ZERO);
    assert_eq!(lookups(&d, LookupSource::Registry), 1);
}

#[tokio::test(start_paused = true)]
async fn a_registration_is_announced_only_to_the_nodes_that_hold_or_track_its_token() {
    let cluster = Cluster::new();
    let [a, b, c, d] = cluster.nodes(["a", "b", "c", "d"]);
    let t = token("targeted");
    cluster.gateway(&b, &t, 1, Gateway::Port(1001)).await;
    // `a` reads the token often and caches it; `d` reads it once (no tracking).
    warm(&a, &t, 1001).await;
    assert_eq!(
        port(&d.discover(&t).await),
        Some((1001, DiscoveryOutcome::Hit))
    );
    cluster.gateway(&c, &t, 2, Gateway::Port(1002)).await;
    assert_eq!(notices(&a), 1, "a tracks the token");
    assert_eq!(notices(&b), 1, "b holds a session of it");
    assert_eq!(notices(&c), 0, "c registered it");
    assert_eq!(notices(&d), 0, "d read it once and caches nothing");
    // `a` answers the new session at once, and `b` no longer answers alone.
    for node in [&a, &b, &d] {
        assert_eq!(
            port(&node.discover(&t).await),
            Some((1002, DiscoveryOutcome::Hit))
        );
    }
    // A token nobody else holds or reads: its registrations tell nobody.
    let lone = token("lone");
    cluster.gateway(&c, &lone, 3, Gateway::Port(1003)).await;
    cluster.gateway(&c, &lone, 4, Gateway::Port(1004)).await;
    assert_eq!(
        [&a, &b, &c, &d].map(|n| notices(n)),
        [1, 1, 0, 0],
        "nobody else was told"
    );
}

#[tokio::test(start_paused = true)]
async fn after_the_registry_lost_data_nothing_cached_or_held_alone_is_trusted() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let (remote, local) = (token("lost-remote"), token("lost-local"));
    cluster.gateway(&b, &remote, 1, Gateway::Port(1001)).await;
    cluster.gateway(&a, &local, 2, Gateway::Port(1002)).await;
    warm(&a, &remote, 1001).await;
    let before = lookups(&a, LookupSource::Registry);
    assert_eq!(
        port(&a.discover(&local).await),
        Some((1002, DiscoveryOutcome::Hit))
    );
    assert_eq!(lookups(&a, LookupSource::Hub), 1, "the one-node fast path");
    a.registry_lost_data();
    for (t, want) in [(&remote, 1001), (&local, 1002)] {
        assert_eq!(
            port(&a.discover(t).await),
            Some((want, DiscoveryOutcome::Hit))
        );
    }
    assert_eq!(
        lookups(&a, LookupSource::Registry),
        before + 2,
        "both read the registry"
    );
    assert_eq!(lookups(&a, LookupSource::Cache), 0);
    assert_eq!(lookups(&a, LookupSource::Hub), 1);
}

#[tokio::test(start_paused = true)]
async fn a_token_read_all_along_stays_tracked_and_cached_across_ttls() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let t = token("hot");
    cluster.gateway(&b, &t, 1, Gateway::Port(1001)).await;
    for _ in 0..35 {
        assert_eq!(
            port(&a.discover(&t).await),
            Some((1001, DiscoveryOutcome::Hit))
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Three reads before the first cached answer (the doorkeeper, the track, a lookup after
    // it), then one per cache TTL (10 s) as entries expire, at 12, 22 and 32 s: the tracking,
    // renewed by cached answers too, never lapses (a lapse costs two lookups instead of one).
    let registry = lookups(&a, LookupSource::Registry);
    assert!((5..=6).contains(&registry), "{registry} lookups");
    assert_eq!(lookups(&a, LookupSource::Cache), 35 - registry);
}

#[tokio::test(start_paused = true)]
async fn while_the_registry_is_distrusted_hot_tokens_stay_cached_and_no_new_one_is_tracked() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let (hot, cold) = (token("hot-distrusted"), token("cold-distrusted"));
    cluster.gateway(&b, &hot, 1, Gateway::Port(1001)).await;
    cluster.gateway(&b, &cold, 2, Gateway::Port(1002)).await;
    warm(&a, &hot, 1001).await;
    let before = lookups(&a, LookupSource::Registry);
    // Writes keep failing (the node distrusts the registry all along): renewals go on.
    for second in 0..35 {
        if second % 4 == 0 {
            a.distrust_registry();
        }
        assert!(!a.registry_trusted());
        assert_eq!(
            port(&a.discover(&hot).await),
            Some((1001, DiscoveryOutcome::Hit))
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // One lookup per cache TTL (10 s), at 10, 20 and 30 s: the tracking never lapsed.
    let hot_lookups = lookups(&a, LookupSource::Registry) - before;
    assert!((3..=4).contains(&hot_lookups), "{hot_lookups} lookups");
    // A token first read now is not tracked, so never cached.
    for _ in 0..4 {
        assert_eq!(
            port(&a.discover(&cold).await),
            Some((1002, DiscoveryOutcome::Hit))
        );
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(
        lookups(&a, LookupSource::Registry) - before - hot_lookups,
        4,
        "every read of the new token went to the registry"
    );
    // Once the registry is trusted again, it is.
    tokio::time::sleep(SETTLE).await;
    assert!(a.registry_trusted());
    warm(&a, &cold, 1002).await;
    let cached = lookups(&a, LookupSource::Cache);
    assert_eq!(
        port(&a.discover(&cold).await),
        Some((1002, DiscoveryOutcome::Hit))
    );
    assert_eq!(lookups(&a, LookupSource::Cache), cached + 1);
}

#[tokio::test(start_paused = true)]
async fn a_token_with_records_but_no_live_session_is_gone_not_unknown() {
    let cluster = Cluster::new();
    let [a, b, c] = cluster.nodes(["a", "b", "c"]);
    let (t, never) = (token("all-gone"), token("never-registered"));
    cluster.gateway(&b, &t, 1, Gateway::Port(1001)).await;
    // Its only record is of a peer held dead: never asked, and gone.
    a.set_dead_peers([NodeId("b".into())]);
    assert!(matches!(a.discover(&t).await, Err(DiscoveryError::Gone)));
    assert!(matches!(
        a.discover(&never).await,
        Err(DiscoveryError::NotFound)
    ));
    assert_eq!(DiscoveryError::Gone.outcome(), DiscoveryOutcome::Miss);
    // A node that holds nobody dead asks the owner, and finds the session.
    assert_eq!(
        port(&c.discover(&t).await),
        Some((1001, DiscoveryOutcome::Hit))
    );
}
