//! JSON-RPC 2.0 `getHostieGrpcPort`, carried inside the IoEvent envelope.
//!
//! The method name on the wire is `getHostieGrpcPort` (not `hostieGrpcPort`, which real clients
//! answer with `result: null`). `"jsonrpc":"2.0"` and a non-null id are mandatory, or the client
//! stays silent.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

pub const PORT_METHOD: &str = "getHostieGrpcPort";

/// The request payload the registry sends.
#[derive(Debug, Serialize)]
pub struct PortRequest {
    jsonrpc: &'static str,
    pub id: i64,
    method: &'static str,
}

impl PortRequest {
    pub fn new(id: i64) -> Self {
        Self {
            jsonrpc: "2.0",
            id,
            method: PORT_METHOD,
        }
    }
}

/// A reply id. Clients echo the id they were sent; some echo numbers as strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcId {
    Num(i64),
    Str(String),
}

impl RpcId {
    /// The numeric id this reply answers, if it can answer one of ours (we only send integers).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            RpcId::Num(n) => Some(*n),
            RpcId::Str(s) => s.parse().ok(),
        }
    }
}

/// What a reply says about the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortResult {
    Port(u16),
    /// `result: null`, a string, a float, out of range, or no result at all.
    NotAPort,
    /// A JSON-RPC error object.
    Error {
        code: i64,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortReply {
    pub id: RpcId,
    pub result: PortResult,
}

#[derive(Deserialize)]
struct RawReply {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    result: Value,
    /// Any non-null value: a client's error report is an error reply even when its members have
    /// the wrong types (it still answers our request).
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    method: Option<Value>,
}

/// A reply to one of our requests, or `None` for anything else: requests from the client, replies
/// without a usable id, payloads that are not objects.
pub fn parse_reply(payload: &RawValue) -> Option<PortReply> {
    // serde's derived struct also accepts a JSON array ([id, result, …]); a reply is an object.
    if !payload.get().trim_start().starts_with('{') {
        return None;
    }
    let raw: RawReply = serde_json::from_str(payload.get()).ok()?;
    if raw.method.is_some() {
        return None;
    }
    let id = match raw.id {
        Value::Number(n) => RpcId::Num(n.as_i64()?),
        Value::String(s) => RpcId::Str(s),
        _ => return None,
    };
    let result = match raw.error {
        Some(e) => PortResult::Error {
            code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        },
        None => raw
            .result
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .map_or(PortResult::NotAPort, PortResult::Port),
    };
    Some(PortReply { id, result })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(json: &str) -> Option<PortReply> {
        parse_reply(&RawValue::from_string(json.to_owned()).unwrap())
    }

    #[test]
    fn request_shape() {
        let json = serde_json::to_string(&PortRequest::new(-9007199254740991)).unwrap();
        assert_eq!(
            json,
            r#"{"jsonrpc":"2.0","id":-9007199254740991,"method":"getHostieGrpcPort"}"#
        );
    }

    #[test]
    fn real_client_reply() {
        let r = reply(r#"{"id":-9007199254740991,"jsonrpc":"2.0","result":18789}"#).unwrap();
        assert_eq!(r.id.as_i64(), Some(-9007199254740991));
        assert_eq!(r.result, PortResult::Port(18789));
    }

    #[test]
    fn string_id() {
        let r = reply(r#"{"id":"42","jsonrpc":"2.0","result":1}"#).unwrap();
        assert_eq!(r.id, RpcId::Str("42".into()));
        assert_eq!(r.id.as_i64(), Some(42));
        assert_eq!(RpcId::Str("x".into()).as_i64(), None);
    }

    #[test]
    fn failure_shapes() {
        for json in [
            r#"{"id":1,"jsonrpc":"2.0","result":null}"#,
            r#"{"id":1,"jsonrpc":"2.0","result":"18789"}"#,
            r#"{"id":1,"jsonrpc":"2.0","result":18789.5}"#,
            r#"{"id":1,"jsonrpc":"2.0","result":70000}"#,
            r#"{"id":1,"jsonrpc":"2.0","result":-1}"#,
            r#"{"id":1,"jsonrpc":"2.0"}"#,
        ] {
            assert_eq!(reply(json).unwrap().result, PortResult::NotAPort, "{json}");
        }
        let e = reply(
            r#"{"error":{"code":-32601,"message":"Method not found"},"id":1,"jsonrpc":"2.0"}"#,
        )
        .unwrap();
        assert_eq!(
            e.result,
            PortResult::Error {
                code: -32601,
                message: "Method not found".into()
            }
        );
    }

    #[test]
    fn malformed_error_objects_are_still_error_replies() {
        // Found by the property test: a wrongly typed error member made the whole reply
        // unreadable, so the discovery waiting for it waited out its deadline.
        for (json, code, message) in [
            (r#"{"error":{"message":null},"id":0}"#, 0, ""),
            (r#"{"error":{"code":"x","message":"m"},"id":0}"#, 0, "m"),
            (r#"{"error":{"code":-32000.5},"id":0}"#, 0, ""),
            (r#"{"error":{"code":7,"message":5},"id":0}"#, 7, ""),
            (r#"{"error":"boom","id":0}"#, 0, ""),
            (r#"{"error":{},"id":0,"result":18789}"#, 0, ""),
        ] {
            assert_eq!(
                reply(json).unwrap().result,
                PortResult::Error {
                    code,
                    message: message.into()
                },
                "{json}"
            );
        }
        let null = reply(r#"{"error":null,"id":0,"result":18789}"#).unwrap();
        assert_eq!(null.result, PortResult::Port(18789));
    }

    #[test]
    fn not_replies() {
        assert!(reply(r#"{"id":1,"jsonrpc":"2.0","method":"ding"}"#).is_none());
        assert!(reply(r#"{"id":null,"jsonrpc":"2.0","result":1}"#).is_none());
        assert!(reply(r#"{"jsonrpc":"2.0","result":1}"#).is_none());
        assert!(reply(r#"[1,2]"#).is_none());
        assert!(reply(r#""text""#).is_none());
    }
}

#[cfg(test)]
#[path = "jsonrpc_proptests.rs"]
mod proptests;
