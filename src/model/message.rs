//! What travels on the node channels, the nodes' notice channels and the events channel. Plain data: session ids, token
//! hashes and ports, never tokens. The JSON shape is the node-to-node format (`docs/redis.md`):
//! nodes of two versions must understand each other during a rolling upgrade.

use super::ids::{NodeId, SessionId};
use super::port::PortAnswer;
use crate::protocol::TokenHash;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum BusMessage {
    /// "Ask your session for its port; answer on my channel within `budget_ms`" (the owner's
    /// wait: a little less than the asker's, so that a fallback answer arrives in time).
    Request {
        id: u64,
        from: NodeId,
        session: SessionId,
        budget_ms: u64,
    },
    /// The answer to request `id`; `None` when the session is gone from the owner.
    Reply { id: u64, answer: Option<PortAnswer> },
    /// A node is draining: fail over from it at once.
    Leave { node: NodeId },
    /// A node recorded a new session of a token (published by the registration script).
    Registered { token: TokenHash, node: NodeId },
}

impl BusMessage {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("bus messages are plain strings and integers")
    }

    pub fn decode(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PortSource;

    #[test]
    fn a_reply_of_a_node_that_does_not_probe_reads_as_unprobed() {
        // The shape before reachability existed, and what such a node makes of a new reply.
        let old = r#"{"t":"reply","id":3,"answer":{"port":18789,"source":"Rpc"}}"#;
        let Some(BusMessage::Reply {
            answer: Some(a), ..
        }) = BusMessage::decode(old.as_bytes())
        else {
            panic!("an old reply decodes");
        };
        assert_eq!(a.reach, None);
        let new = BusMessage::Reply {
            id: 3,
            answer: Some(PortAnswer {
                reach: Some(crate::model::Reach::Denied),
                ..a
            }),
        }
        .encode();
        assert!(new.contains(r#""reach":"denied""#), "{new}");
        #[derive(serde::Deserialize)]
        struct OldAnswer {
            port: u16,
        }
        #[derive(serde::Deserialize)]
        struct OldReply {
            answer: OldAnswer,
        }
        let read: OldReply = serde_json::from_str(&new).unwrap();
        assert_eq!(read.answer.port, 18789);
    }

    #[test]
    fn round_trips() {
        let msgs = [
            BusMessage::Request {
                id: 7,
                from: NodeId("a".into()),
                session: SessionId::new(),
                budget_ms: 2500,
            },
            BusMessage::Reply {
                id: 7,
                answer: Some(PortAnswer {
                    port: 18789,
                    source: PortSource::Rpc,
                    reach: Some(crate::model::Reach::Reachable),
                }),
            },
            BusMessage::Reply {
                id: 9,
                answer: Some(PortAnswer {
                    port: 1,
                    source: PortSource::NoPeer,
                    reach: None,
                }),
            },
            BusMessage::Reply {
                id: 8,
                answer: None,
            },
            BusMessage::Leave {
                node: NodeId("b".into()),
            },
            BusMessage::Registered {
                token: TokenHash([7; 32]),
                node: NodeId("c".into()),
            },
        ];
        for m in msgs {
            assert_eq!(BusMessage::decode(m.encode().as_bytes()), Some(m));
        }
        assert_eq!(BusMessage::decode(b"{\"t\":\"other\"}"), None);
        assert_eq!(BusMessage::decode(b"garbage"), None);
    }
}
