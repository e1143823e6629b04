//! The node: the only module that knows the hub, the registry and the bus together.
//!
//! It admits registrations (node cap in the hub, token cap in the registry), resolves discoveries
//! ([`discovery`]: candidates newest first, each asked through the bus within a share of one
//! deadline), answers other nodes' port requests for its sessions (it is the bus's
//! [`PortResponder`]), owns what it remembers of other nodes' sessions ([`remote_cache`]: every
//! drop of it is in this module) and drains. [`liveness`] is its background duty in a cluster.

pub mod discovery;
pub mod liveness;
pub mod reach;
pub mod remote_cache;

use crate::bus::{Bus, PortResponder};
use crate::hub::{Full, Hub, SessionCmd};
use crate::metrics::Metrics;
use crate::model::{Limit, NodeId, PortAnswer, PortError, SessionId, SessionOrder, SessionRecord};
use crate::protocol::TokenHash;
use crate::registry::{Admission, NodeStats, Registry, RegistryError};
use crate::telemetry::ErrorChain;
use async_trait::async_trait;
use remote_cache::RemoteCache;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
// The runtime's clock: drain waits on it, and tests run drains under paused time.
use tokio::time::Instant;

pub use discovery::{Discovered, DiscoveryError, TokenSessions};

#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub id: NodeId,
    /// The whole time one discovery may take, every candidate and lookup included
    /// (`--rpc-timeout`).
    pub discovery_deadline: Duration,
    pub max_sessions_per_token: usize,
    /// Drain closes sessions evenly over this long.
    pub drain_spread: Duration,
    /// Drain gives up waiting for sessions to close after this long.
    pub drain_grace: Duration,
    /// After the registry refused a write or showed it lost data, how long a lookup that found
    /// no live session is answered 503 instead of 404: every live node re-asserts within it
    /// (the heartbeat TTL).
    pub registry_settle: Duration,
    /// In which order a token's sessions are asked (`--session-order`).
    pub session_order: SessionOrder,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("node is draining")]
    Draining,
    #[error("node is at its session limit")]
    NodeFull,
    #[error("token is at its session limit")]
    TokenFull,
    #[error("too many sessions from this address")]
    SourceFull,
}

pub struct Node {
    settings: NodeSettings,
    hub: Arc<Hub>,
    registry: Arc<dyn Registry>,
    bus: Arc<Bus>,
    /// Other nodes' records read recently (see [`remote_cache`]); shared with the `track`s
    /// that run beside discoveries.
    remote: Arc<RemoteCache>,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    /// A registration was kept while the registry could not be written: re-assert soon.
    dirty: AtomicBool,
    /// Records of closed sessions whose removal failed (registry unreachable), retried by the
    /// next re-assertion so that a stale record never outlives an outage.
    unreleased: Mutex<Vec<(TokenHash, SessionId)>>,
    /// Until when the registry may be missing records (see [`Node::distrust_registry`]).
    suspect_until: Mutex<Option<Instant>>,
    /// Peers whose heartbeat ran out, as of the last heartbeat: never asked, cached or not.
    dead_peers: Mutex<HashSet<NodeId>>,
    /// The discovery rate's last sample: when, the count then, and the rate it gave.
    rate_meter: Mutex<(Instant, u64, f64)>,
    /// The last [`Node::cluster_view`] read from the registry, and when.
    cluster_view: Mutex<Option<(Instant, ClusterView)>>,
    /// Held while one request reads the cluster's figures from the registry.
    cluster_reader: tokio::sync::Mutex<()>,
}

/// What the cluster status page shows (see [`Node::cluster_view`]).
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub nodes: Vec<(NodeId, NodeStats)>,
    /// The other nodes' figures could be read.
    pub registry_ok: bool,
}

/// Over how long the discovery rate on the status page is measured.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl Node {
    /// Builds the node and makes it the bus's responder for its sessions.
    pub fn new(
        settings: NodeSettings,
        hub: Arc<Hub>,
        registry: Arc<dyn Registry>,
        bus: Arc<Bus>,
        remote: RemoteCache,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let node = Arc::new(Self {
            settings,
            hub,
            registry,
            bus,
            remote: Arc::new(remote),
            metrics,
            draining: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            unreleased: Mutex::default(),
            suspect_until: Mutex::default(),
            dead_peers: Mutex::default(),
            rate_meter: Mutex::new((Instant::now(), 0, 0.0)),
            cluster_view: Mutex::default(),
            cluster_reader: tokio::sync::Mutex::const_new(()),
        });
        let responder: Weak<dyn PortResponder> = Arc::downgrade(&node) as _;
        node.bus.serve(responder);
        node
    }

    pub fn id(&self) -> &NodeId {
        &self.settings.id
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The whole time one discovery may take (`--rpc-timeout`).
    pub fn discovery_deadline(&self) -> Duration {
        self.settings.discovery_deadline
    }

    pub fn live_sessions(&self) -> usize {
        self.hub.len()
    }

    /// This node's figures for the cluster status page (see [`NodeStats`]).
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            sessions: self.live_sessions() as u64,
            discovery_rate: self.discovery_rate(),
            draining: self.is_draining(),
        }
    }

    /// Every live node's figures for the cluster status page: this node's own as of now, the
    /// others' as of their last heartbeat. Read from the registry at most once a second, by
    /// one request at a time (a page that scripts poll must not cost Redis per request);
    /// only this node's own when the registry cannot be read.
    pub async fn cluster_view(&self) -> ClusterView {
        let cached = || {
            lock(&self.cluster_view)
                .as_ref()
                .filter(|(at, _)| at.elapsed() < Duration::from_secs(1))
                .map(|(_, view)| view.clone())
        };
        // One reader at a time: requests that arrive while it reads wait for its view.
        let mut _reading = None;
        if cached().is_none() {
            _reading = Some(self.cluster_reader.lock().await);
        }
        let mut view = match cached() {
            Some(view) => view,
            None => {
                let read = tokio::time::timeout(
                    self.settings.discovery_deadline,
                    self.registry.cluster_stats(),
                )
                .await
                .unwrap_or(Err(RegistryError::Deadline));
                let view = match read {
                    Ok(nodes) => ClusterView {
                        nodes,
                        registry_ok: true,
                    },
                    Err(_) => ClusterView {
                        nodes: Vec::new(),
                        registry_ok: false,
                    },
                };
                *lock(&self.cluster_view) = Some((Instant::now(), view.clone()));
                view
            }
        };
        view.nodes.retain(|(n, _)| n != self.id());
        view.nodes.push((self.id().clone(), self.stats()));
        view.nodes.sort_by(|a, b| a.0.0.cmp(&b.0.0));
        view
    }

    /// Discoveries per second over the last [`RATE_WINDOW`] or so: the rate between the
    /// newest sample at least that old and now.
    fn discovery_rate(&self) -> f64 {
        let count = self.metrics.discoveries_answered();
        let now = Instant::now();
        let mut meter = lock(&self.rate_meter);
        let (at, then, rate) = *meter;
        let elapsed = now.saturating_duration_since(at);
        if elapsed < RATE_WINDOW {
            return rate;
        }
        let rate = count.saturating_sub(then) as f64 / elapsed.as_secs_f64();
        *meter = (now, count, rate);
        rate
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn registry(&self) -> &dyn Registry {
        self.registry.as_ref()
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Admits a session: node cap first (local, cheap), then the cluster-wide token cap. When the
    /// registry cannot be written the session is kept (the hub is the truth) and written later.
    #[tracing::instrument(name = "register", skip_all, fields(
        node = %self.settings.id,
        token = %record.token,
        session = %record.session,
    ))]
    pub async fn register(
        &self,
        record: Arc<SessionRecord>,
        discoverable: bool,
        cmd: mpsc::Sender<SessionCmd>,
    ) -> Result<(), RegisterError> {
        if self.is_draining() {
            return Err(RegisterError::Draining);
        }
        // Read before the registration script runs: a notice lost after this read changes it.
        let epoch = self.bus.notice_epoch();
        self.hub
            .insert(record.clone(), discoverable, cmd, epoch)
            .map_err(|full| match full {
                Full::Node => {
                    self.metrics.limit(Limit::SessionsPerNode);
                    RegisterError::NodeFull
                }
                Full::Source => {
                    self.metrics.limit(Limit::SessionsPerSource);
                    RegisterError::SourceFull
                }
            })?;
        if !discoverable {
            return Ok(());
        }
        // The token's newest session is now this one.
        self.remote.forget(&record.token);
        let admitted = self
            .registry
            .register(
                &record,
                self.settings.max_sessions_per_token,
                &self.dead_peers(),
            )
            .await;
        match admitted {
            Ok(Admission::Admitted { shared }) => {
                if shared {
                    self.hub.mark_shared(&record.token);
                    self.remote.forget(&record.token);
                }
                Ok(())
            }
            Ok(Admission::TokenFull) => {
                self.hub.remove(record.session);
                self.metrics.limit(Limit::SessionsPerToken);
                Err(RegisterError::TokenFull)
            }
            Err(e) => {
                // The hub is the truth and the registry its cache: keep the session (local
                // discovery works) and write it when the registry is back. Whether another
                // node holds the token is unknown now.
                self.hub.mark_shared(&record.token);
                self.remote.forget(&record.token);
                self.dirty.store(true, Ordering::SeqCst);
                self.distrust_registry();
                tracing::warn!(error = %ErrorChain(&e), "registry unavailable; session kept locally until it can be re-asserted");
                Ok(())
            }
        }
    }

    /// The registry refused a write or lost data: records written by any node may be missing
    /// until every node has re-asserted, so for the settle time from now a lookup that finds no
    /// live session is answered 503, not 404. Every write failure calls this, and so does a
    /// heartbeat that found this node's entry gone.
    pub fn distrust_registry(&self) {
        let until = Instant::now() + self.settings.registry_settle;
        let mut suspect = lock(&self.suspect_until);
        if suspect.is_none_or(|t| t < until) {
            *suspect = Some(until);
        }
    }

    /// Whether a lookup that found no live session may be answered 404.
    pub fn registry_trusted(&self) -> bool {
        lock(&self.suspect_until).is_none_or(|until| Instant::now() >= until)
    }

    /// Replaces the set of peers whose heartbeat ran out (this node is never one of them).
    /// The peers the last heartbeat judged dead.
    fn dead_peers(&self) -> Vec<NodeId> {
        lock(&self.dead_peers).iter().cloned().collect()
    }

    /// The registry lost data (its heartbeat entry was gone, or the topology changed): notices
    /// of registrations made since, until this node has re-asserted, may have missed it.
    /// `register.lua` tells the nodes whose records it sees and the token's readers; both may
    /// be gone. So every local token is shared from now on (the hub's fast path would not
    /// hear of another node's new session), and the remote cache starts over untracked.
    pub fn registry_lost_data(&self) {
        self.hub.mark_all_shared();
        self.remote.lost_tracking();
    }

    /// When a discovery of `token` is answered from records (found in the registry, or
    /// cached), before their sessions are asked: tracks it, or renews its tracking, if it is
    /// read often enough (see [`remote_cache`]), from a task of its own, so that the discovery
    /// never waits for it.
    fn track_if_hot(&self, token: &TokenHash) {
        // While the registry may be missing data (a write failed lately, or it lost data), no
        // new token is tracked: what it would announce is unsure. Renewals go on, so that one
        // refused write does not lapse every tracking (a loss of data drops them anyway).
        let may_start = self.registry_trusted();
        let Some(ask) = self
            .remote
            .want_tracking(*token, Instant::now().into_std(), may_start)
        else {
            return;
        };
        let (registry, node) = (self.registry.clone(), self.settings.id.clone());
        tokio::spawn(async move {
            // `ask` gives its slot back however this task ends.
            match registry.track(ask.token(), &node).await {
                Ok(lasts) => ask.tracked(Instant::now().into_std(), lasts),
                Err(e) => {
                    ask.not_tracked(Instant::now().into_std());
                    tracing::debug!(error = %ErrorChain(&e), "cannot track a token; its records stay uncached");
                }
            }
        });
    }

    /// Re-assert every session on the next heartbeat.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    pub fn set_dead_peers(&self, dead: impl IntoIterator<Item = NodeId>) {
        let dead = dead.into_iter().filter(|n| n != self.id()).collect();
        *lock(&self.dead_peers) = dead;
    }

    /// `records` without those of dead peers.
    fn without_dead(&self, mut records: Vec<SessionRecord>) -> Vec<SessionRecord> {
        let dead = lock(&self.dead_peers);
        if !dead.is_empty() {
            records.retain(|r| !dead.contains(&r.node));
        }
        records
    }

    fn unreleased_lock(&self) -> MutexGuard<'_, Vec<(TokenHash, SessionId)>> {
        // Pushes and whole takes only: consistent even after a panic elsewhere.
        lock(&self.unreleased)
    }

    /// Whether a registration is waiting to be written to the registry; clears the flag.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::SeqCst)
    }

    /// Writes every local discoverable session into the registry again. Sessions that closed
    /// while their records were being written are removed again, so a close is never undone.
    pub async fn reassert_all(&self) -> Result<usize, RegistryError> {
        let snapshot = self.hub.discoverable_records();
        if let Err(e) = self.registry.reassert(&snapshot).await {
            self.dirty.store(true, Ordering::SeqCst);
            self.distrust_registry();
            return Err(e);
        }
        let mut gone: Vec<_> = std::mem::take(&mut *self.unreleased_lock());
        gone.extend(
            snapshot
                .iter()
                .filter(|r| !self.hub.contains(r.session))
                .map(|r| (r.token, r.session)),
        );
        for (i, (token, session)) in gone.iter().enumerate() {
            if let Err(e) = self.registry.release(token, *session).await {
                self.unreleased_lock().extend_from_slice(&gone[i..]);
                self.dirty.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
        self.metrics.reassertions.inc();
        self.metrics
            .reasserted_sessions
            .inc_by(snapshot.len() as u64);
        Ok(snapshot.len())
    }

    /// Forgets a session that ended: it is never offered again once this returns.
    pub async fn release(&self, record: &SessionRecord) {
        // A discoverable session's token loses a candidate.
        if self.hub.remove(record.session) == Some(true) {
            self.remote.forget(&record.token);
        }
        if let Err(e) = self.registry.release(&record.token, record.session).await {
            tracing::warn!(session = %record.session, token = %record.token, error = %ErrorChain(&e), "could not remove session record; retrying when the registry answers");
            self.unreleased_lock().push((record.token, record.session));
            self.dirty.store(true, Ordering::SeqCst);
        }
    }

    /// Drains: fails readiness, refuses upgrades and stops answering for its sessions at once,
    /// removes this node's records, tells peers, then closes every session with 1001 spread
    /// over the drain spread, waiting at most the grace period for them to finish.
    pub async fn drain(&self) {
        if self.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        self.hub.stop_offering();
        let started = Instant::now();
        tracing::info!(node = %self.id(), sessions = self.hub.len(), "draining");
        if let Err(e) = self.registry.release_node(self.id()).await {
            tracing::warn!(error = %ErrorChain(&e), "could not remove this node's records; sessions will remove their own");
        }
        if let Err(e) = self.bus.leave().await {
            tracing::warn!(error = %ErrorChain(&e), "could not tell peers this node is leaving");
        }
        let grace_end = started + self.settings.drain_grace;
        let spread = self.settings.drain_spread.min(self.settings.drain_grace);
        if tokio::time::timeout_at(grace_end, self.hub.drain_all(spread))
            .await
            .is_err()
        {
            tracing::warn!("drain grace ran out while closing sessions");
        }
        while !self.hub.is_empty() && Instant::now() < grace_end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.metrics
            .drain_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(node = %self.id(), left = self.hub.len(), took_ms = started.elapsed().as_millis() as u64, "drained");
    }
}

/// Locks a mutex whose value is replaced whole, so it is consistent even after a panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The owner side of the bus: other nodes' requests for this node's sessions, and their notices.
#[async_trait]
impl PortResponder for Node {
    async fn ask_local(&self, session: SessionId, wait: Duration) -> Result<PortAnswer, PortError> {
        self.hub.ask_port(session, wait).await
    }

    fn foreign_registration(&self, token: &TokenHash) {
        self.metrics.registration_notices.inc();
        self.hub.mark_shared(token);
        self.remote.forget(token);
    }

    fn peer_leaving(&self, node: &NodeId) {
        self.remote.forget_node(node);
    }

    fn home(&self, session: SessionId) -> Option<tokio::runtime::Handle> {
        self.hub.home(session)
    }
}
