//! Properties of the client address: the trust decision agrees with CIDR containment computed
//! naively, forwarding headers rendered from known addresses are read back as the documented
//! precedence says (left-most `X-Forwarded-For`, `X-Real-IP`, `Forwarded: for=`), and only from
//! a trusted peer, and no header bytes make it panic.

use super::*;
use actix_web::http::header::{HeaderName, HeaderValue};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A CIDR as (address, prefix length), host bits and all.
fn cidr() -> impl Strategy<Value = (IpAddr, u8)> {
    prop_oneof![
        (any::<Ipv4Addr>(), 0u8..=32).prop_map(|(a, p)| (IpAddr::V4(a), p)),
        (any::<Ipv6Addr>(), 0u8..=128).prop_map(|(a, p)| (IpAddr::V6(a), p)),
        // IPv4-mapped networks, which a canonical (IPv4) peer is never inside.
        (any::<Ipv4Addr>(), 96u8..=128).prop_map(|(a, p)| (IpAddr::V6(a.to_ipv6_mapped()), p)),
    ]
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// The reference containment: same family, and the top `prefix` bits equal.
fn reference_contains((net, prefix): (IpAddr, u8), ip: IpAddr) -> bool {
    let ((n, width), (a, other_width)) = (bits(net), bits(ip));
    let shift = u32::from(width - prefix);
    width == other_width && (shift == 128 || (n >> shift) == (a >> shift))
}

/// The reference canonical form: `::ffff:a.b.c.d` is `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) if a.segments()[..6] == [0, 0, 0, 0, 0, 0xffff] => {
            let [.., hi, lo] = a.segments();
            IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)))
        }
        ip => ip,
    }
}

fn proxies(nets: &[(IpAddr, u8)]) -> TrustedProxies {
    TrustedProxies::new(
        nets.iter()
            .map(|&(a, p)| IpNet::new(a, p).unwrap())
            .collect(),
    )
}

/// A peer: anywhere, or inside one of the nets (in either IPv4 form), so that both answers of
/// the trust decision are common.
fn peer_for(nets: Vec<(IpAddr, u8)>) -> impl Strategy<Value = (Vec<(IpAddr, u8)>, IpAddr)> {
    let n = nets.len();
    (
        Just(nets),
        any::<IpAddr>(),
        any::<prop::sample::Index>(),
        any::<u128>(),
        0u8..4,
        any::<bool>(),
    )
        .prop_map(move |(nets, anywhere, i, noise, how, mapped)| {
            let peer = match (how, n) {
                (0, _) | (_, 0) => anywhere,
                _ => {
                    let (net, prefix) = nets[i.index(n)];
                    let (base, width) = bits(net);
                    let host_bits = u32::from(width - prefix);
                    let mask = if host_bits == 0 {
                        0
                    } else {
                        u128::MAX >> (128 - host_bits)
                    };
                    let a = (base & !mask) | (noise & mask);
                    match width {
                        32 => IpAddr::V4(Ipv4Addr::from(a as u32)),
                        _ => IpAddr::V6(Ipv6Addr::from(a)),
                    }
                }
            };
            match peer {
                IpAddr::V4(a) if mapped => (nets, IpAddr::V6(a.to_ipv6_mapped())),
                p => (nets, p),
            }
        })
}

fn nets_and_peer() -> impl Strategy<Value = (Vec<(IpAddr, u8)>, IpAddr)> {
    prop::collection::vec(cidr(), 0..4).prop_flat_map(peer_for)
}

/// One node of a forwarding header, and the address it names (`None`: an obfuscated or broken
/// identifier).
fn node() -> impl Strategy<Value = (String, Option<IpAddr>)> {
    let ws = || "[ \t]{0,2}";
    let named =
        (any::<IpAddr>(), any::<u16>(), 0u8..4, ws(), ws()).prop_map(|(ip, port, form, l, r)| {
            let text = match (ip, form) {
                (IpAddr::V4(a), 0) => a.to_string(),
                (IpAddr::V4(a), 1) => format!("{a}:{port}"),
                (IpAddr::V4(a), 2) => format!("\"{a}\""),
                (IpAddr::V4(a), _) => format!("\"{a}:{port}\""),
                (IpAddr::V6(a), 0) => a.to_string(),
                (IpAddr::V6(a), 1) => format!("[{a}]:{port}"),
                (IpAddr::V6(a), 2) => format!("[{a}]"),
                (IpAddr::V6(a), _) => format!("\"[{a}]:{port}\""),
            };
            (format!("{l}{text}{r}"), Some(ip))
        });
    let nameless = prop_oneof![
        Just("unknown".to_owned()),
        "_[a-zA-Z0-9._-]{1,8}",
        Just(String::new()),
        Just("1.2.3".to_owned()),
        Just("256.1.1.1".to_owned()),
        Just("[::1".to_owned()),
        Just("2001:db8:::1:80".to_owned()),
    ]
    .prop_map(|s| (s, None));
    prop_oneof![3 => named, 1 => nameless]
}

/// An `X-Forwarded-For` list: its text and the left-most node's address.
fn xff() -> impl Strategy<Value = (String, Option<IpAddr>)> {
    (
        prop::collection::vec(node(), 1..4),
        prop_oneof![Just(","), Just(", ")],
    )
        .prop_map(|(nodes, sep)| {
            let first = nodes[0].1;
            let text = nodes
                .into_iter()
                .map(|(t, _)| t)
                .collect::<Vec<_>>()
                .join(sep);
            (text, first)
        })
}

/// A `Forwarded` header: elements of `key=value` pairs in any order and key case; what it names
/// is the first `for=` of the first element that names an address.
fn forwarded() -> impl Strategy<Value = (String, Option<IpAddr>)> {
    let pair = prop_oneof![
        (
            prop_oneof![Just("for"), Just("For"), Just("FOR"), Just(" for")],
            node()
        )
            .prop_map(|(k, (v, ip))| (format!("{k}={}", v.trim()), ip)),
        prop_oneof![
            Just("proto=https"),
            Just("by=10.0.0.1"),
            Just("host=example.com"),
            Just("x")
        ]
        .prop_map(|p| (p.to_owned(), None)),
    ];
    let element = prop::collection::vec(pair, 0..4);
    prop::collection::vec(element, 1..3).prop_map(|elements| {
        let first = elements[0].iter().find_map(|(_, ip)| *ip);
        let text = elements
            .into_iter()
            .map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect::<Vec<_>>()
                    .join(";")
            })
            .collect::<Vec<_>>()
            .join(", ");
        (text, first)
    })
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

proptest! {
    #[test]
    fn trust_agrees_with_naive_cidr_math((nets, peer) in nets_and_peer()) {
        let expected = nets.iter().any(|&n| reference_contains(n, peer));
        prop_assert_eq!(proxies(&nets).trusts(peer), expected);
    }

    #[test]
    fn forwarding_headers_follow_the_documented_precedence(
        (nets, peer) in nets_and_peer(),
        xff in prop::option::of(xff()),
        second_xff in prop::option::of(xff()),
        real_ip in prop::option::of(node()),
        fwd in prop::option::of(forwarded()),
    ) {
        let mut pairs = Vec::new();
        for (name, h) in [("x-forwarded-for", &xff), ("x-forwarded-for", &second_xff), ("x-real-ip", &real_ip), ("forwarded", &fwd)] {
            if let Some((text, _)) = h {
                pairs.push((name, text.as_str()));
            }
        }
        let headers = header_map(&pairs);

        // Only the first `X-Forwarded-For` line counts (its left-most node).
        let xff_ip = xff.as_ref().or(second_xff.as_ref()).and_then(|(_, ip)| *ip);
        let named = xff_ip
            .or(real_ip.and_then(|(_, ip)| ip))
            .or(fwd.and_then(|(_, ip)| ip));
        let peer_c = canonical(peer);
        let trusted = nets.iter().any(|&n| reference_contains(n, peer_c));
        let expected = if trusted { named.map_or(peer_c, canonical) } else { peer_c };

        prop_assert_eq!(proxies(&nets).client_ip(Some(peer), &headers), Some(expected));
        prop_assert_eq!(proxies(&nets).client_ip(None, &headers), None);
    }

    #[test]
    fn an_overwriting_proxy_hands_over_the_client(
        client in any::<IpAddr>(),
        (nets, proxy) in nets_and_peer(),
    ) {
        // What nginx and ingress-nginx do: X-Forwarded-For and X-Real-IP set to the client.
        let text = client.to_string();
        let headers = header_map(&[("x-forwarded-for", &text), ("x-real-ip", &text)]);
        let trusted = nets.iter().any(|&n| reference_contains(n, canonical(proxy)));
        let expected = if trusted { client } else { proxy };
        prop_assert_eq!(proxies(&nets).client_ip(Some(proxy), &headers), Some(canonical(expected)));
    }

    #[test]
    fn nodes_round_trip((text, ip) in node()) {
        prop_assert_eq!(parse_node(&text), ip, "{:?}", text);
    }

    #[test]
    fn forwarded_round_trips((text, ip) in forwarded()) {
        prop_assert_eq!(parse_forwarded_for(&text), ip, "{:?}", text);
    }

    #[test]
    fn any_header_bytes_never_panic(
        values in prop::collection::vec(
            prop_oneof![
                any::<Vec<u8>>(),
                "[\\[\\]\":;,= a-fA-F0-9.%_\t]{0,40}".prop_map(String::into_bytes),
            ],
            3,
        ),
        (nets, peer) in nets_and_peer(),
    ) {
        let mut headers = HeaderMap::new();
        for (name, v) in ["x-forwarded-for", "x-real-ip", "forwarded"].into_iter().zip(&values) {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        let got = proxies(&nets).client_ip(Some(peer), &headers).unwrap();
        // Always an address in canonical form, and the peer itself unless the peer is trusted.
        prop_assert_eq!(got, canonical(got));
        if !proxies(&nets).trusts(canonical(peer)) {
            prop_assert_eq!(got, canonical(peer));
        }
    }
}
