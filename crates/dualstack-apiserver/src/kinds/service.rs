//! Services: the dual-stack rules of `dualstack_api::service` plus persistence of what they
//! allocate. Every ClusterIP is an `IPAddress` object and every NodePort a
//! `/registry/servicenodeports/<port>` key, created in the same transaction as the Service with
//! an "absent" precondition: two concurrent creates (even on two API servers) can never hold the
//! same address. The in-memory allocators ([`ServiceAllocators`]) pick candidates and are kept in
//! sync with storage by `crate::controllers::allocator_sync`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use dualstack_api::config::ServiceClusterIpRange;
use dualstack_api::service::{self, Allocation, ServiceError};
use dualstack_apimachinery::field::ErrorList;
use dualstack_apimachinery::status::{ApiError, GroupKind};
use dualstack_apimachinery::validation::NameRule;
use dualstack_ipam::{IpFamily, NodePortAllocator, PortRange, ServiceIpAllocators};
use dualstack_store::{Compare, Op};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{IPAddress, IPAddressSpec, ParentReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::Value;

use crate::registry::now;
use crate::resource::{Column, Ctx, ResourceDef, Strategy, WriteHooks, age_cell};

static DEF: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    namespaced: true,
    short_names: &["svc"],
    categories: &["all"],
    subresources: &["status"],
    name_rule: NameRule::Dns1035,
    field_labels: &["spec.clusterIP", "spec.type"],
    return_deleted_object: true,
    allow_create_on_update: true,
    columns: &[
        Column::name(),
        Column::new("Type", "The type of the service"),
        Column::new("Cluster-IP", "The cluster IP of the service"),
        Column::new("External-IP", "The external IP of the service"),
        Column::new("Port(s)", "The ports of the service"),
        Column::age(),
        Column::wide(
            "Selector",
            "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
        ),
    ],
};

/// Storage prefix of NodePort reservations (not an API resource).
pub const NODE_PORT_PREFIX: &str = "/registry/servicenodeports/";
/// Storage prefix of IPAddress objects.
pub const IP_ADDRESS_PREFIX: &str = "/registry/ipaddresses.networking.k8s.io/";
/// Label of IPAddress objects naming their family.
pub const IP_FAMILY_LABEL: &str = "ipaddress.kubernetes.io/ip-family";
/// Label of IPAddress objects naming their manager.
pub const MANAGED_BY_LABEL: &str = "ipaddress.kubernetes.io/managed-by";
/// Our allocator's manager name (upstream's).
pub const MANAGED_BY: &str = "ipallocator.k8s.io";

/// The key of a NodePort reservation.
pub fn node_port_key(port: u16) -> String {
    format!("{NODE_PORT_PREFIX}{port}")
}

/// The key of an IPAddress object.
pub fn ip_address_key(ip: &IpAddr) -> String {
    format!("{IP_ADDRESS_PREFIX}{ip}")
}

/// The in-memory allocators of this server, shared by the Service strategy, the sync task and
/// the repair loop.
#[derive(Debug)]
pub struct ServiceAllocators {
    /// ClusterIP ranges, primary first.
    pub ips: Mutex<ServiceIpAllocators>,
    /// NodePorts.
    pub ports: Mutex<NodePortAllocator>,
    /// The configured ranges.
    pub ranges: ServiceClusterIpRange,
}

impl ServiceAllocators {
    /// Allocators for the configured ranges, seeded with fresh entropy.
    pub fn new(ranges: &ServiceClusterIpRange, node_ports: PortRange) -> anyhow::Result<Self> {
        let mut ips =
            ServiceIpAllocators::from_cidrs(&ranges.cidrs()).map_err(|e| anyhow::anyhow!("{e}"))?;
        for f in ips.families() {
            if let Some(r) = ips.get_mut(f) {
                r.reseed(rand::random());
            }
        }
        let mut ports = NodePortAllocator::new(node_ports);
        ports.reseed(rand::random());
        Ok(Self {
            ips: Mutex::new(ips),
            ports: Mutex::new(ports),
            ranges: ranges.clone(),
        })
    }

    /// The configured families, primary first.
    pub fn families(&self) -> Vec<IpFamily> {
        self.ranges.families()
    }

    fn rollback(self: &Arc<Self>, a: &Allocation) {
        let mut ips = self.ips.lock().expect("ip allocators");
        let mut ports = self.ports.lock().expect("port allocator");
        a.rollback(&mut ips, &mut ports);
    }
}

/// The Service strategy.
#[derive(Debug)]
pub struct ServiceStrategy {
    /// Shared allocators.
    pub alloc: Arc<ServiceAllocators>,
}

fn to_api(name: &str, e: ServiceError) -> ApiError {
    match e {
        ServiceError::Invalid(errors) => ApiError::Invalid {
            kind: GroupKind::new("", "Service"),
            name: name.to_string(),
            errors,
        },
        ServiceError::Internal(m) => ApiError::Internal(m),
    }
}

fn invalid(name: &str, errors: ErrorList) -> ApiError {
    to_api(name, ServiceError::Invalid(errors))
}

fn ip_address_object(ip: &IpAddr, svc: &Service) -> IPAddress {
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(
        IP_FAMILY_LABEL.to_string(),
        IpFamily::of_addr(ip).as_str().to_string(),
    );
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    IPAddress {
        metadata: ObjectMeta {
            name: Some(ip.to_string()),
            uid: Some(uuid::Uuid::new_v4().to_string()),
            creation_timestamp: Some(Time(now())),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(IPAddressSpec {
            parent_ref: ParentReference {
                group: Some(String::new()),
                resource: "services".into(),
                namespace: svc.metadata.namespace.clone(),
                name: svc.metadata.name.clone().unwrap_or_default(),
            },
        }),
    }
}

/// The stored bytes of the IPAddress object recording `ip` for `svc`.
pub fn ip_address_record(ip: &IpAddr, svc: &Service) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(&ip_address_object(ip, svc)).unwrap_or_default())
}

fn owner(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or(""),
        svc.metadata.name.as_deref().unwrap_or("")
    )
}

impl ServiceStrategy {
    /// Turns an allocation plan into storage work: create what was taken (absent
    /// preconditions), delete what is given back, and undo the reservations if the write fails.
    fn hooks(&self, a: Allocation, svc: &Service) -> Result<WriteHooks, ApiError> {
        let mut hooks = WriteHooks::default();
        for ip in &a.ips_allocated {
            let key = ip_address_key(ip);
            hooks.compares.push(Compare::absent(&key));
            hooks
                .ops
                .push(crate::registry::put_op(key, &ip_address_object(ip, svc))?);
        }
        for p in &a.ports_allocated {
            let key = node_port_key(*p);
            hooks.compares.push(Compare::absent(&key));
            hooks.ops.push(Op::Put {
                key,
                value: serde_json::to_vec(&owner(svc)).unwrap_or_default().into(),
            });
        }
        for ip in &a.ips_released {
            hooks.ops.push(Op::Delete {
                key: ip_address_key(ip),
            });
        }
        for p in &a.ports_released {
            hooks.ops.push(Op::Delete {
                key: node_port_key(*p),
            });
        }
        // Released addresses are free as soon as the write commits (the allocator sync would
        // free them a moment later; a client re-creating at once must not see them taken).
        let (released_ips, released_ports) = (a.ips_released.clone(), a.ports_released.clone());
        let alloc = self.alloc.clone();
        hooks.on_commit.push(Box::new(move || {
            alloc
                .ips
                .lock()
                .expect("ip allocators")
                .release_all(&released_ips);
            let mut ports = alloc.ports.lock().expect("port allocator");
            for p in released_ports {
                ports.release(p);
            }
        }));
        let alloc = self.alloc.clone();
        hooks.on_abort.push(Box::new(move || alloc.rollback(&a)));
        Ok(hooks)
    }

    fn alpha(ctx: &Ctx) -> Option<Value> {
        ctx.legacy_fields
            .get("spec.ipFamily")
            .map(|s| serde_json::from_str(s).unwrap_or(Value::Null))
    }
}

/// `makePortString`.
fn port_string(svc: &Service) -> String {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    if ports.is_empty() {
        return "<none>".into();
    }
    ports
        .iter()
        .map(|p| {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            match p.node_port.filter(|&n| n != 0) {
                Some(n) => format!("{}:{n}/{proto}", p.port),
                None => format!("{}/{proto}", p.port),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `getServiceExternalIP`. Server-side printing generates tables with `Wide: true` (upstream's
/// `TableConvertor`), so load balancer addresses are never cut to 16 characters.
fn external_ip(svc: &Service, wide: bool) -> String {
    let spec = svc.spec.clone().unwrap_or_default();
    let ext = spec.external_ips.clone().unwrap_or_default();
    match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ClusterIP" | "NodePort" => {
            if ext.is_empty() {
                "<none>".into()
            } else {
                ext.join(",")
            }
        }
        "LoadBalancer" => {
            let ingress: Vec<String> = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .map(|i| {
                    i.iter()
                        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let mut lb = ingress.join(",");
            if !wide && lb.len() > 16 {
                lb = format!("{}...", &lb[..13]);
            }
            let mut all: Vec<String> = if lb.is_empty() {
                Vec::new()
            } else {
                lb.split(',').map(str::to_string).collect()
            };
            all.extend(ext);
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => spec.external_name.unwrap_or_default(),
        _ => "<unknown>".into(),
    }
}

fn selector_string(svc: &Service) -> String {
    let sel = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    if sel.is_empty() {
        return "<none>".into();
    }
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Strategy for ServiceStrategy {
    type Obj = Service;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn upgrade_value(&self, ctx: &mut Ctx, value: &mut Value) -> Result<(), ApiError> {
        if let Some(alpha) = service::take_alpha_ip_family(value) {
            ctx.legacy_fields
                .insert("spec.ipFamily".into(), alpha.to_string());
        }
        Ok(())
    }

    fn defaults(&self, svc: &mut Service) {
        service::set_defaults(svc);
    }

    fn begin_create(&self, ctx: &Ctx, svc: &mut Service) -> Result<WriteHooks, ApiError> {
        let name = svc.metadata.name.clone().unwrap_or_default();
        if let Some(alpha) = Self::alpha(ctx) {
            let errs =
                service::apply_alpha_ip_family_on_create(svc, &alpha, &self.alloc.families());
            if !errs.is_empty() {
                return Err(invalid(&name, errs));
            }
        }
        let a = {
            let mut ips = self.alloc.ips.lock().expect("ip allocators");
            let mut ports = self.alloc.ports.lock().expect("port allocator");
            service::begin_create(svc, &mut ips, &mut ports, ctx.dry_run)
                .map_err(|e| to_api(&name, e))?
        };
        self.hooks(a, svc)
    }

    fn begin_update(
        &self,
        ctx: &Ctx,
        new: &mut Service,
        old: &Service,
    ) -> Result<WriteHooks, ApiError> {
        let name = old.metadata.name.clone().unwrap_or_default();
        if let Some(alpha) = Self::alpha(ctx) {
            let errs = service::check_alpha_ip_family_on_update(new, old, &alpha);
            if !errs.is_empty() {
                return Err(invalid(&name, errs));
            }
        }
        let a = {
            let mut ips = self.alloc.ips.lock().expect("ip allocators");
            let mut ports = self.alloc.ports.lock().expect("port allocator");
            service::begin_update(new, old, &mut ips, &mut ports, ctx.dry_run)
                .map_err(|e| to_api(&name, e))?
        };
        self.hooks(a, new)
    }

    fn begin_delete(&self, _ctx: &Ctx, old: &Service) -> Result<WriteHooks, ApiError> {
        // Every IPAddress and NodePort key goes with the Service, also of families no longer
        // configured; the allocators learn it from storage.
        self.hooks(service::release_on_delete(old), old)
    }

    fn prepare_for_create(&self, svc: &mut Service) {
        service::prepare_for_create(svc);
    }

    fn prepare_for_update(&self, new: &mut Service, old: &Service) {
        service::prepare_for_update(new, old);
    }

    fn validate(&self, _ctx: &Ctx, svc: &Service) -> ErrorList {
        service::validate(svc)
    }

    fn validate_update(&self, _ctx: &Ctx, new: &Service, old: &Service) -> ErrorList {
        service::validate_update(new, old)
    }

    fn on_read(&self, svc: &mut Service) {
        service::default_on_read(svc, self.alloc.ranges.primary_family());
    }

    fn fields(&self, svc: &Service, out: &mut Vec<(&'static str, String)>) {
        let spec = svc.spec.clone().unwrap_or_default();
        out.push(("spec.clusterIP", spec.cluster_ip.unwrap_or_default()));
        out.push(("spec.type", spec.type_.unwrap_or_default()));
    }

    fn row(&self, svc: &Service, now: jiff::Timestamp) -> Vec<Value> {
        let spec = svc.spec.clone().unwrap_or_default();
        // Every family's ClusterIP, primary first (upstream prints clusterIP alone); headless
        // Services show `None` as upstream.
        let cluster_ip = spec
            .cluster_ips
            .as_ref()
            .filter(|c| !c.is_empty())
            .map(|c| c.join(","))
            .unwrap_or_else(|| "<none>".into());
        vec![
            svc.metadata.name.clone().unwrap_or_default().into(),
            spec.type_.clone().unwrap_or_default().into(),
            cluster_ip.into(),
            external_ip(svc, true).into(),
            port_string(svc).into(),
            age_cell(&svc.metadata, now),
            selector_string(svc).into(),
        ]
    }
}
