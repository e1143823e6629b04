//! Redis pub/sub transport: one channel per node, read by a dedicated subscriber connection
//! (not a pooled one); messages are published on the shared command connections.

use super::{Bus, Transport, TransportError};
use crate::metrics::Metrics;
use crate::model::{BusMessage, NodeId, RedisOp};
use crate::redis_common::{Keys, RedisConns};
use async_trait::async_trait;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Subscriber reconnect backoff: starts here, doubles, capped by `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How the subscriber connection is watched.
#[derive(Debug, Clone, Copy)]
pub struct SubscriberSettings {
    /// Bounds the subscribe and each probe (`--redis-timeout`).
    pub op_timeout: Duration,
    /// How often the subscriber connection is probed with a `PING` on it: a connection that no
    /// longer reaches Redis (a partition keeps both ends' sockets open) delivers no message and
    /// shows no error, so only a probe finds it dead (the heartbeat interval).
    pub probe_every: Duration,
}

pub struct RedisTransport {
    client: redis::Client,
    settings: SubscriberSettings,
    conns: Arc<RedisConns>,
    keys: Keys,
    node: NodeId,
    state: Arc<Subscription>,
    metrics: Arc<Metrics>,
    subscriber: Mutex<Option<JoinHandle<()>>>,
}

/// The subscriber's state, read by the node: whether it is subscribed, and under which epoch.
#[derive(Default)]
struct Subscription {
    subscribed: AtomicBool,
    /// Incremented on every subscribe and every loss: notices sent while unsubscribed are lost.
    epoch: AtomicU64,
}

impl RedisTransport {
    pub fn new(
        client: redis::Client,
        settings: SubscriberSettings,
        conns: Arc<RedisConns>,
        keys: Keys,
        node: NodeId,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            settings,
            conns,
            keys,
            node,
            state: Arc::default(),
            metrics,
            subscriber: Mutex::default(),
        }
    }

    /// PUBLISH through the shared connections; the number of subscribers that received it.
    async fn publish(
        &self,
        channel: String,
        message: &BusMessage,
    ) -> Result<usize, TransportError> {
        let payload = message.encode();
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
        match result {
            Ok(n) => Ok(n.max(0) as usize),
            Err(e) => {
                self.metrics.redis_error(RedisOp::Publish);
                Err(TransportError::Redis(e))
            }
        }
    }
}

impl Drop for RedisTransport {
    fn drop(&mut self) {
        if let Some(task) = self
            .subscriber
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

#[async_trait]
impl Transport for RedisTransport {
    fn attach(&self, bus: Weak<Bus>) {
        let task = tokio::spawn(subscribe_loop(
            self.client.clone(),
            self.settings,
            [
                self.keys.node_channel(&self.node),
                self.keys.events_channel(),
            ],
            self.state.clone(),
            self.metrics.clone(),
            bus,
        ));
        let old = self
            .subscriber
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(task);
        if let Some(old) = old {
            old.abort();
        }
    }

    async fn send(&self, to: &NodeId, message: &BusMessage) -> Result<usize, TransportError> {
        self.publish(self.keys.node_channel(to), message).await
    }

    async fn broadcast(&self, message: &BusMessage) -> Result<(), TransportError> {
        self.publish(self.keys.events_channel(), message)
            .await
            .map(drop)
    }

    fn epoch(&self) -> Option<u64> {
        // Read the epoch first: a drop after this read changes it, which the caller compares.
        let epoch = self.state.epoch.load(Ordering::SeqCst);
        self.state
            .subscribed
            .load(Ordering::SeqCst)
            .then_some(epoch)
    }
}

/// Subscribes to `channels` and delivers every message to the bus, resubscribing with backoff
/// whenever the connection is lost or stops answering its probe; ends when the bus is gone.
async fn subscribe_loop(
    client: redis::Client,
    settings: SubscriberSettings,
    channels: [String; 2],
    state: Arc<Subscription>,
    metrics: Arc<Metrics>,
    bus: Weak<Bus>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            for channel in &channels {
                pubsub.subscribe(channel).await?;
            }
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(settings.op_timeout, subscribed).await {
            Ok(Ok(pubsub)) => {
                state.epoch.fetch_add(1, Ordering::SeqCst);
                state.subscribed.store(true, Ordering::SeqCst);
                backoff = MIN_BACKOFF;
                tracing::info!(channel = %channels[0], "bus subscribed");
                let lost = receive(pubsub, settings, &bus).await;
                state.subscribed.store(false, Ordering::SeqCst);
                state.epoch.fetch_add(1, Ordering::SeqCst);
                let Some(why) = lost else {
                    return;
                };
                metrics.redis_error(RedisOp::Subscribe);
                tracing::warn!(why, "bus subscription lost; resubscribing");
            }
            Ok(Err(e)) => {
                metrics.redis_error(RedisOp::Subscribe);
                tracing::debug!(error = %crate::telemetry::ErrorChain(&e), "bus subscribe failed");
            }
            Err(_) => metrics.redis_error(RedisOp::Subscribe),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Delivers messages until the subscription is lost (returns why) or the bus is gone (`None`).
async fn receive(
    pubsub: redis::aio::PubSub,
    settings: SubscriberSettings,
    bus: &Weak<Bus>,
) -> Option<&'static str> {
    let (mut sink, mut messages) = pubsub.split();
    let mut probe = tokio::time::interval(settings.probe_every);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe.tick().await;
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Some("the subscriber connection closed");
                };
                let Some(message) = BusMessage::decode(msg.get_payload_bytes()) else {
                    tracing::debug!("undecodable bus message dropped");
                    continue;
                };
                bus.upgrade()?.deliver(message);
            }
            _ = probe.tick() => {
                // Any reply will do (a subscribed RESP2 connection answers `["pong", ""]`).
                let answered = tokio::time::timeout(settings.op_timeout, sink.ping::<redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return Some("the subscriber connection did not answer its probe");
                }
            }
        }
    }
}
