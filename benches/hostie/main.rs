//! hostie's benchmark, against the machine's floor measured in the same run.
//!
//! `cargo bench --bench hostie` (full) or `cargo bench --bench hostie -- --smoke` (seconds).
//! One machine runs everything: `redis-server` (one, then a Sentinel group and a 3-shard
//! Cluster for the cross-node rows), release builds of hostie as separate
//! processes, simulated gateways in worker processes (this binary with `--gateway-worker`, so
//! that no process holds more than ≈10k sockets), and the HTTP load generator. All traffic is
//! on loopback and every loop is bounded in time and count. The simulated gateways,
//! `redis-server` and node processes come from the test kit the integration tests use too
//! (`tests/kit`, crate `hostie_testkit`).

mod floor;
mod lb;
mod load;
mod procs;
mod report;
mod scaling;
mod scenarios;
mod topology;

use clap::Parser;
use hostie_testkit::fleet;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(about = "hostie benchmark")]
pub(crate) struct Args {
    /// A few seconds with small counts (run by the test command so the bench cannot rot).
    #[arg(long)]
    pub(crate) smoke: bool,
    /// The scaling run instead (issue 14): 1, 2, 4, 8 node processes with the same sessions
    /// each, Redis cost per unit of work, hot tokens, storms, and the capacity model.
    #[arg(long)]
    pub(crate) scaling: bool,
    /// Sessions per node in the scaling run: 8 × 17,000 = 136,000, and when one node of
    /// eight is lost its gateways fit in the seven others (19,430 each) within the fd limit.
    #[arg(long, default_value_t = 17_000)]
    pub(crate) sessions_per_node: usize,
    /// With `--scaling`: only the largest size (every gateway connecting at once) and the
    /// rolling restart of all its nodes, about 10 minutes (for working on the restart).
    #[arg(long)]
    pub(crate) rolling_restart_only: bool,
    /// With `--scaling`: only the growth series (1, 2, 4, 8 nodes), twice in this run: with
    /// this hostie binary first ("before", e.g. a build of the previous commit), then with this
    /// build ("after"). The before/after rows of a change, measured in the same session.
    #[arg(long)]
    pub(crate) baseline_binary: Option<std::path::PathBuf>,
    /// Registered tokens for the discovery scenarios.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) tokens: usize,
    /// Sessions held by one node for the memory, idle CPU and node-kill scenarios.
    #[arg(long, default_value_t = 19_000)]
    pub(crate) idle_sessions: usize,
    /// Length of each load run.
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Window of the idle CPU measurement.
    #[arg(long, default_value_t = 30)]
    pub(crate) idle_cpu_seconds: u64,
    /// Where the Markdown table is written.
    #[arg(long, default_value = "target/bench-report.md")]
    pub(crate) report: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub(crate) bench: bool,

    // Worker mode (internal): hold gateways and report "connected reconnects rpcs" lines.
    #[arg(long, hide = true)]
    pub(crate) gateway_worker: bool,
    #[arg(long, hide = true, value_delimiter = ',')]
    pub(crate) addrs: Vec<SocketAddr>,
    #[arg(long, hide = true, value_delimiter = ',')]
    pub(crate) reconnect_to: Vec<SocketAddr>,
    #[arg(long, hide = true, default_value = "bench")]
    pub(crate) prefix: String,
    #[arg(long, hide = true, default_value_t = 0)]
    pub(crate) from: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    pub(crate) count: usize,
    #[arg(long, hide = true, default_value_t = 10_000)]
    pub(crate) ping_ms: u64,

    // Floor server mode (internal): print the address, serve WebSockets until stdin closes.
    #[arg(long, hide = true)]
    pub(crate) ws_floor: bool,
    // The same on hostie's stack (actix-web + actix-ws).
    #[arg(long, hide = true)]
    pub(crate) ws_floor_actix: bool,
}

fn main() {
    // reqwest (the test kit's readiness report) is built without a crypto provider.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let mut args = Args::parse();
    if args.gateway_worker {
        return worker(args);
    }
    if args.ws_floor {
        return ws_floor();
    }
    if args.ws_floor_actix {
        return ws_floor_actix();
    }
    if args.smoke {
        args.tokens = args.tokens.min(640);
        args.idle_sessions = args.idle_sessions.min(1000);
        args.seconds = args.seconds.min(1);
        args.idle_cpu_seconds = args.idle_cpu_seconds.min(2);
        args.sessions_per_node = args.sessions_per_node.min(300);
    }
    if args.scaling {
        return scaling_main(&args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (rows, wrong) = runtime.block_on(scenarios::run_all(&args));
    let table = report::markdown(&rows);
    println!("\n{table}");
    if let Some(dir) = std::path::Path::new(&args.report).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&args.report, &table).expect("the report is written");
    println!("report written to {}", args.report);
    let missed = rows.iter().filter(|r| r.pass == Some(false)).count();
    let met = rows.iter().filter(|r| r.pass == Some(true)).count();
    // Targets need the full counts on a quiet machine: they are reported, never a failure.
    // Wrong answers fail any run, the smoke run of the test command included.
    println!(
        "targets: {met} met, {missed} missed ({} scenarios)",
        rows.len()
    );
    if !wrong.is_empty() {
        for w in &wrong {
            eprintln!("bench: wrong answers: {w}");
        }
        std::process::exit(1);
    }
    println!("bench: every scenario ran and every answer was right");
}

/// The scaling run: its tables printed and written next to the report, failing on a wrong
/// answer like the main run.
fn scaling_main(args: &Args) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (text, wrong) = runtime.block_on(scaling::run(args));
    println!("\n{text}");
    let path = std::path::Path::new(&args.report).with_file_name("bench-scaling.md");
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, &text).expect("the scaling report is written");
    println!("report written to {}", path.display());
    if !wrong.is_empty() {
        for w in &wrong {
            eprintln!("bench: wrong answers: {w}");
        }
        std::process::exit(1);
    }
    println!("bench: every scaling scenario ran and every answer was right");
}

/// Resolves when stdin closes: the bench dropped its end, so a child process ends.
fn stdin_closed() -> tokio::sync::oneshot::Receiver<()> {
    let (eof_tx, eof) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = eof_tx.send(());
    });
    eof
}

/// Floor server mode (see `floor`): its address on stdout, then serve until stdin closes.
fn ws_floor() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let (listener, addr) = floor::bind().await;
        println!("{addr}");
        let eof = stdin_closed();
        tokio::select! {
            () = floor::serve(listener) => {}
            _ = eof => {}
        }
    });
}

/// The floor server on hostie's stack: its address on stdout, then serve until stdin closes.
fn ws_floor_actix() {
    actix_web::rt::System::new().block_on(async {
        let (server, addr) = floor::serve_actix().expect("a loopback port for the floor server");
        println!("{addr}");
        let handle = server.handle();
        let server = actix_web::rt::spawn(server);
        let _ = stdin_closed().await;
        handle.stop(false).await;
        let _ = server.await;
    });
}

/// Gateway worker mode: hold `count` gateways until stdin closes.
fn worker(args: Args) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let stop = tokio_util::sync::CancellationToken::new();
        let fleet = fleet::start(
            fleet::FleetSpec {
                addrs: args.addrs.clone(),
                reconnect_to: args.reconnect_to.clone(),
                prefix: args.prefix.clone(),
                from: args.from,
                count: args.count,
                port: 18789,
                ping: Duration::from_millis(args.ping_ms),
                parallel: 256,
            },
            stop.clone(),
        );
        let mut eof = stdin_closed();
        let mut last = (usize::MAX, usize::MAX, usize::MAX);
        loop {
            let now = (
                fleet.connected.load(std::sync::atomic::Ordering::Relaxed),
                fleet.reconnects.load(std::sync::atomic::Ordering::Relaxed),
                fleet.rpcs.load(std::sync::atomic::Ordering::Relaxed),
            );
            if now != last {
                println!("{} {} {}", now.0, now.1, now.2);
                last = now;
            }
            tokio::select! {
                _ = &mut eof => break,
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
        stop.cancel();
    });
}
