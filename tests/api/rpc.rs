//! The port question: every reply shape of docs/protocol.md §2.3.

use crate::helpers::*;
use std::time::{Duration, Instant};

async fn discover_with(sub: &str, behavior: Behavior) -> (u16, serde_json::Value, usize, Duration) {
    let node = spawn_node(test_config()).await;
    let t = token("rpc");
    let gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&t, 1)
            .subprotocol(sub)
            .behavior(behavior),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (status, body) = node.discover(&t).await;
    (status, body, gw.request_count(), started.elapsed())
}

#[tokio::test]
async fn client_without_peer_gets_8788_at_once_without_an_rpc() {
    let (status, body, requests, took) =
        discover_with("io|0.0.1|57a9||undefined", Behavior::Silent).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(8788)));
    assert_eq!(requests, 0, "a known peer-less client is never asked");
    assert!(
        took < Duration::from_millis(200),
        "answered at once, took {took:?}"
    );
}

#[tokio::test]
async fn old_three_field_client_that_never_answers_gets_the_fallback_within_the_deadline() {
    let (status, body, requests, took) = discover_with("io|0.0.1|old-id", Behavior::Silent).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(8788)));
    assert_eq!(requests, 1, "a 3-field client is asked");
    // test_config's deadline is 1 s.
    assert!(
        took >= Duration::from_millis(500),
        "waited for the RPC, took {took:?}"
    );
    assert!(
        took < Duration::from_millis(1000),
        "within the deadline, took {took:?}"
    );
}

#[tokio::test]
async fn silent_client_with_a_subprotocol_port_gets_that_port() {
    let (status, body, _, _) = discover_with("io|0.0.1|id||18789", Behavior::Silent).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(18789)));
}

#[tokio::test]
async fn null_result_falls_back() {
    let (status, body, requests, took) = discover_with("io|0.0.1|id", Behavior::Null).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(8788)));
    assert_eq!(requests, 1);
    assert!(
        took < Duration::from_millis(300),
        "a failed reply is not waited out: {took:?}"
    );
}

#[tokio::test]
async fn error_object_falls_back_to_the_subprotocol_port() {
    let (status, body, requests, _) =
        discover_with("io|0.0.1|id||17000", Behavior::ErrorObject).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(17000)));
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn string_id_reply_is_matched() {
    let (status, body, _, took) = discover_with("io|0.0.1|id", Behavior::PortStringId(19999)).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(19999)));
    assert!(took < Duration::from_millis(300));
}

#[tokio::test]
async fn unknown_id_is_ignored_and_the_right_reply_still_counts() {
    let (status, body, _, _) = discover_with("io|0.0.1|id", Behavior::UnknownIdThen(15555)).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(15555)));
}

#[tokio::test]
async fn configured_fallback_port_is_used() {
    let mut config = test_config();
    config.fallback_port = 9001;
    let node = spawn_node(config).await;
    let t = token("fb");
    let _gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&t, 1).subprotocol("io|0.0.1|id||undefined"),
    )
    .await
    .unwrap();
    assert_eq!(node.discover(&t).await.1["port"], 9001);
    assert_eq!(
        node.metric("hostie_discoveries_total{outcome=\"fallback\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn late_reply_after_the_deadline_is_dropped_and_the_next_query_asks_again() {
    let mut config = test_config();
    config.discovery_deadline = Duration::from_millis(300);
    let node = spawn_node(config).await;
    let t = token("late");
    let gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&t, 1)
            .subprotocol("io|0.0.1|id")
            .behavior(Behavior::PortAfter(12345, Duration::from_millis(500))),
    )
    .await
    .unwrap();
    let (status, body) = node.discover(&t).await;
    assert_eq!(
        (status, body["port"].as_u64()),
        (200, Some(8788)),
        "late: fallback"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!gw.is_closed(), "a late reply is harmless");
    assert!(node.metric("hostie_rpc_unmatched_replies_total").await >= 1.0);
    assert!(
        node.metric("hostie_rpc_duration_seconds_count{result=\"timeout\"}")
            .await
            >= 1.0
    );
    let second = node.discover(&t).await;
    assert_eq!(second.0, 200);
    assert_eq!(gw.request_count(), 2, "an expired request is not joined");
}

/// A gateway pings after a quiet while; the registry's pong is the last thing on the wire when
/// the next port request is written. With Nagle's algorithm on the accepted connection that
/// request waits for the pong's ACK, which the gateway's kernel delays because it has nothing to
/// send: every discovery within ≈ 40 ms of a ping took ≈ 40 ms (measured here without the fix;
/// found by the benchmark once its gateways pinged at realistic, spread-out times). The
/// registry sets TCP_NODELAY on accepted connections.
#[tokio::test]
async fn a_port_request_right_after_a_pong_is_not_held_back() {
    let node = spawn_node(test_config()).await;
    let t = token("nagle");
    let gw = Gateway::connect(node.http, GatewayOptions::new(&t, 4321))
        .await
        .unwrap();
    // Past the connection's first exchanges (the kernel ACKs those at once).
    for _ in 0..20 {
        assert_eq!(node.discover(&t).await.0, 200);
    }
    let mut took = Vec::new();
    for _ in 0..10 {
        // Like a real gateway: a ping after a quiet while.
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.send(tokio_tungstenite::tungstenite::Message::Ping(
            Vec::new().into(),
        ));
        tokio::time::sleep(Duration::from_millis(2)).await;
        let started = Instant::now();
        assert_eq!(node.discover(&t).await.0, 200);
        took.push(started.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(5),
        "discoveries right after a ping: {took:?}"
    );
}

/// A hot token: discoveries within `--port-reuse` of an answered port are answered without a
/// new request to the gateway, so its request rate is bounded by the window, not by the
/// discovery rate; after the window the gateway is asked again; with the window at zero every
/// discovery asks.
#[tokio::test]
async fn a_hot_token_costs_its_gateway_one_request_per_reuse_window() {
    let reuse = Duration::from_secs(2);
    let mut config = test_config();
    config.port_reuse = reuse;
    let node = spawn_node(config).await;
    let t = token("hot");
    let gw = Gateway::connect(node.http, GatewayOptions::new(&t, 4100))
        .await
        .unwrap();
    let first = node.discover(&t).await;
    let answered = Instant::now();
    assert_eq!((first.0, first.1["port"].as_u64()), (200, Some(4100)));
    assert_eq!(gw.request_count(), 1);
    let burst = futures_util::future::join_all((0..50).map(|_| node.discover(&t))).await;
    assert!(
        answered.elapsed() < reuse,
        "the burst took {:?}, longer than the window: the machine is too slow for this test",
        answered.elapsed()
    );
    for (status, body) in &burst {
        assert_eq!((*status, body["port"].as_u64()), (200, Some(4100)));
    }
    assert_eq!(
        gw.request_count(),
        1,
        "50 discoveries within the window: no new request"
    );
    tokio::time::sleep(reuse.saturating_sub(answered.elapsed()) + Duration::from_millis(50)).await;
    assert_eq!(node.discover(&t).await.0, 200);
    assert_eq!(
        gw.request_count(),
        2,
        "after the window the gateway is asked again"
    );

    let mut config = test_config();
    config.port_reuse = Duration::ZERO;
    let node = spawn_node(config).await;
    let gw = Gateway::connect(node.http, GatewayOptions::new(&t, 4200))
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(node.discover(&t).await.1["port"], 4200);
    }
    assert_eq!(gw.request_count(), 5, "no reuse: every discovery asks");
}
