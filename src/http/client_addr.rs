//! The client's address: the TCP peer, or what a trusted proxy says it forwarded.
//!
//! The original service believed any forwarding header from anyone; hostie believes them only
//! when the TCP peer is inside `--trusted-proxies`, and reads a forwarding list from the right:
//! a proxy that appends to `X-Forwarded-For` leaves whatever the client sent on the left, so
//! only the entries written by trusted proxies, and the first address they name that is not
//! one of them, can be believed.

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

/// A client address, and whether a trusted proxy's forwarding header named it (else it is the
/// TCP peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    pub ip: IpAddr,
    pub forwarded: bool,
}

impl TrustedProxies {
    pub fn new(cidrs: Vec<IpNet>) -> Self {
        Self(cidrs)
    }

    fn trusts(&self, peer: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&peer))
    }

    /// The client address. Only when the TCP peer is trusted, in order: `X-Forwarded-For`, then
    /// `X-Real-IP`, then RFC 7239 `Forwarded: for=`; the two lists are walked right to left
    /// ([`Self::walk`]). Else, or when none names a client, the peer itself. IPv4-mapped IPv6
    /// addresses come back as IPv4.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        self.client(peer, headers).map(|c| c.ip)
    }

    /// [`Self::client_ip`], and where it came from.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<ClientAddr> {
        let peer = peer.map(|p| p.to_canonical());
        let forwarded = match peer {
            Some(p) if self.trusts(p) => self.forwarded_ip(headers),
            _ => None,
        };
        match forwarded {
            Some(ip) => Some(ClientAddr {
                ip: ip.to_canonical(),
                forwarded: true,
            }),
            None => peer.map(|ip| ClientAddr {
                ip,
                forwarded: false,
            }),
        }
    }

    /// Whether `headers` carry forwarding headers that [`Self::client_ip`] ignores because the
    /// peer is not trusted: what a proxy missing from `--trusted-proxies` looks like (see
    /// [`super::untrusted_proxy`]). `peer` in canonical form.
    pub fn ignores_forwarding(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        FORWARDING.iter().any(|name| headers.contains_key(*name)) && !self.trusts(peer)
    }

    fn forwarded_ip(&self, headers: &HeaderMap) -> Option<IpAddr> {
        self.walk(list(headers, "x-forwarded-for").map(|e| e.and_then(parse_node)))
            .or_else(|| header(headers, "x-real-ip").and_then(parse_node))
            .or_else(|| self.walk(list(headers, "forwarded").map(|e| e.and_then(element_for))))
    }

    /// The client named by a forwarding list (the left-most entry first): from the right,
    /// trusted proxies are skipped and the first address that is not one is the client. An
    /// entry that names no address (`unknown`, garbage) ends the walk with `None`: whoever wrote
    /// it, nothing to its left can be believed. Only trusted proxies: the left-most.
    fn walk(&self, entries: impl DoubleEndedIterator<Item = Option<IpAddr>>) -> Option<IpAddr> {
        let mut leftmost = None;
        for entry in entries.rev() {
            let ip = entry?.to_canonical();
            if !self.trusts(ip) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
        leftmost
    }
}

/// The headers a proxy names the client in, as [`TrustedProxies::client_ip`] reads them.
const FORWARDING: [&str; 3] = ["x-forwarded-for", "x-real-ip", "forwarded"];

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The entries of a comma-separated list header, over all its lines in order (as if joined by
/// `,`). Empty list elements are not entries (RFC 9110 §5.6.1); a line that is not text is one
/// entry naming nothing. Every comma splits, quoted or not: a quote the client left open cannot
/// swallow what a proxy appended.
fn list<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> impl DoubleEndedIterator<Item = Option<&'a str>> + use<'a> {
    headers.get_all(name).flat_map(|line| {
        let (text, opaque) = match line.to_str() {
            Ok(text) => (text, None),
            Err(_) => ("", Some(None)),
        };
        let entries = text.split(',').filter(|e| !e.trim().is_empty());
        opaque.into_iter().chain(entries.map(Some))
    })
}

/// The `for=` of one RFC 7239 `Forwarded` element. An element without one, or with more than
/// one (RFC 7239 §4 allows one), names nothing: the walk must not pass a proxy that did not say
/// whom it forwarded.
fn element_for(element: &str) -> Option<IpAddr> {
    let mut fors = element.split(';').filter_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v)
    });
    match (fors.next(), fors.next()) {
        (Some(v), None) => parse_node(v),
        _ => None,
    }
}

/// One node of a forwarding header: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:80"`, `2001:db8::1`.
/// Obfuscated identifiers (`unknown`, `_hidden`) yield `None`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let v = raw.trim().trim_matches('"');
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    v.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()])
    }

    #[test]
    fn the_client_says_whether_a_trusted_header_named_it() {
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        let named = |peer: &str| trusted().client(Some(ip(peer)), &h);
        assert_eq!(
            named("10.0.0.1"),
            Some(ClientAddr {
                ip: ip("203.0.113.7"),
                forwarded: true
            })
        );
        for peer in ["192.0.2.1", "::ffff:192.0.2.1"] {
            assert_eq!(
                named(peer),
                Some(ClientAddr {
                    ip: ip("192.0.2.1"),
                    forwarded: false
                }),
                "{peer}"
            );
        }
        assert_eq!(trusted().client(None, &h), None);
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(
            trusted().client_ip(Some(ip("192.0.2.1")), &h),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(
            TrustedProxies::default().client_ip(Some(ip("10.1.1.1")), &h),
            Some(ip("10.1.1.1"))
        );
    }

    #[test]
    fn forwarding_headers_are_ignored_only_from_untrusted_peers() {
        for name in FORWARDING {
            let h = headers(&[(name, "203.0.113.7")]);
            assert!(trusted().ignores_forwarding(ip("192.0.2.1"), &h), "{name}");
            assert!(!trusted().ignores_forwarding(ip("10.1.1.1"), &h), "{name}");
        }
        let plain = headers(&[("x-forwarded-proto", "https")]);
        assert!(!trusted().ignores_forwarding(ip("192.0.2.1"), &plain));
    }

    #[test]
    fn trusted_peer_header_order() {
        let peer = Some(ip("10.1.1.1"));
        let all = headers(&[
            ("x-forwarded-for", "203.0.113.7, 10.2.2.2"),
            ("x-real-ip", "203.0.113.8"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        assert_eq!(trusted().client_ip(peer, &all), Some(ip("203.0.113.7")));
        let real = headers(&[("x-real-ip", "203.0.113.8"), ("forwarded", "for=1.1.1.1")]);
        assert_eq!(trusted().client_ip(peer, &real), Some(ip("203.0.113.8")));
        let fwd = headers(&[(
            "forwarded",
            "proto=https;For=\"[2001:db8::1]:4711\", for=10.2.2.2;proto=http",
        )]);
        assert_eq!(trusted().client_ip(peer, &fwd), Some(ip("2001:db8::1")));
        assert_eq!(trusted().client_ip(peer, &headers(&[])), peer);
    }

    #[test]
    fn garbage_falls_through() {
        let peer = Some(ip("10.1.1.1"));
        let h = headers(&[("x-forwarded-for", "unknown"), ("forwarded", "for=_hidden")]);
        assert_eq!(trusted().client_ip(peer, &h), peer);
        let port = headers(&[("x-forwarded-for", "203.0.113.7:5555")]);
        assert_eq!(trusted().client_ip(peer, &port), Some(ip("203.0.113.7")));
    }

    #[test]
    fn a_spoofed_entry_left_of_an_appending_proxy_is_ignored() {
        // The client sent `X-Forwarded-For: 198.51.100.66`; the trusted proxy appended the
        // address it saw.
        let peer = Some(ip("10.1.1.1"));
        let xff = headers(&[("x-forwarded-for", "198.51.100.66, 203.0.113.7")]);
        assert_eq!(trusted().client_ip(peer, &xff), Some(ip("203.0.113.7")));
        let fwd = headers(&[("forwarded", "for=198.51.100.66, for=203.0.113.7")]);
        assert_eq!(trusted().client_ip(peer, &fwd), Some(ip("203.0.113.7")));
        // From an untrusted peer, neither entry.
        let other = Some(ip("192.0.2.1"));
        assert_eq!(trusted().client_ip(other, &xff), other);
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_through() {
        let peer = Some(ip("10.1.1.1"));
        let xff = headers(&[(
            "x-forwarded-for",
            "198.51.100.66, 203.0.113.7, 10.2.2.2, ::ffff:10.3.3.3",
        )]);
        assert_eq!(trusted().client_ip(peer, &xff), Some(ip("203.0.113.7")));
        let fwd = headers(&[(
            "forwarded",
            "for=198.51.100.66, for=203.0.113.7;proto=https, for=10.2.2.2, for=\"10.3.3.3:80\"",
        )]);
        assert_eq!(trusted().client_ip(peer, &fwd), Some(ip("203.0.113.7")));
    }

    #[test]
    fn only_trusted_entries_give_the_left_most() {
        let peer = Some(ip("10.1.1.1"));
        let xff = headers(&[("x-forwarded-for", "10.2.2.2, 10.3.3.3")]);
        assert_eq!(trusted().client_ip(peer, &xff), Some(ip("10.2.2.2")));
        let fwd = headers(&[("forwarded", "for=10.2.2.2, for=10.3.3.3")]);
        assert_eq!(trusted().client_ip(peer, &fwd), Some(ip("10.2.2.2")));
    }

    #[test]
    fn an_entry_naming_nothing_ends_the_walk() {
        let peer = Some(ip("10.1.1.1"));
        let xff = ("x-forwarded-for", "203.0.113.7, unknown, 10.2.2.2");
        // Nothing left of `unknown` is believed: the next header, else the peer.
        let h = headers(&[xff, ("x-real-ip", "203.0.113.8")]);
        assert_eq!(trusted().client_ip(peer, &h), Some(ip("203.0.113.8")));
        let h = headers(&[xff, ("forwarded", "for=203.0.113.9")]);
        assert_eq!(trusted().client_ip(peer, &h), Some(ip("203.0.113.9")));
        assert_eq!(trusted().client_ip(peer, &headers(&[xff])), peer);
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 300.1.1.1")]);
        assert_eq!(trusted().client_ip(peer, &h), peer);
        // A `Forwarded` element without a `for=` (or with two) is such an entry too.
        for fwd in [
            "for=203.0.113.9, proto=https",
            "for=203.0.113.9, for=10.2.2.2;for=10.3.3.3",
            "for=203.0.113.9, for=_hidden",
        ] {
            let h = headers(&[("forwarded", fwd)]);
            assert_eq!(trusted().client_ip(peer, &h), peer, "{fwd}");
        }
        // Garbage left of the client is never reached.
        let h = headers(&[("x-forwarded-for", "unknown, 203.0.113.7, 10.2.2.2")]);
        assert_eq!(trusted().client_ip(peer, &h), Some(ip("203.0.113.7")));
    }

    #[test]
    fn header_lines_are_one_list() {
        let peer = Some(ip("10.1.1.1"));
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.66"),
            ("x-forwarded-for", "203.0.113.7, 10.2.2.2"),
        ]);
        assert_eq!(trusted().client_ip(peer, &h), Some(ip("203.0.113.7")));
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.66, 203.0.113.7"),
            ("x-forwarded-for", "10.2.2.2"),
        ]);
        assert_eq!(trusted().client_ip(peer, &h), Some(ip("203.0.113.7")));
        let h = headers(&[
            ("forwarded", "for=198.51.100.66"),
            ("forwarded", "for=203.0.113.7, for=10.2.2.2"),
        ]);
        assert_eq!(trusted().client_ip(peer, &h), Some(ip("203.0.113.7")));
        // Empty list elements are no entries.
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7, ,"),
            ("x-forwarded-for", ""),
            ("x-forwarded-for", ",10.2.2.2,"),
        ]);
        assert_eq!(trusted().client_ip(peer, &h), Some(ip("203.0.113.7")));
        // A line that is not text is an entry naming nothing.
        let mut h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        h.append(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_bytes(b"10.2.2.2\xff").unwrap(),
        );
        h.append(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("10.3.3.3"),
        );
        assert_eq!(trusted().client_ip(peer, &h), peer);
    }

    #[test]
    fn ipv4_mapped_prefix_is_stripped() {
        let h = headers(&[]);
        assert_eq!(
            trusted().client_ip(Some(ip("::ffff:192.0.2.1")), &h),
            Some(ip("192.0.2.1"))
        );
        let mapped = headers(&[("x-forwarded-for", "::ffff:203.0.113.7")]);
        assert_eq!(
            TrustedProxies::new(vec![
                "::ffff:0:0/96".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap()
            ])
            .client_ip(Some(ip("10.0.0.1")), &mapped),
            Some(ip("203.0.113.7"))
        );
    }
}

#[cfg(test)]
#[path = "client_addr_proptests.rs"]
mod proptests;
