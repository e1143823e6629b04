//! The real hostie binary as a child process, for what only a process can show (SIGKILL,
//! SIGTERM, SIGSTOP, exit codes, logs, its own CPU and memory): started on two free loopback
//! ports (`--listen`, `--admin-listen`), ready (`/readyz` answered 200) when returned, killed
//! when dropped.
//!
//! The binary's path is the caller's `env!("CARGO_BIN_EXE_hostie")`: cargo sets it for
//! integration tests and benchmarks of the hostie package, not for this crate.

use crate::loopback;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a node may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A signal for [`NodeProcess::signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: drain, then exit.
    Term,
    /// SIGKILL: gone at once, nothing cleaned up.
    Kill,
    /// SIGSTOP: frozen (a hung node), sockets still open.
    Stop,
    /// SIGCONT: thawed after [`Signal::Stop`].
    Cont,
}

impl Signal {
    fn flag(self) -> &'static str {
        match self {
            Self::Term => "-TERM",
            Self::Kill => "-KILL",
            Self::Stop => "-STOP",
            Self::Cont => "-CONT",
        }
    }
}

/// Sends `signal` to process `pid` with `kill(1)` (the kit forbids `unsafe`, so no `libc`);
/// panics when it was not delivered.
pub fn send_signal(pid: u32, signal: Signal) {
    let ok = Command::new("kill")
        .args([signal.flag(), &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {} {pid} delivered", signal.flag());
}

/// How to start a node: [`NodeProcess::command`], then [`NodeCommand::spawn`].
#[derive(Debug, Clone)]
pub struct NodeCommand {
    bin: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    capture_logs: bool,
    log_file: Option<PathBuf>,
    ports: Option<(u16, u16)>,
}

impl NodeCommand {
    /// Listens on these loopback ports (public, admin) instead of two free ones: a node
    /// restarted where a load balancer's fixed upstream list expects it.
    pub fn ports(mut self, http: u16, admin: u16) -> Self {
        self.ports = Some((http, admin));
        self
    }

    /// Flags after `--listen` and `--admin-listen`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Keeps stdout for [`NodeProcess::logs`] (otherwise discarded). Read it only after the
    /// process exited; a node logging more than a pipe holds blocks until then.
    pub fn capture_logs(mut self) -> Self {
        self.capture_logs = true;
        self
    }

    /// Writes stdout to the file `path` (created or truncated) instead: a node that logs a lot
    /// while it runs (a fault, churn) never blocks on a full pipe. [`NodeProcess::logs`] then
    /// returns nothing; read the file.
    pub fn log_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Starts the node and waits until `/readyz` answers 200; panics after 10 s.
    pub async fn spawn(self) -> NodeProcess {
        let (http, admin) = self
            .ports
            .unwrap_or_else(|| (crate::free_port(), crate::free_port()));
        let stdout =
            if let Some(path) = &self.log_file {
                Stdio::from(std::fs::File::create(path).unwrap_or_else(|e| {
                    panic!("the node's log file {} opens: {e}", path.display())
                }))
            } else if self.capture_logs {
                Stdio::piped()
            } else {
                Stdio::null()
            };
        let child = Command::new(&self.bin)
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("the hostie binary {} starts: {e}", self.bin.display()));
        let node = NodeProcess {
            child,
            http: loopback(http),
            admin: loopback(admin),
        };
        let end = tokio::time::Instant::now() + READY_WITHIN;
        while node.readyz_status().await != Some(200) {
            if tokio::time::Instant::now() >= end {
                // What /readyz and the log (when it goes to a file) say of why.
                let readyz = match reqwest::get(format!("http://{}/readyz", node.admin)).await {
                    Ok(res) => res.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                let log = self
                    .log_file
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                panic!(
                    "the hostie process did not become ready within {READY_WITHIN:?}; /readyz: \
                     {readyz}; the log's last lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node
    }
}

/// A running hostie node process; killed (SIGKILL) when dropped.
pub struct NodeProcess {
    pub child: Child,
    /// The public listener (registration, discovery).
    pub http: SocketAddr,
    /// The admin listener (`/livez`, `/readyz`, `/metrics`).
    pub admin: SocketAddr,
}

impl NodeProcess {
    /// A node from the binary at `bin`.
    pub fn command(bin: impl Into<PathBuf>) -> NodeCommand {
        NodeCommand {
            bin: bin.into(),
            args: Vec::new(),
            envs: Vec::new(),
            capture_logs: false,
            log_file: None,
            ports: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The status of `GET /readyz` on the admin listener; `None` when it does not answer.
    pub async fn readyz_status(&self) -> Option<u16> {
        http_status(self.admin, "/readyz").await
    }

    /// Whether `/readyz` answers `status`.
    pub async fn readyz_status_is(&self, status: u16) -> bool {
        self.readyz_status().await == Some(status)
    }

    /// Sends `signal` with `kill(1)`; panics when it was not delivered.
    pub fn signal(&self, signal: Signal) {
        send_signal(self.pid(), signal);
    }

    /// SIGKILL, and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; its exit status.
    pub async fn exited_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let end = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the child") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything the process logged to stdout (read after it exited; needs
    /// [`NodeCommand::capture_logs`]).
    pub fn logs(&mut self) -> String {
        let mut logs = String::new();
        if let Some(out) = self.child.stdout.as_mut() {
            std::io::Read::read_to_string(out, &mut logs).expect("the node's stdout reads");
        }
        logs
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The status of `GET path` on `addr` over HTTP/1.0 (no client library: a probe a few times
/// a second must cost nothing); `None` when nothing answers within a second.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let probe = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        tcp.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut head = Vec::with_capacity(256);
        tcp.read_to_end(&mut head).await.ok()?;
        // `HTTP/1.x 200 …`
        std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
}
