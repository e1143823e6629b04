//! Integration tests: real nodes on port 0, real WebSocket and HTTP clients on loopback. The
//! simulated gateways, `redis-server` and node processes come from the shared test kit
//! (`tests/kit`, crate `hostie_testkit`), which the benchmark uses too.

mod helpers;

mod bus_contract;
mod close_handshake;
mod cluster;
mod cluster_faults;
mod deploy;
mod discovery;
mod e2e;
mod fault_suite;
mod layers;
mod lifecycle;
mod limits;
mod negotiation;
mod pages;
mod reachability;
mod redis_access;
mod redis_states;
mod redis_traffic;
mod registration;
mod registry_contract;
mod rpc;
mod session_order;
mod tls;
mod topology_faults;
mod untrusted_proxy;
