//! A proxy missing from `--trusted-proxies` is said loudly: gateways arriving from one peer
//! with forwarding headers that are ignored are counted, the peer is judged a proxy after a few
//! sessions (or many discoveries), once, with a warning in the log, a gauge and a line on the
//! status page that names no address. Trusted proxies and plain clients are never judged.

use crate::helpers::*;
use hostie::config::Cidrs;
use std::net::SocketAddr;
use std::time::Duration;

const IGNORED: &str = "hostie_forwarding_headers_ignored_total";
const SUSPECTS: &str = "hostie_untrusted_proxies";

/// `n` gateways registered at `node`, each through "a proxy" (the loopback peer) that names a
/// client of its own in `header` when one is given; their tokens.
async fn gateways(
    node: SocketAddr,
    n: u8,
    header: Option<&str>,
    tag: &str,
) -> (Vec<Gateway>, Vec<String>) {
    let (mut out, mut tokens) = (Vec::new(), Vec::new());
    for i in 0..n {
        let t = token(&format!("{tag}{i}"));
        let mut opts = GatewayOptions::new(&t, 7000);
        if let Some(name) = header {
            opts = opts.header(name, &format!("198.51.100.{i}"));
        }
        out.push(Gateway::connect(node, opts).await.unwrap());
        tokens.push(t);
    }
    (out, tokens)
}

async fn status_page(node: &TestNode) -> String {
    let page = node.client.get(node.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

#[tokio::test]
async fn sessions_through_an_untrusted_proxy_are_counted_and_it_is_judged_once() {
    let node = spawn_node(test_config()).await;
    let (_first, tokens) = gateways(node.http, 2, Some("X-Forwarded-For"), "lb").await;
    assert_eq!(node.metric(IGNORED).await, 2.0);
    assert_eq!(
        node.metric(SUSPECTS).await,
        0.0,
        "two sessions are no proxy yet"
    );
    assert!(!status_page(&node).await.contains("untrusted"));

    let (_more, _) = gateways(node.http, 3, Some("X-Forwarded-For"), "lb-more").await;
    assert_eq!(node.metric(IGNORED).await, 5.0);
    assert_eq!(node.metric(SUSPECTS).await, 1.0, "one peer, judged once");
    // Still ignored: judging changes nothing but what is said.
    let (_, body) = node.discover(&tokens[0]).await;
    assert_eq!(body["host"], "127.0.0.1", "{body}");

    let html = status_page(&node).await;
    assert!(
        html.contains("id=\"untrusted-proxies\" data-count=\"1\""),
        "{html}"
    );
    assert!(html.contains("--trusted-proxies"), "{html}");
    let twin: serde_json::Value = node
        .client
        .get(node.url("/v0/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(twin["untrusted_proxies"], 1, "{twin}");
    for address in ["127.0.0.1", "198.51.100."] {
        assert!(!html.contains(address), "the page names no address: {html}");
        assert!(!twin.to_string().contains(address), "{twin}");
    }
}

#[tokio::test]
async fn many_discoveries_through_an_untrusted_proxy_judge_it_too() {
    let node = spawn_node(test_config()).await;
    let t = token("sdk");
    for i in 0..100 {
        let res = node
            .client
            .get(node.url(&format!("/v0/hosties/{t}")))
            .header("X-Real-IP", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        if i == 98 {
            assert_eq!(node.metric(SUSPECTS).await, 0.0, "99 discoveries: not yet");
        }
    }
    assert_eq!(node.metric(IGNORED).await, 100.0);
    assert_eq!(node.metric(SUSPECTS).await, 1.0);
}

#[tokio::test]
async fn trusted_proxies_and_plain_clients_are_never_judged() {
    let mut trusting = test_config();
    trusting.trusted_proxies = Cidrs(vec!["127.0.0.0/8".parse().unwrap()]);
    for (config, header, what) in [
        (trusting, Some("Forwarded"), "a trusted proxy"),
        (test_config(), None, "plain clients"),
    ] {
        let node = spawn_node(config).await;
        let (_gws, tokens) = gateways(node.http, 5, header, "quiet").await;
        for t in &tokens {
            node.discover(t).await;
        }
        assert_eq!(node.metric(IGNORED).await, 0.0, "{what}");
        assert_eq!(node.metric(SUSPECTS).await, 0.0, "{what}");
        assert!(!status_page(&node).await.contains("untrusted"), "{what}");
    }
}

/// The real binary's JSON log: one warning naming the peer and the flag, however many sessions
/// follow.
#[tokio::test]
async fn the_warning_is_logged_once_and_names_the_peer_and_the_flag() {
    let mut node = spawn_process(&["--drain-spread", "10ms"]).await;
    let (gws, _) = gateways(node.http, 6, Some("X-Forwarded-For"), "log").await;
    node.signal(Signal::Term);
    for gw in &gws {
        assert!(gw.closed_within(Duration::from_secs(3)).await.is_some());
    }
    assert!(node.exited_within(Duration::from_secs(5)).await.is_some());
    let logs = node.logs();
    let warnings: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["level"] == "WARN"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("a proxy seems to be in front"))
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    let w = &warnings[0];
    assert_eq!(w["peer"], "127.0.0.1", "{w}");
    let message = w["message"].as_str().unwrap();
    for flag in ["--trusted-proxies", "config.trustedProxies"] {
        assert!(message.contains(flag), "{message}");
    }
}
