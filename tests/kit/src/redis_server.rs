//! A real `redis-server` per test (or benchmark run), on a free loopback port, killed when
//! dropped. Never mocked; a machine without it fails loudly saying how to install it, never
//! skips.

use crate::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, empty, persisting nothing.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Panics, saying how to install Redis, when `binary` is not on `PATH`.
pub fn require(binary: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(binary).is_file()));
    assert!(
        found,
        "{binary} not found: install Redis with `apt-get install redis-server` \
         (scripts/test installs it when missing)"
    );
}

impl RedisServer {
    /// Starts a server on a free loopback port; ready (it answered `PING`) when returned.
    pub fn start() -> Self {
        require("redis-server");
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        require("redis-cli");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if self
                .try_cli(&["PING"])
                .is_some_and(|out| out.trim() == "PONG")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not answer PING on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (its data is gone: nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again, empty, on the same port.
    pub fn restart_empty(&mut self) {
        self.stop();
        self.spawn();
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `redis-cli` against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        require("redis-cli");
        self.try_cli(args).expect("redis-cli runs")
    }

    /// `redis-cli MONITOR` as a child process writing into `out`.
    pub fn monitor(&self, out: &Path) -> Child {
        require("redis-cli");
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "MONITOR"])
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli starts")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
