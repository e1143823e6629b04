//! The record of one registered session: what a node other than the owner needs to answer a
//! discovery for it. Stored as JSON in the registry (`docs/redis.md`).

use super::ids::{NodeId, SessionId};
use crate::protocol::{PeerHint, TokenHash};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// Everything a node other than the owner needs to answer a discovery for this session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub session: SessionId,
    pub node: NodeId,
    pub token: TokenHash,
    /// Microseconds since the Unix epoch; discovery asks the newest session first.
    pub registered_at_us: u64,
    /// The host that discovery answers with (custom host, else the client address).
    pub host: String,
    /// The subprotocol's service port, used when the JSON-RPC fails.
    pub port_hint: Option<u16>,
    pub peer: PeerHint,
    /// Where the gateway connected from ([`source_of`] its client address), for the session
    /// order policy and the per-source cap. Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Where `host` came from, for the token's page. Absent in records written before it
    /// existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_from: Option<HostFrom>,
    /// The gateway offered a custom host that is neither an IP address nor a DNS name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rejected_host: bool,
    /// The version field of the gateway's subprotocol (`io|<version>|…`), for the token's page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Where a session's advertised host came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostFrom {
    /// The gateway named it (the subprotocol's host field).
    Gateway,
    /// A trusted proxy's forwarding header (`--trusted-proxies`).
    Forwarded,
    /// The connection's peer address.
    Peer,
}

/// The source of a client address: an IPv4 address itself; for IPv6, its /64 network, which
/// one host keeps while its privacy extensions rotate the rest.
pub fn source_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let net = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", Ipv6Addr::from(net))
            }
        },
    }
}

/// In which order a token's live sessions are offered (`--session-order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SessionOrder {
    /// Newest first within one source (a gateway that restarted supersedes its old session);
    /// a session from another source is only a fallback while an older source's session is
    /// live: sources are ordered by their oldest live session.
    #[default]
    Source,
    /// Newest first, whatever the source: the newest registration takes every discovery.
    Newest,
}

/// Orders candidates by `policy` (see [`SessionOrder`]). Records without a source (written
/// before sources were recorded, or with no client address) share one unknown source, so that
/// they keep the plain newest-first order among themselves.
pub fn order(records: &mut [SessionRecord], policy: SessionOrder) {
    newest_first(records);
    if policy == SessionOrder::Newest || records.len() < 2 {
        return;
    }
    // Each source's oldest session; a stable sort of the newest-first list by it keeps newest
    // first within a source, and ties between sources (same microsecond) in newest-first order.
    let mut oldest: HashMap<Option<String>, u64> = HashMap::new();
    for r in records.iter() {
        let since = oldest.entry(r.source.clone()).or_insert(r.registered_at_us);
        *since = (*since).min(r.registered_at_us);
    }
    records.sort_by_key(|r| oldest[&r.source]);
}

/// Sorts records newest first; ties (same microsecond) broken by session id for a stable order.
pub fn newest_first(records: &mut [SessionRecord]) {
    records.sort_by(|a, b| {
        b.registered_at_us
            .cmp(&a.registered_at_us)
            .then(b.session.cmp(&a.session))
    });
}

#[cfg(test)]
impl SessionRecord {
    /// A new session of `token` on `node` for unit tests: registered at 1 µs, host 127.0.0.1,
    /// subprotocol port 1, asked for its port; tests override what they need.
    pub fn example(token: TokenHash, node: &str) -> Self {
        Self {
            session: super::SessionId::new(),
            node: super::NodeId(node.into()),
            token,
            registered_at_us: 1,
            host: "127.0.0.1".into(),
            port_hint: Some(1),
            peer: PeerHint::Ask,
            source: None,
            host_from: None,
            rejected_host: false,
            version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: u64, source: Option<&str>) -> SessionRecord {
        SessionRecord {
            registered_at_us: at,
            source: source.map(str::to_owned),
            ..SessionRecord::example(TokenHash([1; 32]), "n")
        }
    }

    fn times(records: &[SessionRecord]) -> Vec<u64> {
        records.iter().map(|r| r.registered_at_us).collect()
    }

    #[test]
    fn a_restart_supersedes_and_a_stranger_waits() {
        let all = vec![
            rec(1, Some("a")),
            rec(2, Some("b")),
            rec(3, Some("a")),
            rec(4, Some("c")),
            rec(5, Some("b")),
        ];
        let mut by_source = all.clone();
        order(&mut by_source, SessionOrder::Source);
        // Source a holds the token since 1: its newest first; then b (since 2), then c.
        assert_eq!(times(&by_source), [3, 1, 5, 2, 4]);
        let mut newest = all;
        order(&mut newest, SessionOrder::Newest);
        assert_eq!(times(&newest), [5, 4, 3, 2, 1]);
    }

    #[test]
    fn records_without_a_source_share_one() {
        let mut records = vec![rec(1, None), rec(2, Some("a")), rec(3, None)];
        order(&mut records, SessionOrder::Source);
        assert_eq!(times(&records), [3, 1, 2]);
        let mut legacy = vec![rec(1, None), rec(2, None)];
        order(&mut legacy, SessionOrder::Source);
        assert_eq!(times(&legacy), [2, 1]);
        // One source: plain newest first.
        let mut same = vec![rec(1, Some("a")), rec(2, Some("a"))];
        order(&mut same, SessionOrder::Source);
        assert_eq!(times(&same), [2, 1]);
    }

    #[test]
    fn sources_are_addresses_and_ipv6_networks() {
        assert_eq!(source_of("203.0.113.9".parse().unwrap()), "203.0.113.9");
        assert_eq!(
            source_of("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            source_of("2001:db8:1:2::1".parse().unwrap()),
            source_of("2001:db8:1:2:ffff::9".parse().unwrap())
        );
        assert_eq!(
            source_of("::ffff:198.51.100.7".parse().unwrap()),
            "198.51.100.7"
        );
    }

    #[test]
    fn a_record_without_a_source_still_parses() {
        let with = rec(1, Some("203.0.113.9"));
        let mut json: serde_json::Value = serde_json::to_value(&with).unwrap();
        assert_eq!(json["source"], "203.0.113.9");
        // What an older node wrote: no `source` at all. Read by a newer node, and the other way
        // round (an older node ignores the field it does not know).
        json.as_object_mut().unwrap().remove("source");
        let parsed: SessionRecord = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(
            parsed,
            SessionRecord {
                source: None,
                ..with
            }
        );
        assert!(!serde_json::to_string(&parsed).unwrap().contains("source"));
    }
}
