//! The JSON-RPC requests a session has in flight, with single-flight joining and a short reuse
//! of the last answer.
//!
//! Concurrent discoveries of one session share one `getHostieGrpcPort` request: a new ask joins
//! the newest in-flight request while it is younger than the RPC timeout. A port answered less
//! than `reuse` ago is answered again without asking: a hot token (thousands of discoveries a
//! second) then costs its gateway at most one request per `reuse`, whatever the round-trip time
//! (single-flight alone allows one per round trip: ≈ 2,000/s on loopback, found by the scaling
//! benchmark). The gateway's port does not change during a session; what the reuse gives up is
//! noticing, for at most `reuse`, a gateway that stopped answering with its socket still open.
//! Pure state, driven by the session task, so it is tested without sockets.

use crate::model::RpcOutcome;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub type Waiter = oneshot::Sender<RpcOutcome>;

struct InFlight {
    id: i64,
    sent: Instant,
    waiters: Vec<Waiter>,
}

pub struct RpcTable {
    next_id: i64,
    timeout: Duration,
    reuse: Duration,
    /// The last port answered, and when.
    last: Option<(u16, Instant)>,
    in_flight: Vec<InFlight>,
}

/// The original server's first id (`Number.MIN_SAFE_INTEGER`); real clients echo it unchanged.
const FIRST_ID: i64 = -9_007_199_254_740_991;

impl RpcTable {
    /// `reuse`: how long an answered port is answered again without asking (zero: never).
    pub fn new(timeout: Duration, reuse: Duration) -> Self {
        Self {
            next_id: FIRST_ID,
            timeout,
            reuse,
            last: None,
            in_flight: Vec::new(),
        }
    }

    /// Adds a waiter. Returns the id of a request that must now be sent, or `None` when the waiter
    /// was answered with a port answered less than `reuse` ago, or joined a request already in
    /// flight.
    pub fn ask(&mut self, waiter: Waiter, now: Instant) -> Option<i64> {
        if let Some((port, at)) = self.last
            && now.saturating_duration_since(at) < self.reuse
        {
            let _ = waiter.send(RpcOutcome::Port(port));
            return None;
        }
        if let Some(newest) = self.in_flight.last_mut()
            && now.duration_since(newest.sent) < self.timeout
        {
            newest.waiters.push(waiter);
            return None;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.in_flight.push(InFlight {
            id,
            sent: now,
            waiters: vec![waiter],
        });
        Some(id)
    }

    /// Settles request `id`. Returns how long it took, or `None` for an id we never sent or
    /// already settled (late or duplicate replies are dropped silently).
    pub fn complete(&mut self, id: i64, outcome: RpcOutcome, now: Instant) -> Option<Duration> {
        let pos = self.in_flight.iter().position(|f| f.id == id)?;
        let done = self.in_flight.remove(pos);
        // Only a port is reused, and only the newest answer counts: a failure after a port
        // (a late reply to an expired request, then an error) is asked again next time.
        self.last = match outcome {
            RpcOutcome::Port(port) => Some((port, now)),
            RpcOutcome::Failed | RpcOutcome::TimedOut => None,
        };
        for w in done.waiters {
            // A waiter whose discovery already gave up has dropped its receiver: nothing to do.
            let _ = w.send(outcome);
        }
        Some(now.duration_since(done.sent))
    }

    /// Times out every request older than the timeout; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let timeout = self.timeout;
        let (expired, alive): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|f| now.duration_since(f.sent) >= timeout);
        self.in_flight = alive;
        if !expired.is_empty() {
            self.last = None;
        }
        for f in &expired {
            tracing::debug!(rpc_id = f.id, "getHostieGrpcPort timed out");
        }
        let count = expired.len();
        for w in expired.into_iter().flat_map(|f| f.waiters) {
            let _ = w.send(RpcOutcome::TimedOut);
        }
        count
    }

    /// When the oldest request times out, if any is in flight.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.in_flight.first().map(|f| f.sent + self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter() -> (Waiter, oneshot::Receiver<RpcOutcome>) {
        oneshot::channel()
    }

    #[test]
    fn concurrent_asks_share_one_request() {
        let mut t = RpcTable::new(Duration::from_secs(3), Duration::ZERO);
        let now = Instant::now();
        let (w1, mut r1) = waiter();
        let (w2, mut r2) = waiter();
        let id = t.ask(w1, now).expect("first ask sends");
        assert_eq!(id, FIRST_ID);
        assert_eq!(t.ask(w2, now + Duration::from_millis(10)), None);
        assert!(t.complete(id, RpcOutcome::Port(18789), now).is_some());
        assert_eq!(r1.try_recv(), Ok(RpcOutcome::Port(18789)));
        assert_eq!(r2.try_recv(), Ok(RpcOutcome::Port(18789)));
        assert!(t.next_expiry().is_none());
    }

    #[test]
    fn unknown_and_duplicate_ids_are_ignored() {
        let mut t = RpcTable::new(Duration::from_secs(3), Duration::ZERO);
        let now = Instant::now();
        let (w, _r) = waiter();
        let id = t.ask(w, now).unwrap();
        assert!(t.complete(12345, RpcOutcome::Port(1), now).is_none());
        assert!(t.complete(id, RpcOutcome::Failed, now).is_some());
        assert!(t.complete(id, RpcOutcome::Port(1), now).is_none());
    }

    #[test]
    fn an_answered_port_is_reused_for_the_reuse_window_only() {
        let reuse = Duration::from_millis(100);
        let mut t = RpcTable::new(Duration::from_secs(3), reuse);
        let now = Instant::now();
        let (w1, mut r1) = waiter();
        let id = t.ask(w1, now).expect("nothing answered yet: ask");
        // A failure is never reused.
        assert!(t.complete(id, RpcOutcome::Failed, now).is_some());
        assert_eq!(r1.try_recv(), Ok(RpcOutcome::Failed));
        let (w2, _r2) = waiter();
        let id = t.ask(w2, now).expect("a failed answer is not reused");
        let answered = now + Duration::from_millis(5);
        assert!(t.complete(id, RpcOutcome::Port(4242), answered).is_some());
        // Within the window: answered at once, nothing sent, nothing in flight.
        let (w3, mut r3) = waiter();
        assert_eq!(t.ask(w3, answered + reuse - Duration::from_millis(1)), None);
        assert_eq!(r3.try_recv(), Ok(RpcOutcome::Port(4242)));
        assert!(t.next_expiry().is_none());
        // At the window's end: asked again.
        let (w4, mut r4) = waiter();
        let id = t
            .ask(w4, answered + reuse)
            .expect("the window is over: ask");
        assert!(r4.try_recv().is_err(), "the new request is pending");
        // A failure after a port ends the reuse at once.
        let failed = answered + reuse + Duration::from_millis(1);
        assert!(t.complete(id, RpcOutcome::Failed, failed).is_some());
        assert_eq!(r4.try_recv(), Ok(RpcOutcome::Failed));
        let (w5, _r5) = waiter();
        assert!(
            t.ask(w5, failed).is_some(),
            "a failure is not followed by a reused port"
        );
    }

    #[test]
    fn stale_request_is_not_joined_and_expires() {
        let mut t = RpcTable::new(Duration::from_secs(3), Duration::ZERO);
        let now = Instant::now();
        let (w1, mut r1) = waiter();
        let (w2, mut r2) = waiter();
        let first = t.ask(w1, now).unwrap();
        let later = now + Duration::from_secs(4);
        let second = t.ask(w2, later).expect("a stale request is not joined");
        assert_ne!(first, second);
        assert_eq!(t.next_expiry(), Some(now + Duration::from_secs(3)));
        assert_eq!(t.expire(later), 1);
        assert_eq!(r1.try_recv(), Ok(RpcOutcome::TimedOut));
        assert!(r2.try_recv().is_err(), "the young request is still pending");
        assert_eq!(t.next_expiry(), Some(later + Duration::from_secs(3)));
    }
}
