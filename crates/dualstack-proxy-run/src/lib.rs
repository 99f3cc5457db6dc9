//! The edge of the Service proxy (`dualstack proxy`, and the same loop inside `dualstack
//! agent`): watches Services, EndpointSlices, ServiceCIDRs and its own Node over the API,
//! feeds the pure [`dualstack_proxy::DualStackProxier`], and applies each family's transaction
//! to the kernel through [`apply::NftApplier`] (`nft -j -f -`).
//!
//! Start at [`run`]. The pieces: [`apply`] (nft, the per-family NAT probe, a recording fake),
//! [`conntrack`] (UDP flushes), [`pacer`] (the bounded-frequency sync, pure), [`health`]
//! (`/healthz`, `/metrics`, health-check node ports), [`metrics`] (upstream's names).
//!
//! Tables: this crate writes only `ip dualstack-proxy` and `ip6 dualstack-proxy` (and, for one
//! batch at start, `dualstack-proxy-probe`, created and deleted in the same transaction).

pub mod apply;
pub mod conntrack;
pub mod health;
pub mod metrics;
pub mod netlink;
pub mod pacer;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dualstack_ipam::IpFamily;
use dualstack_proxy::{DualStackProxier, NodeConfig, NodePortAddress};
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::apply::NftApplier;
use crate::conntrack::Conntrack;
use crate::health::{HealthCheckServers, ProxyHealth, Shared};
use crate::metrics::Metrics;
use crate::pacer::Pacer;

/// The slice annotation the network programming latency is measured from.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Failures of the proxy's edge.
#[derive(Debug, Error)]
pub enum ProxyRunError {
    /// `nft` refused or could not run.
    #[error("{what}: {detail}")]
    Nft {
        /// What was attempted.
        what: String,
        /// nft's message.
        detail: String,
    },
    /// `conntrack` failed.
    #[error("conntrack {args}: {detail}")]
    Conntrack {
        /// The arguments.
        args: String,
        /// The message.
        detail: String,
    },
    /// A listener could not be opened.
    #[error("{what} {addr}: {source}")]
    Listen {
        /// The flag.
        what: String,
        /// The address.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Neither family can be proxied, or not the node's primary one.
    #[error("no support for primary IP family {family:?}: {detail}")]
    PrimaryFamily {
        /// The node's primary family.
        family: String,
        /// Why.
        detail: String,
    },
}

/// The proxy's settings (kube-proxy's flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// `--hostname-override`: the Node whose addresses and endpoints are this node's.
    pub node_name: String,
    /// `--cluster-cidr` (`--detect-local-mode=ClusterCIDR`).
    pub cluster_cidrs: Vec<IpNet>,
    /// Service CIDRs given by flag; empty: the ServiceCIDR objects of the API.
    pub service_cidrs: Vec<IpNet>,
    /// `--nodeport-addresses`.
    pub nodeport_addresses: Vec<NodePortAddress>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// `--iptables-masquerade-bit`.
    pub masquerade_bit: u8,
    /// `--healthz-bind-address` (None: off).
    pub healthz_bind: Option<SocketAddr>,
    /// `--metrics-bind-address` (None: off).
    pub metrics_bind: Option<SocketAddr>,
    /// `--nftables-min-sync-period`.
    pub min_sync_period: Duration,
    /// `--nftables-sync-period`.
    pub sync_period: Duration,
}

/// The kernel side, injectable.
#[derive(Clone)]
pub struct Kernel {
    /// nftables.
    pub nft: Arc<dyn NftApplier>,
    /// conntrack.
    pub conntrack: Arc<dyn Conntrack>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kernel")
    }
}

impl Default for Kernel {
    fn default() -> Self {
        Kernel {
            nft: Arc::new(apply::NftCommand::default()),
            conntrack: Arc::new(conntrack::ConntrackCommand::default()),
        }
    }
}

/// Which families the kernel can proxy (the NAT probe), with the reason where not.
#[derive(Debug, Clone)]
pub struct FamilySupport {
    /// `None`: supported; `Some(reason)`: not.
    pub ipv4: Option<String>,
    /// The same for IPv6.
    pub ipv6: Option<String>,
}

impl FamilySupport {
    /// Probes both families.
    pub fn probe(nft: &dyn NftApplier) -> Self {
        FamilySupport {
            ipv4: nft.probe_nat(IpFamily::IPv4).err().map(|e| e.to_string()),
            ipv6: nft.probe_nat(IpFamily::IPv6).err().map(|e| e.to_string()),
        }
    }

    /// Whether `family` is supported.
    pub fn supports(&self, family: IpFamily) -> bool {
        match family {
            IpFamily::IPv4 => self.ipv4.is_none(),
            IpFamily::IPv6 => self.ipv6.is_none(),
        }
    }

    /// Why `family` is not supported.
    pub fn reason(&self, family: IpFamily) -> Option<&str> {
        match family {
            IpFamily::IPv4 => self.ipv4.as_deref(),
            IpFamily::IPv6 => self.ipv6.as_deref(),
        }
    }
}

/// The node IPs of a Node object: InternalIPs, then ExternalIPs, in order (upstream's
/// `detectNodeIPs`).
pub fn node_ips(node: &Node) -> Vec<IpAddr> {
    let addrs = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for ty in ["InternalIP", "ExternalIP"] {
        for a in addrs.iter().filter(|a| a.type_ == ty) {
            if let Ok(ip) = a.address.parse::<IpAddr>()
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    out
}

/// Every address of this network namespace's interfaces.
pub async fn local_addresses() -> Vec<IpAddr> {
    match dualstack_host::netlink::Netlink::connect() {
        Ok(nl) => nl.all_addresses().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "listing the node's addresses failed");
            Vec::new()
        }),
        Err(e) => {
            tracing::warn!(error = %e, "netlink connection failed");
            Vec::new()
        }
    }
}

// Events are moved once into the channel; boxing them buys nothing.
#[allow(clippy::large_enum_variant)]
enum Ev {
    Svc(watcher::Event<Service>),
    Slice(watcher::Event<EndpointSlice>),
    Cidr(watcher::Event<ServiceCIDR>),
    Node(watcher::Event<Node>),
}

fn spawn_watch<K>(
    api: Api<K>,
    cfg: watcher::Config,
    tx: mpsc::UnboundedSender<Ev>,
    wrap: fn(watcher::Event<K>) -> Ev,
) where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let kind = K::kind(&Default::default()).to_string();
    tokio::spawn(async move {
        let stream = watcher(api, cfg).default_backoff();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(wrap(ev)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(kind = %kind, error = %e, "watch failed; retrying"),
            }
        }
    });
}

fn key_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// The proxy's state between events.
struct Loop {
    config: Config,
    kernel: Kernel,
    proxier: DualStackProxier,
    support: FamilySupport,
    services: HashSet<(String, String)>,
    slices: HashMap<(String, String), EndpointSlice>,
    cidrs: HashMap<String, Vec<IpNet>>,
    node_ips: Vec<IpAddr>,
    local: Vec<IpAddr>,
    node_config: Option<NodeConfig>,
    relist_svc: Option<HashSet<(String, String)>>,
    relist_slice: Option<HashSet<(String, String)>>,
    relist_cidr: Option<HashSet<String>>,
    synced_svc: bool,
    synced_slice: bool,
    synced_cidr: bool,
    triggers: Vec<jiff::Timestamp>,
    pacer: Pacer,
    shared: Shared,
    hc: HealthCheckServers,
}

impl Loop {
    fn changed(&mut self) {
        if !self.pacer.pending() {
            self.shared
                .health
                .lock()
                .expect("not poisoned")
                .pending_since = Some(jiff::Timestamp::now());
        }
        self.pacer.changed();
    }

    fn on_service(&mut self, ev: watcher::Event<Service>) {
        match ev {
            watcher::Event::Init => self.relist_svc = Some(HashSet::new()),
            watcher::Event::InitApply(s) => {
                let k = key_of(&s.metadata);
                if let Some(r) = self.relist_svc.as_mut() {
                    r.insert(k.clone());
                }
                self.services.insert(k);
                self.proxier.on_service(&s);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist_svc.take() {
                    let gone: Vec<_> = self.services.difference(&seen).cloned().collect();
                    for (ns, n) in gone {
                        self.services.remove(&(ns.clone(), n.clone()));
                        self.proxier.on_service_deleted(&ns, &n);
                    }
                }
                self.synced_svc = true;
            }
            watcher::Event::Apply(s) => {
                self.services.insert(key_of(&s.metadata));
                self.proxier.on_service(&s);
            }
            watcher::Event::Delete(s) => {
                let (ns, n) = key_of(&s.metadata);
                self.services.remove(&(ns.clone(), n.clone()));
                self.proxier.on_service_deleted(&ns, &n);
            }
        }
        self.changed();
    }

    fn slice_applied(&mut self, s: EndpointSlice) {
        if let Some(t) = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            self.triggers.push(t);
        }
        if let Err(e) = self.proxier.on_slice(&s) {
            tracing::debug!(error = %e, "slice ignored");
        }
        self.slices.insert(key_of(&s.metadata), s);
    }

    fn slice_deleted(&mut self, k: &(String, String)) {
        if let Some(s) = self.slices.remove(k)
            && let Err(e) = self.proxier.on_slice_deleted(&s)
        {
            tracing::debug!(error = %e, "slice ignored");
        }
    }

    fn on_slice(&mut self, ev: watcher::Event<EndpointSlice>) {
        match ev {
            watcher::Event::Init => self.relist_slice = Some(HashSet::new()),
            watcher::Event::InitApply(s) => {
                if let Some(r) = self.relist_slice.as_mut() {
                    r.insert(key_of(&s.metadata));
                }
                self.slice_applied(s);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist_slice.take() {
                    let gone: Vec<_> = self
                        .slices
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.slice_deleted(&k);
                    }
                }
                self.synced_slice = true;
            }
            watcher::Event::Apply(s) => self.slice_applied(s),
            watcher::Event::Delete(s) => self.slice_deleted(&key_of(&s.metadata)),
        }
        self.changed();
    }

    fn on_cidr(&mut self, ev: watcher::Event<ServiceCIDR>) {
        let cidrs_of = |c: &ServiceCIDR| -> Vec<IpNet> {
            c.spec
                .as_ref()
                .and_then(|s| s.cidrs.as_ref())
                .map(|v| v.iter().filter_map(|c| c.parse().ok()).collect())
                .unwrap_or_default()
        };
        match ev {
            watcher::Event::Init => self.relist_cidr = Some(HashSet::new()),
            watcher::Event::InitApply(c) => {
                let n = c.metadata.name.clone().unwrap_or_default();
                if let Some(r) = self.relist_cidr.as_mut() {
                    r.insert(n.clone());
                }
                self.cidrs.insert(n, cidrs_of(&c));
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist_cidr.take() {
                    self.cidrs.retain(|k, _| seen.contains(k));
                }
                self.synced_cidr = true;
            }
            watcher::Event::Apply(c) => {
                self.cidrs
                    .insert(c.metadata.name.clone().unwrap_or_default(), cidrs_of(&c));
            }
            watcher::Event::Delete(c) => {
                self.cidrs
                    .remove(&c.metadata.name.clone().unwrap_or_default());
            }
        }
        self.refresh_config();
    }

    fn on_node(&mut self, ev: watcher::Event<Node>) {
        match ev {
            watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                let ips = node_ips(&n);
                if !ips.is_empty() {
                    self.node_ips = ips;
                }
            }
            _ => {}
        }
        self.refresh_config();
    }

    fn ready(&self) -> bool {
        self.synced_svc
            && self.synced_slice
            && (self.synced_cidr || !self.config.service_cidrs.is_empty())
            && self.node_config.is_some()
    }

    fn refresh_config(&mut self) {
        if self.node_ips.is_empty() {
            return;
        }
        let mut service_cidrs: Vec<IpNet> = if self.config.service_cidrs.is_empty() {
            let set: BTreeSet<IpNet> = self.cidrs.values().flatten().copied().collect();
            set.into_iter().collect()
        } else {
            self.config.service_cidrs.clone()
        };
        service_cidrs.sort();
        let mut local = self.local.clone();
        for ip in &self.node_ips {
            if !local.contains(ip) {
                local.push(*ip);
            }
        }
        let nc = NodeConfig {
            node_name: self.config.node_name.clone(),
            node_ips: self.node_ips.clone(),
            local_addresses: local,
            cluster_cidrs: self.config.cluster_cidrs.clone(),
            service_cidrs,
            nodeport_addresses: self.config.nodeport_addresses.clone(),
            masquerade_all: self.config.masquerade_all,
            masquerade_bit: self.config.masquerade_bit,
        };
        if self.node_config.as_ref() != Some(&nc) {
            if self.node_config.is_none() {
                self.report_families(&nc);
            }
            tracing::info!(node_ips = ?nc.node_ips, service_cidrs = ?nc.service_cidrs, "node facts");
            self.proxier.set_config(&nc);
            self.node_config = Some(nc);
            self.changed();
        }
    }

    fn report_families(&self, nc: &NodeConfig) {
        let primary = nc
            .node_ips
            .first()
            .map(IpFamily::of_addr)
            .unwrap_or(IpFamily::IPv4);
        for f in IpFamily::ALL {
            match self.support.reason(f) {
                None => {}
                Some(why) => tracing::error!(
                    family = %f,
                    primary = f == primary,
                    "{f} Services are NOT proxied on this node: {why}"
                ),
            }
        }
        if self.support.supports(IpFamily::IPv4) && self.support.supports(IpFamily::IPv6) {
            tracing::info!(primary = %primary, "proxy running in dual-stack mode");
        }
    }

    /// One sync: render, apply per family, flush conntrack, update health and metrics.
    async fn sync(&mut self) {
        let start = Instant::now();
        let res = tokio::task::block_in_place(|| self.proxier.sync(start));
        let mut ok = true;
        let mut full = false;
        let mut ops = 0;
        let todo: Vec<&dualstack_proxy::FamilySync> = [&res.ipv4, &res.ipv6]
            .into_iter()
            .filter(|fs| !fs.transaction.is_empty() && self.support.supports(fs.transaction.family))
            .collect();
        // The families' tables are independent: apply them side by side.
        let nft = self.kernel.nft.clone();
        let results: Vec<Result<(), ProxyRunError>> = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let handles: Vec<_> = todo
                    .iter()
                    .map(|fs| {
                        let nft = nft.clone();
                        scope.spawn(move || nft.apply(&fs.transaction))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("nft apply thread panicked"))
                    .collect()
            })
        });
        for (fs, result) in todo.into_iter().zip(results) {
            let tx = &fs.transaction;
            full |= tx.full;
            ops += tx.ops.len();
            match result {
                Ok(()) => {
                    for ep in &fs.removed_udp_endpoints {
                        let ct = self.kernel.conntrack.clone();
                        if let Err(e) = tokio::task::block_in_place(|| ct.flush_udp(ep)) {
                            tracing::warn!(error = %e, "conntrack flush failed");
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "sync failed; a full sync follows");
                    ok = false;
                }
            }
        }
        let took = start.elapsed().as_secs_f64();
        let now = Instant::now();
        if ok {
            self.shared.metrics.sync_duration.observe(took);
            if full {
                self.shared.metrics.full_sync_duration.observe(took);
            } else {
                self.shared.metrics.partial_sync_duration.observe(took);
            }
            let wall = jiff::Timestamp::now();
            self.shared
                .metrics
                .last_sync
                .set(wall.as_millisecond() as f64 / 1000.0);
            for t in self.triggers.drain(..) {
                let d = wall.duration_since(t).as_secs_f64();
                if d >= 0.0 {
                    self.shared.metrics.network_programming.observe(d);
                }
            }
            let mut h = self.shared.health.lock().expect("not poisoned");
            h.last_updated = Some(wall);
            h.pending_since = None;
            if ops > 0 {
                tracing::debug!(ops, full, seconds = took, "synced");
            }
        } else {
            self.shared.metrics.sync_failures.inc();
            self.proxier.request_full_sync();
        }
        self.pacer.ran(now, ok, ops > 0);
        let v4 = self.proxier.family(IpFamily::IPv4).health_checks();
        let v6 = self.proxier.family(IpFamily::IPv6).health_checks();
        self.hc.sync(v4, v6, &self.shared).await;
    }
}

/// Runs the proxy until the process ends (or the primary family cannot be proxied).
pub async fn run(
    client: kube::Client,
    config: Config,
    kernel: Kernel,
) -> Result<(), ProxyRunError> {
    // Bridged pod traffic must traverse the ip/ip6 hooks, or replies between two pods of one
    // bridge skip the un-DNAT (upstream warns about the same: br_netfilter).
    for f in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
        let p = format!("/proc/sys/net/bridge/{f}");
        if std::path::Path::new(&p).exists() {
            let _ = std::fs::write(&p, "1");
        } else {
            tracing::warn!(
                "missing br-netfilter module or unset sysctl {f}; proxy may not work as intended for pods on a bridge"
            );
        }
    }
    let nft = kernel.nft.clone();
    let support = tokio::task::block_in_place(|| FamilySupport::probe(nft.as_ref()));
    if !support.supports(IpFamily::IPv4) && !support.supports(IpFamily::IPv6) {
        return Err(ProxyRunError::PrimaryFamily {
            family: "IPv4".to_string(),
            detail: support.ipv4.unwrap_or_default(),
        });
    }
    let shared = Shared {
        health: Arc::new(Mutex::new(ProxyHealth {
            sync_period: config.sync_period,
            ..Default::default()
        })),
        metrics: Arc::new(Metrics::new()),
    };
    let _healthz = health::serve_healthz(config.healthz_bind, shared.clone()).await?;
    let _metrics = health::serve_metrics(config.metrics_bind, shared.clone()).await?;

    let (tx, mut rx) = mpsc::unbounded_channel::<Ev>();
    let skip = "!service.kubernetes.io/service-proxy-name";
    spawn_watch(
        Api::<Service>::all(client.clone()),
        watcher::Config::default().labels(&format!("{skip},!service.kubernetes.io/headless")),
        tx.clone(),
        Ev::Svc,
    );
    spawn_watch(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{skip},!service.kubernetes.io/headless")),
        tx.clone(),
        Ev::Slice,
    );
    if config.service_cidrs.is_empty() {
        spawn_watch(
            Api::<ServiceCIDR>::all(client.clone()),
            watcher::Config::default(),
            tx.clone(),
            Ev::Cidr,
        );
    }
    spawn_watch(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={}", config.node_name)),
        tx.clone(),
        Ev::Node,
    );
    drop(tx);

    let local = local_addresses().await;
    let mut l = Loop {
        proxier: DualStackProxier::new(&NodeConfig::new(
            &config.node_name,
            Vec::new(),
            config.cluster_cidrs.clone(),
        )),
        pacer: Pacer::new(config.min_sync_period, config.sync_period),
        config,
        kernel,
        support,
        services: HashSet::new(),
        slices: HashMap::new(),
        cidrs: HashMap::new(),
        node_ips: Vec::new(),
        local,
        node_config: None,
        relist_svc: None,
        relist_slice: None,
        relist_cidr: None,
        synced_svc: false,
        synced_slice: false,
        synced_cidr: false,
        triggers: Vec::new(),
        shared,
        hc: HealthCheckServers::default(),
    };
    let mut addr_tick = tokio::time::interval(l.config.sync_period);
    addr_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = l.pacer.due(Instant::now());
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { return Ok(()) };
                l.handle(ev);
                // Take every event already queued before deciding to sync (batching).
                while let Ok(ev) = rx.try_recv() {
                    l.handle(ev);
                }
            }
            _ = addr_tick.tick() => {
                let local = local_addresses().await;
                if local != l.local {
                    l.local = local;
                    l.refresh_config();
                }
            }
            _ = tokio::time::sleep_until(due.into()), if l.ready() => {
                l.sync().await;
            }
        }
    }
}

impl Loop {
    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Svc(e) => self.on_service(e),
            Ev::Slice(e) => self.on_slice(e),
            Ev::Cidr(e) => self.on_cidr(e),
            Ev::Node(e) => self.on_node(e),
        }
    }
}
