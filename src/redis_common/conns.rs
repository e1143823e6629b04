//! Redis command connections: created by the deadpool-redis pool, then shared.
//!
//! deadpool-redis checks every connection it hands out with an `UNWATCH`+`PING` round trip,
//! which would double the Redis round trips of every discovery (the budget in docs/redis.md:
//! lookup, request publish, reply publish). A `MultiplexedConnection` is built to be shared by many tasks, so
//! the node keeps a few of them, taken from the pool once, and drops one only when it fails;
//! the next command gets a fresh one from the pool (whose connect is bounded by its timeouts).
//!
//! Each thread sticks to one slot. A connection's driver task runs on the runtime of the thread
//! that created it, so a worker thread that always uses "its" connection never wakes another
//! thread to reach Redis (the profile showed those wake-ups as the largest cost).

use deadpool_redis::{Connection, Pool};
use redis::aio::MultiplexedConnection;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Connections the pool may open (commands and publishes; the subscriber has its own).
const POOL_SIZE: usize = 16;

/// Shared connections per node: one per thread that talks to Redis (HTTP workers, the main
/// runtime), modulo this.
const SHARED: usize = 4;

thread_local! {
    /// This thread's slot, assigned round-robin on first use.
    static SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

fn my_slot() -> usize {
    SLOT.with(|slot| match slot.get() {
        Some(i) => i,
        None => {
            let i = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SHARED;
            slot.set(Some(i));
            i
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no Redis connection")]
    Connect(#[source] deadpool_redis::PoolError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
}

pub struct RedisConns {
    pool: Pool,
    slots: [Mutex<Option<MultiplexedConnection>>; SHARED],
    op_timeout: Duration,
}

impl RedisConns {
    pub fn new(pool: Pool, op_timeout: Duration) -> Self {
        Self {
            pool,
            slots: Default::default(),
            op_timeout,
        }
    }

    fn slot(&self, i: usize) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        // The slot holds an Option that is replaced whole: never half-written.
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connection(&self, i: usize) -> Result<MultiplexedConnection, CommandError> {
        if let Some(conn) = self.slot(i).clone() {
            return Ok(conn);
        }
        let fresh = Connection::take(self.pool.get().await.map_err(CommandError::Connect)?);
        *self.slot(i) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Runs one command (or pipeline, or script) on a shared connection, bounded by the
    /// operation timeout. A connection that failed or hung is dropped.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, CommandError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let i = my_slot();
        let attempt = async {
            let conn = self.connection(i).await?;
            f(conn).await.map_err(CommandError::from)
        };
        let result = tokio::time::timeout(self.op_timeout, attempt)
            .await
            .unwrap_or(Err(CommandError::Timeout(self.op_timeout)));
        let broken = match &result {
            Err(CommandError::Redis(e)) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
            }
            Err(CommandError::Timeout(_)) => true,
            _ => false,
        };
        if broken {
            self.slot(i).take();
        }
        result
    }
}

/// A pool of multiplexed Redis connections whose waits, connects, recycles and replies are all
/// bounded by `op_timeout`, so that a hung Redis cannot hold a request past its deadline.
///
/// The redis crate bounds every reply by its own default response timeout (500 ms in 1.x) and
/// every connect by another (1 s); deadpool-redis' `Config::create_pool` keeps those defaults.
/// Both are set here to hostie's one Redis deadline (`--redis-timeout`) through
/// `Manager::new_with_config`, so that no limit but that one decides when Redis is too slow.
pub fn redis_pool(url: &str, op_timeout: Duration) -> Result<Pool, RedisPoolError> {
    let manager = deadpool_redis::Manager::new_with_config(url, connection_config(op_timeout))
        .map_err(RedisPoolError::Url)?;
    let timeouts = deadpool_redis::Timeouts {
        wait: Some(op_timeout),
        create: Some(op_timeout),
        recycle: Some(op_timeout),
    };
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .timeouts(timeouts)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(RedisPoolError::Build)
}

/// Connection settings with hostie's Redis deadline in place of the redis crate's defaults.
pub fn connection_config(op_timeout: Duration) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(op_timeout))
        .set_response_timeout(Some(op_timeout))
}

#[derive(Debug, thiserror::Error)]
pub enum RedisPoolError {
    #[error("invalid Redis URL")]
    Url(#[source] redis::RedisError),
    #[error("cannot build the connection pool")]
    Build(#[source] deadpool_redis::BuildError),
}
