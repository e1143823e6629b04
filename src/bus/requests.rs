//! [`Bus`]: the request discipline and the notices, over any [`Transport`].

use super::{PortResponder, Transport, TransportError};
use crate::memory_broker::Subscriber;
use crate::metrics::Metrics;
use crate::model::{BusMessage, NodeId, PortAnswer, PortError, SessionId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Request id → (target node, where its reply goes).
type PendingMap = HashMap<u64, (NodeId, oneshot::Sender<Option<PortAnswer>>)>;

/// One node's end of the bus.
pub struct Bus {
    node: NodeId,
    transport: Arc<dyn Transport>,
    pending: Mutex<PendingMap>,
    next_id: AtomicU64,
    responder: OnceLock<Weak<dyn PortResponder>>,
    metrics: Arc<Metrics>,
    /// Requests are answered from tasks that outlive the delivery call.
    me: Weak<Bus>,
}

/// Removes a pending slot however the request ends.
struct SlotGuard<'a> {
    bus: &'a Bus,
    id: u64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.bus.lock().remove(&self.id);
    }
}

impl Bus {
    /// Puts node `node` on the bus: the transport starts delivering its channel and the events
    /// channel. Requests for its sessions are answered once [`Bus::serve`] names the responder.
    pub fn start(node: NodeId, transport: Arc<dyn Transport>, metrics: Arc<Metrics>) -> Arc<Self> {
        let bus = Arc::new_cyclic(|me| Bus {
            node,
            transport,
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            responder: OnceLock::new(),
            metrics,
            me: me.clone(),
        });
        bus.transport.attach(Arc::downgrade(&bus));
        bus
    }

    /// Names what answers for this node's sessions (held weakly: the node owns the bus).
    pub fn serve(&self, responder: Weak<dyn PortResponder>) {
        if self.responder.set(responder).is_err() {
            tracing::warn!(node = %self.node, "a bus serves one responder; the second is ignored");
        }
    }

    fn responder(&self) -> Option<Arc<dyn PortResponder>> {
        self.responder.get().and_then(Weak::upgrade)
    }

    fn lock(&self) -> MutexGuard<'_, PendingMap> {
        // Single inserts/removes only: consistent even after a panic elsewhere.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests waiting for a reply (late replies find none and are dropped).
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    /// Asks `target` for the port of its session, waiting at most `wait`. This node's own
    /// sessions are asked directly.
    pub async fn ask_port(
        &self,
        target: &NodeId,
        session: SessionId,
        wait: Duration,
    ) -> Result<PortAnswer, PortError> {
        if *target == self.node {
            return match self.responder() {
                Some(responder) => responder.ask_local(session, wait).await,
                None => Err(PortError::SessionGone),
            };
        }
        let started = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        // The slot exists before the request can be answered.
        self.lock().insert(id, (target.clone(), tx));
        let _slot = SlotGuard { bus: self, id };
        // The owner gets a little less than our wait so its answer (a fallback port, at worst)
        // arrives before we give up.
        let owner_wait = wait.saturating_sub((wait / 10).max(Duration::from_millis(2)));
        let request = BusMessage::Request {
            id,
            from: self.node.clone(),
            session,
            budget_ms: owner_wait.as_millis() as u64,
        };
        let outcome = async {
            let receivers = self
                .transport
                .send(target, &request)
                .await
                .map_err(|e| PortError::Transport(Box::new(e)))?;
            if receivers == 0 {
                self.metrics.bus_no_subscriber.inc();
                return Err(PortError::NodeGone(target.clone()));
            }
            match rx.await {
                Ok(Some(answer)) => Ok(answer),
                Ok(None) => Err(PortError::SessionGone),
                // The slot was dropped: the target announced it is leaving.
                Err(_) => Err(PortError::NodeGone(target.clone())),
            }
        };
        let result = tokio::time::timeout(wait, outcome)
            .await
            .unwrap_or(Err(PortError::Timeout));
        self.metrics
            .bus_request(&result, started.elapsed().as_secs_f64());
        result
    }

    /// Tells every node this one is leaving (drain): they stop asking it at once.
    pub async fn leave(&self) -> Result<(), TransportError> {
        let leave = BusMessage::Leave {
            node: self.node.clone(),
        };
        self.transport.broadcast(&leave).await
    }

    /// While the bus delivers every node's notices: the number of the current subscription.
    /// Knowledge gathered under one epoch (the hub's fast path, the remote cache) is valid only
    /// under the same epoch.
    pub fn notice_epoch(&self) -> Option<u64> {
        self.transport.epoch()
    }

    /// Whether the bus can carry requests, for readiness.
    pub fn check(&self) -> Result<(), TransportError> {
        match self.transport.epoch() {
            Some(_) => Ok(()),
            None => Err(TransportError::NotSubscribed),
        }
    }

    /// One message from this node's channels (requests, replies, its registration notices) or
    /// the events channel (`Leave`).
    pub fn deliver(&self, message: BusMessage) {
        match message {
            BusMessage::Request {
                id,
                from,
                session,
                budget_ms,
            } => self.answer(id, from, session, Duration::from_millis(budget_ms)),
            BusMessage::Reply { id, answer } => {
                // None: a late or duplicate reply, dropped.
                if let Some((_, tx)) = self.lock().remove(&id) {
                    let _ = tx.send(answer);
                }
            }
            BusMessage::Registered { token, node } => {
                if node != self.node
                    && let Some(responder) = self.responder()
                {
                    responder.foreign_registration(&token);
                }
            }
            BusMessage::Leave { node } => {
                if node != self.node {
                    // Dropping the senders fails every request in flight to that node at once.
                    self.lock().retain(|_, (target, _)| *target != node);
                    if let Some(responder) = self.responder() {
                        responder.peer_leaving(&node);
                    }
                    tracing::info!(%node, "peer is leaving");
                }
            }
        }
    }

    /// Answers a peer's request from its own task, so that replies never queue behind one
    /// another's publish. The task runs on the session's worker thread (not on the thread that
    /// delivered the request), which saves two thread wake-ups per request and keeps the
    /// subscriber free to read.
    fn answer(&self, id: u64, from: NodeId, session: SessionId, wait: Duration) {
        let Some(bus) = self.me.upgrade() else {
            return;
        };
        let responder = self.responder();
        let home = responder.as_ref().and_then(|r| r.home(session));
        let task = async move {
            let answer = match responder {
                Some(r) => r.ask_local(session, wait).await.ok(),
                None => None,
            };
            let reply = BusMessage::Reply { id, answer };
            if bus.transport.send(&from, &reply).await.is_ok() {
                bus.metrics.bus_replies.inc();
            }
        };
        match home {
            Some(worker) => drop(worker.spawn(task)),
            // Unknown session: answered "gone" at once, from here.
            None => drop(tokio::spawn(task)),
        }
    }
}

impl Subscriber for Bus {
    fn deliver(&self, message: BusMessage) {
        Bus::deliver(self, message);
    }
}
