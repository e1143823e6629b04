//! An in-process stand-in for Redis pub/sub: what the in-memory registry and the in-memory bus
//! share, as the Redis ones share a Redis server. The in-memory registry publishes registration
//! notices on it (as `register.lua` does on Redis); the in-memory bus transport sends requests
//! and replies on it. Nodes given the same broker form an in-process cluster (the embedded
//! single node, and tests).
//!
//! Delivery is synchronous: `publish` hands the message to every live subscriber before it
//! returns, and reports how many there were, like Redis's `PUBLISH`.

use crate::model::{BusMessage, NodeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Where a message is published: one node's channel, or the cluster-wide events channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Node(NodeId),
    Events,
}

/// Whatever reads a topic. Held weakly: a dropped subscriber stops receiving (its node is gone).
pub trait Subscriber: Send + Sync + 'static {
    fn deliver(&self, message: BusMessage);
}

#[derive(Default)]
pub struct MemoryBroker {
    topics: Mutex<HashMap<Topic, Vec<Weak<dyn Subscriber>>>>,
}

impl MemoryBroker {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Topic, Vec<Weak<dyn Subscriber>>>> {
        // Single pushes and retains only: consistent even after a panic elsewhere.
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self, topic: Topic, subscriber: Weak<dyn Subscriber>) {
        self.lock().entry(topic).or_default().push(subscriber);
    }

    /// Delivers `message` to every live subscriber of `topic` (outside the lock, so that a
    /// subscriber may publish in turn); the number that received it.
    pub fn publish(&self, topic: &Topic, message: &BusMessage) -> usize {
        let live: Vec<Arc<dyn Subscriber>> = {
            let mut topics = self.lock();
            let Some(subs) = topics.get_mut(topic) else {
                return 0;
            };
            subs.retain(|s| s.strong_count() > 0);
            subs.iter().filter_map(Weak::upgrade).collect()
        };
        for sub in &live {
            sub.deliver(message.clone());
        }
        live.len()
    }
}
