//! The real `hostie` binary as a child process, for what only a process can show: SIGKILL,
//! SIGTERM, exit codes and logs.

use crate::helpers::{eventually, free_port, init};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// The real `hostie` binary as a child process (for SIGKILL and SIGTERM), ready when returned.
pub struct ProcessNode {
    pub child: std::process::Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

impl ProcessNode {
    pub async fn spawn(args: &[&str]) -> Self {
        init();
        let (http, admin) = (free_port(), free_port());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hostie"))
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--log-format", "json", "--workers", "1"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the hostie binary starts");
        let node = Self {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        };
        let ready = eventually(Duration::from_secs(10), || node.readyz_status_is(200)).await;
        assert!(ready, "the hostie process became ready");
        node
    }

    pub async fn readyz_status_is(&self, status: u16) -> bool {
        reqwest::get(format!("http://{}/readyz", self.admin))
            .await
            .is_ok_and(|r| r.status().as_u16() == status)
    }

    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {signal} delivered");
    }

    /// Waits for the process to exit; its exit status.
    pub async fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything the process logged to stdout (after it exited).
    pub fn logs(&mut self) -> String {
        let mut logs = String::new();
        if let Some(out) = self.child.stdout.as_mut() {
            std::io::Read::read_to_string(out, &mut logs).unwrap();
        }
        logs
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /v0/hosties/{token}` on any address; status, body and how long it took.
pub async fn discover_at(addr: SocketAddr, token: &str) -> (u16, Value, Duration) {
    let started = std::time::Instant::now();
    let res = reqwest::get(format!("http://{addr}/v0/hosties/{token}"))
        .await
        .expect("discovery request reaches the node");
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}
