//! A fault-injection point behind the embedded store: [`ProbedFile`] is redb's file backend with
//! a [`DiskProbe`] that counts writes and `fsync`s (`sync_data`) in the order they happen and can
//! be told to fail every sync, as a full or failing disk would.
//!
//! It is what proves "an acknowledged write reached the disk": a commit answered `Committed`
//! must leave no write after the last successful sync, and a commit whose sync fails must be
//! answered with an error. `SIGKILL` tests cannot show this (the page cache survives the
//! process). Production opens the plain file backend ([`Embedded::open`]); tests and
//! experiments open a probed one ([`Embedded::open_probed`]).
//!
//! [`Embedded::open`]: crate::embedded::Embedded::open
//! [`Embedded::open_probed`]: crate::embedded::Embedded::open_probed

use std::fs::File;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The I/O error of redb 4's `StorageBackend` data methods.
type IoResult<T> = Result<T, std::io::Error>;

/// What happened on the disk, shared between the backend and its observer.
#[derive(Debug, Default)]
pub struct DiskProbe {
    /// A global sequence: every write and every successful sync takes the next number.
    seq: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    failed_syncs: AtomicU64,
    last_write: AtomicU64,
    last_sync: AtomicU64,
    fail_syncs: AtomicBool,
}

impl DiskProbe {
    /// A new probe, shared by the backend and the test.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Writes so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Syncs that were made to fail.
    pub fn failed_syncs(&self) -> u64 {
        self.failed_syncs.load(Ordering::SeqCst)
    }

    /// True when every write so far was followed by a successful sync.
    pub fn all_writes_synced(&self) -> bool {
        self.last_sync.load(Ordering::SeqCst) >= self.last_write.load(Ordering::SeqCst)
    }

    /// From now on every sync fails with an I/O error (`false`: syncs work again).
    pub fn fail_syncs(&self, fail: bool) {
        self.fail_syncs.store(fail, Ordering::SeqCst);
    }

    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// redb's file backend, observed by a [`DiskProbe`].
#[derive(Debug)]
pub struct ProbedFile {
    inner: FileBackend,
    probe: Arc<DiskProbe>,
}

impl ProbedFile {
    /// Wraps the database `file`.
    pub fn new(file: File, probe: Arc<DiskProbe>) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            inner: FileBackend::new(file)?,
            probe,
        })
    }
}

impl StorageBackend for ProbedFile {
    fn len(&self) -> IoResult<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> IoResult<()> {
        let r = self.inner.set_len(len);
        let seq = self.probe.next();
        self.probe.last_write.store(seq, Ordering::SeqCst);
        r
    }

    fn sync_data(&self) -> IoResult<()> {
        if self.probe.fail_syncs.load(Ordering::SeqCst) {
            self.probe.failed_syncs.fetch_add(1, Ordering::SeqCst);
            return Err(std::io::Error::other("injected fsync failure"));
        }
        self.inner.sync_data()?;
        let seq = self.probe.next();
        self.probe.syncs.fetch_add(1, Ordering::SeqCst);
        self.probe.last_sync.store(seq, Ordering::SeqCst);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        let r = self.inner.write(offset, data);
        let seq = self.probe.next();
        self.probe.writes.fetch_add(1, Ordering::SeqCst);
        self.probe.last_write.store(seq, Ordering::SeqCst);
        r
    }

    fn close(&self) -> IoResult<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
