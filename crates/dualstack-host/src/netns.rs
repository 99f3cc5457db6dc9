//! Network namespaces as files.
//!
//! A namespace is kept alive by bind-mounting its nsfs file (`/proc/thread-self/ns/net` of a
//! thread that unshared it) onto a plain file, as `ip netns add` does under `/run/netns`; here
//! the file may live anywhere (a lab's data dir, an agent's root dir).
//!
//! Namespaces are per thread in Linux: [`run_in`] runs a closure on a fresh thread that has
//! joined the namespace, so the caller's threads never change namespace. A process spawned from
//! that closure (`std::process::Command::spawn`) starts in the namespace: fork copies the
//! calling thread's namespaces. Sockets keep the namespace they were created in, so a listener
//! or a netlink socket made inside the closure can be used from any thread afterwards.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::statfs::statfs;
use thiserror::Error;

/// The magic number of nsfs (`NSFS_MAGIC` in linux/magic.h).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Failures of namespace operations.
#[derive(Debug, Error)]
pub enum NetnsError {
    /// A file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path it was attempted on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A namespace system call failed.
    #[error("{op} {path}: {source}")]
    Sys {
        /// What was attempted (`unshare`, `setns`, `mount`, ...).
        op: &'static str,
        /// The namespace file involved.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The path exists but is not a network namespace.
    #[error("{0} is not a network namespace")]
    NotANamespace(PathBuf),
    /// The helper thread panicked.
    #[error("namespace thread for {0} panicked")]
    ThreadPanicked(PathBuf),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NetnsError + use<> {
    let path = path.to_path_buf();
    move |source| NetnsError::Io { op, path, source }
}

fn sys_err(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> NetnsError + use<> {
    let path = path.to_path_buf();
    move |source| NetnsError::Sys { op, path, source }
}

/// Whether `path` is a mounted network namespace file.
pub fn exists(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Creates a new, empty network namespace (only `lo`, down) kept at `path`. Idempotent: an
/// existing namespace at `path` is left as it is.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    if exists(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("create", path))?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> Result<(), NetnsError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(sys_err("unshare", &target))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys_err("bind mount", &target))
    })
    .join()
    .map_err(|_| NetnsError::ThreadPanicked(path.to_path_buf()))?;
    if made.is_err() {
        let _ = fs::remove_file(path);
    }
    made
}

/// Removes the namespace kept at `path`: detaches the bind mount and deletes the file. The
/// namespace itself goes away once no process and no other mount holds it. Idempotent.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    // A file may have been mounted over more than once; detach until it is plain.
    while exists(path) {
        umount2(path, MntFlags::MNT_DETACH).map_err(sys_err("unmount", path))?;
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Moves the calling thread into the namespace at `path`. Prefer [`run_in`]; this is for
/// single-threaded processes about to exec (`dualstack exec`).
pub fn enter(path: &Path) -> Result<(), NetnsError> {
    let f = open(path)?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(sys_err("setns", path))
}

/// Opens the namespace file (a handle that keeps the namespace alive while open).
pub fn open(path: &Path) -> Result<File, NetnsError> {
    if !exists(path) {
        return Err(NetnsError::NotANamespace(path.to_path_buf()));
    }
    File::open(path).map_err(io_err("open", path))
}

/// Runs `f` on a new thread inside the namespace at `path` and returns its result.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = open(path)?;
    let p = path.to_path_buf();
    std::thread::spawn(move || -> Result<T, NetnsError> {
        setns(&handle, CloneFlags::CLONE_NEWNET).map_err(sys_err("setns", &p))?;
        drop(handle);
        Ok(f())
    })
    .join()
    .map_err(|_| NetnsError::ThreadPanicked(path.to_path_buf()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::Uid::effective().is_root()
    }

    #[test]
    fn a_created_namespace_is_separate_and_removal_is_idempotent() {
        if !is_root() {
            eprintln!("skipped: needs root to create network namespaces");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("ns1");
        assert!(!exists(&ns));
        create(&ns).unwrap();
        assert!(exists(&ns));
        create(&ns).unwrap();
        // Inside, only `lo` exists; outside, the caller's links are untouched.
        // (/sys reflects the namespace it was mounted in, so list links through /proc.)
        let inside = run_in(&ns, || {
            fs::read_to_string("/proc/thread-self/net/dev").unwrap()
        })
        .unwrap();
        let names: Vec<&str> = inside
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(names, vec!["lo"]);
        remove(&ns).unwrap();
        assert!(!exists(&ns));
        assert!(!ns.exists());
        remove(&ns).unwrap();
    }
}
