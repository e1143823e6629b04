//! # hostie — a registry for Wechaty Puppet Services
//!
//! Puppet servers register a token by holding a WebSocket to `/v0/websocket`; SDKs discover
//! the token's gRPC `{"host","ip","port"}` with `GET /v0/hosties/{token}`. The wire contract is
//! `shared/protocol.md`; this crate keeps it byte-compatible with the original api.chatie.io.
//!
//! ## Components
//!
//! - [`protocol`]: wire types and pure parsing (subprotocol, IoEvent frames, JSON-RPC, tokens,
//!   the discovery answer). No IO.
//! - [`session`]: one task per WebSocket, one `select!` loop over inbound frames, commands,
//!   the idle timer and the RPC sweep; [`rpc_table`] single-flights its `getHostieGrpcPort`
//!   requests.
//! - [`hub`]: the node's local table, token → sessions, and the handle to ask a session;
//!   [`remote_cache`]: other nodes' records it read recently.
//! - [`registry`]: the cluster-wide record of which node holds which session (trait; in-memory
//!   and Redis implementations, the same contract tests for both).
//! - [`bus`]: node-to-node "ask session S for its port" (trait; in-memory and Redis pub/sub).
//! - [`liveness`]: heartbeat, sweep of dead peers, re-assertion (cluster mode).
//! - [`node`]: the only module that knows hub, registry and bus: admits registrations,
//!   resolves discoveries, drains.
//! - [`http`]: actix-web handlers; [`http::error`] is the one place errors become statuses.
//! - [`startup`]: binds listeners (port 0 allowed), runs until a shutdown trigger, drains.
//! - [`config`], [`telemetry`], [`metrics`], [`tls`], [`shutdown`]: process plumbing.
//!
//! ## How a discovery flows
//!
//! 1. `GET /v0/hosties/{token}` → rate limit per client address → token percent-decoded and
//!    hashed (SHA-256).
//! 2. [`node::Node::discover`] reads the token's candidates from the registry, newest first
//!    (from the hub alone when the registry cannot be read).
//! 3. Each candidate is asked for its port within a share of the deadline: a local one through
//!    the hub, a remote one through the bus. The session sends
//!    `{"name":"jsonrpc","payload":{"jsonrpc":"2.0","id":N,"method":"getHostieGrpcPort"}}`
//!    unless its subprotocol says it has no JSON-RPC peer; concurrent asks share one request.
//! 4. The first RPC port wins (200, outcome `hit`). A fallback port (subprotocol port, else
//!    `--fallback-port`) from a silent or failing session is answered only if no older session
//!    does better (200, `fallback`/`timeout`). No live session: 404 with the all-zero body.
//!    Registry or bus failure: 503 with `Retry-After`.
//!
//! In cluster mode step 2 is one `HVALS` (records of nodes whose heartbeat ran out are left
//! out), skipped entirely when this node provably holds every session of the token
//! ([`hub::Hub::fast_candidates`]) or has read the token's records of other nodes' sessions
//! recently ([`remote_cache`]); a remote ask in step 3 is a PUBLISH on the owner's channel
//! answered by a PUBLISH on ours ([`bus::redis`]): at most 3 Redis round trips.
//!
//! ## Shared state
//!
//! Tokens are never stored or logged in the clear: records, bus messages and logs carry
//! [`protocol::TokenHash`] (logs show its first 8 hex digits). The embedded mode keeps the
//! registry in memory. Cluster mode keeps it in Redis under `--redis-prefix` `P`:
//!
//! | key / channel | type | content |
//! |---|---|---|
//! | `P:tok:H` | hash | session id → [`registry::SessionRecord`] JSON, token hash `H` (hex) |
//! | `P:node:N:sessions` | set | `H:session` members of node `N` (drain, sweep) |
//! | `P:nodes` | sorted set | node id → alive-until in ms of Redis's clock (heartbeat) |
//! | `P:node:N` | channel | [`bus::message::BusMessage`] requests to `N`, replies to `N` |
//! | `P:events` | channel | `Leave` (a node drains) and `Registered` (a session admitted) |
//!
//! The hub is the truth; Redis is a cache rebuilt from it: [`liveness`] re-asserts every session
//! whenever Redis lost this node's entry (restart, flush, failover) or an outage ended, and
//! sweeps the records of nodes whose heartbeat ran out. Command connections are shared
//! ([`redis_conn`]); the subscriber has its own.

pub mod bus;
pub mod config;
pub mod http;
pub mod hub;
pub mod memory_broker;
pub mod metrics;
pub mod model;
pub mod node;
pub mod protocol;
pub mod redis_common;
pub mod registry;
pub mod session;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod tls;
