//! The pod network behind a narrow trait, so the pod worker is tested without a kernel:
//! [`PodNetwork`] sets up a sandbox's interfaces and returns its IPs, and tears them down.
//!
//! [`LocalNetwork`] is the stand-in used until the CNI runtime (`dualstack-cni`) is wired in:
//! host-local-style allocation from the node's podCIDRs (one file per address under the root
//! dir) and the addresses on `eth0` (one end of a veth pair whose peer stays inside) in the pod's namespace: enough for the pod's
//! own view (addresses, hosts file, probes from inside), not reachable from outside.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use async_trait::async_trait;
use ipnet::IpNet;
use thiserror::Error;

/// What identifies a pod's attachment to the network: CNI's attachment parameters and the pod
/// identity (the CNI runtime's own type, kept in `sandbox.json`).
pub use dualstack_cni::runtime::Attachment;

/// Network failures.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// No podCIDRs yet.
    #[error("network not ready: the node has no podCIDRs yet")]
    NotReady,
    /// A range has no free address.
    #[error("no free address in {0}")]
    Exhausted(IpNet),
    /// The plugin or a command failed.
    #[error("{0}")]
    Plugin(String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The pod network as the pod worker sees it.
#[async_trait]
pub trait PodNetwork: Send + Sync {
    /// The node's podCIDRs are known: prepare the network (write the CNI configuration).
    async fn configure(&self, pod_cidrs: &[IpNet]) -> Result<(), NetworkError>;
    /// Attaches a sandbox; returns its IPs (any order).
    async fn setup(&self, a: &Attachment) -> Result<Vec<IpAddr>, NetworkError>;
    /// Detaches a sandbox and frees its addresses. Idempotent.
    async fn teardown(&self, a: &Attachment) -> Result<(), NetworkError>;
}

/// See the module documentation.
#[derive(Debug)]
pub struct LocalNetwork {
    dir: PathBuf,
    cidrs: Mutex<Vec<IpNet>>,
    lock: tokio::sync::Mutex<()>,
}

impl LocalNetwork {
    /// Allocations are kept under `dir` (one file per address, holding the container id).
    pub fn new(dir: PathBuf) -> Self {
        LocalNetwork {
            dir,
            cidrs: Mutex::new(Vec::new()),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn allocated(&self) -> BTreeSet<IpAddr> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.replace('_', ":").parse().ok())
            .collect()
    }

    fn file(&self, ip: &IpAddr) -> PathBuf {
        self.dir.join(ip.to_string().replace(':', "_"))
    }

    fn pick(&self, net: &IpNet, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
        // host-local's default range: network + 2 (the gateway is network + 1) up to the end.
        // (`hosts()` leaves out the IPv4 network address, not the IPv6 one.)
        let skip = if net.addr().is_ipv4() { 1 } else { 2 };
        net.hosts().skip(skip).find(|ip| !taken.contains(ip))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError + use<> {
    let path = path.to_path_buf();
    move |source| NetworkError::Io { path, source }
}

#[async_trait]
impl PodNetwork for LocalNetwork {
    async fn configure(&self, pod_cidrs: &[IpNet]) -> Result<(), NetworkError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        *self.cidrs.lock().unwrap_or_else(|e| e.into_inner()) = pod_cidrs.to_vec();
        Ok(())
    }

    async fn setup(&self, a: &Attachment) -> Result<Vec<IpAddr>, NetworkError> {
        let cidrs = self.cidrs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if cidrs.is_empty() {
            return Err(NetworkError::NotReady);
        }
        let mut ips = Vec::new();
        {
            let _guard = self.lock.lock().await;
            let taken = self.allocated();
            for net in &cidrs {
                let ip = self
                    .pick(net, &taken)
                    .ok_or(NetworkError::Exhausted(*net))?;
                let f = self.file(&ip);
                std::fs::write(&f, &a.container_id).map_err(io(&f))?;
                ips.push((ip, net.prefix_len()));
            }
        }
        let mut script = String::from("link set lo up\n");
        script.push_str(&format!(
            "link add {0} type veth peer name {0}p\nlink set {0}p up\nlink set {0} up\n",
            a.ifname
        ));
        for (ip, len) in &ips {
            let extra = if ip.is_ipv6() { " nodad" } else { "" };
            script.push_str(&format!("addr add {ip}/{len} dev {}{extra}\n", a.ifname));
        }
        let netns = a.netns.clone();
        let out = tokio::task::spawn_blocking(move || {
            dualstack_host::netns::run_in(
                &netns,
                move || -> std::io::Result<std::process::Output> {
                    let mut child = Command::new("ip")
                        .args(["-batch", "-"])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()?;
                    child
                        .stdin
                        .take()
                        .map(|mut s| s.write_all(script.as_bytes()));
                    child.wait_with_output()
                },
            )
        })
        .await
        .map_err(|e| NetworkError::Plugin(e.to_string()))?
        .map_err(|e| NetworkError::Plugin(e.to_string()))?
        .map_err(|e| NetworkError::Plugin(format!("ip: {e}")))?;
        if !out.status.success() {
            let _ = self.teardown(a).await;
            return Err(NetworkError::Plugin(format!(
                "ip -batch: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(ips.into_iter().map(|(ip, _)| ip).collect())
    }

    async fn teardown(&self, a: &Attachment) -> Result<(), NetworkError> {
        let _guard = self.lock.lock().await;
        for ip in self.allocated() {
            let f = self.file(&ip);
            if std::fs::read_to_string(&f).is_ok_and(|id| id == a.container_id) {
                std::fs::remove_file(&f).map_err(io(&f))?;
            }
        }
        Ok(())
    }
}

/// The pod network through CNI (`dualstack-cni`'s runtime): once the node has podCIDRs, the
/// agent writes its `10-dualstack.conflist` (IPAM data under the root dir); the runtime uses
/// the first configuration in the conf dir, so a conflist that sorts earlier (a user's
/// `00-bridge.conflist` for the reference plugins) wins — the interop path.
#[derive(Debug)]
pub struct CniNetwork {
    runtime: dualstack_cni::runtime::Runtime,
    conf_dir: PathBuf,
    data_dir: PathBuf,
}

impl CniNetwork {
    /// A CNI network reading `conf_dir`, running plugins from `bin_dirs` (the type `dualstack`
    /// falls back to `self_exe cni`), caching results and IPAM data under `root`.
    pub fn new(conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, root: &Path, self_exe: PathBuf) -> Self {
        CniNetwork {
            runtime: dualstack_cni::runtime::Runtime::new(
                conf_dir.clone(),
                bin_dirs,
                root.join("cni-cache"),
            )
            .with_self_plugin(self_exe),
            conf_dir,
            data_dir: root.join("cni-ipam"),
        }
    }
}

#[async_trait]
impl PodNetwork for CniNetwork {
    async fn configure(&self, pod_cidrs: &[IpNet]) -> Result<(), NetworkError> {
        dualstack_cni::conf::write_dualstack_conflist(&self.conf_dir, pod_cidrs, &self.data_dir)
            .map(|_| ())
            .map_err(io(&self.conf_dir))
    }

    async fn setup(&self, a: &Attachment) -> Result<Vec<IpAddr>, NetworkError> {
        let r = self
            .runtime
            .add(a)
            .await
            .map_err(|e| NetworkError::Plugin(e.to_string()))?;
        Ok(r.pod_ips())
    }

    async fn teardown(&self, a: &Attachment) -> Result<(), NetworkError> {
        self.runtime
            .del(a)
            .await
            .map_err(|e| NetworkError::Plugin(e.to_string()))
    }
}
