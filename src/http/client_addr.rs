//! The client's address: the TCP peer, or what a trusted proxy says it forwarded.
//!
//! The original service believed any forwarding header from anyone; hostie believes them only
//! when the TCP peer is inside `--trusted-proxies`.

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(cidrs: Vec<IpNet>) -> Self {
        Self(cidrs)
    }

    fn trusts(&self, peer: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&peer))
    }

    /// The client address, in order: left-most `X-Forwarded-For`, `X-Real-IP`, RFC 7239
    /// `Forwarded: for=` (only from a trusted peer), else the peer itself. IPv4-mapped IPv6
    /// addresses come back as IPv4.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.map(|p| p.to_canonical());
        let forwarded = match peer {
            Some(p) if self.trusts(p) => forwarded_ip(headers),
            _ => None,
        };
        forwarded.or(peer).map(|ip| ip.to_canonical())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn forwarded_ip(headers: &HeaderMap) -> Option<IpAddr> {
    let xff = header(headers, "x-forwarded-for").and_then(|v| parse_node(v.split(',').next()?));
    xff.or_else(|| header(headers, "x-real-ip").and_then(parse_node))
        .or_else(|| header(headers, "forwarded").and_then(parse_forwarded_for))
}

/// The `for=` of the first element of an RFC 7239 `Forwarded` header.
fn parse_forwarded_for(value: &str) -> Option<IpAddr> {
    let first = value.split(',').next()?;
    first.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(v))?
    })
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
            "proto=https;For=\"[2001:db8::1]:4711\", for=1.1.1.1",
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
