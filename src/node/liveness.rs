//! The node's background duty in a cluster: heartbeat, sweep dead peers, re-assert.
//!
//! Every `interval`: renew this node's heartbeat; when the registry had no entry for it (first
//! beat, Redis restarted empty or flushed, or a long pause got it swept), when the previous beat
//! failed, or when a registration was kept locally during an outage, write every session again;
//! hide and sweep the records of peers whose heartbeat ran out. Every `anti_entropy` the records
//! are re-written anyway (2 commands per session, pipelined). A failed beat, or one that found
//! this node's entry gone, makes the node distrust the registry's "no session" for a while
//! (`Node::distrust_registry`), and so does every beat that finds a peer unsettled: one whose
//! entry was gone and that has not yet re-asserted its sessions, however long that takes
//! (re-asserting 136,000 sessions on 8 nodes has taken longer than the settle time).

use super::Node;
use crate::telemetry::ErrorChain;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct LivenessSettings {
    pub interval: Duration,
    pub anti_entropy: Duration,
    /// The heartbeat TTL: peers are judged dead only after this node's own heartbeats have
    /// worked for this long.
    pub ttl: Duration,
}

/// Runs until the task is aborted (at drain, before the node removes its records).
pub async fn run(node: Arc<Node>, settings: LivenessSettings) {
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = State {
        healthy_since: None,
        last_full: Instant::now(),
    };
    loop {
        tick.tick().await;
        beat(&node, settings, &mut state).await;
    }
}

struct State {
    /// Since when every beat worked (`None`: the last one failed).
    healthy_since: Option<Instant>,
    last_full: Instant,
}

/// One round.
async fn beat(node: &Node, settings: LivenessSettings, state: &mut State) {
    let registry = node.registry();
    registry.set_stats(node.id(), &node.stats());
    let heartbeat = match registry.heartbeat(node.id()).await {
        Ok(h) => h,
        Err(e) => {
            if state.healthy_since.take().is_some() {
                tracing::warn!(error = %ErrorChain(&e), "heartbeat failed; local sessions stay open");
            }
            // A heartbeat is a write: other nodes' writes are likely failing too. The peers'
            // last judgement is stale: nobody is held dead (registrations would prune the
            // records of peers that came back meanwhile).
            node.distrust_registry();
            node.set_dead_peers([]);
            return;
        }
    };
    let recovered = state.healthy_since.is_none();
    let dirty = node.take_dirty();
    if heartbeat.fresh {
        // This node's entry was gone or had run out, or Redis failed over: Redis lost data, or
        // this node was swept after a pause. Every node re-asserts within the settle time;
        // until then "no session" is unsure. The peers' entries may be as stale as this
        // node's was, so they are judged only after a whole TTL from now. And once more on
        // the next beat: a sweep that claimed this node may still be deleting its records.
        node.distrust_registry();
        node.registry_lost_data();
        state.healthy_since = Some(Instant::now());
        node.mark_dirty();
    }
    if heartbeat.unsettled > 0 {
        // A peer's records may still be missing: its re-assertion is under way or failed.
        node.distrust_registry();
    }
    node.metrics().peers_alive.set(heartbeat.alive as i64);
    node.metrics()
        .peers_unsettled
        .set(heartbeat.unsettled as i64);
    let healthy_since = *state.healthy_since.get_or_insert_with(Instant::now);
    let due = state.last_full.elapsed() >= settings.anti_entropy;
    if heartbeat.fresh || recovered || dirty || due {
        match node.reassert_all().await {
            Ok(n) => {
                state.last_full = Instant::now();
                registry.set_settled(true);
                if heartbeat.fresh || recovered || dirty {
                    tracing::info!(
                        sessions = n,
                        fresh = heartbeat.fresh,
                        "re-asserted every session"
                    );
                }
            }
            Err(e) => {
                registry.set_settled(false);
                tracing::warn!(error = %ErrorChain(&e), "re-assertion failed; retrying next beat");
                state.healthy_since = None;
                return;
            }
        }
    }
    // After an outage every peer's heartbeat ran out too, though they are alive: they are judged
    // (hidden from discovery, swept) only once this node has beaten for a whole TTL, which
    // gives every live peer the time to beat again.
    if healthy_since.elapsed() < settings.ttl {
        node.set_dead_peers([]);
        return;
    }
    node.set_dead_peers(heartbeat.dead.iter().cloned());
    for dead in heartbeat.dead.iter().filter(|d| *d != node.id()) {
        match registry.sweep(dead).await {
            Ok(n) => {
                node.metrics().swept_records.inc_by(n as u64);
                tracing::info!(node = %dead, records = n, "swept a dead node");
            }
            Err(e) => tracing::debug!(node = %dead, error = %ErrorChain(&e), "sweep failed"),
        }
    }
}
