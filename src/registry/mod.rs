//! The cluster-wide record of which node holds which session of a token.
//!
//! The node's hub is the truth about its own sessions; a registry is a shared index of every
//! node's hub, written by the owners and read by whoever answers a discovery. Records are fenced
//! by session id: removing a record names the session, so an old owner can never remove a newer
//! registration of the same token.

pub mod memory;
pub mod redis;

use crate::metrics::Label;
use crate::model::{NodeId, RedisOp, SessionId, SessionRecord};
use crate::protocol::TokenHash;
use crate::redis_common::CommandError;
use async_trait::async_trait;
use std::time::Duration;

pub use memory::MemoryRegistry;
pub use redis::RedisRegistry;

/// Whether a registration was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Recorded. `shared`: another node holds a live record of the same token, so this node
    /// alone cannot tell which session is the newest.
    Admitted { shared: bool },
    /// The token already has `max_per_token` live sessions. Nobody is kicked: two gateways
    /// kicking each other would reconnect-loop forever.
    TokenFull,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A Redis command failed or did not answer within the operation timeout.
    #[error("registry backend unavailable: {}", op.label())]
    Redis {
        op: RedisOp,
        #[source]
        source: CommandError,
    },
    /// The caller's deadline ran out before the registry answered.
    #[error("the registry did not answer within the deadline")]
    Deadline,
}

/// A node's figures for the cluster status page, carried by its heartbeats (JSON in Redis).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeStats {
    pub version: String,
    /// Live sessions (WebSocket registrations) on the node.
    pub sessions: u64,
    /// Discoveries per second the node answered, over its last few seconds.
    pub discovery_rate: f64,
    pub draining: bool,
}

#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Records a session unless its token already has `max_per_token` sessions, not counting
    /// (and removing) records of the `dead` nodes (the caller's judgement of its peers).
    async fn register(
        &self,
        record: &SessionRecord,
        max_per_token: usize,
        dead: &[NodeId],
    ) -> Result<Admission, RegistryError>;

    /// Tells the registry that `node` caches `token`'s records: every new registration of it
    /// is announced to `node` (a `registered` notice on its own channel) for as long as the
    /// returned duration, counted from when this call was made. Only lookups sent after it
    /// returned may be cached on its strength.
    async fn track(&self, token: &TokenHash, node: &NodeId) -> Result<Duration, RegistryError>;

    /// Removes exactly this session's record (fenced by id).
    async fn release(&self, token: &TokenHash, session: SessionId) -> Result<(), RegistryError>;

    /// The token's recorded sessions, newest first, and whether the registry can vouch that
    /// none is missing. Records of nodes whose heartbeat ran out are included until swept: the
    /// node leaves out the ones its last heartbeat reported dead.
    async fn candidates(&self, token: &TokenHash) -> Result<Lookup, RegistryError>;

    /// Removes every record of a node (drain).
    async fn release_node(&self, node: &NodeId) -> Result<(), RegistryError>;

    /// Whether the registry takes writes, for readiness: a write, because a Redis that still
    /// answers reads may refuse writes (paused, out of memory, demoted to a replica).
    async fn check(&self) -> Result<(), RegistryError>;

    /// Marks this node alive for another TTL and reports the cluster's view.
    async fn heartbeat(&self, node: &NodeId) -> Result<Heartbeat, RegistryError>;

    /// Removes the records of a node whose heartbeat ran out (fenced: not if it beat again).
    /// Returns the number of records removed.
    async fn sweep(&self, dead: &NodeId) -> Result<usize, RegistryError>;

    /// Removes `record` if its node has no heartbeat entry at all (not even an expired one):
    /// a record its owner's sweep cannot find (its owner died between writing the record and
    /// its node-set member, which a Cluster writes apart). Returns whether it was removed.
    /// Asked only when the owner's channel reached nobody.
    async fn drop_orphan(&self, record: &SessionRecord) -> Result<bool, RegistryError>;

    /// Writes these records again, whatever the backend lost (restart, flush, failover).
    /// Never checks caps: these sessions are already live.
    async fn reassert(&self, records: &[SessionRecord]) -> Result<(), RegistryError>;

    /// What `node`'s heartbeats carry for the cluster status page from now on (the Redis
    /// registry writes it with its next heartbeat, in the same script).
    fn set_stats(&self, node: &NodeId, stats: &NodeStats);

    /// Whether this node's last re-assertion worked (or none was needed): carried by its next
    /// heartbeats, so that peers keep distrusting "no session" while its records are missing.
    fn set_settled(&self, _settled: bool) {}

    /// Every live node's figures, as its last heartbeat carried them, by node id.
    async fn cluster_stats(&self) -> Result<Vec<(NodeId, NodeStats)>, RegistryError>;
}

/// What a lookup read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    pub records: Vec<SessionRecord>,
    /// False when the registry shows it lost data since this node last wrote it: this node's
    /// own heartbeat entry is gone (Redis restarted empty, was flushed or failed over to a
    /// replica that missed writes, or this node was swept after a pause). Records may then be
    /// missing until every node has re-asserted, so no answer may say "no session".
    pub complete: bool,
}

/// What one heartbeat learned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// The backend had no entry for this node, or it had run out, or the Redis topology
    /// changed (a failover, a slot move): everything must be re-asserted, and peers are not
    /// judged until the topology has settled.
    pub fresh: bool,
    /// Nodes alive now (this one included).
    pub alive: usize,
    /// Nodes whose heartbeat ran out, to sweep.
    pub dead: Vec<NodeId>,
    /// Other live nodes whose records may be missing: re-asserting after the registry lost
    /// data, or their re-assertion failed. While there are any, "no session" is unsure.
    pub unsettled: usize,
}
