//! What the Redis registry and the Redis bus share, as the in-memory ones share a
//! [`crate::memory_broker::MemoryBroker`]: the command connections ([`conns`]) and the name of
//! every key and channel ([`keys`], whose meaning and encoding `docs/redis.md` describes).

pub mod conns;
pub mod keys;

pub use crate::config::redis_url::RedisTopology;
pub use conns::{CommandError, Conn, RedisConns};
pub use keys::Keys;
