//! How things ended, as the domain sees them: a discovery, a registration, a session; which
//! configured limit was hit; which Redis operation failed; how a TLS certificate reload went. Plain enums, each listing `ALL` its
//! values; [`crate::metrics`] maps each value to its label (and creates every series at zero).

/// How a discovery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryOutcome {
    /// A live session answered the port RPC.
    Hit,
    /// No live session for the token.
    Miss,
    /// Answered with the subprotocol or fallback port: the session has no JSON-RPC peer, or its
    /// reply was not a port.
    Fallback,
    /// Answered with the subprotocol or fallback port because the RPC did not answer in time, or
    /// (5xx) nothing could be answered within the deadline.
    Timeout,
    /// The registry or bus failed (5xx).
    Error,
    /// Refused by the per-client rate limit (429).
    RateLimited,
}

impl DiscoveryOutcome {
    pub const ALL: [DiscoveryOutcome; 6] = [
        Self::Hit,
        Self::Miss,
        Self::Fallback,
        Self::Timeout,
        Self::Error,
        Self::RateLimited,
    ];
}

/// Where a discovery found the token's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupSource {
    /// This node's hub: it holds every session of the token, or the registry could not be read.
    Hub,
    /// Other nodes' records this node read recently (no Redis round trip).
    Cache,
    /// The registry (one Redis round trip).
    Registry,
}

impl LookupSource {
    pub const ALL: [LookupSource; 3] = [Self::Hub, Self::Cache, Self::Registry];
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame.
    ClientClose,
    /// The connection ended without a close frame.
    Disconnect,
    /// No frame of any kind (ping included) within the idle timeout.
    Idle,
    /// A frame over the size limit (closed with 1009).
    FrameTooLarge,
    /// A WebSocket protocol violation (closed with 1002).
    ProtocolError,
    /// The node is draining (closed with 1001).
    Drain,
    /// The client stopped reading and our outbound queue stayed full (closed with 1008).
    SlowConsumer,
}

impl CloseReason {
    pub const ALL: [CloseReason; 7] = [
        Self::ClientClose,
        Self::Disconnect,
        Self::Idle,
        Self::FrameTooLarge,
        Self::ProtocolError,
        Self::Drain,
        Self::SlowConsumer,
    ];
}

/// How a registration attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationResult {
    Accepted,
    NoToken,
    NodeFull,
    TokenFull,
    SourceFull,
    Draining,
    BadHandshake,
    Error,
}

impl RegistrationResult {
    pub const ALL: [RegistrationResult; 8] = [
        Self::Accepted,
        Self::NoToken,
        Self::NodeFull,
        Self::TokenFull,
        Self::SourceFull,
        Self::Draining,
        Self::BadHandshake,
        Self::Error,
    ];
}

/// A configured limit that was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    FrameSize,
    SessionsPerNode,
    SessionsPerToken,
    SessionsPerSource,
    IdleTime,
    JsonDepth,
    DiscoveryRate,
    SessionQueue,
}

impl Limit {
    pub const ALL: [Limit; 8] = [
        Self::FrameSize,
        Self::SessionsPerNode,
        Self::SessionsPerToken,
        Self::SessionsPerSource,
        Self::IdleTime,
        Self::JsonDepth,
        Self::DiscoveryRate,
        Self::SessionQueue,
    ];
}

/// A Redis operation, for counting its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisOp {
    Register,
    Release,
    Lookup,
    Heartbeat,
    Sweep,
    Reassert,
    Drain,
    Publish,
    Subscribe,
    /// The readiness check's write.
    Probe,
    /// Asking to be told of a token's new registrations (the remote cache).
    Track,
    /// Reading every node's figures for the cluster status page.
    Stats,
}

impl RedisOp {
    pub const ALL: [RedisOp; 12] = [
        Self::Register,
        Self::Release,
        Self::Lookup,
        Self::Heartbeat,
        Self::Sweep,
        Self::Reassert,
        Self::Drain,
        Self::Publish,
        Self::Subscribe,
        Self::Probe,
        Self::Track,
        Self::Stats,
    ];
}

/// How one change of the TLS certificate or key files was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsReload {
    /// The new pair serves new handshakes.
    Ok,
    /// The new files do not make a pair (unreadable, unparsable, or a key that does not match
    /// the certificate); the previous pair still serves.
    Error,
}

impl TlsReload {
    pub const ALL: [TlsReload; 2] = [Self::Ok, Self::Error];
}
