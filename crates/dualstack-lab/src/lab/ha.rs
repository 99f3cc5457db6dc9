//! `dualstack up --ha`: the control plane as a 3-member etcd cluster (Debian's `etcd`) and 3
//! API servers on it, all on the host's loopback, behind `dualstack lb`.
//!
//! ```text
//! etcd/etcd-<i>/        member data dirs          server/, server-1/, server-2/   data dirs
//! run/etcd-<i>.pid      run/server*.pid           run/lb.pid
//! ```
//!
//! The servers share one CA, serving certificate and token file (`server-<i>/pki` is a copy of
//! `server/pki`, `server-<i>/tokens.json` a link to `server/tokens.json`, so node tokens made
//! later count on every server). `dualstack lb` listens where the single server would (the
//! lab's API port on the host, `127.0.0.1:6443` inside each node) and forwards each connection
//! to a live server, so kubectl and the agents fail over without knowing the servers. The
//! built-in controllers run on one server at a time through their Lease.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dualstack_store::etcd::local::{MemberSpec, etcd_binary};
use serde::{Deserialize, Serialize};

use super::{Layout, NODE_API_PORT, State, alive, free_port, spawn_recorded};

/// Members and servers of an HA lab.
pub const REPLICAS: usize = 3;

/// The ports of an HA lab (kept in `lab.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HaState {
    /// (client, peer) port of each etcd member.
    pub etcd: Vec<(u16, u16)>,
    /// Each server's port on the host's loopback (the lab's API port is the balancer's).
    pub servers: Vec<u16>,
}

impl HaState {
    /// Free ports for a new HA lab.
    pub fn new() -> Result<Self> {
        Ok(Self {
            etcd: (0..REPLICAS)
                .map(|_| Ok((free_port()?, free_port()?)))
                .collect::<Result<_>>()?,
            servers: (0..REPLICAS).map(|_| free_port()).collect::<Result<_>>()?,
        })
    }

    fn members(&self, l: &Layout) -> Vec<MemberSpec> {
        self.etcd
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| MemberSpec {
                name: format!("etcd-{i}"),
                data_dir: l.dir.join("etcd").join(format!("etcd-{i}")),
                client_url: format!("http://127.0.0.1:{client}"),
                peer_url: format!("http://127.0.0.1:{peer}"),
            })
            .collect()
    }

    /// `--etcd-servers` of the servers.
    pub fn etcd_servers(&self) -> String {
        self.etcd
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The process and data dir name of server `i` (`server` is the first, as in a plain lab).
pub fn server_name(i: usize) -> String {
    if i == 0 {
        "server".into()
    } else {
        format!("server-{i}")
    }
}

/// Starts the etcd members that are not running and waits until the cluster answers.
pub(super) async fn start_etcd(l: &Layout, ha: &HaState, timeout: Duration) -> Result<bool> {
    let members = ha.members(l);
    let mut started = false;
    for (i, m) in members.iter().enumerate() {
        if alive(&l.pid(&m.name)) {
            continue;
        }
        fs::create_dir_all(&m.data_dir)?;
        let mut cmd = Command::new(etcd_binary());
        cmd.args(m.args(&members, "dualstack-lab"));
        spawn_recorded(l, &m.name, cmd, None)
            .with_context(|| format!("starting etcd member {i} (install Debian's etcd-server)"))?;
        started = true;
    }
    let config = dualstack_store::etcd::EtcdConfig {
        request_timeout: Duration::from_secs(2),
        ..dualstack_store::etcd::EtcdConfig::new(
            members.iter().map(|m| m.client_url.clone()).collect(),
        )
    };
    let deadline = Instant::now() + timeout;
    loop {
        let err = match dualstack_store::etcd::Etcd::connect(&config).await {
            Ok(c) => match c.ping().await {
                Ok(()) => return Ok(started),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if Instant::now() > deadline {
            bail!(
                "etcd did not answer in {timeout:?}: {err}; see {}",
                l.log("etcd-0").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Gives server `i > 0` the first server's CA, certificate and token file.
fn share_credentials(l: &Layout, i: usize) -> Result<()> {
    let first = l.server_dir();
    let dir = l.dir.join(server_name(i));
    fs::create_dir_all(&dir)?;
    let pki = dir.join("pki");
    fs::create_dir_all(&pki)?;
    for e in fs::read_dir(first.join("pki"))? {
        let e = e?;
        fs::copy(e.path(), pki.join(e.file_name()))?;
    }
    let tokens = dir.join("tokens.json");
    if fs::symlink_metadata(&tokens).is_err() {
        std::os::unix::fs::symlink(first.join("tokens.json"), &tokens)?;
    }
    Ok(())
}

/// Starts server `i` (on etcd, on its own host port, no listener in the nodes).
pub(super) fn start_server(
    l: &Layout,
    state: &State,
    ha: &HaState,
    i: usize,
    exe: &Path,
) -> Result<()> {
    if i > 0 {
        share_credentials(l, i)?;
    }
    let mut cmd = Command::new(exe);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(l.dir.join(server_name(i)))
        .args(["--bind-address", "127.0.0.1"])
        .arg(format!("--secure-port={}", ha.servers[i]))
        .arg(format!("--etcd-servers={}", ha.etcd_servers()));
    super::kubelet_client_flags(l, state, &mut cmd)?;
    cmd.args(&state.server_flags);
    spawn_recorded(l, &server_name(i), cmd, None)
}

/// Starts the balancer: the lab's API port on the host and 6443 in every node.
pub(super) fn start_lb(l: &Layout, state: &State, ha: &HaState, exe: &Path) -> Result<()> {
    let mut cmd = Command::new(exe);
    cmd.arg("lb")
        .arg(format!("--listen=127.0.0.1:{}", state.port));
    for n in &state.plan.nodes {
        cmd.arg(format!(
            "--netns-listener={}=127.0.0.1:{NODE_API_PORT}",
            l.netns(&n.name).display()
        ));
    }
    for p in &ha.servers {
        cmd.arg(format!("--backend=127.0.0.1:{p}"));
    }
    spawn_recorded(l, "lb", cmd, None)
}

/// The lab's admin kubeconfig: the first server's, pointed at the balancer.
pub(super) fn write_kubeconfig(l: &Layout, state: &State) -> Result<()> {
    let text = fs::read_to_string(l.server_dir().join("kubeconfig"))?;
    let url = format!("https://127.0.0.1:{}", state.port);
    let text: String = text
        .lines()
        .map(|line| match line.trim_start().strip_prefix("server: ") {
            Some(_) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}server: {url}\n")
            }
            None => format!("{line}\n"),
        })
        .collect();
    super::write_atomic(&l.kubeconfig(), text.as_bytes())
}
