//! The opt-in reachability probe (`--probe-reachability`): a TCP connect to each gateway's
//! advertised `host:port`, reported in the answer, the token's page and a metric, never into a
//! denied range. Loopback is denied by default, so these tests allow it explicitly.

use crate::helpers::*;
use hostie::config::Cidrs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A port that accepts connections, counting them.
async fn listening() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (port, accepted)
}

/// A port nothing listens on (bound once, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn probing(deny: Cidrs) -> hostie::config::Config {
    let mut config = test_config();
    config.probe_reachability = true;
    config.probe_deny = deny;
    config.probe_timeout = Duration::from_millis(500);
    config
}

#[tokio::test]
async fn answers_say_whether_the_advertised_address_accepts_connections() {
    let (open, accepted) = listening().await;
    let closed = closed_port();
    let node = spawn_node(probing(Cidrs(vec![]))).await;
    let (up, down) = (token("reach-up"), token("reach-down"));
    let _gw_up = Gateway::connect(node.http, GatewayOptions::new(&up, open))
        .await
        .unwrap();
    let _gw_down = Gateway::connect(node.http, GatewayOptions::new(&down, closed))
        .await
        .unwrap();
    for (t, want) in [(&up, "reachable"), (&down, "unreachable")] {
        let probed = eventually(Duration::from_secs(10), || async {
            node.discover(t).await.1["reachability"] == want
        })
        .await;
        let (status, body) = node.discover(t).await;
        assert!(probed, "{want}: {body}");
        assert_eq!(status, 200, "the answer itself is unchanged: {body}");
        assert_eq!(
            body["host"], "127.0.0.1",
            "the advertised host is never replaced"
        );
    }
    assert!(accepted.load(Ordering::SeqCst) >= 1);
    for result in ["reachable", "unreachable"] {
        let n = node
            .metric(&format!(
                "hostie_reachability_probes_total{{result=\"{result}\"}}"
            ))
            .await;
        assert!(n >= 1.0, "{result}: {n}");
    }
    // The token's page says it, and what to do.
    let (_, _, page) = node
        .get_as(&format!("/v0/hosties/{down}"), Some("text/html"))
        .await;
    assert!(page.contains("data-reach=\"unreachable\""), "{page}");
    assert!(page.contains("behind NAT or a firewall"));
}

#[tokio::test]
async fn a_denied_address_is_never_connected_to_and_without_the_probe_nothing_changes() {
    let (open, accepted) = listening().await;
    // The default deny ranges include loopback.
    let node = spawn_node(probing(test_config_default_deny())).await;
    let t = token("reach-denied");
    let _gw = Gateway::connect(node.http, GatewayOptions::new(&t, open))
        .await
        .unwrap();
    let denied = eventually(Duration::from_secs(10), || async {
        node.discover(&t).await.1["reachability"] == "denied"
    })
    .await;
    assert!(denied);
    assert_eq!(
        node.metric("hostie_reachability_probes_total{result=\"denied\"}")
            .await,
        1.0
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "never connected to");

    // Off (the default): the answer is the three fields, byte for byte.
    let plain = spawn_node(test_config()).await;
    let t = token("reach-off");
    let _gw = Gateway::connect(plain.http, GatewayOptions::new(&t, open))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, _, body) = plain.get_as(&format!("/v0/hosties/{t}"), None).await;
    assert_eq!(
        body,
        format!(r#"{{"host":"127.0.0.1","ip":"127.0.0.1","port":{open}}}"#)
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

/// The default `--probe-deny`, as the flag parser builds it.
fn test_config_default_deny() -> Cidrs {
    <hostie::config::Config as clap::Parser>::try_parse_from(["hostie"])
        .unwrap()
        .probe_deny
}

/// The answer's shape follows the answering node's setting: a node without the probe answers
/// the three fields for a session on a node with it, and one with the probe answers
/// `unchecked` for a session on a node without it.
#[tokio::test]
async fn the_answering_nodes_setting_decides_the_answers_shape() {
    let redis = hostie_testkit::redis_server::RedisServer::start();
    let pfx = prefix();
    let mut probing_config = cluster_config(&redis, &pfx);
    probing_config.probe_reachability = true;
    probing_config.probe_deny = Cidrs(vec![]);
    let probing = spawn_node(probing_config).await;
    let plain = spawn_node(cluster_config(&redis, &pfx)).await;
    let (open, _) = listening().await;
    let (on_probing, on_plain) = (token("reach-owner"), token("reach-plain-owner"));
    let _gw1 = Gateway::connect(probing.http, GatewayOptions::new(&on_probing, open))
        .await
        .unwrap();
    let _gw2 = Gateway::connect(plain.http, GatewayOptions::new(&on_plain, open))
        .await
        .unwrap();
    let probed = eventually(Duration::from_secs(10), || async {
        probing.discover(&on_probing).await.1["reachability"] == "reachable"
    })
    .await;
    assert!(probed);
    let (_, _, body) = plain
        .get_as(&format!("/v0/hosties/{on_probing}"), None)
        .await;
    assert_eq!(
        body,
        format!(r#"{{"host":"127.0.0.1","ip":"127.0.0.1","port":{open}}}"#)
    );
    let (status, body) = probing.discover(&on_plain).await;
    assert_eq!(
        (status, &body["reachability"]),
        (200, &serde_json::json!("unchecked"))
    );
}
