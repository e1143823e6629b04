//! Node-to-node request/response: "ask session S on node N for its port".
//!
//! The requester bounds the wait; the owner answers through its own hub, whose session
//! single-flights the RPC. A node never sends a request to itself through the bus: local targets
//! are asked directly.

pub mod memory;
pub mod message;
pub mod redis;

use crate::hub::{PortAnswer, SessionGone};
use crate::protocol::TokenHash;
use crate::registry::{NodeId, SessionId};
use async_trait::async_trait;
use std::time::Duration;

pub use memory::{MemoryBus, MemoryNetwork};
pub use redis::RedisBus;

/// The owner side of the bus: whatever answers port requests for this node's sessions.
#[async_trait]
pub trait PortResponder: Send + Sync + 'static {
    async fn ask_local(
        &self,
        session: SessionId,
        budget: Duration,
    ) -> Result<PortAnswer, SessionGone>;

    /// Another node recorded a session of `token`.
    fn foreign_registration(&self, token: &TokenHash);

    /// Another node is draining: its sessions are no longer offered.
    fn peer_leaving(&self, node: &NodeId);

    /// Where work for `session` should run (the runtime of its worker thread), if known.
    fn home(&self, session: SessionId) -> Option<tokio::runtime::Handle>;
}

#[async_trait]
impl PortResponder for crate::hub::Hub {
    async fn ask_local(
        &self,
        session: SessionId,
        budget: Duration,
    ) -> Result<PortAnswer, SessionGone> {
        self.ask_port(session, budget).await
    }

    fn foreign_registration(&self, token: &TokenHash) {
        self.mark_shared(token);
    }

    fn peer_leaving(&self, node: &NodeId) {
        self.remote().forget_node(node);
    }

    fn home(&self, session: SessionId) -> Option<tokio::runtime::Handle> {
        crate::hub::Hub::home(self, session)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The target node is not on the bus (dead, draining, or never existed).
    #[error("node {0} is not reachable on the bus")]
    NodeGone(NodeId),
    /// The target node answered that the session is no longer there.
    #[error("session is gone from its node")]
    SessionGone,
    /// No answer within the budget.
    #[error("no answer from node within the deadline")]
    Timeout,
    /// The transport itself failed.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Asks `target` for the port of its session, waiting at most `budget`.
    async fn ask_port(
        &self,
        target: &NodeId,
        session: SessionId,
        budget: Duration,
    ) -> Result<PortAnswer, BusError>;

    /// Tells peers this node is leaving (drain).
    async fn leave(&self) -> Result<(), BusError>;

    /// Whether the bus can carry requests, for readiness.
    async fn check(&self) -> Result<(), BusError>;

    /// While the bus delivers every node's registration notices: the number of the current
    /// subscription (it changes on every resubscribe, since notices may have been missed in
    /// between). `None` when notices are not delivered (in-memory bus, or unsubscribed).
    fn notice_epoch(&self) -> Option<u64> {
        None
    }
}
