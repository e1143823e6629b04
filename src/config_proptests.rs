//! Properties of the `--trusted-proxies` CIDR list parser: lists round-trip, each part is read as
//! a naive reference CIDR parser says, the networks contain what naive u128 math says, and the
//! flag reads the same as the parser.

use super::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<Ipv4Addr>(), 0u8..=32).prop_map(|(a, p)| IpNet::new(a.into(), p).unwrap()),
        (any::<Ipv6Addr>(), 0u8..=128).prop_map(|(a, p)| IpNet::new(a.into(), p).unwrap()),
    ]
}

/// What an operator might type as one part: addresses, near-misses and junk.
fn part_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        net().prop_map(|n| n.to_string()),
        "[0-9]{1,4}(\\.[0-9]{1,4}){0,4}(/[0-9+-]{0,4})?",
        "(::|:|[0-9a-fA-F]{1,5}|\\.|[0-9]{1,3}|g){1,12}(/[0-9]{0,4})?",
        (net(), "[ /.:%a-z0-9]{1,3}").prop_map(|(n, junk)| format!("{n}{junk}")),
    ]
}

/// ipnet reads an IPv4 octet as 1–3 decimal digits, leading zeros allowed (std refuses them):
/// strip them from a dotted tail before std parses it.
fn unpad_dotted_tail(a: &str) -> String {
    let (head, tail) = a.rsplit_once(':').map_or(("", a), |(h, t)| (h, t));
    if !tail.contains('.') {
        return a.to_owned();
    }
    let octets: Vec<&str> = tail
        .split('.')
        .map(|o| match o.trim_start_matches('0') {
            rest if (1..=3).contains(&o.len()) && o.bytes().all(|b| b.is_ascii_digit()) => {
                if rest.is_empty() { "0" } else { rest }
            }
            _ => o,
        })
        .collect();
    let sep = if a.contains(':') { ":" } else { "" };
    format!("{head}{sep}{}", octets.join("."))
}

/// The reference address parser: std's, plus ipnet's two leniencies (zero-padded octets, and a
/// `::` that stands for no group at all beside eight others).
fn reference_addr(a: &str) -> Option<IpAddr> {
    let a = unpad_dotted_tail(a);
    if let Ok(ip) = a.parse::<IpAddr>() {
        return Some(ip);
    }
    let squeezed = match a.strip_prefix("::") {
        Some(rest) => rest.to_owned(),
        None if a.contains("::") => a.replacen("::", ":", 1),
        None => return None,
    };
    // Only a `::` beside eight explicit groups: any other is std's to accept.
    let eight_groups = !squeezed.contains("::");
    squeezed
        .parse::<Ipv6Addr>()
        .ok()
        .filter(|_| eight_groups)
        .map(IpAddr::V6)
}

/// The reference CIDR: address `/` 1–2 (IPv4) or 1–3 (IPv6) decimal digits up to the width.
fn reference_cidr(part: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = part.split_once('/')?;
    let ip = reference_addr(addr)?;
    let (width, digits) = if ip.is_ipv4() { (32, 2) } else { (128, 3) };
    if len.is_empty() || len.len() > digits || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = len.parse().ok()?;
    (prefix <= width).then_some((ip, prefix))
}

fn bits(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// Same family and the top `prefix` bits equal.
fn reference_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let ((n, width), (a, other)) = (bits(net), bits(ip));
    let shift = width - u32::from(prefix);
    width == other && (shift == 128 || n >> shift == a >> shift)
}

proptest! {
    #[test]
    fn lists_round_trip(
        nets in prop::collection::vec(net(), 0..5),
        pads in prop::collection::vec(("[ \t]{0,2}", "[ \t]{0,2}", 0usize..2), 5),
        trailing in "[ ,]{0,3}",
    ) {
        let mut text = String::new();
        for (n, (l, r, empties)) in nets.iter().zip(&pads) {
            text += &format!("{l}{n}{r},{}", ",".repeat(*empties));
        }
        text += &trailing;
        prop_assert_eq!(cidrs(&text), Ok(Cidrs(nets)), "{:?}", text);
    }

    #[test]
    fn parts_agree_with_the_reference(part in part_text().prop_filter("one part", |p| !p.contains(','))) {
        let expected = reference_cidr(part.trim())
            .map(|(ip, p)| Cidrs(vec![IpNet::new(ip, p).unwrap()]));
        let got = cidrs(&part).ok().filter(|c| !c.0.is_empty());
        prop_assert_eq!(got, expected, "{:?}", part);
    }

    #[test]
    fn a_list_fails_on_its_first_bad_part(
        parts in prop::collection::vec(part_text().prop_filter("no comma", |p| !p.contains(',')), 1..5),
    ) {
        let text = parts.join(",");
        let bad = parts
            .iter()
            .map(|p| p.trim())
            .find(|p| !p.is_empty() && reference_cidr(p).is_none());
        match (cidrs(&text), bad) {
            (Ok(list), None) => {
                let expected: Vec<IpNet> = parts
                    .iter()
                    .filter_map(|p| reference_cidr(p.trim()))
                    .map(|(ip, p)| IpNet::new(ip, p).unwrap())
                    .collect();
                prop_assert_eq!(list.0, expected);
            }
            (Err(msg), Some(bad)) => prop_assert!(msg.starts_with(&format!("{bad:?}: ")), "{msg}"),
            (got, bad) => {
                return Err(TestCaseError::fail(format!("{text:?}: got {got:?}, first bad part {bad:?}")));
            }
        }
    }

    #[test]
    fn parsed_networks_contain_what_u128_math_says(
        (addr, prefix) in prop_oneof![
            (any::<Ipv4Addr>().prop_map(IpAddr::V4), 0u8..=32),
            (any::<Ipv6Addr>().prop_map(IpAddr::V6), 0u8..=128),
        ],
        probes in prop::collection::vec((any::<IpAddr>(), any::<u128>(), any::<bool>()), 8),
    ) {
        let list = cidrs(&format!("{addr}/{prefix}")).unwrap();
        for (random, noise, near) in probes {
            // Half the probes are near the network's address.
            let probe = if near {
                // Flip some of the low k bits: inside the network when k is at most its host
                // bits, usually outside otherwise.
                let (n, width) = bits(addr);
                let k = (noise % u128::from(width + 1)) as u32;
                let mask = if k == 0 { 0 } else { u128::MAX >> (128 - k) };
                let a = n ^ (noise.rotate_left(7) & mask);
                if width == 32 { IpAddr::V4(Ipv4Addr::from(a as u32)) } else { IpAddr::V6(Ipv6Addr::from(a)) }
            } else {
                random
            };
            prop_assert_eq!(list.0[0].contains(&probe), reference_contains(addr, prefix, probe), "{}", probe);
        }
    }

    #[test]
    fn the_flag_reads_as_the_parser(text in prop_oneof![
        prop::collection::vec(net(), 0..3).prop_map(|n| n.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")),
        "[0-9./, a-f:]{0,20}",
    ]) {
        let parsed = Config::from_args(["hostie", "--trusted-proxies", &text]);
        prop_assert_eq!(parsed.map(|c| c.trusted_proxies).ok(), cidrs(&text).ok());
    }
}
