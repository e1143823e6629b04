//! The Redis registry: token → session records, node → its members, node heartbeats.
//!
//! Atomic steps are Lua scripts (`lua/*.lua`, each documenting its KEYS and ARGV). Every call
//! is bounded by `op_timeout`, and every failure is counted by operation.
//!
//! The same commands run on every topology (docs/redis.md). Each command and script touches one
//! slot, so that on a Redis Cluster it runs where its key lives; two commands of one operation
//! go out together (one pipeline on one Redis, side by side on a Cluster), one round trip of
//! wall time. Only removing a node's records differs: one atomic script on one Redis, a
//! claim/delete/finish sequence on a Cluster (`lua/claim_node.lua`).

use super::{Admission, Heartbeat, Lookup, NodeStats, Registry, RegistryError};
use crate::metrics::Metrics;
use crate::model::{BusMessage, NodeId, RedisOp, SessionId, SessionRecord, newest_first};
use crate::protocol::TokenHash;
use crate::redis_common::{Conn, Keys, RedisConns, RedisTopology};
use crate::telemetry::ErrorChain;
use async_trait::async_trait;
use redis::{Cmd, Script};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

static REGISTER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/register.lua")));
static HEARTBEAT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/heartbeat.lua")));
static STATS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/stats.lua")));
static REMOVE_NODE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/remove_node.lua")));
static TRACK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/track.lua")));
static CLAIM_NODE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/claim_node.lua")));

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
    /// This node's figures for its next heartbeats (their JSON, and whether it holds sessions:
    /// ARGV[4] and ARGV[5]); none until set.
    stats: Mutex<Option<NodeStats>>,
    /// Whether its last re-assertion worked: the heartbeat script's ARGV[6].
    settled: AtomicBool,
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
            stats: Mutex::default(),
            settled: AtomicBool::new(true),
        }
    }

    /// Runs one Redis operation, bounded and counted.
    async fn run<T, F, Fut>(&self, op: RedisOp, f: F) -> Result<T, RegistryError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.counted(op, self.conns.run(f).await)
    }

    /// Maps a command's failure to the registry's, counted and logged.
    fn counted<T>(
        &self,
        op: RedisOp,
        result: Result<T, crate::redis_common::CommandError>,
    ) -> Result<T, RegistryError> {
        let result = result.map_err(|source| RegistryError::Redis { op, source });
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
        dead: &[NodeId],
    ) -> Result<Admission, RegistryError> {
        let token_key = self.keys.token(&record.token);
        let set_key = self.keys.node_sessions(&record.node);
        let member = Keys::member(&record.token, record.session);
        let notice = BusMessage::Registered {
            token: record.token,
            node: record.node.clone(),
        }
        .encode();
        let (channel_before, channel_after) = self.keys.notice_channel_parts();
        let mut script = REGISTER.prepare_invoke();
        script
            .key(token_key)
            .key(self.keys.readers(&record.token))
            .arg(record.session.to_string())
            .arg(encode(record))
            .arg(max_per_token)
            .arg(&record.node.0)
            .arg(channel_before)
            .arg(channel_after)
            .arg(notice);
        for node in dead {
            script.arg(&node.0);
        }
        let mut sadd = redis::cmd("SADD");
        sadd.arg(&set_key).arg(&member);
        // The script and the member's SADD, side by side: the member is taken back in the rare
        // case of a full token.
        let admitted: i64 = self
            .run(RedisOp::Register, |mut conn| async move {
                let mut other = conn.clone();
                let (admitted, ()) =
                    tokio::try_join!(script.invoke_async(&mut conn), sadd.query_async(&mut other))?;
                Ok(admitted)
            })
            .await?;
        if admitted == 0 {
            self.run(RedisOp::Register, |mut conn| async move {
                redis::cmd("SREM")
                    .arg(set_key)
                    .arg(member)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
            return Ok(Admission::TokenFull);
        }
        Ok(Admission::Admitted {
            shared: admitted == 2,
        })
    }

    /// `track.lua`: the node joins the token's readers set for one heartbeat TTL (the remote
    /// cache's lifetime).
    async fn track(&self, token: &TokenHash, node: &NodeId) -> Result<Duration, RegistryError> {
        let key = self.keys.readers(token);
        let ttl = self.heartbeat_ttl;
        self.run(RedisOp::Track, |mut conn| async move {
            TRACK
                .key(key)
                .arg(&node.0)
                .arg(ttl.as_millis() as u64)
                .invoke_async::<()>(&mut conn)
                .await
        })
        .await?;
        Ok(ttl)
    }

    async fn release(&self, token: &TokenHash, session: SessionId) -> Result<(), RegistryError> {
        let (hdel, srem) = self.removal(token, session, &self.node);
        let result = self.conns.pair::<(), ()>(hdel, srem).await;
        self.counted(RedisOp::Release, result).map(drop)
    }

    /// One plain `HVALS`; on one Redis sent together with this node's own heartbeat score:
    /// the cheapest lookup Redis can serve that also tells whether Redis lost data (this
    /// node's entry is gone). On Sentinel the pipeline also asks `ROLE` (below). On a Cluster
    /// that score would show only the heartbeat shard's loss, at the price of a second server
    /// woken per lookup: there the heartbeat's topology check finds a shard that lost data (a
    /// failover, a restarted primary) for every shard. After any topology change this node
    /// saw, no lookup vouches for a miss for one heartbeat TTL.
    async fn candidates(&self, token: &TokenHash) -> Result<Lookup, RegistryError> {
        let mut hvals = redis::cmd("HVALS");
        hvals.arg(self.keys.token(token));
        let own_score = || {
            let mut zscore = redis::cmd("ZSCORE");
            zscore.arg(self.keys.nodes()).arg(&self.node.0);
            zscore
        };
        let (raw, complete) = match self.conns.topology() {
            RedisTopology::Cluster { .. } => {
                let result = self
                    .run(RedisOp::Lookup, |mut conn| async move {
                        hvals.query_async::<Vec<String>>(&mut conn).await
                    })
                    .await?;
                (result, true)
            }
            RedisTopology::Standalone { .. } => {
                let result = self
                    .conns
                    .pair::<Vec<String>, Option<f64>>(hvals, own_score())
                    .await;
                let (raw, own) = self.counted(RedisOp::Lookup, result)?;
                (raw, own.is_some())
            }
            // Also asks the server's role: a primary that Sentinel demoted serves reads with
            // the new primary's data, without what it took itself before; a connection that
            // still reads from it is dropped (READONLY) and the lookup fails (503).
            RedisTopology::Sentinel { .. } => {
                let zscore = own_score();
                let (raw, own) = self
                    .run(RedisOp::Lookup, |mut conn| async move {
                        let (raw, own, role): (Vec<String>, Option<f64>, Vec<redis::Value>) =
                            redis::pipe()
                                .add_command(hvals)
                                .add_command(zscore)
                                .cmd("ROLE")
                                .query_async(&mut conn)
                                .await?;
                        let primary = role
                            .first()
                            .and_then(|r| redis::from_redis_value_ref::<String>(r).ok())
                            .is_some_and(|r| r == "master");
                        if !primary {
                            return Err(redis::RedisError::from((
                                redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                                "the server read from is no longer the primary",
                            )));
                        }
                        Ok((raw, own))
                    })
                    .await?;
                (raw, own.is_some())
            }
        };
        // Within a TTL of a failover this node noticed, writes taken by the old primary may be
        // missing until every node has re-asserted: no lookup vouches for a miss.
        let complete = complete && !self.conns.moved_within(self.heartbeat_ttl);
        let mut records: Vec<SessionRecord> = raw
            .iter()
            .filter_map(|json| serde_json::from_str::<SessionRecord>(json).ok())
            .collect();
        newest_first(&mut records);
        Ok(Lookup { records, complete })
    }

    /// `ZSCORE` of the owner; when it has no entry, `HDEL` of the record (fenced by session
    /// id) and `SREM` of its member, together.
    async fn drop_orphan(&self, record: &SessionRecord) -> Result<bool, RegistryError> {
        if self
            .heartbeat_score(&record.node, RedisOp::Lookup)
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let (hdel, srem) = self.removal(&record.token, record.session, &record.node);
        let result = self.conns.pair::<i64, i64>(hdel, srem).await;
        let (removed, _) = self.counted(RedisOp::Sweep, result)?;
        if removed > 0 {
            self.metrics.swept_records.inc();
            tracing::info!(owner = %record.node, "removed a record whose node is gone from the heartbeats");
        }
        Ok(true)
    }

    async fn release_node(&self, node: &NodeId) -> Result<(), RegistryError> {
        self.remove_node(node, true, RedisOp::Drain).await.map(drop)
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
        let (nodes_key, stats_key) = (self.keys.nodes(), self.keys.node_stats());
        let unsettled_key = self.keys.node_unsettled();
        let ttl_ms = self.heartbeat_ttl.as_millis() as u64;
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let flag = |b: bool| if b { "1" } else { "0" };
        let has_sessions = flag(stats.as_ref().is_some_and(|s| s.sessions > 0));
        let settled = flag(self.settled.load(Ordering::Relaxed));
        let figures = stats.map_or_else(String::new, |s| {
            serde_json::to_string(&s).expect("figures of strings and numbers serialize")
        });
        let beat = self.run(RedisOp::Heartbeat, |mut conn| async move {
            HEARTBEAT
                .key(nodes_key)
                .key(stats_key)
                .key(unsettled_key)
                .arg(&node.0)
                .arg(ttl_ms)
                .arg(DEAD_PER_BEAT)
                .arg(figures)
                .arg(has_sessions)
                .arg(settled)
                .invoke_async::<Vec<redis::Value>>(&mut conn)
                .await
        });
        // Where the data lives, asked beside the beat: a new primary (or a restarted one) may have
        // lost recent writes (replication is asynchronous) and carries stale heartbeats.
        let (reply, watched) = tokio::join!(beat, self.conns.watch_topology());
        // Sentinels that do not answer (or Cluster primaries that cannot say who they are) do not make
        // the beat fail: the data path works, and the check runs again next beat.
        if let Err(e) = watched {
            tracing::debug!(error = %ErrorChain(&e), "cannot check the Redis topology");
        }
        // Seen by this check or, since the last beat, by Sentinel's notice.
        let moved = self.conns.take_moved();
        if moved {
            self.metrics.redis_topology_changes.inc();
            tracing::warn!(
                topology = self.conns.topology().name(),
                "Redis topology changed (failover or slot move): re-asserting every session"
            );
        }
        // A beat that failed (it reached the demoted primary, say) is followed by a full
        // re-assertion anyway, and judges no peer for a TTL.
        let reply = reply?;
        let int = |v: Option<&redis::Value>| match v {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        };
        let dead: Vec<NodeId> = reply
            .iter()
            .skip(3)
            .filter_map(|v| redis::from_redis_value_ref::<String>(v).ok())
            .map(NodeId)
            .collect();
        Ok(Heartbeat {
            fresh: int(reply.first()) == 1 || moved,
            alive: int(reply.get(1)).max(0) as usize,
            unsettled: int(reply.get(2)).max(0) as usize,
            dead,
        })
    }

    fn set_stats(&self, _node: &NodeId, stats: &NodeStats) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats.clone());
    }

    fn set_settled(&self, settled: bool) {
        self.settled.store(settled, Ordering::Relaxed);
    }

    async fn cluster_stats(&self) -> Result<Vec<(NodeId, NodeStats)>, RegistryError> {
        let (nodes_key, stats_key) = (self.keys.nodes(), self.keys.node_stats());
        let pairs: Vec<(String, String)> = self
            .run(RedisOp::Stats, |mut conn| async move {
                STATS
                    .key(nodes_key)
                    .key(stats_key)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        // Figures a node of another version wrote in another shape are left out, not fatal.
        let mut out: Vec<(NodeId, NodeStats)> = pairs
            .into_iter()
            .filter_map(|(node, json)| Some((NodeId(node), serde_json::from_str(&json).ok()?)))
            .collect();
        out.sort_by(|a, b| a.0.0.cmp(&b.0.0));
        Ok(out)
    }

    async fn sweep(&self, dead: &NodeId) -> Result<usize, RegistryError> {
        let removed = self.remove_node(dead, false, RedisOp::Sweep).await?;
        Ok(removed.max(0) as usize)
    }

    async fn reassert(&self, records: &[SessionRecord]) -> Result<(), RegistryError> {
        for chunk in records.chunks(REASSERT_CHUNK) {
            let mut commands = Vec::with_capacity(chunk.len() + 1);
            let mut members: HashMap<&NodeId, Vec<String>> = HashMap::new();
            for r in chunk {
                let mut hset = redis::cmd("HSET");
                hset.arg(self.keys.token(&r.token))
                    .arg(r.session.to_string())
                    .arg(encode(r));
                commands.push(hset);
                members
                    .entry(&r.node)
                    .or_default()
                    .push(Keys::member(&r.token, r.session));
            }
            for (node, members) in members {
                let mut sadd = redis::cmd("SADD");
                sadd.arg(self.keys.node_sessions(node)).arg(members);
                commands.push(sadd);
            }
            let result = self.conns.batch(commands).await;
            self.counted(RedisOp::Reassert, result)?;
        }
        Ok(())
    }
}

impl RedisRegistry {
    /// Whether `node`'s heartbeat entry is still the claim marker of a sweep (score 0).
    async fn still_claimed(&self, node: &NodeId, op: RedisOp) -> Result<bool, RegistryError> {
        Ok(self.heartbeat_score(node, op).await? == Some(0.0))
    }

    /// `node`'s entry in the heartbeats: alive-until in ms, 0 for a sweep's claim, `None`
    /// when it has none.
    async fn heartbeat_score(
        &self,
        node: &NodeId,
        op: RedisOp,
    ) -> Result<Option<f64>, RegistryError> {
        let key = self.keys.nodes();
        self.run(op, |mut conn| async move {
            redis::cmd("ZSCORE")
                .arg(key)
                .arg(&node.0)
                .query_async(&mut conn)
                .await
        })
        .await
    }

    /// The two deletes of one session's record: its field in the token's hash and its member
    /// in `node`'s set (two slots on a Cluster).
    fn removal(&self, token: &TokenHash, session: SessionId, node: &NodeId) -> (Cmd, Cmd) {
        let mut hdel = redis::cmd("HDEL");
        hdel.arg(self.keys.token(token)).arg(session.to_string());
        let mut srem = redis::cmd("SREM");
        srem.arg(self.keys.node_sessions(node))
            .arg(Keys::member(token, session));
        (hdel, srem)
    }

    /// Removes every record of `node`: `force` for its own drain, else only while it is dead.
    /// Returns the records removed, or -1 when the node is alive again.
    async fn remove_node(
        &self,
        node: &NodeId,
        force: bool,
        op: RedisOp,
    ) -> Result<i64, RegistryError> {
        let (nodes_key, set_key) = (self.keys.nodes(), self.keys.node_sessions(node));
        if !self.conns.is_cluster() {
            let prefix = self.keys.token_prefix();
            let mode = if force { "force" } else { "dead" };
            return self
                .run(op, |mut conn| async move {
                    REMOVE_NODE
                        .key(nodes_key)
                        .key(set_key)
                        .arg(&node.0)
                        .arg(prefix)
                        .arg(mode)
                        .invoke_async(&mut conn)
                        .await
                })
                .await;
        }
        // A Cluster: claim, delete token by token, finish. A sweep cut short leaves the claim
        // marker, so the node stays reported dead and the next sweep resumes; a node that
        // comes back meanwhile finds the marker and re-asserts (twice: the deletes may still
        // be running).
        let step = |mode: &'static str| {
            let nodes_key = nodes_key.clone();
            self.run(op, move |mut conn| async move {
                CLAIM_NODE
                    .key(nodes_key)
                    .arg(&node.0)
                    .arg(mode)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
        };
        if !force && step("claim").await? < 0 {
            return Ok(-1);
        }
        let set = set_key.clone();
        let members: Vec<String> = self
            .run(op, |mut conn| async move {
                redis::cmd("SMEMBERS").arg(set).query_async(&mut conn).await
            })
            .await?;
        let prefix = self.keys.token_prefix();
        let mut removed = 0;
        // In chunks, each removed from the set once its records are gone, so that a sweep cut
        // short resumes where it stopped; and before each chunk after the first, the claim is
        // checked again: a node that came back meanwhile keeps what is left.
        for (i, chunk) in members.chunks(REASSERT_CHUNK).enumerate() {
            if !force && i > 0 && !self.still_claimed(node, op).await? {
                return Ok(removed);
            }
            let mut by_token: HashMap<&str, Vec<&str>> = HashMap::new();
            for m in chunk {
                if let Some((hash, session)) = m.split_once(':') {
                    by_token.entry(hash).or_default().push(session);
                }
            }
            let commands = by_token
                .into_iter()
                .map(|(hash, sessions)| {
                    let mut hdel = redis::cmd("HDEL");
                    hdel.arg(format!("{prefix}{hash}}}")).arg(sessions);
                    hdel
                })
                .collect();
            removed += self.counted(op, self.conns.batch(commands).await)?;
            let (set, chunk) = (set_key.clone(), chunk.to_vec());
            self.run(op, |mut conn| async move {
                redis::cmd("SREM")
                    .arg(set)
                    .arg(chunk)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        }
        if !force && !self.still_claimed(node, op).await? {
            return Ok(removed);
        }
        self.run(op, |mut conn| async move {
            redis::cmd("DEL")
                .arg(set_key)
                .query_async::<()>(&mut conn)
                .await
        })
        .await?;
        step(if force { "leave" } else { "finish" }).await?;
        Ok(removed)
    }
}
