//! Cluster mode under faults: a node killed or drained, Redis stopped, restarted empty,
//! flushed or paused. Real nodes (in-process and as processes) on a real `redis-server`.

use crate::helpers::*;
use hostie_testkit::redis_server::RedisServer;
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigkilled_node_is_failed_over_and_its_gateways_come_back_elsewhere() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let url = redis.url();
    let victim = spawn_cluster_process(
        &url,
        &pfx,
        &[
            "--heartbeat-interval",
            "500ms",
            "--heartbeat-ttl",
            "3s",
            "--rpc-timeout",
            "3s",
        ],
    )
    .await;
    let mut config = cluster_config(&redis, &pfx);
    config.discovery_deadline = Duration::from_secs(3);
    config.heartbeat_interval = Duration::from_millis(500);
    config.heartbeat_ttl = Duration::from_secs(3);
    let survivors = [spawn_node(config.clone()).await, spawn_node(config).await];
    let tokens: Vec<String> = (0..3).map(|i| token(&format!("kill{i}"))).collect();
    let mut on_victim = Vec::new();
    for t in &tokens {
        on_victim.push(
            Gateway::connect(victim.http, GatewayOptions::new(t, 5000))
                .await
                .unwrap(),
        );
    }
    for t in &tokens {
        assert_eq!(survivors[0].discover(t).await.1["port"], 5000);
    }

    let killed_at = Instant::now();
    victim.signal(Signal::Kill);
    for gw in &on_victim {
        assert!(gw.closed_within(Duration::from_secs(2)).await.is_some());
    }
    // Within 10 s (here at once: a PUBLISH to the dead node reaches no subscriber) every
    // token is 404 on every survivor, and no request waits out the 3 s deadline.
    for t in &tokens {
        for node in &survivors {
            let gone = eventually(Duration::from_secs(10), || async {
                let (status, _, took) = discover_at(node.http, t).await;
                assert!(
                    took < Duration::from_secs(1),
                    "a dead owner is never waited for: {took:?}"
                );
                status == 404
            })
            .await;
            assert!(gone, "404 within 10 s of the kill");
        }
    }
    assert!(killed_at.elapsed() < Duration::from_secs(10));

    // The gateways reconnect (to another node behind the load balancer): discoverable at once.
    let mut reconnected = Vec::new();
    for t in &tokens {
        reconnected.push(
            Gateway::connect(survivors[1].http, GatewayOptions::new(t, 6000))
                .await
                .unwrap(),
        );
        for node in &survivors {
            let (status, body, _) = discover_at(node.http, t).await;
            assert_eq!((status, body["port"].as_u64()), (200, Some(6000)));
        }
    }
    // Its stale records are swept once its heartbeat runs out.
    let swept = eventually(Duration::from_secs(10), || async {
        survivors[0].metric("hostie_swept_records_total").await
            + survivors[1].metric("hostie_swept_records_total").await
            >= 3.0
    })
    .await;
    assert!(swept, "the dead node's records were swept");
    assert_eq!(redis.cli(&["ZCARD", &format!("{pfx}:nodes")]).trim(), "2");
}

/// A token whose registrations outlive their sessions (their node was killed, its records not
/// yet swept) is a 404 that says so, unlike a token never registered.
#[tokio::test]
async fn a_token_whose_sessions_are_all_gone_is_a_404_that_says_so() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let url = redis.url();
    // A long TTL: the killed node's records stay in Redis for the whole test.
    let victim = spawn_cluster_process(&url, &pfx, &["--heartbeat-ttl", "60s"]).await;
    let mut config = cluster_config(&redis, &pfx);
    config.heartbeat_ttl = Duration::from_secs(60);
    let survivor = spawn_node(config).await;
    let t = token("gone");
    let gw = Gateway::connect(victim.http, GatewayOptions::new(&t, 5353))
        .await
        .unwrap();
    assert_eq!(survivor.discover(&t).await.1["port"], 5353);
    victim.signal(Signal::Kill);
    assert!(gw.closed_within(Duration::from_secs(2)).await.is_some());
    let (status, body) = survivor.discover(&t).await;
    assert_eq!(status, 404, "{body}");
    assert_zero_answer_fields(&body, "gone");
    assert_eq!(body["status"], "sessions_gone", "{body}");
    let (status, body) = survivor.discover(&token("never")).await;
    assert_eq!(
        (status, &body["status"]),
        (404, &serde_json::json!("no_session"))
    );
    assert_eq!(
        survivor
            .metric("hostie_discoveries_total{outcome=\"miss\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn sigterm_drains_a_cluster_node_without_waiting_for_its_ttl() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let url = redis.url();
    let mut leaving = spawn_cluster_process(
        &url,
        &pfx,
        &[
            "--heartbeat-ttl",
            "30s",
            "--drain-spread",
            "300ms",
            "--drain-grace",
            "5s",
        ],
    )
    .await;
    let staying = spawn_node(cluster_config(&redis, &pfx)).await;
    let tokens: Vec<String> = (0..3).map(|i| token(&format!("term{i}"))).collect();
    let mut gateways = Vec::new();
    for t in &tokens {
        gateways.push(
            Gateway::connect(leaving.http, GatewayOptions::new(t, 7000))
                .await
                .unwrap(),
        );
        assert_eq!(staying.discover(t).await.0, 200);
    }
    let signalled = Instant::now();
    leaving.signal(Signal::Term);
    assert!(
        eventually(Duration::from_secs(1), || leaving.readyz_status_is(503)).await,
        "/readyz is 503 within 1 s"
    );
    for t in &tokens {
        let (status, _, _) = discover_at(staying.http, t).await;
        assert_eq!(
            status, 404,
            "records removed at once, not after the 30 s TTL"
        );
    }
    for gw in &gateways {
        assert_eq!(
            gw.closed_within(Duration::from_secs(3)).await,
            Some(Some(1001))
        );
    }
    assert!(signalled.elapsed() < Duration::from_secs(5));
    let status = leaving.exited_within(Duration::from_secs(8)).await;
    assert!(status.is_some_and(|s| s.success()));
    assert_eq!(redis.cli(&["ZCARD", &format!("{pfx}:nodes")]).trim(), "1");
}

/// Whether every node answers every `(token, port)`.
async fn every_node_answers(nodes: &[TestNode], expected: &[(&String, u16)]) -> bool {
    for node in nodes {
        for (t, port) in expected {
            if node.discover(t).await.1["port"] != *port {
                return false;
            }
        }
    }
    true
}

#[tokio::test]
async fn redis_outage_keeps_sessions_and_restart_or_flush_rebuilds_everything() {
    let mut redis = RedisServer::start();
    let nodes = spawn_cluster(2, &redis, &prefix()).await;
    let (ta, tb) = (token("outa"), token("outb"));
    let ga = Gateway::connect(nodes[0].http, GatewayOptions::new(&ta, 1001))
        .await
        .unwrap();
    let gb = Gateway::connect(nodes[1].http, GatewayOptions::new(&tb, 1002))
        .await
        .unwrap();
    assert_eq!(nodes[0].discover(&tb).await.0, 200);

    redis.stop();
    // Local tokens still answer from the hub; remote ones are 503 + Retry-After, in time.
    assert_eq!(nodes[0].discover(&ta).await.1["port"], 1001);
    let started = Instant::now();
    let res = nodes[0]
        .client
        .get(nodes[0].url(&format!("/v0/hosties/{tb}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "within the deadline"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        ["registry_unavailable", "owner_unreachable"]
            .contains(&body["status"].as_str().unwrap_or("")),
        "{body}"
    );
    assert_zero_answer_fields(&body, "Redis stopped");
    for node in &nodes {
        assert!(
            eventually(Duration::from_secs(2), || async {
                node.admin_get("/readyz").await.0 == 503
            })
            .await
        );
    }
    // A gateway registering during the outage is kept (and written when Redis is back).
    let tc = token("outc");
    let gc = Gateway::connect(nodes[0].http, GatewayOptions::new(&tc, 1003))
        .await
        .unwrap();
    assert_eq!(nodes[0].discover(&tc).await.1["port"], 1003);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !ga.is_closed() && !gb.is_closed() && !gc.is_closed(),
        "no session dropped"
    );
    assert_eq!(
        nodes[0].node.live_sessions() + nodes[1].node.live_sessions(),
        3
    );

    // Back, empty: every node re-asserts and resubscribes within 5 s.
    redis.restart_empty();
    let all = [(&ta, 1001), (&tb, 1002), (&tc, 1003)];
    let whole = eventually(Duration::from_secs(5), || every_node_answers(&nodes, &all)).await;
    assert!(whole, "everything discoverable within 5 s of the restart");
    for node in &nodes {
        assert_eq!(node.admin_get("/readyz").await.0, 200);
        assert!(node.metric("hostie_reassertions_total").await >= 1.0);
    }

    // FLUSHALL: likewise.
    assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
    let whole = eventually(Duration::from_secs(5), || every_node_answers(&nodes, &all)).await;
    assert!(whole, "everything discoverable within 5 s of FLUSHALL");
}

#[tokio::test]
async fn a_close_that_redis_missed_is_removed_once_redis_answers() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let nodes = spawn_cluster(2, &redis, &pfx).await;
    let t = token("missed");
    let gw = Gateway::connect(nodes[0].http, GatewayOptions::new(&t, 1))
        .await
        .unwrap();
    assert_eq!(nodes[1].discover(&t).await.0, 200);
    let key = hostie::redis_common::Keys::new(&pfx)
        .token(&hostie::protocol::Token::new(t.clone()).unwrap().hash());
    assert_eq!(redis.cli(&["HLEN", &key]).trim(), "1");
    // Redis stops answering writes (data kept), the gateway leaves meanwhile.
    redis.pause(1500, false);
    gw.close();
    assert!(gw.closed_within(Duration::from_secs(2)).await.is_some());
    assert!(
        eventually(Duration::from_secs(2), || async {
            nodes[0].node.live_sessions() == 0
        })
        .await
    );
    // The removal failed during the pause; it is retried when Redis answers again.
    assert!(
        nodes[0]
            .metric("hostie_redis_errors_total{op=\"release\"}")
            .await
            >= 1.0
    );
    let cleaned = eventually(Duration::from_secs(5), || async {
        redis.cli(&["HLEN", &key]).trim() == "0"
    })
    .await;
    assert!(cleaned, "the stale record was removed after the pause");
    // Writes failed a moment ago: "no session" is 503 until every node could re-assert (one
    // heartbeat TTL), then 404. Never the closed session.
    let (status, _) = nodes[1].discover(&t).await;
    assert_eq!(status, 503, "just after refused writes, a miss is unsure");
    let settled = eventually(Duration::from_secs(3), || async {
        let (status, _) = nodes[1].discover(&t).await;
        assert!(matches!(status, 404 | 503), "{status}");
        status == 404
    })
    .await;
    assert!(settled, "404 once the registry settled");
}

/// A node that lost its records (FLUSHALL) and cannot write them back (an ACL lets it beat but
/// not write a token's record) keeps its peers from saying "no session" past the settle time:
/// 503, never 404, for its live gateway's token and for an unknown one, with
/// `hostie_peers_unsettled` at 1, until it has re-asserted.
#[tokio::test]
async fn peers_wait_for_a_node_that_lost_its_records_until_it_writes_them_back() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let a = spawn_node(cluster_config(&redis, &pfx)).await;
    let acl = |rules: &[&str]| {
        let mut args = vec!["ACL", "SETUSER", "b"];
        args.extend_from_slice(rules);
        assert_eq!(redis.cli(&args).trim(), "OK", "ACL SETUSER b {rules:?}");
    };
    acl(&["on", ">pw", "~*", "&*", "+@all"]);
    let mut config = cluster_config(&redis, &pfx);
    config.redis_url = Some(format!("redis://b:pw@127.0.0.1:{}/", redis.port));
    let b = spawn_node(config).await;
    let t = token("unsettled");
    let _gw = Gateway::connect(b.http, GatewayOptions::new(&t, 1234))
        .await
        .unwrap();
    assert_eq!(a.discover(&t).await.1["port"], 1234);
    let unknown = token("nobody");
    assert_eq!(a.discover(&unknown).await.0, 404);

    // b may now write its heartbeat and its own keys, not a token's record.
    let (beats, own) = (format!("~{pfx}:nodes"), format!("~{pfx}:node:*"));
    let figures = format!("~{{{pfx}:nodes}}:*");
    acl(&["resetkeys", &beats, &figures, &own]);
    assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
    assert!(
        eventually(Duration::from_secs(2), || async {
            a.metric("hostie_peers_unsettled").await == 1.0
        })
        .await,
        "a sees b unsettled"
    );
    // Three settle times (the heartbeat TTL is 1 s here): never a 404.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_ne!(a.discover(&t).await.0, 404, "b's gateway is connected");
        assert_eq!(
            a.discover(&unknown).await.0,
            503,
            "unsure while b is unsettled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Allowed again: b re-asserts, and "no session" is said again.
    acl(&["~*"]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.discover(&t).await.1["port"] == 1234 && a.discover(&unknown).await.0 == 404
        })
        .await
    );
    assert_eq!(a.metric("hostie_peers_unsettled").await, 0.0);
}
