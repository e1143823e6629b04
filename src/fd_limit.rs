//! The open-file limit: one descriptor per session, so it bounds the sessions a node can hold.
//!
//! A node at its limit fails worse than a full one: actix-server cannot accept on any listener
//! (discoveries and probes included) and retries after a pause, where a node at
//! `--max-sessions` refuses registrations alone, with a 503. So at start-up the soft
//! `RLIMIT_NOFILE` is raised to the hard limit (what Go's runtime does for every program since
//! 1.19), which leaves whatever the hard limit allows beyond the sessions to HTTP connections;
//! and when the limit is too low for `--max-sessions` plus [`RESERVE`] the node holds fewer
//! sessions than asked, saying so once, so that it still answers a 503 when full. Container
//! runtimes differ here: containerd 2.x gives containers the systemd default, soft 1,024 and
//! hard 524,288, which the raise makes ample.

/// Descriptors kept for everything but sessions: listeners, HTTP connections (discoveries,
/// scrapes, probes), Redis connections, files. A node in the scaling benchmark used ≈ 100
/// besides its sessions under 64 concurrent discoveries.
pub const RESERVE: u64 = 256;

/// What [`fit`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    /// The soft limit before and after the raise.
    pub before: u64,
    pub limit: u64,
    /// The sessions the node accepts: `--max-sessions`, or less when the limit is lower.
    pub max_sessions: u64,
}

/// Raises the soft open-file limit to the hard limit (never lowering it) and returns how many
/// of `max_sessions` fit under the result. When the raise fails (a sandbox may forbid
/// `setrlimit`), the sessions fit under the soft limit as it is; the error is returned only when
/// the limit cannot even be read.
pub fn fit(max_sessions: u64) -> Result<Fitted, std::io::Error> {
    let (before, _) = rlimit::Resource::NOFILE.get()?;
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(before);
    Ok(Fitted {
        before,
        limit,
        max_sessions: sessions_within(max_sessions, limit),
    })
}

/// The sessions that fit under an open-file limit of `limit` when `max_sessions` are asked
/// (at least one: a node that can hold none would only refuse).
pub fn sessions_within(max_sessions: u64, limit: u64) -> u64 {
    max_sessions.min(limit.saturating_sub(RESERVE)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_keep_the_reserve_below_the_limit() {
        assert_eq!(sessions_within(20_000, 1_048_576), 20_000);
        assert_eq!(sessions_within(20_000, 20_000), 20_000 - RESERVE);
        assert_eq!(sessions_within(20_000, 1_024), 1_024 - RESERVE);
        assert_eq!(sessions_within(20_000, 100), 1);
    }
}
