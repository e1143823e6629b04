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
//! A module imports only from its own layer's lower rows and the layers below it; a file's
//! place tells what it may import.
//!
//! | layer | modules | may import |
//! |---|---|---|
//! | 0. shared data | [`protocol`] (wire types, pure parsing), then [`model`] (ids, records, port answers, bus messages, outcome enums) | `model` → `protocol`; nothing else of the crate |
//! | 1. plumbing | [`metrics`] (maps model enums to labels), [`telemetry`], [`config`], [`tls`], [`shutdown`] | layer 0 |
//! | 2a. shared backends | [`redis_common`] (command connections, key names), [`memory_broker`] (in-process pub/sub) | layers 0–1 |
//! | 2b. seams | [`hub`] (this node's sessions), [`registry`] (who holds which session), [`bus`] (node-to-node requests and notices): none imports another | layers 0–2a |
//! | 3. node | [`node`] (admission, [`node::discovery`], [`node::remote_cache`], [`node::liveness`], drain) | layers 0–2 |
//! | 4. session | [`session`] (one task per WebSocket; [`session::rpc_table`]) | layers 0–3 |
//! | 5. edge | [`http`] (handlers; [`http::error`] maps errors to statuses), [`startup`] (build, bind, run, drain) | layers 0–4 |
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
