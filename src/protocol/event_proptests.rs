//! Properties of the inbound IoEvent frame parser: the depth limit counts exactly the JSON
//! nesting, well-formed envelopes classify by name however they are written, and anything else
//! is dropped, never accepted and never a panic.

use super::*;
use crate::protocol::jsonrpc::{PortResult, RpcId};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// `--max-json-depth` takes 2..=128; within it serde_json's own limit (128) is never reached.
const MAX_DEPTH: std::ops::RangeInclusive<usize> = 2..=128;

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::String),
        // The scanner must not count brackets inside strings, escaped quotes included.
        "[\\[\\]{}\"\\\\]{0,8}".prop_map(Value::String),
    ]
}

/// Any JSON value: a tree up to 5 deep, wrapped in a chain of up to `wraps` arrays and objects.
fn json_value(wraps: usize) -> impl Strategy<Value = Value> {
    let tree = json_leaf().prop_recursive(5, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z\\[{\"]{0,4}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    (tree, prop::collection::vec(any::<bool>(), 0..=wraps)).prop_map(|(mut v, wraps)| {
        for object in wraps {
            v = if object {
                Value::Object([("k".to_owned(), v)].into_iter().collect())
            } else {
                Value::Array(vec![v])
            };
        }
        v
    })
}

/// The reference depth: a scalar is 0, a container one more than its deepest child.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn event_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(EventKind::ALL.map(EventKind::as_str).to_vec()).prop_map(String::from),
        "[a-z]{0,9}",
        any::<String>(),
    ]
}

/// The reference classification by name.
fn kind_of(name: &str) -> EventKind {
    EventKind::ALL
        .into_iter()
        .find(|k| k.as_str() == name)
        .unwrap_or(EventKind::Unknown)
}

/// A JSON string literal for `s`, plainly or with every character as a `\u` escape.
fn string_literal(s: &str, escape_all: bool) -> String {
    if !escape_all {
        return serde_json::to_string(s).unwrap();
    }
    let escaped: String = s.encode_utf16().map(|u| format!("\\u{u:04x}")).collect();
    format!("\"{escaped}\"")
}

/// An envelope written as a client might: either key order, any JSON whitespace, payload
/// optional, an extra key.
#[derive(Debug, Clone)]
struct Envelope {
    name: String,
    payload: Option<Value>,
    escape_name: bool,
    payload_first: bool,
    extra: bool,
    ws: String,
}

impl Envelope {
    fn text(&self) -> String {
        let ws = &self.ws;
        let mut members = vec![format!(
            "\"name\"{ws}:{ws}{}",
            string_literal(&self.name, self.escape_name)
        )];
        if let Some(p) = &self.payload {
            let pair = format!("\"payload\"{ws}:{ws}{p}");
            if self.payload_first {
                members.insert(0, pair);
            } else {
                members.push(pair);
            }
        }
        if self.extra {
            members.push(format!("\"x\"{ws}:{ws}[1,{{}}]"));
        }
        format!(
            "{ws}{{{ws}{}{ws}}}{ws}",
            members.join(&format!("{ws},{ws}"))
        )
    }

    fn depth(&self) -> usize {
        let extra = if self.extra { 2 } else { 0 };
        1 + self.payload.as_ref().map_or(0, depth).max(extra)
    }

    /// The classification the frame must get within the depth limit.
    fn expected(&self) -> ClientEvent {
        let kind = kind_of(&self.name);
        let reply = self.payload.as_ref().and_then(|p| {
            let raw = RawValue::from_string(p.to_string()).unwrap();
            parse_reply(&raw)
        });
        match reply {
            Some(r) if kind == EventKind::JsonRpc => ClientEvent::RpcReply(r),
            _ => ClientEvent::Other(kind),
        }
    }
}

/// Deep chains up to past the largest limit (140), or within every limit (120: at most 127).
fn envelope(wraps: usize) -> impl Strategy<Value = Envelope> {
    (
        event_name(),
        prop::option::weighted(0.9, json_value(wraps)),
        any::<[bool; 3]>(),
        "[ \t\r\n]{0,2}",
    )
        .prop_map(
            |(name, payload, [escape_name, payload_first, extra], ws)| Envelope {
                name,
                payload,
                escape_name,
                payload_first,
                extra,
                ws,
            },
        )
}

/// One character deleted, inserted or replaced somewhere.
fn mutate(text: &str, at: Index, op: u8, c: char) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let i = at.index(chars.len() + 1);
    match op % 3 {
        0 if i < chars.len() => {
            chars.remove(i);
        }
        1 if i < chars.len() => chars[i] = c,
        _ => chars.insert(i, c),
    }
    chars.into_iter().collect()
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), max in 0usize..200) {
        let r = parse_client_frame(&text, max);
        // Not an object: never accepted.
        if !text.trim_start().starts_with('{') {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn envelopes_classify_by_name(e in envelope(140), max in MAX_DEPTH) {
        let text = e.text();
        let got = parse_client_frame(&text, max);
        if e.depth() > max {
            prop_assert_eq!(got, Err(FrameError::TooDeep), "{}", text);
        } else {
            prop_assert_eq!(got, Ok(e.expected()), "{}", text);
        }
    }

    #[test]
    fn depth_limit_is_exact(e in envelope(120)) {
        // At its own depth a frame passes, one below it is too deep.
        let (text, d) = (e.text(), e.depth());
        prop_assert!(parse_client_frame(&text, d).is_ok(), "{}", text);
        prop_assert_eq!(parse_client_frame(&text, d - 1), Err(FrameError::TooDeep));
    }

    #[test]
    fn a_port_reply_frame_is_a_reply(id in any::<i64>(), port in 1u16.., string_id in any::<bool>()) {
        let id_json = if string_id { format!("\"{id}\"") } else { id.to_string() };
        let text = format!(
            r#"{{"name":"jsonrpc","payload":{{"jsonrpc":"2.0","id":{id_json},"result":{port}}}}}"#
        );
        let id = if string_id { RpcId::Str(id.to_string()) } else { RpcId::Num(id) };
        prop_assert_eq!(
            parse_client_frame(&text, 32),
            Ok(ClientEvent::RpcReply(PortReply { id, result: PortResult::Port(port) }))
        );
    }

    #[test]
    fn non_objects_are_malformed(
        v in json_value(120).prop_map(|v| if v.is_object() { Value::Array(vec![v]) } else { v }),
    ) {
        prop_assert_eq!(parse_client_frame(&v.to_string(), 128), Err(FrameError::Malformed));
    }

    #[test]
    fn truncated_frames_are_dropped(e in envelope(140), cut in any::<Index>()) {
        let text = e.text().trim_end().to_owned();
        let cut = text.char_indices().map(|(i, _)| i).nth(cut.index(text.chars().count()));
        prop_assert!(parse_client_frame(&text[..cut.unwrap()], 128).is_err());
    }

    #[test]
    fn mutated_frames_are_accepted_only_if_still_ioevents(
        e in envelope(120),
        at in any::<Index>(),
        op in any::<u8>(),
        c in prop::sample::select(r#"[]{}",:\ 0a\"#.chars().collect::<Vec<_>>()),
    ) {
        let text = mutate(&e.text(), at, op, c);
        // 127: the reference's serde_json Value refuses a 128th level (the frame parser reads
        // the payload raw and has no such limit); frames of envelope(120) are never that deep.
        let got = parse_client_frame(&text, 127);
        prop_assert_ne!(&got, &Err(FrameError::TooDeep));
        // The reference: a JSON object whose `name` is a string.
        let is_event = serde_json::from_str::<Value>(&text)
            .is_ok_and(|v| v.get("name").is_some_and(Value::is_string) && v.is_object());
        prop_assert_eq!(got.is_ok(), is_event, "{}", text);
    }

    #[test]
    fn outbound_requests_read_back(id in any::<i64>()) {
        let text = ServerEvent::PortRequest(PortRequest::new(id)).to_text();
        let v: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&v["payload"]["id"], &Value::from(id));
        // A request, not a reply: the registry never answers itself.
        prop_assert_eq!(parse_client_frame(&text, 2), Ok(ClientEvent::Other(EventKind::JsonRpc)));
    }
}
