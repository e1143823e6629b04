//! In-process bus: the embedded single-node mode, and in-process clusters in tests.

use super::{Bus, BusError, PortResponder};
use crate::hub::PortAnswer;
use crate::registry::{NodeId, SessionId};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The nodes of one process, by id. Nodes join on start and leave on drain.
#[derive(Default)]
pub struct MemoryNetwork {
    nodes: Mutex<HashMap<NodeId, Weak<dyn PortResponder>>>,
}

impl MemoryNetwork {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Weak<dyn PortResponder>>> {
        // Single inserts/removes only: consistent even after a panic elsewhere.
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a node on the network; the network holds it weakly so a dropped node disappears.
    pub fn join(self: &Arc<Self>, node: NodeId, responder: Weak<dyn PortResponder>) -> MemoryBus {
        self.lock().insert(node.clone(), responder);
        MemoryBus {
            network: self.clone(),
            node,
        }
    }
}

pub struct MemoryBus {
    network: Arc<MemoryNetwork>,
    node: NodeId,
}

#[async_trait]
impl Bus for MemoryBus {
    async fn ask_port(
        &self,
        target: &NodeId,
        session: SessionId,
        budget: Duration,
    ) -> Result<PortAnswer, BusError> {
        let responder = self
            .network
            .lock()
            .get(target)
            .and_then(Weak::upgrade)
            .ok_or_else(|| BusError::NodeGone(target.clone()))?;
        match tokio::time::timeout(budget, responder.ask_local(session, budget)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(BusError::SessionGone),
            Err(_) => Err(BusError::Timeout),
        }
    }

    async fn leave(&self) -> Result<(), BusError> {
        self.network.lock().remove(&self.node);
        Ok(())
    }

    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }
}
