//! In-memory registry: the embedded single-node mode, and in-process clusters in tests.

use super::{Admission, Heartbeat, Lookup, NodeStats, Registry, RegistryError};
use crate::memory_broker::{MemoryBroker, Topic};
use crate::model::{BusMessage, NodeId, SessionId, SessionRecord, newest_first};
use crate::protocol::TokenHash;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Maps behind a `std::sync::Mutex`: nothing awaits under the lock, and every operation is a
/// few pointer moves. An admitted registration is announced to the nodes that hold the token
/// or track it, on their broker topics, as `register.lua` announces it on Redis.
pub struct MemoryRegistry {
    tokens: Mutex<HashMap<TokenHash, Vec<SessionRecord>>>,
    /// Each node's last figures (in-process nodes have no heartbeat to expire them).
    stats: Mutex<HashMap<NodeId, NodeStats>>,
    readers: Mutex<Readers>,
    /// How long a `track` lasts.
    tracking_ttl: Duration,
    broker: Arc<MemoryBroker>,
}

/// Who tracks which token, until when (`track.lua`'s readers sets).
#[derive(Default)]
struct Readers {
    by_token: HashMap<TokenHash, HashMap<NodeId, Instant>>,
    /// Expired entries are swept when the map reaches this size (doubling, amortised).
    sweep_at: usize,
}

const READERS_SWEEP_MIN: usize = 1024;

impl MemoryRegistry {
    pub fn new(broker: Arc<MemoryBroker>, tracking_ttl: Duration) -> Self {
        Self {
            tokens: Mutex::default(),
            stats: Mutex::default(),
            readers: Mutex::default(),
            tracking_ttl,
            broker,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Vec<SessionRecord>>> {
        // A panic while holding this lock leaves the map consistent (every mutation is a single
        // push/retain), so a poisoned lock is safe to keep using.
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn readers(&self) -> std::sync::MutexGuard<'_, Readers> {
        // As above: single inserts and retains.
        self.readers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token's live readers other than `except`.
    fn readers_of(&self, token: &TokenHash, except: &NodeId) -> Vec<NodeId> {
        let now = Instant::now();
        let mut readers = self.readers();
        let Some(nodes) = readers.by_token.get_mut(token) else {
            return Vec::new();
        };
        nodes.retain(|_, until| *until > now);
        let live = nodes.keys().filter(|n| *n != except).cloned().collect();
        if nodes.is_empty() {
            readers.by_token.remove(token);
        }
        live
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn register(
        &self,
        record: &SessionRecord,
        max_per_token: usize,
        dead: &[NodeId],
    ) -> Result<Admission, RegistryError> {
        let (shared, told) = {
            let mut tokens = self.lock();
            let list = tokens.entry(record.token).or_default();
            // Every other holder is told, those held dead too (as `register.lua` does).
            let mut told: HashSet<NodeId> = list
                .iter()
                .filter(|r| r.node != record.node)
                .map(|r| r.node.clone())
                .collect();
            list.retain(|r| !dead.contains(&r.node));
            let shared = list.iter().any(|r| r.node != record.node);
            if list.iter().any(|r| r.session == record.session) {
                return Ok(Admission::Admitted { shared });
            }
            if list.len() >= max_per_token {
                return Ok(Admission::TokenFull);
            }
            list.push(record.clone());
            told.extend(self.readers_of(&record.token, &record.node));
            (shared, told)
        };
        let notice = BusMessage::Registered {
            token: record.token,
            node: record.node.clone(),
        };
        for node in told {
            self.broker.publish(&Topic::Node(node), &notice);
        }
        Ok(Admission::Admitted { shared })
    }

    async fn track(&self, token: &TokenHash, node: &NodeId) -> Result<Duration, RegistryError> {
        let now = Instant::now();
        let mut readers = self.readers();
        if readers.by_token.len() >= readers.sweep_at {
            readers
                .by_token
                .retain(|_, nodes| nodes.values().any(|until| *until > now));
            readers.sweep_at = (readers.by_token.len() * 2).max(READERS_SWEEP_MIN);
        }
        readers
            .by_token
            .entry(*token)
            .or_default()
            .insert(node.clone(), now + self.tracking_ttl);
        Ok(self.tracking_ttl)
    }

    /// In memory a record and its node are one write: never orphaned.
    async fn drop_orphan(&self, _record: &SessionRecord) -> Result<bool, RegistryError> {
        Ok(false)
    }

    async fn release(&self, token: &TokenHash, session: SessionId) -> Result<(), RegistryError> {
        let mut tokens = self.lock();
        if let Some(list) = tokens.get_mut(token) {
            list.retain(|r| r.session != session);
            if list.is_empty() {
                tokens.remove(token);
            }
        }
        Ok(())
    }

    async fn candidates(&self, token: &TokenHash) -> Result<Lookup, RegistryError> {
        let mut records = self.lock().get(token).cloned().unwrap_or_default();
        newest_first(&mut records);
        Ok(Lookup {
            records,
            complete: true,
        })
    }

    async fn release_node(&self, node: &NodeId) -> Result<(), RegistryError> {
        self.lock().retain(|_, list| {
            list.retain(|r| &r.node != node);
            !list.is_empty()
        });
        Ok(())
    }

    async fn check(&self) -> Result<(), RegistryError> {
        Ok(())
    }

    /// In-process nodes cannot die apart from the process: nothing to detect or sweep.
    async fn heartbeat(&self, _node: &NodeId) -> Result<Heartbeat, RegistryError> {
        Ok(Heartbeat {
            fresh: false,
            alive: 1,
            dead: Vec::new(),
            unsettled: 0,
        })
    }

    async fn sweep(&self, dead: &NodeId) -> Result<usize, RegistryError> {
        let mut removed = 0;
        self.lock().retain(|_, list| {
            let before = list.len();
            list.retain(|r| &r.node != dead);
            removed += before - list.len();
            !list.is_empty()
        });
        Ok(removed)
    }

    async fn reassert(&self, records: &[SessionRecord]) -> Result<(), RegistryError> {
        let mut tokens = self.lock();
        for record in records {
            let list = tokens.entry(record.token).or_default();
            if !list.iter().any(|r| r.session == record.session) {
                list.push(record.clone());
            }
        }
        Ok(())
    }

    fn set_stats(&self, node: &NodeId, stats: &NodeStats) {
        let mut all = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(node.clone(), stats.clone());
    }

    async fn cluster_stats(&self) -> Result<Vec<(NodeId, NodeStats)>, RegistryError> {
        let all = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = all.iter().map(|(n, s)| (n.clone(), s.clone())).collect();
        out.sort_by(|a, b| a.0.0.cmp(&b.0.0));
        Ok(out)
    }
}
