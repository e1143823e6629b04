//! What reaches Redis: never a raw token, and no more round trips than the budget in
//! docs/redis.md, "Round trips per operation" (both read from `MONITOR`).

use crate::helpers::*;
use hostie_testkit::redis_server::RedisServer;
use std::time::Duration;

#[tokio::test]
async fn monitor_never_shows_a_raw_token() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let nodes = spawn_cluster(2, &redis, &pfx).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("monitor.log");
    let mut monitor = redis.monitor(&log);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = token("monitor");
    let gw = Gateway::connect(nodes[0].http, GatewayOptions::new(&t, 1))
        .await
        .unwrap();
    assert_eq!(nodes[1].discover(&t).await.0, 200);
    gw.close();
    assert!(gw.closed_within(Duration::from_secs(2)).await.is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = monitor.kill();
    let _ = monitor.wait();
    let seen = std::fs::read_to_string(&log).unwrap();
    let hash = hostie::protocol::Token::new(t.clone())
        .unwrap()
        .hash()
        .to_hex();
    assert!(
        seen.contains(&hash),
        "MONITOR captured the registration:\n{seen}"
    );
    assert!(
        seen.contains("PUBLISH"),
        "MONITOR captured the bus:\n{seen}"
    );
    assert!(!seen.contains(&t), "a raw token reached Redis:\n{seen}");
    assert!(
        !seen.contains("insecure_monitor"),
        "a raw token reached Redis"
    );
}

/// The commands clients sent (not those run inside scripts) between two `ECHO` markers of a
/// MONITOR log.
fn commands_between(log: &str, start: &str, end: &str) -> Vec<String> {
    log.lines()
        .skip_while(|l| !l.contains(start))
        .skip(1)
        .take_while(|l| !l.contains(end))
        .filter(|l| !l.contains(" lua]"))
        .filter_map(|l| l.split("] ").nth(1))
        .filter_map(|cmd| cmd.split_whitespace().next())
        .map(|c| c.trim_matches('"').to_uppercase())
        .collect()
}

#[tokio::test]
async fn round_trip_budget_registration_discovery_release() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        // Long timers: no heartbeat or anti-entropy traffic inside the measured windows.
        let mut c = cluster_config(&redis, &pfx);
        c.heartbeat_interval = Duration::from_secs(20);
        c.heartbeat_ttl = Duration::from_secs(60);
        nodes.push(spawn_node(c).await);
    }
    // Warm up: scripts loaded, connections made.
    let warm = token("warm");
    let _w = Gateway::connect(nodes[0].http, GatewayOptions::new(&warm, 1))
        .await
        .unwrap();
    assert_eq!(nodes[1].discover(&warm).await.0, 200);

    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("monitor.log");
    let mut monitor = redis.monitor(&log_path);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = token("budget");
    redis.cli(&["ECHO", "m1"]);
    let gw = Gateway::connect(nodes[0].http, GatewayOptions::new(&t, 2))
        .await
        .unwrap();
    redis.cli(&["ECHO", "m2"]);
    assert_eq!(nodes[1].discover(&t).await.0, 200);
    redis.cli(&["ECHO", "m2b"]);
    // The registration's notice may have reached nodes[1] during that lookup, which is then not
    // remembered; after it has surely landed, one more lookup is.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(nodes[1].discover(&t).await.0, 200);
    redis.cli(&["ECHO", "m2c"]);
    assert_eq!(nodes[1].discover(&t).await.0, 200);
    redis.cli(&["ECHO", "m3"]);
    assert_eq!(nodes[0].discover(&t).await.0, 200);
    redis.cli(&["ECHO", "m3b"]);
    // Another node registers the same token: the owner must ask Redis again (newest first).
    let other = Gateway::connect(nodes[1].http, GatewayOptions::new(&t, 3))
        .await
        .unwrap();
    redis.cli(&["ECHO", "m3c"]);
    // Discoverable everywhere within 100 ms of the handshake (docs/architecture.md §2): the owner learns of
    // the other registration from its notice.
    assert!(
        eventually(Duration::from_millis(100), || async {
            nodes[0].discover(&t).await.1["port"] == 3
        })
        .await
    );
    other.close();
    assert!(other.closed_within(Duration::from_secs(2)).await.is_some());
    assert!(
        eventually(Duration::from_secs(1), || async {
            nodes[1].node.live_sessions() == 0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.cli(&["ECHO", "m3d"]);
    gw.close();
    assert!(gw.closed_within(Duration::from_secs(2)).await.is_some());
    assert!(
        eventually(Duration::from_secs(1), || async {
            nodes[0].node.live_sessions() == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.cli(&["ECHO", "m4"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = monitor.kill();
    let _ = monitor.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();

    let register = commands_between(&log, "\"m1\"", "\"m2\"");
    assert_eq!(
        register,
        ["EVALSHA", "SADD"],
        "registration is one script call and the node set's SADD, sent together:\n{log}"
    );
    let discovery = commands_between(&log, "\"m2\"", "\"m2b\"");
    assert_eq!(
        discovery,
        ["HVALS", "ZSCORE", "PUBLISH", "PUBLISH"],
        "cross-node discovery: lookup (one pipeline), request, reply:\n{log}"
    );
    let repeated = commands_between(&log, "\"m2c\"", "\"m3\"");
    assert_eq!(
        repeated,
        ["PUBLISH", "PUBLISH"],
        "the same discovery again: the looked-up records are remembered:\n{log}"
    );
    let same_node = commands_between(&log, "\"m3\"", "\"m3b\"");
    assert!(
        same_node.is_empty(),
        "a token only this node holds is answered from its hub: {same_node:?}"
    );
    let shared = commands_between(&log, "\"m3c\"", "\"m3d\"");
    assert_eq!(
        &shared[..1],
        ["HVALS"],
        "a shared token is looked up again:\n{log}"
    );
    let release = commands_between(&log, "\"m3d\"", "\"m4\"");
    assert_eq!(release, ["HDEL", "SREM"], "release is one pipeline:\n{log}");
}
