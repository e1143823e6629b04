//! Reaching Redis with credentials and over TLS: `rediss://` to a server whose certificate a
//! private CA signed (trusted through `SSL_CERT_FILE`, which the system's root store reads),
//! and a Sentinel group whose data servers require a password given in `--redis-url`.

use crate::helpers::*;
use crate::tls::TestCert;
use hostie_testkit::free_port;
use hostie_testkit::redis_server::RedisServer;
use hostie_testkit::redis_topology::RedisSentinelGroup;
use std::time::Duration;

/// A node process on `url`, trusting `ca` for TLS, logging into `ca`'s directory.
async fn node_on(url: &str, prefix: &str, ca: &TestCert) -> NodeProcess {
    init();
    let log = ca
        .dir
        .path()
        .join(format!("node-{}.log", uuid::Uuid::new_v4()));
    NodeProcess::command(env!("CARGO_BIN_EXE_hostie"))
        .args(["--log-format", "json", "--workers", "1"])
        .args(["--redis-url", url, "--redis-prefix", prefix])
        .args(["--heartbeat-interval", "200ms", "--heartbeat-ttl", "1s"])
        .env("SSL_CERT_FILE", &ca.cert_path().display().to_string())
        .log_to(log)
        .spawn()
        .await
}

/// Two nodes route a token across each other: registration, lookup and the bus all work.
async fn routes(a: &NodeProcess, b: &NodeProcess) {
    for node in [a, b] {
        assert!(
            eventually(Duration::from_secs(5), || node.readyz_status_is(200)).await,
            "ready: Redis and the bus reached"
        );
    }
    let t = token("access");
    let _gw = Gateway::connect(a.http, GatewayOptions::new(&t, 4242))
        .await
        .unwrap();
    let (status, body, _) = discover_at(b.http, &t).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(4242)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_password_and_a_private_ca() {
    let cert = TestCert::new();
    let redis = tokio::task::block_in_place(RedisServer::start);
    let tls_port = free_port();
    let (c, k) = (cert.cert_path(), cert.key_path());
    let set = redis.cli(&[
        "CONFIG",
        "SET",
        "tls-cert-file",
        &c.display().to_string(),
        "tls-key-file",
        &k.display().to_string(),
        "tls-ca-cert-file",
        &c.display().to_string(),
        "tls-auth-clients",
        "no",
        "tls-port",
        &tls_port.to_string(),
    ]);
    assert_eq!(set.trim(), "OK", "TLS on port {tls_port}: {set}");
    assert_eq!(
        redis
            .cli(&["CONFIG", "SET", "requirepass", "s3cret"])
            .trim(),
        "OK"
    );
    let pfx = prefix();
    let url = format!("rediss://:s3cret@localhost:{tls_port}/");
    let (a, b) = (
        node_on(&url, &pfx, &cert).await,
        node_on(&url, &pfx, &cert).await,
    );
    routes(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_with_a_password_on_the_data_servers() {
    let group = tokio::task::block_in_place(RedisSentinelGroup::start);
    // The sentinels learn the password first (their open links stay authenticated), then the
    // replica, then the primary requires it.
    for s in group.sentinel_ports() {
        let out = group.cli(
            s,
            &["SENTINEL", "SET", group.master_name(), "auth-pass", "pw"],
        );
        assert_eq!(out.trim(), "OK", "sentinel {s}: {out}");
    }
    let primary = group.primary_port();
    for p in group.data_ports() {
        assert_eq!(
            group.cli(p, &["CONFIG", "SET", "masterauth", "pw"]).trim(),
            "OK"
        );
    }
    for p in group.data_ports().into_iter().filter(|&p| p != primary) {
        assert_eq!(
            group.cli(p, &["CONFIG", "SET", "requirepass", "pw"]).trim(),
            "OK"
        );
    }
    assert_eq!(
        group
            .cli(primary, &["CONFIG", "SET", "requirepass", "pw"])
            .trim(),
        "OK"
    );
    // Every sentinel still holds the primary up (its links authenticate now).
    let healthy = |s: u16| {
        let master = group.cli(s, &["SENTINEL", "MASTER", group.master_name()]);
        let mut lines = master.lines();
        let flags = std::iter::from_fn(|| Some((lines.next()?, lines.next()?)))
            .find(|(k, _)| *k == "flags")
            .map(|(_, v)| v.to_owned());
        flags.as_deref() == Some("master")
    };
    let steady = eventually(Duration::from_secs(5), || async {
        group.sentinel_ports().into_iter().all(healthy)
    })
    .await;
    assert!(
        steady,
        "the sentinels hold the password-protected primary up"
    );
    let url = group
        .hostie_url()
        .replacen("redis+sentinel://", "redis+sentinel://:pw@", 1);
    let pfx = prefix();
    let unused = TestCert::new();
    let (a, b) = (
        node_on(&url, &pfx, &unused).await,
        node_on(&url, &pfx, &unused).await,
    );
    routes(&a, &b).await;
}
