//! Real etcd members on loopback: Debian's `etcd` binary (package `etcd-server`), free ports,
//! a data dir per member, killed when the [`LocalEtcd`] is dropped. For tests, the benchmark
//! and `dualstack up --ha` (which runs the same command lines as detached processes).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Etcd, EtcdConfig};
use crate::StoreError;

/// The etcd binary: `$DUALSTACK_ETCD` or `etcd` on `PATH`.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("DUALSTACK_ETCD").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

/// One member's place in a cluster.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Client URL, `http://127.0.0.1:<port>`.
    pub client_url: String,
    /// Peer URL, `http://127.0.0.1:<port>`.
    pub peer_url: String,
}

impl MemberSpec {
    /// The command-line arguments of this member in a cluster of `all`.
    pub fn args(&self, all: &[MemberSpec], token: &str) -> Vec<String> {
        let initial: Vec<String> = all
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={}", self.client_url),
            format!("--advertise-client-urls={}", self.client_url),
            format!("--listen-peer-urls={}", self.peer_url),
            format!("--initial-advertise-peer-urls={}", self.peer_url),
            format!("--initial-cluster={}", initial.join(",")),
            "--initial-cluster-state=new".to_string(),
            format!("--initial-cluster-token={token}"),
        ]
    }
}

/// Free loopback ports, held until the caller drops the listeners.
fn free_ports(n: usize) -> std::io::Result<Vec<TcpListener>> {
    (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect()
}

/// Specs of `n` members under `dir` (`dir/<name>`), on free loopback ports.
pub fn plan(dir: &Path, n: usize) -> std::io::Result<Vec<MemberSpec>> {
    let ports = free_ports(2 * n)?;
    let mut out = Vec::new();
    for i in 0..n {
        let client = ports[2 * i].local_addr()?.port();
        let peer = ports[2 * i + 1].local_addr()?.port();
        let name = format!("etcd-{i}");
        out.push(MemberSpec {
            data_dir: dir.join(&name),
            name,
            client_url: format!("http://127.0.0.1:{client}"),
            peer_url: format!("http://127.0.0.1:{peer}"),
        });
    }
    Ok(out)
}

/// A running local etcd cluster. Every member is killed on drop.
#[derive(Debug)]
pub struct LocalEtcd {
    members: Vec<MemberSpec>,
    children: Vec<Option<Child>>,
    token: String,
    _dir: Option<tempfile::TempDir>,
}

impl LocalEtcd {
    /// Starts `n` members in a fresh temporary directory and waits until the cluster answers.
    pub async fn start(n: usize) -> Result<Self, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("dualstack-etcd-")
            .tempdir()
            .map_err(io)?;
        // A free port can be taken by someone else between the probe and etcd's bind: try
        // again with other ports.
        let mut last = None;
        for attempt in 0..3 {
            match Self::start_in(&dir.path().join(format!("try-{attempt}")), n).await {
                Ok(mut etcd) => {
                    etcd._dir = Some(dir);
                    return Ok(etcd);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts"))
    }

    /// Starts `n` members with their data under `dir` and waits until the cluster answers.
    pub async fn start_in(dir: &Path, n: usize) -> Result<Self, StoreError> {
        let members = plan(dir, n).map_err(io)?;
        let token = format!("dualstack-{}", std::process::id());
        let mut etcd = Self {
            children: Vec::new(),
            members,
            token,
            _dir: None,
        };
        for i in 0..n {
            let child = etcd.spawn(i)?;
            etcd.children.push(Some(child));
        }
        etcd.wait_ready(Duration::from_secs(20)).await?;
        Ok(etcd)
    }

    fn spawn(&self, i: usize) -> Result<Child, StoreError> {
        let m = &self.members[i];
        std::fs::create_dir_all(&m.data_dir).map_err(io)?;
        let log = std::fs::File::create(m.data_dir.with_extension("log")).map_err(io)?;
        Command::new(etcd_binary())
            .args(m.args(&self.members, &self.token))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io)?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                StoreError::Backend(format!(
                    "starting {}: {e} (install Debian's etcd-server)",
                    etcd_binary().display()
                ))
            })
    }

    /// Waits until a write through the client URLs succeeds.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + within;
        let mut config = self.config();
        config.request_timeout = Duration::from_secs(2);
        loop {
            if let Some(i) = self.exited() {
                return Err(StoreError::Backend(format!(
                    "etcd member {i} exited; see {}",
                    self.members[i].data_dir.with_extension("log").display()
                )));
            }
            let err = match Etcd::connect(&config).await {
                Ok(c) => match c.ping().await {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(StoreError::Backend(format!(
                    "local etcd did not become ready: {err}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A member that was started and has exited.
    fn exited(&self) -> Option<usize> {
        // `try_wait` needs `&mut`; a zero-signal probe tells the same without reaping.
        self.children.iter().enumerate().find_map(|(i, c)| {
            let pid = c.as_ref()?.id();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let zombie = stat
                .as_deref()
                .and_then(|s| s.rfind(')').map(|j| s[j + 2..].starts_with('Z')))
                .unwrap_or(true);
            zombie.then_some(i)
        })
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// `--etcd-servers` for these members.
    pub fn servers_flag(&self) -> String {
        self.endpoints().join(",")
    }

    /// A client configuration for every member.
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig::new(self.endpoints())
    }

    /// A connected backend.
    pub async fn connect(&self) -> Result<Etcd, StoreError> {
        Etcd::connect(&self.config()).await
    }

    /// The process id of member `i` (to stop and continue it).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data dir (after [`Self::kill`]).
    pub fn restart(&mut self, i: usize) -> Result<(), StoreError> {
        self.kill(i);
        let child = self.spawn(i)?;
        self.children[i] = Some(child);
        Ok(())
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}
