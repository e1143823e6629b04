//! Wire types of the registration and discovery protocol (`docs/protocol.md`).
//!
//! Pure data and parsing only: nothing here does IO, touches Redis or needs a runtime, so every
//! rule of the wire contract is unit-tested in isolation.

pub mod answer;
pub mod event;
pub mod jsonrpc;
pub mod subprotocol;
pub mod token;

pub use answer::{ErrorAnswer, ErrorBody, ErrorStatus, HostieAnswer};
pub use event::{ClientEvent, EventKind, FrameError, ServerEvent};
pub use jsonrpc::{PortReply, PortResult, RpcId};
pub use subprotocol::{PeerHint, Subprotocol};
pub use token::{Token, TokenHash, TokenProblem, diagnose_segment};
