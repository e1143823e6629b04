//! Probes, metrics, the status page, drain, and the real binary's interface.

use crate::helpers::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn probes_and_status_page() {
    let node = spawn_node(test_config()).await;
    assert_eq!(node.admin_get("/livez").await.0, 200);
    let (status, body) = node.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["checks"]["registry"], "ok");
    assert_eq!(v["checks"]["bus"], "ok");
    assert_eq!(v["checks"]["draining"], false);
    assert_eq!(v["checks"]["trusted"], true);
    let _gw = Gateway::connect(node.http, GatewayOptions::new(&token("page"), 1))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || async {
            node.node.live_sessions() == 1
        })
        .await
    );
    let page = node.client.get(node.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(env!("CARGO_PKG_VERSION")), "{html}");
    assert!(html.contains(&node.node.id().0), "{html}");
    assert!(html.contains("<span id=\"sessions\">1</span>"), "{html}");
}

#[tokio::test]
async fn metrics_expose_the_documented_series() {
    let node = spawn_node(test_config()).await;
    let (status, text) = node.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "hostie_sessions ",
        "hostie_max_sessions 20000",
        "hostie_registrations_total{result=\"accepted\"}",
        "hostie_session_closes_total{reason=\"drain\"}",
        "hostie_discoveries_total{outcome=\"hit\"}",
        "hostie_discoveries_total{outcome=\"miss\"}",
        "hostie_discoveries_total{outcome=\"fallback\"}",
        "hostie_discoveries_total{outcome=\"timeout\"}",
        "hostie_discoveries_total{outcome=\"error\"}",
        "hostie_discovery_duration_seconds_bucket{outcome=\"hit\",le=\"0.001\"}",
        "hostie_rpc_duration_seconds_bucket{result=\"ok\",le=\"0.001\"}",
        "hostie_build_info{version=",
        "hostie_tls_reloads_total{result=\"ok\"} 0",
        "hostie_tls_reloads_total{result=\"error\"} 0",
        "hostie_ready 1",
        "hostie_forwarding_headers_ignored_total 0",
        "hostie_untrusted_proxies 0",
        "hostie_peers_unsettled 0",
    ] {
        assert!(text.contains(name), "missing {name} in:\n{text}");
    }
}

#[tokio::test]
async fn metrics_never_carry_tokens_or_client_ids() {
    let node = spawn_node(test_config()).await;
    let t = token("secret");
    let _gw = Gateway::connect(
        node.http,
        GatewayOptions::new(&t, 1).subprotocol("io|0.0.1|client-id-xyz||1"),
    )
    .await
    .unwrap();
    node.discover(&t).await;
    let (_, text) = node.admin_get("/metrics").await;
    assert!(!text.contains(&t));
    assert!(!text.contains("client-id-xyz"));
}

#[tokio::test]
async fn drain_fails_readiness_refuses_upgrades_and_closes_sessions_with_1001() {
    let mut config = test_config();
    config.drain_spread = Duration::from_millis(600);
    config.drain_grace = Duration::from_secs(3);
    let mut node = spawn_node(config).await;
    let mut gateways = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..4 {
        let t = token(&format!("drain{i}"));
        gateways.push(
            Gateway::connect(node.http, GatewayOptions::new(&t, 1))
                .await
                .unwrap(),
        );
        tokens.push(t);
    }
    assert_eq!(
        node.metric("hostie_ready").await,
        1.0,
        "ready before the drain"
    );
    let started = Instant::now();
    node.trigger_shutdown();
    assert!(
        eventually(Duration::from_secs(1), || async {
            node.admin_get("/readyz").await.0 == 503
        })
        .await,
        "readiness fails within 1 s"
    );
    let (_, body) = node.admin_get("/readyz").await;
    assert!(body.contains("\"draining\":true"), "{body}");
    // The gauge is the same verdict, whoever asked /readyz last.
    assert_eq!(
        node.metric("hostie_ready").await,
        0.0,
        "unready while draining"
    );
    // Its tokens are gone from discovery at once (records removed before the closes).
    let (status, _) = node.discover(&tokens[3]).await;
    assert_eq!(status, 404);
    // New upgrades are refused while draining.
    let refused = Gateway::connect(node.http, GatewayOptions::new(&token("late"), 1))
        .await
        .err()
        .expect("no upgrades while draining");
    assert_eq!(refused.status, 503);
    let refusal: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(refusal["status"], "draining", "{refusal}");
    let mut close_times = Vec::new();
    for gw in &gateways {
        assert_eq!(
            gw.closed_within(Duration::from_secs(3)).await,
            Some(Some(1001))
        );
        close_times.push(started.elapsed());
    }
    assert!(
        close_times.last().unwrap() >= &Duration::from_millis(300),
        "closes are spread over the drain spread: {close_times:?}"
    );
    node.stop().await;
}

fn hostie_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hostie"))
}

#[test]
fn bad_flags_stop_the_binary_with_one_line_naming_the_flag() {
    for (args, flag) in [
        (&["--rpc-timeout", "soon"][..], "--rpc-timeout"),
        (&["--fallback-port", "0"][..], "--fallback-port"),
        (
            &["--trusted-proxies", "not-a-cidr"][..],
            "--trusted-proxies",
        ),
        (&["--listen", "nowhere:1"][..], "--listen"),
        (&["--tls-cert", "/nonexistent.pem"][..], "--tls-key"),
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--session-order", "random"][..], "--session-order"),
        (
            &["--max-sessions-per-source", "lots"][..],
            "--max-sessions-per-source",
        ),
        (&["--redis-timeout", "5s"][..], "--redis-timeout"),
    ] {
        let out = hostie_bin().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    let out = hostie_bin()
        .env("HOSTIE_RPC_TIMEOUT", "whenever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rpc-timeout"));
}

#[test]
fn unreadable_tls_files_stop_the_binary_naming_the_flag() {
    let out = hostie_bin()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--tls-listen", "127.0.0.1:0"])
        .args([
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}

#[tokio::test]
async fn sigterm_drains_the_real_process() {
    let mut node = spawn_process(&["--drain-spread", "100ms", "--drain-grace", "3s"]).await;
    let gw = Gateway::connect(node.http, GatewayOptions::new(&token("proc"), 1))
        .await
        .unwrap();
    node.signal(Signal::Term);
    assert_eq!(
        gw.closed_within(Duration::from_secs(3)).await,
        Some(Some(1001))
    );
    let status = node.exited_within(Duration::from_secs(5)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the process exits 0 after draining"
    );
    let logs = node.logs();
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{logs}"
    );
    assert!(logs.contains("\"drained\""), "{logs}");
    assert!(
        !logs.contains("insecure_proc_"),
        "logs never carry raw tokens"
    );
}

/// With debug logs on, one discovery and one session can be followed by their spans, which name
/// the node and the short token hash, and never the token.
#[tokio::test]
async fn debug_logs_follow_a_discovery_and_a_session_by_their_spans() {
    init();
    let mut node = NodeProcess::command(env!("CARGO_BIN_EXE_hostie"))
        .args([
            "--log-format",
            "json",
            "--workers",
            "1",
            "--node-id",
            "spanned",
        ])
        .env("RUST_LOG", "info,hostie=debug")
        .capture_logs()
        .spawn()
        .await;
    let t = token("spans");
    let short = hostie::protocol::Token::new(t.clone())
        .expect("a non-empty token")
        .hash()
        .to_string();
    let gw = Gateway::connect(node.http, GatewayOptions::new(&t, 18789))
        .await
        .unwrap();
    assert_eq!(discover_at(node.http, &t).await.0, 200);
    drop(gw);
    node.signal(Signal::Term);
    assert!(node.exited_within(Duration::from_secs(10)).await.is_some());
    let logs = node.logs();
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    let in_span = |message: &str, span: &str| {
        events
            .iter()
            .find(|e| e["message"] == message && e["span"]["name"] == span)
    };
    let discovered = in_span("discovered", "discover").unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(discovered["span"]["node"], "spanned");
    assert_eq!(discovered["span"]["token"], short.as_str());
    assert_eq!(discovered["outcome"], "hit");
    let closed = in_span("session closed", "session").unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(closed["span"]["node"], "spanned");
    assert_eq!(closed["span"]["token"], short.as_str());
    assert_eq!(short.len(), 8, "the short hash: 8 hex digits");
    assert!(!logs.contains(&t), "logs never carry raw tokens");
}

/// The real binary started through `sh` with `limits` (`ulimit` arguments) applied first, its
/// warnings captured when `logs` (read once it exited).
async fn spawn_with_ulimit(
    limits: &str,
    args: &[&str],
    logs: bool,
) -> (NodeProcess, tempfile::TempDir) {
    init();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hostie.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nulimit {limits} || exit 97\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_hostie")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut command = NodeProcess::command(&script)
        .args(["--log-format", "json", "--workers", "1"])
        .args(args)
        // Whatever the developer's RUST_LOG: warnings, and nothing that fills the pipe.
        .env("RUST_LOG", "warn");
    if logs {
        command = command.capture_logs();
    }
    let node = command.spawn().await;
    (node, dir)
}

/// `Max open files` of a process: (soft, hard).
fn open_files_limit(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    // "Max open files  <soft>  <hard>  files"; a limit may read "unlimited".
    let value = |w: &str| {
        if w == "unlimited" {
            u64::MAX
        } else {
            w.parse().unwrap_or_else(|_| panic!("a limit in {line:?}"))
        }
    };
    let v: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (value(v[0]), value(v[1]))
}

async fn max_sessions_metric(node: &NodeProcess) -> String {
    let text = reqwest::get(format!("http://{}/metrics", node.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("hostie_max_sessions "))
        .expect("the hostie_max_sessions series")
        .to_owned()
}

/// A soft open-file limit of 1,024 (containerd 2.x's default for containers) is raised to the
/// hard limit, and the node keeps its `--max-sessions`.
#[tokio::test]
async fn a_low_soft_open_file_limit_is_raised_at_start() {
    let (node, _dir) = spawn_with_ulimit("-Sn 1024", &["--max-sessions", "5000"], false).await;
    let (soft, hard) = open_files_limit(node.pid());
    assert!(
        hard >= 5_000 + hostie::fd_limit::RESERVE,
        "this test needs a hard limit ≥ 5,256; it is {hard}"
    );
    assert_eq!(soft, hard);
    assert_eq!(max_sessions_metric(&node).await, "hostie_max_sessions 5000");
}

/// With a hard limit below `--max-sessions`, the node accepts fewer sessions (so that a full
/// node still answers, with a 503) and says why once.
#[tokio::test]
async fn a_hard_open_file_limit_below_max_sessions_lowers_it_with_a_warning() {
    let (mut node, _dir) = spawn_with_ulimit("-n 1000", &["--max-sessions", "5000"], true).await;
    assert_eq!(open_files_limit(node.pid()), (1_000, 1_000));
    let expected = 1_000 - hostie::fd_limit::RESERVE;
    assert_eq!(
        max_sessions_metric(&node).await,
        format!("hostie_max_sessions {expected}")
    );
    node.signal(Signal::Term);
    assert!(node.exited_within(Duration::from_secs(10)).await.is_some());
    let logs = node.logs();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("open-file limit is too low"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains("\"WARN\""), "{}", warnings[0]);
    assert!(
        warnings[0].contains(&format!("\"max_sessions\":{expected}")),
        "{}",
        warnings[0]
    );
}

/// A discovery whose handler is held past the deadline (here: its process stopped while the
/// discovery waits for a silent gateway) is counted in `hostie_discovery_overruns_total`, the
/// series the "discoveries past their deadline" alert reads; an ordinary one is not.
#[tokio::test]
async fn a_discovery_held_past_its_deadline_is_counted_as_an_overrun() {
    let node = spawn_process(&["--rpc-timeout", "1s"]).await;
    let overruns = || async {
        reqwest::get(format!("http://{}/metrics", node.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("hostie_discovery_overruns_total "))
            .expect("the hostie_discovery_overruns_total series")
            .trim()
            .to_owned()
    };
    let (quick, t) = (token("in-time"), token("overrun"));
    let mut gateways = Vec::new();
    for (t, behavior) in [(&quick, Behavior::Silent), (&t, Behavior::Silent)] {
        gateways.push(
            Gateway::connect(node.http, GatewayOptions::new(t, 1).behavior(behavior))
                .await
                .unwrap(),
        );
    }
    let (status, _, took) = discover_at(node.http, &quick).await;
    assert_eq!(status, 200, "the fallback port, at the deadline");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(overruns().await, "0");
    // Stopped 200 ms into a discovery that waits for the gateway until the deadline: the
    // handler resumes 1.5 s later, past it.
    let slow = tokio::spawn(async move { discover_at(node.http, &t).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.signal(Signal::Stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.signal(Signal::Cont);
    let (status, _, took) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert!(took > Duration::from_secs(1), "{took:?}");
    assert_eq!(overruns().await, "1");
}
