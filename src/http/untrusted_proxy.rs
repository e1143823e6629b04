//! Proxies in front of hostie that `--trusted-proxies` leaves out.
//!
//! Behind a load balancer with no trusted proxies configured nothing fails: the forwarding
//! headers are (rightly) ignored, every gateway that names no host is advertised at the
//! proxy's address and every client shares one rate-limit bucket. The one sign is a peer outside
//! `--trusted-proxies` that keeps sending `X-Forwarded-For`, `X-Real-IP` or `Forwarded`: after a
//! few registrations (or many discoveries) it is judged a proxy, once, so that it can be said
//! loudly (a warning naming it, a gauge, the status page).
//!
//! A client may send such headers itself (one behind a forward proxy of its own, or one trying
//! to choose its address): it is judged the same way, and the warning says "if it is yours".

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

/// Registrations with ignored forwarding headers that make a peer a suspect. A gateway that
/// reconnected once is no proxy yet; the third session from one address that forwards is.
pub const SUSPECT_REGISTRATIONS: u32 = 3;
/// Discoveries that do the same: an SDK behind a forward proxy asks once per start, a load
/// balancer passes every client's.
pub const SUSPECT_DISCOVERIES: u32 = 100;
/// Suspects remembered, warned of and counted at most: together with [`PEERS`] this bounds the
/// memory and the log whatever the sources of the requests.
pub const MAX_SUSPECTS: usize = 16;
/// Peers counted at once. When full, the one least on its way to suspicion makes room, so
/// sources varied by a client sending the headers cannot push out a proxy that keeps sending.
const PEERS: usize = 1024;

/// What a request with ignored forwarding headers was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Registration,
    Discovery,
}

/// What noting one request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing new to say.
    Counted,
    /// The peer has just become a suspect (once per peer): warn.
    NewSuspect,
    /// A peer became a suspect past [`MAX_SUSPECTS`] (said once): further ones are not named.
    TooMany,
}

/// What the status page may show: how many, since when, and no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UntrustedProxies {
    /// Peers judged to be proxies outside `--trusted-proxies` (at most [`MAX_SUSPECTS`]).
    pub suspects: usize,
    /// When the first was judged so.
    pub since: Option<SystemTime>,
}

#[derive(Default)]
struct Peer {
    registrations: u32,
    discoveries: u32,
    suspect: bool,
}

impl Peer {
    fn reached(&self) -> bool {
        self.registrations >= SUSPECT_REGISTRATIONS || self.discoveries >= SUSPECT_DISCOVERIES
    }

    /// How far on its way to suspicion, a registration weighing as much as the discoveries
    /// that stand for it.
    fn progress(&self) -> u64 {
        let per_registration = u64::from(SUSPECT_DISCOVERIES / SUSPECT_REGISTRATIONS);
        u64::from(self.registrations) * per_registration + u64::from(self.discoveries)
    }
}

#[derive(Default)]
struct Inner {
    /// Suspects are never evicted: at most [`MAX_SUSPECTS`] of [`PEERS`].
    peers: HashMap<IpAddr, Peer>,
    suspects: usize,
    since: Option<SystemTime>,
    told_too_many: bool,
}

/// Per-peer counts of requests whose forwarding headers were ignored, bounded.
#[derive(Default)]
pub struct UntrustedProxyWatch {
    inner: Mutex<Inner>,
}

impl UntrustedProxyWatch {
    /// Notes one request from `peer` (outside `--trusted-proxies`) whose forwarding headers
    /// were ignored.
    pub fn note(&self, peer: IpAddr, request: Request) -> Verdict {
        let mut inner = self.lock();
        if !inner.peers.contains_key(&peer) && inner.peers.len() >= PEERS {
            inner.evict_one();
        }
        let entry = inner.peers.entry(peer).or_default();
        if entry.suspect {
            return Verdict::Counted;
        }
        match request {
            Request::Registration => entry.registrations = entry.registrations.saturating_add(1),
            Request::Discovery => entry.discoveries = entry.discoveries.saturating_add(1),
        }
        if !entry.reached() {
            return Verdict::Counted;
        }
        if inner.suspects >= MAX_SUSPECTS {
            return if std::mem::replace(&mut inner.told_too_many, true) {
                Verdict::Counted
            } else {
                Verdict::TooMany
            };
        }
        if let Some(p) = inner.peers.get_mut(&peer) {
            p.suspect = true;
        }
        inner.suspects += 1;
        inner.since.get_or_insert_with(SystemTime::now);
        Verdict::NewSuspect
    }

    /// For the status page.
    pub fn status(&self) -> UntrustedProxies {
        let inner = self.lock();
        UntrustedProxies {
            suspects: inner.suspects,
            since: inner.since,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change leaves the counts consistent: usable even after a panic elsewhere.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn evict_one(&mut self) {
        let least = self
            .peers
            .iter()
            .filter(|(_, p)| !p.suspect)
            .min_by_key(|(_, p)| p.progress())
            .map(|(ip, _)| *ip);
        if let Some(ip) = least {
            self.peers.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    fn note_n(w: &UntrustedProxyWatch, peer: IpAddr, r: Request, n: u32) -> Vec<Verdict> {
        (0..n).map(|_| w.note(peer, r)).collect()
    }

    #[test]
    fn a_peer_is_judged_once_at_the_threshold() {
        let w = UntrustedProxyWatch::default();
        let v = note_n(&w, ip(1), Request::Registration, 10);
        let at = SUSPECT_REGISTRATIONS as usize - 1;
        assert_eq!(v[at], Verdict::NewSuspect, "{v:?}");
        assert!(
            v.iter()
                .enumerate()
                .all(|(i, x)| i == at || *x == Verdict::Counted),
            "{v:?}"
        );
        let status = w.status();
        assert_eq!(status.suspects, 1);
        assert!(status.since.is_some());

        let v = note_n(&w, ip(2), Request::Discovery, SUSPECT_DISCOVERIES * 2);
        let new: Vec<_> = v.iter().positions(Verdict::NewSuspect);
        assert_eq!(new, [SUSPECT_DISCOVERIES as usize - 1]);
        assert_eq!(w.status().suspects, 2);
        assert_eq!(w.status().since, status.since, "since the first");
    }

    #[test]
    fn below_the_thresholds_nothing_is_judged() {
        let w = UntrustedProxyWatch::default();
        note_n(&w, ip(1), Request::Registration, SUSPECT_REGISTRATIONS - 1);
        note_n(&w, ip(2), Request::Discovery, SUSPECT_DISCOVERIES - 1);
        assert_eq!(
            w.status(),
            UntrustedProxies {
                suspects: 0,
                since: None
            }
        );
    }

    #[test]
    fn suspects_are_bounded_and_the_overflow_said_once() {
        let w = UntrustedProxyWatch::default();
        let mut verdicts = Vec::new();
        for i in 0..MAX_SUSPECTS as u32 + 5 {
            verdicts.extend(note_n(&w, ip(i), Request::Registration, 5));
        }
        assert_eq!(
            verdicts.iter().positions(Verdict::NewSuspect).len(),
            MAX_SUSPECTS
        );
        assert_eq!(verdicts.iter().positions(Verdict::TooMany).len(), 1);
        assert_eq!(w.status().suspects, MAX_SUSPECTS);
    }

    #[test]
    fn many_sources_cannot_push_out_a_proxy_on_its_way() {
        let w = UntrustedProxyWatch::default();
        let proxy = IpAddr::from([192, 0, 2, 1]);
        note_n(&w, proxy, Request::Registration, SUSPECT_REGISTRATIONS - 1);
        for i in 0..PEERS as u32 * 4 {
            assert_eq!(w.note(ip(i), Request::Discovery), Verdict::Counted);
        }
        assert!(w.lock().peers.len() <= PEERS, "bounded");
        assert_eq!(w.note(proxy, Request::Registration), Verdict::NewSuspect);
        // And a suspect stays one: no second warning however much room is made.
        for i in 0..PEERS as u32 * 2 {
            w.note(ip(i), Request::Registration);
        }
        assert_eq!(w.note(proxy, Request::Registration), Verdict::Counted);
        assert!(w.lock().peers.len() <= PEERS, "bounded");
    }

    trait Positions {
        fn positions(self, v: Verdict) -> Vec<usize>;
    }

    impl<'a, I: Iterator<Item = &'a Verdict>> Positions for I {
        fn positions(self, v: Verdict) -> Vec<usize> {
            self.enumerate()
                .filter(|(_, x)| **x == v)
                .map(|(i, _)| i)
                .collect()
        }
    }
}
