//! LoadBalancer addresses from `--loadbalancer-ip-pool` (pure): which addresses a Service of
//! type LoadBalancer holds, one per entry of `spec.ipFamilies`, written to
//! `status.loadBalancer.ingress` in family order.
//!
//! * Ours: `spec.type: LoadBalancer` and `spec.loadBalancerClass` unset or [`LB_CLASS`]. A
//!   foreign class is never touched.
//! * Requested addresses: the annotation [`ANNOTATION_LB_IPS`] (comma-separated, at most one per
//!   family) or else `spec.loadBalancerIP`. A requested address pins its family; families without
//!   one get the lowest free address. A request that cannot be honoured (not an IP, a family the
//!   Service does not have, two of one family, outside every pool, held by another Service) is
//!   refused: the Service keeps what it holds and the controller records an event.
//! * All-or-nothing: if any family cannot be served, nothing new is taken.
//! * Addresses are released when the Service is deleted, stops being a LoadBalancer, drops a
//!   family or asks for other addresses. A released address may be given to another Service at
//!   once.
//! * Never twice, also across restarts: [`LbAllocator::restore`] rebuilds the pool from the
//!   ingress addresses of existing Services before anything is allocated.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use dualstack_ipam::{IpFamily, LbPool, PoolAllocError};
use k8s_openapi::api::core::v1::Service;
use thiserror::Error;

/// Our `spec.loadBalancerClass`; Services without a class are ours too.
pub const LB_CLASS: &str = "dualstack.io/lb";
/// Requested addresses, one per family (MetalLB's annotation, so manifests carry over).
pub const ANNOTATION_LB_IPS: &str = "metallb.io/loadBalancerIPs";
/// Event reason when a Service got its addresses.
pub const REASON_IP_ALLOCATED: &str = "IPAllocated";
/// Event reason when a Service's addresses cannot be given.
pub const REASON_ALLOCATION_FAILED: &str = "AllocationFailed";

/// A Service, as `namespace/name`.
pub type ServiceKey = String;

/// The key of a Service.
pub fn service_key(svc: &Service) -> ServiceKey {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or(""),
        svc.metadata.name.as_deref().unwrap_or("")
    )
}

/// Why a Service's addresses cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LbError {
    /// A requested value is not an IP address.
    #[error("requested address {0:?} is not a valid IP address")]
    InvalidIp(String),
    /// A requested address of a family the Service does not have.
    #[error("requested address {ip} is {family} but the service's ipFamilies are {families}")]
    FamilyNotInService {
        /// The address.
        ip: IpAddr,
        /// Its family.
        family: IpFamily,
        /// The Service's families.
        families: String,
    },
    /// Two requested addresses of one family.
    #[error("more than one requested {0} address")]
    TwoOfOneFamily(IpFamily),
    /// `spec.loadBalancerIP` disagrees with the annotation.
    #[error(
        "spec.loadBalancerIP {lb_ip} is not among the addresses of annotation {annotation}: {list}"
    )]
    Conflicting {
        /// `spec.loadBalancerIP`.
        lb_ip: String,
        /// The annotation name.
        annotation: &'static str,
        /// Its value.
        list: String,
    },
    /// The requested address is held by another Service.
    #[error("requested address {ip} is already assigned to service {holder}")]
    InUse {
        /// The address.
        ip: IpAddr,
        /// Who holds it.
        holder: ServiceKey,
    },
    /// The pool refused (not in a pool, full, or no range of the family).
    #[error(transparent)]
    Pool(#[from] PoolAllocError),
}

/// What to do with a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbDecision {
    /// Not ours (foreign class); leave it alone entirely.
    Ignore,
    /// Nothing to write.
    Unchanged,
    /// Write these ingress addresses (family order); `allocated` is true when new ones were
    /// taken (for the event).
    SetIngress {
        /// The addresses, in `spec.ipFamilies` order.
        ips: Vec<IpAddr>,
        /// New addresses were taken.
        allocated: bool,
    },
    /// Clear `status.loadBalancer` (no longer a LoadBalancer, or its addresses went back).
    ClearIngress,
    /// The request cannot be honoured; status unchanged, event with the reason.
    Refuse(LbError),
}

/// The pool and who holds what.
#[derive(Debug, Clone)]
pub struct LbAllocator {
    pool: LbPool,
    holder: HashMap<IpAddr, ServiceKey>,
    held: HashMap<ServiceKey, Vec<IpAddr>>,
}

/// Whether `svc` is a LoadBalancer of ours.
pub fn is_ours(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer") && class_is_ours(svc)
}

fn class_is_ours(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.load_balancer_class.as_deref())
        .is_none_or(|c| c == LB_CLASS)
}

/// The addresses in `status.loadBalancer.ingress` that parse.
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref())
        .filter_map(dualstack_api::net::parse_ip_sloppy)
        .collect()
}

fn families(svc: &Service) -> Vec<IpFamily> {
    super::pods::address_types(svc)
}

/// The requested addresses (annotation first, else `spec.loadBalancerIP`), by family.
fn requested(svc: &Service, fams: &[IpFamily]) -> Result<BTreeMap<IpFamily, IpAddr>, LbError> {
    let annotation = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_LB_IPS))
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    let lb_ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let parse = |s: &str| {
        dualstack_api::net::parse_ip_sloppy(s).ok_or_else(|| LbError::InvalidIp(s.to_string()))
    };
    let list: Vec<IpAddr> = match annotation {
        Some(a) => {
            let ips = a
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(parse)
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(l) = lb_ip
                && !ips.contains(&parse(l)?)
            {
                return Err(LbError::Conflicting {
                    lb_ip: l.to_string(),
                    annotation: ANNOTATION_LB_IPS,
                    list: a.to_string(),
                });
            }
            ips
        }
        None => lb_ip.map(parse).transpose()?.into_iter().collect(),
    };
    let mut out = BTreeMap::new();
    for ip in list {
        let family = IpFamily::of_addr(&ip);
        if !fams.contains(&family) {
            return Err(LbError::FamilyNotInService {
                ip,
                family,
                families: fams
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        if out.insert(family, ip).is_some() {
            return Err(LbError::TwoOfOneFamily(family));
        }
    }
    Ok(out)
}

impl LbAllocator {
    /// An empty allocator over `pool`.
    pub fn new(pool: LbPool) -> Self {
        Self {
            pool,
            holder: HashMap::new(),
            held: HashMap::new(),
        }
    }

    /// The pool (for metrics).
    pub fn pool(&self) -> &LbPool {
        &self.pool
    }

    /// What `key` holds, in family order.
    pub fn held(&self, key: &str) -> &[IpAddr] {
        self.held.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Rebuilds who holds what from the ingress addresses of existing Services of ours that
    /// lie in the pool. When two Services claim one address, the older Service keeps it and the
    /// other is returned (it will get a fresh one).
    pub fn restore(&mut self, services: &[&Service]) -> Vec<ServiceKey> {
        let mut sorted: Vec<&&Service> = services.iter().filter(|s| is_ours(s)).collect();
        sorted.sort_by(|a, b| {
            let t = |s: &Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(a).cmp(&t(b))
                .then_with(|| service_key(a).cmp(&service_key(b)))
        });
        let mut losers = Vec::new();
        for svc in sorted {
            let key = service_key(svc);
            let fams = families(svc);
            for ip in ingress_ips(svc) {
                if !self.pool.contains(ip) || !fams.contains(&IpFamily::of_addr(&ip)) {
                    continue;
                }
                if self.pool.allocate(ip).is_ok() {
                    self.holder.insert(ip, key.clone());
                    self.held.entry(key.clone()).or_default().push(ip);
                } else if !losers.contains(&key) {
                    losers.push(key.clone());
                }
            }
        }
        losers
    }

    fn release_all(&mut self, key: &str) -> bool {
        let Some(ips) = self.held.remove(key) else {
            return false;
        };
        for ip in &ips {
            self.pool.release(*ip);
            self.holder.remove(ip);
        }
        !ips.is_empty()
    }

    /// A Service was deleted: its addresses go back.
    pub fn forget(&mut self, key: &str) -> bool {
        self.release_all(key)
    }

    /// Decides for a Service that exists.
    pub fn sync(&mut self, svc: &Service) -> LbDecision {
        let key = service_key(svc);
        if !class_is_ours(svc) {
            self.release_all(&key);
            return LbDecision::Ignore;
        }
        if !is_ours(svc) {
            // Not (or no longer) a LoadBalancer: give back and clear what we wrote.
            let had = self.release_all(&key);
            let stale = ingress_ips(svc).iter().any(|ip| self.pool.contains(*ip));
            return if (had || stale) && !ingress_ips(svc).is_empty() {
                LbDecision::ClearIngress
            } else {
                LbDecision::Unchanged
            };
        }
        let fams = families(svc);
        let wanted = match requested(svc, &fams) {
            Ok(w) => w,
            Err(e) => return LbDecision::Refuse(e),
        };
        let current: Vec<IpAddr> = self.held(&key).to_vec();
        let mut taken: Vec<IpAddr> = Vec::new();
        let mut result: Vec<IpAddr> = Vec::new();
        let mut failure = None;
        for f in &fams {
            let held = current
                .iter()
                .copied()
                .find(|ip| IpFamily::of_addr(ip) == *f);
            let choice = match (wanted.get(f), held) {
                (Some(w), Some(h)) if *w == h => Ok(h),
                (Some(w), _) => match self.holder.get(w) {
                    Some(other) if *other != key => Err(LbError::InUse {
                        ip: *w,
                        holder: other.clone(),
                    }),
                    _ => self.pool.allocate(*w).map(|()| *w).map_err(LbError::from),
                },
                (None, Some(h)) => Ok(h),
                (None, None) => self.pool.allocate_next(*f).map_err(LbError::from),
            };
            match choice {
                Ok(ip) => {
                    if !current.contains(&ip) {
                        taken.push(ip);
                    }
                    result.push(ip);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            for ip in taken {
                self.pool.release(ip);
            }
            return LbDecision::Refuse(e);
        }
        // Commit: release what is no longer wanted, record the new holdings.
        for ip in &current {
            if !result.contains(ip) {
                self.pool.release(*ip);
                self.holder.remove(ip);
            }
        }
        for ip in &result {
            self.holder.insert(*ip, key.clone());
        }
        self.held.insert(key, result.clone());
        if ingress_ips(svc) == result {
            LbDecision::Unchanged
        } else {
            LbDecision::SetIngress {
                ips: result,
                allocated: !taken.is_empty(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pool() -> LbPool {
        LbPool::parse(&["198.51.100.0/24", "2001:db8:1b::10-2001:db8:1b::20"]).unwrap()
    }

    fn lb(name: &str, families: &[&str]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                creation_timestamp: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ip_families: Some(families.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn with_ingress(mut svc: Service, ips: &[&str]) -> Service {
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    ips.iter()
                        .map(|i| LoadBalancerIngress {
                            ip: Some(i.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        });
        svc
    }

    fn annotate(mut svc: Service, v: &str) -> Service {
        svc.metadata.annotations = Some([(ANNOTATION_LB_IPS.to_string(), v.to_string())].into());
        svc
    }

    fn ips(d: &LbDecision) -> Vec<String> {
        match d {
            LbDecision::SetIngress { ips, .. } => ips.iter().map(IpAddr::to_string).collect(),
            other => panic!("expected ingress, got {other:?}"),
        }
    }

    #[test]
    fn should_give_one_address_per_family_in_family_order() {
        let mut a = LbAllocator::new(pool());
        assert_eq!(
            ips(&a.sync(&lb("dual", &["IPv4", "IPv6"]))),
            ["198.51.100.1", "2001:db8:1b::10"]
        );
        assert_eq!(
            ips(&a.sync(&lb("dual6", &["IPv6", "IPv4"]))),
            ["2001:db8:1b::11", "198.51.100.2"]
        );
        assert_eq!(ips(&a.sync(&lb("v6", &["IPv6"]))), ["2001:db8:1b::12"]);
        assert_eq!(ips(&a.sync(&lb("v4", &["IPv4"]))), ["198.51.100.3"]);
        // Stable: a second sync with the status written changes nothing.
        let written = with_ingress(lb("v4", &["IPv4"]), &["198.51.100.3"]);
        assert_eq!(a.sync(&written), LbDecision::Unchanged);
    }

    #[test]
    fn should_honour_requested_addresses_and_refuse_bad_ones() {
        let mut a = LbAllocator::new(pool());
        let mut single = lb("pinned", &["IPv4"]);
        single.spec.as_mut().unwrap().load_balancer_ip = Some("198.51.100.50".into());
        assert_eq!(ips(&a.sync(&single)), ["198.51.100.50"]);
        let both = annotate(
            lb("both", &["IPv4", "IPv6"]),
            "2001:db8:1b::1a, 198.51.100.60",
        );
        assert_eq!(ips(&a.sync(&both)), ["198.51.100.60", "2001:db8:1b::1a"]);
        let refused = |svc: &Service, a: &mut LbAllocator| match a.sync(svc) {
            LbDecision::Refuse(e) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        };
        let taken = annotate(lb("thief", &["IPv4"]), "198.51.100.50");
        assert_eq!(
            refused(&taken, &mut a),
            "requested address 198.51.100.50 is already assigned to service default/pinned"
        );
        let outside = annotate(lb("outside", &["IPv4"]), "203.0.113.5");
        assert_eq!(
            refused(&outside, &mut a),
            "provided IP 203.0.113.5 is not in any load balancer pool range"
        );
        let wrong_family = annotate(lb("wf", &["IPv4"]), "2001:db8:1b::1b");
        assert_eq!(
            refused(&wrong_family, &mut a),
            "requested address 2001:db8:1b::1b is IPv6 but the service's ipFamilies are IPv4"
        );
        let two = annotate(lb("two", &["IPv4", "IPv6"]), "198.51.100.7,198.51.100.8");
        assert_eq!(
            refused(&two, &mut a),
            "more than one requested IPv4 address"
        );
        let garbage = annotate(lb("g", &["IPv4"]), "nope");
        assert_eq!(
            refused(&garbage, &mut a),
            "requested address \"nope\" is not a valid IP address"
        );
        // A refused request takes nothing.
        assert_eq!(a.pool().used(IpFamily::IPv4), 2);
    }

    #[test]
    fn should_take_nothing_when_one_family_is_exhausted() {
        let mut a =
            LbAllocator::new(LbPool::parse(&["198.51.100.1/32", "2001:db8:1b::1/128"]).unwrap());
        assert_eq!(ips(&a.sync(&lb("v6", &["IPv6"]))), ["2001:db8:1b::1"]);
        let LbDecision::Refuse(e) = a.sync(&lb("dual", &["IPv4", "IPv6"])) else {
            panic!()
        };
        assert_eq!(
            e.to_string(),
            "load balancer pool is full for ip family IPv6"
        );
        assert_eq!(a.pool().used(IpFamily::IPv4), 0);
        // When v6 goes away, dual gets both.
        assert!(a.forget("default/v6"));
        assert_eq!(
            ips(&a.sync(&lb("dual", &["IPv4", "IPv6"]))),
            ["198.51.100.1", "2001:db8:1b::1"]
        );
    }

    #[test]
    fn should_release_on_type_change_and_clear_the_status() {
        let mut a = LbAllocator::new(pool());
        assert_eq!(ips(&a.sync(&lb("web", &["IPv4"]))), ["198.51.100.1"]);
        let mut cluster_ip = with_ingress(lb("web", &["IPv4"]), &["198.51.100.1"]);
        cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert_eq!(a.sync(&cluster_ip), LbDecision::ClearIngress);
        assert_eq!(a.pool().used(IpFamily::IPv4), 0);
        // The address is free for the next Service.
        assert_eq!(ips(&a.sync(&lb("next", &["IPv4"]))), ["198.51.100.1"]);
    }

    #[test]
    fn should_follow_family_changes_and_new_requests() {
        let mut a = LbAllocator::new(pool());
        assert_eq!(ips(&a.sync(&lb("web", &["IPv4"]))), ["198.51.100.1"]);
        let up = with_ingress(lb("web", &["IPv4", "IPv6"]), &["198.51.100.1"]);
        assert_eq!(ips(&a.sync(&up)), ["198.51.100.1", "2001:db8:1b::10"]);
        let down = with_ingress(lb("web", &["IPv6"]), &["198.51.100.1", "2001:db8:1b::10"]);
        assert_eq!(ips(&a.sync(&down)), ["2001:db8:1b::10"]);
        assert_eq!(a.pool().used(IpFamily::IPv4), 0);
        let moved = annotate(
            with_ingress(lb("web", &["IPv6"]), &["2001:db8:1b::10"]),
            "2001:db8:1b::20",
        );
        assert_eq!(ips(&a.sync(&moved)), ["2001:db8:1b::20"]);
        assert!(!a.pool().has("2001:db8:1b::10".parse().unwrap()));
    }

    #[test]
    fn should_leave_foreign_classes_alone() {
        let mut a = LbAllocator::new(pool());
        let mut foreign = with_ingress(lb("f", &["IPv4"]), &["198.51.100.9"]);
        foreign.spec.as_mut().unwrap().load_balancer_class = Some("example.com/other".into());
        assert_eq!(a.sync(&foreign), LbDecision::Ignore);
        assert_eq!(a.restore(&[&foreign]), Vec::<String>::new());
        assert_eq!(a.pool().used(IpFamily::IPv4), 0);
        let mut explicit = lb("ours", &["IPv4"]);
        explicit.spec.as_mut().unwrap().load_balancer_class = Some(LB_CLASS.into());
        assert_eq!(ips(&a.sync(&explicit)), ["198.51.100.1"]);
    }

    #[test]
    fn should_never_give_an_address_twice_after_a_restore() {
        let older = with_ingress(
            lb("older", &["IPv4", "IPv6"]),
            &["198.51.100.1", "2001:db8:1b::10"],
        );
        let mut newer = with_ingress(lb("newer", &["IPv4"]), &["198.51.100.1"]);
        newer.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        let mut a = LbAllocator::new(pool());
        assert_eq!(
            a.restore(&[&newer, &older]),
            vec!["default/newer".to_string()]
        );
        assert_eq!(a.sync(&older), LbDecision::Unchanged);
        // The loser gets a fresh address; a new Service never gets one in use.
        assert_eq!(ips(&a.sync(&newer)), ["198.51.100.2"]);
        assert_eq!(
            ips(&a.sync(&lb("new", &["IPv4", "IPv6"]))),
            ["198.51.100.3", "2001:db8:1b::11"]
        );
    }
}
