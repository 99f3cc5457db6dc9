//! Leader election decisions over a `coordination.k8s.io/v1` Lease, after client-go's
//! `leaderelection.LeaderElector.tryAcquireOrRenew` (pure: times are arguments).
//!
//! * No Lease: create it, holding it.
//! * A Lease held by someone else is valid until `observed + leaseDurationSeconds`, where
//!   `observed` is when this candidate saw the record change, on its own monotonic clock (so
//!   clocks of different machines never matter). Until then, wait.
//! * Otherwise (expired, released, or ours): write it with us as holder; `acquireTime` and
//!   `leaseTransitions` move only when the holder changes.
//!
//! `observed`: when a poll finds a changed record, the change happened after the previous
//! poll, so `observed = max(previous poll, now - retry period)` rather than `now`. That takes
//! over up to one retry period earlier than client-go, and is still safe: a leader that cannot
//! renew stops acting `renewDeadline` after its last renewal, and `renewDeadline + retryPeriod <
//! leaseDuration` (10 s + 2 s < 15 s by default). With it a standby acts within
//! `leaseDuration` of the leader's last renewal, hence within 15 s of the leader dying.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

/// The fields of a Lease that leader election reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    /// `holderIdentity` (empty when released).
    pub holder: String,
    /// `leaseDurationSeconds`.
    pub lease_duration_seconds: i32,
    /// `acquireTime`.
    pub acquire_time: Option<Timestamp>,
    /// `renewTime`.
    pub renew_time: Option<Timestamp>,
    /// `leaseTransitions`.
    pub transitions: i32,
}

impl LeaseRecord {
    /// From a Lease's spec.
    pub fn from_spec(spec: &LeaseSpec) -> Self {
        Self {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    /// Into a Lease's spec.
    pub fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.transitions),
            ..Default::default()
        }
    }
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the Lease with this record.
    Create(LeaseRecord),
    /// Write this record (at the resourceVersion read): acquire or renew.
    Update(LeaseRecord),
    /// Someone else holds it; look again at `until` (at most one retry period away).
    Wait {
        /// When to look again.
        until: Instant,
    },
}

/// One candidate's view.
#[derive(Debug, Clone)]
pub struct Elector {
    identity: String,
    lease_duration: Duration,
    retry_period: Duration,
    observed: Option<(LeaseRecord, Instant)>,
    last_poll: Option<Instant>,
}

fn whole_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    /// A candidate with this identity and timing.
    pub fn new(
        identity: impl Into<String>,
        lease_duration: Duration,
        retry_period: Duration,
    ) -> Self {
        Self {
            identity: identity.into(),
            lease_duration,
            retry_period,
            observed: None,
            last_poll: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The last record seen or written names us.
    pub fn is_leader(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|(r, _)| r.holder == self.identity)
    }

    /// The holder of the last record seen.
    pub fn observed_holder(&self) -> Option<&str> {
        self.observed.as_ref().map(|(r, _)| r.holder.as_str())
    }

    fn ours(&self, wall: Timestamp, previous: Option<&LeaseRecord>) -> LeaseRecord {
        let mut r = LeaseRecord {
            holder: self.identity.clone(),
            lease_duration_seconds: whole_seconds(self.lease_duration),
            acquire_time: Some(wall),
            renew_time: Some(wall),
            transitions: 0,
        };
        if let Some(p) = previous {
            r.transitions = p.transitions;
            if p.holder == self.identity {
                r.acquire_time = p.acquire_time.or(Some(wall));
            } else {
                r.transitions += 1;
            }
        }
        r
    }

    /// Decides after reading the Lease (`None`: not found) at monotonic `now` and wall `wall`.
    pub fn decide(&mut self, current: Option<&LeaseRecord>, now: Instant, wall: Timestamp) -> Step {
        let Some(rec) = current else {
            self.last_poll = Some(now);
            return Step::Create(self.ours(wall, None));
        };
        let changed = self.observed.as_ref().is_none_or(|(r, _)| r != rec);
        if changed {
            let at = match self.last_poll {
                Some(prev) => prev.max(now.checked_sub(self.retry_period).unwrap_or(now)),
                None => now,
            };
            self.observed = Some((rec.clone(), at));
        }
        self.last_poll = Some(now);
        let (_, at) = self.observed.as_ref().expect("just set");
        let valid_until = *at
            + Duration::from_secs(u64::try_from(rec.lease_duration_seconds.max(0)).unwrap_or(0));
        if !rec.holder.is_empty() && rec.holder != self.identity && valid_until > now {
            return Step::Wait {
                until: valid_until.min(now + self.retry_period),
            };
        }
        Step::Update(self.ours(wall, Some(rec)))
    }

    /// The write of `record` succeeded at `now`.
    pub fn written(&mut self, record: LeaseRecord, now: Instant) {
        self.observed = Some((record, now));
        self.last_poll = Some(now);
    }

    /// The record that gives the Lease up (client-go `release`): no holder, 1 s duration.
    pub fn release(&self, wall: Timestamp) -> Option<LeaseRecord> {
        let (r, _) = self.observed.as_ref()?;
        (r.holder == self.identity).then(|| LeaseRecord {
            holder: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            transitions: r.transitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);
    const P: Duration = Duration::from_secs(2);

    fn wall(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: Some(wall(0)),
            renew_time: Some(wall(renewed)),
            transitions: 3,
        }
    }

    #[test]
    fn should_create_the_lease_when_there_is_none() {
        let t0 = Instant::now();
        let mut e = Elector::new("a", D, P);
        let Step::Create(r) = e.decide(None, t0, wall(0)) else {
            panic!()
        };
        assert_eq!(
            (r.holder.as_str(), r.lease_duration_seconds, r.transitions),
            ("a", 15, 0)
        );
        e.written(r, t0);
        assert!(e.is_leader());
    }

    #[test]
    fn should_wait_while_another_holder_renews_and_take_over_after_the_lease_duration() {
        let t0 = Instant::now();
        let mut e = Elector::new("b", D, P);
        // First look: the record is new to us, observed now.
        assert_eq!(
            e.decide(Some(&held_by("a", 0)), t0, wall(0)),
            Step::Wait { until: t0 + P }
        );
        // The holder renews every 2 s: each change seen 2 s later moves the deadline.
        let mut t = t0;
        for i in 1..=5 {
            t = t0 + P * i;
            let step = e.decide(
                Some(&held_by("a", 2 * i64::from(i))),
                t,
                wall(2 * i64::from(i)),
            );
            assert_eq!(step, Step::Wait { until: t + P });
        }
        // The holder dies right after its last renewal (seen at t; it changed after t - 2 s).
        let dead = held_by("a", 10);
        let mut now = t;
        let (at, record) = loop {
            match e.decide(Some(&dead), now, wall(30)) {
                Step::Wait { until } => now = until,
                Step::Update(r) => break (now, r),
                Step::Create(_) => panic!("the lease exists"),
            }
        };
        assert_eq!(at, t - P + D);
        assert_eq!((record.holder.as_str(), record.transitions), ("b", 4));
        assert_eq!(record.acquire_time, Some(wall(30)));
    }

    #[test]
    fn should_never_count_a_change_as_older_than_one_retry_period() {
        // A long gap between polls (the API was unreachable) must not make the lease look
        // older than it can be.
        let t0 = Instant::now();
        let mut e = Elector::new("b", D, P);
        assert!(matches!(
            e.decide(Some(&held_by("a", 0)), t0, wall(0)),
            Step::Wait { .. }
        ));
        let late = t0 + Duration::from_secs(14);
        let step = e.decide(Some(&held_by("a", 13)), late, wall(13));
        assert_eq!(step, Step::Wait { until: late + P });
        // Valid until late - P + D.
        let Step::Wait { until } = e.decide(Some(&held_by("a", 13)), late - P + D - P, wall(0))
        else {
            panic!()
        };
        assert_eq!(until, late - P + D);
        assert!(matches!(
            e.decide(Some(&held_by("a", 13)), late - P + D, wall(0)),
            Step::Update(_)
        ));
    }

    #[test]
    fn should_renew_its_own_lease_keeping_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let mut e = Elector::new("a", D, P);
        // A restarted process with the same identity finds its own record and renews at once.
        let Step::Update(r) = e.decide(Some(&held_by("a", 5)), t0, wall(6)) else {
            panic!()
        };
        assert_eq!(r.transitions, 3);
        assert_eq!(r.acquire_time, Some(wall(0)));
        assert_eq!(r.renew_time, Some(wall(6)));
    }

    #[test]
    fn should_acquire_a_released_lease_at_once_and_release_its_own() {
        let t0 = Instant::now();
        let mut e = Elector::new("b", D, P);
        let released = LeaseRecord {
            holder: String::new(),
            lease_duration_seconds: 1,
            ..held_by("", 0)
        };
        let Step::Update(r) = e.decide(Some(&released), t0, wall(1)) else {
            panic!()
        };
        assert_eq!(r.holder, "b");
        assert!(e.release(wall(2)).is_none(), "not leader until written");
        e.written(r, t0);
        let rel = e.release(wall(2)).unwrap();
        assert_eq!(
            (
                rel.holder.as_str(),
                rel.lease_duration_seconds,
                rel.transitions
            ),
            ("", 1, 4)
        );
    }

    #[test]
    fn should_round_trip_through_the_lease_spec() {
        let r = held_by("a", 3);
        assert_eq!(LeaseRecord::from_spec(&r.to_spec()), r);
    }
}
