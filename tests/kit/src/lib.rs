//! hostie's test kit: what the integration tests (`tests/api`) and the benchmark
//! (`benches/hostie`) both need, written once.
//!
//! - [`io_client`]: the wire of the real wechaty `Io` client (the captured upgrade request,
//!   the `IoEvent` framing, the JSON-RPC answer to `getHostieGrpcPort`, pings), the one core
//!   the two simulated gateways below are built on.
//! - [`gateway`]: one simulated gateway with a configurable answer, closing with codes and
//!   recording every frame (the tests).
//! - [`fleet`]: thousands of lean gateways, one task each, pings spread over the period,
//!   reconnecting with the real client's backoff (the benchmark).
//! - [`redis_server`]: a real `redis-server` on a free loopback port, killed when dropped.
//! - [`redis_topology`]: a real Redis Cluster (primaries and replicas) and a Sentinel group
//!   (primary, replica, three sentinels) on free loopback ports, with failovers and kills.
//! - [`node_process`]: the hostie binary as a child process (its bound addresses, readiness,
//!   signals, exit status and logs).
//! - [`tcp_proxy`]: a loopback TCP proxy a test switches between passing, black-holing,
//!   delaying and resetting (a network fault between two processes).
//! - [`browser`]: headless Chromium loading a page (the DOM after its scripts ran, or a
//!   screenshot kept in `target/test-artifacts/`), and [`browser::Dom`] for assertions on it.
//! - [`chaos`]: gateways kept in a model of live sessions, a discovery load, and a checker that
//!   judges every answer against the model (the fault suite).

pub mod browser;
pub mod chaos;
pub mod fleet;
pub mod gateway;
pub mod io_client;
pub mod node_process;
pub mod redis_server;
pub mod redis_topology;
pub mod tcp_proxy;

use std::net::{SocketAddr, TcpListener};

/// A loopback port nobody listens on right now (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a free loopback port")
        .local_addr()
        .expect("a bound address")
        .port()
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
