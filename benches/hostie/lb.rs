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
    _dir: tempfile::TempDir,
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
      proxy_next_upstream error timeout http_502 http_503;
      proxy_next_upstream_tries 3;
    }}
    location / {{
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
        Self {
            child,
            addr,
            _dir: dir,
        }
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
