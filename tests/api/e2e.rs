//! End-to-end with the real npm clients (docs/protocol.md §4): wechaty's own `Io` registers over
//! `ws://`, wechaty-token discovers over `https://` with a certificate made here.

use crate::helpers::*;
use crate::tls::{TestCert, spawn_tls_node};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn e2e_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    assert!(
        dir.join("node_modules/wechaty/package.json").exists()
            && dir.join("node_modules/wechaty-token/package.json").exists(),
        "the real wechaty clients are not installed: run scripts/test, or \
         `cd tests/e2e && npm ci --ignore-scripts` (needs Node.js and npm: apt-get install nodejs npm)"
    );
    dir
}

fn node_cmd(script: &str) -> Command {
    let dir = e2e_dir();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .env("WECHATY_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

/// A real `Io` registration, alive until dropped or `stop`ped.
struct RealGateway {
    child: Child,
}

impl RealGateway {
    async fn start(http_port: u16, token: &str, service_port: Option<u16>) -> Self {
        let mut cmd = node_cmd("register.mjs");
        cmd.args([
            "--apihost",
            &format!("127.0.0.1:{http_port}"),
            "--token",
            token,
        ]);
        if let Some(p) = service_port {
            cmd.args(["--service-port", &p.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs (apt-get install nodejs npm)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("register.mjs is READY within 30 s")
            .unwrap();
        assert_eq!(first.as_deref(), Some("READY"));
        Self { child }
    }

    /// `Io.stop()`: closes without a code.
    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("register.mjs exits after stdin EOF")
            .unwrap();
        assert!(status.success());
    }
}

async fn real_discover(cert: &TestCert, tls_port: u16, token: &str) -> Value {
    let out = node_cmd("discover.mjs")
        .args([
            "--authority",
            &format!("127.0.0.1:{tls_port}"),
            "--token",
            token,
        ])
        .env("NODE_EXTRA_CA_CERTS", cert.cert_path())
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("node runs");
    assert!(out.status.success(), "discover.mjs failed");
    serde_json::from_slice(&out.stdout).expect("discover.mjs prints one JSON line")
}

#[tokio::test]
async fn real_io_registers_and_real_wechaty_token_discovers() {
    let cert = TestCert::new();
    let node = spawn_tls_node(&cert).await;
    let tls_port = node.tls.unwrap().port();
    let t = token("e2e");
    let gw = RealGateway::start(node.http.port(), &t, Some(18789)).await;

    let found = real_discover(&cert, tls_port, &t).await;
    assert_eq!(found["host"], "127.0.0.1", "{found}");
    assert_eq!(found["port"], 18789, "{found}");
    assert_eq!(
        node.metric("hostie_discoveries_total{outcome=\"hit\"}")
            .await,
        1.0,
        "the port came from the real client's JSON-RPC answer"
    );

    let missing = real_discover(&cert, tls_port, &token("nobody")).await;
    assert_eq!(missing, Value::Null, "a not-found token gives undefined");
    // wechaty-token also resolves undefined on 5xx and network errors: prove it was a real 404.
    assert_eq!(
        node.metric("hostie_discoveries_total{outcome=\"miss\"}")
            .await,
        1.0
    );

    gw.stop().await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            node.node.live_sessions() == 0
        })
        .await
    );
    assert_eq!(real_discover(&cert, tls_port, &t).await, Value::Null);
}

#[tokio::test]
async fn real_io_without_a_service_port_is_answered_8788_without_waiting() {
    let cert = TestCert::new();
    let node = spawn_tls_node(&cert).await;
    let t = token("e2e_ioToken");
    let gw = RealGateway::start(node.http.port(), &t, None).await;
    let started = std::time::Instant::now();
    let (status, body) = node.discover(&t).await;
    assert_eq!((status, body["port"].as_u64()), (200, Some(8788)));
    assert!(started.elapsed() < Duration::from_millis(300));
    let found = real_discover(&cert, node.tls.unwrap().port(), &t).await;
    assert_eq!(found["port"], 8788, "{found}");
    gw.stop().await;
}
