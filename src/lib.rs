//! # hostie — a registry for Wechaty Puppet Services
//!
//! Puppet servers register a token by holding a WebSocket to `/v0/websocket`; SDKs discover
//! the token's gRPC `{"host","ip","port"}` with `GET /v0/hosties/{token}`. The wire contract
//! with the published clients is `docs/protocol.md`; this crate keeps it byte-compatible with
//! the original api.chatie.io. Architecture and failure semantics: `docs/architecture.md`.
//! Every Redis key, channel and encoding: `docs/redis.md` (written there once).
//!
//! ## Layers
//!
//! Each module may import only from the rows above its own; modules of one row never import
//! one another. A file's row tells what it may import, and `tests/api/layers.rs` checks it.
//!
//! | row | modules | what they hold |
//! |---|---|---|
//! | 0 | [`protocol`] | wire types and pure parsing: no IO, no runtime |
//! | 1 | [`model`] | shared data: ids, session records, port answers, bus messages, outcome enums |
//! | 2 | [`config`], [`tls`], [`shutdown`], [`fd_limit`] | process plumbing |
//! | 3 | [`telemetry`], [`metrics`] | logs; Prometheus series (model enums mapped to labels) |
//! | 4 | [`redis_common`], [`memory_broker`] | what the backends share: Redis connections and key names; in-process pub/sub |
//! | 5 | [`hub`], [`registry`], [`bus`] | the seams: this node's sessions; who holds which session; node-to-node requests and notices |
//! | 6 | [`node`] | admission, [`node::discovery`], [`node::remote_cache`], [`node::liveness`], drain |
//! | 7 | [`session`] | one task per WebSocket ([`session::rpc_table`]: its JSON-RPC requests) |
//! | 8 | [`http`] | handlers; [`http::error`] is the one place errors become statuses |
//! | 9 | [`startup`] | build, bind, run until shutdown, drain: what `main` and the tests start |
//!
//! The node is the only module that knows hub, registry and bus together. It answers other
//! nodes' requests as the bus's [`bus::PortResponder`]; the bus and the registry never call
//! back into it otherwise. Sessions sit above the node: they report their end to it, and it
//! reaches them only through the hub's bounded command queue.
//!
//! ## How a discovery flows
//!
//! 1. `GET /v0/hosties/{token}` → rate limit per client address → token percent-decoded and
//!    hashed (SHA-256).
//! 2. [`node::Node::discover`] takes the token's candidates, newest first: from the hub alone
//!    when this node provably holds every session of the token ([`hub::Hub::fast_candidates`]),
//!    from the records of other nodes' sessions it read recently ([`node::remote_cache`]), else
//!    from the registry (from the hub alone when the registry cannot be read).
//! 3. Each candidate is asked for its port through [`bus::Bus::ask_port`] within a share of the
//!    deadline: a local one directly, a remote one over the transport. The owning session sends
//!    `{"name":"jsonrpc","payload":{"jsonrpc":"2.0","id":N,"method":"getHostieGrpcPort"}}`
//!    unless its subprotocol says it has no JSON-RPC peer; concurrent asks share one request.
//! 4. The first RPC port wins (200, outcome `hit`). A fallback port (subprotocol port, else
//!    `--fallback-port`) from a silent or failing session is answered only if no older session
//!    does better (200, `fallback`/`timeout`). No live session: 404 with the all-zero body.
//!    Registry or bus failure: 503 with `Retry-After`.
//!
//! In cluster mode step 2 is one `HVALS` (records of nodes whose heartbeat ran out are left
//! out) or nothing at all, and a remote ask in step 3 is a PUBLISH on the owner's channel
//! answered by a PUBLISH on ours ([`bus::redis`]): at most 3 Redis round trips.
//!
//! ## Shared state
//!
//! Tokens are never stored or logged in the clear: records, bus messages and logs carry
//! [`protocol::TokenHash`] (logs show its first 8 hex digits). The embedded mode keeps the
//! registry in memory; cluster mode keeps it in Redis (`docs/redis.md`). The hub is the truth;
//! Redis is a cache rebuilt from it: [`node::liveness`] re-asserts every session whenever Redis
//! lost this node's entry (restart, flush, failover) or an outage ended, and sweeps the records
//! of nodes whose heartbeat ran out.
//!
//! ## Logs
//!
//! Registration (`register`, info), discovery (`discover`, debug) and the session loop
//! (`session`, debug) run in `tracing` spans that carry the node id and the short token hash,
//! never the token. Discovery and session spans are at debug level: one per discovery is a
//! cost on the hot path, and one per idle session is memory on each of ≈19k; follow one
//! discovery during an incident with `RUST_LOG=info,hostie=debug`. Errors are logged with their
//! whole cause chain ([`telemetry::ErrorChain`]).

pub mod bus;
pub mod config;
pub mod fd_limit;
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
