//! The bounded-frequency sync (upstream's `async.BoundedFrequencyRunner` as kube-proxy builds
//! it, with a burst of 2): changes are batched; syncs draw from a token bucket that refills one
//! token per `min_interval` and holds at most [`BURST`], so a lone change syncs at once, the
//! next one too, and a stream of changes syncs once per `min_interval`; with no changes at all
//! one runs every `max_interval` (stale chains, retries). Pure: times come in as arguments.

use std::time::{Duration, Instant};

/// kube-proxy's `burstSyncs`.
pub const BURST: f64 = 2.0;

/// When the next sync is due.
#[derive(Debug, Clone)]
pub struct Pacer {
    min_interval: Duration,
    max_interval: Duration,
    last: Option<Instant>,
    pending: bool,
    /// Tokens at `last` (after that sync took its own).
    tokens: f64,
    /// A failed sync is retried no sooner than this.
    retry_at: Option<Instant>,
}

impl Pacer {
    /// `--nftables-min-sync-period`, `--nftables-sync-period`.
    pub fn new(min_interval: Duration, max_interval: Duration) -> Self {
        Pacer {
            min_interval,
            max_interval,
            last: None,
            pending: true,
            tokens: BURST,
            retry_at: None,
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

    fn tokens_at(&self, now: Instant) -> f64 {
        match self.last {
            None => BURST,
            Some(last) if self.min_interval.is_zero() => {
                let _ = last;
                BURST
            }
            Some(last) => (self.tokens
                + now.saturating_duration_since(last).as_secs_f64()
                    / self.min_interval.as_secs_f64())
            .min(BURST),
        }
    }

    /// When the next sync should run.
    pub fn due(&self, now: Instant) -> Instant {
        let Some(last) = self.last else { return now };
        if !self.pending {
            return last + self.max_interval;
        }
        let tokens = self.tokens_at(now);
        let by_tokens = if tokens >= 1.0 {
            now
        } else {
            now + self.min_interval.mul_f64(1.0 - tokens)
        };
        self.retry_at.map_or(by_tokens, |r| by_tokens.max(r))
    }

    /// A sync ran at `at`; `ok` false keeps the change pending (retried after the minimum
    /// interval). `applied` false (nothing reached the kernel: the changes cancelled out or
    /// touched nothing we render) costs no token: the limit is there for nftables' sake.
    pub fn ran(&mut self, at: Instant, ok: bool, applied: bool) {
        let cost = if applied || !ok { 1.0 } else { 0.0 };
        self.tokens = (self.tokens_at(at) - cost).max(0.0);
        self.last = Some(at);
        self.pending = !ok;
        self.retry_at = (!ok).then(|| at + self.min_interval);
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
    fn a_change_after_an_idle_period_syncs_at_once_and_a_stream_is_paced_by_the_minimum() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let ms = Duration::from_millis;
        let mut p = Pacer::new(s, Duration::from_secs(30));
        assert_eq!(p.due(t0), t0, "first sync at once");
        p.ran(t0, true, true);
        assert_eq!(p.due(t0), t0 + Duration::from_secs(30), "idle: periodic");
        // The burst: a second change right after syncs at once too.
        p.changed();
        assert_eq!(p.due(t0 + ms(100)), t0 + ms(100), "burst of 2");
        p.ran(t0 + ms(100), true, true);
        // Then the bucket holds 0.1 token, 0.2 at the third change: it waits for a whole one.
        p.changed();
        let due = p.due(t0 + ms(200));
        let want = t0 + ms(1000);
        assert!(
            due.max(want) - due.min(want) < ms(1),
            "paced: due {:?} after t0",
            due - t0
        );
        p.ran(want, true, true);
        // Idle long enough: immediate again.
        let t2 = t0 + Duration::from_secs(5);
        p.changed();
        assert_eq!(p.due(t2), t2, "idle long enough: immediate");
    }

    #[test]
    fn a_sync_that_applied_nothing_costs_no_token() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pacer::new(Duration::from_secs(1), Duration::from_secs(30));
        p.ran(t0, true, true);
        p.changed();
        p.ran(t0 + ms(10), true, false);
        p.changed();
        p.ran(t0 + ms(20), true, false);
        p.changed();
        assert_eq!(p.due(t0 + ms(30)), t0 + ms(30), "a token is still there");
        p.ran(t0 + ms(30), true, true);
        p.changed();
        assert!(p.due(t0 + ms(40)) > t0 + ms(40), "now the bucket is empty");
    }

    #[test]
    fn a_failed_sync_is_retried_after_the_minimum_interval() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_secs(1), Duration::from_secs(30));
        p.ran(t0, false, true);
        assert!(p.pending());
        assert_eq!(p.due(t0), t0 + Duration::from_secs(1));
    }
}
