//! Each node answers for its own live sessions in every Redis state, and never says "no
//! session" (404) when the registry cannot vouch for it; readiness follows Redis' writes; one
//! Redis deadline bounds registrations and discoveries.

use crate::helpers::*;
use hostie_testkit::redis_server::RedisServer;
use std::time::{Duration, Instant};

#[tokio::test]
async fn while_redis_refuses_writes_owners_answer_and_peers_never_say_404() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let mut config = cluster_config(&redis, &pfx);
    config.redis_timeout = Some(Duration::from_millis(200));
    let nodes = [
        spawn_node(config.clone()).await,
        spawn_node(config.clone()).await,
    ];
    let before = token("refused-before");
    let _old = Gateway::connect(nodes[0].http, GatewayOptions::new(&before, 1000))
        .await
        .unwrap();
    for (i, refusal) in WRITE_REFUSALS.iter().enumerate() {
        let refuse = refusal.name;
        const BEATS_FAILED: &str = "hostie_redis_errors_total{op=\"heartbeat\"}";
        let mut failed_before = Vec::new();
        for node in &nodes {
            failed_before.push(node.metric(BEATS_FAILED).await);
        }
        (refusal.refuse)(&redis);
        for (node, before) in nodes.iter().zip(&failed_before) {
            let unready = eventually(Duration::from_secs(2), || async {
                node.admin_get("/readyz").await.0 == 503
            })
            .await;
            assert!(unready, "{refuse:?}: /readyz turns 503");
            // The README's window: until a node's next heartbeat (a write) fails, it cannot
            // know that writes are refused, and a peer's session registered meanwhile may be
            // a 404 there. From then on, never.
            let knows = eventually(Duration::from_secs(2), || async {
                node.metric(BEATS_FAILED).await > *before
            })
            .await;
            assert!(knows, "{refuse:?}: a heartbeat failed within 2 s");
            let (_, body) = node.admin_get("/readyz").await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["ready"], false, "{body}");
            assert_eq!(v["checks"]["trusted"], false, "{body}");
            assert_ne!(v["checks"]["registry"], "ok", "{body}");
            assert_eq!(
                node.metric("hostie_ready").await,
                0.0,
                "{refuse:?}: hostie_ready"
            );
        }
        // Admitted within the Redis deadline, kept locally, answered by its owner.
        let t = token(&format!("refused{i}"));
        let started = Instant::now();
        let _gw = Gateway::connect(nodes[0].http, GatewayOptions::new(&t, 2000 + i as u16))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "{refuse:?}: registration bounded by --redis-timeout: {:?}",
            started.elapsed()
        );
        let (status, body, _) = discover_at(nodes[0].http, &t).await;
        assert_eq!(
            (status, body["port"].as_u64()),
            (200, Some(2000 + i as u64))
        );
        let (status, body, _) = discover_at(nodes[0].http, &before).await;
        assert_eq!((status, body["port"].as_u64()), (200, Some(1000)));
        // The peer cannot see it, and says so with a 503, never a 404.
        for token in [&t, &before] {
            let (status, _, took) = discover_at(nodes[1].http, token).await;
            assert!(
                matches!(status, 200 | 503),
                "{refuse:?}: peer answered {status}"
            );
            assert!(
                took < Duration::from_millis(1300),
                "{refuse:?}: in time: {took:?}"
            );
        }
        let res = reqwest::get(nodes[1].url(&format!("/v0/hosties/{t}")))
            .await
            .unwrap();
        assert_eq!(res.status(), 503, "{refuse:?}");
        assert!(res.headers().contains_key("retry-after"));
        let body: serde_json::Value = res.json().await.unwrap();
        assert!(
            ["registry_unsure", "registry_unavailable"]
                .contains(&body["status"].as_str().unwrap_or("")),
            "{refuse:?}: {body}"
        );
        assert_zero_answer_fields(&body, &format!("{refuse:?}"));
        // Writes back: the kept session is written and found everywhere.
        (refusal.restore)(&redis);
        let found = eventually(Duration::from_secs(3), || async {
            discover_at(nodes[1].http, &t).await.1["port"].as_u64() == Some(2000 + i as u64)
        })
        .await;
        assert!(found, "{refuse:?}: re-asserted once Redis takes writes");
        for node in &nodes {
            let ready = eventually(Duration::from_secs(2), || async {
                node.admin_get("/readyz").await.0 == 200
            })
            .await;
            assert!(ready, "{refuse:?}: ready again");
            assert_eq!(
                node.metric("hostie_ready").await,
                1.0,
                "{refuse:?}: hostie_ready"
            );
        }
    }
}

#[tokio::test]
async fn a_hung_redis_holds_neither_a_registration_nor_a_discovery_past_its_deadline() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let mut config = cluster_config(&redis, &pfx);
    config.redis_timeout = Some(Duration::from_millis(200));
    config.handshake_timeout = Duration::from_millis(600);
    let nodes = [
        spawn_node(config.clone()).await,
        spawn_node(config.clone()).await,
    ];
    let (mine, theirs) = (token("hung-mine"), token("hung-theirs"));
    let _b = Gateway::connect(nodes[1].http, GatewayOptions::new(&theirs, 2))
        .await
        .unwrap();
    // Every client blocked: Redis accepts connections and commands but answers nothing.
    redis.pause(20_000, true);
    let started = Instant::now();
    let _a = Gateway::connect(nodes[0].http, GatewayOptions::new(&mine, 1))
        .await
        .expect("admitted within the handshake timeout");
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    let (status, body, took) = discover_at(nodes[0].http, &mine).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(1)));
    assert!(took < Duration::from_millis(1100), "{took:?}");
    for token in [&theirs, &token("hung-nobody")] {
        let (status, _, took) = discover_at(nodes[0].http, token).await;
        assert_eq!(status, 503);
        assert!(
            took < Duration::from_millis(1100),
            "within the deadline: {took:?}"
        );
    }
    redis.unpause();
}
