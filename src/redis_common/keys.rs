//! Every Redis key and channel name, built in one place. What each holds, how it is encoded and
//! who writes it: `docs/redis.md` (the schema is written there once).
//!
//! Keys carry Redis Cluster hash tags (the part in braces decides the slot): a token's records
//! live in the slot of its hash, a node's session set, probe key and channel in the slot of the
//! node's id, so that each command and script touches one slot and the data spreads over the
//! shards. On one Redis the braces are just characters. The prefix may not contain braces
//! (checked with the flags), or the first brace pair would be the prefix's.

use crate::model::{NodeId, SessionId};
use crate::protocol::TokenHash;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn token(&self, token: &TokenHash) -> String {
        format!("{}{}}}", self.token_prefix(), token.to_hex())
    }

    /// What `remove_node.lua` puts before a member's token hash to name its token key (and
    /// `}` after it).
    pub fn token_prefix(&self) -> String {
        format!("{}:tok:{{", self.prefix)
    }

    pub fn node_sessions(&self, node: &NodeId) -> String {
        format!("{}:node:{{{}}}:sessions", self.prefix, node.0)
    }

    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Each node's figures for the cluster status page, written by its heartbeat. The hash
    /// tag is the heartbeats key's whole name: the same Cluster slot, so one script writes
    /// both.
    pub fn node_stats(&self) -> String {
        format!("{{{}}}:stats", self.nodes())
    }

    /// The nodes re-asserting their sessions after Redis lost data (or whose re-assertion
    /// failed), written by their heartbeats; in the heartbeats key's slot like `node_stats`.
    pub fn node_unsettled(&self) -> String {
        format!("{{{}}}:unsettled", self.nodes())
    }

    /// Written by readiness checks: a write that fails when Redis refuses writes.
    pub fn probe(&self, node: &NodeId) -> String {
        format!("{}:node:{{{}}}:probe", self.prefix, node.0)
    }

    pub fn node_channel(&self, node: &NodeId) -> String {
        format!("{}:node:{{{}}}", self.prefix, node.0)
    }

    /// The nodes that read a token's records repeatedly and cache them: told of its new
    /// registrations (`track.lua`, `register.lua`). In the token's slot.
    pub fn readers(&self, token: &TokenHash) -> String {
        format!("{}:rdr:{{{}}}", self.prefix, token.to_hex())
    }

    /// A node's registration notices: a classic channel on every topology, so that
    /// `register.lua` can publish to it from the token's slot (a sharded channel must be in the
    /// script's slot).
    pub fn notice_channel(&self, node: &NodeId) -> String {
        let (before, after) = self.notice_channel_parts();
        format!("{before}{}{after}", node.0)
    }

    /// What `register.lua` puts before and after a node id to name its notice channel.
    pub fn notice_channel_parts(&self) -> (String, &'static str) {
        (format!("{}:node:{{", self.prefix), "}:notices")
    }

    pub fn events_channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// A member of a node's session set.
    pub fn member(token: &TokenHash, session: SessionId) -> String {
        format!("{}:{}", token.to_hex(), session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema() {
        let k = Keys::new("hostie");
        let h = TokenHash([0xab; 32]);
        let n = NodeId("a".into());
        assert_eq!(k.token(&h), format!("hostie:tok:{{{}}}", "ab".repeat(32)));
        assert_eq!(k.node_sessions(&n), "hostie:node:{a}:sessions");
        assert_eq!(k.nodes(), "hostie:nodes");
        assert_eq!(k.probe(&n), "hostie:node:{a}:probe");
        assert_eq!(k.node_channel(&n), "hostie:node:{a}");
        assert_eq!(k.events_channel(), "hostie:events");
        assert_eq!(k.notice_channel(&n), "hostie:node:{a}:notices");
        assert_eq!(k.readers(&h), format!("hostie:rdr:{{{}}}", "ab".repeat(32)));
        let s = SessionId(uuid::Uuid::nil());
        assert_eq!(
            Keys::member(&h, s),
            format!("{}:00000000-0000-0000-0000-000000000000", "ab".repeat(32))
        );
    }
}
