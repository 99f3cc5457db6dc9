//! A keyed work queue with client-go's `workqueue` semantics: a key is queued at most once, a
//! key being processed is never handed to a second worker (a new add while it runs queues it
//! again after [`WorkQueue::done`]), and failed keys come back after a per-key exponential
//! backoff (5 ms doubling, at most 60 s).
//!
//! The kube-runtime `Controller` skips objects that are gone from its store, so it cannot clean
//! up after deleted Services on API servers without a garbage collector; this queue reconciles
//! keys, present or not.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// First retry delay.
const BASE_DELAY: Duration = Duration::from_millis(5);
/// Longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(60);

struct State<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
    shut: bool,
}

/// The queue.
pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    notify: Notify,
}

impl<T> std::fmt::Debug for WorkQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkQueue")
    }
}

impl<T: Clone + Eq + Hash + Send + 'static> Default for WorkQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Eq + Hash + Send + 'static> WorkQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                shut: false,
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` (no-op when already queued).
    pub fn add(&self, item: T) {
        let mut s = self.lock();
        if s.shut || !s.dirty.insert(item.clone()) {
            return;
        }
        if !s.processing.contains(&item) {
            s.queue.push_back(item);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Waits for the next item; `None` after [`shutdown`](Self::shutdown).
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(item) = s.queue.pop_front() {
                    s.dirty.remove(&item);
                    s.processing.insert(item.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        self.notify.notify_one();
                    }
                    return Some(item);
                }
                if s.shut {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// The worker finished `item`; if it was added meanwhile, it is queued again.
    pub fn done(&self, item: &T) {
        let mut s = self.lock();
        s.processing.remove(item);
        if s.dirty.contains(item) {
            s.queue.push_back(item.clone());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// `item` succeeded: its backoff starts over.
    pub fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }

    /// The delay before the next retry of `item` (and counts the failure).
    fn next_delay(&self, item: &T) -> Duration {
        let mut s = self.lock();
        let n = s.failures.entry(item.clone()).or_insert(0);
        let d = BASE_DELAY.saturating_mul(1u32 << (*n).min(20));
        *n += 1;
        d.min(MAX_DELAY)
    }

    /// `item` failed: add it again after its backoff.
    pub fn add_rate_limited(self: &Arc<Self>, item: T) {
        let delay = self.next_delay(&item);
        self.add_after(item, delay);
    }

    /// Adds `item` after `delay`.
    pub fn add_after(self: &Arc<Self>, item: T, delay: Duration) {
        let q = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(item);
        });
    }

    /// Wakes every worker with `None`; later adds are dropped.
    pub fn shutdown(&self) {
        self.lock().shut = true;
        self.notify.notify_waiters();
    }

    /// Queued (not processing) items.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn should_queue_a_key_once_and_requeue_it_when_added_while_processing() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.get().await.unwrap();
        assert_eq!(a, "a");
        q.add("a"); // while processing: not handed out again yet
        assert_eq!(q.get().await, Some("b"));
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        q.done(&"b");
        q.shutdown();
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn should_back_off_exponentially_and_start_over_after_success() {
        let q = Arc::new(WorkQueue::new());
        assert_eq!(q.next_delay(&"k"), Duration::from_millis(5));
        assert_eq!(q.next_delay(&"k"), Duration::from_millis(10));
        assert_eq!(q.next_delay(&"k"), Duration::from_millis(20));
        q.forget(&"k");
        assert_eq!(q.next_delay(&"k"), Duration::from_millis(5));
        for _ in 0..30 {
            q.next_delay(&"k");
        }
        assert_eq!(q.next_delay(&"k"), MAX_DELAY);
        q.forget(&"k");
        q.add_rate_limited("k");
        tokio::time::sleep(Duration::from_millis(4)).await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(q.get().await, Some("k"));
    }

    #[tokio::test]
    async fn should_wake_a_waiting_worker() {
        let q = Arc::new(WorkQueue::new());
        let w = {
            let q = q.clone();
            tokio::spawn(async move { q.get().await })
        };
        tokio::task::yield_now().await;
        q.add(7);
        assert_eq!(w.await.unwrap(), Some(7));
    }
}
