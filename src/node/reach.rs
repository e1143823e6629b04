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
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct ReachSettings {
    pub interval: Duration,
    pub timeout: Duration,
    /// Probes per second, at most.
    pub rate: u32,
    pub deny: Vec<IpNet>,
}

/// Name lookups running at once, at most. The system resolver (`getaddrinfo`) cannot be
/// cancelled: a lookup that outlives `--probe-timeout` keeps its blocking thread until the
/// resolver gives up, and holds its permit until then, so slow DNS never piles up threads.
const LOOKUPS: usize = 4;

/// How often due sessions are looked for.
const TICK: Duration = Duration::from_millis(250);
/// A resolved name's addresses tried, at most.
const ADDRESSES_TRIED: usize = 2;

/// Runs until aborted (at drain).
pub async fn run(node: Arc<Node>, settings: ReachSettings) {
    node.hub.enable_reach();
    let settings = Arc::new(settings);
    let lookups = Arc::new(Semaphore::new(LOOKUPS));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running = JoinSet::new();
    let mut credit = Credit::new(settings.rate);
    loop {
        tick.tick().await;
        while running.try_join_next().is_some() {}
        // At most one second's worth in flight: slow probes hold back new ones.
        let room = (settings.rate as usize).saturating_sub(running.len());
        let start = credit.accrue(TICK).min(room);
        if start == 0 {
            continue;
        }
        let due = node.hub.probe_due(start);
        credit.spend(due.len());
        for (session, record) in due {
            let (node, settings, lookups) = (node.clone(), settings.clone(), lookups.clone());
            running.spawn(async move {
                probe_session(&node, session, &record, &settings, &lookups).await;
            });
        }
    }
}

async fn probe_session(
    node: &Node,
    session: SessionId,
    record: &SessionRecord,
    settings: &ReachSettings,
    lookups: &Arc<Semaphore>,
) {
    let reach = match node.hub.ask_port(session, settings.timeout).await {
        Ok(answer) => Some(probe(&record.host, answer.port, settings, lookups).await),
        // Closed meanwhile: nothing to report.
        Err(_) => None,
    };
    if let Some(r) = reach {
        node.metrics.reach_probe(r);
        tracing::debug!(%session, token = %record.token, reach = r.label(), "reachability probed");
    }
    let next = std::time::Instant::now() + settings.interval;
    node.hub.set_reach(session, reach, next);
}

/// Whether `host:port` accepts a TCP connection, never connecting into a denied range. Takes
/// at most the lookup's and each of [`ADDRESSES_TRIED`] connects' `timeout`.
pub async fn probe(
    host: &str,
    port: u16,
    settings: &ReachSettings,
    lookups: &Arc<Semaphore>,
) -> Reach {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match lookup(host, port, settings.timeout, lookups).await {
            Some(addrs) => addrs,
            None => return Reach::Unreachable,
        },
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

/// Probes that may start: `rate` a second as time passes, at most one second's worth saved.
struct Credit {
    rate: f64,
    saved: f64,
}

impl Credit {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            saved: 0.0,
        }
    }

    /// After `elapsed` more: how many may start now.
    fn accrue(&mut self, elapsed: Duration) -> usize {
        self.saved = (self.saved + self.rate * elapsed.as_secs_f64()).min(self.rate.max(1.0));
        self.saved.floor() as usize
    }

    fn spend(&mut self, started: usize) {
        self.saved = (self.saved - started as f64).max(0.0);
    }
}

/// `host`'s addresses, within `timeout`, on a blocking thread that holds a lookup permit until
/// the resolver returns (see [`LOOKUPS`]). `None`: no answer in time, or none at all.
async fn lookup(
    host: &str,
    port: u16,
    timeout: Duration,
    lookups: &Arc<Semaphore>,
) -> Option<Vec<SocketAddr>> {
    let permit = tokio::time::timeout(timeout, lookups.clone().acquire_owned())
        .await
        .ok()?
        .ok()?;
    let host = host.to_owned();
    let resolve = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        (host.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect::<Vec<_>>)
    });
    match tokio::time::timeout(timeout, resolve).await {
        Ok(Ok(Ok(addrs))) => Some(addrs),
        _ => None,
    }
}

/// Whether `ip` is in a denied range: as given, as its IPv4 form when it is IPv4-mapped, and
/// as the IPv4 address a NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address leads to, so
/// that an IPv6 spelling of a denied IPv4 address is denied too.
fn denied(ip: IpAddr, deny: &[IpNet]) -> bool {
    let mut forms = vec![ip, ip.to_canonical()];
    if let IpAddr::V6(v6) = ip {
        let s = v6.segments();
        let octets = v6.octets();
        if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            forms.push(IpAddr::from([
                octets[12], octets[13], octets[14], octets[15],
            ]));
        }
        if s[0] == 0x2002 {
            forms.push(IpAddr::from([octets[2], octets[3], octets[4], octets[5]]));
        }
    }
    forms
        .iter()
        .any(|ip| deny.iter().any(|net| net.contains(ip)))
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
        let lookups = Arc::new(Semaphore::new(LOOKUPS));
        assert_eq!(
            probe("127.0.0.1", open, &allow, &lookups).await,
            Reach::Reachable
        );
        assert_eq!(
            probe("localhost", open, &allow, &lookups).await,
            Reach::Reachable
        );
        assert_eq!(
            probe("127.0.0.1", closed, &allow, &lookups).await,
            Reach::Unreachable
        );
        assert_eq!(
            probe("name.invalid", open, &allow, &lookups).await,
            Reach::Unreachable
        );
        let deny = settings(&["127.0.0.0/8", "::1/128"]);
        assert_eq!(
            probe("127.0.0.1", open, &deny, &lookups).await,
            Reach::Denied
        );
        assert_eq!(
            probe("localhost", open, &deny, &lookups).await,
            Reach::Denied
        );
        assert_eq!(
            probe("::ffff:127.0.0.1", open, &deny, &lookups).await,
            Reach::Denied
        );
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
    fn probes_start_at_the_rate_whatever_the_tick() {
        for (rate, per_second) in [(1, 1), (5, 5), (10, 10), (3, 3)] {
            let mut credit = Credit::new(rate);
            let mut started = 0;
            for _ in 0..40 {
                let n = credit.accrue(TICK);
                credit.spend(n);
                started += n;
            }
            assert_eq!(started, per_second * 10, "rate {rate}, over 10 s");
        }
        // Idle time saves at most one second's worth.
        let mut credit = Credit::new(10);
        assert_eq!(credit.accrue(Duration::from_secs(60)), 10);
        credit.spend(3);
        assert_eq!(credit.accrue(Duration::ZERO), 7, "what was not spent stays");
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
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "::a00:1",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "224.0.0.1",
            "fec0::1",
        ] {
            assert!(denied(ip.parse().unwrap(), &deny), "{ip}");
        }
        for ip in [
            "203.0.113.7",
            "8.8.8.8",
            "2001:db8::1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!denied(ip.parse().unwrap(), &deny), "{ip}");
        }
    }
}
