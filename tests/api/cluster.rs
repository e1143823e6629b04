//! Cluster mode: routing across real nodes on one real `redis-server`.

use crate::helpers::*;
use hostie_testkit::redis_server::RedisServer;
use std::time::{Duration, Instant};

#[tokio::test]
async fn three_nodes_answer_every_token_nine_routes() {
    let redis = RedisServer::start();
    let nodes = spawn_cluster(3, &redis, &prefix()).await;
    let mut gateways = Vec::new();
    let mut tokens = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let t = token(&format!("route{i}"));
        let port = 20_000 + i as u16;
        gateways.push(
            Gateway::connect(node.http, GatewayOptions::new(&t, port))
                .await
                .unwrap(),
        );
        tokens.push((t, port));
    }
    for (t, port) in &tokens {
        for node in &nodes {
            let (status, body) = node.discover(t).await;
            assert_eq!(
                (status, body["port"].as_u64()),
                (200, Some(u64::from(*port))),
                "{body}"
            );
            assert_eq!(body["host"], "127.0.0.1");
        }
    }
    // Each owner answered its own node locally and two peers over the bus.
    for node in &nodes {
        assert_eq!(
            node.metric("hostie_bus_requests_total{result=\"ok\"}")
                .await,
            2.0
        );
        assert_eq!(node.metric("hostie_bus_replies_total").await, 2.0);
        // The gauge follows the heartbeat (200 ms here).
        assert!(
            eventually(Duration::from_secs(1), || async {
                node.metric("hostie_peers_alive").await == 3.0
            })
            .await
        );
    }
    for gw in &gateways {
        assert_eq!(gw.request_count(), 3);
    }
}

#[tokio::test]
async fn registration_is_discoverable_everywhere_within_100ms() {
    let redis = RedisServer::start();
    let nodes = spawn_cluster(2, &redis, &prefix()).await;
    let t = token("fast");
    let _gw = Gateway::connect(nodes[0].http, GatewayOptions::new(&t, 4444))
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        eventually(Duration::from_millis(100), || async {
            nodes[1].discover(&t).await.0 == 200
        })
        .await
    );
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn newest_registration_wins_across_nodes_and_closes_take_effect_at_once() {
    let redis = RedisServer::start();
    let nodes = spawn_cluster(3, &redis, &prefix()).await;
    let t = token("ha");
    let old = Gateway::connect(nodes[0].http, GatewayOptions::new(&t, 1111))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new = Gateway::connect(nodes[1].http, GatewayOptions::new(&t, 2222))
        .await
        .unwrap();
    // Discoverable everywhere within 100 ms of the handshake (docs/architecture.md §2); after that the
    // older session is never asked.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for node in &nodes {
        assert_eq!(node.discover(&t).await.1["port"], 2222);
    }
    assert_eq!(old.request_count(), 0);
    new.close();
    assert!(new.closed_within(Duration::from_secs(2)).await.is_some());
    for node in &nodes {
        assert!(
            eventually(Duration::from_millis(500), || async {
                node.discover(&t).await.1["port"] == 1111
            })
            .await
        );
    }
    old.close();
    assert!(old.closed_within(Duration::from_secs(2)).await.is_some());
    for node in &nodes {
        assert!(
            eventually(Duration::from_millis(500), || async {
                node.discover(&t).await.0 == 404
            })
            .await
        );
        let started = Instant::now();
        assert_eq!(node.discover(&t).await.0, 404);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "a miss is answered at once"
        );
    }
}

#[tokio::test]
async fn per_token_cap_holds_across_the_cluster() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let mut c = cluster_config(&redis, &pfx);
        c.max_sessions_per_token = 2;
        nodes.push(spawn_node(c).await);
    }
    let t = token("cap");
    let _a = Gateway::connect(nodes[0].http, GatewayOptions::new(&t, 1))
        .await
        .unwrap();
    let _b = Gateway::connect(nodes[1].http, GatewayOptions::new(&t, 2))
        .await
        .unwrap();
    let refused = Gateway::connect(nodes[2].http, GatewayOptions::new(&t, 3))
        .await
        .err()
        .expect("a third session of the token is refused on any node");
    assert_eq!(refused.status, 429);
}

#[tokio::test]
async fn repeated_cross_node_discoveries_skip_the_lookup_until_something_changes() {
    let redis = RedisServer::start();
    let nodes = spawn_cluster(3, &redis, &prefix()).await;
    let asker = &nodes[2];
    let lookups = |source: &'static str| async move {
        asker
            .metric(&format!(
                "hostie_discovery_lookups_total{{source=\"{source}\"}}"
            ))
            .await
    };
    let t = token("cached");
    let first = Gateway::connect(nodes[0].http, GatewayOptions::new(&t, 1111))
        .await
        .unwrap();
    // A token read a second time is tracked (the asker is told of its new registrations); a
    // lookup sent after that answered is remembered. So the fourth discovery, or the fifth if
    // the track had not answered by the third, is a cache hit.
    let mut asked = 0;
    while lookups("cache").await == 0.0 && asked < 5 {
        assert_eq!(asker.discover(&t).await.1["port"], 1111);
        asked += 1;
    }
    assert_eq!(
        lookups("cache").await,
        1.0,
        "a repeated discovery is remembered"
    );
    assert_eq!(lookups("registry").await, f64::from(asked - 1));
    assert!(asked == 4 || asked == 5, "{asked} discoveries");
    assert_eq!(
        first.request_count(),
        asked as usize,
        "a cached discovery still asks the session"
    );

    // A newer session on another node: its registration notice drops the cached records, and
    // it is discoverable within 100 ms of its handshake (docs/architecture.md §2).
    let second = Gateway::connect(nodes[1].http, GatewayOptions::new(&t, 2222))
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        eventually(Duration::from_millis(100), || async {
            asker.discover(&t).await.1["port"] == 2222
        })
        .await,
        "the newer remote session is found within 100 ms"
    );
    assert!(started.elapsed() < Duration::from_millis(100));
    // Cached again, newest first.
    assert_eq!(asker.discover(&t).await.1["port"], 2222);

    // A newer session on the asking node itself: no notice needed, at once.
    let third = Gateway::connect(asker.http, GatewayOptions::new(&t, 3333))
        .await
        .unwrap();
    assert_eq!(asker.discover(&t).await.1["port"], 3333);
    third.close();
    assert!(third.closed_within(Duration::from_secs(2)).await.is_some());
    assert!(
        eventually(Duration::from_secs(1), || async {
            asker.discover(&t).await.1["port"] == 2222
        })
        .await
    );

    // The cached newest session closes: asked, found gone, the older one answers; the entry is
    // dropped, so the next discovery reads the registry and does not ask the closed one again.
    assert_eq!(asker.discover(&t).await.1["port"], 2222);
    let gone = || async {
        asker
            .metric("hostie_bus_requests_total{result=\"session_gone\"}")
            .await
    };
    let (registry_before, gone_before) = (lookups("registry").await, gone().await);
    second.close();
    assert!(second.closed_within(Duration::from_secs(2)).await.is_some());
    assert!(
        eventually(Duration::from_secs(1), || async {
            nodes[1].node.live_sessions() == 0
        })
        .await
    );
    assert_eq!(asker.discover(&t).await.1["port"], 1111);
    assert_eq!(gone().await, gone_before + 1.0);
    assert_eq!(lookups("registry").await, registry_before);
    assert_eq!(asker.discover(&t).await.1["port"], 1111);
    assert_eq!(lookups("registry").await, registry_before + 1.0);
    assert_eq!(gone().await, gone_before + 1.0);

    // Entries live one heartbeat TTL (1 s here): then the registry is read again.
    let before = lookups("registry").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(asker.discover(&t).await.1["port"], 1111);
    assert_eq!(lookups("registry").await, before + 1.0);

    // The last session closes: 404, never a stale answer.
    first.close();
    assert!(first.closed_within(Duration::from_secs(2)).await.is_some());
    assert!(
        eventually(Duration::from_secs(1), || async {
            asker.discover(&t).await.0 == 404
        })
        .await
    );
}

/// When Redis loses data, the readers sets go with it: a node that cached a token must stop
/// trusting its cache, or another node's new session of the token (announced to nobody, since
/// the readers set is gone) would stay unseen behind the cached older one.
#[tokio::test]
async fn after_a_flushall_a_cached_token_shows_a_new_session_at_once() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let mut c = cluster_config(&redis, &pfx);
        // Cache entries outlive the test's steps; the heartbeat notices the flush quickly.
        c.heartbeat_ttl = Duration::from_secs(10);
        nodes.push(spawn_node(c).await);
    }
    let (reader, holder, newcomer) = (&nodes[0], &nodes[1], &nodes[2]);
    let t = token("flushed");
    let _old = Gateway::connect(holder.http, GatewayOptions::new(&t, 1111))
        .await
        .unwrap();
    let cached = || async {
        reader
            .metric("hostie_discovery_lookups_total{source=\"cache\"}")
            .await
    };
    assert!(
        eventually(Duration::from_secs(3), || async {
            assert_eq!(reader.discover(&t).await.1["port"], 1111);
            cached().await >= 1.0
        })
        .await,
        "the reader caches the token"
    );
    let reasserted = || async {
        [
            reader.metric("hostie_reassertions_total").await,
            holder.metric("hostie_reassertions_total").await,
        ]
    };
    let [r0, h0] = reasserted().await;
    assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
    // The nodes' heartbeats (200 ms) find their entries gone and re-assert.
    assert!(
        eventually(Duration::from_secs(3), || async {
            let [r, h] = reasserted().await;
            r > r0 && h > h0
        })
        .await
    );
    let _new = Gateway::connect(newcomer.http, GatewayOptions::new(&t, 2222))
        .await
        .unwrap();
    let before = cached().await;
    assert_eq!(
        reader.discover(&t).await.1["port"],
        2222,
        "the newest session, not the cached older one"
    );
    assert_eq!(cached().await, before, "read from the registry");
}
