//! The Redis topologies the cross-node rows run on (one `redis-server`, a Sentinel group, a
//! 3-shard Cluster, all from the test kit), and where the CPU of a measured window goes: each
//! Redis server's own account (`INFO cpu`), the other processes' from `/proc/<pid>/stat`, and
//! the machine's from `/proc/stat`.

use crate::procs::{self, TICKS_PER_SEC};
use hostie_testkit::redis_server::RedisServer;
use hostie_testkit::redis_topology::{RedisCluster, RedisSentinelGroup};
use std::time::Instant;

/// The hostie nodes of a topology are named `a` (holds the sessions) and `b` (asked), under
/// the bench's Redis prefix `bench`: on a Cluster their channels' slots, hence shards, follow.
const NODE_A_CHANNEL: &str = "bench:node:{a}";
const NODE_B_CHANNEL: &str = "bench:node:{b}";
/// The heartbeat set every lookup reads (`ZSCORE`) with the token's hash.
const HEARTBEATS: &str = "bench:nodes";

pub(crate) enum Topology {
    Standalone(RedisServer),
    Sentinel(RedisSentinelGroup),
    Cluster(RedisCluster),
}

/// A Redis server of a topology: its port and what it is, for the report.
#[derive(Clone)]
pub(crate) struct Server {
    pub(crate) port: u16,
    pub(crate) label: String,
}

impl Topology {
    pub(crate) fn standalone() -> Self {
        Self::Standalone(RedisServer::start())
    }

    /// One primary, one replica, three sentinels (the kit waits until they know each other).
    pub(crate) fn sentinel() -> Self {
        Self::Sentinel(tokio::task::block_in_place(RedisSentinelGroup::start))
    }

    /// Three primaries sharing the slots, no replicas.
    pub(crate) fn cluster() -> Self {
        Self::Cluster(tokio::task::block_in_place(|| RedisCluster::start(3, 0)))
    }

    /// How the rows name it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Standalone(_) => "standalone",
            Self::Sentinel(_) => "Sentinel",
            Self::Cluster(_) => "Cluster (3 shards)",
        }
    }

    /// hostie's `--redis-url`.
    pub(crate) fn url(&self) -> String {
        match self {
            Self::Standalone(r) => r.url(),
            Self::Sentinel(g) => g.hostie_url(),
            Self::Cluster(c) => c.hostie_url(),
        }
    }

    /// The servers hostie's data path runs on: the one server, Sentinel's primary, each
    /// Cluster primary (labelled with the node channels and the heartbeat set it holds).
    pub(crate) fn data_servers(&self) -> Vec<Server> {
        tokio::task::block_in_place(|| match self {
            Self::Standalone(r) => vec![Server {
                port: r.port,
                label: "server".into(),
            }],
            Self::Sentinel(g) => vec![Server {
                port: g.primary_port(),
                label: "primary".into(),
            }],
            Self::Cluster(c) => {
                let owner = |key: &str| c.primary_for_slot(c.keyslot(key));
                let holds = [
                    (owner(NODE_A_CHANNEL), "a's channel"),
                    (owner(NODE_B_CHANNEL), "b's channel"),
                    (owner(HEARTBEATS), "heartbeats"),
                ];
                c.primaries()
                    .into_iter()
                    .enumerate()
                    .map(|(i, port)| {
                        let what: Vec<&str> = holds
                            .iter()
                            .filter(|(p, _)| *p == port)
                            .map(|(_, w)| *w)
                            .collect();
                        let label = if what.is_empty() {
                            format!("shard {}", i + 1)
                        } else {
                            format!("shard {} ({})", i + 1, what.join(", "))
                        };
                        Server { port, label }
                    })
                    .collect()
            }
        })
    }

    /// Servers outside the data path whose CPU is reported apart: Sentinel's replica (it
    /// applies what the primary replicates) and its three sentinels.
    pub(crate) fn other_servers(&self) -> Vec<Server> {
        match self {
            Self::Sentinel(g) => {
                let primary = tokio::task::block_in_place(|| g.primary_port());
                let mut servers: Vec<Server> = g
                    .data_ports()
                    .into_iter()
                    .filter(|p| *p != primary)
                    .map(|port| Server {
                        port,
                        label: "replica".into(),
                    })
                    .collect();
                servers.extend(g.sentinel_ports().into_iter().map(|port| Server {
                    port,
                    label: "sentinels".into(),
                }));
                servers
            }
            Self::Standalone(_) | Self::Cluster(_) => Vec::new(),
        }
    }
}

/// `INFO <sections>` of the server on `port`, as `field → value` (`cmdstat_get` →
/// `calls=…,usec=…`).
pub(crate) async fn redis_info(
    port: u16,
    sections: &[&str],
) -> std::collections::HashMap<String, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connects for INFO");
    let info: String = redis::cmd("INFO")
        .arg(sections)
        .query_async(&mut conn)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `INFO cpu` of the server on `port`: `used_cpu_sys + used_cpu_user`, seconds (every thread
/// of the server, as `getrusage` counts them).
pub(crate) async fn redis_cpu_seconds(port: u16) -> f64 {
    let info = redis_info(port, &["cpu"]).await;
    ["used_cpu_sys", "used_cpu_user"]
        .iter()
        .map(|k| {
            info.get(*k)
                .and_then(|v| v.parse::<f64>().ok())
                .expect("INFO cpu: seconds")
        })
        .sum()
}

/// `/proc/stat`'s first line: busy, softirq and all clock ticks of the whole machine.
pub(crate) fn machine_ticks() -> MachineTicks {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let all: u64 = f.iter().take(8).sum();
    MachineTicks {
        busy: all - at(3) - at(4),
        softirq: at(6),
        all,
    }
}

#[derive(Clone, Copy)]
pub(crate) struct MachineTicks {
    pub(crate) busy: u64,
    pub(crate) softirq: u64,
    pub(crate) all: u64,
}

/// A process whose CPU the window reads from `/proc/<pid>/stat`.
pub(crate) struct Proc {
    pub(crate) pid: u32,
    pub(crate) label: &'static str,
}

/// The CPU accounts at the start of a window.
pub(crate) struct CpuWindow {
    data: Vec<(Server, f64)>,
    other: Vec<(Server, f64)>,
    procs: Vec<(Proc, u64)>,
    machine: MachineTicks,
    started: Instant,
}

/// Where the CPU of a window went, µs per answered discovery.
pub(crate) struct CpuSpent {
    /// Per data server (label, µs), in `data_servers` order.
    pub(crate) data: Vec<(String, f64)>,
    /// Per other server group (label, µs).
    pub(crate) other: Vec<(String, f64)>,
    /// Per process read from /proc (label, µs).
    pub(crate) procs: Vec<(String, f64)>,
    /// The whole machine busy (every core), and the softirq part of it, µs.
    pub(crate) machine: f64,
    pub(crate) softirq: f64,
    /// What all cores together had in the window, µs.
    pub(crate) capacity: f64,
}

impl CpuSpent {
    /// The data servers' total, µs per discovery.
    pub(crate) fn redis_total(&self) -> f64 {
        self.data.iter().map(|(_, v)| v).sum()
    }

    /// "server 10.9 µs" or "shard 1 (…) 4.1 + shard 2 3.9 + … = 12.0 µs".
    pub(crate) fn redis_summary(&self) -> String {
        let parts: Vec<String> = self
            .data
            .iter()
            .map(|(l, v)| format!("{l} {v:.1} µs"))
            .collect();
        if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("{} = {:.1} µs", parts.join(" + "), self.redis_total())
        }
    }

    /// The rest of the machine, µs per discovery: other servers, each process, the machine.
    pub(crate) fn machine_summary(&self) -> String {
        let mut parts: Vec<String> = self
            .other
            .iter()
            .chain(self.procs.iter())
            .map(|(l, v)| format!("{l} {v:.1}"))
            .collect();
        let named: f64 = self.data.iter().map(|(_, v)| v).sum::<f64>()
            + self.other.iter().map(|(_, v)| v).sum::<f64>()
            + self.procs.iter().map(|(_, v)| v).sum::<f64>();
        // A process's system time includes the softirqs run in its context (loopback TCP):
        // the machine's softirq figure overlaps the ones above.
        parts.push(format!(
            "elsewhere {:.1}; softirq, within all these, {:.1}",
            (self.machine - named).max(0.0),
            self.softirq
        ));
        format!(
            "{}; machine busy {:.1} of {:.1} µs",
            parts.join(", "),
            self.machine,
            self.capacity
        )
    }
}

impl CpuWindow {
    pub(crate) async fn start(topology: &Topology, procs: Vec<Proc>) -> Self {
        let mut data = Vec::new();
        for s in topology.data_servers() {
            let cpu = redis_cpu_seconds(s.port).await;
            data.push((s, cpu));
        }
        let mut other = Vec::new();
        for s in topology.other_servers() {
            let cpu = redis_cpu_seconds(s.port).await;
            other.push((s, cpu));
        }
        let procs = procs
            .into_iter()
            .map(|p| {
                let t = procs::cpu_ticks(p.pid);
                (p, t)
            })
            .collect();
        Self {
            data,
            other,
            procs,
            machine: machine_ticks(),
            started: Instant::now(),
        }
    }

    /// The CPU spent since `start`, divided by `discoveries`.
    pub(crate) async fn end(self, discoveries: u64) -> CpuSpent {
        let machine = machine_ticks();
        let elapsed = self.started.elapsed();
        let per = |seconds: f64| seconds * 1e6 / discoveries.max(1) as f64;
        let ticks = |t: u64| per(t as f64 / TICKS_PER_SEC);
        let mut data = Vec::new();
        for (s, before) in &self.data {
            let after = redis_cpu_seconds(s.port).await;
            data.push((format!("{} :{}", s.label, s.port), per(after - before)));
        }
        // Other servers summed by label (the three sentinels are one figure).
        let mut other: Vec<(String, f64)> = Vec::new();
        for (s, before) in &self.other {
            let v = per(redis_cpu_seconds(s.port).await - before);
            match other.iter_mut().find(|(l, _)| *l == s.label) {
                Some((_, sum)) => *sum += v,
                None => other.push((s.label.clone(), v)),
            }
        }
        let mut procs: Vec<(String, f64)> = Vec::new();
        for (p, before) in &self.procs {
            let v = ticks(procs::cpu_ticks(p.pid).saturating_sub(*before));
            match procs.iter_mut().find(|(l, _)| l == p.label) {
                Some((_, sum)) => *sum += v,
                None => procs.push((p.label.to_owned(), v)),
            }
        }
        let all = machine.all.saturating_sub(self.machine.all) as f64;
        let cores = all / TICKS_PER_SEC / elapsed.as_secs_f64().max(1e-9);
        CpuSpent {
            data,
            other,
            procs,
            machine: ticks(machine.busy.saturating_sub(self.machine.busy)),
            softirq: ticks(machine.softirq.saturating_sub(self.machine.softirq)),
            capacity: per(elapsed.as_secs_f64() * cores.round().max(1.0)),
        }
    }
}
