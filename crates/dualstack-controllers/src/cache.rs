//! An indexed object cache fed by kube-runtime watcher events (client-go's informer store with
//! indexers), reporting what changed so controllers can react to old and new states.
//!
//! * `Init`/`InitApply`/`InitDone` (a list or relist) are buffered and swapped in at once; the
//!   swap reports objects that appeared, changed or vanished meanwhile, so a relist after a
//!   missed watch window still produces the deletes.
//! * An event whose `resourceVersion` equals the cached one (the echo of our own write, applied
//!   earlier with [`Cache::write_through`]) reports nothing; an older one (numerically, when both
//!   parse) is ignored, so a write-through is never undone by a late event.
//! * An optional index function maps an object to index values (for example
//!   `namespace/label=value`), answered by [`Cache::by_index`].
//!
//! No I/O: the edge feeds it ([`crate::run`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::watcher::Event;

/// `namespace/name` of an object (`namespace` empty for cluster-scoped ones).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    /// Namespace, or empty.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjKey {
    /// A key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object.
    pub fn of<K: Resource>(obj: &K) -> Self {
        let m = obj.meta();
        Self::new(
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One object's change: `old` absent for an add, `new` absent for a delete.
#[derive(Debug)]
pub struct Change<K> {
    /// The state before.
    pub old: Option<Arc<K>>,
    /// The state after.
    pub new: Option<Arc<K>>,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        Self {
            old: self.old.clone(),
            new: self.new.clone(),
        }
    }
}

/// Maps an object to its index values.
pub type IndexFn<K> = Box<dyn Fn(&K) -> Vec<String> + Send + Sync>;

struct Inner<K> {
    objects: HashMap<ObjKey, Arc<K>>,
    index: HashMap<String, HashSet<ObjKey>>,
    relist: Option<HashMap<ObjKey, Arc<K>>>,
    synced: bool,
}

/// The cache of one resource.
pub struct Cache<K> {
    inner: RwLock<Inner<K>>,
    index_fn: Option<IndexFn<K>>,
}

impl<K> fmt::Debug for Cache<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cache")
    }
}

fn rv<K: Resource>(o: &K) -> Option<&str> {
    o.meta().resource_version.as_deref()
}

/// `a` is older than `b` (both numeric).
fn older(a: Option<&str>, b: Option<&str>) -> bool {
    match (
        a.and_then(|s| s.parse::<u64>().ok()),
        b.and_then(|s| s.parse::<u64>().ok()),
    ) {
        (Some(x), Some(y)) => x < y,
        _ => false,
    }
}

impl<K: Resource + Clone> Default for Cache<K> {
    fn default() -> Self {
        Self::new(None)
    }
}

impl<K: Resource + Clone> Cache<K> {
    /// An empty cache, optionally indexed.
    pub fn new(index_fn: Option<IndexFn<K>>) -> Self {
        Self {
            inner: RwLock::new(Inner {
                objects: HashMap::new(),
                index: HashMap::new(),
                relist: None,
                synced: false,
            }),
            index_fn,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner<K>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<K>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn unindex(&self, inner: &mut Inner<K>, key: &ObjKey, obj: &K) {
        if let Some(f) = &self.index_fn {
            for v in f(obj) {
                if let Some(set) = inner.index.get_mut(&v) {
                    set.remove(key);
                    if set.is_empty() {
                        inner.index.remove(&v);
                    }
                }
            }
        }
    }

    fn reindex(&self, inner: &mut Inner<K>, key: &ObjKey, obj: &K) {
        if let Some(f) = &self.index_fn {
            for v in f(obj) {
                inner.index.entry(v).or_default().insert(key.clone());
            }
        }
    }

    fn upsert(&self, inner: &mut Inner<K>, obj: K) -> Option<Change<K>> {
        let mut obj = obj;
        strip(&mut obj);
        let key = ObjKey::of(&obj);
        let old = inner.objects.get(&key).cloned();
        if let Some(o) = &old {
            if rv(o.as_ref()) == rv(&obj) && rv(&obj).is_some() {
                return None;
            }
            if older(rv(&obj), rv(o.as_ref())) {
                return None;
            }
            self.unindex(inner, &key, o);
        }
        let new = Arc::new(obj);
        self.reindex(inner, &key, &new);
        inner.objects.insert(key, new.clone());
        Some(Change {
            old,
            new: Some(new),
        })
    }

    fn delete(&self, inner: &mut Inner<K>, obj: &K) -> Option<Change<K>> {
        let key = ObjKey::of(obj);
        let old = inner.objects.get(&key)?.clone();
        if older(rv(obj), rv(old.as_ref())) {
            return None;
        }
        self.unindex(inner, &key, &old);
        inner.objects.remove(&key);
        Some(Change {
            old: Some(old),
            new: None,
        })
    }

    /// Applies a watcher event; returns what changed.
    pub fn apply(&self, event: Event<K>) -> Vec<Change<K>> {
        let mut inner = self.write();
        match event {
            Event::Apply(obj) => self.upsert(&mut inner, obj).into_iter().collect(),
            Event::Delete(obj) => self.delete(&mut inner, &obj).into_iter().collect(),
            Event::Init => {
                inner.relist = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                if let Some(buf) = inner.relist.as_mut() {
                    buf.insert(ObjKey::of(&obj), Arc::new(obj));
                    Vec::new()
                } else {
                    self.upsert(&mut inner, obj).into_iter().collect()
                }
            }
            Event::InitDone => {
                let fresh = inner.relist.take().unwrap_or_default();
                let mut changes = Vec::new();
                for (key, new) in &fresh {
                    match inner.objects.get(key) {
                        Some(old) if rv(old.as_ref()) == rv(new.as_ref()) => {}
                        old => changes.push(Change {
                            old: old.cloned(),
                            new: Some(new.clone()),
                        }),
                    }
                }
                for (key, old) in &inner.objects {
                    if !fresh.contains_key(key) {
                        changes.push(Change {
                            old: Some(old.clone()),
                            new: None,
                        });
                    }
                }
                inner.index.clear();
                for (key, obj) in &fresh {
                    if let Some(f) = &self.index_fn {
                        for v in f(obj) {
                            inner.index.entry(v).or_default().insert(key.clone());
                        }
                    }
                }
                inner.objects = fresh;
                inner.synced = true;
                changes
            }
        }
    }

    /// Records the server's answer to our own write at once (the watch echo is then silent).
    pub fn write_through(&self, obj: K) {
        let mut inner = self.write();
        let _ = self.upsert(&mut inner, obj);
    }

    /// Forgets an object we deleted.
    pub fn remove(&self, key: &ObjKey) {
        let mut inner = self.write();
        if let Some(old) = inner.objects.remove(key) {
            self.unindex(&mut inner, key, &old);
        }
    }

    /// Whether the first list has been swapped in.
    pub fn is_synced(&self) -> bool {
        self.read().synced
    }

    /// One object.
    pub fn get(&self, key: &ObjKey) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    /// The objects with index value `value`.
    pub fn by_index(&self, value: &str) -> Vec<Arc<K>> {
        let inner = self.read();
        inner
            .index
            .get(value)
            .into_iter()
            .flatten()
            .filter_map(|k| inner.objects.get(k).cloned())
            .collect()
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// No objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops what no controller reads (managed fields, the last-applied annotation), as
/// kube-controller-manager's informer transform does: most of an object's size.
pub fn strip<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm(name: &str, rv: &str, app: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some(rv.into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn by_app() -> Option<IndexFn<ConfigMap>> {
        Some(Box::new(|c: &ConfigMap| {
            c.metadata
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| format!("{}/{k}={v}", c.metadata.namespace.as_deref().unwrap_or("")))
                .collect()
        }))
    }

    fn names(v: Vec<Arc<ConfigMap>>) -> Vec<String> {
        let mut n: Vec<String> = v.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
        n.sort();
        n
    }

    #[test]
    fn should_swap_in_a_relist_and_report_vanished_objects() {
        let c = Cache::new(by_app());
        c.apply(Event::Init);
        c.apply(Event::InitApply(cm("a", "1", "web")));
        c.apply(Event::InitApply(cm("b", "2", "web")));
        assert!(!c.is_synced() && c.is_empty());
        let changes = c.apply(Event::InitDone);
        assert_eq!(changes.len(), 2);
        assert!(c.is_synced());
        assert_eq!(names(c.by_index("default/app=web")), ["a", "b"]);
        // Relist: a unchanged, b gone, d new.
        c.apply(Event::Init);
        c.apply(Event::InitApply(cm("a", "1", "web")));
        c.apply(Event::InitApply(cm("d", "9", "db")));
        let changes = c.apply(Event::InitDone);
        let mut seen: Vec<(Option<String>, Option<String>)> = changes
            .iter()
            .map(|ch| {
                (
                    ch.old.as_ref().map(|o| o.metadata.name.clone().unwrap()),
                    ch.new.as_ref().map(|o| o.metadata.name.clone().unwrap()),
                )
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![(None, Some("d".into())), (Some("b".into()), None)]
        );
        assert_eq!(names(c.by_index("default/app=web")), ["a"]);
        assert_eq!(names(c.by_index("default/app=db")), ["d"]);
    }

    #[test]
    fn should_report_old_and_new_states_and_keep_the_index_current() {
        let c = Cache::new(by_app());
        c.apply(Event::Apply(cm("a", "1", "web")));
        let ch = c.apply(Event::Apply(cm("a", "2", "db")));
        assert_eq!(
            ch[0]
                .old
                .as_ref()
                .unwrap()
                .metadata
                .labels
                .as_ref()
                .unwrap()["app"],
            "web"
        );
        assert!(c.by_index("default/app=web").is_empty());
        assert_eq!(names(c.by_index("default/app=db")), ["a"]);
        let ch = c.apply(Event::Delete(cm("a", "3", "db")));
        assert!(ch[0].new.is_none());
        assert!(c.by_index("default/app=db").is_empty());
    }

    #[test]
    fn should_silence_the_echo_of_our_writes_and_ignore_older_events() {
        let c: Cache<ConfigMap> = Cache::default();
        c.apply(Event::Apply(cm("a", "5", "web")));
        c.write_through(cm("a", "7", "web"));
        // The watch now delivers the event of an earlier write, then the echo of ours.
        assert!(c.apply(Event::Apply(cm("a", "6", "web"))).is_empty());
        assert!(c.apply(Event::Apply(cm("a", "7", "web"))).is_empty());
        assert_eq!(
            c.get(&ObjKey::new("default", "a"))
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("7")
        );
        // A stale delete of an older incarnation is ignored.
        assert!(c.apply(Event::Delete(cm("a", "6", "web"))).is_empty());
        c.remove(&ObjKey::new("default", "a"));
        assert!(c.apply(Event::Delete(cm("a", "8", "web"))).is_empty());
        assert_eq!(ObjKey::new("", "n").to_string(), "n");
        assert_eq!(ObjKey::new("ns", "n").to_string(), "ns/n");
    }
}
