//! Label values: each domain enum's value mapped to one fixed string, so that no
//! client-supplied string can ever become a label value. The enums themselves live in
//! [`crate::model::outcome`]; every value in their `ALL` is created at zero on start.

use crate::model::{
    CloseReason, DiscoveryOutcome, Limit, LookupSource, PortAnswer, PortError, RedisOp,
    RegistrationResult, RpcOutcome, TlsReload,
};

/// A domain enum whose values are label values.
pub trait Label: Copy + 'static {
    /// Every value, so that each series exists before its first event.
    const ALL: &'static [Self];
    fn label(self) -> &'static str;
}

impl Label for DiscoveryOutcome {
    const ALL: &'static [Self] = &DiscoveryOutcome::ALL;

    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Fallback => "fallback",
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::RateLimited => "rate_limited",
        }
    }
}

impl Label for LookupSource {
    const ALL: &'static [Self] = &LookupSource::ALL;

    fn label(self) -> &'static str {
        match self {
            Self::Hub => "hub",
            Self::Cache => "cache",
            Self::Registry => "registry",
        }
    }
}

impl Label for CloseReason {
    const ALL: &'static [Self] = &CloseReason::ALL;

    fn label(self) -> &'static str {
        match self {
            Self::ClientClose => "client_close",
            Self::Disconnect => "disconnect",
            Self::Idle => "idle",
            Self::FrameTooLarge => "frame_too_large",
            Self::ProtocolError => "protocol_error",
            Self::Drain => "drain",
            Self::SlowConsumer => "slow_consumer",
        }
    }
}

impl Label for RegistrationResult {
    const ALL: &'static [Self] = &RegistrationResult::ALL;

    fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::NoToken => "no_token",
            Self::NodeFull => "node_full",
            Self::TokenFull => "token_full",
            Self::SourceFull => "source_full",
            Self::Draining => "draining",
            Self::BadHandshake => "bad_handshake",
            Self::Error => "error",
        }
    }
}

impl Label for Limit {
    const ALL: &'static [Self] = &Limit::ALL;

    fn label(self) -> &'static str {
        match self {
            Self::FrameSize => "frame_size",
            Self::SessionsPerNode => "sessions_per_node",
            Self::SessionsPerToken => "sessions_per_token",
            Self::SessionsPerSource => "sessions_per_source",
            Self::IdleTime => "idle_time",
            Self::JsonDepth => "json_depth",
            Self::DiscoveryRate => "discovery_rate",
            Self::SessionQueue => "session_queue",
        }
    }
}

impl Label for RedisOp {
    const ALL: &'static [Self] = &RedisOp::ALL;

    fn label(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Release => "release",
            Self::Lookup => "lookup",
            Self::Heartbeat => "heartbeat",
            Self::Sweep => "sweep",
            Self::Reassert => "reassert",
            Self::Drain => "drain",
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Probe => "probe",
            Self::Track => "track",
            Self::Stats => "stats",
        }
    }
}

impl Label for TlsReload {
    const ALL: &'static [Self] = &TlsReload::ALL;

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

/// The label of how one `getHostieGrpcPort` request ended.
pub(super) fn rpc(outcome: RpcOutcome) -> &'static str {
    match outcome {
        RpcOutcome::Port(_) => "ok",
        RpcOutcome::Failed => "error",
        RpcOutcome::TimedOut => "timeout",
    }
}

/// Every value of [`rpc`].
pub(super) const RPC_ALL: [&str; 3] = ["ok", "error", "timeout"];

/// The label of how one cross-node port request ended, as seen by the asker.
pub(super) fn bus(result: &Result<PortAnswer, PortError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(PortError::SessionGone) => "session_gone",
        Err(PortError::NodeGone(_)) => "no_subscriber",
        Err(PortError::Timeout) => "timeout",
        Err(PortError::Transport(_)) => "error",
    }
}

/// Every value of [`bus`].
pub(super) const BUS_ALL: [&str; 5] = ["ok", "session_gone", "no_subscriber", "timeout", "error"];
