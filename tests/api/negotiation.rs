//! Pages for people beside the API: content negotiation on the discovery URL (API clients
//! keep their JSON byte for byte), the token page's facts and headers, the cluster status and
//! its JSON twin, and host validation. What a real browser renders: `pages.rs`.

use crate::helpers::*;
use hostie_testkit::redis_server::RedisServer;
use std::time::Duration;

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

#[tokio::test]
async fn api_clients_get_the_same_json_whatever_their_accept_and_browsers_get_the_page() {
    let node = spawn_node(test_config()).await;
    let t = token("negotiate");
    let _gw = Gateway::connect(node.http, GatewayOptions::new(&t, 18789))
        .await
        .unwrap();
    for path in [
        format!("/v0/hosties/{t}"),
        "/v0/hosties/insecure_nobody".into(),
    ] {
        let (status, headers, plain) = node.get_as(&path, None).await;
        assert_eq!(headers["content-type"], "application/json", "{path}");
        for accept in [
            "*/*",
            "application/json",
            "text/html;q=0",
            "text/plain, */*",
            "application/json, text/html;q=0.5",
            // The JDK's HttpURLConnection default.
            "text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2",
        ] {
            let (s, h, body) = node.get_as(&path, Some(accept)).await;
            assert_eq!((s, &body), (status, &plain), "{path} with {accept}");
            assert_eq!(h["content-type"], "application/json");
        }
        let (s, h, page) = node.get_as(&path, Some(BROWSER_ACCEPT)).await;
        assert_eq!(s, status, "the page has the JSON twin's status: {path}");
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        for (name, value) in [
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
            ("x-content-type-options", "nosniff"),
            ("vary", "Accept"),
            ("x-robots-tag", "noindex"),
        ] {
            assert_eq!(h[name], value, "{name}");
        }
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
    }
    assert_eq!(
        node.metric("hostie_discoveries_total{outcome=\"hit\"}")
            .await,
        // The live token: no Accept, six others, and the page.
        8.0,
        "pages are discoveries too"
    );
}

#[tokio::test]
async fn the_token_page_explains_and_never_shows_the_token() {
    let node = spawn_node(test_config()).await;
    let t = token("page");
    let _gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&t, 18789).subprotocol("io|0.0.1|id|12345|18789"),
    )
    .await
    .unwrap();
    let other = token("other");
    let _gw2 = Gateway::connect(
        node.http,
        GatewayOptions::new(&other, 4242).subprotocol("io|0.0.1|id|other.example.com|4242"),
    )
    .await
    .unwrap();
    let (status, _, page) = node
        .get_as(&format!("/v0/hosties/{t}"), Some(BROWSER_ACCEPT))
        .await;
    assert_eq!(status, 200);
    assert!(!page.contains(&t), "the token is never shown in full");
    for fact in [
        "data-status=\"online\"",
        "18789",
        "data-count=\"1\"",
        node.node.id().0.as_str(),
        "connection address",
        "rejected-host",
        "io 0.0.1",
    ] {
        assert!(page.contains(fact), "{fact} in {page}");
    }
    // Nothing of the other token's registration.
    assert!(!page.contains("other.example.com") && !page.contains("4242"));
    // The gateway's bare-number host was rejected, counted, and its address advertised.
    assert_eq!(node.discover(&t).await.1["host"], "127.0.0.1");
    assert_eq!(node.metric("hostie_rejected_hosts_total").await, 1.0);
    // Offline, with the diagnosis and what to do.
    let (status, _, page) = node
        .get_as(&format!("/v0/hosties/%22{t}%22"), Some(BROWSER_ACCEPT))
        .await;
    assert_eq!(status, 404);
    assert!(page.contains("data-status=\"token_quoted\""), "{page}");
    assert!(page.contains("id=\"advice\""));
    assert!(!page.contains(&t));
    // Markup in a token is text, never markup.
    // Markup a gateway sends (its subprotocol version) is text too.
    let marked = token("markup");
    let _gw3 = Gateway::connect(
        node.http,
        GatewayOptions::new(&marked, 4343).subprotocol("io|<b>x</b>|id||4343"),
    )
    .await
    .unwrap();
    let (_, _, page) = node
        .get_as(&format!("/v0/hosties/{marked}"), Some(BROWSER_ACCEPT))
        .await;
    assert!(page.contains("io &lt;b&gt;x&lt;/b&gt;"), "{page}");
    assert!(!page.contains("<b>"), "{page}");
}

#[tokio::test]
async fn the_status_form_sends_the_browser_to_the_token_page() {
    let node = spawn_node(test_config()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .get(node.url("/?token=%20a%2Fb%22c%20"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    // Trimmed, then encoded as one path segment.
    assert_eq!(res.headers()["location"], "/v0/hosties/a%2Fb%22c");
    let (status, _, page) = node.get_as("/?token=", None).await;
    assert_eq!(status, 200, "an empty form shows the page: {page}");
}

/// The cluster status counts every live node's sessions, through any node, as JSON and on the
/// page; no token or client address appears on either.
#[tokio::test]
async fn the_cluster_status_counts_every_node_and_shows_no_token() {
    let redis = RedisServer::start();
    let pfx = prefix();
    let mut config = cluster_config(&redis, &pfx);
    config.heartbeat_interval = Duration::from_millis(100);
    let nodes = [
        spawn_node(config.clone()).await,
        spawn_node(config.clone()).await,
        spawn_node(config).await,
    ];
    let mut gateways = Vec::new();
    let mut tokens = Vec::new();
    for (i, n) in [0, 0, 1, 2, 2, 2].into_iter().enumerate() {
        let t = token(&format!("status{i}"));
        gateways.push(
            Gateway::connect(nodes[n].http, GatewayOptions::new(&t, 7000 + i as u16))
                .await
                .unwrap(),
        );
        tokens.push(t);
    }
    let counted = eventually(Duration::from_secs(10), || async {
        let (_, _, body) = nodes[1].get_as("/v0/status", None).await;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["sessions"] == 6 && json["nodes"] == 3
    })
    .await;
    assert!(counted, "every node's sessions counted through node 1");
    for node in &nodes {
        let (status, headers, body) = node.get_as("/v0/status", None).await;
        assert_eq!(
            (status, &headers["content-type"]),
            (200, &"application/json".parse().unwrap())
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["node"], node.node.id().0.as_str());
        assert_eq!(json["registry_ok"], true);
        let per_node: Vec<u64> = json["per_node"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["sessions"].as_u64().unwrap())
            .collect();
        assert_eq!(per_node.iter().sum::<u64>(), 6, "{body}");
        // The same figures as JSON on `/` when asked by name, and on the page.
        let (_, _, twin) = node.get_as("/", Some("application/json")).await;
        let twin: serde_json::Value = serde_json::from_str(&twin).unwrap();
        assert_eq!(twin["sessions"], json["sessions"]);
        let (_, _, page) = node.get_as("/", None).await;
        assert!(page.contains("<span id=\"sessions\">6</span>"), "{page}");
        assert!(page.contains("<span id=\"nodes\">3</span>"));
        for text in [&body, &page] {
            assert!(!text.contains("127.0.0.1"), "no client address: {text}");
            for t in &tokens {
                assert!(!text.contains(t.as_str()));
            }
        }
    }
    // A node that stops drops out of the count once its heartbeat runs out.
    let [a, b, c] = nodes;
    drop(c);
    drop(gateways);
    let shrunk = eventually(Duration::from_secs(15), || async {
        let (_, _, body) = a.get_as("/v0/status", None).await;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["nodes"] == 2
    })
    .await;
    assert!(shrunk, "the stopped node left the count");
    drop(b);
}
