//! Every limit and bad input: a clear error for the offender, nothing else disturbed.

use crate::helpers::*;
use std::time::Duration;

#[tokio::test]
async fn oversized_frame_closes_only_its_session_with_1009() {
    let mut config = test_config();
    config.max_frame_bytes = 64 * 1024;
    let node = spawn_node(config).await;
    let (ta, tb) = (token("big"), token("bystander"));
    let a = Gateway::connect(node.http, GatewayOptions::new(&ta, 1001))
        .await
        .unwrap();
    let b = Gateway::connect(node.http, GatewayOptions::new(&tb, 1002))
        .await
        .unwrap();
    a.send_text(format!(
        r#"{{"name":"message","payload":"{}"}}"#,
        "x".repeat(128 * 1024)
    ));
    assert_eq!(
        a.closed_within(Duration::from_secs(2)).await,
        Some(Some(1009))
    );
    assert_eq!(node.discover(&tb).await.1["port"], 1002);
    assert!(
        eventually(Duration::from_secs(1), || async {
            node.discover(&ta).await.0 == 404
        })
        .await
    );
    assert!(!b.is_closed());
    assert_eq!(
        node.metric("hostie_limit_hits_total{limit=\"frame_size\"}")
            .await,
        1.0
    );
    assert_eq!(
        node.metric("hostie_session_closes_total{reason=\"frame_too_large\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn frame_just_under_the_limit_is_fine() {
    let mut config = test_config();
    config.max_frame_bytes = 64 * 1024;
    let node = spawn_node(config).await;
    let t = token("under");
    let gw = Gateway::connect(node.http, GatewayOptions::new(&t, 1003))
        .await
        .unwrap();
    gw.send_text(format!(
        r#"{{"name":"scan","payload":"{}"}}"#,
        "x".repeat(60 * 1024)
    ));
    assert_eq!(node.discover(&t).await.1["port"], 1003);
    assert!(!gw.is_closed());
}

/// The HTTP/1 dispatcher starts each connection with 1 KiB buffers (vendor/README.md): larger
/// request heads and frames are read in several reads, on both kinds of request.
#[tokio::test]
async fn heads_and_frames_larger_than_the_connection_buffer_are_read_whole() {
    let node = spawn_node(test_config()).await;
    let t = token("bighead");
    let cookie = "c".repeat(12 * 1024);
    let gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&t, 1004).header("cookie", &cookie),
    )
    .await
    .unwrap();
    let res = reqwest::Client::new()
        .get(node.url(&format!("/v0/hosties/{t}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["port"], 1004);
    // A 20 KiB frame, then the session still answers.
    gw.send_text(format!(
        r#"{{"name":"scan","payload":"{}"}}"#,
        "x".repeat(20 * 1024)
    ));
    assert_eq!(node.discover(&t).await.1["port"], 1004);
    assert!(!gw.is_closed());
}

#[tokio::test]
async fn malformed_and_too_deep_json_are_dropped_without_closing() {
    let node = spawn_node(test_config()).await;
    let (ta, tb) = (token("garbage"), token("other"));
    let a = Gateway::connect(node.http, GatewayOptions::new(&ta, 2001))
        .await
        .unwrap();
    let b = Gateway::connect(node.http, GatewayOptions::new(&tb, 2002))
        .await
        .unwrap();
    for junk in [
        "{",
        "{\"name\":",
        "[1,2,3]",
        "\u{0}\u{1}",
        "null",
        "{\"name\":42}",
    ] {
        a.send_text(junk);
    }
    a.send_text(format!(
        r#"{{"name":"x","payload":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    ));
    a.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![0xff, 0x00].into(),
    ));
    assert_eq!(
        node.discover(&ta).await.1["port"],
        2001,
        "the sender still works"
    );
    assert_eq!(
        node.discover(&tb).await.1["port"],
        2002,
        "bystanders still work"
    );
    assert!(!a.is_closed() && !b.is_closed());
    assert_eq!(
        node.metric("hostie_frames_dropped_total{reason=\"malformed\"}")
            .await,
        6.0
    );
    assert_eq!(
        node.metric("hostie_frames_dropped_total{reason=\"too_deep\"}")
            .await,
        1.0
    );
    assert_eq!(
        node.metric("hostie_frames_dropped_total{reason=\"binary\"}")
            .await,
        1.0
    );
    assert_eq!(
        node.metric("hostie_limit_hits_total{limit=\"json_depth\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn idle_session_is_closed_and_a_pinging_one_is_kept() {
    let mut config = test_config();
    config.idle_timeout = Duration::from_millis(400);
    let node = spawn_node(config).await;
    let (quiet_t, alive_t) = (token("quiet"), token("alive"));
    let quiet = Gateway::connect(node.http, GatewayOptions::new(&quiet_t, 1))
        .await
        .unwrap();
    let alive = Gateway::connect(
        node.http,
        GatewayOptions::new(&alive_t, 3003).ping_every(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    assert!(quiet.closed_within(Duration::from_secs(2)).await.is_some());
    assert_eq!(node.discover(&quiet_t).await.0, 404);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!alive.is_closed(), "pings keep a session alive");
    assert_eq!(node.discover(&alive_t).await.1["port"], 3003);
    assert_eq!(
        node.metric("hostie_session_closes_total{reason=\"idle\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_idle_timeout_beyond_the_clock_means_never() {
    // The session moves its idle deadline on every frame; a timeout that cannot be added to
    // the clock must leave the deadline alone, not panic the session's task.
    let mut config = test_config();
    config.idle_timeout = Duration::MAX;
    let node = spawn_node(config).await;
    let t = token("forever");
    let gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&t, 4004).ping_every(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!gw.is_closed(), "pings after the first frame keep it open");
    assert_eq!(node.discover(&t).await.1["port"], 4004);
}

#[tokio::test]
async fn sessions_per_token_are_capped_without_kicking_anyone() {
    let mut config = test_config();
    config.max_sessions_per_token = 2;
    let node = spawn_node(config).await;
    let t = token("cap");
    let first = Gateway::connect(node.http, GatewayOptions::new(&t, 1))
        .await
        .unwrap();
    let second = Gateway::connect(node.http, GatewayOptions::new(&t, 2))
        .await
        .unwrap();
    let refused = Gateway::connect(node.http, GatewayOptions::new(&t, 3))
        .await
        .err()
        .expect("third session of one token refused");
    assert_eq!(refused.status, 429);
    let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["status"], "token_full", "{body}");
    assert!(
        !first.is_closed() && !second.is_closed(),
        "nobody is kicked"
    );
    assert_eq!(
        node.metric("hostie_registrations_total{result=\"token_full\"}")
            .await,
        1.0
    );
    // Another token is unaffected.
    Gateway::connect(node.http, GatewayOptions::new(&token("free"), 4))
        .await
        .expect("other tokens still register");
}

#[tokio::test]
async fn sessions_per_node_are_capped() {
    let mut config = test_config();
    config.max_sessions = 1;
    let node = spawn_node(config).await;
    let _one = Gateway::connect(node.http, GatewayOptions::new(&token("n1"), 1))
        .await
        .unwrap();
    let refused = Gateway::connect(node.http, GatewayOptions::new(&token("n2"), 2))
        .await
        .err()
        .expect("second session refused");
    assert_eq!(refused.status, 503);
    let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["status"], "node_full", "{body}");
    assert_eq!(
        node.metric("hostie_limit_hits_total{limit=\"sessions_per_node\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn discovery_flood_from_one_address_is_rate_limited() {
    let mut config = test_config();
    config.discovery_rate = 1;
    config.discovery_burst = 3;
    let node = spawn_node(config).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let res = node
            .client
            .get(node.url("/v0/hosties/flood"))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        if status == 429 {
            assert!(res.headers().contains_key("retry-after"));
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["status"], "rate_limited", "{body}");
            assert_zero_answer_fields(&body, "a 429");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 404).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(
        node.metric("hostie_discoveries_total{outcome=\"rate_limited\"}")
            .await,
        7.0
    );
}

#[tokio::test]
async fn slow_handshake_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = test_config();
    config.handshake_timeout = Duration::from_millis(300);
    let node = spawn_node(config).await;
    let mut tcp = tokio::net::TcpStream::connect(node.http).await.unwrap();
    tcp.write_all(b"GET /v0/websocket HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the node closes a connection that never finishes its headers"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}
