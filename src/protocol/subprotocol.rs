//! The `Sec-WebSocket-Protocol` value a registering client offers:
//! `io|0.0.1|<wechatyId>|<serviceIp>|<servicePort>` (wechaty ≥ 0.57.5) or `io|0.0.1|<wechatyId>`.
//!
//! It is per-client data that must be echoed verbatim (the `ws` library aborts otherwise), and it
//! tells the registry the custom host, the service port and whether the client has a JSON-RPC
//! peer at all.

use std::net::IpAddr;

/// What the subprotocol tells about the client's JSON-RPC peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PeerHint {
    /// The 5-field form with an absent port: `Io` creates its JSON-RPC peer only when it has a
    /// service port, so this client will never answer `getHostieGrpcPort`.
    NoPeer,
    /// Anything else (3-field form, a port present): ask.
    Ask,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subprotocol {
    /// The value exactly as offered, for the echo.
    pub raw: String,
    pub protocol: String,
    /// The protocol version (`0.0.1`), when present and at most 32 bytes.
    pub version: Option<String>,
    pub client_id: Option<String>,
    /// A custom host the client asks to be discovered at (validated as an IP or a host name).
    pub host: Option<String>,
    /// A custom host was offered but is neither (a bare number, a URL, garbage): the client
    /// address stands in for it, and the token's page says so.
    pub rejected_host: bool,
    /// The service port, when it is a valid port.
    pub port: Option<u16>,
    pub peer: PeerHint,
}

impl Subprotocol {
    /// The first of possibly several comma-separated offered values, parsed.
    pub fn from_header(value: &str) -> Option<Self> {
        let first = value.split(',').map(str::trim).find(|v| !v.is_empty())?;
        Some(Self::parse(first))
    }

    pub fn parse(raw: &str) -> Self {
        let fields: Vec<&str> = raw.split('|').collect();
        let field = |i: usize| fields.get(i).copied().filter(|v| !is_absent(v));
        let port_field = field(4);
        let peer = if fields.len() >= 5 && port_field.is_none() {
            PeerHint::NoPeer
        } else {
            PeerHint::Ask
        };
        Self {
            raw: raw.to_owned(),
            protocol: fields[0].to_owned(),
            version: field(1).filter(|v| v.len() <= 32).map(str::to_owned),
            client_id: field(2).map(str::to_owned),
            host: field(3).filter(|h| is_valid_host(h)).map(str::to_owned),
            rejected_host: field(3).is_some_and(|h| !is_valid_host(h)),
            port: port_field.and_then(parse_port),
            peer,
        }
    }

    /// Only `io` registrations are ever returned from discovery.
    pub fn is_discoverable(&self) -> bool {
        self.protocol == "io"
    }
}

/// Empty, `undefined` and `NaN` all mean "absent" (JavaScript's string forms of nothing).
fn is_absent(v: &str) -> bool {
    v.is_empty() || v == "undefined" || v == "NaN"
}

pub fn parse_port(v: &str) -> Option<u16> {
    v.parse::<u16>().ok().filter(|p| *p != 0)
}

/// An IP address or an RFC 1123 host name; anything else is ignored rather than handed to SDKs.
/// A name whose last label is all digits is not a DNS name (no top-level domain is numeric,
/// RFC 3696 §2): `12345` or `10.0.0.256` would be read as a malformed address.
pub fn is_valid_host(h: &str) -> bool {
    if h.parse::<IpAddr>().is_ok() {
        return true;
    }
    let numeric_tld = h
        .rsplit('.')
        .next()
        .is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()));
    !numeric_tld
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_with_port() {
        let s = Subprotocol::parse("io|0.0.1|fake-wechaty-id||18789");
        assert_eq!(s.protocol, "io");
        assert_eq!(s.client_id.as_deref(), Some("fake-wechaty-id"));
        assert_eq!(s.host, None);
        assert_eq!(s.port, Some(18789));
        assert_eq!(s.peer, PeerHint::Ask);
        assert!(s.is_discoverable());
    }

    #[test]
    fn a_host_that_is_neither_an_address_nor_a_name_is_rejected_and_flagged() {
        for bad in [
            "12345",
            "10.0.0.256",
            "1.2.3",
            "http://203.0.113.7",
            "203.0.113.7:18789",
            "a b",
            "gw_1.example.com",
        ] {
            let s = Subprotocol::parse(&format!("io|0.0.1|id|{bad}|18789"));
            assert_eq!((s.host.as_deref(), s.rejected_host), (None, true), "{bad}");
        }
        for good in [
            "gw.example.com",
            "203.0.113.7",
            "::1",
            "localhost",
            "1a.example.com",
        ] {
            let s = Subprotocol::parse(&format!("io|0.0.1|id|{good}|18789"));
            assert_eq!((s.host.as_deref(), s.rejected_host), (Some(good), false));
        }
        let s = Subprotocol::parse("io|0.0.1|id||18789");
        assert!(!s.rejected_host, "absent is not rejected");
    }

    #[test]
    fn five_fields_with_host() {
        let s = Subprotocol::parse("io|0.0.1|id|203.0.113.7|18789");
        assert_eq!(s.host.as_deref(), Some("203.0.113.7"));
        assert_eq!(s.port, Some(18789));
    }

    #[test]
    fn absent_port_means_no_peer() {
        for raw in [
            "io|0.0.1|57a9||undefined",
            "io|0.0.1|57a9||NaN",
            "io|0.0.1|57a9||",
        ] {
            let s = Subprotocol::parse(raw);
            assert_eq!(s.peer, PeerHint::NoPeer, "{raw}");
            assert_eq!(s.port, None);
        }
    }

    #[test]
    fn three_fields_tell_nothing() {
        let s = Subprotocol::parse("io|0.0.1|old-id");
        assert_eq!(s.peer, PeerHint::Ask);
        assert_eq!(s.port, None);
        assert_eq!(s.host, None);
    }

    #[test]
    fn invalid_port_and_host_are_ignored() {
        let s = Subprotocol::parse("io|0.0.1|id|<script>|99999");
        assert_eq!(s.port, None);
        assert_eq!(s.host, None);
        assert_eq!(s.peer, PeerHint::Ask);
        assert_eq!(Subprotocol::parse("io|1|id|h|0").port, None);
        assert_eq!(
            Subprotocol::parse("io|1|id|puppet.example.com|1")
                .host
                .as_deref(),
            Some("puppet.example.com")
        );
        assert_eq!(
            Subprotocol::parse("io|1|id|::1|1").host.as_deref(),
            Some("::1")
        );
    }

    #[test]
    fn other_protocols_are_not_discoverable() {
        assert!(!Subprotocol::parse("web|0.0.1|id||1").is_discoverable());
        assert!(!Subprotocol::parse("").is_discoverable());
    }

    #[test]
    fn first_offered_value_is_taken_verbatim() {
        let s = Subprotocol::from_header("io|0.0.1|a||1, io|0.0.1|b||2").unwrap();
        assert_eq!(s.raw, "io|0.0.1|a||1");
        assert!(Subprotocol::from_header(" , ").is_none());
    }
}

#[cfg(test)]
#[path = "subprotocol_proptests.rs"]
mod proptests;
