//! Reachability, opt-in (`--probe-reachability`): does each local gateway's advertised
//! `host:port` accept a TCP connection? The most common reason an SDK cannot use an answer is
//! a gateway behind NAT or a firewall, advertising an address nobody can reach; this says so on
//! the token's page and in the answer (`reachability`), without ever changing the advertised
//! host (the original's `127.0.0.1` substitution confused every client family).
//!
//! Each node probes its own sessions: after registration, then every `interval`, at most
//! `rate` per second, each within `timeout` (name lookup and connect each). An address in a
//! `deny` range, or a name resolving to one, is never connected to (`denied`): the feature
//! cannot be used to scan the operator's network. The port is the one the gateway answers
//! (asked as a discovery would, so its `--port-reuse` window applies).

use super::Node;
use crate::model::Reach;
use crate::model::{SessionId, SessionRecord};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct ReachSettings {
    pub interval: Duration,
    pub timeout: Duration,
    /// Probes per second, at most.
    pub rate: u32,
    pub deny: Vec<IpNet>,
}

/// How often due sessions are looked for.
const TICK: Duration = Duration::from_millis(250);
/// A resolved name's addresses tried, at most.
const ADDRESSES_TRIED: usize = 2;

/// Runs until aborted (at drain).
pub async fn run(node: Arc<Node>, settings: ReachSettings) {
    node.hub.enable_reach();
    let settings = Arc::new(settings);
    let per_tick = ((f64::from(settings.rate) * TICK.as_secs_f64()).ceil() as usize).max(1);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running = JoinSet::new();
    loop {
        tick.tick().await;
        while running.try_join_next().is_some() {}
        // At most one second's worth in flight: slow probes hold back new ones.
        let room = (settings.rate as usize).saturating_sub(running.len());
        for (session, record) in node.hub.probe_due(settings.interval, per_tick.min(room)) {
            let (node, settings) = (node.clone(), settings.clone());
            running.spawn(async move { probe_session(&node, session, &record, &settings).await });
        }
    }
}

async fn probe_session(
    node: &Node,
    session: SessionId,
    record: &SessionRecord,
    settings: &ReachSettings,
) {
    let reach = match node.hub.ask_port(session, settings.timeout).await {
        Ok(answer) => Some(probe(&record.host, answer.port, settings).await),
        // Closed meanwhile: nothing to report.
        Err(_) => None,
    };
    if let Some(r) = reach {
        node.metrics.reach_probe(r);
        tracing::debug!(%session, token = %record.token, reach = r.label(), "reachability probed");
    }
    node.hub.set_reach(session, reach);
}

/// Whether `host:port` accepts a TCP connection, never connecting into a denied range.
pub async fn probe(host: &str, port: u16, settings: &ReachSettings) -> Reach {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            match tokio::time::timeout(settings.timeout, tokio::net::lookup_host((host, port)))
                .await
            {
                Ok(Ok(addrs)) => addrs.collect(),
                _ => return Reach::Unreachable,
            }
        }
    };
    // Every address the name has is checked, not just the one tried: a name that also points
    // into a denied range is not probed at all.
    if addrs.is_empty() || addrs.iter().any(|a| denied(a.ip(), &settings.deny)) {
        return if addrs.is_empty() {
            Reach::Unreachable
        } else {
            Reach::Denied
        };
    }
    for addr in addrs.into_iter().take(ADDRESSES_TRIED) {
        if let Ok(Ok(_)) = tokio::time::timeout(settings.timeout, TcpStream::connect(addr)).await {
            return Reach::Reachable;
        }
    }
    Reach::Unreachable
}

/// Whether `ip` (an IPv4-mapped IPv6 address as its IPv4 form) is in a denied range.
fn denied(ip: IpAddr, deny: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    deny.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(deny: &[&str]) -> ReachSettings {
        ReachSettings {
            interval: Duration::from_secs(60),
            timeout: Duration::from_millis(500),
            rate: 10,
            deny: deny.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    #[tokio::test]
    async fn a_listening_port_is_reachable_a_closed_one_is_not_and_a_denied_one_is_never_tried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let allow = settings(&[]);
        assert_eq!(probe("127.0.0.1", open, &allow).await, Reach::Reachable);
        assert_eq!(probe("localhost", open, &allow).await, Reach::Reachable);
        assert_eq!(probe("127.0.0.1", closed, &allow).await, Reach::Unreachable);
        assert_eq!(
            probe("name.invalid", open, &allow).await,
            Reach::Unreachable
        );
        let deny = settings(&["127.0.0.0/8", "::1/128"]);
        assert_eq!(probe("127.0.0.1", open, &deny).await, Reach::Denied);
        assert_eq!(probe("localhost", open, &deny).await, Reach::Denied);
        assert_eq!(probe("::ffff:127.0.0.1", open, &deny).await, Reach::Denied);
        // Nothing connected while denied: the only connections were the two reachable ones.
        let mut accepted = 0;
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(50), listener.accept()).await
        {
            accepted += 1;
        }
        assert_eq!(accepted, 2, "127.0.0.1 and localhost, allowed");
    }

    #[test]
    fn the_default_deny_ranges_cover_what_an_operator_keeps_private() {
        let config = <crate::config::Config as clap::Parser>::try_parse_from(["hostie"]).unwrap();
        let deny = config.probe_deny.0;
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(denied(ip.parse().unwrap(), &deny), "{ip}");
        }
        for ip in ["203.0.113.7", "8.8.8.8", "2001:db8::1"] {
            assert!(!denied(ip.parse().unwrap(), &deny), "{ip}");
        }
    }
}
