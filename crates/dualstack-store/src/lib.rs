//! Storage for the API server.
//!
//! Start with [`Backend`]: an etcd v3-shaped key-value store. Every committed transaction gets
//! the next global [`Revision`] (the Kubernetes `resourceVersion`); a transaction is a list of
//! per-key [`Compare`]s and, when all hold, a list of [`Op`]s applied atomically; a watch streams
//! every change after a given revision. The shape is etcd's on purpose so that an etcd backend
//! fits the same trait as the embedded one.
//!
//! - [`embedded`]: the default backend. Durable (redb, fsync before a write is acknowledged),
//!   with group commit: concurrent transactions are committed together in one redb write
//!   transaction, so throughput does not stop at one fsync per write.
//! - [`etcd`]: etcd v3 (`--etcd-servers`), for several API servers on one store; its
//!   [`etcd::local`] starts real etcd members on loopback for tests and the lab.
//! - [`migrate`]: copies a store into another (`dualstack migrate`: embedded → etcd).
//! - [`probe`]: a fault-injection point behind the embedded backend (counts writes and fsyncs,
//!   fails fsyncs on demand), for the tests that prove an acknowledged write is on disk.
//! - [`cache`]: the watch cache the API server reads from (lists, gets, watches with history and
//!   `410 Gone` when the history is gone), fed by the backend's watch.

use std::fmt;

use bytes::Bytes;
use futures::stream::BoxStream;

pub mod cache;
#[cfg(test)]
mod conformance;
pub mod embedded;
pub mod etcd;
pub mod migrate;
pub mod probe;

/// The largest value a key may hold, in bytes: etcd's default `--max-request-bytes` (1.5 MiB).
/// Every backend refuses a transaction that puts a larger value, so the embedded store keeps
/// the limit the etcd one has and no watcher is ever sent an object larger than this.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// A global, strictly increasing revision. Every committed transaction has exactly one.
pub type Revision = i64;

/// A stored key with its value and revisions.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/registry/services/default/web`.
    pub key: String,
    /// The stored bytes (JSON objects in this project).
    pub value: Bytes,
    /// Revision of the transaction that created the key.
    pub create_revision: Revision,
    /// Revision of the transaction that last modified the key.
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// What a [`Compare`] requires of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The key must not exist.
    Absent,
    /// The key must exist (any revision).
    Present,
    /// The key must exist and have been last modified at exactly this revision.
    ModRevision(Revision),
}

/// A precondition on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key.
    pub key: String,
    /// What must hold.
    pub condition: Condition,
}

impl Compare {
    /// `key` must not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            condition: Condition::Absent,
        }
    }

    /// `key` must exist at `revision`.
    pub fn mod_revision(key: impl Into<String>, revision: Revision) -> Self {
        Self {
            key: key.into(),
            condition: Condition::ModRevision(revision),
        }
    }

    /// `key` must exist.
    pub fn present(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            condition: Condition::Present,
        }
    }

    /// Whether the condition holds for the current value of the key.
    pub fn holds(&self, current: Option<&KeyValue>) -> bool {
        match (self.condition, current) {
            (Condition::Absent, None) => true,
            (Condition::Present, Some(_)) => true,
            (Condition::ModRevision(r), Some(kv)) => kv.mod_revision == r,
            _ => false,
        }
    }
}

/// A change applied when every compare holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace the value of a key.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
    },
    /// Delete a key (a no-op when absent).
    Delete {
        /// The key.
        key: String,
    },
}

impl Op {
    /// The key this op writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// An atomic multi-key transaction: all `compares` must hold, then all `ops` apply together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Preconditions.
    pub compares: Vec<Compare>,
    /// Changes.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a precondition.
    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Refuses a put of a value over [`MAX_VALUE_BYTES`]; every backend calls it first.
    pub fn check_value_sizes(&self) -> Result<(), StoreError> {
        for op in &self.ops {
            if let Op::Put { key, value } = op
                && value.len() > MAX_VALUE_BYTES
            {
                return Err(StoreError::ValueTooLarge {
                    key: key.clone(),
                    size: value.len(),
                    limit: MAX_VALUE_BYTES,
                });
            }
        }
        Ok(())
    }
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnResult {
    /// Every compare held; the ops were committed durably at `revision`.
    Committed {
        /// The transaction's revision.
        revision: Revision,
    },
    /// A compare failed; nothing was written.
    Failed {
        /// Index of the first compare that failed.
        index: usize,
        /// The current value of that compare's key.
        current: Option<KeyValue>,
    },
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or modified.
    Put,
    /// Deleted.
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put, the new value. For a delete, the last value with `mod_revision` set to the
    /// deletion's revision (what Kubernetes sends in a DELETED event).
    pub kv: KeyValue,
    /// The value before this change, if the key existed.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision of the transaction that made this change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A stream of changes in revision order. Each item holds every event of one or more whole
/// revisions (a transaction's events are never split across items).
pub type WatchStream = BoxStream<'static, Result<Vec<Event>, StoreError>>;

/// What a [`Backend::watch_with_progress`] stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Every event of one or more whole revisions, as [`WatchStream`] items.
    Events(Vec<Event>),
    /// No event under the prefix up to this revision: a reader waiting for it may go on.
    Progress(Revision),
}

/// A [`WatchStream`] with progress reports.
pub type ProgressStream = BoxStream<'static, Result<WatchItem, StoreError>>;

/// Storage failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The history needed to watch from this revision is gone.
    #[error("required revision {requested} has been compacted (oldest available {oldest})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision a watch can start after.
        oldest: Revision,
    },
    /// A revision newer than the store's.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// The backend failed (disk, database or network); nothing was acknowledged.
    #[error("storage backend failure: {0}")]
    Backend(String),
    /// The store is shutting down.
    #[error("storage is closed")]
    Closed,
    /// A put's value is larger than [`MAX_VALUE_BYTES`]; nothing was written.
    #[error("value of {key} is {size} bytes, over the limit of {limit}")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// An etcd v3-shaped key-value store with revisions, compare-and-swap and watch.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The value of one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key starting with `prefix`, sorted by key, and the revision they were read at.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;

    /// Runs a transaction. `Committed` means durably stored.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;

    /// The latest committed revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// Every change to keys starting with `prefix` with a revision greater than `after`.
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// [`Backend::watch`] with progress reports: a backend whose revisions also count writes
    /// outside the watched prefix (etcd, shared with other writers) reports how far the watch
    /// has got, so a reader waiting for [`Backend::current_revision`] is not held up by them.
    fn watch_with_progress(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<ProgressStream, StoreError> {
        use futures::StreamExt;
        Ok(self
            .watch(prefix, after)?
            .map(|r| r.map(WatchItem::Events))
            .boxed())
    }

    /// The name of the store's check in `/readyz` and `/livez` (`etcd` as upstream's for
    /// etcd).
    fn health_check_name(&self) -> &'static str {
        "storage"
    }

    /// Whether the store answers now (the API server's `/readyz` check `etcd`). The embedded
    /// store always does.
    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
