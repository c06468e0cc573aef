//! The gateway's only source of time: the system clock in production, a manual clock that tests
//! (and the hidden `--manual-clock-start-ms` flag) move by hand, so a 24-hour notify schedule or a
//! 30-minute order timeout runs in milliseconds without sleeping.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// The longest single sleep on the system clock.
const MAX_SYSTEM_SLEEP_MS: i64 = 60_000;

/// A boxed future that resolves once a clock reaches a deadline.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Milliseconds since the Unix epoch, and a way to wait for a later instant.
///
/// Background workers never call `tokio::time::sleep` directly: they wait on the clock, so a
/// manual clock drives every timer in the gateway.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Resolves when `now_ms() >= deadline_ms` (immediately if it already is). May resolve
    /// early; callers re-check the time.
    fn sleep_until(&self, deadline_ms: i64) -> Sleep;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(elapsed) => i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
            // A clock set before 1970 is a broken host; treat it as the epoch rather than panic.
            Err(_) => 0,
        }
    }

    fn sleep_until(&self, deadline_ms: i64) -> Sleep {
        // Wake at least once a minute: if the wall clock jumps, callers re-check their deadline
        // rather than oversleeping on a stale duration.
        let wait_ms = deadline_ms
            .saturating_sub(self.now_ms())
            .clamp(0, MAX_SYSTEM_SLEEP_MS);
        let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when told to. Sleepers wake as soon as it passes their deadline.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: watch::Sender<i64>,
}

impl ManualClock {
    /// A manual clock that reads `start_ms` until moved.
    pub fn new(start_ms: i64) -> Self {
        let (now_ms, _) = watch::channel(start_ms);
        Self { now_ms }
    }

    /// Moves the clock forward by `delta_ms` (negative deltas are ignored: time never runs back
    /// here, because the schedulers assume it does not). Returns the new time.
    pub fn advance(&self, delta_ms: i64) -> i64 {
        let delta_ms = delta_ms.max(0);
        self.now_ms
            .send_modify(|now| *now = now.saturating_add(delta_ms));
        *self.now_ms.borrow()
    }

    /// Moves the clock to `target_ms` if that is later than now. Returns the new time.
    pub fn advance_to(&self, target_ms: i64) -> i64 {
        self.now_ms.send_modify(|now| *now = (*now).max(target_ms));
        *self.now_ms.borrow()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        *self.now_ms.borrow()
    }

    fn sleep_until(&self, deadline_ms: i64) -> Sleep {
        let mut receiver = self.now_ms.subscribe();
        Box::pin(async move {
            loop {
                if *receiver.borrow_and_update() >= deadline_ms {
                    return;
                }
                if receiver.changed().await.is_err() {
                    // The clock is gone (gateway shutting down): never wake; shutdown ends us.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_advanced_past_deadline() {
        let clock = ManualClock::new(1_000);
        let sleeper = tokio::spawn(clock.sleep_until(1_500));
        clock.advance(400);
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(100);
        sleeper.await.unwrap();
        assert_eq!(clock.now_ms(), 1_500);
        assert_eq!(clock.advance(-50), 1_500);
        assert_eq!(clock.advance_to(1_200), 1_500);
    }
}
