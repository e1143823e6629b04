//! Redis pub/sub transport: one channel per node, read by a dedicated subscriber connection
//! (not a pooled one); messages are published on the shared command connections.
//!
//! On one Redis (standalone, or Sentinel's primary) the node channels are classic channels
//! (`PUBLISH`/`SUBSCRIBE`). On a Redis Cluster they are sharded channels (`SPUBLISH`/
//! `SSUBSCRIBE`), each living on the shard of the node id's slot, so that a request costs one
//! shard and not every server of the cluster; the events channel stays classic (a classic
//! publish reaches every shard's subscribers), as does each node's notice channel (published
//! to by `register.lua` from the token's slot, where a sharded channel of another slot cannot
//! be). redis-rs 1.8.1 loses a sharded subscription in
//! cases that hostie works around here, all by rebuilding the subscriber on a fresh cluster
//! connection (fresh slot map): a server-initiated `sunsubscribe` (the shard's primary was
//! demoted, or the slot moved) is taken as final by redis-rs' `SubscriptionTracker`, and
//! subscribing again on the same connection may land on the demoted primary, now a replica,
//! which takes it without `MOVED`; a subscription on a killed primary is never re-homed. So the
//! subscriber is rebuilt on a server-ended subscription, when the heartbeat finds that the
//! cluster's topology changed, and when its probe (an `SPUBLISH` on its own channel every
//! heartbeat interval) stops coming back or reaches no subscriber on the channel's primary.
//! (redis-rs/redis-rs#2242 added the reconnect path; server-ended subscriptions are not
//! handled there as of 1.8.1.) A stale slot map also misleads publishers: see [`spublish`].

use super::{Bus, Transport, TransportError};
use crate::metrics::Metrics;
use crate::model::{BusMessage, NodeId, RedisOp};
use crate::redis_common::{Keys, RedisConns, RedisTopology};
use async_trait::async_trait;
use futures_util::StreamExt;
use redis::{PushKind, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the subscriber publishes on its own channel to see that it still hears it (Cluster).
/// Not a bus message: nobody else subscribes to a node's channel.
const PROBE: &[u8] = b"probe";

/// Subscriber reconnect backoff: starts here, doubles, capped by `MAX_BACKOFF` and by half the
/// probe period (the heartbeat interval). While a node is not subscribed, a request to it
/// reaches no subscriber and peers take its sessions for gone; they answer such a miss with
/// 503, not 404, for one heartbeat TTL (at least two intervals) after their own last failed
/// write. Resubscribing within half an interval of Redis coming back keeps every node back on
/// the bus well inside that window.
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
        settings: SubscriberSettings,
        conns: Arc<RedisConns>,
        keys: Keys,
        node: NodeId,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            settings,
            conns,
            keys,
            node,
            state: Arc::default(),
            metrics,
            subscriber: Mutex::default(),
        }
    }

    /// `PUBLISH` (or `SPUBLISH`: `sharded`) through the shared connections; the number of
    /// subscribers that received it.
    async fn publish(
        &self,
        channel: String,
        message: &BusMessage,
        sharded: bool,
    ) -> Result<usize, TransportError> {
        let payload = message.encode();
        let result = if sharded {
            spublish(&self.conns, channel, payload.into_bytes()).await
        } else {
            self.conns
                .run(|mut conn| async move {
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(payload)
                        .query_async::<i64>(&mut conn)
                        .await
                })
                .await
                .map(|n| n.max(0) as usize)
        };
        match result {
            Ok(n) => Ok(n),
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
            self.conns.clone(),
            self.settings,
            Channels {
                own: self.keys.node_channel(&self.node),
                events: self.keys.events_channel(),
                notices: self.keys.notice_channel(&self.node),
            },
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
        let cluster = self.conns.is_cluster();
        let receivers = self
            .publish(self.keys.node_channel(to), message, cluster)
            .await?;
        // On one standalone Redis, nobody subscribed means the node is gone. Where there is a
        // primary that can change (Sentinel) or one per shard (Cluster), a publish may run on a
        // server the target's subscriber has not moved to yet, or on a replica that took over
        // the shard: "nobody" is then not proof, and the answer is "unavailable" (503) rather
        // than a wrong 404. The target's heartbeat, once run out, hides it instead.
        if receivers == 0 && !matches!(self.conns.topology(), RedisTopology::Standalone { .. }) {
            return Err(TransportError::NoReceiver);
        }
        Ok(receivers)
    }

    async fn broadcast(&self, message: &BusMessage) -> Result<(), TransportError> {
        self.publish(self.keys.events_channel(), message, false)
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

/// `SPUBLISH` on the shared connections; how many subscribers received it. A slot map that
/// has not seen a failover yet sends it to the demoted primary, which answers 0 and no `MOVED`
/// (a replica runs `SPUBLISH` and counts only its own subscribers): on 0, a keyed read in the
/// channel's slot gets the `MOVED` that refreshes the map, and the publish is tried once more.
async fn spublish(
    conns: &RedisConns,
    channel: String,
    payload: Vec<u8>,
) -> Result<usize, crate::redis_common::CommandError> {
    let publish = || {
        let (channel, payload) = (channel.clone(), payload.clone());
        conns.run(|mut conn| async move {
            redis::cmd("SPUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
        })
    };
    let n = publish().await?;
    if n > 0 {
        return Ok(n as usize);
    }
    let key = channel.clone();
    conns
        .run(|mut conn| async move {
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await?;
    Ok(publish().await?.max(0) as usize)
}

/// The channels a node subscribes to.
#[derive(Clone)]
struct Channels {
    own: String,
    events: String,
    /// This node's `registered` notices (classic on every topology).
    notices: String,
}

/// Subscribes to the channels and delivers every message to the bus, resubscribing with
/// backoff whenever the connection is lost, stops answering its probe or the Redis topology
/// changed; ends when the bus is gone.
async fn subscribe_loop(
    conns: Arc<RedisConns>,
    settings: SubscriberSettings,
    channels: Channels,
    state: Arc<Subscription>,
    metrics: Arc<Metrics>,
    bus: Weak<Bus>,
) {
    let max_backoff = MAX_BACKOFF.min(settings.probe_every / 2).max(MIN_BACKOFF);
    let mut backoff = MIN_BACKOFF;
    loop {
        let generation = conns.generation();
        let subscribed =
            tokio::time::timeout(settings.op_timeout, Subscriber::connect(&conns, &channels))
                .await
                .unwrap_or_else(|_| Err("the subscribe did not answer in time".into()));
        match subscribed {
            Ok(subscriber) => {
                state.epoch.fetch_add(1, Ordering::SeqCst);
                state.subscribed.store(true, Ordering::SeqCst);
                backoff = MIN_BACKOFF;
                tracing::info!(channel = %channels.own, "bus subscribed");
                let watch = Watch {
                    conns: &conns,
                    settings,
                    generation,
                    channels: &channels,
                };
                let lost = subscriber.receive(watch, &bus).await;
                state.subscribed.store(false, Ordering::SeqCst);
                state.epoch.fetch_add(1, Ordering::SeqCst);
                let Some(why) = lost else {
                    return;
                };
                metrics.redis_error(RedisOp::Subscribe);
                tracing::warn!(why, "bus subscription lost; resubscribing");
            }
            Err(e) => {
                metrics.redis_error(RedisOp::Subscribe);
                tracing::debug!(error = %e, "bus subscribe failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// What a subscriber watches besides its messages.
struct Watch<'a> {
    conns: &'a RedisConns,
    settings: SubscriberSettings,
    /// The topology generation the subscription was made in.
    generation: u64,
    channels: &'a Channels,
}

impl Watch<'_> {
    fn moved(&self) -> bool {
        self.conns.generation() != self.generation
    }
}

enum Subscriber {
    /// A RESP2 pub/sub connection to one Redis.
    Single(redis::aio::PubSub),
    /// A RESP3 cluster connection whose pushes arrive on the receiver.
    Cluster(
        redis::cluster_async::ClusterConnection,
        tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    ),
}

impl Subscriber {
    async fn connect(conns: &RedisConns, channels: &Channels) -> Result<Self, String> {
        let text =
            |e: crate::redis_common::CommandError| crate::telemetry::ErrorChain(&e).to_string();
        if conns.is_cluster() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let mut conn = conns.cluster_subscriber(tx).await.map_err(text)?;
            conn.ssubscribe(&channels.own)
                .await
                .map_err(|e| e.to_string())?;
            for channel in [&channels.events, &channels.notices] {
                conn.subscribe(channel).await.map_err(|e| e.to_string())?;
            }
            return Ok(Self::Cluster(conn, rx));
        }
        let client = conns.subscriber_client().await.map_err(text)?;
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
        for channel in [&channels.own, &channels.events, &channels.notices] {
            pubsub.subscribe(channel).await.map_err(|e| e.to_string())?;
        }
        Ok(Self::Single(pubsub))
    }

    /// Delivers messages until the subscription is lost (returns why) or the bus is gone
    /// (`None`).
    async fn receive(self, watch: Watch<'_>, bus: &Weak<Bus>) -> Option<&'static str> {
        match self {
            Self::Single(pubsub) => receive_single(pubsub, watch, bus).await,
            Self::Cluster(conn, pushes) => receive_cluster(conn, pushes, watch, bus).await,
        }
    }
}

fn deliver(payload: &[u8], bus: &Weak<Bus>) -> Option<()> {
    match BusMessage::decode(payload) {
        Some(message) => bus.upgrade()?.deliver(message),
        None => tracing::debug!("undecodable bus message dropped"),
    }
    Some(())
}

/// One Redis: a `PING` on the subscriber connection every probe period (a connection that no
/// longer reaches Redis shows no error), and a rebuild when the primary changed (Sentinel).
async fn receive_single(
    pubsub: redis::aio::PubSub,
    watch: Watch<'_>,
    bus: &Weak<Bus>,
) -> Option<&'static str> {
    let settings = watch.settings;
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
                deliver(msg.get_payload_bytes(), bus)?;
            }
            () = watch.conns.moved_notice() => return Some("the Redis primary changed"),
            _ = probe.tick() => {
                if watch.moved() {
                    return Some("the Redis primary changed");
                }
                // Any reply will do (a subscribed RESP2 connection answers `["pong", ""]`).
                let answered = tokio::time::timeout(settings.op_timeout, sink.ping::<Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return Some("the subscriber connection did not answer its probe");
                }
            }
        }
    }
}

/// A Cluster: gives up (to be rebuilt on a fresh slot map) when the server ends a subscription,
/// when the cluster's topology changed, when its probe (published on its own channel every
/// probe period) did not come back for two periods, and when two probes in a row reached no
/// subscriber on the channel's primary (it is subscribed on a replica: it would hear requests
/// whose publishers are told nobody listens).
async fn receive_cluster(
    // Held, not used: the subscriptions live as long as the connection.
    _conn: redis::cluster_async::ClusterConnection,
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    watch: Watch<'_>,
    bus: &Weak<Bus>,
) -> Option<&'static str> {
    let settings = watch.settings;
    let (own, events, notices) = (
        watch.channels.own.as_bytes(),
        watch.channels.events.as_bytes(),
        watch.channels.notices.as_bytes(),
    );
    let mut probe = tokio::time::interval(settings.probe_every);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe.tick().await;
    let mut heard = Instant::now();
    let mut unheard_on_primary = 0;
    let deaf_after = settings.probe_every * 2 + settings.op_timeout;
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else {
                    return Some("the subscriber connection closed");
                };
                let channel = match push.data.first() {
                    Some(Value::BulkString(c)) => c.as_slice(),
                    _ => &[],
                };
                let payload = match push.data.get(1) {
                    Some(Value::BulkString(p)) => Some(p.as_slice()),
                    _ => None,
                };
                match push.kind {
                    PushKind::SMessage | PushKind::Message => match payload {
                        Some(PROBE) if channel == own => heard = Instant::now(),
                        Some(p) => deliver(p, bus)?,
                        None => {}
                    },
                    // The server ended a subscription (the shard's primary was demoted, or the
                    // slot moved). redis-rs takes it as final, and subscribing again on this
                    // connection may land on the demoted primary (its slot map is stale, and a
                    // replica takes SSUBSCRIBE without MOVED): rebuild on a fresh one.
                    PushKind::SUnsubscribe if channel == own => {
                        return Some("the server ended the node channel's subscription");
                    }
                    PushKind::Unsubscribe if channel == events || channel == notices => {
                        return Some("the server ended a classic channel's subscription");
                    }
                    PushKind::Disconnection => return Some("a subscriber connection closed"),
                    _ => {}
                }
            }
            () = watch.conns.moved_notice() => return Some("the Redis Cluster's topology changed"),
            _ = probe.tick() => {
                if watch.moved() {
                    return Some("the Redis Cluster's topology changed");
                }
                if heard.elapsed() > deaf_after {
                    return Some("the subscriber no longer hears its own channel");
                }
                // On the command connections: a reply on the subscriber's own connection could
                // be mistaken for a server-initiated `sunsubscribe` (see the module docs).
                match spublish(watch.conns, watch.channels.own.clone(), PROBE.to_vec()).await {
                    Ok(0) => {
                        unheard_on_primary += 1;
                        if unheard_on_primary >= 2 {
                            return Some("the node channel's primary has no subscriber of it");
                        }
                    }
                    Ok(_) => unheard_on_primary = 0,
                    Err(e) => {
                        tracing::debug!(error = %crate::telemetry::ErrorChain(&e), "bus probe not published");
                    }
                }
            }
        }
    }
}
