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

use deadpool_redis::{Connection, CreatePoolError, Pool};
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

/// A pool of multiplexed Redis connections whose waits, connects and recycles are all bounded
/// by `op_timeout`, so that a hung Redis cannot hold a request past its deadline.
pub fn redis_pool(url: &str, op_timeout: Duration) -> Result<Pool, CreatePoolError> {
    let mut config = deadpool_redis::Config::from_url(url);
    let mut pool = deadpool_redis::PoolConfig::new(POOL_SIZE);
    pool.timeouts.wait = Some(op_timeout);
    pool.timeouts.create = Some(op_timeout);
    pool.timeouts.recycle = Some(op_timeout);
    config.pool = Some(pool);
    config.create_pool(Some(deadpool_redis::Runtime::Tokio1))
}
