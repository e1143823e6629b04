//! Shared data: what the layers above pass to one another. Plain types with no IO, no
//! runtime and no metrics, so that every module may import them and they import nothing of
//! this crate but [`crate::protocol`].
//!
//! - [`ids`]: a session's and a node's identity.
//! - [`record`]: the record of one registered session, as every node sees it.
//! - [`port`]: how a port question ended, wherever it was asked.
//! - [`message`]: what travels between nodes on the bus.
//! - [`outcome`]: how a discovery, a registration or a session ended, which limit was hit, which
//!   Redis operation failed, how a TLS certificate reload went (the metrics layer maps each to a
//!   label).

pub mod ids;
pub mod message;
pub mod outcome;
pub mod port;
pub mod record;

pub use ids::{NodeId, SessionId};
pub use message::BusMessage;
pub use outcome::{
    CloseReason, DiscoveryOutcome, Limit, LookupSource, RedisOp, RegistrationResult, TlsReload,
};
pub use port::{PortAnswer, PortError, PortSource, Reach, RpcOutcome};
pub use record::{HostFrom, SessionOrder, SessionRecord, newest_first, order, source_of};
