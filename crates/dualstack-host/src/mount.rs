//! Mount namespaces for containers: a private view of the host's files in which single files
//! (`/etc/hosts`, `/etc/resolv.conf`) are the pod's own. For single-threaded processes about
//! to start a container (`dualstack shim`).

use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use thiserror::Error;

/// Failures of mount operations.
#[derive(Debug, Error)]
pub enum MountError {
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
}

fn sys(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> MountError + use<> {
    let path = path.to_path_buf();
    move |source| MountError::Sys { op, path, source }
}

/// Moves the calling (single-threaded) process into a new mount namespace whose mounts are
/// slaves of the host's (`MS_REC|MS_SLAVE` on `/`): host mounts still propagate in, nothing
/// mounted here leaks out.
pub fn private_namespace() -> Result<(), MountError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare", Path::new("mnt")))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(sys("make slave", Path::new("/")))
}

/// Bind-mounts the file `src` over `dst` (a symlink at `dst` is followed, as mount does).
pub fn bind_file(src: &Path, dst: &Path) -> Result<(), MountError> {
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(sys("bind mount", dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_bound_in_a_private_namespace_is_not_seen_outside() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root for mount namespaces");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "pod").unwrap();
        std::fs::write(&b, "host").unwrap();
        let (a2, b2) = (a.clone(), b.clone());
        let status = std::thread::spawn(move || {
            // A thread of a multi-threaded process needs its own fs context to unshare mounts.
            unshare(CloneFlags::CLONE_FS).unwrap();
            private_namespace().unwrap();
            bind_file(&a2, &b2).unwrap();
            std::fs::read_to_string(&b2).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(status, "pod");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "host");
    }
}
