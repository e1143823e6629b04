//! The node: the only module that knows the hub, the registry and the bus together.
//!
//! It admits registrations (node cap in the hub, token cap in the registry), resolves discoveries
//! (candidates newest first, local ones asked directly, remote ones through the bus, all within
//! one deadline) and drains.

use crate::bus::{Bus, BusError};
use crate::hub::{Hub, NodeFull, PortAnswer, PortSource, SessionCmd};
use crate::metrics::{DiscoveryOutcome, Limit, LookupSource, Metrics};
use crate::protocol::{HostieAnswer, Token, TokenHash};
use crate::registry::{Admission, NodeId, Registry, RegistryError, SessionId, SessionRecord};
use crate::session::SessionSettings;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub id: NodeId,
    /// The whole discovery deadline.
    pub rpc_timeout: Duration,
    pub max_sessions_per_token: usize,
    pub session: SessionSettings,
    /// Drain closes sessions evenly over this long.
    pub drain_spread: Duration,
    /// Drain gives up waiting for sessions to close after this long.
    pub drain_grace: Duration,
}

/// A discovery that produced an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub answer: HostieAnswer,
    pub outcome: DiscoveryOutcome,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no live session for the token")]
    NotFound,
    #[error("cannot read the registry")]
    Registry(#[source] RegistryError),
    #[error("no session could be asked within the deadline")]
    Unreachable(#[source] BusError),
}

impl DiscoveryError {
    pub fn outcome(&self) -> DiscoveryOutcome {
        match self {
            Self::NotFound => DiscoveryOutcome::Miss,
            Self::Registry(_) => DiscoveryOutcome::Error,
            Self::Unreachable(BusError::Timeout) => DiscoveryOutcome::Timeout,
            Self::Unreachable(_) => DiscoveryOutcome::Error,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("node is draining")]
    Draining,
    #[error("node is at its session limit")]
    NodeFull,
    #[error("token is at its session limit")]
    TokenFull,
    #[error("cannot write the registry")]
    Registry(#[source] RegistryError),
}

pub struct Node {
    settings: NodeSettings,
    hub: Arc<Hub>,
    registry: Arc<dyn Registry>,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    /// A registration was kept while the registry could not be written: re-assert soon.
    dirty: AtomicBool,
    /// Records of closed sessions whose removal failed (registry unreachable), retried by the
    /// next re-assertion so that a stale record never outlives an outage.
    unreleased: Mutex<Vec<(TokenHash, SessionId)>>,
}

impl Node {
    pub fn new(
        settings: NodeSettings,
        hub: Arc<Hub>,
        registry: Arc<dyn Registry>,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            settings,
            hub,
            registry,
            bus,
            metrics,
            draining: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            unreleased: Mutex::default(),
        }
    }

    pub fn id(&self) -> &NodeId {
        &self.settings.id
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn session_settings(&self) -> SessionSettings {
        self.settings.session
    }

    pub fn live_sessions(&self) -> usize {
        self.hub.len()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn registry(&self) -> &dyn Registry {
        self.registry.as_ref()
    }

    pub fn bus(&self) -> &dyn Bus {
        self.bus.as_ref()
    }

    /// Admits a session: node cap first (local, cheap), then the cluster-wide token cap.
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
            .map_err(|NodeFull| {
                self.metrics.limit(Limit::SessionsPerNode);
                RegisterError::NodeFull
            })?;
        if !discoverable {
            return Ok(());
        }
        let admitted = self
            .registry
            .register(&record, self.settings.max_sessions_per_token)
            .await;
        match admitted {
            Ok(Admission::Admitted { shared }) => {
                if shared {
                    self.hub.mark_shared(&record.token);
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
                self.dirty.store(true, Ordering::SeqCst);
                tracing::warn!(session = %record.session, token = %record.token, error = %e, "registry unavailable; session kept locally until it can be re-asserted");
                Ok(())
            }
        }
    }

    fn unreleased_lock(&self) -> MutexGuard<'_, Vec<(TokenHash, SessionId)>> {
        // Pushes and whole takes only: consistent even after a panic elsewhere.
        self.unreleased.lock().unwrap_or_else(|p| p.into_inner())
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
        self.hub.remove(record.session);
        if let Err(e) = self.registry.release(&record.token, record.session).await {
            tracing::warn!(session = %record.session, token = %record.token, error = %e, "could not remove session record; retrying when the registry answers");
            self.unreleased_lock().push((record.token, record.session));
            self.dirty.store(true, Ordering::SeqCst);
        }
    }

    /// Resolves a token to `{host, ip, port}` within the discovery deadline.
    ///
    /// The candidates come from the registry, or without a Redis round trip from the hub when
    /// this node provably holds every session of the token (`Hub::fast_candidates`), or from the
    /// records of other nodes' sessions this node read recently (`RemoteCache`). When cached
    /// candidates answer nothing (a session closed, a node went away since), the registry is read
    /// again within the same deadline.
    ///
    /// Candidates are asked newest first. A port from the RPC wins at once; a fallback port
    /// (no peer, failed or late RPC) is kept while older sessions get their chance, and answered
    /// if none does better. The remaining time is split evenly among the candidates left, so a
    /// silent newest session cannot starve an older live one.
    pub async fn discover(&self, token: &Token) -> Result<Discovered, DiscoveryError> {
        let hash = token.hash();
        let started = Instant::now();
        let deadline = started + self.settings.rpc_timeout;
        let epoch = self.bus.notice_epoch();
        if let Some(local) = epoch.and_then(|epoch| self.hub.fast_candidates(&hash, epoch)) {
            self.metrics.lookup(LookupSource::Hub);
            return self.ask_in_turn(&hash, &local, deadline).await;
        }
        let remote = self.hub.remote();
        if let Some(cached) = epoch.and_then(|epoch| remote.get(&hash, epoch, started)) {
            self.metrics.lookup(LookupSource::Cache);
            let result = self.ask_in_turn(&hash, &cached, deadline).await;
            if result.is_ok() || Instant::now() + self.margin() >= deadline {
                return result;
            }
            tracing::debug!(token = %hash, "cached candidates answered nothing; reading the registry");
        }
        let ticket = epoch.map(|epoch| remote.ticket(epoch, Instant::now()));
        // Bounded by the deadline too: after cached candidates, little of it may be left.
        let lookup = tokio::time::timeout_at(deadline.into(), self.registry.candidates(&hash))
            .await
            .unwrap_or_else(|_| {
                Err(RegistryError::Unavailable(
                    "no answer within the discovery deadline".into(),
                ))
            });
        let candidates = match lookup {
            Ok(c) => {
                self.metrics.lookup(LookupSource::Registry);
                if let Some(ticket) = ticket {
                    remote.put(hash, &c, ticket);
                }
                c
            }
            Err(e) => {
                let local = self.hub.local_candidates(&hash);
                if local.is_empty() {
                    return Err(DiscoveryError::Registry(e));
                }
                self.metrics.lookup(LookupSource::Hub);
                tracing::debug!(token = %hash, error = %e, "registry unreadable; answering from the hub");
                local
            }
        };
        self.ask_in_turn(&hash, &candidates, deadline).await
    }

    /// What a discovery keeps of its deadline for answering once the candidates are asked.
    fn margin(&self) -> Duration {
        self.settings.rpc_timeout / 20
    }

    /// Asks `candidates` in turn until one answers with its RPC port or the deadline is near.
    /// A candidate found gone (its session closed, its node off the bus), or candidates that
    /// answered nothing at all, drop the token from the remote cache, whatever the others
    /// answered: its records are out of date.
    async fn ask_in_turn(
        &self,
        hash: &TokenHash,
        candidates: &[SessionRecord],
        deadline: Instant,
    ) -> Result<Discovered, DiscoveryError> {
        let margin = self.margin();
        let mut fallback: Option<(&SessionRecord, PortAnswer)> = None;
        let mut last_error: Option<BusError> = None;
        let mut stale = false;
        for (i, record) in candidates.iter().enumerate() {
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(margin);
            if remaining.is_zero() {
                last_error.get_or_insert(BusError::Timeout);
                break;
            }
            let budget = remaining / (candidates.len() - i) as u32;
            let asked = if &record.node == self.id() {
                self.hub
                    .ask_port(record.session, budget)
                    .await
                    .map_err(|_| BusError::SessionGone)
            } else {
                self.bus
                    .ask_port(&record.node, record.session, budget)
                    .await
            };
            match asked {
                Ok(answer) if answer.source == PortSource::Rpc => {
                    fallback = Some((record, answer));
                    break;
                }
                Ok(answer) => {
                    fallback.get_or_insert((record, answer));
                }
                // Gone for sure: the session closed, or its node has no subscriber (dead or
                // drained). Not an error: with no other candidate the answer is a 404.
                Err(BusError::SessionGone | BusError::NodeGone(_)) => stale = true,
                Err(e) => {
                    tracing::debug!(token = %hash, node = %record.node, error = %e, "candidate unreachable");
                    last_error = Some(e);
                }
            }
        }
        if stale || (fallback.is_none() && !candidates.is_empty()) {
            self.hub.remote().forget(hash);
        }
        match (fallback, last_error) {
            (Some((record, answer)), _) => Ok(found(record, answer)),
            (None, Some(e)) => Err(DiscoveryError::Unreachable(e)),
            (None, None) => Err(DiscoveryError::NotFound),
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
            tracing::warn!(error = %e, "could not remove this node's records; sessions will remove their own");
        }
        if let Err(e) = self.bus.leave().await {
            tracing::warn!(error = %e, "could not tell peers this node is leaving");
        }
        let grace_end = started + self.settings.drain_grace;
        let spread = self.settings.drain_spread.min(self.settings.drain_grace);
        if tokio::time::timeout_at(grace_end.into(), self.hub.drain_all(spread))
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

fn found(record: &SessionRecord, answer: PortAnswer) -> Discovered {
    let outcome = match answer.source {
        PortSource::Rpc => DiscoveryOutcome::Hit,
        PortSource::NoPeer | PortSource::RpcFailed => DiscoveryOutcome::Fallback,
        PortSource::RpcTimeout => DiscoveryOutcome::Timeout,
    };
    Discovered {
        answer: HostieAnswer::found(&record.host, answer.port),
        outcome,
    }
}
