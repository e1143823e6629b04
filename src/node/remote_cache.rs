//! Other nodes' sessions that this node looked up recently, by token.
//!
//! A cross-node discovery reads the token's records from Redis, then asks their owner through
//! the bus: three Redis round trips (lookup, request, reply). The same token asked again soon
//! almost always has the same records, so they are kept here and the lookup is skipped: two
//! round trips. The cache may only answer what the registry would have answered:
//!
//! - A token's records are cached only while this node *tracks* it: the registry announces
//!   every new registration of a tracked token to this node (a `registered` notice on its own
//!   channel, sent by `register.lua` in the same atomic step as the write), and to nobody who
//!   does not hold or track it, so a registration costs the nodes that care, not every node.
//!   A token is tracked once it was read twice within `ttl` (a doorkeeper: a token read once
//!   costs no write), by a `track` that runs beside the discovery, never in its way. Only
//!   lookups sent after the `track` answered are stored ([`RemoteCache::put`]), and entries
//!   are used only while the tracking lasts without a gap.
//! - The notice drops the token's entry, as does a local registration or close. Notices sent
//!   while this node was not subscribed are lost, so an entry is valid only under the bus
//!   subscription (`Bus::notice_epoch`) it was filled under: the rule of the hub's own fast
//!   path (`Hub::fast_candidates`). Only the node drives it: every drop is in `node/`.
//! - A lookup that overlapped any notice is not stored: the records it read may predate it.
//! - When Redis lost data (restart, flush, failover; the heartbeat tells), the readers sets may
//!   be gone too: [`RemoteCache::lost_tracking`] drops every entry and every tracking.
//! - A draining node's `Leave` notice drops every token it has a session of.
//! - A session that closed or a node that died shows when asked (`SessionGone`, a PUBLISH that
//!   reaches no subscriber, a timeout): the caller drops the entry and reads the registry again.
//! - Entries expire after `ttl`, the heartbeat TTL, the time a dead node's records stay in Redis
//!   anyway; at `capacity` entries the cache starts over.
//!
//! Why not Redis's own `CLIENT TRACKING`: it tracks keys per connection, so every pooled command
//! connection (on every Cluster shard) would need tracking redirected to the subscriber, set
//! again whenever the subscriber reconnects, and its invalidations cover every write of a key
//! (releases, re-assertions), where hostie needs only new registrations. redis-rs' client-side
//! cache (`cache-aio`, experimental in 1.8) caches single commands per connection and could not
//! skip the lookup's paired heartbeat read. The readers set is two commands and one script.

use crate::model::{NodeId, SessionRecord};
use crate::protocol::TokenHash;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct RemoteCache {
    inner: Mutex<Inner>,
    ttl: Duration,
    capacity: usize,
    /// The pause after a first failed `track` (the Redis command timeout): it doubles with
    /// each failure in a row, up to half a TTL.
    retry_after: Duration,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<TokenHash, Entry>,
    /// Bumped by every drop, so that a lookup that overlapped one is not stored.
    generation: u64,
    /// Tokens read once, and when (the doorkeeper).
    seen: HashMap<TokenHash, Instant>,
    tracking: HashMap<TokenHash, Tracking>,
    /// Bumped when the registry lost data: answers to `track`s sent before are void.
    tracking_epoch: u64,
    /// `track`s sent and not answered yet (at most [`MAX_TRACKS_IN_FLIGHT`]).
    in_flight: usize,
    /// After a `track` failed (Redis refuses or delays writes), none is sent before this: each
    /// would hold a shared connection until its timeout.
    refused_until: Option<Instant>,
    /// `track`s failed in a row (the pause doubles with each).
    failures: u32,
}

/// `track`s in flight at once: each is a write on a shared Redis connection.
const MAX_TRACKS_IN_FLIGHT: usize = 8;
/// Of those, the last few only renew: a burst of newly hot tokens never holds up the renewal
/// of one already cached (its entries would go when its tracking lapses).
const RESERVED_FOR_RENEWALS: usize = 2;

struct Entry {
    records: Vec<SessionRecord>,
    epoch: u64,
    /// When the lookup that filled it started.
    fetched: Instant,
}

#[derive(Default)]
struct Tracking {
    /// Since when (a `track` answered) and until when (that `track`'s sending plus the time
    /// the registry granted, renewed without a gap since) every new registration of the token
    /// is announced to this node.
    active: Option<(Instant, Instant)>,
    /// A `track` is in flight.
    asking: bool,
}

impl Tracking {
    fn covers(&self, since: Instant, now: Instant) -> bool {
        self.active
            .is_some_and(|(from, until)| from <= since && now < until)
    }
}

/// What the cache looked like when a registry lookup started.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    epoch: u64,
    generation: u64,
    at: Instant,
}

/// A `track` to send for `token` (see [`RemoteCache::want_tracking`]): its slot among the
/// [`MAX_TRACKS_IN_FLIGHT`] is given back by [`PendingTrack::tracked`] or
/// [`PendingTrack::not_tracked`], or when it is dropped unanswered (the task sending it
/// panicked, or its runtime stopped), so that no slot is ever lost.
#[must_use = "a track not sent holds its slot until dropped"]
pub struct PendingTrack {
    cache: Arc<RemoteCache>,
    token: TokenHash,
    epoch: u64,
    /// No later than the `track` was sent.
    sent: Instant,
    settled: bool,
}

impl PendingTrack {
    pub fn token(&self) -> &TokenHash {
        &self.token
    }

    /// The registry took the `track` (its answer arrived at `answered`) for `lasts`.
    pub fn tracked(mut self, answered: Instant, lasts: Duration) {
        self.settled = true;
        self.cache.tracked(&self, answered, lasts);
    }

    /// The `track` failed at `now`: the token stays as it was (untracked, or tracked until its
    /// current end), and no `track` is sent for a while.
    pub fn not_tracked(mut self, now: Instant) {
        self.settled = true;
        self.cache.not_tracked(&self, Some(now));
    }
}

impl Drop for PendingTrack {
    fn drop(&mut self) {
        if !self.settled {
            // Unknown whether the registry took it: as if it had failed, without the pause.
            self.cache.not_tracked(self, None);
        }
    }
}

impl std::fmt::Debug for PendingTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingTrack")
            .field("token", &self.token)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl RemoteCache {
    pub fn new(ttl: Duration, capacity: usize, retry_after: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            ttl,
            capacity,
            retry_after: retry_after.min(ttl / 2),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Whole-entry inserts and removes only: consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token's records, if they were read under subscription `epoch` less than `ttl` ago,
    /// the token has been tracked without a gap since, and nothing dropped them.
    pub fn get(&self, token: &TokenHash, epoch: u64, now: Instant) -> Option<Vec<SessionRecord>> {
        let inner = self.lock();
        let entry = inner.entries.get(token)?;
        let tracked = inner
            .tracking
            .get(token)
            .is_some_and(|t| t.covers(entry.fetched, now));
        (tracked && entry.epoch == epoch && now.saturating_duration_since(entry.fetched) < self.ttl)
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

    /// Stores a lookup's records unless something was dropped since its ticket, or the token
    /// was not tracked when the lookup was sent. Empty results (misses) are never stored: a
    /// miss is always read from the registry.
    pub fn put(&self, token: TokenHash, records: &[SessionRecord], ticket: Ticket) {
        if records.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let tracked = inner
            .tracking
            .get(&token)
            .is_some_and(|t| t.covers(ticket.at, ticket.at));
        if inner.generation != ticket.generation || !tracked {
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

    /// When a discovery of `token` is answered from records (about to be read from the
    /// registry, or cached): whether to send a `track` for it now. Yes when its tracking is in
    /// its second half (a renewal: renewed ahead, so that a token read all along never has a
    /// gap), or, if `may_start`, when it was read before within `ttl` and is not tracked.
    /// Never two at once for a token, never more than [`MAX_TRACKS_IN_FLIGHT`] in all (the
    /// last [`RESERVED_FOR_RENEWALS`] for renewals), and none for a pause after one failed.
    pub fn want_tracking(
        self: &Arc<Self>,
        token: TokenHash,
        now: Instant,
        may_start: bool,
    ) -> Option<PendingTrack> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.in_flight >= MAX_TRACKS_IN_FLIGHT || inner.refused_until.is_some_and(|t| now < t) {
            return None;
        }
        // Built only where it is returned: dropped here, it would take the lock again.
        let ask = |epoch| PendingTrack {
            cache: self.clone(),
            token,
            epoch,
            sent: now,
            settled: false,
        };
        let room_to_start =
            may_start && inner.in_flight < MAX_TRACKS_IN_FLIGHT - RESERVED_FOR_RENEWALS;
        if let Some(t) = inner.tracking.get_mut(&token) {
            if t.asking {
                return None;
            }
            let renewal = match t.active {
                Some((_, until)) if now < until => {
                    if until.saturating_duration_since(now) > self.ttl / 2 {
                        return None;
                    }
                    true
                }
                // Lapsed, or never answered: tracking it again is a new start.
                _ => false,
            };
            if !renewal && !room_to_start {
                return None;
            }
            t.asking = true;
            inner.in_flight += 1;
            return Some(ask(inner.tracking_epoch));
        }
        if !room_to_start {
            return None;
        }
        let read_before = inner
            .seen
            .get(&token)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ttl);
        if !read_before {
            if inner.seen.len() >= self.capacity {
                let ttl = self.ttl;
                inner
                    .seen
                    .retain(|_, at| now.saturating_duration_since(*at) < ttl);
                if inner.seen.len() >= self.capacity {
                    inner.seen.clear();
                }
            }
            inner.seen.insert(token, now);
            return None;
        }
        if inner.tracking.len() >= self.capacity {
            inner
                .tracking
                .retain(|_, t| t.asking || t.active.is_some_and(|(_, until)| now < until));
            if inner.tracking.len() >= self.capacity {
                // Starts over, entries included (they are served only while tracked). `track`s
                // in flight still count when they answer: the registry took them.
                inner.tracking.clear();
                inner.entries.clear();
                inner.generation += 1;
            }
        }
        inner.seen.remove(&token);
        inner.in_flight += 1;
        inner.tracking.insert(
            token,
            Tracking {
                active: None,
                asking: true,
            },
        );
        Some(ask(inner.tracking_epoch))
    }

    fn tracked(&self, ask: &PendingTrack, answered: Instant, lasts: Duration) {
        let mut inner = self.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        inner.failures = 0;
        if inner.tracking_epoch != ask.epoch {
            return;
        }
        let t = inner.tracking.entry(ask.token).or_default();
        t.asking = false;
        let until = ask.sent + lasts;
        // Without a gap only if the renewal was carried out (no later than its answer)
        // before the previous tracking ran out.
        let from = match t.active {
            Some((from, previous)) if answered < previous => from,
            _ => answered,
        };
        t.active = Some((from, until));
    }

    /// `ask`'s `track` failed at `failed`, or was dropped unanswered (`None`). After a failure
    /// no token is asked for during a pause: the Redis timeout, doubled with each failure in a
    /// row, at most half a TTL (a tracking renewed at its middle then still has a chance).
    fn not_tracked(&self, ask: &PendingTrack, failed: Option<Instant>) {
        let mut inner = self.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        if let Some(now) = failed {
            let pause = self
                .retry_after
                .saturating_mul(1 << inner.failures.min(16))
                .min(self.ttl / 2);
            inner.failures = inner.failures.saturating_add(1);
            inner.refused_until = Some(now + pause);
        }
        if inner.tracking_epoch != ask.epoch {
            return;
        }
        if let Some(t) = inner.tracking.get_mut(&ask.token) {
            t.asking = false;
        }
    }

    /// The registry lost data: readers sets may be gone, so nothing is tracked any more.
    pub fn lost_tracking(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.tracking_epoch += 1;
        inner.entries.clear();
        inner.tracking.clear();
        inner.seen.clear();
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

    fn record(token: TokenHash) -> SessionRecord {
        on(token, "b")
    }

    fn on(token: TokenHash, node: &str) -> SessionRecord {
        SessionRecord::example(token, node)
    }

    const TTL: Duration = Duration::from_secs(5);
    const RETRY: Duration = Duration::from_millis(500);

    fn want(cache: &Arc<RemoteCache>, token: TokenHash, at: Instant) -> Option<PendingTrack> {
        cache.want_tracking(token, at, true)
    }

    /// Reads each token twice (the doorkeeper) and confirms its `track` at `at`.
    fn track(cache: &Arc<RemoteCache>, tokens: &[TokenHash], at: Instant) {
        for t in tokens {
            assert!(want(cache, *t, at).is_none(), "read once");
            let ask = want(cache, *t, at).expect("read twice");
            ask.tracked(at, TTL);
        }
    }

    #[test]
    fn answers_under_the_same_subscription_until_the_ttl() {
        let cache = Arc::new(RemoteCache::new(TTL, 100, RETRY));
        let (t, now) = (TokenHash([1; 32]), Instant::now());
        track(&cache, &[t], now);
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
        let cache = Arc::new(RemoteCache::new(TTL, 100, RETRY));
        let (t, other, now) = (TokenHash([1; 32]), TokenHash([2; 32]), Instant::now());
        track(&cache, &[t], now);
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
        let cache = Arc::new(RemoteCache::new(TTL, 100, RETRY));
        let now = Instant::now();
        let (a, b, c) = (TokenHash([1; 32]), TokenHash([2; 32]), TokenHash([3; 32]));
        track(&cache, &[a, b, c], now);
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
        let cache = Arc::new(RemoteCache::new(TTL, 2, RETRY));
        let now = Instant::now();
        let (a, b, c) = (TokenHash([1; 32]), TokenHash([2; 32]), TokenHash([3; 32]));
        track(&cache, &[a, b], now);
        cache.put(a, &[], cache.ticket(1, now));
        assert!(cache.is_empty());
        cache.put(a, &[record(a)], cache.ticket(1, now));
        cache.put(b, &[record(b)], cache.ticket(1, now));
        // Refreshing a present token does not evict.
        cache.put(b, &[record(b)], cache.ticket(1, now));
        assert_eq!(cache.len(), 2);
        // A third tracked token starts the tracking over, entries included.
        track(&cache, &[c], now);
        assert!(cache.is_empty());
        cache.put(c, &[record(c)], cache.ticket(1, now));
        cache.put(a, &[record(a)], cache.ticket(1, now));
        assert_eq!(cache.len(), 1, "a is no longer tracked");
        assert!(cache.get(&c, 1, now).is_some());
    }

    #[test]
    fn a_token_is_tracked_when_read_twice_within_the_ttl_and_renewed_in_its_second_half() {
        let cache = Arc::new(RemoteCache::new(TTL, 100, RETRY));
        let (t, now) = (TokenHash([1; 32]), Instant::now());
        assert!(want(&cache, t, now).is_none(), "read once: no write");
        assert!(
            want(&cache, t, now + TTL).is_none(),
            "read again only after the TTL: still once"
        );
        let later = now + TTL;
        let ask = want(&cache, t, later + Duration::from_secs(1)).unwrap();
        assert!(
            want(&cache, t, later + Duration::from_secs(1)).is_none(),
            "one track at a time"
        );
        ask.not_tracked(later + Duration::from_secs(1));
        assert!(
            want(
                &cache,
                t,
                later + Duration::from_secs(1) + RETRY - Duration::from_millis(1)
            )
            .is_none(),
            "nothing is asked for a while after a failure"
        );
        let at = later + Duration::from_secs(1) + RETRY;
        let ask = want(&cache, t, at).expect("a failed track may be asked again");
        ask.tracked(at, TTL);
        assert!(want(&cache, t, at + TTL / 2 - Duration::from_millis(1)).is_none());
        assert!(
            want(&cache, t, at + TTL / 2).is_some(),
            "renewed in its second half"
        );
    }

    #[test]
    fn only_lookups_sent_after_the_track_answered_are_stored() {
        let cache = Arc::new(RemoteCache::new(TTL, 100, RETRY));
        let (t, now) = (TokenHash([1; 32]), Instant::now());
        assert!(want(&cache, t, now).is_none());
        let ask = want(&cache, t, now).unwrap();
        // A lookup sent while the track is in flight: a registration between its read and the
        // track would not be announced here.
        let early = cache.ticket(1, now);
        let answered = now + Duration::from_millis(5);
        ask.tracked(answered, TTL);
        cache.put(t, &[record(t)], early);
        assert_eq!(cache.get(&t, 1, answered), None);
        cache.put(t, &[record(t)], cache.ticket(1, answered));
        assert!(cache.get(&t, 1, answered).is_some());
        // Served until the tracking runs out (counted from when the track was sent).
        assert!(
            cache
                .get(&t, 1, now + TTL - Duration::from_millis(1))
                .is_some()
        );
        assert_eq!(cache.get(&t, 1, now + TTL), None);
    }

    #[test]
    fn a_gap_in_the_tracking_voids_what_was_cached_before_it() {
        let cache = Arc::new(RemoteCache::new(TTL, 100, RETRY));
        let (t, now) = (TokenHash([1; 32]), Instant::now());
        track(&cache, &[t], now);
        cache.put(t, &[record(t)], cache.ticket(1, now));
        // Renewed in time: the entry stays.
        let renew = now + TTL / 2;
        let ask = want(&cache, t, renew).unwrap();
        ask.tracked(renew, TTL);
        assert!(cache.get(&t, 1, now + TTL).is_none(), "the entry's own TTL");
        assert!(
            cache
                .get(&t, 1, now + TTL - Duration::from_millis(1))
                .is_some()
        );
        // Renewed only after it ran out: membership had a gap, so older entries are void.
        let late = renew + TTL + Duration::from_millis(1);
        cache.put(t, &[record(t)], cache.ticket(1, renew));
        let ask = want(&cache, t, late).unwrap();
        ask.tracked(late, TTL);
        assert_eq!(cache.get(&t, 1, late), None);
    }

    #[test]
    fn lost_data_drops_entries_and_tracking_and_voids_tracks_in_flight() {
        let cache = Arc::new(RemoteCache::new(TTL, 100, RETRY));
        let (a, b, now) = (TokenHash([1; 32]), TokenHash([2; 32]), Instant::now());
        track(&cache, &[a], now);
        cache.put(a, &[record(a)], cache.ticket(1, now));
        assert!(want(&cache, b, now).is_none());
        let in_flight = want(&cache, b, now).unwrap();
        cache.lost_tracking();
        assert_eq!(cache.get(&a, 1, now), None);
        cache.put(a, &[record(a)], cache.ticket(1, now));
        assert!(cache.is_empty(), "a is no longer tracked");
        // The track sent before the loss may have been lost with the data.
        in_flight.tracked(now, TTL);
        cache.put(b, &[record(b)], cache.ticket(1, now));
        assert!(cache.is_empty());
        assert!(want(&cache, a, now).is_none(), "read once again");
    }

    #[test]
    fn at_most_a_few_tracks_are_in_flight_and_the_last_ones_only_renew() {
        let cache = Arc::new(RemoteCache::new(TTL, 100, RETRY));
        let now = Instant::now();
        let tokens: Vec<TokenHash> = (0..=MAX_TRACKS_IN_FLIGHT as u8)
            .map(|i| TokenHash([i; 32]))
            .collect();
        let (hot, others) = tokens.split_at(RESERVED_FOR_RENEWALS);
        track(&cache, hot, now);
        let mut asks = Vec::new();
        for t in others {
            assert!(want(&cache, *t, now).is_none());
            asks.extend(want(&cache, *t, now));
        }
        let starts = MAX_TRACKS_IN_FLIGHT - RESERVED_FOR_RENEWALS;
        assert_eq!(asks.len(), starts, "new tokens leave the reserve alone");
        let last = *others.last().unwrap();
        assert!(want(&cache, last, now).is_none(), "the cap");
        // The hot tokens' renewals still go out, into the reserve.
        let renew = now + TTL / 2;
        let renewals: Vec<_> = hot.iter().filter_map(|t| want(&cache, *t, renew)).collect();
        assert_eq!(renewals.len(), RESERVED_FOR_RENEWALS);
        drop(renewals);
        asks.remove(0).tracked(now, TTL);
        // Room again: the last token was not even counted as read while there was none.
        assert!(want(&cache, last, now).is_none());
        assert!(want(&cache, last, now).is_some(), "room again");
    }

    #[test]
    fn a_track_dropped_unanswered_gives_its_slot_back_without_a_pause() {
        let cache = Arc::new(RemoteCache::new(TTL, 100, RETRY));
        let now = Instant::now();
        let tokens: Vec<TokenHash> = (0..MAX_TRACKS_IN_FLIGHT as u8)
            .map(|i| TokenHash([i; 32]))
            .collect();
        // Tasks that never finish, many times over: every slot comes back.
        for _ in 0..3 {
            let mut asks = Vec::new();
            for t in &tokens {
                want(&cache, *t, now);
                asks.extend(want(&cache, *t, now));
            }
            assert_eq!(asks.len(), MAX_TRACKS_IN_FLIGHT - RESERVED_FOR_RENEWALS);
            drop(asks);
        }
        // And the token may be asked for again at once, as after no answer at all.
        let t = tokens[0];
        let ask = want(&cache, t, now).expect("asked again");
        ask.tracked(now, TTL);
        cache.put(t, &[record(t)], cache.ticket(1, now));
        assert!(cache.get(&t, 1, now).is_some());
    }

    #[test]
    fn while_new_tracks_may_not_start_renewals_go_on() {
        let cache = Arc::new(RemoteCache::new(TTL, 100, RETRY));
        let (hot, cold, now) = (TokenHash([1; 32]), TokenHash([2; 32]), Instant::now());
        track(&cache, &[hot], now);
        cache.put(hot, &[record(hot)], cache.ticket(1, now));
        let renew = now + TTL / 2;
        assert!(cache.want_tracking(cold, renew, false).is_none());
        assert!(
            cache.want_tracking(cold, renew, false).is_none(),
            "read twice, but not started"
        );
        let ask = cache
            .want_tracking(hot, renew, false)
            .expect("the renewal goes out");
        ask.tracked(renew, TTL);
        let later = now + TTL + Duration::from_secs(1);
        assert!(
            cache
                .get(&hot, 1, now + TTL - Duration::from_millis(1))
                .is_some()
        );
        cache.put(hot, &[record(hot)], cache.ticket(1, later));
        assert!(cache.get(&hot, 1, later).is_some(), "tracked without a gap");
        // A lapsed tracking is a new start.
        let lapsed = renew + TTL;
        assert!(cache.want_tracking(hot, lapsed, false).is_none());
        assert!(cache.want_tracking(hot, lapsed, true).is_some());
    }

    #[test]
    fn the_pause_after_failures_grows_and_a_success_ends_it() {
        let cache = Arc::new(RemoteCache::new(TTL, 100, RETRY));
        let (t, mut now) = (TokenHash([1; 32]), Instant::now());
        want(&cache, t, now);
        let mut pauses = Vec::new();
        for _ in 0..5 {
            let ask = want(&cache, t, now).expect("asked after the pause");
            ask.not_tracked(now);
            let failed = now;
            while want(&cache, t, now).is_none() {
                now += Duration::from_millis(100);
            }
            // (The probe that ended the wait was dropped unanswered: no pause of its own.)
            pauses.push(now - failed);
        }
        let ms: Vec<u128> = pauses.iter().map(|p| p.as_millis()).collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 2500, 2500],
            "doubling, at most half a TTL"
        );
        let ask = want(&cache, t, now).unwrap();
        ask.tracked(now, TTL);
        let other = TokenHash([2; 32]);
        want(&cache, other, now);
        let ask = want(&cache, other, now).expect("no pause after a success");
        ask.not_tracked(now);
        assert!(
            want(&cache, other, now + RETRY).is_some(),
            "back to the first pause"
        );
    }
}
