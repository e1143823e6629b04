//! In-process transport over a [`MemoryBroker`]: the embedded single node, and in-process
//! clusters in tests. It never loses a subscription, so its epoch never changes once attached.

use super::{Bus, Transport, TransportError};
use crate::memory_broker::{MemoryBroker, Subscriber, Topic};
use crate::model::{BusMessage, NodeId};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

pub struct MemoryTransport {
    broker: Arc<MemoryBroker>,
    node: NodeId,
    attached: AtomicBool,
}

impl MemoryTransport {
    pub fn new(broker: Arc<MemoryBroker>, node: NodeId) -> Self {
        Self {
            broker,
            node,
            attached: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn attach(&self, bus: Weak<Bus>) {
        let subscriber: Weak<dyn Subscriber> = bus;
        self.broker
            .subscribe(Topic::Node(self.node.clone()), subscriber.clone());
        self.broker.subscribe(Topic::Events, subscriber);
        self.attached.store(true, Ordering::SeqCst);
    }

    async fn send(&self, to: &NodeId, message: &BusMessage) -> Result<usize, TransportError> {
        Ok(self.broker.publish(&Topic::Node(to.clone()), message))
    }

    async fn broadcast(&self, message: &BusMessage) -> Result<(), TransportError> {
        self.broker.publish(&Topic::Events, message);
        Ok(())
    }

    fn epoch(&self) -> Option<u64> {
        self.attached.load(Ordering::SeqCst).then_some(1)
    }
}
