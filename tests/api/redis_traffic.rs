//! What reaches Redis: never a raw token, and no more round trips than the budget in
//! docs/redis.md, "Round trips per operation" (both read from `MONITOR`).

use crate::helpers::*;
use hostie_testkit::redis_server::RedisServer;
use hostie_testkit::redis_topology::RedisCluster;
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

/// `n` nodes on `url` under a prefix of their own, with these heartbeat timers.
async fn nodes_on(url: &str, n: usize, interval: Duration, ttl: Duration) -> Vec<TestNode> {
    let pfx = prefix();
    let mut nodes = Vec::new();
    for _ in 0..n {
        let mut c = test_config();
        c.redis_url = Some(url.to_owned());
        c.redis_prefix = pfx.clone();
        c.heartbeat_interval = interval;
        c.heartbeat_ttl = ttl;
        nodes.push(spawn_node(c).await);
    }
    nodes
}

/// Two nodes on `url` with long timers (no heartbeat, probe or anti-entropy traffic inside the
/// measured windows), warmed up: scripts loaded (the track script too: the token is read
/// twice), connections made, a token routed across (its gateway returned, to keep it open).
async fn quiet_pair(url: &str) -> (Vec<TestNode>, Gateway) {
    let nodes = nodes_on(url, 2, Duration::from_secs(20), Duration::from_secs(60)).await;
    let warm = token("warm");
    let gw = Gateway::connect(nodes[0].http, GatewayOptions::new(&warm, 1))
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(nodes[1].discover(&warm).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    (nodes, gw)
}

#[tokio::test]
async fn round_trip_budget_registration_discovery_release() {
    let redis = RedisServer::start();
    let (nodes, _warm) = quiet_pair(&redis.url()).await;

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
    // Read a second time: nodes[1] asks to be told of the token's new registrations (one
    // script, beside the discovery). A lookup sent after that answered is remembered.
    assert_eq!(nodes[1].discover(&t).await.0, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    redis.cli(&["ECHO", "m2t"]);
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
    let mut second = commands_between(&log, "\"m2b\"", "\"m2t\"");
    second.sort();
    assert_eq!(
        second,
        ["EVALSHA", "HVALS", "PUBLISH", "PUBLISH", "ZSCORE"],
        "read a second time: the discovery, and one track script beside it:\n{log}"
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

/// The same budget on a 3-primary Redis Cluster: the same commands (two of them sent together,
/// to whichever shards hold their keys), node channels on sharded pub/sub, never a command
/// across slots (redis-rs would refuse it). Read from a `MONITOR` of every primary, merged by
/// time.
#[tokio::test]
async fn round_trip_budget_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap();
    let (nodes, _warm) = quiet_pair(&cluster.hostie_url()).await;

    let dir = tempfile::tempdir().unwrap();
    let primaries = cluster.primaries();
    let mut monitors: Vec<_> = primaries
        .iter()
        .map(|&p| {
            let log = dir.path().join(format!("monitor{p}.log"));
            let child = std::process::Command::new("redis-cli")
                .args(["-p", &p.to_string(), "MONITOR"])
                .stdout(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("redis-cli MONITOR");
            (child, log)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mark = |m: &str| {
        for &p in &primaries {
            cluster.cli(p, &["ECHO", m]);
        }
    };
    let t = token("budget");
    mark("m1");
    let gw = Gateway::connect(nodes[0].http, GatewayOptions::new(&t, 2))
        .await
        .unwrap();
    mark("m2");
    assert_eq!(nodes[1].discover(&t).await.0, 200);
    mark("m3");
    gw.close();
    assert!(gw.closed_within(Duration::from_secs(2)).await.is_some());
    assert!(
        eventually(Duration::from_secs(1), || async {
            nodes[0].node.live_sessions() == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    mark("m4");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut lines = Vec::new();
    for (child, log) in &mut monitors {
        let _ = child.kill();
        let _ = child.wait();
        lines.extend(
            std::fs::read_to_string(log)
                .unwrap()
                .lines()
                .filter(|l| !l.contains("\"ECHO\"") || l.contains("\"m"))
                .map(str::to_owned),
        );
    }
    // MONITOR lines start with the server's time; the servers share this machine's clock.
    let time = |l: &str| {
        l.split_whitespace()
            .next()
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    lines.sort_by(|a, b| time(a).total_cmp(&time(b)));
    let log: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let between = |a: &str, b: &str| {
        let mut c: Vec<String> = commands_between(&log, &format!("\"{a}\""), &format!("\"{b}\""))
            .into_iter()
            .filter(|c| c != "ECHO")
            .collect();
        c.sort();
        c
    };
    assert_eq!(
        between("m1", "m2"),
        ["EVALSHA", "SADD"],
        "registration: the token's script and the node set's SADD:\n{log}"
    );
    assert_eq!(
        between("m2", "m3"),
        ["HVALS", "SPUBLISH", "SPUBLISH"],
        "cross-node discovery: lookup (the token's shard only), request and reply on sharded channels:\n{log}"
    );
    assert_eq!(between("m3", "m4"), ["HDEL", "SREM"], "release:\n{log}");
}

/// A registration's notice reaches only the nodes that hold a session of its token or cache its
/// records (`hostie_registration_notices_total`), so its cost does not grow with the number of
/// nodes; the one that caches answers the new session at once.
async fn notices_reach_only_holders_and_readers(url: &str) {
    let nodes = nodes_on(url, 4, Duration::from_millis(500), Duration::from_secs(5)).await;
    let t = token("targeted");
    let _owner = Gateway::connect(nodes[1].http, GatewayOptions::new(&t, 1001))
        .await
        .unwrap();
    // nodes[0] reads the token until it answers from its cache; nodes[3] reads it once.
    assert!(
        eventually(Duration::from_secs(3), || async {
            assert_eq!(nodes[0].discover(&t).await.1["port"], 1001);
            nodes[0]
                .metric("hostie_discovery_lookups_total{source=\"cache\"}")
                .await
                >= 1.0
        })
        .await,
        "nodes[0] never answered from its cache"
    );
    assert_eq!(nodes[3].discover(&t).await.1["port"], 1001);
    let notices = || async {
        let mut n = Vec::new();
        for node in &nodes {
            n.push(node.metric("hostie_registration_notices_total").await);
        }
        n
    };
    assert_eq!(notices().await, [0.0; 4]);
    let _newer = Gateway::connect(nodes[2].http, GatewayOptions::new(&t, 1002))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || async {
            notices().await == [1.0, 1.0, 0.0, 0.0]
        })
        .await,
        "only the reader and the holder are told: {:?}",
        notices().await
    );
    for node in &nodes {
        assert_eq!(node.discover(&t).await.1["port"], 1002);
    }
    // A token nobody else holds or reads: its registrations tell nobody.
    let lone = token("lone");
    let mut lone_gateways = Vec::new();
    for port in [2001, 2002] {
        lone_gateways.push(
            Gateway::connect(nodes[2].http, GatewayOptions::new(&lone, port))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(notices().await, [1.0, 1.0, 0.0, 0.0]);
}

#[tokio::test]
async fn registration_notices_reach_only_holders_and_readers() {
    let redis = RedisServer::start();
    notices_reach_only_holders_and_readers(&redis.url()).await;
}

#[tokio::test]
async fn registration_notices_reach_only_holders_and_readers_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap();
    notices_reach_only_holders_and_readers(&cluster.hostie_url()).await;
}

/// docs/redis.md, `stats.lua`: a node reads the cluster's figures at most once a second,
/// whatever the status page's traffic.
#[tokio::test]
async fn the_status_page_reads_redis_at_most_once_a_second_whatever_its_traffic() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let nodes = spawn_cluster(1, &redis, &pfx).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("monitor.log");
    let mut monitor = redis.monitor(&log);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let burst = (0..30).map(|_| nodes[0].get_as("/v0/status", None));
    for (status, _, _) in futures_util::future::join_all(burst).await {
        assert_eq!(status, 200);
    }
    for _ in 0..30 {
        assert_eq!(nodes[0].get_as("/", None).await.0, 200);
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = monitor.kill();
    let _ = monitor.wait();
    let seen = std::fs::read_to_string(&log).unwrap();
    let reads = seen
        .lines()
        .filter(|l| l.contains("\"HGETALL\"") && l.contains(":nodes}:stats"))
        .count();
    let allowed = took.as_secs() as usize + 1;
    assert!(
        (1..=allowed).contains(&reads),
        "{reads} reads of the figures for 60 pages in {took:?}"
    );
}
