//! Discovery: a token's hash in, `{host, ip, port}` out, within one deadline.
//!
//! 1. Candidates: from the hub alone when this node provably holds every session of the token
//!    (`Hub::fast_candidates`); else from the records of other nodes' sessions read recently
//!    ([`super::remote_cache`]); else from the registry (one lookup, bounded by the deadline),
//!    joined by this node's own live sessions, which are answered in every registry state.
//!    Records of peers that the last heartbeat found dead are never asked, cached or not.
//! 2. Candidates are asked in the `--session-order` (newest first; by default a newer session
//!    from another source only after the older source's), each within an even share of the time left, so that a
//!    silent newest session cannot starve an older live one. A port from the RPC wins at once; a
//!    fallback port (no peer, failed or late RPC) is kept while older sessions get their chance.
//! 3. Cached candidates that answered nothing, or a candidate found gone, drop the token from the
//!    cache; after failed cached candidates the registry is read within the same deadline.
//! 4. "No live session" (404) is said only when the registry can vouch for it: not when the
//!    lookup shows Redis lost data, nor within the settle time after a write failed
//!    ([`Node::distrust_registry`]); then the answer is 503 + `Retry-After`.

use super::Node;
use crate::bus::TransportError;
use crate::metrics::Label;
use crate::model::{
    DiscoveryOutcome, LookupSource, PortAnswer, PortError, PortSource, Reach, SessionRecord, order,
};
use crate::protocol::{HostieAnswer, TokenHash};
use crate::registry::{Lookup, RegistryError};
use crate::telemetry::ErrorChain;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

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
    /// The token has records, but every one's session is gone: closed, or on a node that died
    /// or left.
    #[error("no live session for the token, though it has registrations")]
    Gone,
    #[error("cannot read the registry")]
    Registry(#[source] RegistryError),
    /// No live session was found, but the registry refused a write or lost data within the
    /// settle time: a record may be missing, so "no session" cannot be said.
    #[error(
        "no live session found, but the registry may be missing records (it refused writes or lost data recently)"
    )]
    Untrusted,
    #[error("no session could be asked within the deadline")]
    Unreachable(#[source] PortError),
}

/// A token's registrations, for its page: the registry's records (those of peers held dead
/// left out) and this node's own live sessions, newest first.
#[derive(Debug, Clone, Default)]
pub struct TokenSessions {
    pub records: Vec<SessionRecord>,
    /// The registry could not be read within the deadline: only local sessions are listed.
    pub error: bool,
}

impl DiscoveryError {
    pub fn outcome(&self) -> DiscoveryOutcome {
        match self {
            Self::NotFound | Self::Gone => DiscoveryOutcome::Miss,
            Self::Registry(_) | Self::Untrusted => DiscoveryOutcome::Error,
            Self::Unreachable(PortError::Timeout) => DiscoveryOutcome::Timeout,
            Self::Unreachable(_) => DiscoveryOutcome::Error,
        }
    }
}

impl Node {
    /// Resolves a token to `{host, ip, port}` within the discovery deadline (module docs), in a
    /// `discover` span with the node id and the short token hash. The span is at debug level and
    /// wraps the work only when enabled: unlike `#[instrument]`, which keeps room in the future
    /// for the wrapped and the bare body both, a disabled span costs nothing per discovery.
    pub async fn discover(&self, hash: &TokenHash) -> Result<Discovered, DiscoveryError> {
        let span = tracing::debug_span!("discover", node = %self.settings.id, token = %hash);
        if span.is_disabled() {
            return self.resolve(hash).await;
        }
        async {
            let result = self.resolve(hash).await;
            match &result {
                Ok(found) => {
                    tracing::debug!(
                        outcome = found.outcome.label(),
                        port = found.answer.port,
                        "discovered"
                    );
                }
                Err(e) => tracing::debug!(error = %ErrorChain(e), "not discovered"),
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn resolve(&self, hash: &TokenHash) -> Result<Discovered, DiscoveryError> {
        let started = Instant::now();
        let deadline = started + self.settings.discovery_deadline;
        let epoch = self.bus.notice_epoch();
        if let Some(local) = epoch.and_then(|epoch| self.hub.fast_candidates(hash, epoch)) {
            self.metrics.lookup(LookupSource::Hub);
            return self.ask_in_turn(hash, local, deadline).await;
        }
        if let Some(cached) =
            epoch.and_then(|epoch| self.remote.get(hash, epoch, started.into_std()))
        {
            let cached = self.without_dead(cached);
            if cached.is_empty() {
                self.remote.forget(hash);
            } else {
                self.metrics.lookup(LookupSource::Cache);
                // Renewed while it is read: a hot token's tracking never lapses.
                self.track_if_hot(hash);
                let result = self.ask_in_turn(hash, cached, deadline).await;
                if result.is_ok() || Instant::now() + self.margin() >= deadline {
                    return result;
                }
                tracing::debug!("cached candidates answered nothing; reading the registry");
            }
        }
        let ticket = epoch.map(|epoch| self.remote.ticket(epoch, Instant::now().into_std()));
        let mut registered = false;
        // Bounded by the deadline too: after cached candidates, little of it may be left.
        let lookup = tokio::time::timeout_at(deadline, self.registry.candidates(hash))
            .await
            .unwrap_or(Err(RegistryError::Deadline));
        let (candidates, complete) = match lookup {
            Ok(Lookup { records, complete }) => {
                self.metrics.lookup(LookupSource::Registry);
                registered = !records.is_empty();
                let records = self.without_dead(records);
                if let Some(ticket) = ticket.filter(|_| complete) {
                    self.remote.put(*hash, &records, ticket);
                    if !records.is_empty() {
                        self.track_if_hot(hash);
                    }
                }
                // This node's own live sessions are candidates whatever the registry says: it
                // may have refused their writes, or lost them.
                (self.with_local(hash, records), complete)
            }
            Err(e) => {
                let local = self.hub.local_candidates(hash);
                if local.is_empty() {
                    return Err(DiscoveryError::Registry(e));
                }
                self.metrics.lookup(LookupSource::Hub);
                tracing::debug!(error = %ErrorChain(&e), "registry unreadable; answering from the hub");
                (local, false)
            }
        };
        match self.ask_in_turn(hash, candidates, deadline).await {
            Err(DiscoveryError::NotFound | DiscoveryError::Gone)
                if !complete || !self.registry_trusted() =>
            {
                Err(DiscoveryError::Untrusted)
            }
            // Only records of peers held dead: gone as well.
            Err(DiscoveryError::NotFound) if registered => Err(DiscoveryError::Gone),
            result => result,
        }
    }

    /// The token's registrations (see [`TokenSessions`]), read within the discovery deadline.
    pub async fn token_sessions(&self, hash: &TokenHash) -> TokenSessions {
        let lookup = tokio::time::timeout(
            self.settings.discovery_deadline,
            self.registry.candidates(hash),
        )
        .await
        .unwrap_or(Err(RegistryError::Deadline));
        let (records, error) = match lookup {
            Ok(lookup) => (self.without_dead(lookup.records), false),
            Err(_) => (Vec::new(), true),
        };
        let mut records = self.with_local(hash, records);
        crate::model::newest_first(&mut records);
        TokenSessions { records, error }
    }

    /// `records` and this node's live sessions of the token, each once.
    fn with_local(&self, hash: &TokenHash, mut records: Vec<SessionRecord>) -> Vec<SessionRecord> {
        for record in self.hub.local_candidates(hash) {
            if !records.iter().any(|r| r.session == record.session) {
                records.push(record);
            }
        }
        records
    }

    /// What a discovery keeps of its deadline for answering once the candidates are asked.
    fn margin(&self) -> Duration {
        self.settings.discovery_deadline / 20
    }

    /// Asks `candidates`, in the `--session-order`, in turn until one answers with its RPC port
    /// or the deadline is near.
    /// A candidate found gone (its session closed, its node off the bus), or candidates that
    /// answered nothing at all, drop the token from the remote cache, whatever the others
    /// answered: its records are out of date.
    async fn ask_in_turn(
        &self,
        hash: &TokenHash,
        mut candidates: Vec<SessionRecord>,
        deadline: Instant,
    ) -> Result<Discovered, DiscoveryError> {
        order(&mut candidates, self.settings.session_order);
        let margin = self.margin();
        let mut fallback: Option<(&SessionRecord, PortAnswer)> = None;
        let mut last_error: Option<PortError> = None;
        let mut stale = false;
        for (i, record) in candidates.iter().enumerate() {
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(margin);
            if remaining.is_zero() {
                last_error.get_or_insert(PortError::Timeout);
                break;
            }
            let share = remaining / (candidates.len() - i) as u32;
            match self.bus.ask_port(&record.node, record.session, share).await {
                Ok(answer) if answer.source == PortSource::Rpc => {
                    fallback = Some((record, answer));
                    break;
                }
                Ok(answer) => {
                    fallback.get_or_insert((record, answer));
                }
                // Gone for sure: the session closed, or its node has no subscriber (dead or
                // drained). Not an error: with no other candidate the answer is a 404. A node
                // off the bus that is in no heartbeat either left this record behind (it died
                // between writing it and its set member): removed, as no sweep will.
                Err(PortError::NodeGone(_)) => {
                    stale = true;
                    if self.registry_trusted() {
                        let _ = self.registry().drop_orphan(record).await;
                    }
                }
                Err(e) if e.is_gone() => stale = true,
                Err(e) => {
                    // Nobody listens on the owner's channel where that alone proves nothing
                    // (Sentinel, Cluster): the record is gone for sure when its owner is not
                    // even in the heartbeats, and is removed then (its owner's sweep never will)
                    // — unless Redis may have lost the heartbeats themselves lately.
                    if self.registry_trusted()
                        && let PortError::Transport(t) = &e
                        && matches!(
                            t.downcast_ref::<TransportError>(),
                            Some(TransportError::NoReceiver)
                        )
                        && self.registry().drop_orphan(record).await.unwrap_or(false)
                    {
                        stale = true;
                        continue;
                    }
                    tracing::debug!(owner = %record.node, error = %ErrorChain(&e), "candidate unreachable");
                    last_error = Some(e);
                }
            }
        }
        if stale || (fallback.is_none() && !candidates.is_empty()) {
            self.remote.forget(hash);
        }
        match (fallback, last_error) {
            (Some((record, answer)), _) => Ok(found(record, answer, self.hub.reach_enabled())),
            (None, Some(e)) => Err(DiscoveryError::Unreachable(e)),
            (None, None) if candidates.is_empty() => Err(DiscoveryError::NotFound),
            (None, None) => Err(DiscoveryError::Gone),
        }
    }
}

/// The answer for `record`'s session. `probing`: this node runs with `--probe-reachability`;
/// the answer's shape follows the answering node's setting, whatever the owner's (an owner
/// that does not probe gives `unchecked`).
fn found(record: &SessionRecord, answer: PortAnswer, probing: bool) -> Discovered {
    let outcome = match answer.source {
        PortSource::Rpc => DiscoveryOutcome::Hit,
        PortSource::NoPeer | PortSource::RpcFailed => DiscoveryOutcome::Fallback,
        PortSource::RpcTimeout => DiscoveryOutcome::Timeout,
    };
    let mut found = HostieAnswer::found(&record.host, answer.port);
    found.reachability = probing.then(|| answer.reach.unwrap_or(Reach::Unchecked).label());
    Discovered {
        answer: found,
        outcome,
    }
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;
