use crate::helpers::*;
use hostie::startup::Backends;
use std::time::{Duration, Instant};

#[tokio::test]
async fn hit_answers_host_ip_and_port() {
    let node = spawn_node(test_config()).await;
    let t = token("hit");
    let gw = Gateway::connect(node.http, GatewayOptions::new(&t, 18789))
        .await
        .unwrap();
    let res = node
        .client
        .get(node.url(&format!("/v0/hosties/{t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let body = res.text().await.unwrap();
    assert_eq!(
        body,
        r#"{"host":"127.0.0.1","ip":"127.0.0.1","port":18789}"#
    );
    assert_eq!(gw.request_count(), 1);
    assert_eq!(
        node.metric("hostie_discoveries_total{outcome=\"hit\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn miss_is_404_with_the_all_zero_body_at_once() {
    let node = spawn_node(test_config()).await;
    let started = Instant::now();
    let res = node
        .client
        .get(node.url("/v0/hosties/insecure_nobody"))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body = res.text().await.unwrap();
    assert!(
        body.starts_with(
            r#"{"host":"0.0.0.0","ip":"0.0.0.0","port":0,"status":"no_session","hint":""#
        ),
        "{body}"
    );
    assert_eq!(
        node.metric("hostie_discoveries_total{outcome=\"miss\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn head_answers_status_without_body() {
    let node = spawn_node(test_config()).await;
    let t = token("head");
    let _gw = Gateway::connect(node.http, GatewayOptions::new(&t, 1000))
        .await
        .unwrap();
    let hit = node
        .client
        .head(node.url(&format!("/v0/hosties/{t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(hit.status(), 200);
    assert_eq!(hit.headers()["content-type"], "application/json");
    assert!(hit.bytes().await.unwrap().is_empty());
    let miss = node
        .client
        .head(node.url("/v0/hosties/none"))
        .send()
        .await
        .unwrap();
    assert_eq!(miss.status(), 404);
}

#[tokio::test]
async fn percent_encoded_token_is_decoded_once() {
    let node = spawn_node(test_config()).await;
    // Registered through the legacy path form, whose suffix is percent-decoded too.
    let _gw = Gateway::connect(
        node.http,
        GatewayOptions::new("unused", 3131)
            .no_token()
            .path("/v0/websocket/token/puppet%20padlocal%2Bx%25y"),
    )
    .await
    .unwrap();
    let (status, body) = node.discover("puppet%20padlocal%2Bx%25y").await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(3131)));
    // Decoded once: the literal "%25y" form is another token.
    assert_eq!(node.discover("puppet%20padlocal%2Bx%2525y").await.0, 404);
    // Header tokens with the same characters (minus the space) match their encoded form.
    let t = "tok+en%";
    let _gw2 = Gateway::connect(node.http, GatewayOptions::new(t, 4141))
        .await
        .unwrap();
    assert_eq!(node.discover("tok%2Ben%25").await.1["port"], 4141);
}

/// A 404 says why when the token looks mistyped, from the segment alone: the body for a quoted
/// token whose unquoted form is live is the same, byte for byte, as for one that is not.
#[tokio::test]
async fn a_404_says_when_the_token_looks_mistyped_and_reveals_nothing_else() {
    let node = spawn_node(test_config()).await;
    let t = token("mistyped");
    let _gw = Gateway::connect(node.http, GatewayOptions::new(&t, 5151))
        .await
        .unwrap();
    let never = token("never");
    let cases = [
        (
            format!("%22{t}%22"),
            format!("%22{never}%22"),
            "token_quoted",
        ),
        (
            format!("%E2%80%9C{t}%E2%80%9D"),
            format!("%3C{never}%3E"),
            "token_quoted",
        ),
        (format!("{t}%0A"), format!("{never}%0A"), "token_whitespace"),
        (
            format!("%20{t}"),
            format!("{never}%0D%0A"),
            "token_whitespace",
        ),
        (
            format!("%EF%BB%BF{t}"),
            format!("%EF%BB%BF{never}"),
            "token_whitespace",
        ),
        (
            format!("{t}%2520"),
            format!("{never}%2520"),
            "token_encoded_twice",
        ),
        (format!("{t}%zz"), format!("{never}%2"), "token_encoding"),
        (format!("{t}%FF"), format!("{never}%C3"), "token_encoding"),
        (never.clone(), "insecure_nobody".to_owned(), "no_session"),
    ];
    for (near_live, unrelated, status) in &cases {
        let mut bodies = Vec::new();
        for segment in [near_live, unrelated] {
            let res = node
                .client
                .get(node.url(&format!("/v0/hosties/{segment}")))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 404, "{segment}");
            assert_eq!(res.headers()["content-type"], "application/json");
            let body = res.text().await.unwrap();
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_zero_answer_fields(&json, segment);
            assert_eq!(json["status"], *status, "{segment}: {body}");
            assert!(json["hint"].as_str().is_some_and(|h| h.len() > 20));
            assert!(!body.contains(&t) && !body.contains(&never), "{body}");
            bodies.push(body);
        }
        assert_eq!(
            bodies[0], bodies[1],
            "the live token's neighbour shows nothing of it"
        );
    }
    assert_eq!(
        node.metric("hostie_discoveries_total{outcome=\"miss\"}")
            .await,
        2.0 * cases.len() as f64
    );
    // A gateway that registered the token quoted is found quoted.
    let quoted = format!("\"{}\"", token("quoted"));
    let _gw2 = Gateway::connect(node.http, GatewayOptions::new(&quoted, 5252))
        .await
        .unwrap();
    let (status, body) = node.discover(&quoted.replace('"', "%22")).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(5252)), "{body}");
}

#[tokio::test]
async fn custom_host_field_wins() {
    let node = spawn_node(test_config()).await;
    let t = token("custom");
    let _gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&t, 18789).subprotocol("io|0.0.1|id|203.0.113.7|18789"),
    )
    .await
    .unwrap();
    let (status, body) = node.discover(&t).await;
    assert_eq!(status, 200);
    assert_eq!(body["host"], "203.0.113.7");
    assert_eq!(body["ip"], "203.0.113.7");
}

#[tokio::test]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    for (trusted, expected) in [(true, "198.51.100.9"), (false, "127.0.0.1")] {
        let mut config = test_config();
        if trusted {
            config.trusted_proxies = hostie::config::Cidrs(vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ]);
        }
        let node = spawn_node(config).await;
        let t = token("xff");
        // The upgrade passed two appending proxies, 10.0.0.1 and then the TCP peer 127.0.0.1.
        let opts =
            GatewayOptions::new(&t, 7000).header("X-Forwarded-For", "198.51.100.9, 10.0.0.1");
        let gw = Gateway::connect(node.http, opts).await.unwrap();
        let (status, body) = node.discover(&t).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["host"], expected, "trusted={trusted}");
        // The token's page says where the address came from.
        let (_, _, page) = node
            .get_as(&format!("/v0/hosties/{t}"), Some("text/html"))
            .await;
        let from = if trusted {
            "from a trusted proxy"
        } else {
            "connection address"
        };
        assert!(page.contains(from), "trusted={trusted}: {page}");
        drop(gw);
    }
}

#[tokio::test]
async fn a_client_cannot_choose_its_address_through_an_appending_proxy() {
    let mut config = test_config();
    config.trusted_proxies = hostie::config::Cidrs(vec!["127.0.0.0/8".parse().unwrap()]);
    let node = spawn_node(config).await;
    let t = token("spoof");
    // The gateway sent `X-Forwarded-For: 203.0.113.66` itself; the trusted proxy (the TCP
    // peer, 127.0.0.1) appended the address it saw, 198.51.100.9.
    let opts =
        GatewayOptions::new(&t, 7000).header("X-Forwarded-For", "203.0.113.66, 198.51.100.9");
    let gw = Gateway::connect(node.http, opts).await.unwrap();
    let (status, body) = node.discover(&t).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["host"], "198.51.100.9");
    assert_eq!(body["ip"], "198.51.100.9");
    drop(gw);
}

#[tokio::test]
async fn newest_session_answers_then_the_older_one() {
    let node = spawn_node(test_config()).await;
    let t = token("two");
    let old = Gateway::connect(node.http, GatewayOptions::new(&t, 1111))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new = Gateway::connect(node.http, GatewayOptions::new(&t, 2222))
        .await
        .unwrap();
    assert_eq!(node.discover(&t).await.1["port"], 2222);
    assert_eq!(
        old.request_count(),
        0,
        "the older session is not asked while the newest answers"
    );
    new.close();
    assert!(new.closed_within(Duration::from_secs(2)).await.is_some());
    assert!(
        eventually(Duration::from_secs(2), || async {
            node.discover(&t).await.1["port"] == 1111
        })
        .await
    );
    old.close_normal();
    assert!(old.closed_within(Duration::from_secs(2)).await.is_some());
    assert!(
        eventually(Duration::from_secs(2), || async {
            node.discover(&t).await.0 == 404
        })
        .await
    );
}

#[tokio::test]
async fn silent_newest_session_falls_back_to_an_older_live_one() {
    let node = spawn_node(test_config()).await;
    let t = token("silentnew");
    let _old = Gateway::connect(node.http, GatewayOptions::new(&t, 1111))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new = Gateway::connect(
        node.http,
        GatewayOptions::new(&t, 2222).behavior(Behavior::Silent),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (status, body) = node.discover(&t).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(1111)));
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "within the deadline"
    );
    assert_eq!(new.request_count(), 1);
}

#[tokio::test]
async fn fifty_concurrent_discoveries_share_one_rpc() {
    let node = spawn_node(test_config()).await;
    let t = token("single");
    let gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&t, 18789)
            .behavior(Behavior::PortAfter(18789, Duration::from_millis(300))),
    )
    .await
    .unwrap();
    let queries = (0..50).map(|_| node.discover(&t));
    let answers = futures_util::future::join_all(queries).await;
    for (status, body) in answers {
        assert_eq!((status, body["port"].as_u64()), (200, Some(18789)));
    }
    assert_eq!(gw.request_count(), 1);
}

#[tokio::test]
async fn in_process_cluster_routes_across_nodes() {
    let backends = Backends::memory(test_config().heartbeat_ttl);
    let a = spawn_node_on(test_config(), backends.clone()).await;
    let b = spawn_node_on(test_config(), backends).await;
    let t = token("cross");
    let gw = Gateway::connect(a.http, GatewayOptions::new(&t, 9999))
        .await
        .unwrap();
    for node in [&a, &b] {
        let (status, body) = node.discover(&t).await;
        assert_eq!((status, body["port"].as_u64()), (200, Some(9999)));
    }
    assert_eq!(gw.request_count(), 2);
    gw.close();
    assert!(
        eventually(Duration::from_secs(2), || async {
            b.discover(&t).await.0 == 404
        })
        .await
    );
}

#[tokio::test]
async fn only_get_or_head_of_one_segment_is_a_discovery() {
    let node = spawn_node(test_config()).await;
    let post = node
        .client
        .post(node.url("/v0/hosties/abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    for (path, code) in [
        ("/v0/hosties/", "not_a_token"),
        ("/v0/hosties/a/b", "not_a_token"),
        ("/v0/hostiesabc", "unknown_path"),
    ] {
        let res = node.client.get(node.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["status"], code, "{path} is not a discovery: {body}");
    }
    assert_eq!(
        node.metric("hostie_discoveries_total{outcome=\"miss\"}")
            .await,
        0.0
    );
}

/// Every answer of the public listeners that is not a 200 is JSON with a `status` and a
/// `hint`; under `/v0/hosties` it also carries the all-zero answer fields (clients that read
/// only those behave as on a 404), all scalars.
#[tokio::test]
async fn every_error_answer_is_json_with_a_status_and_a_hint() {
    let node = spawn_node(test_config()).await;
    use reqwest::Method;
    let cases: &[(Method, &str, u16, &str, bool)] = &[
        (
            Method::GET,
            "/v0/hosties/insecure_nobody",
            404,
            "no_session",
            true,
        ),
        (Method::GET, "/v0/hosties/", 404, "not_a_token", true),
        (Method::GET, "/v0/hosties", 404, "not_a_token", true),
        (Method::GET, "/v0/hosties/a/b", 404, "not_a_token", true),
        (
            Method::POST,
            "/v0/hosties/x",
            405,
            "method_not_allowed",
            true,
        ),
        (
            Method::DELETE,
            "/v0/hosties/x",
            405,
            "method_not_allowed",
            true,
        ),
        (Method::POST, "/", 405, "method_not_allowed", true),
        (Method::GET, "/nope", 404, "unknown_path", false),
        (Method::GET, "/v0/websocket", 400, "bad_handshake", false),
        (Method::PUT, "/v1/anything/else", 404, "unknown_path", false),
    ];
    for (method, path, status, code, zero_fields) in cases {
        let res = node
            .client
            .request(method.clone(), node.url(path))
            .send()
            .await
            .unwrap();
        let what = format!("{method} {path}");
        assert_eq!(res.status().as_u16(), *status, "{what}");
        assert_eq!(res.headers()["content-type"], "application/json", "{what}");
        assert_eq!(res.headers()["cache-control"], "no-store", "{what}");
        if *status == 405 {
            assert_eq!(res.headers()["allow"], "GET, HEAD", "{what}");
        }
        let body: serde_json::Value = res.json().await.unwrap();
        let fields = body.as_object().expect("a JSON object");
        assert_eq!(body["status"], *code, "{what}: {body}");
        assert!(
            body["hint"].as_str().is_some_and(|h| h.len() > 10),
            "{what}: {body}"
        );
        assert!(
            fields.values().all(|v| !v.is_object() && !v.is_array()),
            "{what}: scalars only: {body}"
        );
        if *zero_fields {
            assert_zero_answer_fields(&body, &what);
            assert_eq!(fields.len(), 5, "{what}: {body}");
        } else {
            assert_eq!(fields.len(), 2, "{what}: {body}");
        }
    }
    // HEAD / is the status page's head, not a 405.
    let res = node.client.head(node.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}
