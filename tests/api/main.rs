//! Integration tests: real nodes on port 0, real WebSocket and HTTP clients on loopback.

mod gateway;
mod helpers;
mod process;
mod redis_server;

mod bus_contract;
mod cluster;
mod cluster_faults;
mod deploy;
mod discovery;
mod e2e;
mod layers;
mod lifecycle;
mod limits;
mod redis_traffic;
mod registration;
mod registry_contract;
mod rpc;
mod tls;
