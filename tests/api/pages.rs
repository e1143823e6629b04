//! The node's pages as a browser sees them: headless Chromium (the test kit's
//! [`Browser`]) loads them from a node on loopback, sending its own `Accept: text/html,...` and
//! running their scripts; the DOM after load is checked with [`Dom`], and screenshots are kept
//! in `target/test-artifacts/` (refreshing `docs/screenshots/` with
//! `HOSTIE_UPDATE_SCREENSHOTS=1`).

use crate::helpers::*;
use std::path::PathBuf;

/// The README's screenshot size.
const WINDOW: (u32, u32) = (800, 640);

/// The DOM of `url` after load. Chromium is a blocking child process and the node serves on
/// this test's runtime: it runs on a blocking thread.
async fn page(url: String) -> Dom {
    let html = tokio::task::spawn_blocking(move || Browser::find().dump_dom(&url))
        .await
        .expect("chromium's thread finishes");
    Dom::parse(&html)
}

/// A [`WINDOW`]-sized screenshot of `url`, kept as the artifact `name`.
async fn screenshot(url: String, name: &'static str) -> PathBuf {
    tokio::task::spawn_blocking(move || Browser::find().screenshot_artifact(&url, name, WINDOW))
        .await
        .expect("chromium's thread finishes")
}

/// The JSON twin of a page: what an API client gets for the same URL.
async fn json(node: &TestNode, path: &str) -> serde_json::Value {
    node.client
        .get(node.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_status_page_counts_the_cluster_like_its_json_twin_and_has_a_form() {
    let node = spawn_node(test_config()).await;
    let mut gateways = Vec::new();
    for i in 0..3 {
        let t = token(&format!("status-page{i}"));
        gateways.push(
            Gateway::connect(node.http, GatewayOptions::new(&t, 7100 + i))
                .await
                .unwrap(),
        );
    }
    let dom = page(node.url("/")).await;
    assert_eq!(dom.select_text("title"), ["hostie"]);
    let h1 = dom.select_text("h1");
    assert!(h1.len() == 1 && h1[0].contains("hostie"), "{h1:?}");
    let twin = json(&node, "/v0/status").await;
    assert_eq!(dom.select_text("#sessions"), [twin["sessions"].to_string()]);
    assert_eq!(dom.select_text("#sessions"), ["3"]);
    assert_eq!(dom.select_text("#nodes"), [twin["nodes"].to_string()]);
    assert_eq!(dom.select_text("#per-node tr.node").len(), 1);
    assert_eq!(dom.attr("form", "action").as_deref(), Some("/"));
    assert_eq!(dom.attr("form input", "name").as_deref(), Some("token"));
    screenshot(node.url("/"), "status.png").await;
}

#[tokio::test]
async fn a_browser_on_a_discovery_url_sees_the_token_online_as_its_json_twin_says() {
    let node = spawn_node(test_config()).await;
    let t = token("browser-online");
    let _gw = Gateway::connect(node.http, GatewayOptions::new(&t, 18789))
        .await
        .unwrap();
    let url = node.url(&format!("/v0/hosties/{t}"));
    let html = tokio::task::spawn_blocking({
        let url = url.clone();
        move || Browser::find().dump_dom(&url)
    })
    .await
    .unwrap();
    assert!(!html.contains(&t), "the token is never shown in full");
    let dom = Dom::parse(&html);
    let twin = json(&node, &format!("/v0/hosties/{t}")).await;
    assert_eq!(dom.attr("#state", "data-status").as_deref(), Some("online"));
    assert_eq!(dom.select_text("#port"), [twin["port"].to_string()]);
    assert_eq!(dom.select_text("#host"), [twin["host"].as_str().unwrap()]);
    assert_eq!(dom.attr("#sessions", "data-count").as_deref(), Some("1"));
    assert_eq!(dom.select_text("tr.session").len(), 1);
    // The status page's form leads to the same page (a 303 Chromium follows).
    let via_form = page(node.url(&format!("/?token={t}"))).await;
    assert_eq!(
        via_form.attr("#state", "data-status").as_deref(),
        Some("online")
    );
    screenshot(url, "token-online.png").await;
}

#[tokio::test]
async fn a_browser_on_a_mistyped_token_sees_why_and_what_to_do() {
    let node = spawn_node(test_config()).await;
    let t = token("browser-offline");
    let _gw = Gateway::connect(node.http, GatewayOptions::new(&t, 18789))
        .await
        .unwrap();
    // A line break after the token: a token read from a file.
    let path = format!("/v0/hosties/{t}%0A");
    let dom = page(node.url(&path)).await;
    let twin = json(&node, &path).await;
    assert_eq!(twin["status"], "token_whitespace");
    assert_eq!(
        dom.attr("#state", "data-status").as_deref(),
        twin["status"].as_str()
    );
    assert_eq!(dom.select_text("#status"), ["token_whitespace"]);
    assert!(!dom.select_text("#advice li").is_empty());
    assert_eq!(dom.attr("#sessions", "data-count").as_deref(), Some("0"));
    screenshot(node.url(&path), "token-offline.png").await;
}
