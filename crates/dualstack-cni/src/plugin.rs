//! Our CNI plugin, `type: dualstack` (run as `dualstack cni`, or as `/opt/cni/bin/dualstack`
//! with `CNI_COMMAND` set and no arguments): a bridge per node, a veth per pod, one address
//! per family from the node's podCIDRs.
//!
//! The plugin runs in the node's network namespace (the spec says the runtime runs it there).
//! - ADD: addresses from the IPAM store ([`crate::store`], locked); the bridge (created if
//!   missing, up) gets the gateway (first host address) of each range, IPv6 with IFA_F_NODAD;
//!   one netlink request creates the veth pair: the host end `veth<hash>` attached to the
//!   bridge, the peer directly in `CNI_NETNS` named `CNI_IFNAME`, both up, MACs derived from
//!   the attachment. In the pod: `accept_dad=0` on the interface, `lo` up, the addresses (IPv6
//!   with NODAD, so usable at once) and a default route per family via the gateway. A repeated
//!   ADD of the same attachment gets the same addresses and result; any failure undoes the
//!   veth and the allocation.
//! - DEL: deletes the host end (the kernel deletes the peer with it) and frees the attachment's
//!   addresses. Missing netns, veth or allocation are fine.
//! - CHECK: the `prevResult`'s addresses are reserved for the attachment and on the pod's
//!   interface, its routes are in the pod's main table, the host end is on the bridge.
//! - GC (1.1): frees addresses of attachments not in `cni.dev/valid-attachments`.
//! - STATUS (1.1): error 50 when a range has no free address.
//! - VERSION.
//!
//! Failures are the spec's error JSON on stdout with a non-zero exit; [`run`] returns what to
//! print and the binary prints it. Codes: 1 version, 3 netns missing (ADD/CHECK), 4
//! environment, 6 undecodable stdin, 7 invalid configuration, 11 no free address (it clears
//! when a pod of the node is deleted; the spec has no dedicated code), 999 (libcni's
//! `ErrInternal`) kernel refusals and CHECK mismatches.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use dualstack_host::netlink::{Netlink, NetlinkError, VethSpec};
use dualstack_host::{netns, sysctl};
use futures::future::try_join_all;
use ipnet::IpNet;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::conf::DualstackConf;
use crate::ipam::{self, IpamError, Range};
use crate::store::{Store, StoreError};
use crate::types::{
    self, CNI_VERSION, CniErrorResult, CniResult, ErrorCode, Interface, IpConfig, NetConf,
    RouteConfig, VersionResult,
};

/// What the binary prints on stdout, and whether it exits with success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The JSON to print (empty for DEL, CHECK, GC, STATUS successes).
    pub stdout: String,
    /// Exit code 0 when true, 1 otherwise.
    pub success: bool,
}

fn error(code: ErrorCode, msg: impl Into<String>, details: impl ToString) -> CniErrorResult {
    CniErrorResult::new(code, msg, details.to_string())
}

fn netlink_error(e: NetlinkError) -> CniErrorResult {
    error(ErrorCode::Internal, "netlink request failed", e)
}

fn store_error(e: StoreError) -> CniErrorResult {
    match e {
        StoreError::Ipam(IpamError::Exhausted(_)) => {
            error(ErrorCode::TryAgainLater, e.to_string(), "")
        }
        StoreError::Ipam(other) => error(
            ErrorCode::InvalidNetworkConfig,
            "invalid network config",
            other,
        ),
        StoreError::Io { .. } => error(ErrorCode::IoFailure, "IPAM store failure", e),
    }
}

/// The spec's rule for `CNI_IFNAME` (libcni's `ValidateInterfaceName`): 1–15 bytes, not `.`
/// or `..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > 15 {
        return Err(format!(
            "interface name {name:?} is longer than 15 characters"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not a valid name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "interface name {name:?} contains /, : or whitespace"
        ));
    }
    Ok(())
}

/// The host end's name of the attachment: `veth` and 10 hex digits of a hash of container id
/// and interface name (stable, so DEL finds it without the netns).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let d = Sha256::new()
        .chain_update(container_id)
        .chain_update([0u8])
        .chain_update(ifname)
        .finalize();
    let hex: String = d[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("veth{hex}")
}

/// A stable, locally administered unicast MAC derived from `parts`.
fn derived_mac(parts: &[&str]) -> [u8; 6] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&d[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn default_route(v4: bool) -> IpNet {
    if v4 {
        IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0).unwrap_or_default()
    } else {
        IpNet::new(Ipv6Addr::UNSPECIFIED.into(), 0).unwrap_or_default()
    }
}

/// The parameters of one invocation.
struct Request {
    command: String,
    container_id: String,
    netns: Option<PathBuf>,
    ifname: String,
    net: NetConf,
    raw: Value,
    conf: DualstackConf,
    ranges: Vec<Range>,
}

/// Runs one plugin invocation: `env` looks up the environment (`CNI_*`), `stdin` is the
/// request configuration.
pub fn run(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    match dispatch(env, stdin) {
        Ok(Some(v)) => Outcome {
            stdout: v.to_string(),
            success: true,
        },
        Ok(None) => Outcome {
            stdout: String::new(),
            success: true,
        },
        Err(e) => Outcome {
            stdout: serde_json::to_string(&e).unwrap_or_default(),
            success: false,
        },
    }
}

fn dispatch(
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<Value>, CniErrorResult> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let command = get("CNI_COMMAND").ok_or_else(|| {
        error(
            ErrorCode::InvalidEnvironment,
            "required env variables [CNI_COMMAND] missing",
            "",
        )
    })?;
    if command == "VERSION" {
        let version = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| {
                v.get("cniVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| CNI_VERSION.to_string());
        return Ok(Some(
            serde_json::to_value(VersionResult::ours(&version)).unwrap_or(Value::Null),
        ));
    }
    let required: &[&str] = match command.as_str() {
        "ADD" | "CHECK" => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
        "DEL" => &["CNI_CONTAINERID", "CNI_IFNAME"],
        "GC" | "STATUS" => &[],
        other => {
            return Err(error(
                ErrorCode::InvalidEnvironment,
                format!("unknown CNI_COMMAND: {other}"),
                "",
            ));
        }
    };
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| get(k).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(error(
            ErrorCode::InvalidEnvironment,
            format!("required env variables [{}] missing", missing.join(",")),
            "",
        ));
    }
    let container_id = get("CNI_CONTAINERID").unwrap_or_default();
    let ifname = get("CNI_IFNAME").unwrap_or_default();
    if required.contains(&"CNI_CONTAINERID") && !types::valid_identifier(&container_id) {
        return Err(error(
            ErrorCode::InvalidEnvironment,
            "invalid characters in containerID",
            format!("CNI_CONTAINERID={container_id:?}"),
        ));
    }
    if required.contains(&"CNI_IFNAME") {
        validate_ifname(&ifname)
            .map_err(|e| error(ErrorCode::InvalidEnvironment, "invalid CNI_IFNAME", e))?;
    }
    if let Some(args) = get("CNI_ARGS")
        && types::parse_cni_args(&args).is_none()
    {
        return Err(error(
            ErrorCode::InvalidEnvironment,
            "invalid CNI_ARGS",
            format!("CNI_ARGS={args:?}"),
        ));
    }

    let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
        error(
            ErrorCode::DecodingFailure,
            "failed to decode network config",
            e,
        )
    })?;
    let net: NetConf = serde_json::from_value(raw.clone()).map_err(|e| {
        error(
            ErrorCode::DecodingFailure,
            "failed to decode network config",
            e,
        )
    })?;
    let version = net.cni_version.clone();
    let with_version = |mut e: CniErrorResult| {
        if types::is_supported(&version) {
            e.cni_version.clone_from(&version);
        }
        e
    };
    if !types::is_supported(&version) {
        return Err(error(
            ErrorCode::IncompatibleVersion,
            "incompatible CNI versions",
            format!(
                "config is {version:?}, plugin supports {:?}",
                types::SUPPORTED_VERSIONS
            ),
        ));
    }
    let req = parse_request(
        command,
        container_id,
        get("CNI_NETNS").map(PathBuf::from),
        ifname,
        net,
        raw,
    )
    .map_err(with_version)?;
    execute(&req).map_err(with_version)
}

fn parse_request(
    command: String,
    container_id: String,
    netns: Option<PathBuf>,
    ifname: String,
    net: NetConf,
    raw: Value,
) -> Result<Request, CniErrorResult> {
    let invalid = |d: String| error(ErrorCode::InvalidNetworkConfig, "invalid network config", d);
    if !types::valid_identifier(&net.name) {
        return Err(invalid(format!("invalid network name {:?}", net.name)));
    }
    let conf: DualstackConf =
        serde_json::from_value(raw.clone()).map_err(|e| invalid(e.to_string()))?;
    validate_ifname(&conf.bridge).map_err(|e| invalid(format!("bridge: {e}")))?;
    if !(68..=65535).contains(&conf.mtu) {
        return Err(invalid(format!("mtu {} is outside 68..65535", conf.mtu)));
    }
    let ranges = ipam::ranges(&conf.ranges).map_err(|e| invalid(e.to_string()))?;
    Ok(Request {
        command,
        container_id,
        netns,
        ifname,
        net,
        raw,
        conf,
        ranges,
    })
}

fn execute(req: &Request) -> Result<Option<Value>, CniErrorResult> {
    match req.command.as_str() {
        "GC" => gc(req).map(|()| None),
        "STATUS" => status(req).map(|()| None),
        _ => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| error(ErrorCode::Internal, "failed to start runtime", e))?;
            rt.block_on(async {
                match req.command.as_str() {
                    "ADD" => add(req).await.map(Some),
                    "DEL" => del(req).await.map(|()| None),
                    _ => check(req).await.map(|()| None),
                }
            })
        }
    }
}

fn store(req: &Request) -> Store {
    Store::new(&req.conf.data_dir, &req.net.name)
}

async fn add(req: &Request) -> Result<Value, CniErrorResult> {
    let netns_path = req.netns.as_deref().unwrap_or(Path::new(""));
    let ns = netns::open(netns_path).map_err(|e| {
        error(
            ErrorCode::UnknownContainer,
            "failed to open the container's netns",
            e,
        )
    })?;
    let store = store(req);
    let ips = store
        .allocate(&req.ranges, &req.container_id, &req.ifname)
        .map_err(store_error)?;
    match setup(req, &ns, netns_path, &ips).await {
        Ok(result) => {
            let result = match &req.net.prev_result {
                Some(prev) => merge(prev.clone(), result),
                None => result,
            };
            Ok(result.to_json_for(&req.net.cni_version))
        }
        Err(e) => {
            // Undo: the pair (if we made it) and the addresses.
            if let Ok(nl) = Netlink::connect() {
                let _ = nl
                    .delete_link(&host_veth_name(&req.container_id, &req.ifname))
                    .await;
            }
            let _ = store.release(&req.container_id, &req.ifname);
            Err(e)
        }
    }
}

/// A chained ADD: our interfaces, addresses and routes appended to the previous result.
fn merge(mut prev: CniResult, ours: CniResult) -> CniResult {
    let offset = prev.interfaces.len();
    prev.interfaces.extend(ours.interfaces);
    prev.ips.extend(ours.ips.into_iter().map(|mut ip| {
        ip.interface = ip.interface.map(|i| i + offset);
        ip
    }));
    prev.routes.extend(ours.routes);
    prev
}

async fn setup(
    req: &Request,
    ns: &std::fs::File,
    netns_path: &Path,
    ips: &[IpAddr],
) -> Result<CniResult, CniErrorResult> {
    let conf = &req.conf;
    let nl = Netlink::connect().map_err(netlink_error)?;
    let bridge_mac = derived_mac(&["bridge", &conf.bridge]);
    let br = nl
        .ensure_bridge(&conf.bridge, bridge_mac, conf.mtu)
        .await
        .map_err(netlink_error)?;
    // Requests of one step go out together: the kernel handles them in order, we wait once.
    try_join_all(
        req.ranges
            .iter()
            .map(|r| nl.add_address(br, r.with_prefix(r.gateway), true)),
    )
    .await
    .map_err(netlink_error)?;
    enable_forwarding(&req.ranges)?;

    let host_name = host_veth_name(&req.container_id, &req.ifname);
    let host_mac = derived_mac(&["host", &req.container_id, &req.ifname]);
    let pod_mac = derived_mac(&["pod", &req.container_id, &req.ifname]);
    let created = nl
        .add_veth(&VethSpec {
            host_name: &host_name,
            host_mac,
            master: br,
            peer_name: &req.ifname,
            peer_mac: pod_mac,
            peer_netns: ns,
            mtu: conf.mtu,
        })
        .await
        .map_err(netlink_error)?;
    // Hairpin (kubelet's `hairpin-veth`): a pod reaching its own Service gets its packets
    // back through the port they came in on.
    if let Some(host) = nl.link_by_name(&host_name).await.map_err(netlink_error)? {
        nl.set_hairpin(host.index, true)
            .await
            .map_err(netlink_error)?;
    }
    if !created {
        // A repeated ADD finds our own pair; anything else is a name clash.
        match nl.link_by_name(&host_name).await.map_err(netlink_error)? {
            Some(host) if host.master == Some(br) => {}
            _ => {
                return Err(error(
                    ErrorCode::Internal,
                    format!("container already has an interface named {}", req.ifname),
                    format!("or the host already has a link named {host_name}"),
                ));
            }
        }
    }

    let has_v6 = req.ranges.iter().any(|r| !r.is_ipv4());
    let ifname = req.ifname.clone();
    let (pnl, dad) = Netlink::connect_in_with(netns_path, move || {
        if has_v6 {
            sysctl::write_net(&["ipv6", "conf", &ifname, "accept_dad"], "0")
        } else {
            Ok(())
        }
    })
    .map_err(|e| {
        error(
            ErrorCode::UnknownContainer,
            "failed to enter the container's netns",
            e,
        )
    })?;
    dad.map_err(|e| {
        error(
            ErrorCode::Internal,
            "failed to set accept_dad=0 in the container",
            e,
        )
    })?;
    // lo is always index 1.
    let (_, pod) =
        futures::try_join!(pnl.set_up(1), pnl.link_by_name(&req.ifname)).map_err(netlink_error)?;
    let pod = pod.ok_or_else(|| {
        error(
            ErrorCode::Internal,
            format!("{} missing in the container after creation", req.ifname),
            "",
        )
    })?;
    if !pod.up {
        pnl.set_up(pod.index).await.map_err(netlink_error)?;
    }
    let mut result = CniResult {
        cni_version: req.net.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                mac: mac_string(bridge_mac),
                ..Interface::default()
            },
            Interface {
                name: host_name,
                mac: mac_string(host_mac),
                ..Interface::default()
            },
            Interface {
                name: req.ifname.clone(),
                mac: mac_string(pod.mac.unwrap_or(pod_mac)),
                mtu: None,
                sandbox: Some(netns_path.display().to_string()),
            },
        ],
        ..CniResult::default()
    };
    for (r, ip) in req.ranges.iter().zip(ips) {
        result.ips.push(IpConfig {
            address: r.with_prefix(*ip),
            gateway: Some(r.gateway),
            interface: Some(2),
        });
        result.routes.push(RouteConfig {
            dst: default_route(r.is_ipv4()),
            gw: Some(r.gateway),
        });
    }
    // Addresses first: a route's gateway must be on a connected subnet.
    try_join_all(
        result
            .ips
            .iter()
            .map(|ip| pnl.add_address(pod.index, ip.address, true)),
    )
    .await
    .map_err(netlink_error)?;
    try_join_all(
        req.ranges
            .iter()
            .zip(&result.routes)
            .map(|(r, route)| pnl.add_route(route.dst, r.gateway, Some(pod.index))),
    )
    .await
    .map_err(netlink_error)?;
    if let Some(dns) = &req.net.dns {
        result.dns = dns.clone();
    }
    Ok(result)
}

/// The node forwards between pods and the outside (both families); set only when not yet set,
/// since writing IPv6 `all.forwarding` walks every device.
fn enable_forwarding(ranges: &[Range]) -> Result<(), CniErrorResult> {
    for r in ranges {
        let key: &[&str] = if r.is_ipv4() {
            &["ipv4", "ip_forward"]
        } else {
            &["ipv6", "conf", "all", "forwarding"]
        };
        if sysctl::read_net(key).ok().as_deref() != Some("1") {
            sysctl::write_net(key, "1").map_err(|e| {
                error(
                    ErrorCode::Internal,
                    format!("failed to enable net.{}", key.join(".")),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

async fn del(req: &Request) -> Result<(), CniErrorResult> {
    let nl = Netlink::connect().map_err(netlink_error)?;
    nl.delete_link(&host_veth_name(&req.container_id, &req.ifname))
        .await
        .map_err(netlink_error)?;
    store(req)
        .release(&req.container_id, &req.ifname)
        .map_err(store_error)?;
    Ok(())
}

async fn check(req: &Request) -> Result<(), CniErrorResult> {
    if types::version_less(&req.net.cni_version, "0.4.0") {
        return Err(error(
            ErrorCode::IncompatibleVersion,
            "config version does not allow CHECK",
            "",
        ));
    }
    let prev = req.net.prev_result.as_ref().ok_or_else(|| {
        error(
            ErrorCode::InvalidNetworkConfig,
            "required prevResult missing",
            "",
        )
    })?;
    let netns_path = req.netns.as_deref().unwrap_or(Path::new(""));
    if !netns::exists(netns_path) {
        return Err(error(
            ErrorCode::UnknownContainer,
            "the container's netns does not exist",
            netns_path.display(),
        ));
    }
    let failed = |msg: String| error(ErrorCode::Internal, "CHECK failed", msg);

    let held: HashSet<IpAddr> = store(req)
        .allocations()
        .map_err(store_error)?
        .into_iter()
        .filter(|a| a.container_id == req.container_id && a.ifname == req.ifname)
        .map(|a| a.ip)
        .collect();

    let nl = Netlink::connect().map_err(netlink_error)?;
    let host_name = host_veth_name(&req.container_id, &req.ifname);
    let bridge = nl
        .link_by_name(&req.conf.bridge)
        .await
        .map_err(netlink_error)?;
    let host = nl.link_by_name(&host_name).await.map_err(netlink_error)?;
    match (&bridge, &host) {
        (Some(b), Some(h)) if h.master == Some(b.index) => {}
        _ => {
            return Err(failed(format!(
                "{host_name} is not attached to bridge {}",
                req.conf.bridge
            )));
        }
    }

    let pnl = Netlink::connect_in(netns_path).map_err(netlink_error)?;
    let pod = pnl
        .link_by_name(&req.ifname)
        .await
        .map_err(netlink_error)?
        .ok_or_else(|| {
            failed(format!(
                "no interface {} in {}",
                req.ifname,
                netns_path.display()
            ))
        })?;
    if !pod.up {
        return Err(failed(format!("{} is down", req.ifname)));
    }
    let addrs = pnl.addresses(pod.index).await.map_err(netlink_error)?;
    let ours = |ip: &IpConfig| match ip.interface {
        None => true,
        Some(i) => prev.interfaces.get(i).is_some_and(|itf| {
            itf.name == req.ifname
                && itf
                    .sandbox
                    .as_deref()
                    .is_some_and(|s| Path::new(s) == netns_path)
        }),
    };
    for ip in prev.ips.iter().filter(|ip| ours(ip)) {
        if !req.ranges.iter().any(|r| r.contains(ip.address.addr())) {
            continue; // not one of ours (another plugin's)
        }
        if !held.contains(&ip.address.addr()) {
            return Err(failed(format!(
                "{} is not reserved for {}/{}",
                ip.address.addr(),
                req.container_id,
                req.ifname
            )));
        }
        if !addrs.iter().any(|a| a.net == ip.address) {
            return Err(failed(format!(
                "address {} missing on {}",
                ip.address, req.ifname
            )));
        }
    }
    for v6 in [false, true] {
        let wanted: Vec<&RouteConfig> = prev
            .routes
            .iter()
            .filter(|r| r.dst.addr().is_ipv6() == v6)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let have = pnl.routes(v6).await.map_err(netlink_error)?;
        for w in wanted {
            let gw = w.gw.or_else(|| {
                prev.ips
                    .iter()
                    .find(|ip| ip.address.addr().is_ipv6() == v6)
                    .and_then(|ip| ip.gateway)
            });
            if !have
                .iter()
                .any(|h| h.dst == w.dst && (gw.is_none() || h.gateway == gw))
            {
                let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
                return Err(failed(format!(
                    "route {}{via} missing in {}",
                    w.dst,
                    netns_path.display()
                )));
            }
        }
    }
    Ok(())
}

fn gc(req: &Request) -> Result<(), CniErrorResult> {
    let mut valid = HashSet::new();
    if let Some(Value::Array(list)) = req.raw.get("cni.dev/valid-attachments") {
        for a in list {
            let id = a.get("containerID").and_then(Value::as_str);
            let ifname = a.get("ifname").and_then(Value::as_str);
            if let (Some(id), Some(ifname)) = (id, ifname) {
                valid.insert((id.to_string(), ifname.to_string()));
            }
        }
    }
    store(req).release_all_but(&valid).map_err(store_error)?;
    Ok(())
}

fn status(req: &Request) -> Result<(), CniErrorResult> {
    match store(req).exhausted(&req.ranges).map_err(store_error)? {
        Some(e) => Err(CniErrorResult {
            cni_version: CNI_VERSION.to_string(),
            code: 50,
            msg: "plugin not available".into(),
            details: e.to_string(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn err_of(o: &Outcome) -> CniErrorResult {
        assert!(!o.success, "{o:?}");
        serde_json::from_str(&o.stdout).unwrap()
    }

    #[test]
    fn version_answers_with_the_requested_version() {
        let o = run(
            &env_of(&[("CNI_COMMAND", "VERSION")]),
            br#"{"cniVersion":"0.4.0"}"#,
        );
        assert!(o.success);
        let v: VersionResult = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v, VersionResult::ours("0.4.0"));
        let o = run(&env_of(&[("CNI_COMMAND", "VERSION")]), b"");
        assert_eq!(
            serde_json::from_str::<VersionResult>(&o.stdout)
                .unwrap()
                .cni_version,
            "1.0.0"
        );
    }

    #[test]
    fn environment_and_config_errors_have_the_spec_codes() {
        let conf =
            br#"{"cniVersion":"1.0.0","name":"n","type":"dualstack","ranges":["10.0.0.0/24"]}"#;
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/nonexistent"),
            ("CNI_IFNAME", "eth0"),
        ];
        // (environment, stdin, code, msg)
        type Row<'a> = (Vec<(&'a str, &'a str)>, &'a [u8], u32, &'a str);
        let rows: Vec<Row> = vec![
            (vec![], conf, 4, "required env variables [CNI_COMMAND] missing"),
            (vec![("CNI_COMMAND", "FLY")], conf, 4, "unknown CNI_COMMAND: FLY"),
            (vec![("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")], conf, 4, "required env variables [CNI_CONTAINERID,CNI_NETNS] missing"),
            (vec![("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "-x"), ("CNI_IFNAME", "eth0")], conf, 4, "invalid characters in containerID"),
            (vec![("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "a/b")], conf, 4, "invalid CNI_IFNAME"),
            (full.to_vec(), b"{not json", 6, "failed to decode network config"),
            (full.to_vec(), br#"{"cniVersion":"2.0.0","name":"n","type":"dualstack","ranges":["10.0.0.0/24"]}"#, 1, "incompatible CNI versions"),
            (full.to_vec(), br#"{"cniVersion":"1.0.0","name":"n","type":"dualstack","ranges":["10.0.0.0/24","10.1.0.0/24"]}"#, 7, "invalid network config"),
            (full.to_vec(), br#"{"cniVersion":"1.0.0","name":"n","type":"dualstack","ranges":["10.0.0.0/31"]}"#, 7, "invalid network config"),
            (full.to_vec(), br#"{"cniVersion":"1.0.0","name":"n","type":"dualstack"}"#, 7, "invalid network config"),
            (full.to_vec(), conf, 3, "failed to open the container's netns"),
        ];
        for (env, stdin, code, msg) in rows {
            let e = err_of(&run(&env_of(&env), stdin));
            assert_eq!((e.code, e.msg.as_str()), (code, msg), "{env:?}: {e:?}");
        }
    }

    #[test]
    fn gc_frees_stale_attachments_and_status_reports_exhaustion() {
        let dir = tempfile::tempdir().unwrap();
        let conf = serde_json::json!({
            "cniVersion": "1.1.0", "name": "n", "type": "dualstack",
            "ranges": ["10.0.0.0/30"], "dataDir": dir.path()
        });
        let store = Store::new(dir.path(), "n");
        let ranges = ipam::ranges(&["10.0.0.0/30".parse().unwrap()]).unwrap();
        store.allocate(&ranges, "old", "eth0").unwrap();

        let status = run(
            &env_of(&[("CNI_COMMAND", "STATUS")]),
            conf.to_string().as_bytes(),
        );
        let e = err_of(&status);
        assert_eq!((e.code, e.cni_version.as_str()), (50, "1.1.0"));

        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] =
            serde_json::json!([{"containerID": "live", "ifname": "eth0"}]);
        let o = run(
            &env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")]),
            gc.to_string().as_bytes(),
        );
        assert_eq!(
            o,
            Outcome {
                stdout: String::new(),
                success: true
            }
        );
        assert!(store.allocations().unwrap().is_empty());
        assert!(
            run(
                &env_of(&[("CNI_COMMAND", "STATUS")]),
                conf.to_string().as_bytes()
            )
            .success
        );
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        for (n, ok) in [
            ("eth0", true),
            ("a23456789012345", true),
            ("a234567890123456", false),
            ("", false),
            ("..", false),
            ("a b", false),
            ("a:b", false),
        ] {
            assert_eq!(validate_ifname(n).is_ok(), ok, "{n}");
        }
    }

    #[test]
    fn host_names_and_macs_are_stable_and_valid() {
        let n = host_veth_name("abc", "eth0");
        assert_eq!(n, host_veth_name("abc", "eth0"));
        assert_ne!(n, host_veth_name("abc", "eth1"));
        assert!(n.len() <= 15 && n.starts_with("veth"));
        let m = derived_mac(&["pod", "abc", "eth0"]);
        assert_eq!(m[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(mac_string([2, 0xab, 0, 1, 2, 3]), "02:ab:00:01:02:03");
    }

    #[test]
    fn a_chained_add_appends_to_the_previous_result() {
        let prev: CniResult = serde_json::from_value(serde_json::json!({
            "cniVersion": "1.0.0", "interfaces": [{"name": "x"}],
            "ips": [{"address": "192.168.0.2/24", "interface": 0}]
        }))
        .unwrap();
        let ours: CniResult = serde_json::from_value(serde_json::json!({
            "cniVersion": "1.0.0", "interfaces": [{"name": "ds0"}, {"name": "v"}, {"name": "eth0", "sandbox": "/n"}],
            "ips": [{"address": "10.0.0.2/24", "interface": 2}]
        }))
        .unwrap();
        let m = merge(prev, ours);
        assert_eq!(m.interfaces.len(), 4);
        assert_eq!(m.ips[1].interface, Some(3));
        assert_eq!(m.pod_ips(), vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
    }
}
