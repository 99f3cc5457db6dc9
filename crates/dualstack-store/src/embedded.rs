//! The embedded, durable backend: a redb database file with group commit.
//!
//! Layout: table `kv` maps each key to `create_revision (8 bytes LE) | mod_revision (8 bytes
//! LE) | value`; table `meta` holds the latest committed `revision`. A fresh store starts at
//! revision 1 (as etcd does), so the first transaction commits at 2 and `0` never names a state.
//!
//! Writes go through one committer thread. It takes every transaction queued at the moment
//! (up to [`MAX_BATCH`]), evaluates each one's compares in order against the database as
//! modified by the earlier ones of the same batch, gives each successful transaction the next
//! revision, writes them all in one redb write transaction and commits it with
//! `Durability::Immediate` (fsync). Only then are the callers answered and the events published
//! to watchers: an acknowledged write is on disk, and a `kill -9` at any moment loses nothing
//! acknowledged (redb's commit is atomic and checksummed). If the commit fails, every
//! transaction of the batch fails and nothing is published.
//!
//! Watch history is kept in memory only (the last [`HISTORY`] events); after a restart a watch
//! can start from the revision the store opened at. The API server's watch cache keeps its own,
//! longer history.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};

use bytes::Bytes;
use futures::StreamExt;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::probe::{DiskProbe, ProbedFile};
use crate::{
    Backend, Event, EventKind, KeyValue, Op, Revision, StoreError, Txn, TxnResult, WatchStream,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";

/// redb page cache size.
pub const CACHE_BYTES: usize = 32 << 20;
/// Most transactions committed together.
pub const MAX_BATCH: usize = 4096;
/// Events kept in memory for watches that start in the past.
pub const HISTORY: usize = 10_000;

struct Request {
    txn: Txn,
    reply: oneshot::Sender<Result<TxnResult, StoreError>>,
}

struct History {
    events: VecDeque<Event>,
    /// A watch may start after any revision >= `oldest`.
    oldest: Revision,
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    prefix: String,
    tx: mpsc::UnboundedSender<Vec<Event>>,
}

struct Shared {
    db: Database,
    revision: AtomicI64,
    history: Mutex<History>,
}

/// The embedded backend. Cheap to clone; all clones share the database.
#[derive(Clone)]
pub struct Embedded {
    shared: Arc<Shared>,
    requests: std_mpsc::SyncSender<Request>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("revision", &self.shared.revision.load(Ordering::SeqCst))
            .finish()
    }
}

fn backend_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode(create: Revision, modified: Revision, value: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + value.len());
    buf.extend_from_slice(&create.to_le_bytes());
    buf.extend_from_slice(&modified.to_le_bytes());
    buf.extend_from_slice(value);
    buf
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    if raw.len() < 16 {
        return Err(StoreError::Backend(format!("corrupt record for key {key}")));
    }
    let create = i64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
    let modified = i64::from_le_bytes(raw[8..16].try_into().expect("8 bytes"));
    Ok(KeyValue {
        key: key.to_string(),
        value: Bytes::copy_from_slice(&raw[16..]),
        create_revision: create,
        mod_revision: modified,
    })
}

/// The first key after every key that starts with `prefix` (etcd's range end).
fn prefix_end(prefix: &str) -> String {
    let mut s = prefix.to_string();
    s.push(char::MAX);
    s
}

impl Embedded {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // The watch cache above holds every object; redb's page cache only needs to keep the
        // B-tree's upper levels and recent pages (its default is 1 GiB).
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(backend_err)?;
        Self::start(db)
    }

    /// Opens (or creates) the database at `path` through a [`ProbedFile`] observed by `probe`:
    /// the same store, with its writes and fsyncs counted and fsync failures injectable.
    pub fn open_probed(path: &Path, probe: Arc<DiskProbe>) -> Result<Self, StoreError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(backend_err)?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(ProbedFile::new(file, probe).map_err(backend_err)?)
            .map_err(backend_err)?;
        Self::start(db)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(backend_err)?;
        Self::start(db)
    }

    fn start(db: Database) -> Result<Self, StoreError> {
        let revision = {
            let mut wtx = db.begin_write().map_err(backend_err)?;
            wtx.set_durability(Durability::Immediate)
                .map_err(backend_err)?;
            let rev = {
                let mut meta = wtx.open_table(META).map_err(backend_err)?;
                wtx.open_table(KV).map_err(backend_err)?;
                let rev = meta
                    .get(REVISION_KEY)
                    .map_err(backend_err)?
                    .map(|g| g.value());
                match rev {
                    Some(r) => r,
                    None => {
                        meta.insert(REVISION_KEY, 1).map_err(backend_err)?;
                        1
                    }
                }
            };
            wtx.commit().map_err(backend_err)?;
            rev
        };
        let shared = Arc::new(Shared {
            db,
            revision: AtomicI64::new(revision),
            history: Mutex::new(History {
                events: VecDeque::new(),
                oldest: revision,
                subscribers: Vec::new(),
            }),
        });
        let (tx, rx) = std_mpsc::sync_channel::<Request>(MAX_BATCH * 4);
        let committer = shared.clone();
        std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || commit_loop(committer, rx))
            .map_err(backend_err)?;
        Ok(Self {
            shared,
            requests: tx,
        })
    }
}

fn commit_loop(shared: Arc<Shared>, rx: std_mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let start = shared.revision.load(Ordering::SeqCst);
        match commit_batch(&shared.db, start, &batch) {
            Ok((results, events, revision)) => {
                shared.revision.store(revision, Ordering::SeqCst);
                publish(&shared, events);
                for (req, result) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "storage commit failed; {} transactions failed", batch.len());
                for req in batch {
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

type BatchOutcome = (Vec<TxnResult>, Vec<Event>, Revision);

fn commit_batch(
    db: &Database,
    start: Revision,
    batch: &[Request],
) -> Result<BatchOutcome, StoreError> {
    let mut wtx = db.begin_write().map_err(backend_err)?;
    // Said explicitly rather than left to redb's default: the commit returns only after the
    // data and the new root are fsynced, and only then is anyone answered.
    wtx.set_durability(Durability::Immediate)
        .map_err(backend_err)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let mut rev = start;
    {
        let mut kv = wtx.open_table(KV).map_err(backend_err)?;
        let read =
            |kv: &redb::Table<&str, &[u8]>, key: &str| -> Result<Option<KeyValue>, StoreError> {
                match kv.get(key).map_err(backend_err)? {
                    Some(g) => Ok(Some(decode(key, g.value())?)),
                    None => Ok(None),
                }
            };
        'txns: for req in batch {
            for (index, compare) in req.txn.compares.iter().enumerate() {
                let current = read(&kv, &compare.key)?;
                if !compare.holds(current.as_ref()) {
                    results.push(TxnResult::Failed { index, current });
                    continue 'txns;
                }
            }
            if req.txn.ops.is_empty() {
                results.push(TxnResult::Committed { revision: rev });
                continue;
            }
            rev += 1;
            for op in &req.txn.ops {
                let prev = read(&kv, op.key())?;
                match op {
                    Op::Put { key, value } => {
                        let create = prev.as_ref().map_or(rev, |p| p.create_revision);
                        kv.insert(key.as_str(), encode(create, rev, value).as_slice())
                            .map_err(backend_err)?;
                        events.push(Event {
                            kind: EventKind::Put,
                            kv: KeyValue {
                                key: key.clone(),
                                value: value.clone(),
                                create_revision: create,
                                mod_revision: rev,
                            },
                            prev,
                        });
                    }
                    Op::Delete { key } => {
                        if let Some(prev) = prev {
                            kv.remove(key.as_str()).map_err(backend_err)?;
                            let mut last = prev.clone();
                            last.mod_revision = rev;
                            events.push(Event {
                                kind: EventKind::Delete,
                                kv: last,
                                prev: Some(prev),
                            });
                        }
                    }
                }
            }
            results.push(TxnResult::Committed { revision: rev });
        }
        let mut meta = wtx.open_table(META).map_err(backend_err)?;
        meta.insert(REVISION_KEY, rev).map_err(backend_err)?;
    }
    if rev == start {
        // Nothing to persist (every transaction failed or was empty).
        wtx.abort().map_err(backend_err)?;
    } else {
        wtx.commit().map_err(backend_err)?;
    }
    Ok((results, events, rev))
}

fn publish(shared: &Shared, events: Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let mut h = shared.history.lock().expect("history lock");
    h.subscribers.retain(|s| {
        let mine: Vec<Event> = events
            .iter()
            .filter(|e| e.kv.key.starts_with(&s.prefix))
            .cloned()
            .collect();
        mine.is_empty() || s.tx.send(mine).is_ok()
    });
    h.events.extend(events);
    while h.events.len() > HISTORY {
        let ev = h.events.pop_front().expect("non-empty");
        h.oldest = ev.revision();
    }
}

#[async_trait::async_trait]
impl Backend for Embedded {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let rtx = self.shared.db.begin_read().map_err(backend_err)?;
        let kv = rtx.open_table(KV).map_err(backend_err)?;
        match kv.get(key).map_err(backend_err)? {
            Some(g) => Ok(Some(decode(key, g.value())?)),
            None => Ok(None),
        }
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let rtx = self.shared.db.begin_read().map_err(backend_err)?;
        let meta = rtx.open_table(META).map_err(backend_err)?;
        let revision = meta
            .get(REVISION_KEY)
            .map_err(backend_err)?
            .map_or(1, |g| g.value());
        let kv = rtx.open_table(KV).map_err(backend_err)?;
        let end = prefix_end(prefix);
        let mut out = Vec::new();
        for item in kv
            .range::<&str>(prefix..end.as_str())
            .map_err(backend_err)?
        {
            let (k, v) = item.map_err(backend_err)?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok((out, revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        txn.check_value_sizes()?;
        let (reply, rx) = oneshot::channel();
        let requests = self.requests.clone();
        // The queue is bounded; a full queue blocks the sender briefly, so send off the runtime.
        match requests.try_send(Request { txn, reply }) {
            Ok(()) => {}
            Err(std_mpsc::TrySendError::Full(req)) => {
                tokio::task::spawn_blocking(move || requests.send(req))
                    .await
                    .map_err(backend_err)?
                    .map_err(|_| StoreError::Closed)?;
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.revision.load(Ordering::SeqCst))
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let mut h = self.shared.history.lock().expect("history lock");
        if after < h.oldest {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: h.oldest,
            });
        }
        let backlog: Vec<Event> = h
            .events
            .iter()
            .filter(|e| e.revision() > after && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        h.subscribers.push(Subscriber {
            prefix: prefix.to_string(),
            tx,
        });
        let live = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok);
        let first = if backlog.is_empty() {
            None
        } else {
            Some(Ok(backlog))
        };
        Ok(futures::stream::iter(first).chain(live).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, v: &str) -> Txn {
        Txn::new().put(key, Bytes::from(v.to_string()))
    }

    crate::conformance::backend_tests!(|| async {
        let s: std::sync::Arc<dyn Backend> = std::sync::Arc::new(Embedded::in_memory().unwrap());
        (s, ())
    });

    #[tokio::test]
    async fn a_watch_from_before_the_history_is_compacted() {
        let s = Embedded::in_memory().unwrap();
        s.txn(put("/w/a", "1")).await.unwrap();
        assert!(matches!(
            s.watch("/w/", 0),
            Err(StoreError::Compacted { .. })
        ));
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = Embedded::open(&path).unwrap();
            s.txn(put("/a", "1")).await.unwrap();
            s.txn(put("/b", "1")).await.unwrap();
            s.txn(Txn::new().delete("/b")).await.unwrap();
        }
        // The committer thread exits when the last handle is dropped; wait for the file lock.
        let s = loop {
            match Embedded::open(&path) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        assert_eq!(s.current_revision().await.unwrap(), 4);
        assert!(s.get("/a").await.unwrap().is_some());
        assert!(s.get("/b").await.unwrap().is_none());
        let r = s.txn(put("/c", "1")).await.unwrap();
        assert_eq!(r, TxnResult::Committed { revision: 5 });
    }

    /// Opens `path` once the previous handle's committer thread has let go of the file lock.
    async fn reopen(path: &std::path::Path) -> Embedded {
        for _ in 0..500 {
            if let Ok(s) = Embedded::open(path) {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the store at {} did not reopen", path.display());
    }

    #[tokio::test]
    async fn every_acknowledged_commit_was_fsynced_after_its_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let probe = DiskProbe::new();
        let s = Embedded::open_probed(&dir.path().join("db"), probe.clone()).unwrap();
        for i in 0..20 {
            let (writes, syncs) = (probe.writes(), probe.syncs());
            let r = s.txn(put(&format!("/k{i}"), "v")).await.unwrap();
            assert!(matches!(r, TxnResult::Committed { .. }), "{r:?}");
            assert!(probe.writes() > writes, "commit {i} wrote nothing");
            assert!(
                probe.syncs() > syncs,
                "commit {i} was acknowledged without an fsync"
            );
            assert!(
                probe.all_writes_synced(),
                "commit {i} was acknowledged with a write after its last fsync"
            );
        }
        assert_eq!(probe.failed_syncs(), 0);
    }

    #[tokio::test]
    async fn a_failing_fsync_fails_the_commit_and_nothing_is_acknowledged_or_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let probe = DiskProbe::new();
        let s = Embedded::open_probed(&path, probe.clone()).unwrap();
        s.txn(put("/before", "1")).await.unwrap();
        let rev = s.current_revision().await.unwrap();
        let mut w = s.watch("/", rev).unwrap();
        probe.fail_syncs(true);
        let r = s.txn(put("/lost", "1")).await;
        assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
        assert!(probe.failed_syncs() > 0, "the commit never synced");
        // Not published, not readable, no new revision.
        let published = tokio::time::timeout(std::time::Duration::from_millis(300), w.next()).await;
        assert!(
            published.is_err(),
            "a failed commit was published: {published:?}"
        );
        assert!(!matches!(s.get("/lost").await, Ok(Some(_))));
        assert_eq!(s.current_revision().await.unwrap(), rev);
        // After a failed fsync the page cache's state is unknown (a retried fsync may report
        // success for data already lost), so nothing more is acknowledged until the store is
        // reopened, even once the disk works again.
        probe.fail_syncs(false);
        let after = s.txn(put("/after", "1")).await;
        assert!(matches!(after, Err(StoreError::Backend(_))), "{after:?}");
        drop(w);
        drop(s);
        // Reopened, the store is consistent: the unacknowledged write is there with its own
        // revision or not at all (the page cache may have kept it; it was never promised).
        let s = reopen(&path).await;
        assert!(s.get("/before").await.unwrap().is_some());
        assert!(s.get("/after").await.unwrap().is_none());
        let now = s.current_revision().await.unwrap();
        let lost = s.get("/lost").await.unwrap().map(|kv| kv.mod_revision);
        assert!(
            (now == rev && lost.is_none()) || (now == rev + 1 && lost == Some(rev + 1)),
            "revision {now}, /lost at {lost:?}"
        );
        assert!(matches!(
            s.txn(put("/next", "1")).await.unwrap(),
            TxnResult::Committed { .. }
        ));
    }
}
