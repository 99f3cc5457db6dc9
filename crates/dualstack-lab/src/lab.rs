//! The edge of the lab: namespaces, processes and files under the data dir.
//!
//! Layout of a lab's data dir (everything `down` removes):
//! ```text
//! lab.json              the plan, the API port and the server flags (kept across `up`s)
//! kubeconfig            the admin kubeconfig (server on 127.0.0.1:<port>)
//! netns/<host>          namespace files: switch, node-1..node-N, outside
//! server/               the API server's data dir (embedded store, PKI, tokens)
//! nodes/<node>/         the agent's root dir, its kubeconfig and CNI config dir
//! logs/<process>.log    server and agent output
//! run/<process>.pid     "<pid> <start time>" of the background processes
//! ```

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::plan::{self, NODE_API_PORT, OUTSIDE, Plan, SWITCH};

pub mod ha;

/// What `up` was asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The lab's data dir.
    pub data_dir: PathBuf,
    /// `--nodes` (None: 3 for a new lab, the lab's own count for an existing one).
    pub nodes: Option<usize>,
    /// The server flags (dual-stack ranges, feature gates, ...), validated by the caller.
    pub server_flags: Vec<String>,
    /// Whether those flags make the cluster IPv6-primary.
    pub ipv6_primary: bool,
    /// The `dualstack` executable to run as server and agents.
    pub exe: PathBuf,
    /// How long to wait for every node to be Ready.
    pub timeout: Duration,
    /// `--ha`: 3 etcd members and 3 servers behind a balancer (see [`ha`]).
    pub ha: bool,
}

/// What `up` found and did.
#[derive(Debug, Clone)]
pub struct UpReport {
    /// The lab's plan.
    pub plan: Plan,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The server URL on the host's loopback.
    pub url: String,
    /// From the start of `up` to every node Ready.
    pub elapsed: Duration,
    /// Whether anything had to be (re)started.
    pub started: bool,
}

/// The persisted description of a lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    plan: Plan,
    port: u16,
    server_flags: Vec<String>,
    /// Set for an `--ha` lab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ha: Option<ha::HaState>,
}

/// Paths inside a lab's data dir.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The layout of `dir` (made absolute, so the paths work from any working directory).
    pub fn new(dir: &Path) -> Self {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Self { dir }
    }
    fn state(&self) -> PathBuf {
        self.dir.join("lab.json")
    }
    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    /// The namespace file of a lab host.
    pub fn netns(&self, host: &str) -> PathBuf {
        self.dir.join("netns").join(host)
    }
    fn server_dir(&self) -> PathBuf {
        self.dir.join("server")
    }
    fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }
    fn log(&self, process: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{process}.log"))
    }
    fn pid(&self, process: &str) -> PathBuf {
        self.dir.join("run").join(format!("{process}.pid"))
    }
    /// Everything `up` creates, for `down`.
    fn made(&self) -> [PathBuf; 10] {
        [
            self.state(),
            self.kubeconfig(),
            self.dir.join("netns"),
            self.server_dir(),
            self.dir.join("etcd"),
            self.dir.join(ha::server_name(1)),
            self.dir.join(ha::server_name(2)),
            self.dir.join("nodes"),
            self.dir.join("logs"),
            self.dir.join("run"),
        ]
    }
}

/// The programs the lab runs besides our own, with the Debian package of each: `nft` (the
/// Service proxy's NAT probe and the masq agent), `conntrack` (UDP flows of removed endpoints),
/// `ip` (the agents' pod routes) and, for `--ha`, `etcd` (unless `DUALSTACK_ETCD` names one).
fn needed_tools(ha: bool) -> Vec<(&'static str, &'static str)> {
    let mut tools = vec![
        ("nft", "nftables"),
        ("conntrack", "conntrack"),
        ("ip", "iproute2"),
    ];
    if ha && std::env::var_os("DUALSTACK_ETCD").is_none() {
        tools.push(("etcd", "etcd-server"));
    }
    tools
}

/// Those of `tools` that are in none of `dirs`.
fn missing_tools<'a>(tools: &[(&'a str, &'a str)], dirs: &[PathBuf]) -> Vec<(&'a str, &'a str)> {
    tools
        .iter()
        .filter(|(bin, _)| !dirs.iter().any(|d| d.join(bin).is_file()))
        .copied()
        .collect()
}

/// Installs the packages of missing programs with apt-get (`up` runs as root), as the
/// project's scripts do on a fresh machine, and says so; without apt-get, or if it fails,
/// stops with the command to run.
fn require_tools(ha: bool) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .collect();
    let tools = needed_tools(ha);
    let missing = missing_tools(&tools, &dirs);
    if missing.is_empty() {
        return Ok(());
    }
    let pkgs: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    eprintln!(
        "dualstack up: installing {} with apt-get (the lab needs {})",
        pkgs.join(" "),
        missing
            .iter()
            .map(|(b, _)| *b)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let apt = |args: &[&str], quiet: bool| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(if quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut install = vec!["install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=120"];
    install.extend(&pkgs);
    // The package lists are refreshed only when the install needs it (an update contends
    // with apt-daily for the lists' lock on a freshly booted machine); the first try is quiet,
    // as lists that do not know the package yet make it fail.
    let installed = apt(&install, true) || (apt(&["update", "-qq"], false) && apt(&install, false));
    let still: Vec<(&str, &str)> = missing_tools(&missing, &dirs);
    if !still.is_empty() {
        let bins: Vec<&str> = still.iter().map(|(b, _)| *b).collect();
        let pkgs: Vec<&str> = still.iter().map(|(_, p)| *p).collect();
        bail!(
            "dualstack up needs {} on the machine, and installing it {}: apt-get install -y {}",
            bins.join(" and "),
            if installed {
                "did not provide it"
            } else {
                "failed"
            },
            pkgs.join(" ")
        );
    }
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!(
            "dualstack {what} needs root: it creates network namespaces, links and mounts \
             (CAP_SYS_ADMIN and CAP_NET_ADMIN); run it with sudo"
        );
    }
    Ok(())
}

/// Brings the lab at `opts.data_dir` up (or back) and returns once every node is Ready; the
/// server and the agents keep running in the background.
pub async fn up(opts: &UpOptions) -> Result<UpReport> {
    require_root("up")?;
    require_tools(opts.ha)?;
    let start = Instant::now();
    let l = Layout::new(&opts.data_dir);
    fs::create_dir_all(&l.dir).with_context(|| format!("creating {}", l.dir.display()))?;
    let state = match fs::read(l.state()) {
        Ok(bytes) => {
            let s: State = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", l.state().display()))?;
            if let Some(n) = opts.nodes
                && n != s.plan.nodes.len()
            {
                bail!(
                    "the lab in {} has {} nodes, not {n}: run `dualstack down --data-dir {}` first",
                    l.dir.display(),
                    s.plan.nodes.len(),
                    l.dir.display()
                );
            }
            if opts.ha != s.ha.is_some() {
                bail!(
                    "the lab in {} was made {} --ha: run `dualstack down --data-dir {}` first",
                    l.dir.display(),
                    if s.ha.is_some() { "with" } else { "without" },
                    l.dir.display()
                );
            }
            if !opts.server_flags.is_empty() && opts.server_flags != s.server_flags {
                bail!(
                    "the lab in {} was made with other flags ({}): run `dualstack down --data-dir {}` first",
                    l.dir.display(),
                    s.server_flags.join(" "),
                    l.dir.display()
                );
            }
            s
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let plan = plan::plan(opts.nodes.unwrap_or(3), opts.ipv6_primary)?;
            let s = State {
                plan,
                port: free_port()?,
                server_flags: opts.server_flags.clone(),
                ha: opts.ha.then(ha::HaState::new).transpose()?,
            };
            write_atomic(&l.state(), &serde_json::to_vec_pretty(&s)?)?;
            s
        }
        Err(e) => return Err(e).context(format!("reading {}", l.state().display())),
    };
    let plan = &state.plan;
    for d in ["logs", "run"] {
        fs::create_dir_all(l.dir.join(d))?;
    }

    let mut started = false;
    let network_whole = std::iter::once(SWITCH)
        .chain(plan.hosts().map(|h| h.name.as_str()))
        .all(|h| dualstack_host::netns::exists(&l.netns(h)));
    if !network_whole {
        // After a reboot (or a partial earlier attempt) rebuild the whole network: stop what
        // ran in the old one first.
        stop_processes(&l)?;
        remove_namespaces(&l)?;
        build_network(&l, plan).await?;
        started = true;
    }

    if let Some(ha) = &state.ha {
        started |= ha::start_etcd(&l, ha, opts.timeout).await?;
    }
    if !alive(&l.pid("server")) {
        match &state.ha {
            Some(ha) => ha::start_server(&l, &state, ha, 0, &opts.exe)?,
            None => start_server(&l, &state, &opts.exe)?,
        }
        started = true;
    }
    let url = format!("https://127.0.0.1:{}", state.port);
    let mut client = wait_for_server(&l, &l.server_dir().join("kubeconfig"), opts.timeout).await?;
    if let Some(ha) = &state.ha {
        for i in 1..ha::REPLICAS {
            if !alive(&l.pid(&ha::server_name(i))) {
                ha::start_server(&l, &state, ha, i, &opts.exe)?;
                started = true;
            }
        }
        if !alive(&l.pid("lb")) {
            ha::start_lb(&l, &state, ha, &opts.exe)?;
            started = true;
        }
        ha::write_kubeconfig(&l, &state)?;
        client = wait_for_server(&l, &l.kubeconfig(), opts.timeout).await?;
    } else {
        fs::copy(l.server_dir().join("kubeconfig"), l.kubeconfig())
            .context("copying the admin kubeconfig")?;
    }
    ensure_masq_configmap(&client, &state, opts.timeout).await?;
    ensure_dns_service(&client, &state, opts.timeout).await?;

    for node in &plan.nodes {
        if !alive(&l.pid(&node.name)) {
            start_agent(&l, &state, node, &opts.exe)?;
            started = true;
        }
    }
    announce_pools(&l, &state).await?;
    wait_for_nodes(&client, plan, opts.timeout, &l).await?;
    route_outside(&l, plan, &client, opts.timeout).await?;
    ensure_dns_deployment(&client, &l, &state, &opts.exe).await?;
    wait_for_dns(&client, &state, opts.timeout).await?;
    wait_for_dns_answers(&l, &state, &opts.exe, opts.timeout).await?;
    Ok(UpReport {
        plan: plan.clone(),
        kubeconfig: l.kubeconfig(),
        url,
        elapsed: start.elapsed(),
        started,
    })
}

/// The values of `--NAME=VALUE` entries of the server flags.
fn flag_values<'a>(flags: &'a [String], name: &str) -> Vec<&'a str> {
    let prefix = format!("--{name}=");
    flags
        .iter()
        .filter_map(|f| f.strip_prefix(prefix.as_str()))
        .collect()
}

/// Makes the LoadBalancer pools reachable from the outside host: ECMP routes via the nodes
/// (what a BGP announcement from every node would install). Replaced on every `up`.
async fn announce_pools(l: &Layout, state: &State) -> Result<()> {
    let pools: Vec<String> = flag_values(&state.server_flags, "loadbalancer-ip-pool")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let routes = plan::pool_routes(&state.plan, &pools);
    if routes.is_empty() {
        return Ok(());
    }
    let nl = dualstack_host::netlink::Netlink::connect_in(&l.netns(OUTSIDE))?;
    for (dst, via) in routes {
        nl.replace_multipath_route(dst, &via)
            .await
            .with_context(|| format!("routing {dst} from the outside host"))?;
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Builds the segment: the bridge in the switch namespace, one veth per host (its `eth0`
/// created straight into the host's namespace), addresses and default routes, by netlink.
async fn build_network(l: &Layout, plan: &Plan) -> Result<()> {
    use dualstack_host::netlink::{Netlink, VethSpec};
    for h in std::iter::once(SWITCH).chain(plan.hosts().map(|h| h.name.as_str())) {
        dualstack_host::netns::create(&l.netns(h))?;
    }
    let switch = Netlink::connect_in(&l.netns(SWITCH))?;
    loopback_up(&switch).await?;
    let bridge = switch
        .ensure_bridge("br0", Plan::mac(usize::MAX, 0), 1500)
        .await?;
    for (i, h) in plan.hosts().enumerate() {
        let ns = l.netns(&h.name);
        let forward = h.name != OUTSIDE;
        // Sysctls are per namespace: write them from a thread inside it (the netlink
        // connection is made on the same thread).
        let (nl, sysctls) = Netlink::connect_in_with(&ns, move || -> std::io::Result<()> {
            use dualstack_host::sysctl::write_net;
            write_net(&["ipv6", "conf", "all", "accept_dad"], "0")?;
            write_net(&["ipv6", "conf", "default", "accept_dad"], "0")?;
            if forward {
                write_net(&["ipv4", "ip_forward"], "1")?;
                write_net(&["ipv6", "conf", "all", "forwarding"], "1")?;
            }
            Ok(())
        })?;
        sysctls.with_context(|| format!("setting the sysctls of {}", h.name))?;
        let peer = dualstack_host::netns::open(&ns)?;
        switch
            .add_veth(&VethSpec {
                host_name: &Plan::port_name(i),
                host_mac: Plan::mac(i, 0),
                master: bridge,
                peer_name: "eth0",
                peer_mac: Plan::mac(i, 1),
                peer_netns: &peer,
                mtu: 1500,
            })
            .await?;
        loopback_up(&nl).await?;
        let eth0 = nl
            .link_by_name("eth0")
            .await?
            .with_context(|| format!("no eth0 in {}", h.name))?;
        nl.set_up(eth0.index).await?;
        for net in Plan::host_addresses(h) {
            nl.add_address(eth0.index, net, true).await?;
        }
        for gw in plan.default_gateways(h) {
            let any: ipnet::IpNet = if gw.is_ipv4() {
                "0.0.0.0/0".parse()?
            } else {
                "::/0".parse()?
            };
            nl.add_route(any, gw, Some(eth0.index)).await?;
        }
    }
    Ok(())
}

async fn loopback_up(nl: &dualstack_host::netlink::Netlink) -> Result<()> {
    if let Some(lo) = nl.link_by_name("lo").await?
        && !lo.up
    {
        nl.set_up(lo.index).await?;
    }
    Ok(())
}

/// Starts a background process (its own session, output to its log) and records its pid.
fn spawn_recorded(l: &Layout, name: &str, mut cmd: Command, ns: Option<&Path>) -> Result<()> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(l.log(name))
        .with_context(|| format!("opening {}", l.log(name).display()))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = match ns {
        Some(ns) => dualstack_host::netns::run_in(ns, move || cmd.spawn())?,
        None => cmd.spawn(),
    }
    .with_context(|| format!("starting {name}"))?;
    let pid = child.id();
    // The child is left running: it is reaped by init once `up` exits.
    std::mem::forget(child);
    let started = start_time(pid).context("reading the new process's start time")?;
    write_atomic(&l.pid(name), format!("{pid} {started}\n").as_bytes())
}

fn start_server(l: &Layout, state: &State, exe: &Path) -> Result<()> {
    let mut cmd = Command::new(exe);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(l.server_dir())
        .args(["--bind-address", "127.0.0.1"])
        .arg(format!("--secure-port={}", state.port));
    kubelet_client_flags(l, state, &mut cmd)?;
    cmd.args(&state.server_flags);
    for n in &state.plan.nodes {
        cmd.arg(format!(
            "--netns-listener={}=127.0.0.1:{NODE_API_PORT}",
            l.netns(&n.name).display()
        ));
    }
    // The control plane also answers on node-1's address of the primary family, as on a
    // kubeadm control-plane node, and advertises it: the `kubernetes` Service's endpoint, so
    // pods reach the API through the Service (and the segment) like in-cluster clients do.
    if let Some(first) = state.plan.nodes.first() {
        let ip = first.ips(state.plan.ipv6_primary)[0];
        cmd.arg(format!("--advertise-address={ip}"));
        cmd.arg(format!(
            "--netns-listener={}={}",
            l.netns(&first.name).display(),
            std::net::SocketAddr::new(ip, state.port)
        ));
    }
    spawn_recorded(l, "server", cmd, None)
}

/// What a server needs to reach the nodes' kubelet ports (logs, exec, attach, port-forward):
/// its client certificate from the cluster CA (made here if not yet made; every server of an
/// HA lab shares the first one's CA and uses it), and each node's namespace to dial from.
fn kubelet_client_flags(l: &Layout, state: &State, cmd: &mut Command) -> Result<()> {
    let pki = dualstack_apiserver::tls::Pki::new(&l.server_dir());
    let (cert, key) = (
        l.server_dir().join("pki/apiserver-kubelet-client.crt"),
        l.server_dir().join("pki/apiserver-kubelet-client.key"),
    );
    pki.issue(
        &cert,
        &key,
        dualstack_apiserver::kubelet::APISERVER_KUBELET_CLIENT_CN,
        &["kubeadm:cluster-admins"],
        &[],
    )?;
    cmd.arg(format!("--kubelet-client-certificate={}", cert.display()))
        .arg(format!("--kubelet-client-key={}", key.display()))
        .arg(format!(
            "--kubelet-certificate-authority={}",
            pki.ca_cert.display()
        ));
    // kubeadm's order: node names do not resolve on the host, their InternalIPs are dialed
    // (from inside each node, below).
    cmd.arg("--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname");
    for n in &state.plan.nodes {
        // Logs and exec: the server dials each node's kubelet port from inside the node.
        cmd.arg(format!(
            "--kubelet-netns={}={}",
            n.name,
            l.netns(&n.name).display()
        ));
    }
    Ok(())
}

fn start_agent(l: &Layout, state: &State, node: &plan::Host, exe: &Path) -> Result<()> {
    let plan = &state.plan;
    let dir = l.node_dir(&node.name);
    fs::create_dir_all(dir.join("net.d"))?;
    // The node's credentials: a node token, the server on the node's own loopback.
    let user = dualstack_apiserver::auth::UserInfo::new(
        format!(
            "{}{}",
            dualstack_apiserver::auth::NODE_USER_PREFIX,
            node.name
        ),
        &[dualstack_apiserver::auth::NODES_GROUP],
    );
    let token = dualstack_apiserver::auth::Tokens::new(&l.server_dir()).ensure(&user)?;
    let ca = fs::read_to_string(l.server_dir().join("pki/ca.crt"))?;
    let kubeconfig = dir.join("kubeconfig");
    dualstack_apiserver::tls::write_kubeconfig(
        &kubeconfig,
        &format!("https://127.0.0.1:{NODE_API_PORT}"),
        &ca,
        &user.name,
        &token,
    )?;
    // The kubelet port's serving certificate (the node's name and addresses), from the
    // cluster CA; only the API server's client certificate is accepted there.
    let pki = dualstack_apiserver::tls::Pki::new(&l.server_dir());
    let (cert, key) = (dir.join("pki/kubelet.crt"), dir.join("pki/kubelet.key"));
    let mut sans = vec![node.name.clone()];
    sans.extend(node.ips(plan.ipv6_primary).iter().map(ToString::to_string));
    pki.issue(
        &cert,
        &key,
        &format!("system:node:{}", node.name),
        &["system:nodes"],
        &sans,
    )?;
    let mut cmd = Command::new(exe);
    cmd.arg("agent")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg(format!("--tls-cert-file={}", cert.display()))
        .arg(format!("--tls-private-key-file={}", key.display()))
        .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
        .args(["--node-name", &node.name])
        .arg(format!(
            "--node-ip={}",
            node.node_ip_flag(plan.ipv6_primary)
        ))
        .arg("--root-dir")
        .arg(&dir)
        .arg("--cni-conf-dir")
        .arg(dir.join("net.d"))
        .args(["--cni-bin-dir", "/usr/lib/cni"])
        .arg("--masq-agent");
    // Pods resolve through the cluster DNS Service (both ClusterIPs).
    let dns_ips = crate::dns::cluster_ips(&service_ranges(state));
    if !dns_ips.is_empty() {
        let ips: Vec<String> = dns_ips.iter().map(|i| i.to_string()).collect();
        cmd.arg(format!("--cluster-dns={}", ips.join(",")));
    }
    cmd.arg(format!("--cluster-domain={}", crate::dns::CLUSTER_DOMAIN));
    // The in-agent Service proxy detects pod traffic by the cluster's pod ranges.
    if let Some(cidr) = flag_values(&state.server_flags, "cluster-cidr").last() {
        cmd.arg(format!("--cluster-cidr={cidr}"));
    }
    spawn_recorded(l, &node.name, cmd, Some(&l.netns(&node.name)))
}

/// The lab's Service ranges (`--service-cluster-ip-range`), in flag order.
fn service_ranges(state: &State) -> Vec<ipnet::IpNet> {
    flag_values(&state.server_flags, "service-cluster-ip-range")
        .last()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Creates (unless it exists) the `kube-system/kube-dns` Service at the 10th address of each
/// service range, before the agents start (they pass those addresses to pods).
async fn ensure_dns_service(client: &kube::Client, state: &State, timeout: Duration) -> Result<()> {
    use k8s_openapi::api::core::v1::Service;
    let ips = crate::dns::cluster_ips(&service_ranges(state));
    if ips.is_empty() {
        return Ok(());
    }
    let svc: Service = serde_json::from_value(crate::dns::service(&ips))?;
    let api: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let deadline = Instant::now() + timeout;
    loop {
        // Look first: creating it again would fail on its addresses (422, as upstream's
        // allocation comes before the name check), not with 409.
        let exists = api.get_opt(crate::dns::DNS_NAME).await.map(|s| s.is_some());
        let created = match exists {
            Ok(true) => return Ok(()),
            Ok(false) => api.create(&Default::default(), &svc).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match created {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("creating the Service kube-system/kube-dns");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Creates (unless it exists) the `kube-system/kube-dns` Deployment of `dualstack dns` pods.
async fn ensure_dns_deployment(
    client: &kube::Client,
    l: &Layout,
    state: &State,
    exe: &Path,
) -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    let replicas = crate::dns::REPLICAS.min(state.plan.nodes.len());
    let d: Deployment = serde_json::from_value(crate::dns::deployment(exe, &l.dir, replicas))?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    match api.create(&Default::default(), &d).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).context("creating the Deployment kube-system/kube-dns"),
    }
}

/// Waits until the DNS Service has a ready endpoint of each of its families.
async fn wait_for_dns(client: &kube::Client, state: &State, timeout: Duration) -> Result<()> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let families = crate::dns::cluster_ips(&service_ranges(state)).len();
    if families == 0 {
        return Ok(());
    }
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let lp = ListParams::default().labels("kubernetes.io/service-name=kube-dns");
    let deadline = Instant::now() + timeout;
    loop {
        let ready_families = api
            .list(&lp)
            .await
            .map(|list| {
                list.items
                    .iter()
                    .filter(|s| {
                        s.endpoints
                            .iter()
                            .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    })
                    .map(|s| s.address_type.clone())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            })
            .unwrap_or(0);
        if ready_families >= families {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the cluster DNS (kube-system/kube-dns) has no ready endpoint of each family after {timeout:?}: see `kubectl -n kube-system get pods -l k8s-app=kube-dns` and their logs"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every DNS ClusterIP answers from `node-1` (through its Service proxy, whose
/// rules follow the endpoints within its sync period), so pods started after `up` resolve at
/// once.
async fn wait_for_dns_answers(
    l: &Layout,
    state: &State,
    exe: &Path,
    timeout: Duration,
) -> Result<()> {
    let Some(node) = state.plan.nodes.first() else {
        return Ok(());
    };
    let name = format!("kube-dns.kube-system.svc.{}", crate::dns::CLUSTER_DOMAIN);
    let deadline = Instant::now() + timeout;
    for ip in crate::dns::cluster_ips(&service_ranges(state)) {
        loop {
            let out = tokio::process::Command::new(exe)
                .args(["exec", "--data-dir"])
                .arg(&l.dir)
                .args([&node.name, "--"])
                .arg(exe)
                .args([
                    "dns",
                    "query",
                    &name,
                    "A",
                    "--timeout",
                    "1s",
                    "--server",
                    &ip.to_string(),
                ])
                .output()
                .await
                .context("running dualstack exec")?;
            let text = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && text.contains("status: NOERROR") && text.contains(" IN A ") {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the cluster DNS does not answer at {ip} from {}: {}{}",
                    node.name,
                    text,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Creates `kube-system/ip-masq-agent` with [`plan::masq_config`] unless it exists (a lab that
/// is brought up again keeps what its user made of it).
async fn ensure_masq_configmap(
    client: &kube::Client,
    state: &State,
    timeout: Duration,
) -> Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let cidrs: Vec<ipnet::IpNet> = state
        .server_flags
        .iter()
        .filter_map(|f| f.strip_prefix("--cluster-cidr="))
        .flat_map(|v| v.split(','))
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ip-masq-agent", "namespace": "kube-system"},
        "data": {"config": plan::masq_config(&cidrs)},
    }))?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let deadline = Instant::now() + timeout;
    loop {
        // kube-system appears with the server's bootstrap, just after it answers.
        match api.create(&Default::default(), &cm).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("creating the ConfigMap kube-system/ip-masq-agent");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Gives the outside host a route to every node's podCIDRs via that node (both families), as a
/// cloud network's route table would, so pod traffic that is not masqueraded gets its replies.
async fn route_outside(
    l: &Layout,
    plan: &Plan,
    client: &kube::Client,
    timeout: Duration,
) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    let cidrs = loop {
        let list = nodes.list(&ListParams::default()).await?;
        let cidrs: Vec<(String, Vec<ipnet::IpNet>)> = list
            .items
            .iter()
            .map(|n| {
                let c = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.pod_cidrs.clone())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|c| c.parse().ok())
                    .collect();
                (n.metadata.name.clone().unwrap_or_default(), c)
            })
            .collect();
        if cidrs.iter().all(|(_, c)| !c.is_empty()) || Instant::now() > deadline {
            break cidrs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let nl = dualstack_host::netlink::Netlink::connect_in(&l.netns(OUTSIDE))?;
    let eth0 = nl
        .link_by_name("eth0")
        .await?
        .context("no eth0 in the outside host")?;
    for (dst, via) in plan::outside_routes(plan, &cidrs) {
        nl.add_route(dst, via, Some(eth0.index)).await?;
    }
    Ok(())
}

async fn wait_for_server(l: &Layout, path: &Path, timeout: Duration) -> Result<kube::Client> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            let client = kube::Client::try_from(cfg)?;
            client.apiserver_version().await?;
            anyhow::Ok(client)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                bail!(
                    "the API server did not come up in {timeout:?}: {e:#}; see {}",
                    l.log("server").display()
                )
            }
            Err(_) => {
                if !alive(&l.pid("server")) {
                    bail!(
                        "the API server exited; see {}:\n{}",
                        l.log("server").display(),
                        tail(&l.log("server"), 15)
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await
            }
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_for_nodes(
    client: &kube::Client,
    plan: &Plan,
    timeout: Duration,
    l: &Layout,
) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let list = nodes.list(&ListParams::default()).await?;
        let ready: HashSet<String> = list
            .items
            .iter()
            .filter(|n| node_ready(n))
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let missing: Vec<&str> = plan
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .filter(|n| !ready.contains(*n))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for n in &missing {
            if !alive(&l.pid(n)) {
                bail!(
                    "the agent of {n} exited; see {}:\n{}",
                    l.log(n).display(),
                    tail(&l.log(n), 15)
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "nodes not Ready after {timeout:?}: {}; see the logs in {}",
                missing.join(", "),
                l.dir.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The start time (clock ticks since boot, field 22 of /proc/PID/stat) of a process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The recorded process, if it still runs (same pid and start time).
fn recorded(pidfile: &Path) -> Option<u32> {
    let text = fs::read_to_string(pidfile).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let started: u64 = it.next()?.parse().ok()?;
    let state = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let zombie = state
        .rfind(')')
        .and_then(|i| state[i + 2..].chars().next())
        .is_some_and(|c| c == 'Z');
    (start_time(pid) == Some(started) && !zombie).then_some(pid)
}

fn alive(pidfile: &Path) -> bool {
    recorded(pidfile).is_some()
}

/// Mount points under `dir`, deepest first (from /proc/self/mountinfo).
fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<(PathBuf, String)> = info
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = PathBuf::from(unescape_mount(fields.get(4)?));
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?.to_string();
            point.starts_with(dir).then_some((point, fstype))
        })
        .collect();
    out.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Stops every process the lab runs: the recorded server and agents first (so nothing new is
/// spawned), then, until a scan finds none, every process inside one of the lab's namespaces
/// or naming the lab's dir on its command line (pods, shims, commands from `exec`), with all
/// their descendants (a pod process whose namespace was already detached is still a child of
/// its shim).
fn stop_processes(l: &Layout) -> Result<()> {
    let mut recorded_pids: Vec<u32> = Vec::new();
    if let Ok(dir) = fs::read_dir(l.dir.join("run")) {
        for e in dir.flatten() {
            if let Some(pid) = recorded(&e.path()) {
                recorded_pids.push(pid);
            }
        }
    }
    kill_and_wait(&recorded_pids);
    for _ in 0..50 {
        let pids = lab_processes(l);
        if pids.is_empty() {
            break;
        }
        kill_and_wait(&pids);
    }
    Ok(())
}

/// The processes of the lab still running (see [`stop_processes`]), with their descendants.
fn lab_processes(l: &Layout) -> Vec<u32> {
    let inodes: HashSet<u64> = mounts_under(&l.dir)
        .into_iter()
        .filter(|(_, t)| t == "nsfs")
        .filter_map(|(p, _)| fs::metadata(&p).ok().map(|m| m.ino()))
        .collect();
    let dir = l.dir.to_string_lossy().into_owned();
    let me = std::process::id();
    let mut parent: Vec<(u32, u32)> = Vec::new();
    let mut found: HashSet<u32> = HashSet::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        if after.starts_with('Z') {
            continue;
        }
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parent.push((pid, ppid));
        }
        let in_lab = fs::metadata(e.path().join("ns/net")).is_ok_and(|m| inodes.contains(&m.ino()));
        // Our own daemons by their command line (`dualstack server|agent|shim ... DIR ...`),
        // never a shell or tool that merely mentions the dir (such as the caller of `down`).
        let names_lab = fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            let daemon = args
                .get(1)
                .is_some_and(|a| matches!(*a, b"server" | b"agent" | b"shim" | b"lb"));
            daemon && String::from_utf8_lossy(&c).contains(dir.as_str())
        });
        if in_lab || names_lab {
            found.insert(pid);
        }
    }
    // Descendants, to a fixed point.
    loop {
        let before = found.len();
        for (pid, ppid) in &parent {
            if found.contains(ppid) {
                found.insert(*pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    found.into_iter().collect()
}

/// SIGKILLs `pids` and waits (up to 10 s) until none is running.
fn kill_and_wait(pids: &[u32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| {
        fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
            .is_some_and(|zombie| !zombie)
    }) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Detaches every mount under the lab's dir (namespace files of hosts and pods) and removes
/// the namespace files.
fn remove_namespaces(l: &Layout) -> Result<()> {
    for (point, _) in mounts_under(&l.dir) {
        nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", point.display()))?;
    }
    match fs::remove_dir_all(l.dir.join("netns")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).context("removing the namespace files")
        }
        _ => Ok(()),
    }
}

/// Removes everything `up` made under `data_dir`: processes, namespaces (and with them every
/// link, address, route and nft table inside), mounts and files. Safe to run twice.
pub fn down(data_dir: &Path) -> Result<bool> {
    require_root("down")?;
    let l = Layout::new(data_dir);
    if !l.dir.exists() {
        return Ok(false);
    }
    stop_processes(&l)?;
    remove_namespaces(&l)?;
    let mut removed = false;
    for p in l.made() {
        let r = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        match r {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(format!("removing {}", p.display())),
        }
    }
    // The dir itself, if nothing else is in it.
    let _ = fs::remove_dir(&l.dir);
    Ok(removed)
}

/// The hosts of the lab in `data_dir`.
pub fn hosts(data_dir: &Path) -> Result<Vec<String>> {
    let l = Layout::new(data_dir);
    let bytes = fs::read(l.state()).with_context(|| {
        format!(
            "no lab in {} (run `dualstack up --data-dir {}`)",
            l.dir.display(),
            l.dir.display()
        )
    })?;
    let s: State = serde_json::from_slice(&bytes)?;
    Ok(s.plan.hosts().map(|h| h.name.clone()).collect())
}

/// Replaces this (single-threaded) process with `cmd` running on a lab host: inside its network
/// namespace, with a private mount namespace whose /sys shows the host's links (as `ip netns
/// exec` does). Returns only on failure.
pub fn exec(data_dir: &Path, host: &str, cmd: &[String]) -> Result<std::convert::Infallible> {
    require_root("exec")?;
    let names = hosts(data_dir)?;
    if !names.iter().any(|h| h == host) {
        bail!("no host {host:?} in this lab; hosts: {}", names.join(", "));
    }
    let l = Layout::new(data_dir);
    let ns = l.netns(host);
    if !dualstack_host::netns::exists(&ns) {
        bail!(
            "the lab is not up (no namespace at {}): run `dualstack up`",
            ns.display()
        );
    }
    let (prog, args) = cmd.split_first().context("no command given")?;
    dualstack_host::netns::enter(&ns)?;
    if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok() {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        let _ = mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        );
        if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
            let _ = mount(
                Some("sysfs"),
                "/sys",
                Some("sysfs"),
                MsFlags::empty(),
                None::<&str>,
            );
        }
    }
    let err = Command::new(prog).args(args).exec();
    Err(err).with_context(|| format!("running {prog}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_programs_are_named_with_their_debian_packages() {
        let dir = tempfile::tempdir().unwrap();
        let sbin = dir.path().join("sbin");
        fs::create_dir(&sbin).unwrap();
        fs::write(sbin.join("nft"), "").unwrap();
        // A directory of the same name is not the program.
        fs::create_dir(sbin.join("conntrack")).unwrap();
        let dirs = [dir.path().to_path_buf(), sbin];
        let tools = [
            ("nft", "nftables"),
            ("conntrack", "conntrack"),
            ("ip", "iproute2"),
        ];
        assert_eq!(
            missing_tools(&tools, &dirs),
            [("conntrack", "conntrack"), ("ip", "iproute2")]
        );
        assert_eq!(missing_tools(&tools[..1], &dirs), []);
    }

    #[test]
    fn the_ha_lab_needs_etcd_too() {
        let bins = |ha| {
            needed_tools(ha)
                .into_iter()
                .map(|(b, _)| b)
                .collect::<Vec<_>>()
        };
        assert_eq!(bins(false), ["nft", "conntrack", "ip"]);
        if std::env::var_os("DUALSTACK_ETCD").is_none() {
            assert_eq!(bins(true), ["nft", "conntrack", "ip", "etcd"]);
        }
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }

    #[test]
    fn start_time_of_this_process_is_stable() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
    }
}
