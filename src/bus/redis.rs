//! Redis pub/sub bus: one channel per node, read by a dedicated subscriber connection;
//! requests and replies are published on the shared command connections, each from its own task
//! (a request's answer from a task on its session's worker thread), so that no reply waits for
//! another's PUBLISH.
//!
//! Every request follows one discipline: the pending slot is registered before the PUBLISH, a
//! PUBLISH that reached no subscriber fails over at once, the wait is bounded, the slot is
//! removed on drop by a guard, and late or duplicate replies are dropped silently.

use super::message::BusMessage;
use super::{Bus, BusError, PortResponder};
use crate::hub::PortAnswer;
use crate::metrics::{BusResult, Metrics, RedisOp};
use crate::redis_conn::RedisConns;
use crate::registry::keys::Keys;
use crate::registry::{NodeId, SessionId};
use async_trait::async_trait;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Request id → (target node, where its reply goes).
type PendingMap = HashMap<u64, (NodeId, oneshot::Sender<Option<PortAnswer>>)>;

/// Subscriber reconnect backoff: starts here, doubles, capped by `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

struct Shared {
    conns: Arc<RedisConns>,
    keys: Keys,
    node: NodeId,
    pending: Mutex<PendingMap>,
    subscribed: AtomicBool,
    /// Incremented on every successful subscribe: notices sent while unsubscribed are lost.
    epoch: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingMap> {
        // Single inserts/removes only: consistent even after a panic elsewhere.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// PUBLISH through the pool; the number of subscribers that received it.
    async fn publish(&self, channel: String, msg: &BusMessage) -> Result<i64, BusError> {
        let payload = msg.encode();
        let result = self
            .conns
            .run(|mut conn| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await;
        result.map_err(|e| {
            self.metrics.redis_error(RedisOp::Publish);
            BusError::Unavailable(e.to_string())
        })
    }
}

pub struct RedisBus {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    subscriber: JoinHandle<()>,
}

/// Removes a pending slot however the request ends.
struct SlotGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().remove(&self.id);
    }
}

impl RedisBus {
    /// Starts the subscriber for this node's channel and the cluster events channel.
    pub fn start(
        client: redis::Client,
        conns: Arc<RedisConns>,
        keys: Keys,
        node: NodeId,
        responder: Weak<dyn PortResponder>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let shared = Arc::new(Shared {
            conns,
            keys,
            node,
            pending: Mutex::default(),
            subscribed: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            metrics,
        });
        let subscriber = tokio::spawn(subscribe_loop(client, shared.clone(), responder));
        Self {
            shared,
            next_id: AtomicU64::new(1),
            subscriber,
        }
    }

    /// Whether the subscription is live right now.
    pub fn is_subscribed(&self) -> bool {
        self.shared.subscribed.load(Ordering::SeqCst)
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

async fn subscribe_loop(
    client: redis::Client,
    shared: Arc<Shared>,
    responder: Weak<dyn PortResponder>,
) {
    let own = shared.keys.node_channel(&shared.node);
    let events = shared.keys.events_channel();
    let mut backoff = MIN_BACKOFF;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&own).await?;
            pubsub.subscribe(&events).await?;
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(MAX_BACKOFF * 2, subscribed).await {
            Ok(Ok(pubsub)) => {
                shared.epoch.fetch_add(1, Ordering::SeqCst);
                shared.subscribed.store(true, Ordering::SeqCst);
                backoff = MIN_BACKOFF;
                tracing::info!(channel = %own, "bus subscribed");
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Some(message) = BusMessage::decode(msg.get_payload_bytes()) else {
                        tracing::debug!("undecodable bus message dropped");
                        continue;
                    };
                    let Some(responder) = responder.upgrade() else {
                        return;
                    };
                    dispatch(&shared, responder, message);
                }
                shared.subscribed.store(false, Ordering::SeqCst);
                shared.epoch.fetch_add(1, Ordering::SeqCst);
                shared.metrics.redis_error(RedisOp::Subscribe);
                tracing::warn!("bus subscription lost; resubscribing");
            }
            Ok(Err(e)) => {
                shared.metrics.redis_error(RedisOp::Subscribe);
                tracing::debug!(error = %e, "bus subscribe failed");
            }
            Err(_) => shared.metrics.redis_error(RedisOp::Subscribe),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn dispatch(shared: &Arc<Shared>, responder: Arc<dyn PortResponder>, message: BusMessage) {
    match message {
        BusMessage::Request {
            id,
            from,
            session,
            budget_ms,
        } => {
            let shared = shared.clone();
            // Each reply from its own task, so that replies never queue behind one another's
            // PUBLISH; the task runs on the session's worker thread (not on this subscriber's),
            // which saves two thread wake-ups per request and keeps this thread free to read.
            let home = responder.home(session);
            let task = async move {
                let budget = Duration::from_millis(budget_ms);
                let answer = responder.ask_local(session, budget).await.ok();
                let reply = BusMessage::Reply { id, answer };
                if shared
                    .publish(shared.keys.node_channel(&from), &reply)
                    .await
                    .is_ok()
                {
                    shared.metrics.bus_replies.inc();
                }
            };
            match home {
                Some(worker) => drop(worker.spawn(task)),
                // Unknown session: answered "gone" at once, from here.
                None => drop(tokio::spawn(task)),
            }
        }
        BusMessage::Reply { id, answer } => {
            if let Some((_, tx)) = shared.lock().remove(&id) {
                let _ = tx.send(answer);
            }
        }
        BusMessage::Registered { token, node } => {
            if node != shared.node {
                responder.foreign_registration(&token);
            }
        }
        BusMessage::Leave { node } => {
            if node != shared.node {
                // Dropping the senders fails every request in flight to that node at once.
                shared.lock().retain(|_, (target, _)| *target != node);
                responder.peer_leaving(&node);
                tracing::info!(%node, "peer is leaving");
            }
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn ask_port(
        &self,
        target: &NodeId,
        session: SessionId,
        budget: Duration,
    ) -> Result<PortAnswer, BusError> {
        let shared = &self.shared;
        let started = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        shared.lock().insert(id, (target.clone(), tx));
        let _slot = SlotGuard { shared, id };
        // The owner gets a little less than our budget so its answer (a fallback port, at
        // worst) arrives before we give up.
        let owner_budget = budget.saturating_sub((budget / 10).max(Duration::from_millis(2)));
        let request = BusMessage::Request {
            id,
            from: shared.node.clone(),
            session,
            budget_ms: owner_budget.as_millis() as u64,
        };
        let outcome = async {
            let receivers = shared
                .publish(shared.keys.node_channel(target), &request)
                .await?;
            if receivers == 0 {
                shared.metrics.bus_no_subscriber.inc();
                return Err(BusError::NodeGone(target.clone()));
            }
            match rx.await {
                Ok(Some(answer)) => Ok(answer),
                Ok(None) => Err(BusError::SessionGone),
                Err(_) => Err(BusError::NodeGone(target.clone())),
            }
        };
        let result = tokio::time::timeout(budget, outcome)
            .await
            .unwrap_or(Err(BusError::Timeout));
        let label = match &result {
            Ok(_) => BusResult::Ok,
            Err(BusError::SessionGone) => BusResult::SessionGone,
            Err(BusError::NodeGone(_)) => BusResult::NoSubscriber,
            Err(BusError::Timeout) => BusResult::Timeout,
            Err(BusError::Unavailable(_)) => BusResult::Error,
        };
        shared.metrics.bus_request(label);
        if result.is_ok() {
            shared
                .metrics
                .bus_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn leave(&self) -> Result<(), BusError> {
        let shared = &self.shared;
        let leave = BusMessage::Leave {
            node: shared.node.clone(),
        };
        shared
            .publish(shared.keys.events_channel(), &leave)
            .await
            .map(drop)
    }

    fn notice_epoch(&self) -> Option<u64> {
        // Read the epoch first: a drop after this read changes it, which the caller compares.
        let epoch = self.shared.epoch.load(Ordering::SeqCst);
        self.is_subscribed().then_some(epoch)
    }

    async fn check(&self) -> Result<(), BusError> {
        if self.is_subscribed() {
            Ok(())
        } else {
            Err(BusError::Unavailable(
                "not subscribed to this node's channel".into(),
            ))
        }
    }
}
