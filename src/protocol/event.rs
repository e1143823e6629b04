//! IoEvent frames: every text frame, both ways, is `{"name": <string>, "payload": <any>}`.
//!
//! Inbound frames are classified without parsing payloads the registry does not need (scan,
//! message, … can be a few KiB); only `jsonrpc` payloads are read.

use super::jsonrpc::{PortReply, PortRequest, parse_reply};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Event names a client sends, as a fixed set usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Sys,
    Heartbeat,
    Scan,
    Login,
    Logout,
    Error,
    Message,
    JsonRpc,
    Unknown,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        Self::Sys,
        Self::Heartbeat,
        Self::Scan,
        Self::Login,
        Self::Logout,
        Self::Error,
        Self::Message,
        Self::JsonRpc,
        Self::Unknown,
    ];

    fn from_name(name: &str) -> Self {
        match name {
            "sys" => Self::Sys,
            "heartbeat" => Self::Heartbeat,
            "scan" => Self::Scan,
            "login" => Self::Login,
            "logout" => Self::Logout,
            "error" => Self::Error,
            "message" => Self::Message,
            "jsonrpc" => Self::JsonRpc,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sys => "sys",
            Self::Heartbeat => "heartbeat",
            Self::Scan => "scan",
            Self::Login => "login",
            Self::Logout => "logout",
            Self::Error => "error",
            Self::Message => "message",
            Self::JsonRpc => "jsonrpc",
            Self::Unknown => "unknown",
        }
    }
}

/// An inbound frame, as far as the registry cares.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A JSON-RPC reply to (possibly) one of our requests.
    RpcReply(PortReply),
    /// Any other well-formed event; tolerated and counted.
    Other(EventKind),
}

/// Why an inbound text frame was dropped. Never fatal to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is not an IoEvent JSON object")]
    Malformed,
    #[error("frame JSON nests deeper than the limit")]
    TooDeep,
}

impl FrameError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooDeep => "too_deep",
        }
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// Classifies one inbound text frame. `max_depth` bounds nesting before any parsing happens.
pub fn parse_client_frame(text: &str, max_depth: usize) -> Result<ClientEvent, FrameError> {
    if json_depth_exceeds(text, max_depth) {
        return Err(FrameError::TooDeep);
    }
    // serde's derived struct also accepts an array (["sys", …]); an IoEvent is an object.
    if !text.trim_start().starts_with('{') {
        return Err(FrameError::Malformed);
    }
    let raw: RawEvent<'_> = serde_json::from_str(text).map_err(|_| FrameError::Malformed)?;
    let kind = EventKind::from_name(&raw.name);
    if kind == EventKind::JsonRpc
        && let Some(reply) = raw.payload.and_then(parse_reply)
    {
        return Ok(ClientEvent::RpcReply(reply));
    }
    Ok(ClientEvent::Other(kind))
}

/// True when arrays/objects nest deeper than `max`, counting only brackets outside strings.
/// serde_json's own recursion limit (128) is fixed; this one is configurable and cheaper to hit.
fn json_depth_exceeds(text: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The only events the registry ever sends. `botie`, `shutdown`, `reset` and `logout` make real
/// clients run code or exit, so they cannot even be expressed here.
#[derive(Debug)]
pub enum ServerEvent {
    PortRequest(PortRequest),
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    name: &'a str,
    payload: T,
}

impl ServerEvent {
    pub fn to_text(&self) -> String {
        let json = match self {
            ServerEvent::PortRequest(req) => serde_json::to_string(&Envelope {
                name: "jsonrpc",
                payload: req,
            }),
        };
        json.expect("serializing plain structs of strings and integers cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::jsonrpc::{PortResult, RpcId};

    #[test]
    fn classifies_known_events() {
        let sys = r#"{"name":"sys","payload":"Wechaty version 1.20.2 with CUID: abc"}"#;
        assert_eq!(
            parse_client_frame(sys, 32),
            Ok(ClientEvent::Other(EventKind::Sys))
        );
        let hb = r#"{"name":"heartbeat","payload":{"type":"heartbeat","data":"x"}}"#;
        assert_eq!(
            parse_client_frame(hb, 32),
            Ok(ClientEvent::Other(EventKind::Heartbeat))
        );
        assert_eq!(
            parse_client_frame(r#"{"name":"whatever"}"#, 32),
            Ok(ClientEvent::Other(EventKind::Unknown))
        );
    }

    #[test]
    fn jsonrpc_reply() {
        let f = r#"{"name":"jsonrpc","payload":{"id":7,"jsonrpc":"2.0","result":18789}}"#;
        assert_eq!(
            parse_client_frame(f, 32),
            Ok(ClientEvent::RpcReply(PortReply {
                id: RpcId::Num(7),
                result: PortResult::Port(18789)
            }))
        );
        let req = r#"{"name":"jsonrpc","payload":{"id":7,"jsonrpc":"2.0","method":"x"}}"#;
        assert_eq!(
            parse_client_frame(req, 32),
            Ok(ClientEvent::Other(EventKind::JsonRpc))
        );
    }

    #[test]
    fn malformed_frames() {
        for f in [
            "",
            "not json",
            "[]",
            r#"["sys","x"]"#,
            r#"{"payload":1}"#,
            r#"{"name":5}"#,
            "{",
        ] {
            assert_eq!(
                parse_client_frame(f, 32),
                Err(FrameError::Malformed),
                "{f:?}"
            );
        }
    }

    #[test]
    fn depth_limit() {
        let deep = format!(
            "{{\"name\":\"x\",\"payload\":{}{}}}",
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(parse_client_frame(&deep, 32), Err(FrameError::TooDeep));
        assert!(parse_client_frame(&deep, 64).is_ok());
        let in_string = format!("{{\"name\":\"x\",\"payload\":\"{}\\\"\"}}", "[".repeat(100));
        assert_eq!(
            parse_client_frame(&in_string, 4),
            Ok(ClientEvent::Other(EventKind::Unknown))
        );
    }

    #[test]
    fn outbound_port_request() {
        let text = ServerEvent::PortRequest(PortRequest::new(3)).to_text();
        assert_eq!(
            text,
            r#"{"name":"jsonrpc","payload":{"jsonrpc":"2.0","id":3,"method":"getHostieGrpcPort"}}"#
        );
    }
}

#[cfg(test)]
#[path = "event_proptests.rs"]
mod proptests;
