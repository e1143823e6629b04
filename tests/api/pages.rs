//! The node's pages as a browser sees them: headless Chromium (the test kit's
//! [`Browser`]) loads them from a node on loopback, sending its own `Accept: text/html,...` and
//! running their scripts; the DOM after load is checked with [`Dom`], and screenshots are kept
//! in `target/test-artifacts/` (refreshing `docs/screenshots/` with
//! `HOSTIE_UPDATE_SCREENSHOTS=1`).

use crate::helpers::*;
use std::path::PathBuf;

/// The README's screenshot size.
const WINDOW: (u32, u32) = (800, 450);

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

#[tokio::test]
async fn the_status_page_names_hostie() {
    let node = spawn_node(test_config()).await;
    let dom = page(node.url("/")).await;
    assert_eq!(dom.select_text("title"), ["hostie"]);
    let h1 = dom.select_text("h1");
    assert_eq!(h1.len(), 1, "{h1:?}");
    assert!(h1[0].contains("hostie"), "{h1:?}");
    screenshot(node.url("/"), "status.png").await;
}
