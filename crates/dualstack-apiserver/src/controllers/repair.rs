//! The ClusterIP and NodePort repair loop (upstream `ipallocator/controller/repairip.go` and
//! `portallocator/controller/repair.go`): runs once at start (readiness waits for it) and then
//! every interval. It creates the `IPAddress` / NodePort records of Services that lack them,
//! reports what it cannot fix as Warning events with upstream's reasons and texts, and deletes
//! records no Service owns after they were seen leaked in [`LEAK_RUNS`] consecutive runs.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dualstack_apimachinery::status::ApiError;
use dualstack_ipam::IpFamily;
use dualstack_store::{Compare, Txn};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::IPAddress;
use tokio::sync::watch;

use crate::controllers::events::{Involved, record};
use crate::handlers::Resources;
use crate::kinds::service::{
    IP_ADDRESS_PREFIX, MANAGED_BY, MANAGED_BY_LABEL, NODE_PORT_PREFIX, ServiceAllocators,
    ip_address_key, node_port_key,
};
use crate::registry::Storage;

/// Runs an unowned record must be seen in before it is deleted.
pub const LEAK_RUNS: u32 = 3;
/// Default interval (upstream `repairLoopInterval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(180);
/// Event source.
pub const COMPONENT: &str = "ipallocator-repair-controller";

/// What one run found, for tests and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// (event reason, message) pairs emitted.
    pub events: Vec<(String, String)>,
    /// Records created for Services that lacked them.
    pub repaired: usize,
    /// Leaked records deleted.
    pub released: usize,
}

struct State {
    storage: Storage,
    res: Resources,
    alloc: Arc<ServiceAllocators>,
    leaks: HashMap<String, u32>,
}

fn involved(svc: &Service) -> Involved {
    Involved {
        kind: "Service".into(),
        api_version: "v1".into(),
        namespace: svc.metadata.namespace.clone(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone(),
    }
}

fn owner(svc: &Service) -> (String, String) {
    (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

impl State {
    async fn event(&self, report: &mut Report, svc: &Service, reason: &str, message: String) {
        if let Some(events) = self.res.by_plural("events")
            && let Err(e) = record(
                events,
                COMPONENT,
                &involved(svc),
                "Warning",
                reason,
                &message,
            )
            .await
        {
            tracing::warn!(error = %e, "repair: recording event failed");
        }
        tracing::warn!(reason, %message, "service IP repair");
        report.events.push((reason.to_string(), message));
    }

    async fn create_record(&self, key: String, value: Bytes) -> Result<bool, ApiError> {
        let txn = Txn::new().when(Compare::absent(&key)).put(key, value);
        Ok(matches!(
            self.storage.txn(txn).await?,
            dualstack_store::TxnResult::Committed { .. }
        ))
    }

    async fn run_once(&mut self) -> Result<Report, ApiError> {
        let mut report = Report::default();
        self.storage.consistent().await?;
        let svc_page = self
            .storage
            .cache
            .list("/registry/services/", None, None, &|_| true);
        let services: Vec<Service> = svc_page
            .items
            .iter()
            .filter_map(|e| serde_json::from_slice(&e.output).ok())
            .collect();
        let ip_page = self
            .storage
            .cache
            .list(IP_ADDRESS_PREFIX, None, None, &|_| true);
        let mut ip_objects: BTreeMap<String, (IPAddress, i64)> = BTreeMap::new();
        for e in &ip_page.items {
            if let Ok(ip) = serde_json::from_slice::<IPAddress>(&e.output) {
                ip_objects.insert(e.kv.key.clone(), (ip, e.kv.mod_revision));
            }
        }
        let port_page = self
            .storage
            .cache
            .list(NODE_PORT_PREFIX, None, None, &|_| true);
        let mut port_records: BTreeMap<String, (String, i64)> = BTreeMap::new();
        for e in &port_page.items {
            let owner: String = serde_json::from_slice(&e.output).unwrap_or_default();
            port_records.insert(e.kv.key.clone(), (owner, e.kv.mod_revision));
        }
        let families = self.alloc.families();
        let mut owned: std::collections::BTreeSet<String> = Default::default();
        for svc in &services {
            let spec = svc.spec.clone().unwrap_or_default();
            let (ns, name) = owner(svc);
            for ip_str in spec.cluster_ips.iter().flatten() {
                if ip_str.is_empty() || ip_str == "None" {
                    continue;
                }
                let Ok(ip) = ip_str.parse::<IpAddr>() else {
                    self.event(
                        &mut report,
                        svc,
                        "ClusterIPNotValid",
                        format!("Cluster IP {ip_str} is not a valid IP; please recreate service"),
                    )
                    .await;
                    continue;
                };
                let family = IpFamily::of_addr(&ip);
                let key = ip_address_key(&ip);
                owned.insert(key.clone());
                if !families.contains(&family) {
                    self.event(&mut report, svc, "ClusterIPNotValid", format!("Cluster IP {ip}({}) is of ip family that is no longer configured on cluster; please recreate service", family.as_str())).await;
                    continue;
                }
                let in_range = self
                    .alloc
                    .ips
                    .lock()
                    .expect("ip allocators")
                    .get(family)
                    .is_some_and(|r| r.contains(ip));
                if !in_range {
                    self.event(&mut report, svc, "ClusterIPOutOfRange", format!("Cluster IP [{}]: {ip} is not within any configured Service CIDR; please recreate service", family.as_str())).await;
                    continue;
                }
                match ip_objects.get(&key) {
                    None => {
                        let obj = crate::kinds::service::ip_address_record(&ip, svc);
                        if self.create_record(key.clone(), obj).await? {
                            report.repaired += 1;
                            self.event(
                                &mut report,
                                svc,
                                "ClusterIPNotAllocated",
                                format!(
                                    "Cluster IP [{}]:{ip} is not allocated; repairing",
                                    family.as_str()
                                ),
                            )
                            .await;
                        }
                    }
                    Some((obj, _)) => {
                        let p = obj.spec.as_ref().map(|s| &s.parent_ref);
                        let matches = p.is_some_and(|p| {
                            p.resource == "services"
                                && p.namespace.as_deref().unwrap_or("") == ns
                                && p.name == name
                        });
                        if !matches {
                            self.event(&mut report, svc, "ClusterIPAlreadyAllocated", format!("Cluster IP [{}]:{ip} was assigned to multiple services; please recreate service", family.as_str())).await;
                        }
                    }
                }
            }
            let range = self.alloc.ports.lock().expect("ports").range();
            let ports: Vec<i32> = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.node_port)
                .chain(spec.health_check_node_port)
                .filter(|&p| p != 0)
                .collect();
            let mut seen = std::collections::BTreeSet::new();
            for p in ports {
                if !seen.insert(p) {
                    continue;
                }
                let Ok(port) = u16::try_from(p) else { continue };
                let key = node_port_key(port);
                owned.insert(key.clone());
                if !range.contains(port) {
                    self.event(&mut report, svc, "PortOutOfRange", format!("Port {port} is not within the port range {range}; please recreate service")).await;
                    continue;
                }
                let me = format!("{ns}/{name}");
                match port_records.get(&key) {
                    None => {
                        let value = Bytes::from(serde_json::to_vec(&me).unwrap_or_default());
                        if self.create_record(key.clone(), value).await? {
                            report.repaired += 1;
                            self.event(
                                &mut report,
                                svc,
                                "PortNotAllocated",
                                format!("Port {port} is not allocated; repairing"),
                            )
                            .await;
                        }
                    }
                    Some((o, _)) if *o != me => {
                        self.event(&mut report, svc, "PortAlreadyAllocated", format!("Port {port} was assigned to multiple services; please recreate service")).await;
                    }
                    Some(_) => {}
                }
            }
        }
        // Records nobody owns.
        let mut candidates: Vec<(String, i64)> = Vec::new();
        for (key, (obj, rev)) in &ip_objects {
            let managed = obj
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY_LABEL))
                .is_some_and(|m| m == MANAGED_BY);
            if managed && !owned.contains(key) {
                candidates.push((key.clone(), *rev));
            }
        }
        for (key, (_, rev)) in &port_records {
            if !owned.contains(key) {
                candidates.push((key.clone(), *rev));
            }
        }
        let mut still = HashMap::new();
        for (key, rev) in candidates {
            let runs = self.leaks.get(&key).copied().unwrap_or(0) + 1;
            if runs < LEAK_RUNS {
                tracing::info!(%key, "the cluster IP or port may have leaked: flagging for later clean up");
                still.insert(key, runs);
                continue;
            }
            tracing::warn!(%key, "the cluster IP or port appears to have leaked: cleaning up");
            let txn = Txn::new()
                .when(Compare::mod_revision(&key, rev))
                .delete(&key);
            if matches!(
                self.storage.txn(txn).await?,
                dualstack_store::TxnResult::Committed { .. }
            ) {
                report.released += 1;
            }
        }
        self.leaks = still;
        Ok(report)
    }
}

/// One repair run (for tests and the first run at start).
pub async fn run_once(
    storage: &Storage,
    res: &Resources,
    alloc: &Arc<ServiceAllocators>,
) -> Result<Report, ApiError> {
    let mut st = State {
        storage: storage.clone(),
        res: res.clone(),
        alloc: alloc.clone(),
        leaks: HashMap::new(),
    };
    st.run_once().await
}

/// Runs the loop until shutdown; `ready` turns true after the first successful run.
pub fn start(
    storage: Storage,
    res: Resources,
    alloc: Arc<ServiceAllocators>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut st = State {
            storage,
            res,
            alloc,
            leaks: HashMap::new(),
        };
        loop {
            match st.run_once().await {
                Ok(r) => {
                    let _ = ready.send(true);
                    if !r.events.is_empty() || r.repaired > 0 || r.released > 0 {
                        tracing::info!(
                            events = r.events.len(),
                            repaired = r.repaired,
                            released = r.released,
                            "service IP repair run"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "service IP repair run failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    })
}
