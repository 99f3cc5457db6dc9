//! The watch cache: the API server's in-memory view of the store, as kube-apiserver's cacher.
//!
//! [`Cache::start`] lists everything under a prefix, then follows the backend's watch. It keeps
//! the current objects (sorted by key, so a list is a range scan) and, per resource (the second
//! key segment, `/registry/<resource>/...`), a bounded history of events from which watches
//! started in the past are replayed. A watch that starts before the oldest retained event gets
//! [`StoreError::Compacted`] (the API turns that into `410 Gone`, "too old resource version").
//!
//! What clients see of an object is computed once, when it enters the cache, by a
//! [`Decorator`]: the JSON with `metadata.resourceVersion` set, and the attributes selectors
//! match on (labels, selectable fields). Lists and watches then only filter and copy bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use crate::{Backend, Event, EventKind, KeyValue, Revision, StoreError, WatchItem};

/// Events kept per resource for watches that start in the past.
pub const HISTORY_PER_RESOURCE: usize = 20_000;

/// Labels and selectable fields of an object, for label and field selectors. Kept compact
/// (exact-size sorted slices): the cache holds one per object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// `metadata.labels`, sorted by key.
    labels: Box<[(Box<str>, Box<str>)]>,
    /// Kind-specific selectable fields (`spec.nodeName`, ...), sorted by name. The name and
    /// namespace are in the key.
    fields: Box<[(&'static str, Box<str>)]>,
}

impl Attrs {
    /// Attributes from labels and fields in any order.
    pub fn new(
        labels: impl IntoIterator<Item = (String, String)>,
        fields: Vec<(&'static str, String)>,
    ) -> Self {
        let mut labels: Vec<(Box<str>, Box<str>)> = labels
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
            .collect();
        labels.sort();
        let mut fields: Vec<(&'static str, Box<str>)> = fields
            .into_iter()
            .map(|(k, v)| (k, v.into_boxed_str()))
            .collect();
        fields.sort();
        Self {
            labels: labels.into_boxed_slice(),
            fields: fields.into_boxed_slice(),
        }
    }

    /// One label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.labels[i].1)
    }

    /// One selectable field's value.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .binary_search_by(|(k, _)| (*k).cmp(name))
            .ok()
            .map(|i| &*self.fields[i].1)
    }
}

/// What the cache keeps of a stored value besides its bytes.
#[derive(Debug, Clone)]
pub struct Decorated {
    /// Selectable attributes.
    pub attrs: Attrs,
    /// The bytes sent to clients (JSON with `metadata.resourceVersion` set).
    pub output: Bytes,
    /// Keep the stored bytes in [`Entry::kv`] too. When false (the output says everything the
    /// server needs), `kv.value` is left empty to halve the cache's memory.
    pub keep_value: bool,
}

/// Computes [`Decorated`] for a stored value. Supplied by the API server, which knows the kinds.
pub trait Decorator: Send + Sync + 'static {
    /// `revision` is the value's `mod_revision` (for a deleted object, the deletion's revision).
    fn decorate(&self, key: &str, value: &[u8], revision: Revision) -> Decorated;
}

/// One cached object version.
#[derive(Debug)]
pub struct Entry {
    /// The stored key/value with revisions.
    pub kv: KeyValue,
    /// Selectable attributes.
    pub attrs: Attrs,
    /// The JSON clients get.
    pub output: Bytes,
}

/// A change, as the cache delivers it to watchers.
#[derive(Debug)]
pub struct CacheEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The object after the change; for a delete, its last state at the deletion's revision.
    pub entry: Arc<Entry>,
    /// The object before the change, if it existed.
    pub prev: Option<Arc<Entry>>,
}

impl CacheEvent {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.entry.kv.mod_revision
    }
}

struct History {
    events: VecDeque<Arc<CacheEvent>>,
    /// A watch may start after any revision >= `oldest`.
    oldest: Revision,
}

struct State {
    revision: Revision,
    objects: BTreeMap<String, Arc<Entry>>,
    histories: HashMap<String, History>,
    /// Revision the cache was (re)built at; histories of resources without events start here.
    built_at: Revision,
}

/// The watch cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    state: Arc<RwLock<State>>,
    revision: watch::Receiver<Revision>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("revision", &*self.revision.borrow())
            .finish()
    }
}

/// A page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// Matching objects, sorted by key.
    pub items: Vec<Arc<Entry>>,
    /// The revision the list reflects.
    pub revision: Revision,
    /// When the page was cut short by the limit: the last key returned.
    pub continue_after: Option<String>,
    /// When cut short: how many more matching objects there are.
    pub remaining: usize,
}

/// The resource segment of a key: `/registry/<resource>/...`.
pub fn resource_of(key: &str) -> &str {
    key.trim_start_matches('/').split('/').nth(1).unwrap_or("")
}

fn prefix_range<'a>(
    objects: &'a BTreeMap<String, Arc<Entry>>,
    prefix: &str,
    after: Option<&str>,
) -> impl Iterator<Item = &'a Arc<Entry>> + 'a {
    use std::ops::Bound;
    let start = match after {
        Some(k) if k >= prefix => Bound::Excluded(k.to_string()),
        _ => Bound::Included(prefix.to_string()),
    };
    let prefix = prefix.to_string();
    objects
        .range((start, Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| v)
}

impl Cache {
    /// Lists `prefix` from `backend`, then follows its watch in a background task.
    pub async fn start(
        backend: Arc<dyn Backend>,
        prefix: &str,
        decorator: Arc<dyn Decorator>,
    ) -> Result<Cache, StoreError> {
        let (items, revision) = backend.list(prefix).await?;
        let state = Arc::new(RwLock::new(build_state(
            items,
            revision,
            decorator.as_ref(),
        )));
        let (tx, rx) = watch::channel(revision);
        let cache = Cache {
            state: state.clone(),
            revision: rx,
        };
        let prefix = prefix.to_string();
        tokio::spawn(follow(backend, prefix, decorator, state, tx, revision));
        Ok(cache)
    }

    /// The revision the cache reflects.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Waits until the cache reflects at least `revision`; false on timeout.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.revision.clone();
        tokio::time::timeout(timeout, rx.wait_for(|&r| r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A receiver that changes whenever the cache's revision does.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.revision.clone()
    }

    /// The current version of one key.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.state
            .read()
            .expect("cache lock")
            .objects
            .get(key)
            .cloned()
    }

    /// Objects under `prefix` (after `after`, when continuing) that pass `filter`, at most
    /// `limit` of them.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
        filter: &dyn Fn(&Entry) -> bool,
    ) -> ListPage {
        let st = self.state.read().expect("cache lock");
        let mut items = Vec::new();
        let mut iter = prefix_range(&st.objects, prefix, after).filter(|e| filter(e));
        let limit = limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
        for e in iter.by_ref() {
            items.push(e.clone());
            if items.len() == limit {
                break;
            }
        }
        let remaining = if items.len() == limit {
            iter.count()
        } else {
            0
        };
        let continue_after = if remaining > 0 {
            items.last().map(|e| e.kv.key.clone())
        } else {
            None
        };
        ListPage {
            items,
            revision: st.revision,
            continue_after,
            remaining,
        }
    }

    /// Like [`list`](Self::list), but as the objects were at `revision` (a consistent snapshot
    /// for paging): changes after it are undone from the resource's history.
    /// `Err(Compacted)` when the history no longer reaches back to it.
    pub fn list_at(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
        filter: &dyn Fn(&Entry) -> bool,
        revision: Revision,
    ) -> Result<ListPage, StoreError> {
        let st = self.state.read().expect("cache lock");
        if revision >= st.revision {
            drop(st);
            return Ok(self.list(prefix, after, limit, filter));
        }
        let resource = resource_of(prefix);
        let history = st.histories.get(resource);
        let oldest = history.map_or(st.built_at, |h| h.oldest);
        if revision < oldest {
            return Err(StoreError::Compacted {
                requested: revision,
                oldest,
            });
        }
        // The state at `revision` of every key changed since: the `prev` of its first later event.
        let mut at: BTreeMap<String, Option<Arc<Entry>>> = BTreeMap::new();
        if let Some(h) = history {
            let start = h.events.partition_point(|e| e.revision() <= revision);
            for ev in h.events.range(start..) {
                let key = &ev.entry.kv.key;
                if key.starts_with(prefix) && !at.contains_key(key) {
                    at.insert(key.clone(), ev.prev.clone());
                }
            }
        }
        let mut keys: Vec<&String> = prefix_range(&st.objects, prefix, after)
            .map(|e| &e.kv.key)
            .collect();
        keys.extend(at.keys().filter(|k| after.is_none_or(|a| k.as_str() > a)));
        keys.sort();
        keys.dedup();
        let limit = limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut remaining = 0;
        for key in keys {
            let entry = match at.get(key) {
                Some(state) => state.clone(),
                None => st.objects.get(key).cloned(),
            };
            let Some(entry) = entry.filter(|e| filter(e)) else {
                continue;
            };
            if items.len() < limit {
                items.push(entry);
            } else {
                remaining += 1;
            }
        }
        let continue_after = if remaining > 0 {
            items.last().map(|e| e.kv.key.clone())
        } else {
            None
        };
        Ok(ListPage {
            items,
            revision,
            continue_after,
            remaining,
        })
    }

    /// Number of objects under `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        let st = self.state.read().expect("cache lock");
        prefix_range(&st.objects, prefix, None).count()
    }

    /// Starts a watch of `prefix` delivering every change after `after`.
    pub fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher, StoreError> {
        let st = self.state.read().expect("cache lock");
        let resource = resource_of(prefix).to_string();
        let oldest = st
            .histories
            .get(&resource)
            .map_or(st.built_at, |h| h.oldest);
        if after < oldest {
            return Err(StoreError::Compacted {
                requested: after,
                oldest,
            });
        }
        Ok(Watcher {
            state: self.state.clone(),
            revision: self.revision.clone(),
            prefix: prefix.to_string(),
            resource,
            cursor: after,
        })
    }
}

/// A watch on the cache; see [`Cache::watch`].
pub struct Watcher {
    state: Arc<RwLock<State>>,
    revision: watch::Receiver<Revision>,
    prefix: String,
    resource: String,
    cursor: Revision,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("prefix", &self.prefix)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl Watcher {
    /// The revision of the last change delivered (or the start revision).
    pub fn cursor(&self) -> Revision {
        self.cursor
    }

    /// Waits for the next changes. `Err(Compacted)` when the watcher fell behind the retained
    /// history; `Err(Closed)` when the cache stopped.
    pub async fn next(&mut self) -> Result<Vec<Arc<CacheEvent>>, StoreError> {
        loop {
            let current = *self.revision.borrow_and_update();
            if current > self.cursor {
                let batch = self.collect()?;
                self.cursor = current;
                if !batch.is_empty() {
                    return Ok(batch);
                }
                continue;
            }
            self.revision
                .changed()
                .await
                .map_err(|_| StoreError::Closed)?;
        }
    }

    fn collect(&self) -> Result<Vec<Arc<CacheEvent>>, StoreError> {
        let st = self.state.read().expect("cache lock");
        let Some(h) = st.histories.get(&self.resource) else {
            return if self.cursor < st.built_at {
                Err(StoreError::Compacted {
                    requested: self.cursor,
                    oldest: st.built_at,
                })
            } else {
                Ok(Vec::new())
            };
        };
        if self.cursor < h.oldest {
            return Err(StoreError::Compacted {
                requested: self.cursor,
                oldest: h.oldest,
            });
        }
        let start = h.events.partition_point(|e| e.revision() <= self.cursor);
        Ok(h.events
            .range(start..)
            .filter(|e| e.entry.kv.key.starts_with(&self.prefix))
            .cloned()
            .collect())
    }
}

fn entry_of(mut kv: KeyValue, d: Decorated) -> Entry {
    if !d.keep_value {
        kv.value = Bytes::new();
    }
    Entry {
        kv,
        attrs: d.attrs,
        output: d.output,
    }
}

fn build_state(items: Vec<KeyValue>, revision: Revision, decorator: &dyn Decorator) -> State {
    // Consumes the listing: each stored value is dropped as soon as it is decorated, so a
    // start never holds every object twice.
    let mut objects = BTreeMap::new();
    for kv in items {
        let d = decorator.decorate(&kv.key, &kv.value, kv.mod_revision);
        objects.insert(kv.key.clone(), Arc::new(entry_of(kv, d)));
    }
    State {
        revision,
        objects,
        histories: HashMap::new(),
        built_at: revision,
    }
}

fn apply(state: &RwLock<State>, events: Vec<Event>, decorator: &dyn Decorator) -> Revision {
    // Decorate outside the lock: it parses JSON.
    let decorated: Vec<(Event, Decorated)> = events
        .into_iter()
        .map(|e| {
            let d = decorator.decorate(&e.kv.key, &e.kv.value, e.kv.mod_revision);
            (e, d)
        })
        .collect();
    let mut st = state.write().expect("cache lock");
    for (ev, d) in decorated {
        let rev = ev.revision();
        if rev <= st.revision {
            continue; // already reflected (a re-list overlapped the watch)
        }
        let entry = Arc::new(entry_of(ev.kv.clone(), d));
        let prev = match ev.kind {
            EventKind::Put => st.objects.insert(ev.kv.key.clone(), entry.clone()),
            EventKind::Delete => st.objects.remove(&ev.kv.key),
        };
        let built_at = st.built_at;
        let h = st
            .histories
            .entry(resource_of(&ev.kv.key).to_string())
            .or_insert_with(|| History {
                events: VecDeque::new(),
                oldest: built_at,
            });
        h.events.push_back(Arc::new(CacheEvent {
            kind: ev.kind,
            entry,
            prev,
        }));
        while h.events.len() > HISTORY_PER_RESOURCE {
            let old = h.events.pop_front().expect("non-empty");
            h.oldest = old.revision();
        }
    }
    st.revision
}

/// Follows the backend's watch into the cache. `revision` is how far the cache is known to
/// be current (events, or a progress report saying nothing under the prefix changed up to
/// it); `events_rev` is the last revision whose events were applied. A broken watch resumes
/// after `events_rev`, not after `revision`: etcd before 3.4.24 can report progress past
/// events it has not sent yet (to a watcher still catching up), and resuming after such a
/// report would lose those events for good. An event at or below `revision` proves that
/// happened: the cache is then rebuilt from a fresh list.
async fn follow(
    backend: Arc<dyn Backend>,
    prefix: String,
    decorator: Arc<dyn Decorator>,
    state: Arc<RwLock<State>>,
    tx: watch::Sender<Revision>,
    mut revision: Revision,
) {
    let mut events_rev = revision;
    loop {
        let mut stream = match backend.watch_with_progress(&prefix, events_rev) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "watch cache: cannot watch; re-listing");
                revision = relist(&backend, &prefix, &decorator, &state, &tx, revision).await;
                events_rev = revision;
                continue;
            }
        };
        loop {
            if tx.is_closed() && tx.receiver_count() == 0 {
                return; // every Cache handle is gone
            }
            match stream.next().await {
                Some(Ok(WatchItem::Events(events))) => {
                    if events.first().is_some_and(|e| e.revision() <= revision) {
                        tracing::warn!(
                            revision,
                            first = events.first().map(Event::revision),
                            "watch cache: events older than a progress report; re-listing"
                        );
                        revision =
                            relist(&backend, &prefix, &decorator, &state, &tx, revision).await;
                        events_rev = revision;
                        break;
                    }
                    let last = events.last().map(Event::revision);
                    apply(&state, events, decorator.as_ref());
                    if let Some(last) = last {
                        state.write().expect("cache lock").revision = last.max(revision);
                        revision = revision.max(last);
                        events_rev = last;
                        tx.send_replace(revision);
                    }
                }
                Some(Ok(WatchItem::Progress(at))) => {
                    if at > revision {
                        state.write().expect("cache lock").revision = at;
                        revision = at;
                        tx.send_replace(revision);
                    }
                }
                Some(Err(e @ StoreError::Compacted { .. })) => {
                    tracing::warn!(error = %e, "watch cache: watch failed; re-listing");
                    revision = relist(&backend, &prefix, &decorator, &state, &tx, revision).await;
                    events_rev = revision;
                    break;
                }
                Some(Err(e)) => {
                    // A broken connection (etcd restarting, a member gone): watch again after
                    // the last applied events; the history is still there unless compacted.
                    tracing::warn!(error = %e, "watch cache: watch failed; watching again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
                None => return, // backend closed
            }
        }
    }
}

async fn relist(
    backend: &Arc<dyn Backend>,
    prefix: &str,
    decorator: &Arc<dyn Decorator>,
    state: &RwLock<State>,
    tx: &watch::Sender<Revision>,
    current: Revision,
) -> Revision {
    loop {
        match backend.list(prefix).await {
            Ok((items, revision)) => {
                let fresh = build_state(items, revision, decorator.as_ref());
                *state.write().expect("cache lock") = fresh;
                let revision = revision.max(current);
                tx.send_replace(revision);
                return revision;
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch cache: re-list failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Txn;
    use crate::embedded::Embedded;

    struct Plain;
    impl Decorator for Plain {
        fn decorate(&self, key: &str, value: &[u8], revision: Revision) -> Decorated {
            let attrs = Attrs::new(std::iter::empty(), vec![("key", key.to_string())]);
            Decorated {
                attrs,
                output: Bytes::from(format!("{}@{}", String::from_utf8_lossy(value), revision)),
                keep_value: true,
            }
        }
    }

    async fn setup() -> (Embedded, Cache) {
        let store = Embedded::in_memory().unwrap();
        let cache = Cache::start(Arc::new(store.clone()), "/registry/", Arc::new(Plain))
            .await
            .unwrap();
        (store, cache)
    }

    async fn commit(store: &Embedded, cache: &Cache, txn: Txn) -> Revision {
        let rev = match store.txn(txn).await.unwrap() {
            crate::TxnResult::Committed { revision } => revision,
            other => panic!("{other:?}"),
        };
        assert!(cache.wait_for(rev, Duration::from_secs(5)).await);
        rev
    }

    #[tokio::test]
    async fn list_sees_committed_writes_with_decorated_output_and_pages() {
        let (store, cache) = setup().await;
        for i in 0..5 {
            commit(
                &store,
                &cache,
                Txn::new().put(format!("/registry/cm/ns/c{i}"), "v"),
            )
            .await;
        }
        commit(&store, &cache, Txn::new().put("/registry/cm/other/x", "v")).await;
        let all = cache.list("/registry/cm/ns/", None, None, &|_| true);
        assert_eq!(all.items.len(), 5);
        assert_eq!(&all.items[0].output[..], b"v@2");
        let p1 = cache.list("/registry/cm/ns/", None, Some(2), &|_| true);
        assert_eq!((p1.items.len(), p1.remaining), (2, 3));
        let after = p1.continue_after.unwrap();
        let p2 = cache.list("/registry/cm/ns/", Some(&after), Some(2), &|_| true);
        assert_eq!(p2.items[0].kv.key, "/registry/cm/ns/c2");
        let filtered = cache.list("/registry/cm/", None, None, &|e| e.kv.key.ends_with('x'));
        assert_eq!(filtered.items.len(), 1);
    }

    /// etcd before 3.4.24 can report progress past an event it has not sent yet; if the
    /// watch then breaks, resuming after the reported revision would lose that event for good.
    /// This backend does exactly that once: its first watch reports progress to the revision
    /// of a write it never delivers, then breaks.
    struct PrematureProgress {
        inner: Embedded,
        first: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<Revision>>>,
    }

    #[async_trait::async_trait]
    impl Backend for PrematureProgress {
        async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
            self.inner.list(prefix).await
        }
        async fn txn(&self, txn: Txn) -> Result<crate::TxnResult, StoreError> {
            self.inner.txn(txn).await
        }
        async fn current_revision(&self) -> Result<Revision, StoreError> {
            self.inner.current_revision().await
        }
        fn watch(&self, prefix: &str, after: Revision) -> Result<crate::WatchStream, StoreError> {
            self.inner.watch(prefix, after)
        }
        fn watch_with_progress(
            &self,
            prefix: &str,
            after: Revision,
        ) -> Result<crate::ProgressStream, StoreError> {
            use futures::StreamExt;
            match self.first.lock().unwrap().take() {
                Some(rx) => Ok(futures::stream::once(rx)
                    .flat_map(|rev| {
                        futures::stream::iter([
                            Ok(WatchItem::Progress(rev.unwrap_or_default())),
                            Err(StoreError::Backend("the member went away".into())),
                        ])
                    })
                    .boxed()),
                None => self.inner.watch_with_progress(prefix, after),
            }
        }
    }

    #[tokio::test]
    async fn a_watch_broken_after_a_premature_progress_report_loses_no_event() {
        let inner = Embedded::in_memory().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let backend = PrematureProgress {
            inner: inner.clone(),
            first: std::sync::Mutex::new(Some(rx)),
        };
        let cache = Cache::start(Arc::new(backend), "/registry/", Arc::new(Plain))
            .await
            .unwrap();
        let rev = match inner
            .txn(Txn::new().put("/registry/cm/ns/late", "v"))
            .await
            .unwrap()
        {
            crate::TxnResult::Committed { revision } => revision,
            other => panic!("{other:?}"),
        };
        tx.send(rev).unwrap();
        let seen = async {
            loop {
                let l = cache.list("/registry/cm/ns/", None, None, &|_| true);
                if !l.items.is_empty() {
                    return l;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let l = tokio::time::timeout(Duration::from_secs(5), seen)
            .await
            .expect("the write the broken watch never delivered reaches the cache");
        assert_eq!(l.items[0].kv.key, "/registry/cm/ns/late");
        assert!(l.revision >= rev);
    }

    #[tokio::test]
    async fn watch_replays_from_revision_and_follows() {
        let (store, cache) = setup().await;
        let r1 = commit(&store, &cache, Txn::new().put("/registry/cm/ns/a", "1")).await;
        commit(&store, &cache, Txn::new().put("/registry/svc/ns/a", "1")).await;
        commit(&store, &cache, Txn::new().put("/registry/cm/ns/a", "2")).await;
        let mut w = cache.watch("/registry/cm/", r1 - 1).unwrap();
        let batch = w.next().await.unwrap();
        assert_eq!(batch.len(), 2);
        assert!(batch[0].prev.is_none());
        assert_eq!(&batch[1].prev.as_ref().unwrap().output[..], b"1@2");
        let store2 = store.clone();
        tokio::spawn(async move { store2.txn(Txn::new().delete("/registry/cm/ns/a")).await });
        let batch = w.next().await.unwrap();
        assert_eq!(batch[0].kind, EventKind::Delete);
        assert_eq!(&batch[0].entry.output[..], b"2@5");
    }

    #[tokio::test]
    async fn list_at_an_older_revision_undoes_later_changes() {
        let (store, cache) = setup().await;
        for i in 0..4 {
            commit(
                &store,
                &cache,
                Txn::new().put(format!("/registry/cm/ns/c{i}"), "v1"),
            )
            .await;
        }
        let snapshot = cache.revision();
        commit(&store, &cache, Txn::new().delete("/registry/cm/ns/c1")).await;
        commit(&store, &cache, Txn::new().put("/registry/cm/ns/c2", "v2")).await;
        commit(&store, &cache, Txn::new().put("/registry/cm/ns/c9", "v1")).await;
        let page = cache
            .list_at(
                "/registry/cm/ns/",
                Some("/registry/cm/ns/c0"),
                Some(2),
                &|_| true,
                snapshot,
            )
            .unwrap();
        let keys: Vec<&str> = page.items.iter().map(|e| e.kv.key.as_str()).collect();
        assert_eq!(keys, vec!["/registry/cm/ns/c1", "/registry/cm/ns/c2"]);
        assert!(page.items[1].output.starts_with(b"v1@"), "c2 as it was");
        assert_eq!((page.remaining, page.revision), (1, snapshot));
        let rest = cache
            .list_at(
                "/registry/cm/ns/",
                page.continue_after.as_deref(),
                Some(2),
                &|_| true,
                snapshot,
            )
            .unwrap();
        let keys: Vec<&str> = rest.items.iter().map(|e| e.kv.key.as_str()).collect();
        assert_eq!(keys, vec!["/registry/cm/ns/c3"], "c9 did not exist yet");
        assert!(matches!(
            cache.list_at("/registry/cm/ns/", None, None, &|_| true, 0),
            Err(StoreError::Compacted { .. })
        ));
    }

    #[tokio::test]
    async fn watch_before_the_cache_started_is_too_old() {
        let store = Embedded::in_memory().unwrap();
        store
            .txn(Txn::new().put("/registry/cm/ns/a", "1"))
            .await
            .unwrap();
        let cache = Cache::start(Arc::new(store.clone()), "/registry/", Arc::new(Plain))
            .await
            .unwrap();
        assert!(matches!(
            cache.watch("/registry/cm/", 1),
            Err(StoreError::Compacted {
                requested: 1,
                oldest: 2
            })
        ));
        assert!(cache.watch("/registry/cm/", 2).is_ok());
    }
}
