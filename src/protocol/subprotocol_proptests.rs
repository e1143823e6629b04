//! Properties of the `Sec-WebSocket-Protocol` parser: headers built from known fields parse back
//! to them, and arbitrary values parse as simple reference rules say.

use super::*;
use proptest::prelude::*;
use std::fmt::Write as _;

/// Any text a client could offer, biased to the field separators, the absent forms and ports.
fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "([|, ]|io|0\\.0\\.1|undefined|NaN|[0-9]{1,6}|[a-z.-]{1,8}|::1|\t|é){0,14}",
        // Whole fields, so that every field count and absent form is common.
        prop::collection::vec(
            "(|io|undefined|NaN|0|[0-9]{1,6}|[a-z.-]{1,8}|::1|é| )",
            1..8
        )
        .prop_map(|fields| fields.join("|")),
    ]
}

/// A port field and what it means: `Ok(port)`, `Err(true)` absent, `Err(false)` present but not
/// a port.
fn port_field() -> impl Strategy<Value = (String, Result<u16, bool>)> {
    prop_oneof![
        (1u16..).prop_map(|p| (p.to_string(), Ok(p))),
        (1u16.., 1usize..8).prop_map(|(p, w)| (format!("{p:0w$}"), Ok(p))),
        prop_oneof![Just(""), Just("undefined"), Just("NaN")].prop_map(|s| (s.into(), Err(true))),
        prop_oneof![
            Just("0".to_owned()),
            Just("-1".to_owned()),
            Just("1.5".to_owned()),
            Just("0x10".to_owned()),
            Just("null".to_owned()),
            (65536u64..).prop_map(|p| p.to_string()),
            "[a-z]{1,6}",
        ]
        .prop_map(|s| (s, Err(false))),
    ]
}

/// One DNS label and whether RFC 1123 allows it.
fn label() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        6 => "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?".prop_map(|l| (l, true)),
        1 => "[a-z0-9]{63}".prop_map(|l| (l, true)),
        1 => "[a-z0-9]{64,70}".prop_map(|l| (l, false)),
        1 => Just((String::new(), false)),
        1 => "-[a-z0-9]{0,5}".prop_map(|l| (l, false)),
        1 => "[a-z0-9]{0,5}-".prop_map(|l| (l, false)),
        1 => "[a-z0-9]{0,3}[_<>é :%*][a-z0-9]{0,3}".prop_map(|l| (l, false)),
    ]
}

/// A host field and whether it is valid (an IP address, or a host name of valid labels and at
/// most 253 characters).
fn host_field() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        any::<IpAddr>().prop_map(|ip| (ip.to_string(), true)),
        prop::collection::vec(label(), 1..6).prop_map(|labels| {
            let valid = labels.iter().all(|(_, ok)| *ok);
            let host = labels
                .into_iter()
                .map(|(l, _)| l)
                .collect::<Vec<_>>()
                .join(".");
            // The last label all digits: a malformed address, not a name.
            let numeric_tld = host
                .rsplit('.')
                .next()
                .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
            let valid = valid && host.len() <= 253 && !numeric_tld;
            (host, valid)
        }),
        "[0-9]{1,6}(\\.[0-9]{1,4}){0,4}"
            .prop_filter("not an address", |h| h.parse::<IpAddr>().is_err())
            .prop_map(|h| (h, false)),
        // Around the 253-character limit: three 63-character labels and one of 59..=63.
        (prop::collection::vec("[a-z0-9]{63}", 3), "[a-z0-9]{59,63}").prop_map(|(labels, last)| {
            let host = format!("{}.{last}", labels.join("."));
            let valid = host.len() <= 253 && !last.bytes().all(|b| b.is_ascii_digit());
            (host, valid)
        }),
    ]
}

/// A field that is neither a separator nor trimmed away nor an absent form.
fn plain_field() -> impl Strategy<Value = String> {
    "[^|,\\s]{1,24}".prop_filter("not absent", |s| !is_absent(s))
}

/// The reference port parser: an optional `+`, decimal digits, value 1..=65535.
fn reference_port(v: &str) -> Option<u16> {
    let digits = v.strip_prefix('+').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() || significant.len() > 5 {
        return None;
    }
    let n: u32 = significant
        .bytes()
        .fold(0, |n, b| n * 10 + u32::from(b - b'0'));
    (1..=65535).contains(&n).then_some(n as u16)
}

proptest! {
    #[test]
    fn built_five_field_header_parses_to_its_fields(
        protocol in prop_oneof![Just("io".to_owned()), "[a-z]{1,5}"],
        version in "[0-9]\\.[0-9]\\.[0-9]{1,2}",
        client_id in plain_field(),
        (host, host_ok) in prop_oneof![
            host_field(),
            prop_oneof![Just(""), Just("undefined"), Just("NaN")].prop_map(|s| (s.to_owned(), false)),
        ],
        (port, port_meaning) in port_field(),
        extra in prop::collection::vec("[^|,\\s]{0,6}", 0..3),
        others in "(,[^,]{0,10}){0,2}",
        lead in "[ ,]{0,3}",
    ) {
        let mut raw = format!("{protocol}|{version}|{client_id}|{host}|{port}");
        for e in &extra {
            write!(raw, "|{e}").unwrap();
        }
        // A trailing empty extra field makes the raw value end in `|`, still untrimmed.
        let s = Subprotocol::from_header(&format!("{lead}{raw}{others}")).unwrap();
        prop_assert_eq!(&s.raw, &raw);
        prop_assert_eq!(&s.protocol, &protocol);
        prop_assert_eq!(s.client_id.as_deref(), Some(client_id.as_str()));
        prop_assert_eq!(s.host.as_deref(), host_ok.then_some(host.as_str()));
        prop_assert_eq!(s.port, port_meaning.ok());
        let no_peer = port_meaning == Err(true);
        prop_assert_eq!(s.peer, if no_peer { PeerHint::NoPeer } else { PeerHint::Ask });
        prop_assert_eq!(s.is_discoverable(), protocol == "io");
    }

    #[test]
    fn built_three_field_header_parses_to_its_fields(
        version in "[0-9]\\.[0-9]\\.[0-9]",
        client_id in plain_field(),
    ) {
        let raw = format!("io|{version}|{client_id}");
        let s = Subprotocol::from_header(&raw).unwrap();
        prop_assert_eq!(s, Subprotocol {
            raw: raw.clone(),
            protocol: "io".into(),
            version: Some(version),
            client_id: Some(client_id),
            host: None,
            rejected_host: false,
            port: None,
            peer: PeerHint::Ask,
        });
    }

    #[test]
    fn any_header_parses_as_the_reference_says(v in header_text()) {
        let first = v.split(',').map(str::trim).find(|p| !p.is_empty());
        let parsed = Subprotocol::from_header(&v);
        prop_assert_eq!(parsed.as_ref().map(|s| s.raw.as_str()), first);
        let (Some(s), Some(first)) = (parsed, first) else { return Ok(()) };
        let fields: Vec<&str> = first.split('|').collect();
        let present = |i: usize| fields.get(i).copied().filter(|f| !["", "undefined", "NaN"].contains(f));
        prop_assert_eq!(s.protocol.as_str(), fields[0]);
        prop_assert_eq!(s.client_id.as_deref(), present(2));
        prop_assert_eq!(s.port, present(4).and_then(reference_port));
        if let Some(h) = &s.host {
            prop_assert_eq!(Some(h.as_str()), present(3));
        }
        prop_assert_eq!(s.rejected_host, present(3).is_some() && s.host.is_none());
        let no_peer = fields.len() >= 5 && present(4).is_none();
        prop_assert_eq!(s.peer == PeerHint::NoPeer, no_peer);
    }

    #[test]
    fn host_validity_agrees_with_construction((host, valid) in host_field()) {
        prop_assert_eq!(is_valid_host(&host), valid, "{:?}", host);
        let s = Subprotocol::parse(&format!("io|0.0.1|id|{host}|1"));
        prop_assert_eq!(s.host.is_some(), valid);
        prop_assert_eq!(s.rejected_host, !valid && !host.is_empty());
    }

    #[test]
    fn port_agrees_with_the_reference(
        v in prop_oneof![
            any::<String>(),
            "\\+?[0-9]{0,8}",
            "[-+ 0-9.exa]{0,7}",
            any::<u64>().prop_map(|n| n.to_string()),
        ],
    ) {
        prop_assert_eq!(parse_port(&v), reference_port(&v), "{:?}", v);
    }
}
