//! Restart policy and kubelet's container restart back-off (`flowcontrol.Backoff` with 10 s
//! initial, 300 s maximum, keyed by pod and container): the first restart is immediate, then
//! 10 s, 20 s, 40 s ... 5 min; an entry not updated for twice the maximum (10 min) starts
//! again at 10 s.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

/// kubelet's initial container back-off.
pub const INITIAL: Duration = Duration::from_secs(10);
/// kubelet's `MaxContainerBackOff`.
pub const MAX: Duration = Duration::from_secs(300);

/// Whether a container that exited with `exit_code` is started again under `restartPolicy`.
pub fn should_restart(restart_policy: &str, exit_code: i32) -> bool {
    match restart_policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: Timestamp,
}

/// Back-off entries by key (`POD_UID/CONTAINER`).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL, MAX)
    }
}

fn since(later: Timestamp, earlier: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or(Duration::ZERO)
}

impl Backoff {
    /// Back-off with these bounds.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, e: &Entry, event: Timestamp) -> bool {
        since(event, e.last_update) > self.max * 2
    }

    /// kubelet's `IsInBackOffSince`: while `now - event` (the container's finish time) is
    /// shorter than the key's current back-off, returns that back-off (`Some(10s)`); `None`
    /// when the container may start now.
    pub fn in_back_off_since(
        &self,
        key: &str,
        event: Timestamp,
        now: Timestamp,
    ) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(e, event) {
            return None;
        }
        (since(now, event) < e.backoff).then_some(e.backoff)
    }

    /// kubelet's `Next`: records a (re)start at `event`: the first, or one after the entry
    /// expired, sets the initial back-off; later ones double it up to the maximum.
    pub fn next(&mut self, key: &str, event: Timestamp) {
        let backoff = match self.entries.get(key) {
            Some(e) if !self.expired(e, event) => (e.backoff * 2).min(self.max),
            _ => self.initial,
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                backoff,
                last_update: event,
            },
        );
    }

    /// The current back-off of a key (for messages).
    pub fn get(&self, key: &str) -> Duration {
        self.entries.get(key).map_or(Duration::ZERO, |e| e.backoff)
    }

    /// Forgets a key (the pod is gone).
    pub fn forget_prefix(&mut self, prefix: &str) {
        self.entries.retain(|k, _| !k.starts_with(prefix));
    }
}

/// A duration as Go's `time.Duration.String()` prints whole seconds (`10s`, `1m20s`, `5m0s`).
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

/// kubelet's `CrashLoopBackOff` message: `back-off 10s restarting failed container=NAME
/// pod=POD_NAMESPACE(UID)` (`format.Pod`).
pub fn crash_loop_message(
    backoff: Duration,
    container: &str,
    pod: &str,
    namespace: &str,
    uid: &str,
) -> String {
    format!(
        "back-off {} restarting failed container={container} pod={pod}_{namespace}({uid})",
        go_duration(backoff)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn restart_policy_decides_by_exit_code() {
        let cases = [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 2, true),
            ("Never", 0, false),
            ("Never", 1, false),
        ];
        for (policy, code, want) in cases {
            assert_eq!(should_restart(policy, code), want, "{policy} {code}");
        }
    }

    #[test]
    fn back_off_doubles_from_ten_seconds_to_five_minutes() {
        // A container that crashes at once after every start: the delay before each restart.
        let mut b = Backoff::default();
        let key = "uid/c";
        let mut now = t(0);
        let mut delays = Vec::new();
        for _ in 0..9 {
            // The container finished at `now`.
            let finished = now;
            let delay = b
                .in_back_off_since(key, finished, finished)
                .unwrap_or(Duration::ZERO);
            delays.push(delay.as_secs());
            now = finished + delay;
            assert_eq!(b.in_back_off_since(key, finished, now), None);
            b.next(key, now);
        }
        assert_eq!(delays, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn back_off_starts_again_after_ten_minutes_without_a_restart() {
        let mut b = Backoff::default();
        b.next("k", t(0));
        b.next("k", t(10));
        b.next("k", t(30));
        assert_eq!(b.get("k"), Duration::from_secs(40));
        // Crashed again 10 minutes after the last restart: no back-off, next is 10 s again.
        assert_eq!(b.in_back_off_since("k", t(30 + 601), t(30 + 601)), None);
        b.next("k", t(30 + 601));
        assert_eq!(b.get("k"), INITIAL);
    }

    #[test]
    fn crash_loop_message_has_upstreams_shape() {
        assert_eq!(
            crash_loop_message(Duration::from_secs(10), "app", "web", "default", "u-1"),
            "back-off 10s restarting failed container=app pod=web_default(u-1)"
        );
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }
}
