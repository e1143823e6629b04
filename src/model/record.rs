//! The record of one registered session: what a node other than the owner needs to answer a
//! discovery for it. Stored as JSON in the registry (`docs/redis.md`).

use super::ids::{NodeId, SessionId};
use crate::protocol::{PeerHint, TokenHash};
use serde::{Deserialize, Serialize};

/// Everything a node other than the owner needs to answer a discovery for this session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub session: SessionId,
    pub node: NodeId,
    pub token: TokenHash,
    /// Microseconds since the Unix epoch; discovery asks the newest session first.
    pub registered_at_us: u64,
    /// The host that discovery answers with (custom host, else the client address).
    pub host: String,
    /// The subprotocol's service port, used when the JSON-RPC fails.
    pub port_hint: Option<u16>,
    pub peer: PeerHint,
}

/// Sorts records newest first; ties (same microsecond) broken by session id for a stable order.
pub fn newest_first(records: &mut [SessionRecord]) {
    records.sort_by(|a, b| {
        b.registered_at_us
            .cmp(&a.registered_at_us)
            .then(b.session.cmp(&a.session))
    });
}
