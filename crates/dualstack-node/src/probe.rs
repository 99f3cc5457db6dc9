//! kubelet's probe worker as a state machine: when the next probe is due and how results turn
//! into the container's readiness or liveness (`initialDelaySeconds`, `periodSeconds`,
//! `timeoutSeconds`, `successThreshold`, `failureThreshold`). Running a probe (HTTP, TCP, exec)
//! is the agent's job; it reports each outcome here.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Probe;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `readinessProbe`: starts as failure; drives `ready`.
    Readiness,
    /// `livenessProbe`: starts as success; a failure restarts the container.
    Liveness,
}

/// The timing and thresholds of a probe, with upstream's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10).
    pub period: Duration,
    /// `timeoutSeconds` (1).
    pub timeout: Duration,
    /// `successThreshold` (1).
    pub success_threshold: u32,
    /// `failureThreshold` (3).
    pub failure_threshold: u32,
}

fn secs(v: Option<i32>, default: u64, min: u64) -> Duration {
    Duration::from_secs(
        v.map_or(default, |v| u64::try_from(v).unwrap_or(0))
            .max(min),
    )
}

impl Timing {
    /// The timing of a probe spec.
    pub fn of(p: &Probe) -> Timing {
        Timing {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: p
                .success_threshold
                .map_or(1, |v| u32::try_from(v).unwrap_or(1).max(1)),
            failure_threshold: p
                .failure_threshold
                .map_or(3, |v| u32::try_from(v).unwrap_or(1).max(1)),
        }
    }
}

/// One probe of one running container.
#[derive(Debug, Clone)]
pub struct ProbeState {
    /// Which probe.
    pub kind: Kind,
    /// Its timing.
    pub timing: Timing,
    /// The current result (`true`: success).
    pub result: bool,
    last: Option<bool>,
    run: u32,
    next_due: Timestamp,
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(t)
}

impl ProbeState {
    /// The probe of a container that started at `started_at`: the first probe is due after
    /// `initialDelaySeconds`.
    pub fn new(kind: Kind, timing: Timing, started_at: Timestamp) -> Self {
        ProbeState {
            kind,
            timing,
            result: kind == Kind::Liveness,
            last: None,
            run: 0,
            next_due: add(started_at, timing.initial_delay),
        }
    }

    /// When the next probe should run.
    pub fn next_due(&self) -> Timestamp {
        self.next_due
    }

    /// Records the outcome of the probe that ran at `at` (a timeout counts as a failure) and
    /// schedules the next one a period later. Returns `Some(new result)` when the result
    /// changed (after the success or failure threshold was reached).
    pub fn record(&mut self, ok: bool, at: Timestamp) -> Option<bool> {
        self.next_due = add(at, self.timing.period);
        if self.last == Some(ok) {
            self.run += 1;
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.timing.success_threshold
        } else {
            self.timing.failure_threshold
        };
        if self.run < threshold || self.result == ok {
            return None;
        }
        self.result = ok;
        if self.kind == Kind::Liveness && !ok {
            // kubelet puts the worker on hold until the container is replaced.
            self.run = 0;
        }
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn probe(v: serde_json::Value) -> Timing {
        Timing::of(&serde_json::from_value::<Probe>(v).unwrap())
    }

    #[test]
    fn defaults_are_upstreams() {
        let d = probe(serde_json::json!({}));
        assert_eq!(
            d,
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3
            }
        );
    }

    #[test]
    fn readiness_starts_false_and_follows_thresholds() {
        // (successThreshold, failureThreshold, outcomes, results after each)
        let cases: &[(u32, u32, &[bool], &[bool])] = &[
            (
                1,
                3,
                &[true, false, false, false, true],
                &[true, true, true, false, true],
            ),
            (
                2,
                1,
                &[true, true, false, true, true],
                &[false, true, false, false, true],
            ),
            (1, 1, &[false, false, true], &[false, false, true]),
        ];
        for (s, f, outcomes, want) in cases {
            let timing = probe(
                serde_json::json!({"successThreshold": s, "failureThreshold": f, "periodSeconds": 2, "initialDelaySeconds": 5}),
            );
            let mut p = ProbeState::new(Kind::Readiness, timing, t(0));
            assert!(!p.result);
            assert_eq!(p.next_due(), t(5));
            let mut got = Vec::new();
            for (i, ok) in outcomes.iter().enumerate() {
                let at = t(5 + 2 * i64::try_from(i).unwrap());
                p.record(*ok, at);
                assert_eq!(p.next_due(), at + SignedDuration::from_secs(2));
                got.push(p.result);
            }
            assert_eq!(&got, want, "success {s} failure {f}");
        }
    }

    #[test]
    fn liveness_starts_true_and_fails_after_the_failure_threshold() {
        let timing = probe(serde_json::json!({"failureThreshold": 2}));
        let mut p = ProbeState::new(Kind::Liveness, timing, t(0));
        assert!(p.result);
        assert_eq!(p.record(false, t(0)), None);
        assert_eq!(p.record(false, t(10)), Some(false));
    }
}
