use crate::helpers::*;
use std::time::Duration;

#[tokio::test]
async fn captured_handshake_is_accepted_and_subprotocol_echoed() {
    let node = spawn_node(test_config()).await;
    let sub = "io|0.0.1|fake-wechaty-id||18789";
    let gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&token("echo"), 18789).subprotocol(sub),
    )
    .await
    .expect("upgrade accepted");
    assert_eq!(gw.echoed.as_deref(), Some(sub));
    assert!(
        eventually(Duration::from_secs(1), || async {
            node.node.live_sessions() == 1
        })
        .await
    );
    assert_eq!(
        node.metric("hostie_registrations_total{result=\"accepted\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn first_of_several_offered_subprotocols_is_echoed() {
    let node = spawn_node(test_config()).await;
    let gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&token("multi"), 1).subprotocol("io|0.0.1|a||1, io|0.0.1|b||2"),
    )
    .await
    .expect("upgrade accepted");
    assert_eq!(gw.echoed.as_deref(), Some("io|0.0.1|a||1"));
}

#[tokio::test]
async fn missing_token_is_refused_with_401() {
    let node = spawn_node(test_config()).await;
    let refused = Gateway::connect(node.http, GatewayOptions::new("x", 1).no_token())
        .await
        .err()
        .expect("no token, no upgrade");
    assert_eq!(refused.status, 401);
    let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["status"], "no_token", "{body}");
    assert!(refused.body.contains("token"), "{}", refused.body);
    assert_eq!(node.node.live_sessions(), 0);
    assert_eq!(
        node.metric("hostie_registrations_total{result=\"no_token\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn malformed_authorization_is_refused_with_401() {
    let node = spawn_node(test_config()).await;
    // "Bearer" scheme: no token.
    let opts = GatewayOptions::new("x", 1)
        .no_token()
        .header("Authorization", "Bearer abc");
    let refused = Gateway::connect(node.http, opts)
        .await
        .err()
        .expect("a Bearer header is no token");
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn legacy_path_token_registers() {
    let node = spawn_node(test_config()).await;
    let _gw = Gateway::connect(
        node.http,
        GatewayOptions::new("ignored", 4242)
            .no_token()
            .path("/v0/websocket/token/legacy%20tok"),
    )
    .await
    .expect("path token accepted");
    let (status, body) = node.discover("legacy%20tok").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["port"], 4242);
}

#[tokio::test]
async fn any_path_upgrades_like_the_original() {
    let node = spawn_node(test_config()).await;
    let t = token("anypath");
    let _gw = Gateway::connect(node.http, GatewayOptions::new(&t, 5151).path("/"))
        .await
        .expect("the original upgraded any path");
    assert_eq!(node.discover(&t).await.1["port"], 5151);
    // A plain GET of an unknown path is still a 404.
    let res = node.client.get(node.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn non_io_protocol_registers_but_is_never_discoverable() {
    let node = spawn_node(test_config()).await;
    let t = token("web");
    let gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&t, 1234).subprotocol("web|0.0.1|id||1234"),
    )
    .await
    .expect("other protocols are accepted");
    assert_eq!(gw.echoed.as_deref(), Some("web|0.0.1|id||1234"));
    assert!(
        eventually(Duration::from_secs(1), || async {
            node.node.live_sessions() == 1
        })
        .await
    );
    let (status, body) = node.discover(&t).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(gw.request_count(), 0);
}

#[tokio::test]
async fn inbound_events_are_tolerated_and_only_jsonrpc_is_ever_sent() {
    let node = spawn_node(test_config()).await;
    let t = token("events");
    let gw = Gateway::connect(node.http, GatewayOptions::new(&t, 18789))
        .await
        .unwrap();
    for frame in [
        r#"{"name":"heartbeat","payload":{"type":"heartbeat","data":"x"}}"#.to_owned(),
        format!(
            r#"{{"name":"scan","payload":{{"qrcode":"{}","status":2}}}}"#,
            "q".repeat(4096)
        ),
        r#"{"name":"login","payload":{"id":"u1","name":"bot"}}"#.to_owned(),
        r#"{"name":"logout","payload":{}}"#.to_owned(),
        r#"{"name":"error","payload":"boom"}"#.to_owned(),
        r#"{"name":"message","payload":{"text":"hi"}}"#.to_owned(),
        r#"{"name":"jsonrpc","payload":{"id":77,"jsonrpc":"2.0","result":1}}"#.to_owned(),
        r#"{"name":"botie","payload":"process.exit()"}"#.to_owned(),
        "not json at all".to_owned(),
    ] {
        gw.send_text(frame);
    }
    for _ in 0..3 {
        let (status, body) = node.discover(&t).await;
        assert_eq!((status, body["port"].as_u64()), (200, Some(18789)));
    }
    assert!(!gw.is_closed());
    let names = gw.names.lock().unwrap().clone();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| n == "jsonrpc"),
        "registry sent {names:?}"
    );
    assert!(
        node.metric("hostie_frames_received_total{event=\"scan\"}")
            .await
            >= 1.0
    );
    assert!(
        node.metric("hostie_frames_dropped_total{reason=\"malformed\"}")
            .await
            >= 1.0
    );
    assert!(node.metric("hostie_rpc_unmatched_replies_total").await >= 1.0);
}
