//! The IPAM store on disk, host-local's layout: one directory per network
//! (`dataDir/<network name>/`), one file per allocated address named by the address and holding
//! `<container id>\n<ifname>`, `last_reserved_ip.<range index>` with the last address handed out
//! in each range, and `lock`, held with an exclusive `flock` around every read-modify-write so
//! concurrent plugin processes never hand out the same address.
//!
//! Which address comes next is decided by the pure [`crate::ipam`]; this module only reads and
//! writes the files.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::ipam::{self, IpamError, Range};

const LOCK_FILE: &str = "lock";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";

/// Store failures.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The allocator refused.
    #[error(transparent)]
    Ipam(#[from] IpamError),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// One allocation: an address and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address.
    pub ip: IpAddr,
    /// The container id of the attachment.
    pub container_id: String,
    /// The interface name of the attachment.
    pub ifname: String,
}

/// The store of one network.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The store with its lock held; dropped, the lock is released.
#[derive(Debug)]
struct Locked<'a> {
    dir: &'a Path,
    _lock: File,
}

impl Store {
    /// The store of `network` under `data_dir`; the directory is created when first locked.
    pub fn new(data_dir: &Path, network: &str) -> Self {
        Self {
            dir: data_dir.join(network),
        }
    }

    /// The directory of this network's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Locked<'_>, StoreError> {
        fs::create_dir_all(&self.dir).map_err(io_err("create directory", &self.dir))?;
        let path = self.dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        f.lock().map_err(io_err("lock", &path))?;
        Ok(Locked {
            dir: &self.dir,
            _lock: f,
        })
    }

    /// One address per range for the attachment `(container_id, ifname)`, in range order. An
    /// attachment that already holds an address of a range keeps it (a repeated ADD gets the
    /// same addresses); all or nothing otherwise.
    pub fn allocate(
        &self,
        ranges: &[Range],
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<IpAddr>, StoreError> {
        let locked = self.lock()?;
        let all = locked.allocations()?;
        let reserved: HashSet<IpAddr> = all.iter().map(|a| a.ip).collect();
        let mine: Vec<IpAddr> = all
            .iter()
            .filter(|a| a.container_id == container_id && a.ifname == ifname)
            .map(|a| a.ip)
            .collect();
        let mut out = Vec::with_capacity(ranges.len());
        let mut fresh: Vec<(usize, IpAddr)> = Vec::new();
        for (i, r) in ranges.iter().enumerate() {
            if let Some(ip) = mine.iter().find(|ip| r.contains(**ip)) {
                out.push(*ip);
                continue;
            }
            let hint = locked.last_reserved(i);
            let ip = r.next_free(&reserved, hint)?;
            out.push(ip);
            fresh.push((i, ip));
        }
        for (n, &(_, ip)) in fresh.iter().enumerate() {
            if let Err(e) = locked.reserve(ip, container_id, ifname) {
                for &(_, done) in &fresh[..n] {
                    let _ = fs::remove_file(locked.dir.join(done.to_string()));
                }
                return Err(e);
            }
        }
        for &(i, ip) in &fresh {
            locked.set_last_reserved(i, ip)?;
        }
        Ok(out)
    }

    /// Frees every address of `(container_id, ifname)`; returns them. Nothing held is fine.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let locked = self.lock()?;
        let mut freed = Vec::new();
        for a in locked.allocations()? {
            if a.container_id == container_id && a.ifname == ifname {
                locked.free(a.ip)?;
                freed.push(a.ip);
            }
        }
        Ok(freed)
    }

    /// Frees every address whose attachment is not in `valid` (CNI GC); returns them.
    pub fn release_all_but(
        &self,
        valid: &HashSet<(String, String)>,
    ) -> Result<Vec<IpAddr>, StoreError> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let locked = self.lock()?;
        let mut freed = Vec::new();
        for a in locked.allocations()? {
            if !valid.contains(&(a.container_id.clone(), a.ifname.clone())) {
                locked.free(a.ip)?;
                freed.push(a.ip);
            }
        }
        Ok(freed)
    }

    /// Every allocation, in no particular order.
    pub fn allocations(&self) -> Result<Vec<Allocation>, StoreError> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        self.lock()?.allocations()
    }

    /// Whether some range has no free address left (STATUS).
    pub fn exhausted(&self, ranges: &[Range]) -> Result<Option<IpamError>, StoreError> {
        let reserved: HashSet<IpAddr> = self.allocations()?.into_iter().map(|a| a.ip).collect();
        Ok(ipam::allocate(ranges, &reserved, &[]).err())
    }
}

impl Locked<'_> {
    fn allocations(&self) -> Result<Vec<Allocation>, StoreError> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.dir).map_err(io_err("read directory", self.dir))? {
            let e = e.map_err(io_err("read directory", self.dir))?;
            let Some(ip) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let path = e.path();
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(io_err("read", &path)(err)),
            };
            // host-local writes "\r\n" between the two; accept both.
            let mut lines = text.lines().map(str::trim);
            let container_id = lines.next().unwrap_or_default().to_string();
            let ifname = lines.next().unwrap_or_default().to_string();
            out.push(Allocation {
                ip,
                container_id,
                ifname,
            });
        }
        Ok(out)
    }

    fn reserve(&self, ip: IpAddr, container_id: &str, ifname: &str) -> Result<(), StoreError> {
        use std::io::Write;
        let path = self.dir.join(ip.to_string());
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        f.write_all(format!("{container_id}\n{ifname}").as_bytes())
            .map_err(io_err("write", &path))
    }

    fn free(&self, ip: IpAddr) -> Result<(), StoreError> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    fn last_reserved(&self, range: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{range}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn set_last_reserved(&self, range: usize, ip: IpAddr) -> Result<(), StoreError> {
        use std::io::Write;
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range}"));
        // Overwrite in place, then cut to length: ext4 flushes a file on close when it was
        // truncated to zero first (`auto_da_alloc`), which costs milliseconds per ADD.
        let bytes = ip.to_string();
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        f.write_all(bytes.as_bytes())
            .map_err(io_err("write", &path))?;
        f.set_len(bytes.len() as u64)
            .map_err(io_err("truncate", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> Vec<Range> {
        ipam::ranges(&[
            "10.244.1.0/29".parse().unwrap(),
            "fc00:0:0:1::/64".parse().unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn an_attachment_keeps_its_addresses_and_release_frees_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path(), "net");
        let a = s.allocate(&ranges(), "c1", "eth0").unwrap();
        assert_eq!(
            a,
            vec![
                "10.244.1.2".parse::<IpAddr>().unwrap(),
                "fc00:0:0:1::2".parse().unwrap()
            ]
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("net/10.244.1.2")).unwrap(),
            "c1\neth0"
        );
        assert_eq!(s.allocate(&ranges(), "c1", "eth0").unwrap(), a);
        let b = s.allocate(&ranges(), "c1", "eth1").unwrap();
        assert_ne!(a, b);
        let mut freed = s.release("c1", "eth0").unwrap();
        freed.sort();
        assert_eq!(freed, a);
        assert!(s.release("c1", "eth0").unwrap().is_empty());
        assert!(!dir.path().join("net/10.244.1.2").exists());
        // The next one continues after the last handed out, then wraps to the freed one.
        let c = s.allocate(&ranges(), "c2", "eth0").unwrap();
        assert_eq!(c[0], "10.244.1.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn exhaustion_allocates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path(), "net");
        for i in 0..5 {
            s.allocate(&ranges(), &format!("c{i}"), "eth0").unwrap();
        }
        let err = s.allocate(&ranges(), "c9", "eth0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no IP addresses available in range set: 10.244.1.1-10.244.1.6"
        );
        assert_eq!(s.allocations().unwrap().len(), 10);
        assert!(s.exhausted(&ranges()).unwrap().is_some());
        let valid: HashSet<_> = [("c1".to_string(), "eth0".to_string())].into();
        assert_eq!(s.release_all_but(&valid).unwrap().len(), 8);
        assert!(s.exhausted(&ranges()).unwrap().is_none());
    }

    #[test]
    fn host_local_files_with_crlf_are_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("net")).unwrap();
        fs::write(dir.path().join("net/10.244.1.2"), "abc\r\neth0").unwrap();
        let s = Store::new(dir.path(), "net");
        assert_eq!(
            s.release("abc", "eth0").unwrap(),
            vec!["10.244.1.2".parse::<IpAddr>().unwrap()]
        );
    }
}
