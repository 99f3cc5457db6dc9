//! The bounded-frequency sync (upstream's `async.BoundedFrequencyRunner`): changes are
//! batched; a sync runs at once when the last one is at least `min_interval` ago, else when it
//! will be; with no changes at all one runs every `max_interval` (stale chains, retries).
//! Pure: times come in as arguments.

use std::time::{Duration, Instant};

/// When the next sync is due.
#[derive(Debug, Clone)]
pub struct Pacer {
    min_interval: Duration,
    max_interval: Duration,
    last: Option<Instant>,
    pending: bool,
}

impl Pacer {
    /// `--nftables-min-sync-period`, `--nftables-sync-period`.
    pub fn new(min_interval: Duration, max_interval: Duration) -> Self {
        Pacer {
            min_interval,
            max_interval,
            last: None,
            pending: true,
        }
    }

    /// Something changed.
    pub fn changed(&mut self) {
        self.pending = true;
    }

    /// Whether a change waits for a sync.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// When the next sync should run.
    pub fn due(&self, now: Instant) -> Instant {
        match self.last {
            None => now,
            Some(last) if self.pending => (last + self.min_interval).max(now),
            Some(last) => last + self.max_interval,
        }
    }

    /// A sync ran at `at`; `ok` false keeps the change pending (retried after the minimum
    /// interval).
    pub fn ran(&mut self, at: Instant, ok: bool) {
        self.last = Some(at);
        self.pending = !ok;
    }

    /// The time of the last sync.
    pub fn last(&self) -> Option<Instant> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_after_an_idle_period_syncs_at_once_and_a_burst_waits_for_the_minimum() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Pacer::new(s, Duration::from_secs(30));
        assert_eq!(p.due(t0), t0, "first sync at once");
        p.ran(t0, true);
        assert_eq!(p.due(t0), t0 + Duration::from_secs(30), "idle: periodic");
        let t1 = t0 + Duration::from_millis(300);
        p.changed();
        assert_eq!(p.due(t1), t0 + s, "within the minimum: batched");
        p.ran(t0 + s, true);
        let t2 = t0 + Duration::from_secs(5);
        p.changed();
        assert_eq!(p.due(t2), t2, "idle long enough: immediate");
    }

    #[test]
    fn a_failed_sync_is_retried_after_the_minimum_interval() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_secs(1), Duration::from_secs(30));
        p.ran(t0, false);
        assert!(p.pending());
        assert_eq!(p.due(t0), t0 + Duration::from_secs(1));
    }
}
