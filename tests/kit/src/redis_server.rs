//! A real `redis-server` per test (or benchmark run), on a free loopback port, killed when
//! dropped. Never mocked; a machine without it fails loudly saying how to install it, never
//! skips.
//!
//! Besides stop and restart, it puts the faults a production Redis shows on demand: frozen
//! ([`RedisServer::signal`] with SIGSTOP), clients paused ([`RedisServer::pause`]), out of
//! memory ([`RedisServer::fill_to_maxmemory`]) and read-only ([`RedisServer::read_only`]).
//! Every method here blocks the calling thread (it runs `redis-cli` or `kill`): in an async
//! test, call them inside `tokio::task::block_in_place`. A frozen server answers no
//! `redis-cli` until it is sent SIGCONT.

use crate::free_port;
use crate::node_process::{Signal, send_signal};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key [`RedisServer::fill_to_maxmemory`] grows and [`RedisServer::read_only`] probes.
pub const FILLER_KEY: &str = "hostie-testkit:filler";

/// A running `redis-server`, empty, persisting nothing.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The server binary every test Redis runs: `redis-server`, or the one named by
/// `HOSTIE_TEST_REDIS_SERVER` (`valkey-server`: the same tests against Valkey, see
/// scripts/test). Clients stay `redis-cli`, which speaks to both.
pub fn server_binary() -> String {
    std::env::var("HOSTIE_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
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
        require(&server_binary());
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
        let child = Command::new(server_binary())
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

    /// The server's process id; panics when it is stopped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` to the server (SIGSTOP freezes it with every connection open, SIGCONT
    /// thaws it). [`Signal::Kill`] leaves it for [`RedisServer::stop`] to reap.
    pub fn signal(&self, signal: Signal) {
        send_signal(self.pid(), signal);
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

    /// Starts a stopped server again, empty, on the same port; ready when returned.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is stopped first");
        self.spawn();
    }

    /// `CLIENT PAUSE ms WRITE` (`all == false`: reads and PUBLISH still answered, every write
    /// and script waits) or `CLIENT PAUSE ms ALL` (every command waits). The pause ends by
    /// itself after `ms`; during `ALL` even `CLIENT UNPAUSE` waits for it.
    pub fn pause(&self, ms: u64, all: bool) {
        let mode = if all { "ALL" } else { "WRITE" };
        let out = self.cli(&["CLIENT", "PAUSE", &ms.to_string(), mode]);
        assert_eq!(out.trim(), "OK", "CLIENT PAUSE {ms} {mode}: {out}");
    }

    /// `CLIENT UNPAUSE`.
    pub fn unpause(&self) {
        let out = self.cli(&["CLIENT", "UNPAUSE"]);
        assert_eq!(out.trim(), "OK", "CLIENT UNPAUSE: {out}");
    }

    /// `used_memory` from `INFO memory`, in bytes.
    pub fn used_memory(&self) -> u64 {
        let info = self.cli(&["INFO", "memory"]);
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO memory has used_memory: {info}"))
    }

    /// Out of memory: `maxmemory` just above the memory in use with `noeviction`, then a
    /// filler key (`FILLER_KEY`, outside every test prefix) grown until Redis refuses a write
    /// with OOM. Reads, `PUBLISH` and deletes still work; every write and writing script is
    /// refused. Returns the limit. Undo with [`RedisServer::lift_maxmemory`].
    pub fn fill_to_maxmemory(&self) -> u64 {
        let limit = self.used_memory() + 256 * 1024;
        self.config_set("maxmemory-policy", "noeviction");
        self.config_set("maxmemory", &limit.to_string());
        let mut size = 64 * 1024;
        loop {
            let out = self.cli(&["SETRANGE", FILLER_KEY, &size.to_string(), "x"]);
            if out.starts_with("OOM") {
                return limit;
            }
            assert!(
                size < 64 << 20,
                "Redis never refused a write under maxmemory {limit}: {out}"
            );
            size *= 2;
        }
    }

    /// Lifts the memory limit (`maxmemory 0`) and deletes the filler.
    pub fn lift_maxmemory(&self) {
        self.config_set("maxmemory", "0");
        self.cli(&["DEL", FILLER_KEY]);
    }

    fn config_set(&self, name: &str, value: &str) {
        let out = self.cli(&["CONFIG", "SET", name, value]);
        assert_eq!(out.trim(), "OK", "CONFIG SET {name} {value}: {out}");
    }

    /// Read-only with its data kept: `REPLICAOF` a loopback port nobody listens on (a replica
    /// whose master is unreachable keeps its data and refuses writes with `READONLY`). Undo
    /// with [`RedisServer::writable`].
    pub fn read_only(&self) {
        let out = self.cli(&["REPLICAOF", "127.0.0.1", &free_port().to_string()]);
        assert!(out.trim().starts_with("OK"), "REPLICAOF: {out}");
        let probe = self.cli(&["SET", FILLER_KEY, "x"]);
        assert!(probe.starts_with("READONLY"), "writes refused: {probe}");
    }

    /// `REPLICAOF NO ONE`: a writable master again, data kept.
    pub fn writable(&self) {
        let out = self.cli(&["REPLICAOF", "NO", "ONE"]);
        assert_eq!(out.trim(), "OK", "REPLICAOF NO ONE: {out}");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Sends one inline command on a new connection.
    fn send(server: &RedisServer, command: &str) -> TcpStream {
        let mut s = TcpStream::connect(crate::loopback(server.port)).unwrap();
        s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
        s
    }

    /// The first reply line within `within`, or `None`.
    fn reply_within(s: &mut TcpStream, within: Duration) -> Option<String> {
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).trim().to_owned()),
            _ => None,
        }
    }

    const QUIET: Duration = Duration::from_millis(300);

    #[test]
    fn a_frozen_server_answers_nothing_until_thawed() {
        let server = RedisServer::start();
        server.signal(Signal::Stop);
        let mut s = send(&server, "PING");
        let frozen = reply_within(&mut s, QUIET);
        server.signal(Signal::Cont);
        assert_eq!(frozen, None);
        assert_eq!(
            reply_within(&mut s, Duration::from_secs(2)).as_deref(),
            Some("+PONG")
        );
    }

    #[test]
    fn paused_writes_wait_while_reads_answer() {
        let server = RedisServer::start();
        server.pause(1_000, false);
        let mut read = send(&server, "GET a");
        assert_eq!(reply_within(&mut read, QUIET).as_deref(), Some("$-1"));
        let mut write = send(&server, "SET a 1");
        assert_eq!(reply_within(&mut write, QUIET), None);
        assert_eq!(
            reply_within(&mut write, Duration::from_secs(2)).as_deref(),
            Some("+OK")
        );

        server.pause(1_000, true);
        let mut read = send(&server, "GET a");
        assert_eq!(reply_within(&mut read, QUIET), None);
        assert_eq!(
            reply_within(&mut read, Duration::from_secs(2)).as_deref(),
            Some("$1\r\n1")
        );
        server.pause(60_000, false);
        server.unpause();
        let mut write = send(&server, "SET a 2");
        assert_eq!(reply_within(&mut write, QUIET).as_deref(), Some("+OK"));
    }

    #[test]
    fn out_of_memory_refuses_writes_until_lifted() {
        let server = RedisServer::start();
        server.cli(&["SET", "kept", "1"]);
        let limit = server.fill_to_maxmemory();
        assert!(server.used_memory() > limit);
        assert!(server.cli(&["SET", "a", "1"]).starts_with("OOM"));
        assert_eq!(server.cli(&["GET", "kept"]).trim(), "1");
        server.lift_maxmemory();
        assert_eq!(server.cli(&["SET", "a", "1"]).trim(), "OK");
    }

    #[test]
    fn read_only_keeps_the_data_and_refuses_writes() {
        let server = RedisServer::start();
        server.cli(&["SET", "kept", "1"]);
        server.read_only();
        assert_eq!(server.cli(&["GET", "kept"]).trim(), "1");
        assert!(server.cli(&["SET", "a", "1"]).starts_with("READONLY"));
        server.writable();
        assert_eq!(server.cli(&["SET", "a", "1"]).trim(), "OK");
        assert_eq!(server.cli(&["GET", "kept"]).trim(), "1");
    }

    #[test]
    fn started_again_it_is_empty_on_the_same_port() {
        let mut server = RedisServer::start();
        let port = server.port;
        server.cli(&["SET", "a", "1"]);
        server.stop();
        assert!(!server.is_running());
        assert!(TcpStream::connect(crate::loopback(port)).is_err());
        server.start_again();
        assert_eq!(server.port, port);
        assert_eq!(server.cli(&["GET", "a"]).trim(), "");
    }
}
