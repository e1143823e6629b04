//! Processes the benchmark runs: release builds of hostie, gateway workers (this same binary in
//! worker mode), and what `/proc` says about them.

use hostie_testkit::node_process::NodeProcess;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The hostie binary exactly as `cargo build --release` makes it, built once per run. Not the
/// bench's own `CARGO_BIN_EXE_hostie`: cargo builds that one with the dev-dependencies'
/// features (tokio's `test-util`, for the paused-time unit tests), so it is not the binary that
/// ships.
pub(crate) fn release_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // Its own target directory: built into `target/release` beside the bench (whose
        // dependencies have the dev-dependencies' features), each build would undo the other's
        // and every `cargo bench` would compile the dependencies twice.
        let built = escargot::CargoBuild::new()
            .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .target_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-node"))
            .bin("hostie")
            .release()
            .arg("--locked")
            .run()
            .expect("cargo build --release --bin hostie");
        built.path().to_path_buf()
    })
}

/// A hostie node process (the release binary, see [`release_binary`]).
pub(crate) struct Hostie(NodeProcess);

impl std::ops::Deref for Hostie {
    type Target = NodeProcess;

    fn deref(&self) -> &NodeProcess {
        &self.0
    }
}

impl Hostie {
    /// A node of the cluster on `redis_url` under `prefix`, ready when returned.
    pub(crate) async fn spawn(redis_url: &str, prefix: &str, name: &str) -> Self {
        Self::spawn_with(redis_url, prefix, name, &[], None).await
    }

    /// [`Hostie::spawn`] with more flags, on fixed loopback ports (public, admin) when given.
    pub(crate) async fn spawn_with(
        redis_url: &str,
        prefix: &str,
        name: &str,
        extra: &[&str],
        ports: Option<(u16, u16)>,
    ) -> Self {
        Self::spawn_binary(release_binary(), redis_url, prefix, name, extra, ports).await
    }

    /// [`Hostie::spawn_with`] of another hostie binary (a before/after comparison).
    pub(crate) async fn spawn_binary(
        binary: &Path,
        redis_url: &str,
        prefix: &str,
        name: &str,
        extra: &[&str],
        ports: Option<(u16, u16)>,
    ) -> Self {
        let mut command = NodeProcess::command(binary);
        if let Some((http, admin)) = ports {
            command = command.ports(http, admin);
        }
        // Unless `extra` sets its own.
        let max_sessions: &[&str] = if extra.contains(&"--max-sessions") {
            &[]
        } else {
            &["--max-sessions", "25000"]
        };
        let node = command
            .args(["--redis-url", redis_url, "--redis-prefix", prefix])
            .args([
                "--node-id",
                name,
                "--discovery-rate",
                "0",
                // Every simulated gateway connects from 127.0.0.1.
                "--max-sessions-per-source",
                "0",
            ])
            .args(max_sessions)
            .args(["--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .spawn()
            .await;
        Self(node)
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// utime + stime, in clock ticks.
    pub(crate) fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.pid())
    }

    /// Context switches of all its threads so far: voluntary (a thread slept and was woken) and
    /// not (preempted).
    pub(crate) fn switches(&self) -> u64 {
        context_switches(self.pid())
    }

    pub(crate) fn kill9(&mut self) {
        self.0.kill9();
    }

    /// SIGTERM (drain), then waits for the exit; whether it exited within `within`.
    pub(crate) async fn drain(&mut self, within: Duration) -> bool {
        self.0.signal(hostie_testkit::node_process::Signal::Term);
        self.0.exited_within(within).await.is_some()
    }
}

/// User + system CPU of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    tick(11) + tick(12)
}

/// Context switches, voluntary and not, summed over a process's threads.
pub(crate) fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// A floor WebSocket server (`floor`), in its own process so that its CPU is its own.
pub(crate) struct FloorServer {
    child: Child,
    pub(crate) addr: SocketAddr,
}

/// Which floor server: the cheapest one, or the same on hostie's stack.
#[derive(Clone, Copy)]
pub(crate) enum Floor {
    Tungstenite,
    Actix,
}

impl FloorServer {
    pub(crate) fn spawn(kind: Floor) -> Self {
        let exe = std::env::current_exe().expect("the bench knows its own path");
        let mode = match kind {
            Floor::Tungstenite => "--ws-floor",
            Floor::Actix => "--ws-floor-actix",
        };
        let mut child = Command::new(exe)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the floor server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the floor server prints its address");
        let addr = line.trim().parse().expect("a socket address");
        Self { child, addr }
    }

    pub(crate) fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.child.id())
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `Slab:` of /proc/meminfo (kernel objects, socket buffers among them), KiB.
pub(crate) fn slab_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second (USER_HZ); 100 on every Linux this runs on.
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// A gateway worker process (this binary with `--gateway-worker`), reporting how many of its
/// sessions are registered.
pub(crate) struct Worker {
    child: Child,
    pub(crate) connected: Arc<AtomicUsize>,
    pub(crate) reconnects: Arc<AtomicUsize>,
    /// `getHostieGrpcPort` requests its gateways answered.
    pub(crate) rpcs: Arc<AtomicUsize>,
}

pub(crate) struct WorkerArgs<'a> {
    pub(crate) addrs: &'a [SocketAddr],
    pub(crate) reconnect_to: &'a [SocketAddr],
    pub(crate) prefix: &'a str,
    pub(crate) from: usize,
    pub(crate) count: usize,
    pub(crate) ping: Duration,
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Worker {
    pub(crate) fn spawn(a: WorkerArgs<'_>) -> Self {
        let exe = std::env::current_exe().expect("the bench knows its own path");
        let mut cmd = Command::new(exe);
        cmd.arg("--gateway-worker")
            .args(["--addrs", &join(a.addrs)])
            .args(["--prefix", a.prefix])
            .args([
                "--from",
                &a.from.to_string(),
                "--count",
                &a.count.to_string(),
            ])
            .args(["--ping-ms", &a.ping.as_millis().to_string()]);
        if !a.reconnect_to.is_empty() {
            cmd.args(["--reconnect-to", &join(a.reconnect_to)]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("a gateway worker starts");
        let connected = Arc::new(AtomicUsize::new(0));
        let reconnects = Arc::new(AtomicUsize::new(0));
        let rpcs = Arc::new(AtomicUsize::new(0));
        let stdout = child.stdout.take().expect("piped stdout");
        let (c, r, q) = (connected.clone(), reconnects.clone(), rpcs.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut parts = line.split_whitespace();
                if let (Some(n), Some(m), Some(k)) = (parts.next(), parts.next(), parts.next()) {
                    c.store(n.parse().unwrap_or(0), Ordering::SeqCst);
                    r.store(m.parse().unwrap_or(0), Ordering::SeqCst);
                    q.store(k.parse().unwrap_or(0), Ordering::SeqCst);
                }
            }
        });
        Self {
            child,
            connected,
            reconnects,
            rpcs,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn connected(&self) -> usize {
        self.connected.load(Ordering::SeqCst)
    }

    pub(crate) fn rpcs(&self) -> usize {
        self.rpcs.load(Ordering::SeqCst)
    }

    pub(crate) fn reconnects(&self) -> usize {
        self.reconnects.load(Ordering::SeqCst)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        reap(&mut self.child, Duration::from_secs(5));
    }
}

/// Waits up to `within` for `child` to exit after it was asked to, then kills it; reaped.
pub(crate) fn reap(child: &mut Child, within: Duration) {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until `workers` report `total` sessions; the time it took, or `None` at `limit`.
pub(crate) fn wait_connected(
    workers: &[&Worker],
    total: usize,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if workers.iter().map(|w| w.connected()).sum::<usize>() >= total {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}
