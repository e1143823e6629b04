//! Properties of the client address: the trust decision agrees with CIDR containment computed
//! naively; forwarding headers rendered from known addresses are read back as the documented
//! rule says (`X-Forwarded-For`, `X-Real-IP`, `Forwarded: for=` in that order, each list read
//! from the right past the trusted proxies), and only from a trusted peer; a client behind a
//! chain of appending trusted proxies is found whatever it sent itself; and no header bytes make
//! it panic.

use super::*;
use actix_web::http::header::{HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::sample::Index;
use std::net::{Ipv4Addr, Ipv6Addr};

type Nets = Vec<(IpAddr, u8)>;

/// A CIDR as (address, prefix length), host bits and all.
fn cidr() -> impl Strategy<Value = (IpAddr, u8)> {
    prop_oneof![
        plain_cidr(),
        // IPv4-mapped networks, which a canonical (IPv4) peer is never inside.
        (any::<Ipv4Addr>(), 96u8..=128).prop_map(|(a, p)| (IpAddr::V6(a.to_ipv6_mapped()), p)),
    ]
}

/// A CIDR that is not IPv4-mapped: the addresses inside it are trusted in canonical form too.
fn plain_cidr() -> impl Strategy<Value = (IpAddr, u8)> {
    prop_oneof![
        (any::<Ipv4Addr>(), 0u8..=32).prop_map(|(a, p)| (IpAddr::V4(a), p)),
        (any::<Ipv6Addr>(), 0u8..=128).prop_map(|(a, p)| (IpAddr::V6(a), p)),
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

fn reference_trusts(nets: &[(IpAddr, u8)], ip: IpAddr) -> bool {
    nets.iter().any(|&n| reference_contains(n, ip))
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

/// The reference reading of a forwarding list (left to right; `None`: an entry naming no
/// address), stated from the right end: the right-most entry that is not a trusted address
/// decides (the client, or nothing if it names none); if every entry is a trusted address, the
/// left-most one.
fn reference_client(nets: &[(IpAddr, u8)], entries: &[Option<IpAddr>]) -> Option<IpAddr> {
    let trusted = |e: &Option<IpAddr>| e.is_some_and(|ip| reference_trusts(nets, canonical(ip)));
    match entries.iter().rposition(|e| !trusted(e)) {
        Some(decisive) => entries[decisive].map(canonical),
        None => entries.first().copied().flatten().map(canonical),
    }
}

fn proxies(nets: &[(IpAddr, u8)]) -> TrustedProxies {
    TrustedProxies::new(
        nets.iter()
            .map(|&(a, p)| IpNet::new(a, p).unwrap())
            .collect(),
    )
}

/// The address inside the `i`th net whose host bits are `noise`'s.
fn inside(nets: &[(IpAddr, u8)], i: Index, noise: u128) -> IpAddr {
    let (net, prefix) = nets[i.index(nets.len())];
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

/// An IPv4 address in its IPv4-mapped IPv6 form if `mapped`.
fn maybe_mapped(ip: IpAddr, mapped: bool) -> IpAddr {
    match ip {
        IpAddr::V4(a) if mapped => IpAddr::V6(a.to_ipv6_mapped()),
        ip => ip,
    }
}

/// An address anywhere, or inside one of the nets (in either IPv4 form), so that both answers
/// of the trust decision are common.
fn addr_near(nets: Nets) -> BoxedStrategy<IpAddr> {
    (
        any::<IpAddr>(),
        any::<Index>(),
        any::<u128>(),
        0u8..4,
        any::<bool>(),
    )
        .prop_map(move |(anywhere, i, noise, how, mapped)| {
            let ip = match how {
                0 => anywhere,
                _ if nets.is_empty() => anywhere,
                _ => inside(&nets, i, noise),
            };
            maybe_mapped(ip, mapped)
        })
        .boxed()
}

/// An address inside one of the (non-empty) nets, in either IPv4 form.
fn addr_inside(nets: Nets) -> BoxedStrategy<IpAddr> {
    (any::<Index>(), any::<u128>(), any::<bool>())
        .prop_map(move |(i, noise, mapped)| maybe_mapped(inside(&nets, i, noise), mapped))
        .boxed()
}

fn nets_and_peer() -> impl Strategy<Value = (Nets, IpAddr)> {
    prop::collection::vec(cidr(), 0..4).prop_flat_map(|nets| (Just(nets.clone()), addr_near(nets)))
}

/// How a node names `ip`: bare, with a port, quoted, bracketed (`form` picks one).
fn render(ip: IpAddr, port: u16, form: u8) -> String {
    match (ip, form % 4) {
        (IpAddr::V4(a), 0) => a.to_string(),
        (IpAddr::V4(a), 1) => format!("{a}:{port}"),
        (IpAddr::V4(a), 2) => format!("\"{a}\""),
        (IpAddr::V4(a), _) => format!("\"{a}:{port}\""),
        (IpAddr::V6(a), 0) => a.to_string(),
        (IpAddr::V6(a), 1) => format!("[{a}]:{port}"),
        (IpAddr::V6(a), 2) => format!("[{a}]"),
        (IpAddr::V6(a), _) => format!("\"[{a}]:{port}\""),
    }
}

/// One node of a forwarding header naming an address drawn from `addr`, or an obfuscated or
/// broken identifier; and the address it names (`None`: none).
fn node_of(addr: BoxedStrategy<IpAddr>) -> BoxedStrategy<(String, Option<IpAddr>)> {
    let ws = || "[ \t]{0,2}";
    let named = (addr, any::<u16>(), 0u8..4, ws(), ws())
        .prop_map(|(ip, port, form, l, r)| (format!("{l}{}{r}", render(ip, port, form)), Some(ip)));
    let nameless = prop_oneof![
        Just("unknown".to_owned()),
        "_[a-zA-Z0-9._-]{1,8}",
        Just(String::new()),
        Just("1.2.3".to_owned()),
        Just("256.1.1.1".to_owned()),
        Just("[::1".to_owned()),
        Just("\"x".to_owned()),
        Just("2001:db8:::1:80".to_owned()),
    ]
    .prop_map(|s| (s, None));
    prop_oneof![3 => named, 1 => nameless].boxed()
}

fn node() -> BoxedStrategy<(String, Option<IpAddr>)> {
    node_of(any::<IpAddr>().boxed())
}

/// Whether a node or element is an entry of its list at all: empty list elements are not.
fn is_entry(text: &str) -> bool {
    !text.trim().is_empty()
}

/// An `X-Forwarded-For` header: its lines, and the entries they name, left to right over all
/// lines.
fn xff(nets: Nets) -> impl Strategy<Value = (Vec<String>, Vec<Option<IpAddr>>)> {
    let line = (
        prop::collection::vec(node_of(addr_near(nets)), 1..4),
        prop_oneof![Just(","), Just(", ")],
    );
    prop::collection::vec(line, 1..3).prop_map(|lines| {
        let mut entries = Vec::new();
        let texts = lines
            .into_iter()
            .map(|(nodes, sep)| {
                entries.extend(nodes.iter().filter(|(t, _)| is_entry(t)).map(|(_, ip)| *ip));
                nodes
                    .into_iter()
                    .map(|(t, _)| t)
                    .collect::<Vec<_>>()
                    .join(sep)
            })
            .collect();
        (texts, entries)
    })
}

/// One `Forwarded` element: `key=value` pairs in any order and key case; what it names is the
/// address of its `for=` if it has exactly one.
fn element(nets: Nets) -> impl Strategy<Value = (String, Option<IpAddr>)> {
    let pair = prop_oneof![
        (
            prop_oneof![Just("for"), Just("For"), Just("FOR"), Just(" for")],
            node_of(addr_near(nets))
        )
            .prop_map(|(k, (v, ip))| (format!("{k}={}", v.trim()), Some(ip))),
        prop_oneof![
            Just("proto=https"),
            Just("by=10.0.0.1"),
            Just("host=example.com"),
            Just("x")
        ]
        .prop_map(|p| (p.to_owned(), None)),
    ];
    prop::collection::vec(pair, 0..4).prop_map(|pairs| {
        let fors: Vec<Option<IpAddr>> = pairs.iter().filter_map(|(_, f)| *f).collect();
        let named = match fors[..] {
            [one] => one,
            _ => None,
        };
        let text = pairs
            .into_iter()
            .map(|(p, _)| p)
            .collect::<Vec<_>>()
            .join(";");
        (text, named)
    })
}

/// A `Forwarded` header: its lines of comma-separated elements, and the entries they name, left
/// to right over all lines.
fn forwarded(nets: Nets) -> impl Strategy<Value = (Vec<String>, Vec<Option<IpAddr>>)> {
    let line = prop::collection::vec(element(nets), 1..3);
    prop::collection::vec(line, 1..3).prop_map(|lines| {
        let mut entries = Vec::new();
        let texts = lines
            .into_iter()
            .map(|elements| {
                entries.extend(
                    elements
                        .iter()
                        .filter(|(t, _)| is_entry(t))
                        .map(|(_, ip)| *ip),
                );
                elements
                    .into_iter()
                    .map(|(t, _)| t)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        (texts, entries)
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

type Lines = (Vec<String>, Vec<Option<IpAddr>>);

/// Trusted proxies, a client, and the proxies between it and hostie (the last one is hostie's
/// peer), all of them trusted, in either IPv4 form.
fn chain() -> impl Strategy<Value = (Nets, IpAddr, Vec<IpAddr>)> {
    prop::collection::vec(plain_cidr(), 1..4)
        .prop_flat_map(|nets| {
            let client = (any::<IpAddr>(), any::<bool>()).prop_map(|(ip, m)| maybe_mapped(ip, m));
            let hops = prop::collection::vec(addr_inside(nets.clone()), 1..5);
            (Just(nets), client, hops)
        })
        .prop_filter(
            "the client is not trusted, the proxies are",
            |(nets, c, hops)| {
                !reference_trusts(nets, canonical(*c))
                    && hops.iter().all(|&p| reference_trusts(nets, canonical(p)))
            },
        )
}

proptest! {
    #[test]
    fn trust_agrees_with_naive_cidr_math((nets, peer) in nets_and_peer()) {
        let expected = reference_trusts(&nets, peer);
        prop_assert_eq!(proxies(&nets).trusts(peer), expected);
    }

    #[test]
    fn forwarding_headers_follow_the_documented_rule(
        (nets, peer, xff, real_ip, fwd) in nets_and_peer().prop_flat_map(|(nets, peer)| (
            Just(nets.clone()),
            Just(peer),
            prop::option::of(xff(nets.clone())),
            prop::option::of(node_of(addr_near(nets.clone()))),
            prop::option::of(forwarded(nets)),
        )),
    ) {
        let mut pairs = Vec::new();
        for (name, lines) in [("x-forwarded-for", &xff), ("forwarded", &fwd)] {
            for line in lines.iter().flat_map(|(texts, _)| texts) {
                pairs.push((name, line.as_str()));
            }
        }
        if let Some((text, _)) = &real_ip {
            pairs.push(("x-real-ip", text));
        }
        let headers = header_map(&pairs);

        let walked = |lines: Option<Lines>| lines.and_then(|(_, entries)| reference_client(&nets, &entries));
        let named = walked(xff)
            .or(real_ip.and_then(|(_, ip)| ip))
            .or_else(|| walked(fwd));
        let peer_c = canonical(peer);
        let expected = if reference_trusts(&nets, peer_c) {
            named.map_or(peer_c, canonical)
        } else {
            peer_c
        };

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
        let trusted = reference_trusts(&nets, canonical(proxy));
        let expected = if trusted { client } else { proxy };
        prop_assert_eq!(proxies(&nets).client_ip(Some(proxy), &headers), Some(canonical(expected)));
    }

    #[test]
    fn appending_trusted_proxies_hand_over_the_client_whatever_it_sent(
        (nets, client, hops) in chain(),
        (forged_xff, forged_fwd) in (
            prop::option::of(xff(Vec::new())),
            prop::option::of(forwarded(Vec::new())),
        ),
        appends in prop::collection::vec((any::<u16>(), 0u8..4, any::<bool>()), 4),
        use_forwarded in any::<bool>(),
    ) {
        // The client sends a forwarding header of its own choosing; every proxy on the way
        // appends the address of whoever connected to it, on the last line or on a line of its
        // own; hostie's peer is the last proxy.
        let (name, mut lines) = if use_forwarded {
            ("forwarded", forged_fwd.map(|(l, _)| l).unwrap_or_default())
        } else {
            ("x-forwarded-for", forged_xff.map(|(l, _)| l).unwrap_or_default())
        };
        let (peer, between) = hops.split_last().unwrap();
        for (&ip, &(port, form, new_line)) in [client].iter().chain(between).zip(&appends) {
            let mut entry = render(ip, port, form);
            if use_forwarded {
                entry = format!("for={entry};proto=https");
            }
            match lines.last_mut() {
                Some(last) if !new_line => *last = format!("{last}, {entry}"),
                _ => lines.push(entry),
            }
        }
        let pairs: Vec<_> = lines.iter().map(|l| (name, l.as_str())).collect();
        let headers = header_map(&pairs);
        prop_assert_eq!(
            proxies(&nets).client_ip(Some(*peer), &headers),
            Some(canonical(client)),
            "{:?}", headers
        );
    }

    #[test]
    fn nodes_round_trip((text, ip) in node()) {
        prop_assert_eq!(parse_node(&text), ip, "{:?}", text);
    }

    #[test]
    fn forwarded_elements_round_trip((text, ip) in element(Vec::new())) {
        prop_assert_eq!(element_for(&text), ip, "{:?}", text);
    }

    #[test]
    fn any_header_bytes_never_panic(
        values in prop::collection::vec(
            (
                0usize..3,
                prop_oneof![
                    any::<Vec<u8>>(),
                    "[\\[\\]\":;,= a-fA-F0-9.%_\t]{0,40}".prop_map(String::into_bytes),
                ],
            ),
            0..6,
        ),
        (nets, peer) in nets_and_peer(),
    ) {
        let names = ["x-forwarded-for", "x-real-ip", "forwarded"];
        let mut headers = HeaderMap::new();
        for (name, v) in &values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                headers.append(HeaderName::from_static(names[*name]), v);
            }
        }
        let got = proxies(&nets).client_ip(Some(peer), &headers).unwrap();
        // Always an address in canonical form, and the peer itself unless the peer is trusted.
        prop_assert_eq!(got, canonical(got));
        if !reference_trusts(&nets, canonical(peer)) {
            prop_assert_eq!(got, canonical(peer));
        }
    }
}
