//! Other nodes' sessions that this node looked up recently, by token.
//!
//! A cross-node discovery reads the token's records from Redis, then asks their owner through
//! the bus: three Redis round trips (lookup, request, reply). The same token asked again soon
//! almost always has the same records, so they are kept here and the lookup is skipped: two
//! round trips. The cache may only answer what the registry would have answered:
//!
//! - Every admitted registration, on any node, publishes a notice on the events channel
//!   (`register.lua`, or the in-memory registry); the notice drops the token's entry, as does a
//!   local registration or close. Notices sent while this node was not subscribed are lost, so
//!   an entry is valid only under the bus subscription (`Bus::notice_epoch`) it was filled under:
//!   the rule of the hub's own fast path (`Hub::fast_candidates`). Only the node drives it: every
//!   drop is in `node/`.
//! - A lookup that overlapped any notice is not stored: the records it read may predate it.
//! - A draining node's `Leave` notice drops every token it has a session of.
//! - A session that closed or a node that died shows when asked (`SessionGone`, a PUBLISH that
//!   reaches no subscriber, a timeout): the caller drops the entry and reads the registry again.
//! - Entries expire after `ttl`, the heartbeat TTL, the time a dead node's records stay in Redis
//!   anyway; at `capacity` entries the cache starts over.

use crate::model::{NodeId, SessionRecord};
use crate::protocol::TokenHash;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct RemoteCache {
    inner: Mutex<Inner>,
    ttl: Duration,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<TokenHash, Entry>,
    /// Bumped by every drop, so that a lookup that overlapped one is not stored.
    generation: u64,
}

struct Entry {
    records: Vec<SessionRecord>,
    epoch: u64,
    /// When the lookup that filled it started.
    fetched: Instant,
}

/// What the cache looked like when a registry lookup started.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    epoch: u64,
    generation: u64,
    at: Instant,
}

impl RemoteCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            ttl,
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Whole-entry inserts and removes only: consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token's records, if they were read under subscription `epoch` less than `ttl` ago
    /// and nothing dropped them since.
    pub fn get(&self, token: &TokenHash, epoch: u64, now: Instant) -> Option<Vec<SessionRecord>> {
        let inner = self.lock();
        let entry = inner.entries.get(token)?;
        (entry.epoch == epoch && now.saturating_duration_since(entry.fetched) < self.ttl)
            .then(|| entry.records.clone())
    }

    /// Taken before a registry lookup whose result may be stored with [`RemoteCache::put`].
    pub fn ticket(&self, epoch: u64, now: Instant) -> Ticket {
        Ticket {
            epoch,
            generation: self.lock().generation,
            at: now,
        }
    }

    /// Stores a lookup's records unless something was dropped since its ticket. Empty results
    /// (misses) are never stored: a miss is always read from the registry.
    pub fn put(&self, token: TokenHash, records: &[SessionRecord], ticket: Ticket) {
        if records.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != ticket.generation {
            return;
        }
        if inner.entries.len() >= self.capacity && !inner.entries.contains_key(&token) {
            inner.entries.clear();
        }
        inner.entries.insert(
            token,
            Entry {
                records: records.to_vec(),
                epoch: ticket.epoch,
                fetched: ticket.at,
            },
        );
    }

    /// Drops the token's entry: a notice of a new session, a local change, or an answer that
    /// showed the entry out of date.
    pub fn forget(&self, token: &TokenHash) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.remove(token);
    }

    /// Drops every token that has a session on `node` (it is draining).
    pub fn forget_node(&self, node: &NodeId) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner
            .entries
            .retain(|_, e| e.records.iter().all(|r| r.node != *node));
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionId;
    use crate::protocol::PeerHint;

    fn record(token: TokenHash) -> SessionRecord {
        on(token, "b")
    }

    fn on(token: TokenHash, node: &str) -> SessionRecord {
        SessionRecord {
            session: SessionId::new(),
            node: NodeId(node.into()),
            token,
            registered_at_us: 1,
            host: "127.0.0.1".into(),
            port_hint: Some(1),
            peer: PeerHint::Ask,
            source: None,
        }
    }

    const TTL: Duration = Duration::from_secs(5);

    #[test]
    fn answers_under_the_same_subscription_until_the_ttl() {
        let cache = RemoteCache::new(TTL, 100);
        let (t, now) = (TokenHash([1; 32]), Instant::now());
        let records = vec![record(t)];
        cache.put(t, &records, cache.ticket(7, now));
        assert_eq!(cache.get(&t, 7, now), Some(records.clone()));
        assert_eq!(
            cache.get(&t, 7, now + TTL - Duration::from_millis(1)),
            Some(records)
        );
        assert_eq!(cache.get(&t, 7, now + TTL), None, "expired");
        assert_eq!(cache.get(&t, 8, now), None, "another subscription");
        assert_eq!(
            cache.get(&TokenHash([2; 32]), 7, now),
            None,
            "another token"
        );
    }

    #[test]
    fn a_drop_during_a_lookup_keeps_its_result_out() {
        let cache = RemoteCache::new(TTL, 100);
        let (t, other, now) = (TokenHash([1; 32]), TokenHash([2; 32]), Instant::now());
        let ticket = cache.ticket(1, now);
        // A notice (for any token) arrives while the lookup is in flight.
        cache.forget(&other);
        cache.put(t, &[record(t)], ticket);
        assert_eq!(cache.get(&t, 1, now), None);
        // The next lookup is stored, and a later notice drops it.
        cache.put(t, &[record(t)], cache.ticket(1, now));
        assert!(cache.get(&t, 1, now).is_some());
        cache.forget(&t);
        assert_eq!(cache.get(&t, 1, now), None);
    }

    #[test]
    fn a_leaving_node_takes_its_tokens_along() {
        let cache = RemoteCache::new(TTL, 100);
        let now = Instant::now();
        let (a, b, c) = (TokenHash([1; 32]), TokenHash([2; 32]), TokenHash([3; 32]));
        cache.put(a, &[on(a, "x")], cache.ticket(1, now));
        cache.put(b, &[on(b, "y"), on(b, "x")], cache.ticket(1, now));
        cache.put(c, &[on(c, "y")], cache.ticket(1, now));
        let ticket = cache.ticket(1, now);
        cache.forget_node(&NodeId("x".into()));
        assert_eq!(cache.get(&a, 1, now), None);
        assert_eq!(cache.get(&b, 1, now), None);
        assert!(cache.get(&c, 1, now).is_some());
        // A lookup that overlapped the notice may have read the leaving node's records.
        cache.put(a, &[on(a, "x")], ticket);
        assert_eq!(cache.get(&a, 1, now), None);
    }

    #[test]
    fn misses_are_not_stored_and_capacity_starts_over() {
        let cache = RemoteCache::new(TTL, 2);
        let now = Instant::now();
        let (a, b, c) = (TokenHash([1; 32]), TokenHash([2; 32]), TokenHash([3; 32]));
        cache.put(a, &[], cache.ticket(1, now));
        assert!(cache.is_empty());
        cache.put(a, &[record(a)], cache.ticket(1, now));
        cache.put(b, &[record(b)], cache.ticket(1, now));
        // Refreshing a present token does not evict.
        cache.put(b, &[record(b)], cache.ticket(1, now));
        assert_eq!(cache.len(), 2);
        cache.put(c, &[record(c)], cache.ticket(1, now));
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&c, 1, now).is_some());
    }
}
