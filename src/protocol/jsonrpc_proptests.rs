//! Properties of the JSON-RPC reply parser: any payload a gateway sends is read as the reference
//! model below says (which follows `parse_reply`'s contract), whatever JSON types it uses.

use super::*;
use proptest::prelude::*;
use serde_json::{Map, Number};

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..70_000).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        (0u16..).prop_map(|p| Value::from(f64::from(p))),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        any::<String>().prop_map(Value::String),
        any::<i64>().prop_map(|n| Value::String(n.to_string())),
    ]
}

/// Any JSON value, a few levels deep.
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,7}", inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An `error` member: well-formed, partial, or of the wrong types.
fn error_member() -> impl Strategy<Value = Value> {
    let field = |name: &'static str, well_formed: BoxedStrategy<Value>| {
        prop::option::of(prop_oneof![3 => well_formed, 1 => value()]).prop_map(move |v| (name, v))
    };
    prop_oneof![
        (
            field("code", any::<i64>().prop_map(Value::from).boxed()),
            field("message", any::<String>().prop_map(Value::from).boxed()),
            prop::option::of(value()),
        )
            .prop_map(|((c, code), (m, message), data)| {
                let mut o = Map::new();
                code.map(|v| o.insert(c.into(), v));
                message.map(|v| o.insert(m.into(), v));
                data.map(|v| o.insert("data".into(), v));
                Value::Object(o)
            }),
        value(),
    ]
}

/// A reply-shaped object: each member absent, of the expected type, or of any type.
fn reply_object() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::option::of(prop_oneof![3 => any::<i64>().prop_map(Value::from), 1 => value()]),
        prop::option::of(prop_oneof![
            3 => (0u32..70_000).prop_map(Value::from),
            1 => prop::sample::select(vec![0, 1, 65535, 65536]).prop_map(Value::from),
            1 => value(),
        ]),
        prop::option::weighted(0.3, error_member()),
        prop::option::weighted(0.2, value()),
        prop::option::of(prop_oneof![Just(Value::from("2.0")), value()]),
        prop::collection::vec(("[a-z]{1,8}", value()), 0..2),
    )
        .prop_map(|(id, result, error, method, version, extra)| {
            let mut o: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in [
                ("id", id),
                ("result", result),
                ("error", error),
                ("method", method),
                ("jsonrpc", version),
            ] {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            o
        })
}

/// The reference: a reply is an object without a (non-null) `method` whose `id` is an integer
/// or a string; its `error`, when there is one (not null), is the result, read leniently;
/// otherwise a `result` in 1..=65535 is the port.
fn reference(o: &Map<String, Value>) -> Option<PortReply> {
    if o.get("method").is_some_and(|m| !m.is_null()) {
        return None;
    }
    let id = match o.get("id")? {
        Value::Number(n) => RpcId::Num(n.as_i64()?),
        Value::String(s) => RpcId::Str(s.clone()),
        _ => return None,
    };
    let result = match o.get("error").filter(|e| !e.is_null()) {
        Some(e) => PortResult::Error {
            code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        },
        None => match o.get("result").and_then(Value::as_u64) {
            Some(p @ 1..=65535) => PortResult::Port(p as u16),
            _ => PortResult::NotAPort,
        },
    };
    Some(PortReply { id, result })
}

fn parse(text: &str) -> Option<PortReply> {
    parse_reply(&RawValue::from_string(text.to_owned()).unwrap())
}

proptest! {
    #[test]
    fn replies_agree_with_the_reference(o in reply_object(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&o).unwrap()
        } else {
            serde_json::to_string(&o).unwrap()
        };
        prop_assert_eq!(parse(&text), reference(&o), "{}", text);
    }

    #[test]
    fn non_objects_are_not_replies(v in value().prop_filter("not an object", |v| !v.is_object())) {
        prop_assert_eq!(parse(&v.to_string()), None);
    }

    #[test]
    fn port_replies_round_trip(id in any::<i64>(), port in 1u16..) {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{port}}}"#);
        let r = parse(&text).unwrap();
        prop_assert_eq!(r.id.as_i64(), Some(id));
        prop_assert_eq!(r.result, PortResult::Port(port));
    }

    #[test]
    fn string_ids_answer_the_number_they_spell(id in any::<i64>(), junk in "[^0-9]{1,3}") {
        prop_assert_eq!(RpcId::Str(id.to_string()).as_i64(), Some(id));
        prop_assert_eq!(RpcId::Str(format!("{id}{junk}")).as_i64(), None);
    }

    #[test]
    fn our_requests_are_not_replies(id in any::<i64>()) {
        let text = serde_json::to_string(&PortRequest::new(id)).unwrap();
        prop_assert_eq!(parse(&text), None);
    }

    #[test]
    fn any_json_text_never_panics(text in prop_oneof![
        any::<String>(),
        r#"\{("(id|result|error|method|code|message)":([0-9eE.+-]{1,25}|"[^"]{0,4}"|null|\{|\[)[,}]?){0,5}"#,
    ]) {
        if let Ok(raw) = RawValue::from_string(text) {
            let _ = parse_reply(&raw);
        }
    }
}
