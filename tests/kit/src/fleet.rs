//! Fleets of simulated gateways for the benchmark: WebSocket clients that register like
//! wechaty's `Io` ([`crate::io_client`]: the captured handshake), answer `getHostieGrpcPort`
//! with their port, ping every `ping` like the real client, and on a close reconnect with the
//! real client's backoff (1, 3, 9, … ms) to one of the reconnect addresses picked at random for
//! each attempt, as a load balancer would send them. Lean: one task and small buffers per connection, thousands in one process.
//!
//! The real client pings from a `setInterval` started with its process, not with its
//! connection: gateways that register in the same second still ping at unrelated moments, and a
//! reconnect keeps the rhythm. Each simulated gateway therefore has one ping timer for its whole
//! life, its phases spread evenly over the period (registering the whole fleet within a second
//! and starting every timer then would make all of them ping within that second, every period).

use crate::io_client::{self, Hello, IoEvent};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

/// The token of gateway `i`.
pub fn token(prefix: &str, i: usize) -> String {
    format!("{prefix}_{i:06}")
}

/// What a running fleet reports.
pub struct Fleet {
    /// Sessions currently registered.
    pub connected: Arc<AtomicUsize>,
    /// Sessions that were closed by the server and registered again.
    pub reconnects: Arc<AtomicUsize>,
    /// `getHostieGrpcPort` requests answered (what single-flight and caching must bound).
    pub rpcs: Arc<AtomicUsize>,
}

#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Where gateway `i` registers first: `addrs[i % len]`.
    pub addrs: Vec<SocketAddr>,
    /// Where it reconnects after a close (empty: `addrs`): one picked at random for each
    /// attempt, as kube-proxy picks a Service endpoint. (Walking the list in turn, as this did
    /// before, put every refused gateway on the same next address: behind a run of full nodes
    /// they all queued for the first one with room, one backoff period per full node.)
    pub reconnect_to: Vec<SocketAddr>,
    pub prefix: String,
    pub from: usize,
    pub count: usize,
    pub port: u16,
    pub ping: Duration,
    /// Handshakes in flight at once.
    pub parallel: usize,
}

/// Small buffers: the fleet holds thousands of idle connections in one process.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

/// One registration; `Err` when refused or unreachable.
async fn connect(addr: SocketAddr, hello: &Hello) -> Result<WebSocketStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (ws, _) = io_client::handshake(tcp, addr, hello, Some(ws_config()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Serves one registered session until the server closes it.
async fn serve(
    mut ws: WebSocketStream<TcpStream>,
    port: u16,
    tick: &mut tokio::time::Interval,
    rpcs: &AtomicUsize,
) {
    if ws.send(io_client::sys("bench")).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let Ok(event) = IoEvent::parse(&text) else { continue };
                    if let Some(id) = event.port_request() {
                        rpcs.fetch_add(1, Ordering::Relaxed);
                        if ws.send(io_client::port(id, port)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = tick.tick() => {
                if ws.send(io_client::ping()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The real `Io` client's reconnect delays (ms), then 19683 ms forever.
fn backoff(attempt: usize) -> Duration {
    Duration::from_millis(3u64.pow(attempt.min(9) as u32))
}

/// Starts the fleet; every gateway keeps itself registered (bounded by `stop`).
pub fn start(spec: FleetSpec, stop: CancellationToken) -> Fleet {
    let connected = Arc::new(AtomicUsize::new(0));
    let reconnects = Arc::new(AtomicUsize::new(0));
    let rpcs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(spec.parallel));
    for i in spec.from..spec.from + spec.count {
        let (spec, stop) = (spec.clone(), stop.clone());
        let (connected, reconnects, gate) = (connected.clone(), reconnects.clone(), gate.clone());
        let rpcs = rpcs.clone();
        tokio::spawn(async move {
            let hello = Hello {
                offer_deflate: false,
                ..Hello::new(&token(&spec.prefix, i), "bench", spec.port)
            };
            let phase = spec
                .ping
                .mul_f64((i - spec.from) as f64 / spec.count as f64);
            let first = tokio::time::Instant::now() + phase;
            let mut tick = tokio::time::interval_at(first, spec.ping);
            // Ticks missed while disconnected are not made up for (setInterval pings only when
            // connected): at most one ping right after the reconnect, then the old rhythm.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut attempt = 0usize;
            let mut registered_before = false;
            let mut tries = 0usize;
            while !stop.is_cancelled() {
                let target = if registered_before && !spec.reconnect_to.is_empty() {
                    spec.reconnect_to[fastrand::usize(..spec.reconnect_to.len())]
                } else {
                    spec.addrs[(i + tries) % spec.addrs.len()]
                };
                tries += 1;
                let permit = gate.acquire().await.expect("the semaphore is never closed");
                let result = connect(target, &hello).await;
                drop(permit);
                match result {
                    Ok(ws) => {
                        attempt = 0;
                        if registered_before {
                            reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        registered_before = true;
                        connected.fetch_add(1, Ordering::Relaxed);
                        tokio::select! {
                            () = serve(ws, spec.port, &mut tick, &rpcs) => {}
                            () = stop.cancelled() => {}
                        }
                        connected.fetch_sub(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                    }
                }
            }
        });
    }
    Fleet {
        connected,
        reconnects,
        rpcs,
    }
}
