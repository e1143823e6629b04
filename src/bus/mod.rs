//! Node-to-node request/response: "ask session S on node N for its port", and the cluster-wide
//! notices (a session registered, a node leaving).
//!
//! The discipline of a request is written once, in [`Bus`]: a target that is this node is asked
//! directly (never through the transport); otherwise the pending slot is registered before the
//! request is published, a publish that reached nobody fails over at once, the wait is bounded,
//! a guard removes the slot however the request ends, and late or duplicate replies are dropped
//! silently. Below it, a [`Transport`] only carries messages: in memory
//! ([`memory::MemoryTransport`], over a [`crate::memory_broker::MemoryBroker`]) or over Redis
//! pub/sub ([`redis::RedisTransport`]). The same contract tests run on both
//! (`tests/api/bus_contract.rs`).
//!
//! The owner side, whatever answers for this node's sessions, is a [`PortResponder`]: the node.

pub mod memory;
pub mod redis;
mod requests;

use crate::model::{BusMessage, NodeId, PortAnswer, PortError, SessionId};
use crate::protocol::TokenHash;
use crate::redis_common::CommandError;
use async_trait::async_trait;
use std::sync::Weak;
use std::time::Duration;

pub use memory::MemoryTransport;
pub use redis::RedisTransport;
pub use requests::Bus;

/// The owner side of the bus: answers port requests for this node's sessions and hears the
/// notices of other nodes.
#[async_trait]
pub trait PortResponder: Send + Sync + 'static {
    /// Asks one of this node's sessions for its port, waiting at most `wait`.
    async fn ask_local(&self, session: SessionId, wait: Duration) -> Result<PortAnswer, PortError>;

    /// Another node recorded a session of `token`.
    fn foreign_registration(&self, token: &TokenHash);

    /// Another node is draining: its sessions are no longer offered.
    fn peer_leaving(&self, node: &NodeId);

    /// Where work for `session` should run (the runtime of its worker thread), if known.
    fn home(&self, session: SessionId) -> Option<tokio::runtime::Handle>;
}

/// What carries bus messages between nodes. It knows channels and payloads, nothing of
/// requests: [`Bus`] holds the discipline.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Starts delivering this node's channels (requests and replies; its registration notices)
    /// and the events channel to `bus`.
    fn attach(&self, bus: Weak<Bus>);

    /// Publishes on node `to`'s channel; how many subscribers received it (0: nobody listens
    /// there, so the node is gone).
    async fn send(&self, to: &NodeId, message: &BusMessage) -> Result<usize, TransportError>;

    /// Publishes on the events channel, read by every node.
    async fn broadcast(&self, message: &BusMessage) -> Result<(), TransportError>;

    /// While every node's notices are delivered: the number of the current subscription (it
    /// changes on every resubscribe, since notices may have been missed in between). `None`
    /// while not subscribed.
    fn epoch(&self) -> Option<u64>;
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("bus unavailable")]
    Redis(#[source] CommandError),
    #[error("bus unavailable: not subscribed to this node's channel")]
    NotSubscribed,
    /// Nobody received a request, where that does not prove the target gone (Sentinel,
    /// Cluster: the publish may have run on a server the target has not moved to yet).
    #[error("bus unavailable: nobody received the request, and a Redis failover may be under way")]
    NoReceiver,
}
