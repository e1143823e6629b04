//! How late this process's timers fire: the time its threads wait for a CPU when the machine is
//! saturated (more runnable threads than cores), measured by a probe that sleeps a short tick
//! and notes how much longer it took.
//!
//! A discovery keeps a margin of its deadline for its answer to leave in time (see
//! `Node::margin`). The margin must cover what happens outside the wait it bounds: the timer
//! firing late, the answer being written, and the request queued before the handler started.
//! On a machine with idle cores that is well under a millisecond; on a starved one it is this
//! lag, which the margin then grows by (twice: once before the handler, once after).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How often the probe wakes.
const TICK: Duration = Duration::from_millis(20);
/// The lag reported is the largest of the current window and the one before it.
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct SchedulingLag {
    recent_us: AtomicU64,
}

impl SchedulingLag {
    /// A lag that is never measured (always zero): in-process tests under paused time.
    pub fn none() -> Arc<Self> {
        Arc::default()
    }

    /// A lag fixed at `lag` (tests of what depends on it).
    #[cfg(test)]
    pub fn fixed(lag: Duration) -> Arc<Self> {
        let fixed = Self::none();
        fixed.set(lag);
        fixed
    }

    /// Starts the probe on the current runtime; it stops when the returned handle is dropped.
    /// `report` receives every new estimate (the gauge).
    pub fn start(report: impl Fn(Duration) + Send + 'static) -> Arc<Self> {
        let lag = Arc::new(Self::default());
        tokio::spawn(probe(Arc::downgrade(&lag), report));
        lag
    }

    /// The largest lag seen over the last one to two seconds.
    pub fn recent(&self) -> Duration {
        Duration::from_micros(self.recent_us.load(Ordering::Relaxed))
    }

    fn set(&self, lag: Duration) {
        self.recent_us
            .store(lag.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Two windows' maxima.
#[derive(Debug, Default)]
struct Windows {
    current: Duration,
    previous: Duration,
    started: Option<Instant>,
}

impl Windows {
    fn observe(&mut self, lag: Duration, now: Instant) -> Duration {
        let started = *self.started.get_or_insert(now);
        if now.saturating_duration_since(started) >= WINDOW {
            self.previous = self.current;
            self.current = Duration::ZERO;
            self.started = Some(now);
        }
        self.current = self.current.max(lag);
        self.current.max(self.previous)
    }
}

async fn probe(lag: Weak<SchedulingLag>, report: impl Fn(Duration)) {
    let mut windows = Windows::default();
    loop {
        let asked = Instant::now();
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        let late = now.saturating_duration_since(asked).saturating_sub(TICK);
        let recent = windows.observe(late, now);
        let Some(lag) = lag.upgrade() else {
            return;
        };
        lag.set(recent);
        report(recent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_largest_lag_of_the_last_one_to_two_windows() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(w.observe(ms(1), t0), ms(1));
        assert_eq!(w.observe(ms(300), t0 + ms(100)), ms(300));
        assert_eq!(w.observe(ms(2), t0 + ms(500)), ms(300));
        // A new window: the previous one's maximum still counts.
        assert_eq!(w.observe(ms(3), t0 + WINDOW), ms(300));
        // Two windows on, it is forgotten.
        assert_eq!(w.observe(ms(4), t0 + WINDOW * 2), ms(4));
    }

    #[tokio::test]
    async fn the_probe_stops_with_its_handle() {
        let seen = Arc::new(AtomicU64::new(0));
        let lag = {
            let seen = seen.clone();
            SchedulingLag::start(move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            })
        };
        tokio::time::sleep(TICK * 5).await;
        let ticks = seen.load(Ordering::SeqCst);
        assert!(ticks >= 1, "the probe ran");
        assert!(lag.recent() < Duration::from_secs(1));
        drop(lag);
        tokio::time::sleep(TICK * 3).await;
        let after = seen.load(Ordering::SeqCst);
        tokio::time::sleep(TICK * 5).await;
        assert_eq!(seen.load(Ordering::SeqCst), after, "stopped");
    }
}
