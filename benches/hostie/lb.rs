//! nginx on loopback in front of the scaling run's nodes, as in the Compose topology
//! (`deploy/compose/nginx.conf`): gateways whose node went away reconnect through it, and
//! discoveries during a rolling restart go through it.
//!
//! The upstream list is fixed (every node's public port, reserved before the nodes start), so
//! a node restarted on its ports is found again without a reload. nginx holds two sockets per
//! proxied WebSocket and a process has at most ≈ 19,900 here, so it runs eight worker
//! processes, each with its own limit (36,000 proxied sessions in all), and `reuseport` deals
//! the connections out evenly among them.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Nginx {
    child: Child,
    pub(crate) addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// nginx's log of the discoveries it took 2 s or more over.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SlowRequests {
    /// Requests logged.
    pub(crate) count: usize,
    /// Of them, those whose upstreams (all tries together) took 2 s or more: the time went to
    /// the nodes (or the connection to them).
    pub(crate) upstream: usize,
    /// Of them, those that tried more than one node.
    pub(crate) retried: usize,
    /// The longest time nginx held a request beyond what its upstreams took, seconds.
    pub(crate) max_own: f64,
}

impl SlowRequests {
    /// Lines of `request_time|connect times|response times|addresses|status`, where the
    /// upstream fields list each try, `, `-separated (`-` for a try without a time).
    fn parse(log: &str) -> Self {
        let secs = |field: &str| -> f64 {
            field
                .split([',', ':'])
                .filter_map(|t| t.trim().parse::<f64>().ok())
                .sum()
        };
        let mut out = Self::default();
        for line in log.lines() {
            let f: Vec<&str> = line.split('|').collect();
            let [total, _, response, addrs, _] = f[..] else {
                continue;
            };
            let Ok(total) = total.parse::<f64>() else {
                continue;
            };
            let upstream = secs(response);
            out.count += 1;
            out.upstream += usize::from(upstream >= 2.0);
            out.retried += usize::from(addrs.contains(','));
            out.max_own = out.max_own.max(total - upstream);
        }
        out
    }
}

/// Fails with how to install nginx when it is missing.
fn require() -> String {
    for candidate in ["nginx", "/usr/sbin/nginx"] {
        if Command::new(candidate)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return candidate.to_owned();
        }
    }
    panic!(
        "nginx not found: the scaling run's load balancer needs it; install it with \
         `apt-get install nginx` (scripts/test installs it when missing)"
    );
}

fn config(dir: &std::path::Path, port: u16, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams
        .iter()
        // Unlike Compose (`max_fails=1 fail_timeout=5s`), a node that refused is not skipped
        // afterwards: each of nginx's workers keeps its own failure marks, and with nodes
        // restarted one after the other every few seconds (the smoke run has two) a worker
        // marked all of them and answered 502 "no live upstreams" (measured: 23,000 of
        // 127,000 answers). Every request still tries another node when one refuses.
        .map(|a| format!("    server {a} max_fails=0;\n"))
        .collect();
    let d = dir.display();
    format!(
        r#"daemon off;
master_process on;
worker_processes 8;
worker_rlimit_nofile 19000;
error_log {d}/error.log error;
pid {d}/nginx.pid;
events {{
  worker_connections 9000;
}}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  map $http_upgrade $connection_upgrade {{
    default upgrade;
    ''      '';
  }}
  # Discoveries nginx itself took 2 s or more over, with the time its upstreams took (each try's),
  # to tell nginx's own delays from the nodes' (see `Nginx::slow`).
  map $request_time $slow {{
    ~^[01]\. 0;
    default 1;
  }}
  log_format slow '$request_time|$upstream_connect_time|$upstream_response_time|$upstream_addr|$status';
  upstream hostie {{
    least_conn;
{servers}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096 reuseport;
    proxy_http_version 1.1;
    location /v0/websocket {{
      proxy_pass http://hostie;
      proxy_set_header Host $http_host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
      proxy_buffering off;
      proxy_connect_timeout 2s;
      # Every node once if need be: with least_conn, the nodes that refuse (full, draining or
      # gone) hold the fewest of nginx's connections and are tried first, so three tries met
      # only refusals once three nodes were full (measured: 21,000 gateways still refused 120 s
      # after a rolling update, while other nodes had room for them).
      proxy_next_upstream error timeout http_502 http_503;
      proxy_next_upstream_tries 0;
    }}
    location / {{
      access_log {d}/slow.log slow if=$slow;
      proxy_pass http://hostie;
      proxy_set_header Host $http_host;
      proxy_set_header Connection "";
      proxy_connect_timeout 2s;
      proxy_read_timeout 10s;
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 2;
    }}
    location = /healthz {{
      return 200 "ok\n";
    }}
  }}
}}
"#
    )
}

impl Nginx {
    /// nginx on a free loopback port in front of `upstreams`; answering when returned.
    pub(crate) fn start(upstreams: &[SocketAddr]) -> Self {
        let bin = require();
        let dir = tempfile::tempdir().expect("a directory for nginx");
        let port = hostie_testkit::free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), port, upstreams)).expect("nginx.conf written");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let addr = hostie_testkit::loopback(port);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < end,
                "nginx did not listen on {addr}; its error log: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, addr, dir }
    }

    /// The discoveries nginx took 2 s or more over, so far.
    pub(crate) fn slow(&self) -> SlowRequests {
        SlowRequests::parse(
            &std::fs::read_to_string(self.dir.path().join("slow.log")).unwrap_or_default(),
        )
    }

    /// The master and its workers' CPU, clock ticks.
    pub(crate) fn cpu_ticks(&self) -> u64 {
        let master = self.child.id();
        let mut ticks = crate::procs::cpu_ticks(master);
        for pid in children(master) {
            ticks += crate::procs::cpu_ticks(pid);
        }
        ticks
    }
}

/// The processes whose parent is `pid` (from `/proc/<pid>/task/*/children`).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT is nginx's graceful stop; SIGKILL of the master leaves the workers, so
        // SIGTERM (fast shutdown: the master stops its workers), then reap.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        crate::procs::reap(&mut self.child, Duration::from_secs(5));
    }
}
