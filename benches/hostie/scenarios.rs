//! The scenarios of the benchmark, in order, each a row of the report.

use crate::Args;
use crate::load::{self, LoadSpec};
use crate::procs::{self, Hostie, TICKS_PER_SEC, Worker, WorkerArgs};
use crate::report::{Row, us};
use crate::topology::{CpuSpent, CpuWindow, Proc, Topology};
use hdrhistogram::Histogram;
use hostie_testkit::fleet::token;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const PING: Duration = Duration::from_secs(10);
/// hostie's default discovery deadline: an answer this slow counts as a timeout.
pub(crate) const DEADLINE: Duration = Duration::from_secs(3);
/// Sessions per gateway worker process (fd limit: ≈19.9k sockets per process).
const PER_WORKER: usize = 9_500;

fn paths(prefix: &str, n: usize) -> Arc<Vec<String>> {
    Arc::new(
        (0..n)
            .map(|i| format!("/v0/hosties/{}", token(prefix, i)))
            .collect(),
    )
}

async fn http(
    addr: std::net::SocketAddr,
    concurrency: usize,
    args: &Args,
    paths: Arc<Vec<String>>,
) -> load::LoadResult {
    load::run(LoadSpec {
        addr,
        concurrency,
        duration: Duration::from_secs(args.seconds),
        paths,
        slow: DEADLINE,
        max_per_conn: None,
        pace: None,
    })
    .await
}

/// Redis `PING` round trips on one connection for `secs`.
pub(crate) async fn redis_floor(url: &str, secs: u64) -> Histogram<u64> {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connects");
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let t0 = Instant::now();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("PING");
        hist.saturating_record(t0.elapsed().as_micros().max(1) as u64);
    }
    hist
}

/// Spawns workers holding `count` gateways named `prefix_0..count` on `addrs`.
pub(crate) fn fleet(
    addrs: &[std::net::SocketAddr],
    reconnect_to: &[std::net::SocketAddr],
    prefix: &str,
    count: usize,
) -> Vec<Worker> {
    (0..count.div_ceil(PER_WORKER))
        .map(|w| {
            let from = w * PER_WORKER;
            Worker::spawn(WorkerArgs {
                addrs,
                reconnect_to,
                prefix,
                from,
                count: PER_WORKER.min(count - from),
                ping: PING,
            })
        })
        .collect()
}

pub(crate) fn connected(workers: &[Worker], total: usize, limit: Duration) -> Option<Duration> {
    let refs: Vec<&Worker> = workers.iter().collect();
    procs::wait_connected(&refs, total, limit)
}

/// The rows, and every wrong answer seen (a wrong answer fails even a smoke run; a missed
/// target is only reported).
pub(crate) async fn run_all(args: &Args) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut wrong = Vec::new();
    let redis = Topology::standalone();
    let url = redis.url();
    let (a, b) = (
        Hostie::spawn(&url, "bench", "a").await,
        Hostie::spawn(&url, "bench", "b").await,
    );
    eprintln!("bench: redis on {url}, nodes a={} b={}", a.http, b.http);

    // Floors, in this run, on this machine.
    let floor = redis_floor(&url, args.seconds.min(3)).await;
    rows.push(Row {
        scenario: "floor: Redis PING, 1 concurrent".into(),
        target: "".into(),
        p50: us(floor.value_at_quantile(0.5)),
        p99: us(floor.value_at_quantile(0.99)),
        p999: us(floor.value_at_quantile(0.999)),
        throughput: format!("{} total", floor.len()),
        result: "".into(),
        pass: None,
    });
    let livez = Arc::new(vec!["/livez".to_owned()]);
    let floor1 = http(a.admin, 1, args, livez.clone()).await;
    rows.push(Row::latency(
        "floor: HTTP /livez, 1 concurrent",
        "",
        &floor1,
        None,
        "",
    ));
    let floor64 = http(a.admin, 64, args, livez).await;
    rows.push(Row::latency(
        "floor: HTTP /livez, 64 concurrent",
        "",
        &floor64,
        None,
        "",
    ));
    let floor_p50 = floor1.quantile_us(0.5);

    // Discovery: `tokens` gateways on node a.
    let workers = fleet(&[a.http], &[], "tok", args.tokens);
    let took =
        connected(&workers, args.tokens, Duration::from_secs(120)).expect("fleet registered");
    eprintln!("bench: {} gateways registered in {took:?}", args.tokens);
    let hits = paths("tok", args.tokens);
    warm_up(&a, &hits).await;

    let same64 = http(a.http, 64, args, hits.clone()).await;
    let ok = same64.rate() >= 30_000.0
        && same64.quantile_us(0.5) <= 500
        && same64.quantile_us(0.99) <= 2_000;
    rows.push(Row::latency(
        "discovery hit, same node, 64 concurrent",
        "≥ 30,000/s, p50 ≤ 0.5 ms, p99 ≤ 2 ms",
        &same64,
        Some(ok && all_ok(&same64)),
        "",
    ));
    let same1 = http(a.http, 1, args, hits.clone()).await;
    rows.push(Row::latency(
        "discovery hit, same node, 1 concurrent",
        "p50 ≤ 150 µs",
        &same1,
        Some(same1.quantile_us(0.5) <= 150 && all_ok(&same1)),
        "",
    ));
    let (cross64, cpu) = cross_node_64(&redis, &a, &b, &workers, args, &hits).await;
    let ok = cross64.rate() >= 15_000.0 && cross64.quantile_us(0.99) <= 5_000;
    rows.push(Row::latency(
        "discovery hit, cross node, 64 concurrent",
        "≥ 15,000/s, p99 ≤ 5 ms",
        &cross64,
        Some(ok && all_ok(&cross64)),
        "",
    ));
    let cross1 = http(b.http, 1, args, hits.clone()).await;
    let p50 = cross1.quantile_us(0.5);
    rows.push(Row::latency(
        "discovery hit, cross node, 1 concurrent",
        "p50 ≤ 350 µs (≤ floor + 300 µs)",
        &cross1,
        Some((p50 <= 350 || p50 <= floor_p50 + 300) && all_ok(&cross1)),
        &format!("; floor p50 {floor_p50} µs"),
    ));
    rows.push(cpu_row(redis.name(), "", &cpu, &cross64, None));
    for (name, r) in [
        ("same node 64", &same64),
        ("same node 1", &same1),
        ("cross node 64", &cross64),
        ("cross node 1", &cross1),
    ] {
        if !all_ok(r) {
            wrong.push(format!(
                "{name}: {} of {} hits were not a 200 within the deadline",
                r.requests - r.ok + r.slow,
                r.requests
            ));
        }
    }
    let ratio = cross64.rate() / cross1.rate().max(1.0);
    rows.push(Row::figure(
        "cross-node throughput, 64 vs 1 concurrent",
        "≥ 5×",
        format!("{ratio:.1}×"),
        Some(ratio >= 5.0),
    ));
    let miss = http(b.http, 64, args, paths("missing", args.tokens)).await;
    let ok = miss.quantile_us(0.99) <= 2_000 && miss.slow == 0 && miss.not_found == miss.requests;
    if miss.not_found != miss.requests || miss.slow > 0 {
        wrong.push(format!(
            "miss: {} of {} were not a prompt 404",
            miss.requests - miss.not_found + miss.slow,
            miss.requests
        ));
    }
    rows.push(Row::latency(
        "discovery miss, 64 concurrent",
        "p99 ≤ 2 ms, never a timeout",
        &miss,
        Some(ok),
        "",
    ));
    drop(workers);

    // Registration rate into one node (Redis mode), then every token counted.
    let reg = registration(&a, &b, args, "registration", &mut wrong).await;
    rows.push(reg.row("registration rate into one node (Redis mode)", ""));

    // The cross-node rows again on a Sentinel group and on a 3-shard Cluster, against the
    // standalone ones just measured.
    let standalone = Yardstick {
        cross64,
        cross1,
        cpu,
        registration: reg.rate,
    };
    for topology in [Topology::sentinel as fn() -> Topology, Topology::cluster] {
        let topology = topology();
        other_topology(&topology, &standalone, args, &mut rows, &mut wrong).await;
    }

    // The floors of idle CPU: the same fleet, pinging the same way, held by the cheapest
    // WebSocket server, then by the same pong-only server on hostie's stack (see `floor`).
    let n = args.idle_sessions;
    let mut floors = Vec::new();
    for (kind, name, what) in [
        (
            procs::Floor::Tungstenite,
            "floor: idle WebSocket server, the same sessions and pings",
            "tokio-tungstenite, one thread, pongs only",
        ),
        (
            procs::Floor::Actix,
            "floor: the same server on hostie's stack",
            "actix-web + actix-ws, two workers, pongs only",
        ),
    ] {
        let server = procs::FloorServer::spawn(kind);
        let rss0 = server.rss_kib();
        let workers = fleet(&[server.addr], &[], "floor", n);
        connected(&workers, n, Duration::from_secs(180)).expect("floor fleet connected");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let per = server.rss_kib().saturating_sub(rss0) as f64 / n as f64;
        let t0 = (server.cpu_ticks(), Instant::now());
        tokio::time::sleep(Duration::from_secs(args.idle_cpu_seconds)).await;
        let cpu = (server.cpu_ticks() - t0.0) as f64 / TICKS_PER_SEC / t0.1.elapsed().as_secs_f64()
            * 100.0;
        rows.push(Row::figure(
            name,
            "",
            format!(
                "{cpu:.2}% of one core over {} s with {n} sessions ({what}); RSS {per:.1} KiB/session",
                args.idle_cpu_seconds
            ),
            None,
        ));
        floors.push(cpu);
    }
    let (floor_cpu, stack_cpu) = (floors[0], floors[1]);

    // Idle sessions held by one node: memory, idle CPU, then the node is killed.
    let mut d = Hostie::spawn(&url, "bench", "d").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss0, slab0) = (d.rss_kib(), procs::slab_kib());
    let workers = fleet(&[d.http], &[a.http, b.http], "idle", n);
    let took = connected(&workers, n, Duration::from_secs(180)).expect("idle fleet registered");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, slab1) = (d.rss_kib(), procs::slab_kib());
    let per = (rss1.saturating_sub(rss0)) as f64 * 1024.0 / n as f64;
    let kernel = (slab1.saturating_sub(slab0)) as f64 * 1024.0 / n as f64;
    rows.push(Row::figure(
        "idle registered sessions in one node",
        "19,000 held; ≤ 10 KiB RSS per session",
        format!(
            "{n} held (registered in {:.1} s); RSS {:.1} → {:.1} MiB = {:.1} KiB/session; kernel slab +{:.1} KiB/connection (both ends, apart)",
            took.as_secs_f64(), rss0 as f64 / 1024.0, rss1 as f64 / 1024.0, per / 1024.0, kernel / 1024.0
        ),
        Some(n >= 19_000.min(args.idle_sessions) && per <= 10.0 * 1024.0),
    ));
    let t0 = (d.cpu_ticks(), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.idle_cpu_seconds)).await;
    let cpu = (d.cpu_ticks() - t0.0) as f64 / TICKS_PER_SEC / t0.1.elapsed().as_secs_f64() * 100.0;
    rows.push(Row::figure(
        "idle CPU, sessions pinging every 10 s",
        "≤ 5% of one core",
        format!(
            "{cpu:.2}% of one core over {} s with {n} sessions; floors {floor_cpu:.2}% (tungstenite), {stack_cpu:.2}% (actix-ws)",
            args.idle_cpu_seconds
        ),
        Some(cpu <= 5.0),
    ));

    let tokens = paths("idle", n);
    let killed = Instant::now();
    d.kill9();
    let mut missing: Vec<usize> = (0..n).collect();
    let mut all_back = None;
    while killed.elapsed() < Duration::from_secs(30) {
        let batch = Arc::new(
            missing
                .iter()
                .map(|i| tokens[*i].clone())
                .collect::<Vec<_>>(),
        );
        let found = load::sweep(a.http, batch, 64).await;
        missing = missing
            .into_iter()
            .zip(found)
            .filter(|(_, ok)| !ok)
            .map(|(i, _)| i)
            .collect();
        if missing.is_empty() {
            all_back = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if all_back.is_none() {
        wrong.push(format!(
            "node kill: {} tokens never came back",
            missing.len()
        ));
    }
    let reconnected: usize = workers
        .iter()
        .map(|w| w.reconnects.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    rows.push(Row::figure(
        "node killed holding the idle sessions",
        "all discoverable elsewhere ≤ 10 s after the kill",
        match all_back {
            Some(t) => format!("all {n} discoverable through the other nodes {:.2} s after SIGKILL ({reconnected} reconnects)", t.as_secs_f64()),
            None => format!("{} of {n} still missing after 30 s", missing.len()),
        },
        Some(all_back.is_some_and(|t| t <= Duration::from_secs(10))),
    ));
    drop(workers);
    (rows, wrong)
}

/// Warm-up of a node's Redis connections, scripts and caches (same-node hits), not measured.
async fn warm_up(a: &Hostie, hits: &Arc<Vec<String>>) {
    load::run(LoadSpec {
        addr: a.http,
        concurrency: 64,
        duration: Duration::from_secs(1),
        paths: hits.clone(),
        slow: DEADLINE,
        max_per_conn: None,
        pace: None,
    })
    .await;
}

/// Cross-node hits (held by `a`, asked on `b`) at 64 concurrent, and where the CPU of that
/// window went: each Redis server's `INFO cpu`, each process's `/proc/<pid>/stat`.
async fn cross_node_64(
    topology: &Topology,
    a: &Hostie,
    b: &Hostie,
    workers: &[Worker],
    args: &Args,
    hits: &Arc<Vec<String>>,
) -> (load::LoadResult, CpuSpent) {
    let mut procs = vec![
        Proc {
            pid: a.pid(),
            label: "node a (owner)",
        },
        Proc {
            pid: b.pid(),
            label: "node b (asked)",
        },
    ];
    procs.extend(workers.iter().map(|w| Proc {
        pid: w.pid(),
        label: "gateways",
    }));
    procs.push(Proc {
        pid: std::process::id(),
        label: "load generator",
    });
    let window = CpuWindow::start(topology, procs).await;
    let r = http(b.http, 64, args, hits.clone()).await;
    let cpu = window.end(r.ok).await;
    (r, cpu)
}

/// The Redis CPU row of a topology's 64-concurrent cross-node window.
fn cpu_row(
    topology: &str,
    target: &str,
    cpu: &CpuSpent,
    r: &load::LoadResult,
    pass: Option<bool>,
) -> Row {
    Row::figure(
        &format!("{topology}: Redis CPU per cross-node discovery, 64 concurrent"),
        target,
        format!(
            "{}, over {} discoveries; the rest of the machine, µs per discovery: {}",
            cpu.redis_summary(),
            r.ok,
            cpu.machine_summary()
        ),
        pass,
    )
}

/// A registration run's figures.
struct Registration {
    rate: f64,
    took: Duration,
    counted: usize,
    tokens: usize,
}

impl Registration {
    fn row(&self, scenario: &str, note: &str) -> Row {
        Row::figure(
            scenario,
            "≥ 5,000 new sessions/s, all discoverable",
            format!(
                "{} sessions in {:.2} s = {:.0}/s; {}/{} discoverable from the other node{note}",
                self.tokens,
                self.took.as_secs_f64(),
                self.rate,
                self.counted,
                self.tokens
            ),
            Some(self.rate >= 5_000.0 && self.counted == self.tokens),
        )
    }
}

/// `tokens` gateways registering into `b` at once, then each token asked once on `a`.
async fn registration(
    a: &Hostie,
    b: &Hostie,
    args: &Args,
    name: &str,
    wrong: &mut Vec<String>,
) -> Registration {
    let started = Instant::now();
    let workers = fleet(&[b.http], &[], "reg", args.tokens);
    let took =
        connected(&workers, args.tokens, Duration::from_secs(120)).unwrap_or(started.elapsed());
    let rate = args.tokens as f64 / took.as_secs_f64();
    let found = load::sweep(a.http, paths("reg", args.tokens), 64).await;
    let counted = found.iter().filter(|f| **f).count();
    if counted != args.tokens {
        wrong.push(format!(
            "{name}: {counted} of {} registered tokens discoverable",
            args.tokens
        ));
    }
    drop(workers);
    Registration {
        rate,
        took,
        counted,
        tokens: args.tokens,
    }
}

/// What the standalone rows measured: what the other topologies are compared with.
struct Yardstick {
    cross64: load::LoadResult,
    cross1: load::LoadResult,
    cpu: CpuSpent,
    registration: f64,
}

/// `x` as a percentage of `base`.
fn pct(x: f64, base: f64) -> f64 {
    x / base.max(1e-9) * 100.0
}

/// The cross-node measurement of the standalone rows on another topology: two fresh nodes,
/// `tokens` gateways on `a`, hits asked on `b` at 64 (with the Redis CPU of the window) and
/// 1 concurrent, then the registration rate. Only the Cluster has targets (issue 13): within
/// 15 % of standalone's throughput and p99, and no more Redis CPU per discovery over all its
/// shards than the one standalone server.
async fn other_topology(
    topology: &Topology,
    base: &Yardstick,
    args: &Args,
    rows: &mut Vec<Row>,
    wrong: &mut Vec<String>,
) {
    let name = topology.name();
    let cluster = matches!(topology, Topology::Cluster(_));
    let url = topology.url();
    let (a, b) = (
        Hostie::spawn(&url, "bench", "a").await,
        Hostie::spawn(&url, "bench", "b").await,
    );
    eprintln!("bench: {name} on {url}, nodes a={} b={}", a.http, b.http);
    let workers = fleet(&[a.http], &[], "tok", args.tokens);
    let took = connected(&workers, args.tokens, Duration::from_secs(120))
        .unwrap_or_else(|| panic!("{name}: fleet registered"));
    eprintln!(
        "bench: {name}: {} gateways registered in {took:?}",
        args.tokens
    );
    let hits = paths("tok", args.tokens);
    warm_up(&a, &hits).await;

    let (cross64, cpu) = cross_node_64(topology, &a, &b, &workers, args, &hits).await;
    let cross1 = http(b.http, 1, args, hits.clone()).await;
    drop(workers);
    for (c, r, s) in [(64, &cross64, &base.cross64), (1, &cross1, &base.cross1)] {
        if !all_ok(r) {
            wrong.push(format!(
                "{name}: cross node {c}: {} of {} hits were not a 200 within the deadline",
                r.requests - r.ok + r.slow,
                r.requests
            ));
        }
        let (rate, p99) = (
            pct(r.rate(), s.rate()),
            pct(r.quantile_us(0.99) as f64, s.quantile_us(0.99) as f64),
        );
        let target = if cluster {
            format!(
                "within 15 % of standalone: ≥ {:.0}/s, p99 ≤ {}",
                s.rate() * 0.85,
                us((s.quantile_us(0.99) as f64 * 1.15) as u64)
            )
        } else {
            String::new()
        };
        let pass = cluster.then(|| rate >= 85.0 && p99 <= 115.0 && all_ok(r));
        rows.push(Row::latency(
            &format!("{name}: discovery hit, cross node, {c} concurrent"),
            &target,
            r,
            pass,
            &format!(
                "; {rate:.0} % of standalone's throughput, p99 {p99:.0} % of standalone's, p50 {} vs {}",
                us(r.quantile_us(0.5)),
                us(s.quantile_us(0.5))
            ),
        ));
    }
    let (total, base_total) = (cpu.redis_total(), base.cpu.redis_total());
    let target = if cluster {
        format!("total over the shards ≤ standalone's {base_total:.1} µs")
    } else {
        String::new()
    };
    let mut row = cpu_row(
        name,
        &target,
        &cpu,
        &cross64,
        cluster.then_some(total <= base_total),
    );
    row.result = format!(
        "{:.0} % of standalone's {base_total:.1} µs: {}",
        pct(total, base_total),
        row.result
    );
    rows.push(row);
    let reg = registration(&a, &b, args, &format!("{name}: registration"), wrong).await;
    rows.push(reg.row(
        &format!("{name}: registration rate into one node"),
        &format!(
            "; {:.0} % of standalone's {:.0}/s",
            pct(reg.rate, base.registration),
            base.registration
        ),
    ));
}

/// Every answer of a hit run was a 200 within the deadline.
fn all_ok(r: &load::LoadResult) -> bool {
    r.ok == r.requests && r.slow == 0
}
