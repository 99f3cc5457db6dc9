//! Table tests of the Service dual-stack rules (`shared/spec/upstream-dual-stack.md` §3.3,
//! §4.3–§4.7 and §5.3), driven the way the API server drives them.
//!
//! Address plan (the spec's cluster shorthands; NodePorts are 30000-32767 everywhere):
//!
//! | cluster | `--service-cluster-ip-range` | primary family |
//! |---------|------------------------------|----------------|
//! | `C4`    | `10.0.0.0/16`                | IPv4           |
//! | `C6`    | `fd00:10::/108`              | IPv6           |
//! | `D46`   | `10.0.0.0/16,fd00:10::/108`  | IPv4           |
//! | `D64`   | `fd00:10::/108,10.0.0.0/16`  | IPv6           |
//!
//! ClusterIPs chosen by a user are `10.0.0.5` / `fd00:10::5`; `10.0.0.50` / `fd00:10::50` are a
//! second choice and `10.0.0.99` an attempted change. `10.1.0.1` is outside every range.
//!
//! * A create runs [`set_defaults`] → [`begin_create`] → [`prepare_for_create`] → [`validate`];
//!   an error of `begin_create` is the only one returned, and a failed validation gives back what
//!   `begin_create` took (the store's abort).
//! * An update reads the stored object ([`default_on_read`]), lets the client edit what it read,
//!   then runs [`set_defaults`] → [`begin_update`] → [`prepare_for_update`] → [`validate_update`].
//! * A row passes when the resulting `ipFamilyPolicy`, `ipFamilies` and `clusterIPs` are the
//!   wanted ones (`clusterIP == clusterIPs[0]`, one address per family, each allocated in its
//!   family's range), or when the error causes are exactly the wanted texts. After a failure the
//!   allocators hold what they held before.

use std::collections::BTreeMap;
use std::net::IpAddr;

use dualstack_ipam::{IpFamily, NodePortAllocator, PortRange, ServiceIpAllocators};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

// ---------------------------------------------------------------------------------------------
// Clusters and allocators
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cluster {
    C4,
    C6,
    D46,
    D64,
}
use Cluster::{C4, C6, D46, D64};

impl Cluster {
    fn cidrs(self) -> &'static [&'static str] {
        match self {
            C4 => &["10.0.0.0/16"],
            C6 => &["fd00:10::/108"],
            D46 => &["10.0.0.0/16", "fd00:10::/108"],
            D64 => &["fd00:10::/108", "10.0.0.0/16"],
        }
    }
}

/// The allocators of one API server.
struct Alloc {
    ips: ServiceIpAllocators,
    ports: NodePortAllocator,
}

impl Alloc {
    fn new(cluster: Cluster) -> Self {
        Self::with_cidrs(cluster.cidrs())
    }

    fn with_cidrs(cidrs: &[&str]) -> Self {
        let nets: Vec<IpNet> = cidrs.iter().map(|c| c.parse().expect("cidr")).collect();
        Alloc {
            ips: ServiceIpAllocators::from_cidrs(&nets).expect("service cidrs"),
            ports: NodePortAllocator::new(PortRange::parse("30000-32767").expect("port range")),
        }
    }

    fn primary(&self) -> IpFamily {
        self.ips.primary_family()
    }

    /// Takes an address, as another Service would have.
    fn take(&mut self, ip: &str) {
        let ip: IpAddr = ip.parse().expect("ip");
        self.ips
            .get_mut(IpFamily::of_addr(&ip))
            .expect("family configured")
            .allocate(ip)
            .expect("free");
    }

    /// Marks what a stored object holds as taken (a restart rebuilding from storage); addresses
    /// of families this cluster no longer has are skipped, as upstream's repair loop does.
    fn restore(&mut self, svc: &Service) {
        let mut svc = svc.clone();
        normalize_cluster_ips(&mut svc, None);
        let svc = &svc;
        for ip in cluster_ips(svc)
            .iter()
            .filter_map(|s| s.parse::<IpAddr>().ok())
        {
            if let Some(r) = self.ips.get_mut(IpFamily::of_addr(&ip)) {
                r.allocate(ip).expect("restore ip");
            }
        }
        let hc = spec(svc).health_check_node_port.filter(|&n| n != 0);
        for p in node_port_numbers(svc).into_iter().chain(hc) {
            self.ports
                .allocate(u16::try_from(p).expect("port"))
                .expect("restore port");
        }
    }

    fn used(&self, family: IpFamily) -> u64 {
        self.ips.get(family).map_or(0, |r| r.used())
    }

    fn has(&self, ip: &str) -> bool {
        let ip: IpAddr = ip.parse().expect("ip");
        self.ips
            .get(IpFamily::of_addr(&ip))
            .is_some_and(|r| r.has(ip))
    }

    /// Addresses in use per family and NodePorts in use.
    fn usage(&self) -> (u64, u64, u32) {
        (
            self.used(IpFamily::IPv4),
            self.used(IpFamily::IPv6),
            self.ports.used(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------------

/// A Service under construction: `svc()` is a ClusterIP Service `default/web` with selector
/// `app=web` and one port `http` 80/TCP.
#[derive(Clone, Debug)]
struct S(Service);

fn svc() -> S {
    S(Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ports: Some(vec![port("http", 80, "TCP", 0)]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn port(name: &str, number: i32, protocol: &str, node_port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        protocol: Some(protocol.into()),
        node_port: (node_port != 0).then_some(node_port),
        ..Default::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl S {
    fn spec(&mut self) -> &mut ServiceSpec {
        spec_mut(&mut self.0)
    }
    fn ty(mut self, t: &str) -> Self {
        self.spec().type_ = Some(t.into());
        self
    }
    /// `spec.clusterIP`.
    fn ip(mut self, ip: &str) -> Self {
        self.spec().cluster_ip = Some(ip.into());
        self
    }
    /// `spec.clusterIPs`.
    fn ips(mut self, ips: &[&str]) -> Self {
        self.spec().cluster_ips = Some(strings(ips));
        self
    }
    /// `spec.ipFamilies`.
    fn fams(mut self, fams: &[&str]) -> Self {
        self.spec().ip_families = Some(strings(fams));
        self
    }
    /// `spec.ipFamilyPolicy`.
    fn policy(mut self, p: &str) -> Self {
        self.spec().ip_family_policy = Some(p.into());
        self
    }
    fn headless(self) -> Self {
        self.ip("None")
    }
    fn selectorless(mut self) -> Self {
        self.spec().selector = None;
        self
    }
    fn external_name(self, name: &str) -> Self {
        let mut s = self.ty(TYPE_EXTERNAL_NAME);
        s.spec().external_name = Some(name.into());
        s
    }
    fn ports(mut self, ports: Vec<ServicePort>) -> Self {
        self.spec().ports = Some(ports);
        self
    }
    /// `externalTrafficPolicy: Local`.
    fn local(mut self) -> Self {
        self.spec().external_traffic_policy = Some("Local".into());
        self
    }
    fn hc(mut self, port: i32) -> Self {
        self.spec().health_check_node_port = Some(port);
        self
    }
    fn without_lb_node_ports(mut self) -> Self {
        self.spec().allocate_load_balancer_node_ports = Some(false);
        self
    }
    /// What an old client sends back: no `clusterIP`, `clusterIPs`, `ipFamilies` or policy.
    fn old_client_put(mut self) -> Self {
        let s = self.spec();
        s.cluster_ip = None;
        s.cluster_ips = None;
        s.ip_families = None;
        s.ip_family_policy = None;
        self
    }
    fn no_ips(mut self) -> Self {
        self.spec().cluster_ips = None;
        self
    }
    fn no_policy(mut self) -> Self {
        self.spec().ip_family_policy = None;
        self
    }
    /// An unrelated change.
    fn label(mut self) -> Self {
        self.0.metadata.labels = Some(BTreeMap::from([("tier".to_string(), "front".to_string())]));
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Pipelines
// ---------------------------------------------------------------------------------------------

/// The causes of a failure as the client reads them.
fn texts(e: &ServiceError) -> Vec<String> {
    match e {
        ServiceError::Invalid(errs) => errs.iter().map(FieldError::to_string).collect(),
        ServiceError::Internal(m) => vec![format!("Internal error occurred: {m}")],
    }
}

fn create(alloc: &mut Alloc, s: S) -> Result<(Service, Allocation), ServiceError> {
    let mut svc = s.0;
    set_defaults(&mut svc);
    let a = begin_create(&mut svc, &mut alloc.ips, &mut alloc.ports, false)?;
    prepare_for_create(&mut svc);
    let errs = validate(&svc);
    if !errs.is_empty() {
        a.rollback(&mut alloc.ips, &mut alloc.ports);
        return Err(ServiceError::Invalid(errs));
    }
    Ok((svc, a))
}

/// Old object as read, new object, plan.
type Updated = (Service, Service, Allocation);

fn update(
    alloc: &mut Alloc,
    stored: &Service,
    change: fn(S) -> S,
) -> Result<Updated, ServiceError> {
    let mut old = stored.clone();
    default_on_read(&mut old, alloc.primary());
    let mut new = change(S(old.clone())).0;
    set_defaults(&mut new);
    let a = begin_update(&mut new, &old, &mut alloc.ips, &mut alloc.ports, false)?;
    prepare_for_update(&mut new, &old);
    let errs = validate_update(&new, &old);
    if !errs.is_empty() {
        a.rollback(&mut alloc.ips, &mut alloc.ports);
        return Err(ServiceError::Invalid(errs));
    }
    Ok((old, new, a))
}

// ---------------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Want {
    /// One ClusterIP per family, allocated; a non-empty `ips[i]` is the exact address wanted.
    Ips {
        policy: &'static str,
        families: &'static [&'static str],
        ips: &'static [&'static str],
    },
    /// Headless: `clusterIP` and `clusterIPs` are `None`, nothing allocated.
    Headless {
        policy: &'static str,
        families: &'static [&'static str],
    },
    /// No ClusterIP field at all (ExternalName).
    Bare,
    /// Exactly these causes, in this order (a 500 reads `Internal error occurred: ...`).
    Fail(&'static [&'static str]),
}

const fn ok(policy: &'static str, families: &'static [&'static str]) -> Want {
    Want::Ips {
        policy,
        families,
        ips: &[],
    }
}

const fn ok_ips(
    policy: &'static str,
    families: &'static [&'static str],
    ips: &'static [&'static str],
) -> Want {
    Want::Ips {
        policy,
        families,
        ips,
    }
}

const fn headless(policy: &'static str, families: &'static [&'static str]) -> Want {
    Want::Headless { policy, families }
}

const fn fail(causes: &'static [&'static str]) -> Want {
    Want::Fail(causes)
}

const SINGLE: &str = SINGLE_STACK;
const PREFER: &str = PREFER_DUAL_STACK;
const REQUIRE: &str = REQUIRE_DUAL_STACK;
const V4: &[&str] = &["IPv4"];
const V6: &[&str] = &["IPv6"];
const V46: &[&str] = &["IPv4", "IPv6"];
const V64: &[&str] = &["IPv6", "IPv4"];

/// Checks a successful result against `want`.
fn check_service(name: &str, alloc: &Alloc, svc: &Service, want: Want) {
    let fams: Vec<&str> = families(svc).iter().map(String::as_str).collect();
    match want {
        Want::Ips {
            policy: p,
            families: wf,
            ips: wips,
        } => {
            assert_eq!(policy(svc), Some(p), "{name}: ipFamilyPolicy");
            assert_eq!(fams, wf, "{name}: ipFamilies");
            let ips = cluster_ips(svc);
            assert_eq!(
                ips.len(),
                wf.len(),
                "{name}: one ClusterIP per family, got {ips:?}"
            );
            assert_eq!(
                cluster_ip(svc),
                ips[0],
                "{name}: clusterIP == clusterIPs[0]"
            );
            for (i, ip) in ips.iter().enumerate() {
                let addr: IpAddr = ip
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: clusterIPs[{i}] {ip:?}"));
                let family = IpFamily::of_addr(&addr);
                assert_eq!(
                    family.as_str(),
                    wf[i],
                    "{name}: clusterIPs[{i}] {ip} family"
                );
                if let Some(range) = alloc.ips.get(family) {
                    assert!(
                        range.has(addr),
                        "{name}: {ip} is allocated in {}",
                        range.cidr()
                    );
                }
                if let Some(w) = wips.get(i)
                    && !w.is_empty()
                {
                    assert_eq!(ip, w, "{name}: clusterIPs[{i}]");
                }
            }
        }
        Want::Headless {
            policy: p,
            families: wf,
        } => {
            assert_eq!(policy(svc), Some(p), "{name}: ipFamilyPolicy");
            assert_eq!(fams, wf, "{name}: ipFamilies");
            assert_eq!(cluster_ip(svc), CLUSTER_IP_NONE, "{name}: clusterIP");
            assert_eq!(cluster_ips(svc), [CLUSTER_IP_NONE], "{name}: clusterIPs");
        }
        Want::Bare => {
            assert_eq!(policy(svc), None, "{name}: ipFamilyPolicy");
            assert!(fams.is_empty(), "{name}: ipFamilies {fams:?}");
            assert_eq!(cluster_ip(svc), "", "{name}: clusterIP");
            assert!(cluster_ips(svc).is_empty(), "{name}: clusterIPs");
        }
        Want::Fail(causes) => panic!("{name}: succeeded with {:?}, wanted {causes:?}", svc.spec),
    }
}

fn check_failure(name: &str, err: &ServiceError, want: Want) {
    match want {
        Want::Fail(causes) => assert_eq!(texts(err), causes, "{name}"),
        _ => panic!("{name}: failed with {:?}", texts(err)),
    }
}

// ---------------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------------

struct Create {
    name: &'static str,
    cluster: Cluster,
    /// Addresses other Services already hold.
    taken: &'static [&'static str],
    svc: S,
    want: Want,
}

fn c(name: &'static str, cluster: Cluster, svc: S, want: Want) -> Create {
    Create {
        name,
        cluster,
        taken: &[],
        svc,
        want,
    }
}

fn create_rows() -> Vec<Create> {
    vec![
        // --- §4.3 step 2: policy defaulting -------------------------------------------------
        c(
            "a service without policy is SingleStack of the primary family on C4",
            C4,
            svc(),
            ok(SINGLE, V4),
        ),
        c(
            "a service without policy is SingleStack of the primary family on C6",
            C6,
            svc(),
            ok(SINGLE, V6),
        ),
        c(
            "a service without policy is SingleStack of the primary family on D46",
            D46,
            svc(),
            ok(SINGLE, V4),
        ),
        c(
            "a service without policy is SingleStack of the primary family on D64",
            D64,
            svc(),
            ok(SINGLE, V6),
        ),
        c(
            "a headless selectorless service is RequireDualStack with both families even on C4",
            C4,
            svc().headless().selectorless(),
            headless(REQUIRE, V46),
        ),
        c(
            "a headless selectorless service is RequireDualStack with both families even on C6",
            C6,
            svc().headless().selectorless(),
            headless(REQUIRE, V64),
        ),
        c(
            "a headless selectorless service lists the primary family first on D46",
            D46,
            svc().headless().selectorless(),
            headless(REQUIRE, V46),
        ),
        c(
            "a headless selectorless service lists the primary family first on D64",
            D64,
            svc().headless().selectorless(),
            headless(REQUIRE, V64),
        ),
        c(
            "a headless service with a selector is SingleStack on D46",
            D46,
            svc().headless(),
            headless(SINGLE, V4),
        ),
        c(
            "a headless service with a selector is SingleStack on D64",
            D64,
            svc().headless(),
            headless(SINGLE, V6),
        ),
        c(
            "a headless selectorless service may ask for SingleStack",
            C4,
            svc().headless().selectorless().policy(SINGLE),
            headless(SINGLE, V4),
        ),
        c(
            "a headless selectorless service may list an unconfigured family and gets the other too",
            C4,
            svc().headless().selectorless().fams(V6),
            headless(REQUIRE, V64),
        ),
        c(
            "a headless service with a selector and RequireDualStack is refused on C4",
            C4,
            svc().headless().policy(REQUIRE),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#,
            ]),
        ),
        c(
            "a headless service with a selector and PreferDualStack gets both families on D46",
            D46,
            svc().headless().policy(PREFER),
            headless(PREFER, V46),
        ),
        c(
            "a headless service with a selector may not list an unconfigured family",
            C4,
            svc().headless().fams(V6),
            fail(&[r#"spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster"#]),
        ),
        // --- §4.3 steps 9 and 13: PreferDualStack and RequireDualStack ------------------------
        c(
            "PreferDualStack stays single-stack on C4",
            C4,
            svc().policy(PREFER),
            ok(PREFER, V4),
        ),
        c(
            "PreferDualStack stays single-stack on C6",
            C6,
            svc().policy(PREFER),
            ok(PREFER, V6),
        ),
        c(
            "PreferDualStack gets both families, primary first, on D46",
            D46,
            svc().policy(PREFER),
            ok(PREFER, V46),
        ),
        c(
            "PreferDualStack gets both families, primary first, on D64",
            D64,
            svc().policy(PREFER),
            ok(PREFER, V64),
        ),
        c(
            "PreferDualStack naming the secondary family gets it first on D46",
            D46,
            svc().policy(PREFER).fams(V6),
            ok(PREFER, V64),
        ),
        c(
            "RequireDualStack is refused on C4",
            C4,
            svc().policy(REQUIRE),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#,
            ]),
        ),
        c(
            "RequireDualStack is refused on C6",
            C6,
            svc().policy(REQUIRE),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#,
            ]),
        ),
        c(
            "RequireDualStack gets both families on D46",
            D46,
            svc().policy(REQUIRE),
            ok(REQUIRE, V46),
        ),
        c(
            "RequireDualStack gets both families on D64",
            D64,
            svc().policy(REQUIRE),
            ok(REQUIRE, V64),
        ),
        c(
            "RequireDualStack with an unconfigured family reports both problems",
            C4,
            svc().policy(REQUIRE).fams(V6),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#,
                r#"spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster"#,
            ]),
        ),
        // --- §4.3 step 10: families must be configured ----------------------------------------
        c(
            "an IPv6 family is refused on C4",
            C4,
            svc().fams(V6),
            fail(&[r#"spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster"#]),
        ),
        c(
            "an IPv4 family is refused on C6",
            C6,
            svc().fams(V4),
            fail(&[r#"spec.ipFamilies[0]: Invalid value: "IPv4": not configured on this cluster"#]),
        ),
        c(
            "a second family that is not configured is refused at its index",
            C4,
            svc().policy(PREFER).fams(V46),
            fail(&[r#"spec.ipFamilies[1]: Invalid value: "IPv6": not configured on this cluster"#]),
        ),
        c(
            "the secondary family alone is SingleStack of it on D46",
            D46,
            svc().fams(V6),
            ok(SINGLE, V6),
        ),
        c(
            "the secondary family alone is SingleStack of it on D64",
            D64,
            svc().fams(V4),
            ok(SINGLE, V4),
        ),
        // --- §4.3 step 6: families inferred from given IPs ------------------------------------
        c(
            "an IPv6 clusterIP is refused on C4",
            C4,
            svc().ip("fd00::1"),
            fail(&[
                r#"spec.clusterIPs[0]: Invalid value: []string{"fd00::1"}: IPv6 is not configured on this cluster"#,
            ]),
        ),
        c(
            "an IPv4 clusterIP is refused on C6",
            C6,
            svc().ip("10.0.0.5"),
            fail(&[
                r#"spec.clusterIPs[0]: Invalid value: []string{"10.0.0.5"}: IPv4 is not configured on this cluster"#,
            ]),
        ),
        c(
            "a second clusterIP of an unconfigured family is refused at its index",
            C4,
            svc()
                .policy(PREFER)
                .ip("10.0.0.5")
                .ips(&["10.0.0.5", "fd00:10::5"]),
            fail(&[
                r#"spec.clusterIPs[1]: Invalid value: []string{"10.0.0.5", "fd00:10::5"}: IPv6 is not configured on this cluster"#,
            ]),
        ),
        c(
            "an IPv6 clusterIP on D46 makes an IPv6 SingleStack service",
            D46,
            svc().ip("fd00:10::5"),
            ok_ips(SINGLE, V6, &["fd00:10::5"]),
        ),
        c(
            "an IPv4 clusterIP with PreferDualStack on D64 makes IPv4 the service's primary",
            D64,
            svc().policy(PREFER).ip("10.0.0.5"),
            ok_ips(PREFER, V46, &["10.0.0.5", ""]),
        ),
        c(
            "two clusterIPs with RequireDualStack give the families in their order",
            D46,
            svc()
                .policy(REQUIRE)
                .ip("fd00:10::5")
                .ips(&["fd00:10::5", "10.0.0.5"]),
            ok_ips(REQUIRE, V64, &["fd00:10::5", "10.0.0.5"]),
        ),
        c(
            "RequireDualStack with only the primary IP given allocates the secondary",
            D64,
            svc().policy(REQUIRE).ip("fd00:10::5"),
            ok_ips(REQUIRE, V64, &["fd00:10::5", ""]),
        ),
        // --- §4.3 step 5: SingleStack with two of something ------------------------------------
        c(
            "SingleStack with two clusterIPs is refused",
            D46,
            svc()
                .policy(SINGLE)
                .ip("10.0.0.5")
                .ips(&["10.0.0.5", "fd00:10::5"]),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"#,
            ]),
        ),
        c(
            "two families without a policy are refused because the default is SingleStack",
            D46,
            svc().fams(V46),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"#,
            ]),
        ),
        c(
            "SingleStack with two clusterIPs and two families reports both",
            D64,
            svc()
                .policy(SINGLE)
                .ip("fd00:10::5")
                .ips(&["fd00:10::5", "10.0.0.5"])
                .fams(V64),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"#,
                r#"spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"#,
            ]),
        ),
        // --- §4.4 through the pre-validation of initIPFamilyFields ----------------------------
        c(
            "clusterIPs without clusterIP are refused",
            D46,
            svc().ips(&["10.0.0.5"]),
            fail(&[
                r#"spec.clusterIPs: Invalid value: []string{"10.0.0.5"}: must be empty when `clusterIP` is not specified"#,
            ]),
        ),
        c(
            "clusterIPs[0] must match clusterIP",
            C4,
            svc().ip("10.0.0.5").ips(&["10.0.0.6"]),
            fail(&[
                r#"spec.clusterIPs: Invalid value: []string{"10.0.0.6"}: first value must match `clusterIP`"#,
            ]),
        ),
        c(
            "an unknown family is not supported",
            D46,
            svc().fams(&["IPv5"]),
            fail(&[
                r#"spec.ipFamilies[0]: Unsupported value: "IPv5": supported values: "IPv4", "IPv6""#,
            ]),
        ),
        c(
            "a family listed twice is a duplicate",
            D46,
            svc().policy(PREFER).fams(&["IPv4", "IPv4"]),
            fail(&[r#"spec.ipFamilies[1]: Duplicate value: "IPv4""#]),
        ),
        c(
            "an unknown policy is not supported",
            D46,
            svc().policy("DualStack"),
            fail(&[
                r#"spec.ipFamilyPolicy: Unsupported value: "DualStack": supported values: "PreferDualStack", "RequireDualStack", "SingleStack""#,
            ]),
        ),
        c(
            "None must be the only clusterIP",
            D46,
            svc().policy(PREFER).ip("None").ips(&["None", "fd00:10::5"]),
            fail(&[
                r#"spec.clusterIPs: Invalid value: []string{"None", "fd00:10::5"}: 'None' must be the first and only value"#,
            ]),
        ),
        c(
            "a clusterIP that is not an IP is refused with upstream's IP message",
            C4,
            svc().ip("10.0.0.300"),
            fail(&[
                r#"spec.clusterIPs[0]: Invalid value: "10.0.0.300": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"#,
            ]),
        ),
        c(
            "three clusterIPs are too many",
            D46,
            svc()
                .policy(PREFER)
                .ip("10.0.0.5")
                .ips(&["10.0.0.5", "fd00:10::5", "10.0.0.6"]),
            fail(&[
                r#"spec.clusterIPs: Invalid value: []string{"10.0.0.5", "fd00:10::5", "10.0.0.6"}: may only hold up to 2 values"#,
            ]),
        ),
        c(
            "two IPv4 clusterIPs are refused",
            D46,
            svc()
                .policy(PREFER)
                .ip("10.0.0.5")
                .ips(&["10.0.0.5", "10.0.0.6"]),
            fail(&[
                r#"spec.clusterIPs: Invalid value: []string{"10.0.0.5", "10.0.0.6"}: may specify no more than one IP for each IP family"#,
            ]),
        ),
        c(
            "a clusterIP of the other family than ipFamilies[0] is refused",
            D46,
            svc().ip("fd00:10::5").fams(V4),
            fail(&[
                r#"spec.clusterIPs[0]: Invalid value: "fd00:10::5": expected an IPv4 value as indicated by `ipFamilies[0]`"#,
            ]),
        ),
        c(
            "swapped families are refused at both indexes",
            D46,
            svc()
                .policy(REQUIRE)
                .ip("10.0.0.5")
                .ips(&["10.0.0.5", "fd00:10::5"])
                .fams(V64),
            fail(&[
                r#"spec.clusterIPs[0]: Invalid value: "10.0.0.5": expected an IPv6 value as indicated by `ipFamilies[0]`"#,
                r#"spec.clusterIPs[1]: Invalid value: "fd00:10::5": expected an IPv4 value as indicated by `ipFamilies[1]`"#,
            ]),
        ),
        // --- §3.3: specific ClusterIPs --------------------------------------------------------
        c(
            "a chosen IPv4 clusterIP is allocated on C4",
            C4,
            svc().ip("10.0.0.5"),
            ok_ips(SINGLE, V4, &["10.0.0.5"]),
        ),
        c(
            "a chosen IPv6 clusterIP is allocated on C6",
            C6,
            svc().ip("fd00:10::5"),
            ok_ips(SINGLE, V6, &["fd00:10::5"]),
        ),
        Create {
            name: "a clusterIP held by another service is refused",
            cluster: C4,
            taken: &["10.0.0.5"],
            svc: svc().ip("10.0.0.5"),
            want: fail(&[
                r#"spec.clusterIPs: Invalid value: []string{"10.0.0.5"}: failed to allocate IP 10.0.0.5: provided IP is already allocated"#,
            ]),
        },
        Create {
            name: "a secondary IP held by another service is refused and the primary is given back",
            cluster: D46,
            taken: &["fd00:10::5"],
            svc: svc()
                .policy(REQUIRE)
                .ip("10.0.0.5")
                .ips(&["10.0.0.5", "fd00:10::5"]),
            want: fail(&[
                r#"spec.clusterIPs: Invalid value: []string{"10.0.0.5", "fd00:10::5"}: failed to allocate IP fd00:10::5: provided IP is already allocated"#,
            ]),
        },
        c(
            "a clusterIP outside the range is refused with the range",
            C4,
            svc().ip("10.1.0.1"),
            fail(&[
                r#"spec.clusterIPs: Invalid value: []string{"10.1.0.1"}: failed to allocate IP 10.1.0.1: provided IP 10.1.0.1 is not in the valid range. The range of valid IPs is 10.0.0.0/16"#,
            ]),
        ),
        c(
            "the network address is not in the valid range",
            D64,
            svc().ip("fd00:10::"),
            fail(&[
                r#"spec.clusterIPs: Invalid value: []string{"fd00:10::"}: failed to allocate IP fd00:10::: provided IP fd00:10:: is not in the valid range. The range of valid IPs is fd00:10::/108"#,
            ]),
        ),
        c(
            "an out-of-range secondary gives back the primary",
            D46,
            svc()
                .policy(PREFER)
                .ip("10.0.0.5")
                .ips(&["10.0.0.5", "fd00:11::1"]),
            fail(&[
                r#"spec.clusterIPs: Invalid value: []string{"10.0.0.5", "fd00:11::1"}: failed to allocate IP fd00:11::1: provided IP fd00:11::1 is not in the valid range. The range of valid IPs is fd00:10::/108"#,
            ]),
        ),
        // --- §4.5: ExternalName and headless rules ---------------------------------------------
        c(
            "an ExternalName service has no ClusterIP fields",
            D46,
            svc().external_name("db.example.com"),
            Want::Bare,
        ),
        c(
            "an ExternalName service may not have a clusterIP, which is normalized into clusterIPs",
            D46,
            svc().external_name("db.example.com").ip("10.0.0.5"),
            fail(&["spec.clusterIPs: Forbidden: may not be set for ExternalName services"]),
        ),
        c(
            "an ExternalName service may not have ipFamilies or a policy",
            D46,
            svc()
                .external_name("db.example.com")
                .fams(V4)
                .policy(SINGLE),
            fail(&[
                "spec.ipFamilies: Forbidden: may not be set for ExternalName services",
                "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services",
            ]),
        ),
        c(
            "a headless LoadBalancer is refused",
            D46,
            svc().ty(TYPE_LOAD_BALANCER).headless(),
            fail(&[
                r#"spec.clusterIPs[0]: Invalid value: "None": may not be set to 'None' for LoadBalancer services"#,
            ]),
        ),
        c(
            "a headless NodePort service is refused",
            D64,
            svc().ty(TYPE_NODE_PORT).headless(),
            fail(&[
                r#"spec.clusterIPs[0]: Invalid value: "None": may not be set to 'None' for NodePort services"#,
            ]),
        ),
        c(
            "a LoadBalancer gets ClusterIPs like any other type",
            D64,
            svc().ty(TYPE_LOAD_BALANCER).policy(PREFER),
            ok(PREFER, V64),
        ),
    ]
}

#[test]
fn create_rules_hold_on_all_four_clusters() {
    let rows = create_rows();
    for row in &rows {
        let mut alloc = Alloc::new(row.cluster);
        for ip in row.taken {
            alloc.take(ip);
        }
        let before = alloc.usage();
        match create(&mut alloc, row.svc.clone()) {
            Ok((svc, a)) => {
                check_service(row.name, &alloc, &svc, row.want);
                let ips: Vec<IpAddr> = cluster_ips(&svc)
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect();
                assert_eq!(
                    a.ips_allocated, ips,
                    "{}: the plan lists what was taken",
                    row.name
                );
            }
            Err(e) => {
                check_failure(row.name, &e, row.want);
                assert_eq!(
                    alloc.usage(),
                    before,
                    "{}: nothing stays allocated",
                    row.name
                );
            }
        }
    }
    assert!(rows.len() >= 60, "{} create rows", rows.len());
}

// ---------------------------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------------------------

/// What an update must take or give back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Nothing taken, nothing to give back.
    Nothing,
    /// Only the new secondary ClusterIP taken; the primary kept.
    Secondary,
    /// The old secondary ClusterIP given back once the write commits.
    ReleaseSecondary,
    /// Every old ClusterIP given back once the write commits.
    ReleaseAll,
    /// Every new ClusterIP taken.
    All,
}

struct Update {
    name: &'static str,
    /// Where the old object was created (through the create pipeline); `None` for a legacy
    /// object stored as written by an old server.
    created_on: Option<Cluster>,
    old: S,
    /// The cluster at update time (it may have been restarted with other ranges).
    on: Cluster,
    change: fn(S) -> S,
    want: Want,
    plan: Plan,
}

fn u(
    name: &'static str,
    cluster: Cluster,
    old: S,
    change: fn(S) -> S,
    want: Want,
    plan: Plan,
) -> Update {
    Update {
        name,
        created_on: Some(cluster),
        old,
        on: cluster,
        change,
        want,
        plan,
    }
}

/// An update after the cluster was restarted with other ranges.
fn moved(
    name: &'static str,
    from: Cluster,
    to: Cluster,
    old: S,
    change: fn(S) -> S,
    want: Want,
    plan: Plan,
) -> Update {
    Update {
        name,
        created_on: Some(from),
        old,
        on: to,
        change,
        want,
        plan,
    }
}

/// An update of a legacy object written before dual-stack.
fn legacy(
    name: &'static str,
    on: Cluster,
    old: S,
    change: fn(S) -> S,
    want: Want,
    plan: Plan,
) -> Update {
    Update {
        name,
        created_on: None,
        old,
        on,
        change,
        want,
        plan,
    }
}

fn dual46() -> S {
    svc()
        .policy(REQUIRE)
        .ip("10.0.0.5")
        .ips(&["10.0.0.5", "fd00:10::5"])
}

fn dual64() -> S {
    svc()
        .policy(PREFER)
        .ip("fd00:10::5")
        .ips(&["fd00:10::5", "10.0.0.5"])
}

const NO_SECONDARY: &[&str] = &[
    r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#,
    r#"spec.ipFamilies[1]: Invalid value: "IPv6": not configured on this cluster"#,
];

fn update_rows() -> Vec<Update> {
    use Plan::*;
    vec![
        // --- upgrade (§4.3 case C) --------------------------------------------------------------
        u(
            "PreferDualStack on a SingleStack service of D46 allocates only the secondary",
            D46,
            svc(),
            |s| s.policy(PREFER),
            ok(PREFER, V46),
            Secondary,
        ),
        u(
            "RequireDualStack on a SingleStack service of D64 allocates only the secondary",
            D64,
            svc(),
            |s| s.policy(REQUIRE),
            ok(REQUIRE, V64),
            Secondary,
        ),
        u(
            "an upgrade may choose the secondary IP",
            D46,
            svc().ip("10.0.0.5"),
            |s| s.policy(REQUIRE).ips(&["10.0.0.5", "fd00:10::50"]),
            ok_ips(REQUIRE, V46, &["10.0.0.5", "fd00:10::50"]),
            Secondary,
        ),
        u(
            "an upgrade may list the second family instead of a policy-driven one",
            D64,
            svc().ip("fd00:10::5"),
            |s| s.policy(PREFER).fams(V64),
            ok_ips(PREFER, V64, &["fd00:10::5", ""]),
            Secondary,
        ),
        u(
            "PreferDualStack on C4 keeps one family and allocates nothing",
            C4,
            svc(),
            |s| s.policy(PREFER),
            ok(PREFER, V4),
            Nothing,
        ),
        u(
            "RequireDualStack on C6 is refused",
            C6,
            svc(),
            |s| s.policy(REQUIRE),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#,
            ]),
            Nothing,
        ),
        u(
            "a second family with SingleStack still set is refused",
            D46,
            svc(),
            |s| s.fams(V46),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"#,
            ]),
            Nothing,
        ),
        // --- downgrade (§4.3 step 4 and case D) -----------------------------------------------
        u(
            "SingleStack alone downgrades a RequireDualStack service of D46",
            D46,
            dual46(),
            |s| s.policy(SINGLE),
            ok_ips(SINGLE, V4, &["10.0.0.5"]),
            ReleaseSecondary,
        ),
        u(
            "SingleStack alone downgrades a PreferDualStack service of D64",
            D64,
            dual64(),
            |s| s.policy(SINGLE),
            ok_ips(SINGLE, V6, &["fd00:10::5"]),
            ReleaseSecondary,
        ),
        u(
            "SingleStack with both lists shortened by the client downgrades too",
            D46,
            dual46(),
            |s| s.policy(SINGLE).ips(&["10.0.0.5"]).fams(V4),
            ok_ips(SINGLE, V4, &["10.0.0.5"]),
            ReleaseSecondary,
        ),
        u(
            "shortening both lists without SingleStack is refused twice",
            D46,
            dual46(),
            |s| s.ips(&["10.0.0.5"]).fams(V4),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": must be 'SingleStack' to release the secondary cluster IP"#,
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": must be 'SingleStack' to release the secondary IP family"#,
            ]),
            Nothing,
        ),
        u(
            "shortening clusterIPs without SingleStack is refused",
            D46,
            dual46(),
            |s| s.ips(&["10.0.0.5"]),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": must be 'SingleStack' to release the secondary cluster IP"#,
            ]),
            Nothing,
        ),
        u(
            "shortening ipFamilies of a PreferDualStack service is refused",
            D64,
            dual64(),
            |s| s.fams(V6),
            fail(&[
                r#"spec.ipFamilyPolicy: Invalid value: "PreferDualStack": must be 'SingleStack' to release the secondary IP family"#,
            ]),
            Nothing,
        ),
        // --- the primary is immutable (§4.5) ---------------------------------------------------
        u(
            "changing the primary ClusterIP is refused",
            C4,
            svc().ip("10.0.0.5"),
            |s| s.ip("10.0.0.99").ips(&["10.0.0.99"]),
            fail(&[
                r#"spec.clusterIPs[0]: Invalid value: []string{"10.0.0.99"}: may not change once set"#,
            ]),
            Nothing,
        ),
        u(
            "an old client changing only clusterIP is refused the same way",
            C6,
            svc().ip("fd00:10::5"),
            |s| s.ip("fd00:10::99"),
            fail(&[
                r#"spec.clusterIPs[0]: Invalid value: []string{"fd00:10::99"}: may not change once set"#,
            ]),
            Nothing,
        ),
        u(
            "changing the primary while upgrading is refused and the new secondary is given back",
            D46,
            svc().ip("10.0.0.5"),
            |s| {
                s.policy(REQUIRE)
                    .ip("10.0.0.99")
                    .ips(&["10.0.0.99", "fd00:10::50"])
            },
            fail(&[
                r#"spec.clusterIPs[0]: Invalid value: []string{"10.0.0.99", "fd00:10::50"}: may not change once set"#,
            ]),
            Nothing,
        ),
        u(
            "changing the primary family is refused at clusterIPs[0]",
            D46,
            svc().ip("10.0.0.5"),
            |s| s.fams(V6),
            fail(&[
                r#"spec.clusterIPs[0]: Invalid value: "10.0.0.5": expected an IPv6 value as indicated by `ipFamilies[0]`"#,
            ]),
            Nothing,
        ),
        // --- patchAllocatedValues (§4.2) -------------------------------------------------------
        u(
            "an old client's PUT without ClusterIP fields keeps a dual-stack service as it is",
            D46,
            dual46(),
            S::old_client_put,
            ok_ips(REQUIRE, V46, &["10.0.0.5", "fd00:10::5"]),
            Nothing,
        ),
        u(
            "an old client's PUT without ClusterIP fields keeps a single-stack service as it is",
            C6,
            svc().ip("fd00:10::5"),
            S::old_client_put,
            ok_ips(SINGLE, V6, &["fd00:10::5"]),
            Nothing,
        ),
        // --- the PreferDualStack guard and cluster changes (§4.3 step 1, §4.7) ------------------
        u(
            "an unchanged dual PreferDualStack service stays as it is",
            D64,
            dual64(),
            S::label,
            ok_ips(PREFER, V64, &["fd00:10::5", "10.0.0.5"]),
            Nothing,
        ),
        moved(
            "an unchanged PreferDualStack service is not upgraded after C4 became D46",
            C4,
            D46,
            svc().policy(PREFER).ip("10.0.0.5"),
            S::label,
            ok_ips(PREFER, V4, &["10.0.0.5"]),
            Nothing,
        ),
        moved(
            "an unchanged PreferDualStack service is not downgraded after D64 became C6",
            D64,
            C6,
            dual64(),
            S::label,
            ok_ips(PREFER, V64, &["fd00:10::5", "10.0.0.5"]),
            Nothing,
        ),
        moved(
            "a PUT without ipFamilyPolicy inherits PreferDualStack and upgrades after C4 became D46",
            C4,
            D46,
            svc().policy(PREFER).ip("10.0.0.5"),
            S::no_policy,
            ok_ips(PREFER, V46, &["10.0.0.5", ""]),
            Secondary,
        ),
        moved(
            "RequireDualStack upgrades a service after C6 became D64",
            C6,
            D64,
            svc(),
            |s| s.policy(REQUIRE),
            ok(REQUIRE, V64),
            Secondary,
        ),
        moved(
            "an unchanged RequireDualStack service is refused after D46 became C4",
            D46,
            C4,
            dual46(),
            S::label,
            fail(NO_SECONDARY),
            Nothing,
        ),
        moved(
            "SingleStack downgrades a RequireDualStack service after D46 became C4",
            D46,
            C4,
            dual46(),
            |s| s.policy(SINGLE),
            ok_ips(SINGLE, V4, &["10.0.0.5"]),
            ReleaseSecondary,
        ),
        // --- ExternalName transitions (§4.5 dropTypeDependentFields, cases A and B) -----------
        u(
            "a change to ExternalName wipes the unchanged ClusterIP fields and gives back both IPs",
            D46,
            dual46(),
            |s| s.external_name("db.example.com"),
            Want::Bare,
            ReleaseAll,
        ),
        u(
            "a change to ExternalName keeps a changed policy, which is forbidden",
            D46,
            svc(),
            |s| s.external_name("db.example.com").policy(PREFER),
            fail(&["spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services"]),
            Nothing,
        ),
        u(
            "a change to ExternalName keeps changed ipFamilies, which are forbidden",
            D64,
            svc(),
            |s| s.external_name("db.example.com").fams(V4),
            fail(&["spec.ipFamilies: Forbidden: may not be set for ExternalName services"]),
            Nothing,
        ),
        u(
            "a change to ExternalName keeps changed clusterIPs, which are forbidden",
            C4,
            svc().ip("10.0.0.5"),
            |s| {
                s.external_name("db.example.com")
                    .ip("10.0.0.99")
                    .ips(&["10.0.0.99"])
            },
            fail(&["spec.clusterIPs: Forbidden: may not be set for ExternalName services"]),
            Nothing,
        ),
        u(
            "a change from ExternalName allocates ClusterIPs as a create does",
            D64,
            svc().external_name("db.example.com"),
            |s| {
                let mut s = s.ty(TYPE_CLUSTER_IP).policy(REQUIRE);
                s.spec().external_name = None;
                s
            },
            ok(REQUIRE, V64),
            All,
        ),
        u(
            "an old client's change from ExternalName with only clusterIP gets that IP",
            D46,
            svc().external_name("db.example.com"),
            |s| {
                let mut s = s.ty(TYPE_CLUSTER_IP).ip("fd00:10::5");
                s.spec().external_name = None;
                s
            },
            ok_ips(SINGLE, V6, &["fd00:10::5"]),
            All,
        ),
        u(
            "a change from ExternalName to headless selectorless is dual-stack even on C4",
            C4,
            svc().selectorless().external_name("db.example.com"),
            |s| {
                let mut s = s.ty(TYPE_CLUSTER_IP).headless();
                s.spec().external_name = None;
                s
            },
            headless(REQUIRE, V46),
            Nothing,
        ),
        // --- headless services may change families freely (§4.5) -------------------------------
        u(
            "a headless service may change its family",
            D46,
            svc().headless(),
            |s| s.fams(V6),
            headless(SINGLE, V6),
            Nothing,
        ),
        u(
            "a headless selectorless service may swap its families on C4",
            C4,
            svc().headless().selectorless(),
            |s| s.fams(V64),
            headless(REQUIRE, V64),
            Nothing,
        ),
        u(
            "a headless service may become dual-stack with PreferDualStack",
            D64,
            svc().headless(),
            |s| s.policy(PREFER),
            headless(PREFER, V64),
            Nothing,
        ),
        // --- legacy objects (§4.6) -------------------------------------------------------------
        legacy(
            "a legacy object with only clusterIP reads as SingleStack and updates cleanly",
            C4,
            svc().ip("10.0.0.5"),
            S::label,
            ok_ips(SINGLE, V4, &["10.0.0.5"]),
            Nothing,
        ),
        legacy(
            "a legacy object of the secondary family can be upgraded",
            D64,
            svc().ip("10.0.0.5"),
            |s| s.policy(REQUIRE),
            ok_ips(REQUIRE, V46, &["10.0.0.5", ""]),
            Secondary,
        ),
        legacy(
            "a legacy headless selectorless object reads as RequireDualStack",
            C6,
            svc().headless().selectorless(),
            S::label,
            headless(REQUIRE, V64),
            Nothing,
        ),
        legacy(
            "a legacy headless object with a selector reads as SingleStack",
            D46,
            svc().headless(),
            S::label,
            headless(SINGLE, V4),
            Nothing,
        ),
    ]
}

/// Checks the plan of a successful update and that releases wait for the commit.
fn check_plan(
    name: &str,
    alloc: &mut Alloc,
    old: &Service,
    new: &Service,
    a: &Allocation,
    plan: Plan,
) {
    let parse =
        |ips: &[String]| -> Vec<IpAddr> { ips.iter().filter_map(|s| s.parse().ok()).collect() };
    let (old_ips, new_ips) = (parse(cluster_ips(old)), parse(cluster_ips(new)));
    let (allocated, released): (Vec<IpAddr>, Vec<IpAddr>) = match plan {
        Plan::Nothing => (vec![], vec![]),
        Plan::Secondary => {
            assert_eq!(new_ips[0], old_ips[0], "{name}: the primary is kept");
            (vec![new_ips[1]], vec![])
        }
        Plan::ReleaseSecondary => (vec![], vec![old_ips[1]]),
        Plan::ReleaseAll => (vec![], old_ips.clone()),
        Plan::All => (new_ips.clone(), vec![]),
    };
    assert_eq!(a.ips_allocated, allocated, "{name}: allocated");
    assert_eq!(a.ips_released, released, "{name}: released");
    for ip in &released {
        let configured = alloc.ips.get(IpFamily::of_addr(ip)).is_some();
        assert_eq!(
            alloc.has(&ip.to_string()),
            configured,
            "{name}: {ip} is held until the commit"
        );
    }
    let report = alloc.ips.release_all(&a.ips_released);
    for ip in &released {
        assert!(
            !alloc.has(&ip.to_string()),
            "{name}: {ip} is free after the commit"
        );
        if alloc.ips.get(IpFamily::of_addr(ip)).is_none() {
            assert!(
                report.unconfigured.contains(ip),
                "{name}: {ip} of a removed family is skipped"
            );
        }
    }
}

#[test]
fn update_rules_hold_on_all_four_clusters() {
    let rows = update_rows();
    for row in &rows {
        let stored = match row.created_on {
            Some(cluster) => {
                let mut at_create = Alloc::new(cluster);
                create(&mut at_create, row.old.clone())
                    .unwrap_or_else(|e| {
                        panic!("{}: creating the old object: {:?}", row.name, texts(&e))
                    })
                    .0
            }
            None => full(row.old.clone()),
        };
        let mut alloc = Alloc::new(row.on);
        alloc.restore(&stored);
        let before = alloc.usage();
        match update(&mut alloc, &stored, row.change) {
            Ok((old, new, a)) => {
                check_service(row.name, &alloc, &new, row.want);
                check_plan(row.name, &mut alloc, &old, &new, &a, row.plan);
            }
            Err(e) => {
                check_failure(row.name, &e, row.want);
                assert_eq!(
                    alloc.usage(),
                    before,
                    "{}: nothing stays allocated",
                    row.name
                );
            }
        }
    }
    assert!(rows.len() >= 40, "{} update rows", rows.len());
}

// ---------------------------------------------------------------------------------------------
// §4.4 and §4.5 validation on their own (inputs the request pipeline never lets through)
// ---------------------------------------------------------------------------------------------

#[test]
fn cluster_ips_related_fields_are_checked_in_upstream_order() {
    let rows: Vec<(&str, S, &[&str])> = vec![
        (
            "a well-formed dual-stack service passes",
            dual46().fams(V46),
            &[],
        ),
        (
            "clusterIP without clusterIPs is required",
            svc().ip("10.0.0.5"),
            &["spec.clusterIPs: Required value"],
        ),
        (
            "clusterIPs must start with clusterIP",
            svc().ip("10.0.0.5").ips(&["fd00:10::5", "10.0.0.5"]),
            &[
                r#"spec.clusterIPs: Invalid value: []string{"fd00:10::5", "10.0.0.5"}: first value must match `clusterIP`"#,
            ],
        ),
        (
            "clusterIPs need clusterIP",
            svc().ips(&["10.0.0.5"]),
            &[
                r#"spec.clusterIPs: Invalid value: []string{"10.0.0.5"}: must be empty when `clusterIP` is not specified"#,
            ],
        ),
        (
            "families must be IPv4 or IPv6, once each",
            svc().fams(&["IPv6", "ipv4", "IPv6"]),
            &[
                r#"spec.ipFamilies[1]: Unsupported value: "ipv4": supported values: "IPv4", "IPv6""#,
                r#"spec.ipFamilies[2]: Duplicate value: "IPv6""#,
            ],
        ),
        (
            "the policy must be a known one",
            svc().policy("preferDualStack"),
            &[
                r#"spec.ipFamilyPolicy: Unsupported value: "preferDualStack": supported values: "PreferDualStack", "RequireDualStack", "SingleStack""#,
            ],
        ),
        (
            "None is only valid alone",
            svc().ip("None").ips(&["None", "10.0.0.5"]),
            &[
                r#"spec.clusterIPs: Invalid value: []string{"None", "10.0.0.5"}: 'None' must be the first and only value"#,
            ],
        ),
        (
            "None in second place is not an IP",
            svc().ip("10.0.0.5").ips(&["10.0.0.5", "None"]),
            &[
                r#"spec.clusterIPs[1]: Invalid value: "None": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"#,
            ],
        ),
        (
            "an invalid IP stops the checks before the family checks",
            svc().ip("10.0.0.5").ips(&["10.0.0.5", "fd00::zz"]).fams(V6),
            &[
                r#"spec.clusterIPs[1]: Invalid value: "fd00::zz": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"#,
            ],
        ),
        (
            "more than two values are refused, even of both families",
            svc()
                .ip("10.0.0.5")
                .ips(&["10.0.0.5", "fd00:10::5", "fd00:10::6"]),
            &[
                r#"spec.clusterIPs: Invalid value: []string{"10.0.0.5", "fd00:10::5", "fd00:10::6"}: may only hold up to 2 values"#,
            ],
        ),
        (
            "two IPv6 values are refused",
            svc().ip("fd00:10::5").ips(&["fd00:10::5", "fd00:10::6"]),
            &[
                r#"spec.clusterIPs: Invalid value: []string{"fd00:10::5", "fd00:10::6"}: may specify no more than one IP for each IP family"#,
            ],
        ),
        (
            "each IP must match its family",
            svc()
                .ip("fd00:10::5")
                .ips(&["fd00:10::5", "10.0.0.5"])
                .fams(V46),
            &[
                r#"spec.clusterIPs[0]: Invalid value: "fd00:10::5": expected an IPv4 value as indicated by `ipFamilies[0]`"#,
                r#"spec.clusterIPs[1]: Invalid value: "10.0.0.5": expected an IPv6 value as indicated by `ipFamilies[1]`"#,
            ],
        ),
        (
            "only the listed families are matched",
            svc()
                .ip("fd00:10::5")
                .ips(&["fd00:10::5", "10.0.0.5"])
                .fams(V6),
            &[],
        ),
        (
            "a headless service may list any family",
            svc().ip("None").ips(&["None"]).fams(V64),
            &[],
        ),
        (
            "ExternalName is left to ValidateService",
            svc().external_name("db.example.com").fams(&["IPv5"]),
            &[],
        ),
    ];
    for (name, s, want) in rows {
        let got: Vec<String> = validate_cluster_ips_related_fields(&s.0)
            .iter()
            .map(FieldError::to_string)
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

/// A stored-looking object: defaults applied.
fn full(s: S) -> Service {
    let mut svc = s.0;
    set_defaults(&mut svc);
    svc
}

#[test]
fn upgrade_and_downgrade_validation_reports_ip_families_at_index_zero() {
    let dual = || dual46().fams(V46);
    let rows: Vec<(&str, S, S, &[&str])> = vec![
        (
            "changing the secondary family is reported at ipFamilies[0]",
            dual(),
            dual().fams(&["IPv4", "IPv5"]),
            &[
                r#"spec.ipFamilies[0]: Invalid value: []core.IPFamily{"IPv4", "IPv5"}: may not change once set"#,
                r#"spec.ipFamilies[1]: Unsupported value: "IPv5": supported values: "IPv4", "IPv6""#,
            ],
        ),
        (
            "changing the primary family while downgrading shows the clusterIPs as the value",
            dual(),
            dual().policy(SINGLE).ips(&["10.0.0.5"]).fams(V6),
            &[
                r#"spec.ipFamilies[0]: Invalid value: []string{"10.0.0.5"}: may not change once set"#,
                r#"spec.clusterIPs[0]: Invalid value: "10.0.0.5": expected an IPv6 value as indicated by `ipFamilies[0]`"#,
            ],
        ),
        (
            "changing the primary family while upgrading is reported at ipFamilies[0]",
            svc()
                .ip("10.0.0.5")
                .ips(&["10.0.0.5"])
                .fams(V4)
                .policy(SINGLE),
            svc()
                .ip("fd00:10::5")
                .ips(&["fd00:10::5", "10.0.0.5"])
                .fams(V64)
                .policy(REQUIRE),
            &[
                r#"spec.clusterIPs[0]: Invalid value: []string{"fd00:10::5", "10.0.0.5"}: may not change once set"#,
                r#"spec.ipFamilies[0]: Invalid value: []string{"fd00:10::5", "10.0.0.5"}: may not change once set"#,
            ],
        ),
        (
            "unsetting every ClusterIP is refused for both lists",
            dual(),
            dual().policy(SINGLE).ip("").no_ips().fams(V4),
            &[
                "spec.clusterIPs[0]: Invalid value: []string(nil): primary clusterIP can not be unset",
                r#"spec.ipFamilies[0]: Invalid value: []core.IPFamily{"IPv4"}: primary ipFamily can not be unset"#,
            ],
        ),
        (
            "releasing the secondary needs SingleStack",
            dual(),
            dual().ips(&["10.0.0.5"]).fams(V4),
            &[
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": must be set to 'SingleStack' when releasing the secondary clusterIP"#,
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": must be set to 'SingleStack' when releasing the secondary ipFamily"#,
            ],
        ),
        (
            "a SingleStack downgrade passes",
            dual(),
            dual().policy(SINGLE).ips(&["10.0.0.5"]).fams(V4),
            &[],
        ),
        (
            "a headless service may change families",
            svc().headless().ips(&["None"]).fams(V4).policy(SINGLE),
            svc().headless().ips(&["None"]).fams(V6).policy(SINGLE),
            &[],
        ),
        (
            "a headless service may not get an address",
            svc().headless().ips(&["None"]).fams(V4).policy(SINGLE),
            svc()
                .ip("10.0.0.5")
                .ips(&["10.0.0.5"])
                .fams(V4)
                .policy(SINGLE),
            &[
                r#"spec.clusterIPs[0]: Invalid value: []string{"10.0.0.5"}: may not change once set"#,
            ],
        ),
        (
            "a change to ExternalName skips both checks",
            dual(),
            svc().external_name("db.example.com"),
            &[],
        ),
        (
            "healthCheckNodePort may not change while it is needed",
            svc()
                .ty(TYPE_LOAD_BALANCER)
                .local()
                .hc(30001)
                .ip("10.0.0.5")
                .ips(&["10.0.0.5"])
                .fams(V4)
                .policy(SINGLE),
            svc()
                .ty(TYPE_LOAD_BALANCER)
                .local()
                .hc(30002)
                .ip("10.0.0.5")
                .ips(&["10.0.0.5"])
                .fams(V4)
                .policy(SINGLE),
            &["spec.healthCheckNodePort: Forbidden: field is immutable"],
        ),
    ];
    for (name, old, new, want) in rows {
        let got: Vec<String> = validate_update(&full(new), &full(old))
            .iter()
            .map(FieldError::to_string)
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// §4.6 read-time defaulting
// ---------------------------------------------------------------------------------------------

#[test]
fn legacy_objects_are_defaulted_on_read() {
    type Fields = (
        &'static [&'static str],
        &'static [&'static str],
        Option<&'static str>,
    );
    let rows: Vec<(&str, S, IpFamily, Fields)> = vec![
        (
            "a legacy IPv4 service gets clusterIPs, its family and SingleStack",
            svc().ip("10.0.0.5"),
            IpFamily::IPv4,
            (&["10.0.0.5"], V4, Some(SINGLE)),
        ),
        (
            "the family comes from the IP, not from the cluster's primary",
            svc().ip("10.0.0.5"),
            IpFamily::IPv6,
            (&["10.0.0.5"], V4, Some(SINGLE)),
        ),
        (
            "a legacy headless selectorless service is RequireDualStack, primary first",
            svc().headless().selectorless(),
            IpFamily::IPv6,
            (&["None"], V64, Some(REQUIRE)),
        ),
        (
            "a legacy headless service with a selector is SingleStack of the primary",
            svc().headless(),
            IpFamily::IPv4,
            (&["None"], V4, Some(SINGLE)),
        ),
        (
            "two stored clusterIPs read as RequireDualStack",
            svc().ip("fd00:10::5").ips(&["fd00:10::5", "10.0.0.5"]),
            IpFamily::IPv4,
            (&["fd00:10::5", "10.0.0.5"], V64, Some(REQUIRE)),
        ),
        (
            "a service without any ClusterIP gets no families",
            svc(),
            IpFamily::IPv4,
            (&[], &[], None),
        ),
        (
            "an object that has families is left alone",
            svc().ip("10.0.0.5").ips(&["10.0.0.5"]).fams(V4),
            IpFamily::IPv6,
            (&["10.0.0.5"], V4, None),
        ),
        (
            "an ExternalName service gets nothing",
            svc().external_name("db.example.com"),
            IpFamily::IPv4,
            (&[], &[], None),
        ),
    ];
    for (name, s, primary, (want_ips, want_fams, want_policy)) in rows {
        let mut got = s.0;
        default_on_read(&mut got, primary);
        assert_eq!(cluster_ips(&got), want_ips, "{name}: clusterIPs");
        assert_eq!(families(&got), want_fams, "{name}: ipFamilies");
        assert_eq!(policy(&got), want_policy, "{name}: ipFamilyPolicy");
    }

    // An ExternalName object stored with the internalTrafficPolicy it used to be given.
    let mut en = svc().external_name("db.example.com").0;
    spec_mut(&mut en).internal_traffic_policy = Some("Cluster".into());
    default_on_read(&mut en, IpFamily::IPv4);
    assert_eq!(
        spec(&en).internal_traffic_policy,
        None,
        "ExternalName drops internalTrafficPolicy on read"
    );
}

// ---------------------------------------------------------------------------------------------
// §5.3 the seed's alpha `spec.ipFamily`
// ---------------------------------------------------------------------------------------------

#[test]
fn alpha_ip_family_means_one_family_single_stack() {
    let rows: Vec<(&str, Cluster, S, &str, Want)> = vec![
        (
            "ipFamily IPv6 on D46 makes an IPv6 SingleStack service",
            D46,
            svc(),
            "IPv6",
            ok(SINGLE, V6),
        ),
        (
            "ipFamily IPv4 on D64 makes an IPv4 SingleStack service",
            D64,
            svc(),
            "IPv4",
            ok(SINGLE, V4),
        ),
        (
            "ipFamily of the primary with a matching clusterIP",
            C6,
            svc().ip("fd00:10::5"),
            "IPv6",
            ok_ips(SINGLE, V6, &["fd00:10::5"]),
        ),
        (
            "ipFamily makes even a headless selectorless service single-stack",
            C4,
            svc().headless().selectorless(),
            "IPv4",
            headless(SINGLE, V4),
        ),
        (
            "ipFamily of an unconfigured family is refused with the allowed list",
            C4,
            svc(),
            "IPv6",
            fail(&[
                r#"spec.ipFamily: Invalid value: "IPv6": only the following families are allowed: IPv4"#,
            ]),
        ),
        (
            "an unknown ipFamily is not an allowed family",
            D64,
            svc(),
            "IPv5",
            fail(&[
                r#"spec.ipFamily: Invalid value: "IPv5": only the following families are allowed: IPv6, IPv4"#,
            ]),
        ),
        (
            "ipFamily IPv4 with an IPv6 clusterIP is refused",
            D46,
            svc().ip("fd00:10::5"),
            "IPv4",
            fail(&[r#"spec.ipFamily: Invalid value: "IPv4": does not match IPv6 cluster IP"#]),
        ),
        (
            "ipFamily IPv6 with an IPv4 clusterIP is refused",
            D46,
            svc().ip("10.0.0.5"),
            "IPv6",
            fail(&[r#"spec.ipFamily: Invalid value: "IPv6": does not match IPv4 cluster IP"#]),
        ),
        (
            "ipFamily is dropped for ExternalName services",
            D46,
            svc().external_name("db.example.com"),
            "IPv6",
            Want::Bare,
        ),
    ];
    for (name, cluster, s, alpha, want) in rows {
        let mut alloc = Alloc::new(cluster);
        let mut svc = s.0;
        let errs = apply_alpha_ip_family_on_create(
            &mut svc,
            &serde_json::json!(alpha),
            &alloc.ips.families(),
        );
        if !errs.is_empty() {
            check_failure(name, &ServiceError::Invalid(errs), want);
            continue;
        }
        match create(&mut alloc, S(svc)) {
            Ok((svc, _)) => check_service(name, &alloc, &svc, want),
            Err(e) => check_failure(name, &e, want),
        }
    }
}

#[test]
fn alpha_ip_family_is_immutable_on_update() {
    let old = {
        let mut alloc = Alloc::new(D46);
        create(&mut alloc, svc()).expect("create").0
    };
    let rows: Vec<(&str, S, &str, &[&str])> = vec![
        ("the same ipFamily passes", S(old.clone()), "IPv4", &[]),
        (
            "another ipFamily is immutable",
            S(old.clone()),
            "IPv6",
            &[r#"spec.ipFamily: Invalid value: "IPv6": field is immutable"#],
        ),
        (
            "a change to ExternalName may reset it",
            S(old.clone()).external_name("db.example.com"),
            "IPv6",
            &[],
        ),
    ];
    for (name, new, alpha, want) in rows {
        let got: Vec<String> =
            check_alpha_ip_family_on_update(&new.0, &old, &serde_json::json!(alpha))
                .iter()
                .map(FieldError::to_string)
                .collect();
        assert_eq!(got, want, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// NodePorts and the health-check NodePort
// ---------------------------------------------------------------------------------------------

#[test]
fn node_ports_are_shared_per_port_number_and_checked() {
    fn np(svc: &Service) -> Vec<i32> {
        ports(svc)
            .iter()
            .map(|p| p.node_port.unwrap_or(0))
            .collect()
    }
    fn in_range(n: i32) -> bool {
        (30000..=32767).contains(&n)
    }
    let dns = || vec![port("dns-tcp", 53, "TCP", 0), port("dns-udp", 53, "UDP", 0)];
    type Check = fn(&Service, u32);
    type Row = (
        &'static str,
        S,
        &'static [u16],
        Result<Check, &'static [&'static str]>,
    );
    let rows: Vec<Row> = vec![
        (
            "TCP and UDP of one port number share one NodePort",
            svc().ty(TYPE_NODE_PORT).ports(dns()),
            &[],
            Ok(|s, used| {
                let n = np(s);
                assert!(n[0] != 0 && n[0] == n[1] && used == 1, "{n:?} {used}");
            }),
        ),
        (
            "different port numbers get different NodePorts",
            svc().ty(TYPE_NODE_PORT).ports(vec![
                port("http", 80, "TCP", 0),
                port("https", 443, "TCP", 0),
            ]),
            &[],
            Ok(|s, used| {
                let n = np(s);
                assert!(n[0] != n[1] && used == 2, "{n:?} {used}");
            }),
        ),
        (
            "a NodePort asked for on one protocol is used for the other",
            svc().ty(TYPE_NODE_PORT).ports(vec![
                port("dns-tcp", 53, "TCP", 0),
                port("dns-udp", 53, "UDP", 30100),
            ]),
            &[],
            Ok(|s, used| assert!(np(s) == [30100, 30100] && used == 1, "{:?} {used}", np(s))),
        ),
        (
            "a LoadBalancer with Local traffic gets a health-check NodePort",
            svc().ty(TYPE_LOAD_BALANCER).local(),
            &[],
            Ok(|s, used| {
                let hc = spec(s).health_check_node_port.unwrap_or(0);
                assert!(
                    in_range(hc) && hc != np(s)[0] && used == 2,
                    "{hc} {:?} {used}",
                    np(s)
                );
            }),
        ),
        (
            "a LoadBalancer without NodePorts still gets its health-check NodePort",
            svc().ty(TYPE_LOAD_BALANCER).local().without_lb_node_ports(),
            &[],
            Ok(|s, used| {
                assert!(
                    np(s) == [0]
                        && in_range(spec(s).health_check_node_port.unwrap_or(0))
                        && used == 1
                );
            }),
        ),
        (
            "a NodePort held by another service is refused",
            svc()
                .ty(TYPE_NODE_PORT)
                .ports(vec![port("http", 80, "TCP", 30000)]),
            &[30000],
            Err(&[
                "spec.ports[0].nodePort: Invalid value: 30000: provided port is already allocated",
            ]),
        ),
        (
            "a NodePort outside the range is refused with the range",
            svc()
                .ty(TYPE_NODE_PORT)
                .ports(vec![port("http", 80, "TCP", 29999)]),
            &[],
            Err(&[
                "spec.ports[0].nodePort: Invalid value: 29999: provided port is not in the valid range. The range of valid ports is 30000-32767",
            ]),
        ),
        (
            "a second port's NodePort held elsewhere gives back the first",
            svc().ty(TYPE_NODE_PORT).ports(vec![
                port("http", 80, "TCP", 0),
                port("https", 443, "TCP", 30001),
            ]),
            &[30001],
            Err(&[
                "spec.ports[1].nodePort: Invalid value: 30001: provided port is already allocated",
            ]),
        ),
        (
            "a health-check NodePort held elsewhere is an internal error",
            svc().ty(TYPE_LOAD_BALANCER).local().hc(30001),
            &[30001],
            Err(&[
                "Internal error occurred: failed to allocate requested HealthCheck NodePort 30001: provided port is already allocated",
            ]),
        ),
        (
            "a NodePort on a ClusterIP service is forbidden and takes nothing",
            svc().ports(vec![port("http", 80, "TCP", 30005)]),
            &[],
            Err(&["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]),
        ),
    ];
    for (name, s, taken, want) in rows {
        let mut alloc = Alloc::new(D46);
        for p in taken {
            alloc.ports.allocate(*p).expect("free");
        }
        let before = alloc.usage();
        match (create(&mut alloc, s), want) {
            (Ok((svc, _)), Ok(check)) => check(&svc, alloc.ports.used()),
            (Err(e), Err(causes)) => {
                assert_eq!(texts(&e), causes, "{name}");
                assert_eq!(alloc.usage(), before, "{name}: nothing stays allocated");
            }
            (Ok((svc, _)), Err(causes)) => {
                panic!("{name}: succeeded with {:?}, wanted {causes:?}", svc.spec)
            }
            (Err(e), Ok(_)) => panic!("{name}: failed with {:?}", texts(&e)),
        }
    }
}

#[test]
fn node_port_updates_give_back_what_the_new_type_no_longer_needs() {
    let mut alloc = Alloc::new(D64);
    let (stored, _) = create(&mut alloc, svc().ty(TYPE_NODE_PORT)).expect("create");
    let node_port = u16::try_from(node_port_numbers(&stored)[0]).expect("port");

    // An old client's PUT without the NodePort keeps it.
    let (_, new, a) = update(&mut alloc, &stored, |s| {
        let mut s = s.label();
        s.spec().ports = Some(vec![port("http", 80, "TCP", 0)]);
        s
    })
    .expect("update");
    assert_eq!(
        node_port_numbers(&new),
        [i32::from(node_port)],
        "the NodePort is kept"
    );
    assert!(
        a.ports_allocated.is_empty() && a.ports_released.is_empty(),
        "{a:?}"
    );

    // NodePort → ClusterIP gives the NodePort back and drops the type-dependent fields.
    let (_, new, a) = update(&mut alloc, &stored, |s| s.ty(TYPE_CLUSTER_IP)).expect("update");
    assert!(node_port_numbers(&new).is_empty(), "{:?}", new.spec);
    assert_eq!(spec(&new).external_traffic_policy, None);
    assert_eq!(a.ports_released, [node_port]);
    assert!(alloc.ports.has(node_port), "released only after the commit");

    // NodePort → ClusterIP while removing a port: no new NodePort appeared, so all are dropped.
    let mut alloc = Alloc::new(C4);
    let two = vec![
        port("http", 80, "TCP", 30001),
        port("https", 443, "TCP", 30002),
    ];
    let (stored, _) = create(&mut alloc, svc().ty(TYPE_NODE_PORT).ports(two)).expect("create");
    let (_, new, a) = update(&mut alloc, &stored, |s| {
        let mut s = s.ty(TYPE_CLUSTER_IP);
        s.spec().ports = Some(vec![port("http", 80, "TCP", 30001)]);
        s
    })
    .expect("update");
    assert!(node_port_numbers(&new).is_empty(), "{:?}", new.spec);
    assert_eq!(a.ports_released, [30001, 30002]);

    // A LoadBalancer that allocates no NodePorts keeps a NodePort its user chose.
    let mut alloc = Alloc::new(C6);
    let lb = svc()
        .ty(TYPE_LOAD_BALANCER)
        .without_lb_node_ports()
        .ports(vec![port("http", 80, "TCP", 30010)]);
    let (stored, _) = create(&mut alloc, lb).expect("create");
    let (_, new, a) = update(&mut alloc, &stored, |mut s| {
        s.spec().ports = Some(vec![port("http", 80, "TCP", 0)]);
        s
    })
    .expect("update");
    assert_eq!(node_port_numbers(&new), [30010]);
    assert!(a.ports_released.is_empty(), "{a:?}");

    // LoadBalancer Local → Cluster gives the health-check NodePort back; Cluster → Local takes one.
    let mut alloc = Alloc::new(D46);
    let (lb, _) = create(&mut alloc, svc().ty(TYPE_LOAD_BALANCER).local()).expect("create");
    let hc = u16::try_from(spec(&lb).health_check_node_port.expect("hc")).expect("port");
    let (_, new, a) = update(&mut alloc, &lb, |mut s| {
        s.spec().external_traffic_policy = Some("Cluster".into());
        s
    })
    .expect("update");
    assert_eq!(spec(&new).health_check_node_port, None);
    assert_eq!(a.ports_released, [hc]);
    let (_, new, a) = update(&mut alloc, &new, S::local).expect("update");
    let hc = spec(&new)
        .health_check_node_port
        .expect("a new health-check NodePort");
    assert_eq!(a.ports_allocated, [u16::try_from(hc).expect("port")]);
}

// ---------------------------------------------------------------------------------------------
// Full ranges, dry runs and deletes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_full_range_is_an_internal_error_and_keeps_nothing() {
    // D46 with a tiny IPv6 range: 7 usable addresses (network excluded).
    let mut alloc = Alloc::with_cidrs(&["10.0.0.0/16", "fd00:10::/125"]);
    let v6 = alloc.ips.get_mut(IpFamily::IPv6).expect("v6");
    while v6.allocate_next().is_ok() {}
    assert_eq!(alloc.used(IpFamily::IPv6), 7);

    let rows: Vec<(&str, S)> = vec![
        (
            "PreferDualStack gives back its IPv4 address when IPv6 is full",
            svc().policy(PREFER),
        ),
        (
            "a chosen IPv4 address is given back when IPv6 is full",
            svc().policy(REQUIRE).ip("10.0.0.5"),
        ),
        (
            "an IPv6 SingleStack service finds no address",
            svc().fams(V6),
        ),
    ];
    for (name, s) in rows {
        let err = create(&mut alloc, s).expect_err(name);
        assert_eq!(
            err,
            ServiceError::Internal("failed to allocate a serviceIP: range is full".into()),
            "{name}"
        );
        assert_eq!(
            alloc.used(IpFamily::IPv4),
            0,
            "{name}: nothing stays allocated"
        );
        assert_eq!(alloc.used(IpFamily::IPv6), 7, "{name}");
    }
    // The IPv4-only services still work.
    let (svc4, _) = create(&mut alloc, svc()).expect("IPv4 is not full");
    check_service("IPv4 SingleStack", &alloc, &svc4, ok(SINGLE, V4));
}

#[test]
fn a_dry_run_create_shows_addresses_but_takes_none() {
    let mut alloc = Alloc::new(D64);
    let mut s = svc().ty(TYPE_NODE_PORT).policy(REQUIRE).0;
    set_defaults(&mut s);
    let a = begin_create(&mut s, &mut alloc.ips, &mut alloc.ports, true).expect("dry run");
    assert_eq!(a, Allocation::default());
    assert_eq!(alloc.usage(), (0, 0, 0));
    assert_eq!(families(&s), V64);
    assert_eq!(cluster_ips(&s).len(), 2);
    assert!(node_port_numbers(&s)[0] != 0);
}

#[test]
fn delete_gives_back_every_address_and_port() {
    let rows: Vec<(&str, S, &[&str], &[u16])> = vec![
        (
            "both ClusterIPs of a dual-stack service",
            dual46().fams(V46),
            &["10.0.0.5", "fd00:10::5"],
            &[],
        ),
        (
            "the NodePorts and the health-check NodePort of a LoadBalancer",
            svc()
                .ty(TYPE_LOAD_BALANCER)
                .local()
                .hc(30006)
                .ip("fd00:10::5")
                .ports(vec![port("http", 80, "TCP", 30005)]),
            &["fd00:10::5"],
            &[30005, 30006],
        ),
        (
            "nothing of a headless service",
            svc().headless().ips(&["None"]),
            &[],
            &[],
        ),
        (
            "nothing of an ExternalName service",
            svc().external_name("db.example.com"),
            &[],
            &[],
        ),
    ];
    for (name, s, want_ips, want_ports) in rows {
        let mut stored = s.0;
        default_on_read(&mut stored, IpFamily::IPv4);
        let a = release_on_delete(&stored);
        let ips: Vec<IpAddr> = want_ips.iter().map(|s| s.parse().expect("ip")).collect();
        assert_eq!(a.ips_released, ips, "{name}");
        assert_eq!(a.ports_released, want_ports, "{name}");
        assert!(
            a.ips_allocated.is_empty() && a.ports_allocated.is_empty(),
            "{name}"
        );
    }

    // After the cluster lost IPv6, deleting a dual-stack service frees the IPv4 address and
    // skips the IPv6 one.
    let mut at_create = Alloc::new(D46);
    let (dual, _) = create(&mut at_create, svc().policy(REQUIRE)).expect("create");
    let mut alloc = Alloc::new(C4);
    alloc.restore(&dual);
    let a = release_on_delete(&dual);
    let report = alloc.ips.release_all(&a.ips_released);
    assert_eq!(report.released, 1);
    assert_eq!(report.unconfigured, [a.ips_released[1]]);
    assert_eq!(alloc.usage(), (0, 0, 0));
}
