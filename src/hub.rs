//! The node's local table of sessions: token → sessions, and a handle to each session's task.
//! Local sessions only: what the node knows of other nodes' sessions is the node's own
//! (`node::remote_cache`).
//!
//! Only this node touches it. A `std::sync::Mutex` around two small maps: nothing awaits under
//! the lock. Asking a session for its port goes through the session's bounded command queue.

use crate::metrics::Metrics;
use crate::model::{
    Limit, PortAnswer, PortError, PortSource, Reach, RpcOutcome, SessionId, SessionRecord,
    newest_first,
};
use crate::protocol::{PeerHint, TokenHash};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A command to a session task.
#[derive(Debug)]
pub enum SessionCmd {
    /// Ask the client for its gRPC port (single-flight inside the session).
    AskPort(oneshot::Sender<RpcOutcome>),
    /// Close with 1001 (going away): the node is draining.
    Drain,
}

/// Commands a session may have queued before a new one is refused.
pub const SESSION_QUEUE: usize = 64;

/// Why a session was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// The node's sessions are at `--max-sessions`.
    #[error("node is full")]
    Node,
    /// The session's source holds `--max-sessions-per-source` sessions of this node.
    #[error("too many sessions from this source")]
    Source,
}

struct LocalSession {
    record: Arc<SessionRecord>,
    discoverable: bool,
    cmd: mpsc::Sender<SessionCmd>,
    /// The bus subscription under which it registered (see `fast_candidates`).
    epoch: Option<u64>,
    /// The runtime of the worker thread the session task runs on (see `Hub::home`).
    home: Option<tokio::runtime::Handle>,
    /// The last reachability probe's result and when it was taken (see [`Hub::probe_due`]).
    reach: Option<(Reach, Instant)>,
    /// A probe of it is running.
    probing: bool,
}

#[derive(Default)]
struct Tables {
    sessions: HashMap<SessionId, LocalSession>,
    by_token: HashMap<TokenHash, Vec<SessionId>>,
    /// Local tokens that another node holds (or may hold) a session of too.
    shared: HashSet<TokenHash>,
    /// Sessions per source (`SessionRecord::source`), for the per-source cap.
    by_source: HashMap<String, usize>,
    /// Sessions never probed for reachability, in registration order (only while probing).
    probe_fresh: VecDeque<SessionId>,
    /// Sessions to probe again, and when: in due order, since every entry is pushed one
    /// interval after its probe ended. Closed sessions are skipped when popped.
    probe_again: VecDeque<(Instant, SessionId)>,
}

impl Tables {
    /// This node's discoverable sessions of a token.
    fn token_sessions<'a>(&'a self, token: &TokenHash) -> impl Iterator<Item = &'a LocalSession> {
        self.by_token
            .get(token)
            .into_iter()
            .flatten()
            .filter_map(|id| self.sessions.get(id))
    }
}

/// The sessions' records, newest first.
fn newest_records<'a>(sessions: impl IntoIterator<Item = &'a LocalSession>) -> Vec<SessionRecord> {
    let mut list: Vec<SessionRecord> = sessions.into_iter().map(|s| (*s.record).clone()).collect();
    newest_first(&mut list);
    list
}

pub struct Hub {
    tables: Mutex<Tables>,
    /// Cleared when the node starts draining: its records are being removed, so its sessions
    /// are no longer offered to anyone (see `ask_port`).
    offering: AtomicBool,
    max_sessions: usize,
    /// 0: no cap.
    max_per_source: usize,
    fallback_port: u16,
    metrics: Arc<Metrics>,
    /// Sessions are probed for reachability: answers carry the last result.
    reach_enabled: AtomicBool,
}

impl Hub {
    /// `max_per_source` 0: no per-source cap.
    pub fn new(
        max_sessions: usize,
        max_per_source: usize,
        fallback_port: u16,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            tables: Mutex::default(),
            offering: AtomicBool::new(true),
            max_sessions,
            max_per_source,
            fallback_port,
            metrics,
            reach_enabled: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // Mutations are single inserts/removes, consistent even if a holder panicked.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session; `epoch` is the bus subscription in force (`Bus::notice_epoch`).
    pub fn insert(
        &self,
        record: Arc<SessionRecord>,
        discoverable: bool,
        cmd: mpsc::Sender<SessionCmd>,
        epoch: Option<u64>,
    ) -> Result<(), Full> {
        let mut t = self.lock();
        if t.sessions.len() >= self.max_sessions {
            return Err(Full::Node);
        }
        if let Some(source) = &record.source {
            let held = t.by_source.get(source).copied().unwrap_or(0);
            if self.max_per_source > 0 && held >= self.max_per_source {
                return Err(Full::Source);
            }
            t.by_source.insert(source.clone(), held + 1);
        }
        if discoverable {
            t.by_token
                .entry(record.token)
                .or_default()
                .push(record.session);
            if self.reach_enabled.load(Ordering::Relaxed) {
                t.probe_fresh.push_back(record.session);
            }
        }
        t.sessions.insert(
            record.session,
            LocalSession {
                record,
                discoverable,
                cmd,
                epoch,
                // Called from the session's own worker thread, before its task starts.
                home: tokio::runtime::Handle::try_current().ok(),
                reach: None,
                probing: false,
            },
        );
        self.metrics.sessions.set(t.sessions.len() as i64);
        Ok(())
    }

    /// Removes a session; whether it was discoverable, when it was present.
    pub fn remove(&self, session: SessionId) -> Option<bool> {
        let mut t = self.lock();
        let s = t.sessions.remove(&session)?;
        if let Some(source) = &s.record.source
            && let Some(held) = t.by_source.get_mut(source)
        {
            *held -= 1;
            if *held == 0 {
                t.by_source.remove(source);
            }
        }
        if s.discoverable
            && let Some(ids) = t.by_token.get_mut(&s.record.token)
        {
            ids.retain(|id| *id != session);
            if ids.is_empty() {
                t.by_token.remove(&s.record.token);
                t.shared.remove(&s.record.token);
            }
        }
        self.metrics.sessions.set(t.sessions.len() as i64);
        Some(s.discoverable)
    }

    /// The runtime of the worker thread that runs the session's task. Work for that session
    /// spawned there (a port request from another node) talks to the session without waking
    /// another thread, and publishes its reply on that thread's Redis connection.
    pub fn home(&self, session: SessionId) -> Option<tokio::runtime::Handle> {
        self.lock().sessions.get(&session)?.home.clone()
    }

    pub fn contains(&self, session: SessionId) -> bool {
        self.lock().sessions.contains_key(&session)
    }

    /// Notes that another node holds (or may hold) a new session of a token: a token this node
    /// holds is shared from now on.
    pub fn mark_shared(&self, token: &TokenHash) {
        let mut t = self.lock();
        if t.by_token.contains_key(token) {
            t.shared.insert(*token);
        }
    }

    /// Every token this node holds is shared from now on (the registry lost data: another
    /// node's registration may not have been announced here).
    pub fn mark_all_shared(&self) {
        let mut t = self.lock();
        let tokens: Vec<TokenHash> = t.by_token.keys().copied().collect();
        t.shared.extend(tokens);
    }

    /// The token's sessions, newest first, when this node provably holds all of them: every
    /// local session registered while no other live node held the token (the registration
    /// script said so) under the current bus subscription `epoch`, and no other node's
    /// registration notice arrived since. Then the registry could only return these same
    /// sessions, and discovery skips it. `None` otherwise (ask the registry).
    pub fn fast_candidates(&self, token: &TokenHash, epoch: u64) -> Option<Vec<SessionRecord>> {
        let t = self.lock();
        if t.shared.contains(token) {
            return None;
        }
        let sessions: Vec<&LocalSession> = t.token_sessions(token).collect();
        if sessions.is_empty() || sessions.iter().any(|s| s.epoch != Some(epoch)) {
            return None;
        }
        Some(newest_records(sessions))
    }

    /// Every discoverable local session's record (for re-assertion).
    pub fn discoverable_records(&self) -> Vec<SessionRecord> {
        self.lock()
            .sessions
            .values()
            .filter(|s| s.discoverable)
            .map(|s| (*s.record).clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This node's discoverable sessions of a token, newest first (used when the registry
    /// cannot be read).
    pub fn local_candidates(&self, token: &TokenHash) -> Vec<SessionRecord> {
        newest_records(self.lock().token_sessions(token))
    }

    /// The port a session answers with when its RPC cannot: the subprotocol's, else the
    /// configured fallback.
    fn fallback(
        &self,
        record: &SessionRecord,
        source: PortSource,
        reach: Option<Reach>,
    ) -> PortAnswer {
        PortAnswer {
            port: record.port_hint.unwrap_or(self.fallback_port),
            source,
            reach,
        }
    }

    /// From now on answers carry each session's reachability (`--probe-reachability`), and
    /// every discoverable session is queued for its first probe.
    pub fn enable_reach(&self) {
        let mut t = self.lock();
        self.reach_enabled.store(true, Ordering::SeqCst);
        let ids: Vec<SessionId> = t
            .sessions
            .iter()
            .filter(|(_, s)| s.discoverable)
            .map(|(id, _)| *id)
            .collect();
        t.probe_fresh.extend(ids);
    }

    /// Whether this node probes reachability: only then do its answers carry it.
    pub fn reach_enabled(&self) -> bool {
        self.reach_enabled.load(Ordering::Relaxed)
    }

    /// Up to `max` sessions to probe now: sessions never probed first, then those whose next
    /// probe is due. Each is marked as being probed until [`Hub::set_reach`]. Amortised O(1) a
    /// session: queues, not a scan of every session under the lock.
    pub fn probe_due(&self, max: usize) -> Vec<(SessionId, Arc<SessionRecord>)> {
        let now = Instant::now();
        let mut t = self.lock();
        let mut due: Vec<(SessionId, Arc<SessionRecord>)> = Vec::new();
        while due.len() < max {
            let id = match t.probe_fresh.pop_front() {
                Some(id) => id,
                None => match t.probe_again.front() {
                    Some(&(at, id)) if at <= now => {
                        t.probe_again.pop_front();
                        id
                    }
                    _ => break,
                },
            };
            if let Some(s) = t.sessions.get_mut(&id)
                && !s.probing
            {
                s.probing = true;
                due.push((id, s.record.clone()));
            }
        }
        due
    }

    /// A probe of `session` ended (`None`: it could not run, the session did not answer); the
    /// next is due at `next`.
    pub fn set_reach(&self, session: SessionId, reach: Option<Reach>, next: Instant) {
        let mut t = self.lock();
        if let Some(s) = t.sessions.get_mut(&session) {
            s.probing = false;
            s.reach = reach.map(|r| (r, Instant::now())).or(s.reach);
            t.probe_again.push_back((next, session));
        }
    }

    /// From now on every session counts as gone to `ask_port` (the node is draining).
    pub fn stop_offering(&self) {
        self.offering.store(false, Ordering::SeqCst);
    }

    /// Asks a local session for its port, waiting at most `wait` for the RPC. Once the node
    /// drains, every session is gone: a peer may still hold this node's records from before
    /// they were removed (read just before, or cached until the `Leave` notice arrives).
    pub async fn ask_port(
        &self,
        session: SessionId,
        wait: Duration,
    ) -> Result<PortAnswer, PortError> {
        if !self.offering.load(Ordering::SeqCst) {
            return Err(PortError::SessionGone);
        }
        let (record, cmd, reach) = {
            let t = self.lock();
            let s = t.sessions.get(&session).ok_or(PortError::SessionGone)?;
            let reach = self
                .reach_enabled
                .load(Ordering::Relaxed)
                .then(|| s.reach.map_or(Reach::Unchecked, |(r, _)| r));
            (s.record.clone(), s.cmd.clone(), reach)
        };
        if record.peer == PeerHint::NoPeer {
            return Ok(self.fallback(&record, PortSource::NoPeer, reach));
        }
        let (tx, rx) = oneshot::channel();
        match cmd.try_send(SessionCmd::AskPort(tx)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.limit(Limit::SessionQueue);
                tracing::warn!(%session, token = %record.token, "session command queue full; answering the fallback port");
                return Ok(self.fallback(&record, PortSource::RpcFailed, reach));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(PortError::SessionGone),
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(RpcOutcome::Port(port))) => Ok(PortAnswer {
                port,
                source: PortSource::Rpc,
                reach,
            }),
            Ok(Ok(RpcOutcome::Failed)) => Ok(self.fallback(&record, PortSource::RpcFailed, reach)),
            Ok(Ok(RpcOutcome::TimedOut)) | Err(_) => {
                Ok(self.fallback(&record, PortSource::RpcTimeout, reach))
            }
            // The session task ended (and dropped our waiter) while we waited.
            Ok(Err(_)) => Err(PortError::SessionGone),
        }
    }

    /// Tells every session to close with 1001, spread evenly over `spread` so that the
    /// gateways do not all reconnect in the same instant. Returns when every close was sent.
    pub async fn drain_all(&self, spread: Duration) {
        let targets: Vec<mpsc::Sender<SessionCmd>> = self
            .lock()
            .sessions
            .values()
            .map(|s| s.cmd.clone())
            .collect();
        let start = Instant::now();
        let n = targets.len().max(1) as u32;
        for (i, cmd) in targets.into_iter().enumerate() {
            tokio::time::sleep_until((start + spread * i as u32 / n).into()).await;
            // A full queue gets a short wait; a closed one means the session is already gone.
            let _ = cmd
                .send_timeout(SessionCmd::Drain, Duration::from_millis(100))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(hub: &Hub, discoverable: bool) -> SessionId {
        let record = SessionRecord::example(TokenHash([1; 32]), "a");
        let id = record.session;
        let (tx, _rx) = mpsc::channel(1);
        hub.insert(Arc::new(record), discoverable, tx, None)
            .unwrap();
        id
    }

    fn ids(due: Vec<(SessionId, Arc<SessionRecord>)>) -> Vec<SessionId> {
        due.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn probes_go_to_sessions_never_probed_first_then_to_those_due_each_once_at_a_time() {
        let hub = Hub::new(100, 0, 8788, Arc::new(Metrics::new("test")));
        let before = insert(&hub, true);
        hub.enable_reach();
        let (a, b) = (insert(&hub, true), insert(&hub, true));
        insert(&hub, false);
        let gone = insert(&hub, true);
        hub.remove(gone);
        assert_eq!(ids(hub.probe_due(2)), [before, a], "in registration order");
        assert_eq!(
            ids(hub.probe_due(5)),
            [b],
            "neither the closed nor the undiscoverable"
        );
        assert!(hub.probe_due(5).is_empty(), "nothing probed twice at once");
        let now = Instant::now();
        // Each next probe one interval after its probe ended (here the first one's is due).
        hub.set_reach(a, None, now);
        hub.set_reach(
            before,
            Some(Reach::Reachable),
            now + Duration::from_secs(60),
        );
        hub.set_reach(b, Some(Reach::Denied), now + Duration::from_secs(60));
        assert_eq!(ids(hub.probe_due(5)), [a], "only what is due");
        assert!(hub.probe_due(5).is_empty());
    }
}
