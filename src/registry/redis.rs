//! The Redis registry: token → session records, node → its members, node heartbeats.
//!
//! Atomic steps are Lua scripts (`lua/*.lua`, each documenting its KEYS and ARGV). Every call
//! is bounded by `op_timeout`, and every failure is counted by operation.

use super::{Admission, Heartbeat, Lookup, Registry, RegistryError};
use crate::metrics::Metrics;
use crate::model::{BusMessage, NodeId, RedisOp, SessionId, SessionRecord, newest_first};
use crate::protocol::TokenHash;
use crate::redis_common::{Keys, RedisConns};
use crate::telemetry::ErrorChain;
use async_trait::async_trait;
use redis::Script;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

static REGISTER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/register.lua")));
static HEARTBEAT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/heartbeat.lua")));
static REMOVE_NODE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/remove_node.lua")));

/// How many dead nodes one heartbeat reports (to hide from lookups and to sweep).
const DEAD_PER_BEAT: usize = 64;
/// Records per pipeline when re-asserting (bounds one Redis reply and one round trip).
const REASSERT_CHUNK: usize = 1000;

pub struct RedisRegistry {
    conns: Arc<RedisConns>,
    keys: Keys,
    node: NodeId,
    heartbeat_ttl: Duration,
    metrics: Arc<Metrics>,
}

impl RedisRegistry {
    pub fn new(
        conns: Arc<RedisConns>,
        keys: Keys,
        node: NodeId,
        heartbeat_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            conns,
            keys,
            node,
            heartbeat_ttl,
            metrics,
        }
    }

    /// Runs one Redis operation, bounded and counted.
    async fn run<T, F, Fut>(&self, op: RedisOp, f: F) -> Result<T, RegistryError>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let result = self
            .conns
            .run(f)
            .await
            .map_err(|source| RegistryError::Redis { op, source });
        if let Err(e) = &result {
            self.metrics.redis_error(op);
            tracing::debug!(error = %ErrorChain(e), "redis operation failed");
        }
        result
    }
}

fn encode(record: &SessionRecord) -> String {
    serde_json::to_string(record).expect("a record of strings and integers always serializes")
}

#[async_trait]
impl Registry for RedisRegistry {
    async fn register(
        &self,
        record: &SessionRecord,
        max_per_token: usize,
    ) -> Result<Admission, RegistryError> {
        let (token_key, set_key, nodes_key) = (
            self.keys.token(&record.token),
            self.keys.node_sessions(&record.node),
            self.keys.nodes(),
        );
        let (session, json) = (record.session.to_string(), encode(record));
        let member = Keys::member(&record.token, record.session);
        let notice = BusMessage::Registered {
            token: record.token,
            node: record.node.clone(),
        }
        .encode();
        let events = self.keys.events_channel();
        let admitted: i64 = self
            .run(RedisOp::Register, |mut conn| async move {
                REGISTER
                    .key(token_key)
                    .key(set_key)
                    .key(nodes_key)
                    .arg(session)
                    .arg(json)
                    .arg(max_per_token)
                    .arg(member)
                    .arg(&record.node.0)
                    .arg(events)
                    .arg(notice)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(match admitted {
            0 => Admission::TokenFull,
            n => Admission::Admitted { shared: n == 2 },
        })
    }

    async fn release(&self, token: &TokenHash, session: SessionId) -> Result<(), RegistryError> {
        let (token_key, set_key) = (self.keys.token(token), self.keys.node_sessions(&self.node));
        let member = Keys::member(token, session);
        self.run(RedisOp::Release, |mut conn| async move {
            redis::pipe()
                .hdel(token_key, session.to_string())
                .ignore()
                .srem(set_key, member)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    /// One plain `HVALS`, pipelined with this node's own heartbeat score: the cheapest lookup
    /// Redis can serve that also tells whether Redis lost data (this node's entry is gone).
    async fn candidates(&self, token: &TokenHash) -> Result<Lookup, RegistryError> {
        let (token_key, nodes_key) = (self.keys.token(token), self.keys.nodes());
        let (raw, own): (Vec<String>, Option<f64>) = self
            .run(RedisOp::Lookup, |mut conn| async move {
                redis::pipe()
                    .cmd("HVALS")
                    .arg(token_key)
                    .zscore(nodes_key, &self.node.0)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let mut records: Vec<SessionRecord> = raw
            .iter()
            .filter_map(|json| serde_json::from_str::<SessionRecord>(json).ok())
            .collect();
        newest_first(&mut records);
        Ok(Lookup {
            records,
            complete: own.is_some(),
        })
    }

    async fn release_node(&self, node: &NodeId) -> Result<(), RegistryError> {
        self.remove_node(node, "force", RedisOp::Drain)
            .await
            .map(drop)
    }

    /// A `SET` of this node's probe key, expiring after a minute.
    async fn check(&self) -> Result<(), RegistryError> {
        let key = self.keys.probe(&self.node);
        self.run(RedisOp::Probe, |mut conn| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("PX")
                .arg(60_000)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn heartbeat(&self, node: &NodeId) -> Result<Heartbeat, RegistryError> {
        let nodes_key = self.keys.nodes();
        let ttl_ms = self.heartbeat_ttl.as_millis() as u64;
        let reply: Vec<redis::Value> = self
            .run(RedisOp::Heartbeat, |mut conn| async move {
                HEARTBEAT
                    .key(nodes_key)
                    .arg(&node.0)
                    .arg(ttl_ms)
                    .arg(DEAD_PER_BEAT)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let int = |v: Option<&redis::Value>| match v {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        };
        let dead: Vec<NodeId> = reply
            .iter()
            .skip(2)
            .filter_map(|v| redis::from_redis_value_ref::<String>(v).ok())
            .map(NodeId)
            .collect();
        Ok(Heartbeat {
            fresh: int(reply.first()) == 1,
            alive: int(reply.get(1)).max(0) as usize,
            dead,
        })
    }

    async fn sweep(&self, dead: &NodeId) -> Result<usize, RegistryError> {
        let removed = self.remove_node(dead, "dead", RedisOp::Sweep).await?;
        Ok(removed.max(0) as usize)
    }

    async fn reassert(&self, records: &[SessionRecord]) -> Result<(), RegistryError> {
        for chunk in records.chunks(REASSERT_CHUNK) {
            let mut pipe = redis::pipe();
            for r in chunk {
                pipe.hset(self.keys.token(&r.token), r.session.to_string(), encode(r))
                    .ignore()
                    .sadd(
                        self.keys.node_sessions(&r.node),
                        Keys::member(&r.token, r.session),
                    )
                    .ignore();
            }
            self.run(RedisOp::Reassert, |mut conn| async move {
                pipe.query_async::<()>(&mut conn).await
            })
            .await?;
        }
        Ok(())
    }
}

impl RedisRegistry {
    async fn remove_node(
        &self,
        node: &NodeId,
        mode: &str,
        op: RedisOp,
    ) -> Result<i64, RegistryError> {
        let (nodes_key, set_key, prefix) = (
            self.keys.nodes(),
            self.keys.node_sessions(node),
            self.keys.token_prefix(),
        );
        self.run(op, |mut conn| async move {
            REMOVE_NODE
                .key(nodes_key)
                .key(set_key)
                .arg(&node.0)
                .arg(prefix)
                .arg(mode)
                .invoke_async(&mut conn)
                .await
        })
        .await
    }
}
