//! How a port question ended. One session is asked "what is your gRPC port?": by its own node
//! through the hub, or by another node through the bus. Both answer in these terms:
//! `Result<PortAnswer, PortError>`.

use super::ids::NodeId;
use serde::{Deserialize, Serialize};

/// Where an answered port came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortSource {
    /// The client answered `getHostieGrpcPort`.
    Rpc,
    /// The subprotocol says the client has no JSON-RPC peer; not asked.
    NoPeer,
    /// The client answered with something that is not a port.
    RpcFailed,
    /// The client did not answer in time.
    RpcTimeout,
}

/// Whether a session's advertised `host:port` accepted a TCP connection when its node last
/// probed it (`--probe-reachability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    Reachable,
    Unreachable,
    /// Not probed: the address is in a `--probe-deny` range.
    Denied,
    /// Not probed yet.
    Unchecked,
}

impl Reach {
    pub const PROBED: [Reach; 3] = [Self::Reachable, Self::Unreachable, Self::Denied];

    /// The answer's `reachability` field and the metric's label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Reachable => "reachable",
            Self::Unreachable => "unreachable",
            Self::Denied => "denied",
            Self::Unchecked => "unchecked",
        }
    }
}

/// A session's port, as the owning node determined it. Travels on the bus (see
/// [`super::BusMessage::Reply`]): its JSON shape is part of the node-to-node format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortAnswer {
    pub port: u16,
    pub source: PortSource,
    /// The session's last probe, when the owner probes (absent from nodes that do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
}

/// A port question that produced no port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The session is not (or no longer) on its node: it closed, or its node drains. Not a
    /// failure: with no other candidate the discovery is a 404.
    #[error("session is gone from its node")]
    SessionGone,
    /// The owner is not on the bus (dead, or never existed): nobody received the request.
    #[error("node {0} is not reachable on the bus")]
    NodeGone(NodeId),
    /// No answer within the wait the asker gave it.
    #[error("no answer within the wait")]
    Timeout,
    /// The bus itself failed; the cause says how.
    #[error("the bus could not carry the request")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl PortError {
    /// Whether the answer proves the candidate out of date (as opposed to unknown).
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::SessionGone | Self::NodeGone(_))
    }
}

/// What one `getHostieGrpcPort` request to a client ended with, as seen by every waiter that
/// joined it. The hub turns it into a [`PortAnswer`] (a failure becomes a fallback port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcOutcome {
    Port(u16),
    /// `result: null`, a non-integer, or an error object.
    Failed,
    /// No reply within the RPC timeout.
    TimedOut,
}
