//! Integration tests: real nodes on port 0, real WebSocket and HTTP clients on loopback.

mod helpers;

mod discovery;
mod e2e;
mod lifecycle;
mod limits;
mod registration;
mod rpc;
mod tls;
