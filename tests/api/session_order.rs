//! Which session a token's discoveries go to when several are live: a leaked token used from
//! another address does not take over a live gateway (`--session-order source`, the default),
//! a gateway that restarts from its own address does; and the cap on sessions per address.
//! Different sources are different loopback addresses (127.0.0.0/8).

use crate::helpers::*;
use hostie::model::SessionOrder;
use hostie_testkit::redis_server::RedisServer;
use std::net::SocketAddr;
use std::time::Duration;

/// A gateway connecting from `from` (a loopback address).
async fn connect_from(
    from: &str,
    node: SocketAddr,
    opts: GatewayOptions,
) -> Result<Gateway, hostie_testkit::io_client::Refused> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let tcp = socket.connect(node).await.unwrap();
    Gateway::connect_over(tcp, node, opts).await
}

async fn ports_everywhere(nodes: &[TestNode], t: &str) -> Vec<Option<u64>> {
    let mut ports = Vec::new();
    for node in nodes {
        ports.push(node.discover(t).await.1["port"].as_u64());
    }
    ports
}

async fn two_nodes(redis: &RedisServer, order: SessionOrder) -> Vec<TestNode> {
    let pfx = prefix();
    let mut config = cluster_config(redis, &pfx);
    config.session_order = order;
    vec![spawn_node(config.clone()).await, spawn_node(config).await]
}

/// A gateway of `t` from 127.0.0.1 on the first node, then, a moment later, another from
/// 127.0.0.2 on the second; returned once both are known everywhere.
async fn older_then_newer(
    nodes: &[TestNode],
    t: &str,
    older_port: u16,
    newer_port: u16,
) -> (Gateway, Gateway) {
    let older = connect_from(
        "127.0.0.1",
        nodes[0].http,
        GatewayOptions::new(t, older_port),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let newer = connect_from(
        "127.0.0.2",
        nodes[1].http,
        GatewayOptions::new(t, newer_port),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    (older, newer)
}

#[tokio::test]
async fn a_leaked_token_from_another_address_is_only_a_fallback() {
    let redis = RedisServer::start();
    let nodes = two_nodes(&redis, SessionOrder::Source).await;
    let t = token("leaked");
    // Someone else uses the token from another network, on another node: newer, not first.
    let (owner, stranger) = older_then_newer(&nodes, &t, 1001, 6666).await;
    assert_eq!(ports_everywhere(&nodes, &t).await, [Some(1001), Some(1001)]);
    assert_eq!(stranger.request_count(), 0, "the stranger is never asked");

    // The owner restarts from its own address: the restart supersedes its old session.
    let restarted = connect_from("127.0.0.1", nodes[1].http, GatewayOptions::new(&t, 1002))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ports_everywhere(&nodes, &t).await, [Some(1002), Some(1002)]);

    // Every session of the owner's address gone: the other one is all there is.
    for gw in [&owner, &restarted] {
        gw.close();
        assert!(gw.closed_within(Duration::from_secs(2)).await.is_some());
    }
    let moved = eventually(Duration::from_secs(2), || async {
        ports_everywhere(&nodes, &t).await == [Some(6666), Some(6666)]
    })
    .await;
    assert!(moved, "the remaining session answers once the owner left");
}

#[tokio::test]
async fn with_newest_order_the_newest_registration_takes_every_discovery() {
    let redis = RedisServer::start();
    let nodes = two_nodes(&redis, SessionOrder::Newest).await;
    let t = token("newest-order");
    let _gateways = older_then_newer(&nodes, &t, 1001, 2002).await;
    assert_eq!(ports_everywhere(&nodes, &t).await, [Some(2002), Some(2002)]);
}

#[tokio::test]
async fn an_address_over_its_session_cap_is_refused_and_others_are_not() {
    let mut config = test_config();
    config.max_sessions_per_source = 2;
    let node = spawn_node(config).await;
    let mut held = Vec::new();
    for i in 0..2 {
        let opts = GatewayOptions::new(&token(&format!("cap{i}")), 1);
        held.push(connect_from("127.0.0.3", node.http, opts).await.unwrap());
    }
    let Err(refused) = connect_from(
        "127.0.0.3",
        node.http,
        GatewayOptions::new(&token("cap2"), 1),
    )
    .await
    else {
        panic!("a third session from the same address is refused");
    };
    assert_eq!(refused.status, 429);
    let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["status"], "source_full", "{body}");
    assert_eq!(
        node.metric("hostie_limit_hits_total{limit=\"sessions_per_source\"}")
            .await,
        1.0
    );
    assert_eq!(
        node.metric("hostie_registrations_total{result=\"source_full\"}")
            .await,
        1.0
    );
    // Another address is not affected, and nothing already open was dropped.
    let _other = connect_from(
        "127.0.0.4",
        node.http,
        GatewayOptions::new(&token("cap3"), 1),
    )
    .await
    .unwrap();
    assert!(held.iter().all(|gw| !gw.is_closed()));
    // A slot freed is a slot again.
    let first = held.remove(0);
    first.close();
    assert!(first.closed_within(Duration::from_secs(2)).await.is_some());
    let mut again = None;
    for _ in 0..100 {
        let opts = GatewayOptions::new(&token("cap4"), 1);
        if let Ok(gw) = connect_from("127.0.0.3", node.http, opts).await {
            again = Some(gw);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "admitted once one of its sessions closed");
}
