//! In-memory registry: the embedded single-node mode, and in-process clusters in tests.

use super::{Admission, Heartbeat, Lookup, Registry, RegistryError};
use crate::memory_broker::{MemoryBroker, Topic};
use crate::model::{BusMessage, NodeId, SessionId, SessionRecord, newest_first};
use crate::protocol::TokenHash;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A map behind a `std::sync::Mutex`: nothing awaits under the lock, and every operation is a
/// few pointer moves. An admitted registration is announced on the broker's events topic, as
/// `register.lua` announces it on Redis.
pub struct MemoryRegistry {
    tokens: Mutex<HashMap<TokenHash, Vec<SessionRecord>>>,
    broker: Arc<MemoryBroker>,
}

impl MemoryRegistry {
    pub fn new(broker: Arc<MemoryBroker>) -> Self {
        Self {
            tokens: Mutex::default(),
            broker,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Vec<SessionRecord>>> {
        // A panic while holding this lock leaves the map consistent (every mutation is a single
        // push/retain), so a poisoned lock is safe to keep using.
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
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
        let shared = {
            let mut tokens = self.lock();
            let list = tokens.entry(record.token).or_default();
            list.retain(|r| !dead.contains(&r.node));
            let shared = list.iter().any(|r| r.node != record.node);
            if list.iter().any(|r| r.session == record.session) {
                return Ok(Admission::Admitted { shared });
            }
            if list.len() >= max_per_token {
                return Ok(Admission::TokenFull);
            }
            list.push(record.clone());
            shared
        };
        let notice = BusMessage::Registered {
            token: record.token,
            node: record.node.clone(),
        };
        self.broker.publish(&Topic::Events, &notice);
        Ok(Admission::Admitted { shared })
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
}
