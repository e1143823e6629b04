//! The node's background duty in a cluster: heartbeat, sweep dead peers, re-assert.
//!
//! Every `interval`: renew this node's heartbeat; when the registry had no entry for it (first
//! beat, Redis restarted empty or flushed, or a long pause got it swept), when the previous beat
//! failed, or when a registration was kept locally during an outage, write every session again;
//! sweep the records of peers whose heartbeat ran out. Every `anti_entropy` the records are
//! re-written anyway (2 commands per session, pipelined).

use super::Node;
use crate::telemetry::ErrorChain;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct LivenessSettings {
    pub interval: Duration,
    pub anti_entropy: Duration,
}

/// Runs until the task is aborted (at drain, before the node removes its records).
pub async fn run(node: Arc<Node>, settings: LivenessSettings) {
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = false;
    let mut last_full = Instant::now();
    loop {
        tick.tick().await;
        healthy = beat(&node, settings, healthy, &mut last_full).await;
    }
}

/// One round; returns whether the registry answered throughout.
async fn beat(
    node: &Node,
    settings: LivenessSettings,
    healthy: bool,
    last_full: &mut Instant,
) -> bool {
    let registry = node.registry();
    let heartbeat = match registry.heartbeat(node.id()).await {
        Ok(h) => h,
        Err(e) => {
            if healthy {
                tracing::warn!(error = %ErrorChain(&e), "heartbeat failed; local sessions stay open");
            }
            return false;
        }
    };
    node.metrics().peers_alive.set(heartbeat.alive as i64);
    let dirty = node.take_dirty();
    let due = last_full.elapsed() >= settings.anti_entropy;
    if heartbeat.fresh || !healthy || dirty || due {
        match node.reassert_all().await {
            Ok(n) => {
                *last_full = Instant::now();
                if heartbeat.fresh || !healthy || dirty {
                    tracing::info!(
                        sessions = n,
                        fresh = heartbeat.fresh,
                        "re-asserted every session"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "re-assertion failed; retrying next beat");
                return false;
            }
        }
    }
    for dead in heartbeat.dead.iter().filter(|d| *d != node.id()) {
        match registry.sweep(dead).await {
            Ok(n) => {
                node.metrics().swept_records.inc_by(n as u64);
                tracing::info!(node = %dead, records = n, "swept a dead node");
            }
            Err(e) => tracing::debug!(node = %dead, error = %ErrorChain(&e), "sweep failed"),
        }
    }
    true
}
