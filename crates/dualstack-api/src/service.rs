//! Service dual-stack rules, rule for rule and message for message as upstream
//! (`shared/spec/upstream-dual-stack.md` §4, §5): defaulting, the seed's alpha `spec.ipFamily`,
//! `initIPFamilyFields`, `ValidateService` / `ValidateServiceUpdate`, the update helpers
//! (`patchAllocatedValues`, `normalizeClusterIPs`, `dropTypeDependentFields`), read-time
//! defaulting of legacy objects, and the allocation plan (which ClusterIPs and NodePorts to take
//! and release) computed against the pure allocators of `dualstack-ipam`.
//!
//! Pipeline of a create (as upstream's registry): decode → [`set_defaults`] →
//! [`begin_create`] (normalize, `initIPFamilyFields`, allocate) → [`validate`] → store.
//! An update: [`default_on_read`] of the old object → [`begin_update`] (patch allocated values,
//! normalize, `initIPFamilyFields`, allocate the secondary / plan releases) →
//! [`prepare_for_update`] (keep status, drop type-dependent fields) → [`validate_update`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use dualstack_apimachinery::field::{ErrorList, FieldError, Path, Value};
use dualstack_apimachinery::validation::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, validate_labels,
};
use dualstack_ipam::{
    AllocError, IpFamily, NodePortAllocator, PortAllocError, ServiceIpAllocators,
};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec, ServiceStatus};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::ip::{INVALID_CIDR, INVALID_IP, parse_cidr, parse_ip};

/// `spec.type` values.
pub const TYPE_CLUSTER_IP: &str = "ClusterIP";
/// `spec.type` NodePort.
pub const TYPE_NODE_PORT: &str = "NodePort";
/// `spec.type` LoadBalancer.
pub const TYPE_LOAD_BALANCER: &str = "LoadBalancer";
/// `spec.type` ExternalName.
pub const TYPE_EXTERNAL_NAME: &str = "ExternalName";
/// Headless marker.
pub const CLUSTER_IP_NONE: &str = "None";
/// `ipFamilyPolicy` values.
pub const SINGLE_STACK: &str = "SingleStack";
/// PreferDualStack.
pub const PREFER_DUAL_STACK: &str = "PreferDualStack";
/// RequireDualStack.
pub const REQUIRE_DUAL_STACK: &str = "RequireDualStack";
/// Default ClientIP affinity timeout (3 hours).
pub const DEFAULT_CLIENT_IP_AFFINITY_SECONDS: i32 = 10800;

/// Why a Service write fails: a 422 with causes, or a 500 (upstream uses InternalError when a
/// range is full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// 422 `Invalid` with field errors.
    Invalid(ErrorList),
    /// 500 `InternalError` with this message (without the `Internal error occurred: ` prefix).
    Internal(String),
}

impl From<ErrorList> for ServiceError {
    fn from(e: ErrorList) -> Self {
        ServiceError::Invalid(e)
    }
}

fn spec(svc: &Service) -> &ServiceSpec {
    static EMPTY: std::sync::OnceLock<ServiceSpec> = std::sync::OnceLock::new();
    svc.spec
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(ServiceSpec::default))
}

fn spec_mut(svc: &mut Service) -> &mut ServiceSpec {
    svc.spec.get_or_insert_with(ServiceSpec::default)
}

fn ty(svc: &Service) -> &str {
    spec(svc).type_.as_deref().unwrap_or("")
}

fn cluster_ip(svc: &Service) -> &str {
    spec(svc).cluster_ip.as_deref().unwrap_or("")
}

fn cluster_ips(svc: &Service) -> &[String] {
    spec(svc).cluster_ips.as_deref().unwrap_or_default()
}

fn families(svc: &Service) -> &[String] {
    spec(svc).ip_families.as_deref().unwrap_or_default()
}

fn policy(svc: &Service) -> Option<&str> {
    spec(svc).ip_family_policy.as_deref()
}

fn ports(svc: &Service) -> &[ServicePort] {
    spec(svc).ports.as_deref().unwrap_or_default()
}

fn has_selector(svc: &Service) -> bool {
    spec(svc).selector.as_ref().is_some_and(|s| !s.is_empty())
}

/// `isHeadlessService`: `clusterIPs == ["None"]` (after normalization) or `clusterIP == "None"`.
pub fn is_headless(svc: &Service) -> bool {
    cluster_ip(svc) == CLUSTER_IP_NONE
        || cluster_ips(svc).first().map(String::as_str) == Some(CLUSTER_IP_NONE)
}

/// Validation's `isHeadlessService`: exactly `clusterIPs == ["None"]`.
fn is_headless_for_validation(svc: &Service) -> bool {
    cluster_ips(svc) == [CLUSTER_IP_NONE]
}

/// `needsClusterIP`: every type but ExternalName (headless counts).
pub fn needs_cluster_ip(svc: &Service) -> bool {
    ty(svc) != TYPE_EXTERNAL_NAME
}

/// `shouldAllocateNodePorts`.
pub fn should_allocate_node_ports(svc: &Service) -> bool {
    match ty(svc) {
        TYPE_NODE_PORT => true,
        TYPE_LOAD_BALANCER => spec(svc).allocate_load_balancer_node_ports.unwrap_or(true),
        _ => false,
    }
}

/// `needsNodePort` of the registry: the types that may carry NodePorts (NodePort and
/// LoadBalancer, whatever `allocateLoadBalancerNodePorts` says).
pub fn needs_node_port(svc: &Service) -> bool {
    matches!(ty(svc), TYPE_NODE_PORT | TYPE_LOAD_BALANCER)
}

/// `needsHCNodePort`: LoadBalancer with `externalTrafficPolicy: Local`.
pub fn needs_health_check_node_port(svc: &Service) -> bool {
    ty(svc) == TYPE_LOAD_BALANCER && spec(svc).external_traffic_policy.as_deref() == Some("Local")
}

/// `ExternallyAccessible`.
pub fn externally_accessible(svc: &Service) -> bool {
    matches!(ty(svc), TYPE_LOAD_BALANCER | TYPE_NODE_PORT)
        || (ty(svc) == TYPE_CLUSTER_IP
            && spec(svc)
                .external_ips
                .as_ref()
                .is_some_and(|e| !e.is_empty()))
}

fn family_of(ip: &str) -> Option<IpFamily> {
    parse_ip(ip).map(|a| IpFamily::of_addr(&a))
}

fn policy_value(p: Option<&str>) -> Value {
    match p {
        Some(p) => Value::Str(p.to_string()),
        None => Value::Null,
    }
}

/// `clusterIPs` as Go's `%#v` prints it (a nil slice is `[]string(nil)`).
fn ips_value(svc: &Service) -> Value {
    match &spec(svc).cluster_ips {
        None => Value::Raw("[]string(nil)".into()),
        Some(ips) => Value::StrList("string", ips.clone()),
    }
}

/// `ipFamilies` as Go's `%#v` prints it.
fn families_value(svc: &Service) -> Value {
    match &spec(svc).ip_families {
        None => Value::Raw("[]core.IPFamily(nil)".into()),
        Some(f) => Value::StrList("core.IPFamily", f.clone()),
    }
}

/// `SetDefaults_Service` (v1 defaulting, run on every decoded Service).
pub fn set_defaults(svc: &mut Service) {
    let s = spec_mut(svc);
    if s.session_affinity.as_deref().unwrap_or("").is_empty() {
        s.session_affinity = Some("None".into());
    }
    if s.session_affinity.as_deref() == Some("None") {
        s.session_affinity_config = None;
    }
    if s.session_affinity.as_deref() == Some("ClientIP") {
        let has_timeout = s
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .is_some();
        if !has_timeout {
            s.session_affinity_config = Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
                client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig {
                    timeout_seconds: Some(DEFAULT_CLIENT_IP_AFFINITY_SECONDS),
                }),
            });
        }
    }
    if s.type_.as_deref().unwrap_or("").is_empty() {
        s.type_ = Some(TYPE_CLUSTER_IP.into());
    }
    for p in s.ports.iter_mut().flatten() {
        if p.protocol.as_deref().unwrap_or("").is_empty() {
            p.protocol = Some("TCP".into());
        }
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) if s.is_empty() => true,
            _ => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    let ty = s.type_.clone().unwrap_or_default();
    if externally_accessible(svc)
        && spec(svc)
            .external_traffic_policy
            .as_deref()
            .unwrap_or("")
            .is_empty()
    {
        spec_mut(svc).external_traffic_policy = Some("Cluster".into());
    }
    let s = spec_mut(svc);
    if s.internal_traffic_policy.is_none()
        && matches!(
            ty.as_str(),
            TYPE_NODE_PORT | TYPE_LOAD_BALANCER | TYPE_CLUSTER_IP
        )
    {
        s.internal_traffic_policy = Some("Cluster".into());
    }
    if ty == TYPE_LOAD_BALANCER && s.allocate_load_balancer_node_ports.is_none() {
        s.allocate_load_balancer_node_ports = Some(true);
    }
    if ty == TYPE_LOAD_BALANCER {
        for ing in svc
            .status
            .iter_mut()
            .flat_map(|st| st.load_balancer.iter_mut())
            .flat_map(|lb| lb.ingress.iter_mut().flatten())
        {
            if ing.ip.as_deref().is_some_and(|i| !i.is_empty()) && ing.ip_mode.is_none() {
                ing.ip_mode = Some("VIP".into());
            }
        }
    }
}

/// The seed's alpha field `spec.ipFamily` (Kubernetes 1.16–1.19), read from the raw request.
/// `Some(value)` when present.
pub fn take_alpha_ip_family(value: &mut serde_json::Value) -> Option<serde_json::Value> {
    value.get_mut("spec")?.as_object_mut()?.remove("ipFamily")
}

/// Applies the seed's `spec.ipFamily: X` on create: it means `ipFamilies: [X]`,
/// `ipFamilyPolicy: SingleStack` (explicit GA fields, when also given, must agree). Checked
/// against the configured families with the seed era's messages (§5.3).
pub fn apply_alpha_ip_family_on_create(
    svc: &mut Service,
    alpha: &serde_json::Value,
    cluster: &[IpFamily],
) -> ErrorList {
    let path = Path::new("spec").child("ipFamily");
    let Some(fam_str) = alpha.as_str() else {
        if alpha.is_null() {
            return Vec::new();
        }
        return vec![FieldError::invalid(
            &path,
            Value::Raw(alpha.to_string()),
            "must be a string",
        )];
    };
    if ty(svc) == TYPE_EXTERNAL_NAME {
        // The seed era dropped it for ExternalName services.
        return Vec::new();
    }
    // 1.19's validateIPFamily: a value that is not a configured family (unknown values
    // included) is "not allowed".
    let Some(fam) = IpFamily::parse(fam_str).filter(|f| cluster.contains(f)) else {
        let allowed: Vec<&str> = cluster.iter().map(|f| f.as_str()).collect();
        return vec![FieldError::invalid(
            &path,
            fam_str,
            format!(
                "only the following families are allowed: {}",
                allowed.join(", ")
            ),
        )];
    };
    if let Some(ip_fam) = spec(svc).cluster_ip.as_deref().and_then(family_of)
        && ip_fam != fam
    {
        return vec![FieldError::invalid(
            &path,
            fam_str,
            format!("does not match {} cluster IP", ip_fam.as_str()),
        )];
    }
    let s = spec_mut(svc);
    match s.ip_families.as_deref() {
        None | Some([]) => s.ip_families = Some(vec![fam.as_str().to_string()]),
        Some(list) if list[0] == fam.as_str() => {}
        Some(_) => {
            return vec![FieldError::invalid(
                &path,
                fam_str,
                "does not match `spec.ipFamilies[0]`",
            )];
        }
    }
    if s.ip_family_policy.is_none() {
        s.ip_family_policy = Some(SINGLE_STACK.into());
    }
    Vec::new()
}

/// On update, the seed's `spec.ipFamily` is immutable: it must name the Service's primary family
/// (`field is immutable` otherwise), except when the old or new type is ExternalName.
pub fn check_alpha_ip_family_on_update(
    new: &Service,
    old: &Service,
    alpha: &serde_json::Value,
) -> ErrorList {
    let path = Path::new("spec").child("ipFamily");
    let Some(fam) = alpha.as_str() else {
        return Vec::new();
    };
    if ty(new) == TYPE_EXTERNAL_NAME || ty(old) == TYPE_EXTERNAL_NAME {
        return Vec::new();
    }
    match families(old).first() {
        Some(old_fam) if old_fam == fam => Vec::new(),
        _ => vec![FieldError::invalid(&path, fam, "field is immutable")],
    }
}

/// `defaultOnRead`: fills GA fields of objects stored before dual-stack (§4.6). As upstream's
/// `defaultOnReadService`: `clusterIPs` from `clusterIP` for every type; families and policy
/// only for types with a ClusterIP and only when `ipFamilies` is empty; and ExternalName loses an
/// `internalTrafficPolicy` it should never have been given.
pub fn default_on_read(svc: &mut Service, primary: IpFamily) {
    normalize_cluster_ips(svc, None);
    if ty(svc) == TYPE_EXTERNAL_NAME {
        spec_mut(svc).internal_traffic_policy = None;
        return;
    }
    if !families(svc).is_empty() {
        return;
    }
    let selectorless = !has_selector(svc);
    let ips = cluster_ips(svc).to_vec();
    let s = spec_mut(svc);
    if s.cluster_ip.as_deref() == Some(CLUSTER_IP_NONE) {
        if selectorless {
            s.ip_family_policy = Some(REQUIRE_DUAL_STACK.into());
            s.ip_families = Some(vec![
                primary.as_str().into(),
                primary.other().as_str().into(),
            ]);
        } else {
            s.ip_family_policy = Some(SINGLE_STACK.into());
            s.ip_families = Some(vec![primary.as_str().into()]);
        }
        return;
    }
    // Headful: one family per ClusterIP (upstream: IPv6 if it parses as IPv6, else IPv4).
    let fams: Vec<String> = ips
        .iter()
        .map(|ip| {
            if family_of(ip) == Some(IpFamily::IPv6) {
                "IPv6"
            } else {
                "IPv4"
            }
            .to_string()
        })
        .collect();
    match fams.len() {
        0 => return,
        1 => s.ip_family_policy = Some(SINGLE_STACK.into()),
        2 => s.ip_family_policy = Some(REQUIRE_DUAL_STACK.into()),
        _ => {}
    }
    s.ip_families = Some(fams);
}

/// `normalizeClusterIPs` (create: `clusterIP` → `clusterIPs`; update rules §4.2). As upstream's,
/// it looks only at the two fields, whatever the types (a change from ExternalName by an old
/// client that sends only `clusterIP` gets `clusterIPs = [clusterIP]`).
pub fn normalize_cluster_ips(new: &mut Service, old: Option<&Service>) {
    match old {
        None => {
            if !cluster_ip(new).is_empty() && cluster_ips(new).is_empty() {
                let ip = cluster_ip(new).to_string();
                spec_mut(new).cluster_ips = Some(vec![ip]);
            }
        }
        Some(old) => {
            // An old client patching other fields sent no clusterIPs.
            if !cluster_ips(old).is_empty()
                && cluster_ips(new).is_empty()
                && cluster_ip(old) == cluster_ip(new)
            {
                spec_mut(new).cluster_ips = spec(old).cluster_ips.clone();
            }
            if cluster_ip(old) != cluster_ip(new) {
                let same_ips = cluster_ips(old) == cluster_ips(new);
                if !cluster_ip(old).is_empty() && cluster_ip(new).is_empty() {
                    // Clearing the singular clears the plural on the client's behalf.
                    if same_ips {
                        spec_mut(new).cluster_ips = None;
                    }
                } else if same_ips {
                    // The singular changed (or was set) and the plural was left alone.
                    let ip = cluster_ip(new).to_string();
                    spec_mut(new).cluster_ips = Some(vec![ip]);
                }
            }
        }
    }
}

/// `patchAllocatedValues`: an update that omits allocated values keeps them.
pub fn patch_allocated_values(new: &mut Service, old: &Service) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        if cluster_ip(new).is_empty() {
            spec_mut(new).cluster_ip = spec(old).cluster_ip.clone();
        }
        if cluster_ips(new).is_empty() && !cluster_ips(old).is_empty() {
            spec_mut(new).cluster_ips = spec(old).cluster_ips.clone();
        }
    }
    if needs_node_port(old) && needs_node_port(new) {
        let used = |s: &Service| -> BTreeSet<i32> {
            ports(s)
                .iter()
                .filter_map(|p| p.node_port.filter(|&n| n != 0))
                .collect()
        };
        let used: BTreeSet<i32> = used(old).intersection(&used(new)).copied().collect();
        let by_name: BTreeMap<String, i32> = ports(old)
            .iter()
            .map(|p| (p.name.clone().unwrap_or_default(), p.node_port.unwrap_or(0)))
            .collect();
        for p in spec_mut(new).ports.iter_mut().flatten() {
            if p.node_port.unwrap_or(0) == 0 {
                let old_val = by_name
                    .get(p.name.as_deref().unwrap_or(""))
                    .copied()
                    .unwrap_or(0);
                if old_val != 0 && !used.contains(&old_val) {
                    p.node_port = Some(old_val);
                }
            }
        }
    }
    if needs_health_check_node_port(old)
        && needs_health_check_node_port(new)
        && spec(new).health_check_node_port.unwrap_or(0) == 0
    {
        spec_mut(new).health_check_node_port = spec(old).health_check_node_port;
    }
}

fn is_matching_prefer_dual_stack(new: &Service, old: Option<&Service>) -> bool {
    let Some(old) = old else { return false };
    let Some(np) = policy(new) else { return false };
    if ty(old) != ty(new)
        || !matches!(
            ty(new),
            TYPE_CLUSTER_IP | TYPE_NODE_PORT | TYPE_LOAD_BALANCER
        )
    {
        return false;
    }
    if np != PREFER_DUAL_STACK {
        return false;
    }
    if policy(old).is_some_and(|p| p != PREFER_DUAL_STACK) {
        return false;
    }
    cluster_ips(old) == cluster_ips(new) && families(old) == families(new)
}

fn other_family_str(f: &str) -> &'static str {
    if f == "IPv4" { "IPv6" } else { "IPv4" }
}

/// `initIPFamilyFields` (§4.3): defaults `ipFamilyPolicy` and `ipFamilies` and checks them
/// against the cluster's families (`cluster`, primary first). Errors are 422s.
pub fn init_ip_family_fields(
    new: &mut Service,
    old: Option<&Service>,
    cluster: &[IpFamily],
) -> Result<(), ErrorList> {
    if ty(new) == TYPE_EXTERNAL_NAME {
        return Ok(());
    }
    if is_matching_prefer_dual_stack(new, old) {
        return Ok(());
    }
    let pol_path = Path::new("spec").child("ipFamilyPolicy");
    if policy(new).is_none() {
        let p = match old.and_then(policy) {
            Some(p) => p.to_string(),
            None if cluster_ip(new) == CLUSTER_IP_NONE && !has_selector(new) => {
                REQUIRE_DUAL_STACK.into()
            }
            None => SINGLE_STACK.into(),
        };
        spec_mut(new).ip_family_policy = Some(p);
    }
    let errs = validate_cluster_ips_related_fields(new);
    if !errs.is_empty() {
        return Err(errs);
    }
    let mut errs = Vec::new();
    let pol = policy(new).unwrap_or(SINGLE_STACK).to_string();
    if let Some(old) = old {
        if pol == SINGLE_STACK {
            if cluster_ips(old) == cluster_ips(new) && cluster_ips(new).len() > 1 {
                spec_mut(new)
                    .cluster_ips
                    .as_mut()
                    .expect("non-empty")
                    .truncate(1);
            }
            if families(old) == families(new) && families(new).len() > 1 {
                spec_mut(new)
                    .ip_families
                    .as_mut()
                    .expect("non-empty")
                    .truncate(1);
            }
        } else {
            if !cluster_ips(new).is_empty() && cluster_ips(new).len() < cluster_ips(old).len() {
                errs.push(FieldError::invalid(
                    &pol_path,
                    policy_value(policy(new)),
                    "must be 'SingleStack' to release the secondary cluster IP",
                ));
            }
            if !families(new).is_empty() && families(new).len() < families(old).len() {
                errs.push(FieldError::invalid(
                    &pol_path,
                    policy_value(policy(new)),
                    "must be 'SingleStack' to release the secondary IP family",
                ));
            }
        }
    }
    if pol == SINGLE_STACK {
        if cluster_ips(new).len() == 2 {
            errs.push(FieldError::invalid(
                &pol_path,
                policy_value(policy(new)),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if families(new).len() == 2 {
            errs.push(FieldError::invalid(
                &pol_path,
                policy_value(policy(new)),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }
    let ips = cluster_ips(new).to_vec();
    for (i, ip) in ips.iter().enumerate() {
        if ip == CLUSTER_IP_NONE {
            break;
        }
        let Some(fam) = family_of(ip) else { continue };
        if i >= families(new).len() {
            if cluster.contains(&fam) {
                spec_mut(new)
                    .ip_families
                    .get_or_insert_with(Vec::new)
                    .push(fam.as_str().to_string());
            } else {
                errs.push(FieldError::invalid(
                    &Path::new("spec").child("clusterIPs").index(i),
                    ips_value(new),
                    format!("{} is not configured on this cluster", fam.as_str()),
                ));
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let default_family = cluster.first().copied().unwrap_or(IpFamily::IPv4);
    if cluster_ip(new) == CLUSTER_IP_NONE && !has_selector(new) {
        if families(new).is_empty() {
            spec_mut(new).ip_families = Some(vec![default_family.as_str().into()]);
        }
        if families(new).len() < 2 && pol != SINGLE_STACK {
            let other = other_family_str(&families(new)[0]);
            spec_mut(new)
                .ip_families
                .as_mut()
                .expect("set")
                .push(other.into());
        }
        return Ok(());
    }
    if pol == REQUIRE_DUAL_STACK && cluster.len() < 2 {
        errs.push(FieldError::invalid(
            &pol_path,
            policy_value(policy(new)),
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, f) in families(new).iter().enumerate() {
        let configured = IpFamily::parse(f).is_some_and(|f| cluster.contains(&f));
        if !configured {
            errs.push(FieldError::invalid(
                &Path::new("spec").child("ipFamilies").index(i),
                f.as_str(),
                "not configured on this cluster",
            ));
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    if families(new).is_empty() {
        spec_mut(new).ip_families = Some(vec![default_family.as_str().into()]);
    }
    if pol != SINGLE_STACK && families(new).len() == 1 && cluster.len() == 2 {
        let other = other_family_str(&families(new)[0]);
        spec_mut(new)
            .ip_families
            .as_mut()
            .expect("set")
            .push(other.into());
    }
    Ok(())
}

/// `ValidateServiceClusterIPsRelatedFields` (§4.4).
pub fn validate_cluster_ips_related_fields(svc: &Service) -> ErrorList {
    if ty(svc) == TYPE_EXTERNAL_NAME {
        return Vec::new();
    }
    let sp = Path::new("spec");
    let ips_path = sp.child("clusterIPs");
    let fam_path = sp.child("ipFamilies");
    let mut errs = Vec::new();
    let ips = cluster_ips(svc);
    if !cluster_ip(svc).is_empty() {
        if ips.is_empty() {
            errs.push(FieldError::required(&ips_path, ""));
        } else if ips[0] != cluster_ip(svc) {
            errs.push(FieldError::invalid(
                &ips_path,
                ips_value(svc),
                "first value must match `clusterIP`",
            ));
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid(
            &ips_path,
            ips_value(svc),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, f) in families(svc).iter().enumerate() {
        if f != "IPv4" && f != "IPv6" {
            errs.push(FieldError::not_supported(
                &fam_path.index(i),
                f.as_str(),
                &["IPv4", "IPv6"],
            ));
        }
        if !seen.insert(f.clone()) {
            errs.push(FieldError::duplicate(&fam_path.index(i), f.as_str()));
        }
    }
    if let Some(p) = policy(svc)
        && !matches!(p, SINGLE_STACK | PREFER_DUAL_STACK | REQUIRE_DUAL_STACK)
    {
        errs.push(FieldError::not_supported(
            &sp.child("ipFamilyPolicy"),
            p,
            &[PREFER_DUAL_STACK, REQUIRE_DUAL_STACK, SINGLE_STACK],
        ));
    }
    let mut invalid_ips = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == CLUSTER_IP_NONE {
            if ips.len() > 1 {
                invalid_ips = true;
                errs.push(FieldError::invalid(
                    &ips_path,
                    ips_value(svc),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if parse_ip(ip).is_none() {
            invalid_ips = true;
            errs.push(FieldError::invalid(
                &ips_path.index(i),
                ip.as_str(),
                INVALID_IP,
            ));
        }
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            &ips_path,
            ips_value(svc),
            "may only hold up to 2 values",
        ));
    }
    if invalid_ips {
        return errs;
    }
    if ips.len() > 1 {
        let fams: Vec<_> = ips.iter().filter_map(|ip| family_of(ip)).collect();
        let dual = fams.contains(&IpFamily::IPv4) && fams.contains(&IpFamily::IPv6);
        if !dual {
            errs.push(FieldError::invalid(
                &ips_path,
                ips_value(svc),
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless_for_validation(svc) && !ips.is_empty() && !families(svc).is_empty() {
        for (i, ip) in ips.iter().enumerate() {
            let Some(f) = families(svc).get(i) else { break };
            let is_v6 = family_of(ip) == Some(IpFamily::IPv6);
            if f == "IPv4" && is_v6 {
                errs.push(FieldError::invalid(
                    &ips_path.index(i),
                    ip.as_str(),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if f == "IPv6" && !is_v6 {
                errs.push(FieldError::invalid(
                    &ips_path.index(i),
                    ip.as_str(),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

fn port_key_value(p: &ServicePort) -> Value {
    Value::Raw(format!(
        "core.ServicePort{{Name:\"\", Protocol:{:?}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        p.protocol.as_deref().unwrap_or(""),
        p.port
    ))
}

fn validate_port_num_or_name(path: &Path, tp: &IntOrString) -> ErrorList {
    match tp {
        IntOrString::Int(n) => {
            if (1..=65535).contains(n) {
                Vec::new()
            } else {
                vec![FieldError::invalid(
                    path,
                    *n,
                    "must be between 1 and 65535, inclusive",
                )]
            }
        }
        IntOrString::String(s) => {
            let mut errs = Vec::new();
            if s.len() > 15 {
                errs.push(FieldError::invalid(
                    path,
                    s.as_str(),
                    "must be no more than 15 characters",
                ));
            }
            if !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                errs.push(FieldError::invalid(
                    path,
                    s.as_str(),
                    "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                ));
            }
            if !s.bytes().any(|b| b.is_ascii_lowercase()) {
                errs.push(FieldError::invalid(
                    path,
                    s.as_str(),
                    "must contain at least one letter (a-z)",
                ));
            }
            if s.contains("--") {
                errs.push(FieldError::invalid(
                    path,
                    s.as_str(),
                    "must not contain consecutive hyphens",
                ));
            }
            if s.starts_with('-') || s.ends_with('-') {
                errs.push(FieldError::invalid(
                    path,
                    s.as_str(),
                    "must not begin or end with a hyphen",
                ));
            }
            errs
        }
    }
}

/// `ValidateService` (everything after object meta, which the registry checks).
pub fn validate(svc: &Service) -> ErrorList {
    let sp = Path::new("spec");
    let s = spec(svc);
    let mut errs = Vec::new();
    let headless = is_headless_for_validation(svc);
    let t = ty(svc);
    if ports(svc).is_empty() && !headless && t != TYPE_EXTERNAL_NAME {
        errs.push(FieldError::required(&sp.child("ports"), ""));
    }
    match t {
        TYPE_LOAD_BALANCER if headless => errs.push(FieldError::invalid(
            &sp.child("clusterIPs").index(0),
            cluster_ips(svc).first().cloned().unwrap_or_default(),
            "may not be set to 'None' for LoadBalancer services",
        )),
        TYPE_NODE_PORT if headless => errs.push(FieldError::invalid(
            &sp.child("clusterIPs").index(0),
            cluster_ips(svc).first().cloned().unwrap_or_default(),
            "may not be set to 'None' for NodePort services",
        )),
        TYPE_EXTERNAL_NAME => {
            if !cluster_ips(svc).is_empty() {
                errs.push(FieldError::forbidden(
                    &sp.child("clusterIPs"),
                    "may not be set for ExternalName services",
                ));
            }
            if !families(svc).is_empty() {
                errs.push(FieldError::forbidden(
                    &sp.child("ipFamilies"),
                    "may not be set for ExternalName services",
                ));
            }
            if policy(svc).is_some() {
                errs.push(FieldError::forbidden(
                    &sp.child("ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                ));
            }
            let cname = s
                .external_name
                .as_deref()
                .unwrap_or("")
                .trim_end_matches('.');
            if cname.is_empty() {
                errs.push(FieldError::required(&sp.child("externalName"), ""));
            } else {
                for m in is_dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid(&sp.child("externalName"), cname, m));
                }
            }
        }
        _ => {}
    }
    let mut names = BTreeSet::new();
    let require_name = ports(svc).len() > 1;
    for (i, p) in ports(svc).iter().enumerate() {
        let pp = sp.child("ports").index(i);
        let name = p.name.as_deref().unwrap_or("");
        if require_name && name.is_empty() {
            errs.push(FieldError::required(&pp.child("name"), ""));
        } else if !name.is_empty() {
            for m in is_dns1123_label(name) {
                errs.push(FieldError::invalid(&pp.child("name"), name, m));
            }
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(&pp.child("name"), name));
            }
        }
        if !(1..=65535).contains(&p.port) {
            errs.push(FieldError::invalid(
                &pp.child("port"),
                p.port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        match p.protocol.as_deref().unwrap_or("") {
            "" => errs.push(FieldError::required(&pp.child("protocol"), "")),
            "TCP" | "UDP" | "SCTP" => {}
            other => errs.push(FieldError::not_supported(
                &pp.child("protocol"),
                other,
                &["SCTP", "TCP", "UDP"],
            )),
        }
        if let Some(tp) = &p.target_port {
            errs.extend(validate_port_num_or_name(&pp.child("targetPort"), tp));
        }
        if let Some(ap) = p.app_protocol.as_deref() {
            for m in is_qualified_name(ap) {
                errs.push(FieldError::invalid(&pp.child("appProtocol"), ap, m));
            }
        }
    }
    if let Some(sel) = &s.selector {
        errs.extend(validate_labels(sel, &sp.child("selector")));
    }
    match s.session_affinity.as_deref().unwrap_or("") {
        "" => errs.push(FieldError::required(&sp.child("sessionAffinity"), "")),
        "ClientIP" => {
            let p = sp
                .child("sessionAffinityConfig")
                .child("clientIP")
                .child("timeoutSeconds");
            match s
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
            {
                None => errs.push(FieldError::required(&p, "")),
                Some(t) if t <= 0 || t > 86400 => errs.push(FieldError::invalid(
                    &p,
                    t,
                    "must be greater than 0 and less than 86400",
                )),
                Some(_) => {}
            }
        }
        "None" => {
            if s.session_affinity_config.is_some() {
                errs.push(FieldError::forbidden(
                    &sp.child("sessionAffinityConfig"),
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            &sp.child("sessionAffinity"),
            other,
            &["ClientIP", "None"],
        )),
    }
    errs.extend(validate_cluster_ips_related_fields(svc));
    for (i, ip) in s.external_ips.iter().flatten().enumerate() {
        let p = sp.child("externalIPs").index(i);
        match parse_ip(ip) {
            None => errs.push(FieldError::invalid(&p, ip.as_str(), INVALID_IP)),
            Some(a) if a.is_unspecified() => errs.push(FieldError::invalid(
                &p,
                ip.as_str(),
                "may not be unspecified (0.0.0.0)",
            )),
            Some(a) if a.is_loopback() => errs.push(FieldError::invalid(
                &p,
                ip.as_str(),
                "may not be in the loopback range (127.0.0.0/8, ::1/128)",
            )),
            Some(_) => {}
        }
    }
    match t {
        "" => errs.push(FieldError::required(&sp.child("type"), "")),
        TYPE_CLUSTER_IP | TYPE_NODE_PORT | TYPE_LOAD_BALANCER | TYPE_EXTERNAL_NAME => {}
        other => errs.push(FieldError::not_supported(
            &sp.child("type"),
            other,
            &[
                TYPE_CLUSTER_IP,
                TYPE_EXTERNAL_NAME,
                TYPE_LOAD_BALANCER,
                TYPE_NODE_PORT,
            ],
        )),
    }
    if t == TYPE_CLUSTER_IP {
        for (i, p) in ports(svc).iter().enumerate() {
            if p.node_port.unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    &sp.child("ports").index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = BTreeSet::new();
    for (i, p) in ports(svc).iter().enumerate() {
        let np = p.node_port.unwrap_or(0);
        if np == 0 {
            continue;
        }
        if !node_ports.insert((p.protocol.clone(), np)) {
            errs.push(FieldError::duplicate(
                &sp.child("ports").index(i).child("nodePort"),
                np,
            ));
        }
    }
    let mut seen_ports = BTreeSet::new();
    for (i, p) in ports(svc).iter().enumerate() {
        if !seen_ports.insert((p.protocol.clone(), p.port)) {
            errs.push(FieldError::duplicate(
                &sp.child("ports").index(i),
                port_key_value(p),
            ));
        }
    }
    if let Some(ranges) = s
        .load_balancer_source_ranges
        .as_ref()
        .filter(|r| !r.is_empty())
    {
        let p = sp.child("LoadBalancerSourceRanges");
        if t != TYPE_LOAD_BALANCER {
            errs.push(FieldError::forbidden(
                &p,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.trim();
            if parse_cidr(r).is_none() {
                errs.push(FieldError::invalid(&p.index(i), r, INVALID_CIDR));
            }
        }
    }
    if s.allocate_load_balancer_node_ports.is_some() && t != TYPE_LOAD_BALANCER {
        errs.push(FieldError::forbidden(
            &sp.child("allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if t == TYPE_LOAD_BALANCER && s.allocate_load_balancer_node_ports.is_none() {
        errs.push(FieldError::required(
            &Path::new("allocateLoadBalancerNodePorts"),
            "",
        ));
    }
    if let Some(class) = s.load_balancer_class.as_deref() {
        if t != TYPE_LOAD_BALANCER {
            errs.push(FieldError::forbidden(
                &sp.child("loadBalancerClass"),
                "may only be used when `type` is 'LoadBalancer'",
            ));
        } else {
            for m in is_qualified_name(class) {
                errs.push(FieldError::invalid(
                    &sp.child("loadBalancerClass"),
                    class,
                    m,
                ));
            }
        }
    }
    let etp = s.external_traffic_policy.as_deref().unwrap_or("");
    if !externally_accessible(svc) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                &sp.child("externalTrafficPolicy"),
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(&sp.child("externalTrafficPolicy"), ""));
    } else if !matches!(etp, "Cluster" | "Local") {
        errs.push(FieldError::not_supported(
            &sp.child("externalTrafficPolicy"),
            etp,
            &["Cluster", "Local"],
        ));
    }
    let hc = s.health_check_node_port.unwrap_or(0);
    if !needs_health_check_node_port(svc) {
        if hc != 0 {
            errs.push(FieldError::invalid(
                &sp.child("healthCheckNodePort"),
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if hc == 0 {
        errs.push(FieldError::required(&sp.child("healthCheckNodePort"), ""));
    } else if !(1..=65535).contains(&hc) {
        errs.push(FieldError::invalid(
            &sp.child("healthCheckNodePort"),
            hc,
            "must be between 1 and 65535, inclusive",
        ));
    }
    if let Some(itp) = s.internal_traffic_policy.as_deref() {
        if !matches!(itp, "Cluster" | "Local") {
            errs.push(FieldError::not_supported(
                &sp.child("internalTrafficPolicy"),
                itp,
                &["Cluster", "Local"],
            ));
        }
    } else if matches!(t, TYPE_CLUSTER_IP | TYPE_NODE_PORT | TYPE_LOAD_BALANCER) {
        errs.push(FieldError::required(&sp.child("internalTrafficPolicy"), ""));
    }
    errs
}

/// `ValidateServiceUpdate`: the upgrade/downgrade rules of §4.5, then [`validate`].
pub fn validate_update(new: &Service, old: &Service) -> ErrorList {
    let mut errs = validate_upgrade_downgrade_cluster_ips(old, new);
    errs.extend(validate_upgrade_downgrade_ip_families(old, new));
    // validateServiceExternalTrafficFieldsUpdate.
    if needs_health_check_node_port(old)
        && needs_health_check_node_port(new)
        && spec(old).health_check_node_port != spec(new).health_check_node_port
    {
        errs.push(FieldError::forbidden(
            &Path::new("spec").child("healthCheckNodePort"),
            "field is immutable",
        ));
    }
    if ty(old) == TYPE_LOAD_BALANCER
        && ty(new) == TYPE_LOAD_BALANCER
        && spec(old).load_balancer_class != spec(new).load_balancer_class
    {
        errs.push(FieldError::invalid(
            &Path::new("spec").child("loadBalancerClass"),
            policy_value(spec(new).load_balancer_class.as_deref()),
            "may not change once set",
        ));
    }
    errs.extend(validate(new));
    errs
}

fn validate_upgrade_downgrade_cluster_ips(old: &Service, new: &Service) -> ErrorList {
    let mut errs = Vec::new();
    if ty(new) == TYPE_EXTERNAL_NAME || ty(old) == TYPE_EXTERNAL_NAME {
        return errs;
    }
    if is_headless_for_validation(old) && is_headless_for_validation(new) {
        return errs;
    }
    let (o, n) = (cluster_ips(old), cluster_ips(new));
    let p = Path::new("spec").child("clusterIPs");
    match o.len().cmp(&n.len()) {
        std::cmp::Ordering::Equal => {
            for (i, ip) in o.iter().enumerate() {
                if *ip != n[i] {
                    errs.push(FieldError::invalid(
                        &p.index(i),
                        ips_value(new),
                        "may not change once set",
                    ));
                }
            }
        }
        std::cmp::Ordering::Greater => {
            if n.is_empty() {
                errs.push(FieldError::invalid(
                    &p.index(0),
                    ips_value(new),
                    "primary clusterIP can not be unset",
                ));
            }
            if !o.is_empty() && !n.is_empty() && n[0] != o[0] {
                errs.push(FieldError::invalid(
                    &p.index(0),
                    ips_value(new),
                    "may not change once set",
                ));
            }
            if n.len() == 1 && policy(new) != Some(SINGLE_STACK) {
                errs.push(FieldError::invalid(
                    &Path::new("spec").child("ipFamilyPolicy"),
                    policy_value(policy(new)),
                    "must be set to 'SingleStack' when releasing the secondary clusterIP",
                ));
            }
        }
        std::cmp::Ordering::Less => {
            if !o.is_empty() && n[0] != o[0] {
                errs.push(FieldError::invalid(
                    &p.index(0),
                    ips_value(new),
                    "may not change once set",
                ));
            }
        }
    }
    errs
}

fn validate_upgrade_downgrade_ip_families(old: &Service, new: &Service) -> ErrorList {
    let mut errs = Vec::new();
    if ty(new) == TYPE_EXTERNAL_NAME || ty(old) == TYPE_EXTERNAL_NAME {
        return errs;
    }
    if is_headless_for_validation(old) || is_headless_for_validation(new) {
        return errs;
    }
    let (o, n) = (families(old), families(new));
    let p0 = Path::new("spec").child("ipFamilies").index(0);
    match o.len().cmp(&n.len()) {
        std::cmp::Ordering::Equal => {
            for (i, f) in o.iter().enumerate() {
                if *f != n[i] {
                    errs.push(FieldError::invalid(
                        &p0,
                        families_value(new),
                        "may not change once set",
                    ));
                }
            }
        }
        std::cmp::Ordering::Greater => {
            if cluster_ips(new).is_empty() {
                errs.push(FieldError::invalid(
                    &p0,
                    families_value(new),
                    "primary ipFamily can not be unset",
                ));
            }
            if !n.is_empty() && n[0] != o[0] {
                errs.push(FieldError::invalid(
                    &p0,
                    ips_value(new),
                    "may not change once set",
                ));
            }
            if n.len() == 1 && policy(new) != Some(SINGLE_STACK) {
                errs.push(FieldError::invalid(
                    &Path::new("spec").child("ipFamilyPolicy"),
                    policy_value(policy(new)),
                    "must be set to 'SingleStack' when releasing the secondary ipFamily",
                ));
            }
        }
        std::cmp::Ordering::Less => {
            if !o.is_empty() && !n.is_empty() && n[0] != o[0] {
                errs.push(FieldError::invalid(
                    &p0,
                    ips_value(new),
                    "may not change once set",
                ));
            }
        }
    }
    errs
}

/// `PrepareForCreate`: status is the server's.
pub fn prepare_for_create(svc: &mut Service) {
    // Go always serializes `status.loadBalancer` (a struct, never omitted).
    svc.status = Some(ServiceStatus {
        load_balancer: Some(Default::default()),
        conditions: None,
    });
}

/// `PrepareForUpdate` of the main resource: status is kept, and fields that no longer apply to
/// the new type are dropped when the user left them unchanged (`dropTypeDependentFields`).
pub fn prepare_for_update(new: &mut Service, old: &Service) {
    new.status = old.status.clone();
    if needs_cluster_ip(old) && !needs_cluster_ip(new) {
        if cluster_ip(old) == cluster_ip(new) && cluster_ips(old) == cluster_ips(new) {
            let s = spec_mut(new);
            s.cluster_ip = None;
            s.cluster_ips = None;
        }
        if families(old) == families(new) {
            spec_mut(new).ip_families = None;
        }
        if policy(old) == policy(new) {
            spec_mut(new).ip_family_policy = None;
        }
    }
    // `sameNodePorts`: ports may be added, removed or changed as long as no new NodePort appears.
    let same_node_ports = |old: &Service, new: &Service| {
        let old_ports: BTreeSet<i32> = node_port_numbers(old).into_iter().collect();
        node_port_numbers(new).iter().all(|n| old_ports.contains(n))
    };
    if needs_node_port(old) && !needs_node_port(new) && same_node_ports(old, new) {
        for p in spec_mut(new).ports.iter_mut().flatten() {
            p.node_port = None;
        }
    }
    if needs_health_check_node_port(old)
        && !needs_health_check_node_port(new)
        && spec(old).health_check_node_port == spec(new).health_check_node_port
    {
        spec_mut(new).health_check_node_port = None;
    }
    if ty(old) == TYPE_LOAD_BALANCER && ty(new) != TYPE_LOAD_BALANCER {
        if spec(new).allocate_load_balancer_node_ports.is_some()
            && spec(old).allocate_load_balancer_node_ports
                == spec(new).allocate_load_balancer_node_ports
        {
            spec_mut(new).allocate_load_balancer_node_ports = None;
        }
        if spec(old).load_balancer_class == spec(new).load_balancer_class {
            spec_mut(new).load_balancer_class = None;
        }
        if let Some(st) = new.status.as_mut() {
            st.load_balancer = Some(Default::default());
        }
    }
    if externally_accessible(old)
        && !externally_accessible(new)
        && spec(old).external_traffic_policy == spec(new).external_traffic_policy
    {
        spec_mut(new).external_traffic_policy = None;
    }
}

/// What an allocation took (to roll back) and what an update gives back after it commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// ClusterIPs taken by this request, with the family index they fill.
    pub ips_allocated: Vec<IpAddr>,
    /// ClusterIPs to release once the write commits (downgrade, change to ExternalName).
    pub ips_released: Vec<IpAddr>,
    /// NodePorts (and the health-check NodePort) taken by this request.
    pub ports_allocated: Vec<u16>,
    /// NodePorts to release once the write commits.
    pub ports_released: Vec<u16>,
}

impl Allocation {
    /// Gives back what this request took (the write did not happen).
    pub fn rollback(&self, ips: &mut ServiceIpAllocators, ports: &mut NodePortAllocator) {
        ips.release_all(&self.ips_allocated);
        for p in &self.ports_allocated {
            ports.release(*p);
        }
    }
}

fn alloc_ip_error(svc: &Service, ip: &IpAddr, e: &AllocError) -> ServiceError {
    ServiceError::Invalid(vec![FieldError::invalid(
        &Path::new("spec").child("clusterIPs"),
        ips_value(svc),
        format!("failed to allocate IP {ip}: {e}"),
    )])
}

/// Allocates `clusterIPs` for the families listed (create, or an ExternalName → IP change).
fn alloc_cluster_ips(
    svc: &mut Service,
    from: usize,
    ips: &mut ServiceIpAllocators,
    dry_run: bool,
    out: &mut Allocation,
) -> Result<(), ServiceError> {
    let fams: Vec<IpFamily> = families(svc)
        .iter()
        .filter_map(|f| IpFamily::parse(f))
        .collect();
    let mut result: Vec<String> = cluster_ips(svc).to_vec();
    for (i, fam) in fams.iter().enumerate().skip(from) {
        let requested = result
            .get(i)
            .filter(|s| !s.is_empty())
            .and_then(|s| parse_ip(s));
        let range = ips.get_mut(*fam).ok_or_else(|| {
            ServiceError::Internal(format!(
                "failed to allocate a serviceIP: no allocator for family {}",
                fam.as_str()
            ))
        })?;
        let ip = match requested {
            Some(ip) => {
                let r = if dry_run {
                    range.dry_run_allocate(ip)
                } else {
                    range.allocate(ip)
                };
                if let Err(e) = r {
                    return Err(alloc_ip_error(svc, &ip, &e));
                }
                ip
            }
            None => {
                let r = if dry_run {
                    range.dry_run_allocate_next()
                } else {
                    range.allocate_next()
                };
                r.map_err(|e| {
                    ServiceError::Internal(format!("failed to allocate a serviceIP: {e}"))
                })?
            }
        };
        if !dry_run {
            out.ips_allocated.push(ip);
        }
        if i < result.len() {
            result[i] = ip.to_string();
        } else {
            result.push(ip.to_string());
        }
    }
    let s = spec_mut(svc);
    s.cluster_ip = result.first().cloned();
    s.cluster_ips = Some(result);
    Ok(())
}

fn port_err(path: Path, port: i32, e: &PortAllocError) -> ServiceError {
    ServiceError::Invalid(vec![FieldError::invalid(&path, port, e.to_string())])
}

fn alloc_port(
    np: &mut NodePortAllocator,
    port: i32,
    path: Path,
    dry_run: bool,
    out: &mut Allocation,
) -> Result<(), ServiceError> {
    let p = u16::try_from(port).map_err(|_| {
        port_err(
            path.clone(),
            port,
            &PortAllocError::NotInRange { range: np.range() },
        )
    })?;
    let r = if dry_run {
        np.dry_run_allocate(p)
    } else {
        np.allocate(p)
    };
    r.map_err(|e| port_err(path, port, &e))?;
    if !dry_run {
        out.ports_allocated.push(p);
    }
    Ok(())
}

fn alloc_next_port(
    np: &mut NodePortAllocator,
    dry_run: bool,
    out: &mut Allocation,
) -> Result<i32, ServiceError> {
    let r = if dry_run {
        np.dry_run_allocate_next()
    } else {
        np.allocate_next()
    };
    let p = r.map_err(|e| ServiceError::Internal(format!("failed to allocate a nodePort: {e}")))?;
    if !dry_run {
        out.ports_allocated.push(p);
    }
    Ok(i32::from(p))
}

/// `initNodePorts` (create): ports with the same port number share one NodePort.
fn init_node_ports(
    svc: &mut Service,
    np: &mut NodePortAllocator,
    dry_run: bool,
    out: &mut Allocation,
) -> Result<(), ServiceError> {
    let should = should_allocate_node_ports(svc);
    let snapshot: Vec<ServicePort> = ports(svc).to_vec();
    let mut by_port: BTreeMap<i32, i32> = BTreeMap::new();
    for i in 0..snapshot.len() {
        let sp_path = Path::new("spec").child("ports").index(i).child("nodePort");
        let current = spec(svc).ports.as_ref().expect("ports")[i].clone();
        let node_port = current.node_port.unwrap_or(0);
        if node_port == 0 && !should {
            continue;
        }
        match by_port.get(&current.port).copied() {
            None => {
                let requested = snapshot[i..]
                    .iter()
                    .find(|p| p.port == current.port && p.node_port.unwrap_or(0) != 0)
                    .and_then(|p| p.node_port);
                let chosen = match requested {
                    Some(n) => {
                        alloc_port(np, n, sp_path, dry_run, out)?;
                        n
                    }
                    None => alloc_next_port(np, dry_run, out)?,
                };
                spec_mut(svc).ports.as_mut().expect("ports")[i].node_port = Some(chosen);
                by_port.insert(current.port, chosen);
            }
            Some(allocated) if node_port != allocated => {
                if node_port == 0 {
                    spec_mut(svc).ports.as_mut().expect("ports")[i].node_port = Some(allocated);
                } else {
                    alloc_port(np, node_port, sp_path, dry_run, out)?;
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn node_port_numbers(svc: &Service) -> Vec<i32> {
    ports(svc)
        .iter()
        .filter_map(|p| p.node_port.filter(|&n| n != 0))
        .collect()
}

/// `updateNodePorts`.
fn update_node_ports(
    new: &mut Service,
    old: &Service,
    np: &mut NodePortAllocator,
    dry_run: bool,
    out: &mut Allocation,
) -> Result<(), ServiceError> {
    let old_numbers = node_port_numbers(old);
    let should = should_allocate_node_ports(new);
    let mut taken: BTreeSet<i32> = BTreeSet::new();
    let mut seen: BTreeSet<(String, i32)> = BTreeSet::new();
    let count = ports(new).len();
    for i in 0..count {
        let p = ports(new)[i].clone();
        let n = p.node_port.unwrap_or(0);
        if n == 0 && !should {
            continue;
        }
        let chosen = if n != 0 {
            if !old_numbers.contains(&n) && !taken.contains(&n) {
                alloc_port(
                    np,
                    n,
                    Path::new("spec").child("ports").index(i).child("nodePort"),
                    dry_run,
                    out,
                )?;
                taken.insert(n);
            }
            n
        } else {
            let n = alloc_next_port(np, dry_run, out)?;
            spec_mut(new).ports.as_mut().expect("ports")[i].node_port = Some(n);
            n
        };
        if !seen.insert((p.protocol.clone().unwrap_or_default(), chosen)) {
            return Err(ServiceError::Internal(format!(
                "duplicate nodePort: {{{} {chosen}}}",
                p.protocol.unwrap_or_default()
            )));
        }
    }
    let new_numbers = node_port_numbers(new);
    for n in old_numbers {
        if !new_numbers.contains(&n)
            && let Ok(p) = u16::try_from(n)
        {
            out.ports_released.push(p);
        }
    }
    Ok(())
}

/// `allocHealthCheckNodePort`: its failures are 500s (`errors.NewInternalError`) upstream.
fn alloc_health_check(
    svc: &mut Service,
    np: &mut NodePortAllocator,
    dry_run: bool,
    out: &mut Allocation,
) -> Result<(), ServiceError> {
    if !needs_health_check_node_port(svc) {
        return Ok(());
    }
    match spec(svc).health_check_node_port.filter(|&n| n != 0) {
        Some(n) => {
            let r = match u16::try_from(n) {
                Ok(p) if dry_run => np.dry_run_allocate(p).map(|()| p),
                Ok(p) => np.allocate(p).map(|()| p),
                Err(_) => Err(PortAllocError::NotInRange { range: np.range() }),
            };
            let p = r.map_err(|e| {
                ServiceError::Internal(format!(
                    "failed to allocate requested HealthCheck NodePort {n}: {e}"
                ))
            })?;
            if !dry_run {
                out.ports_allocated.push(p);
            }
            Ok(())
        }
        None => {
            let r = if dry_run {
                np.dry_run_allocate_next()
            } else {
                np.allocate_next()
            };
            // Upstream prints the port variable, which is 0 when the allocation failed.
            let p = r.map_err(|e| {
                ServiceError::Internal(format!("failed to allocate a HealthCheck NodePort 0: {e}"))
            })?;
            if !dry_run {
                out.ports_allocated.push(p);
            }
            spec_mut(svc).health_check_node_port = Some(i32::from(p));
            Ok(())
        }
    }
}

/// `beginCreate` of the Service registry: normalize `clusterIP`/`clusterIPs`, run
/// `initIPFamilyFields`, allocate ClusterIPs (all families or none) and NodePorts. On error
/// nothing stays allocated.
pub fn begin_create(
    svc: &mut Service,
    ips: &mut ServiceIpAllocators,
    np: &mut NodePortAllocator,
    dry_run: bool,
) -> Result<Allocation, ServiceError> {
    normalize_cluster_ips(svc, None);
    let cluster = ips.families();
    init_ip_family_fields(svc, None, &cluster)?;
    let mut out = Allocation::default();
    let result = (|| {
        if needs_cluster_ip(svc) && !is_headless(svc) {
            alloc_cluster_ips(svc, 0, ips, dry_run, &mut out)?;
        }
        if needs_node_port(svc) {
            init_node_ports(svc, np, dry_run, &mut out)?;
        }
        alloc_health_check(svc, np, dry_run, &mut out)
    })();
    match result {
        Ok(()) => Ok(out),
        Err(e) => {
            out.rollback(ips, np);
            Err(e)
        }
    }
}

/// `beginUpdate`: keep allocated values the client omitted, normalize, `initIPFamilyFields`, then
/// allocate what an upgrade needs and plan what a downgrade or type change releases (released
/// only after the write commits). `old` must have been through [`default_on_read`].
pub fn begin_update(
    new: &mut Service,
    old: &Service,
    ips: &mut ServiceIpAllocators,
    np: &mut NodePortAllocator,
    dry_run: bool,
) -> Result<Allocation, ServiceError> {
    patch_allocated_values(new, old);
    normalize_cluster_ips(new, Some(old));
    let cluster = ips.families();
    init_ip_family_fields(new, Some(old), &cluster)?;
    let mut out = Allocation::default();
    let result = (|| {
        let old_ips: Vec<IpAddr> = cluster_ips(old)
            .iter()
            .filter_map(|s| parse_ip(s))
            .collect();
        if !needs_cluster_ip(old) && needs_cluster_ip(new) {
            // A: from ExternalName — allocate everything, as a create.
            if !is_headless(new) {
                alloc_cluster_ips(new, 0, ips, dry_run, &mut out)?;
            }
        } else if is_headless(old) {
            // Headless services never allocate.
        } else if needs_cluster_ip(old) && !needs_cluster_ip(new) {
            // B: to ExternalName — release everything at commit.
            out.ips_released.extend(old_ips);
        } else if families(old).len() == 1 && families(new).len() == 2 {
            // C: upgrade — allocate the secondary only.
            alloc_cluster_ips(new, 1, ips, dry_run, &mut out)?;
        } else if families(old).len() == 2 && families(new).len() == 1 {
            // D: downgrade — release the secondary at commit.
            if let Some(ip) = cluster_ips(old).get(1).and_then(|s| parse_ip(s)) {
                out.ips_released.push(ip);
            }
        }
        // txnUpdateNodePorts: leaving NodePort/LoadBalancer gives back every old NodePort (the
        // new object still lists them here; prepare_for_update drops them), and the NodePort
        // types go through updateNodePorts.
        if needs_node_port(old) && matches!(ty(new), TYPE_EXTERNAL_NAME | TYPE_CLUSTER_IP) {
            out.ports_released.extend(
                node_port_numbers(old)
                    .into_iter()
                    .filter_map(|n| u16::try_from(n).ok()),
            );
        }
        if needs_node_port(new) {
            update_node_ports(new, old, np, dry_run, &mut out)?;
        }
        // updateHealthCheckNodePort: allocate when it becomes needed, give back when it no
        // longer is (a change while needed is refused by validate_update).
        match (
            needs_health_check_node_port(old),
            needs_health_check_node_port(new),
        ) {
            (false, true) => alloc_health_check(new, np, dry_run, &mut out)?,
            (true, false) => {
                if let Some(p) = spec(old)
                    .health_check_node_port
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|&p| p != 0)
                {
                    out.ports_released.push(p);
                }
            }
            _ => {}
        }
        out.ports_released.sort_unstable();
        out.ports_released.dedup();
        Ok(())
    })();
    match result {
        Ok(()) => Ok(out),
        Err(e) => {
            out.rollback(ips, np);
            Err(e)
        }
    }
}

/// What a delete gives back: every ClusterIP of a configured family and every NodePort.
pub fn release_on_delete(svc: &Service) -> Allocation {
    let mut out = Allocation::default();
    if needs_cluster_ip(svc) {
        out.ips_released = cluster_ips(svc)
            .iter()
            .filter_map(|s| parse_ip(s))
            .collect();
    }
    out.ports_released = node_port_numbers(svc)
        .into_iter()
        .chain(spec(svc).health_check_node_port.filter(|&n| n != 0))
        .filter_map(|n| u16::try_from(n).ok())
        .collect();
    out
}

#[cfg(test)]
mod tests;
