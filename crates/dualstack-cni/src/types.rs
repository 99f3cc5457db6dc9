//! The CNI specification's JSON (spec 1.0/1.1, `containernetworking/cni:SPEC.md`): network
//! configuration lists, the request configuration a plugin reads on stdin, the ADD result, the
//! error and the VERSION answer. Pure: serde types and small helpers, no I/O.
//!
//! Unknown fields of plugin configurations are kept (`extra`), because a runtime must pass them
//! through unchanged to the plugin.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The version our plugin answers with by default and the runtime writes in its conflist.
pub const CNI_VERSION: &str = "1.0.0";

/// The spec versions our plugin and runtime understand. 0.3.x/0.4.0 results additionally carry
/// `ips[].version`; CHECK exists from 0.4.0, GC and STATUS from 1.1.0.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Whether `v` is one of [`SUPPORTED_VERSIONS`].
pub fn is_supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// `a < b` for dotted versions (`0.4.0 < 1.0.0`); unparsable parts count as 0.
pub fn version_less(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) < parse(b)
}

/// A network configuration list (`*.conflist`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfigList {
    /// The version the list and its plugins conform to.
    pub cni_version: String,
    /// Every version the list supports (spec 1.1); the runtime picks the highest it knows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    /// The network name; also part of cache and IPAM paths.
    pub name: String,
    /// CHECK must not be called for this network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_check: bool,
    /// GC must not be called for this network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_gc: bool,
    /// The plugins, executed in order for ADD and CHECK, in reverse for DEL.
    pub plugins: Vec<PluginConf>,
}

impl NetworkConfigList {
    /// The version to run the list with: the highest of `cniVersion` and `cniVersions` that is
    /// supported, else `cniVersion` as written (the plugin then answers with error 1).
    pub fn selected_version(&self) -> String {
        let mut best: Option<&str> = None;
        for v in std::iter::once(&self.cni_version).chain(&self.cni_versions) {
            if is_supported(v) && best.is_none_or(|b| version_less(b, v)) {
                best = Some(v);
            }
        }
        best.unwrap_or(&self.cni_version).to_string()
    }

    /// Wraps a single-plugin `.conf` file (a plugin configuration with `cniVersion` and `name`
    /// at its top level) into a list, as libcni's `ConfListFromConf` does.
    pub fn from_single(conf: PluginConf) -> Result<Self, String> {
        let name = conf
            .extra
            .get("name")
            .and_then(Value::as_str)
            .ok_or("network config has no name")?
            .to_string();
        let cni_version = conf
            .extra
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or(CNI_VERSION)
            .to_string();
        Ok(Self {
            cni_version,
            cni_versions: Vec::new(),
            name,
            disable_check: false,
            disable_gc: false,
            plugins: vec![conf],
        })
    }
}

/// One plugin configuration object: `type` plus everything else, kept verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginConf {
    /// The plugin executable's name.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// All other keys (`capabilities`, `ipam`, plugin-specific ones), unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PluginConf {
    /// The request configuration for one execution (spec §3, "Deriving request configuration"):
    /// the plugin object with `cniVersion` and `name` inserted, `capabilities` removed,
    /// `runtimeConfig` (only capabilities both declared and provided) and `prevResult` added.
    pub fn request(
        &self,
        cni_version: &str,
        name: &str,
        capability_args: &Map<String, Value>,
        prev_result: Option<&Value>,
    ) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), cni_version.into());
        m.insert("name".into(), name.into());
        m.insert("type".into(), self.plugin_type.clone().into());
        let mut runtime_config = Map::new();
        if let Some(Value::Object(caps)) = self.extra.get("capabilities") {
            for (k, enabled) in caps {
                if enabled == &Value::Bool(true)
                    && let Some(v) = capability_args.get(k)
                {
                    runtime_config.insert(k.clone(), v.clone());
                }
            }
        }
        for (k, v) in &self.extra {
            if matches!(
                k.as_str(),
                "cniVersion" | "name" | "type" | "capabilities" | "runtimeConfig" | "prevResult"
            ) || k.starts_with("cni.dev/")
            {
                continue;
            }
            m.insert(k.clone(), v.clone());
        }
        if !runtime_config.is_empty() {
            m.insert("runtimeConfig".into(), Value::Object(runtime_config));
        }
        if let Some(prev) = prev_result {
            m.insert("prevResult".into(), prev.clone());
        }
        Value::Object(m)
    }
}

/// The part of a request configuration every plugin reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The protocol version selected by the runtime.
    pub cni_version: String,
    /// The network name.
    pub name: String,
    /// The plugin type.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Capability arguments the runtime provided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Map<String, Value>>,
    /// Convention: `args.cni` with extra arguments (CONVENTIONS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Map<String, Value>>,
    /// The previous plugin's result (ADD chains), or the cached ADD result (DEL, CHECK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<CniResult>,
    /// Well-known DNS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

/// An ADD result (spec §5 "ADD Success").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The version of the request.
    pub cni_version: String,
    /// Interfaces created by the attachment, host ones included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// The IPs on sandbox (pod) interfaces, in result order: those whose `interface` index
    /// names an interface with a `sandbox`, and those without an index (an IPAM-style result
    /// that does not say where the address went).
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        self.ips
            .iter()
            .filter(|ip| match ip.interface {
                None => true,
                Some(i) => self
                    .interfaces
                    .get(i)
                    .is_some_and(|itf| itf.sandbox.as_deref().is_some_and(|s| !s.is_empty())),
            })
            .map(|ip| ip.address.addr())
            .collect()
    }

    /// The JSON of this result as a plugin of `version` prints it: before 1.0.0 every IP
    /// carries `version` ("4"/"6").
    pub fn to_json_for(&self, version: &str) -> Value {
        let mut r = self.clone();
        r.cni_version = version.to_string();
        let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
        if version_less(version, "1.0.0")
            && let Some(Value::Array(ips)) = v.get_mut("ips")
        {
            for (ip, cfg) in ips.iter_mut().zip(&self.ips) {
                if let Value::Object(m) = ip {
                    let fam = if cfg.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    m.insert("version".into(), fam.into());
                }
            }
        }
        v
    }
}

/// An interface of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address (`aa:bb:cc:dd:ee:ff`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces in the container; absent or empty on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The address in CIDR notation (`10.244.1.2/24`): address and the subnet's prefix length.
    pub address: IpNet,
    /// The default gateway of the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// Destination in CIDR notation.
    pub dst: IpNet,
    /// Next hop; if unset, the matching `ips[].gateway` may be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings of a configuration or result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The spec's well-known error codes (spec §5 "Error").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// Incompatible CNI version.
    IncompatibleVersion = 1,
    /// Unsupported field in network configuration.
    UnsupportedField = 2,
    /// Container unknown or does not exist.
    UnknownContainer = 3,
    /// Invalid necessary environment variables.
    InvalidEnvironment = 4,
    /// I/O failure.
    IoFailure = 5,
    /// Failed to decode content.
    DecodingFailure = 6,
    /// Invalid network config.
    InvalidNetworkConfig = 7,
    /// Try again later.
    TryAgainLater = 11,
    /// Not defined by the spec: libcni's `ErrInternal`, used by the reference plugins for
    /// everything else (kernel refusals, for example).
    Internal = 999,
}

/// The error a plugin prints on stdout (spec §5 "Error").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniErrorResult {
    /// The protocol version in use.
    pub cni_version: String,
    /// Error code: 1–99 well known ([`ErrorCode`]), 100+ plugin-specific.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// A longer description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniErrorResult {
    /// An error with a well-known code.
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            cni_version: CNI_VERSION.to_string(),
            code: code as u32,
            msg: msg.into(),
            details: details.into(),
        }
    }
}

impl fmt::Display for CniErrorResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{} (code {})", self.msg, self.code)
        } else {
            write!(f, "{}: {} (code {})", self.msg, self.details, self.code)
        }
    }
}

/// The VERSION answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    /// The version of the request.
    pub cni_version: String,
    /// Every version the plugin supports.
    pub supported_versions: Vec<String>,
}

impl VersionResult {
    /// Our plugin's answer to a request of `version`.
    pub fn ours(version: &str) -> Self {
        Self {
            cni_version: version.to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// `CNI_ARGS` as the Kubernetes runtimes set it:
/// `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..`.
pub fn k8s_cni_args(namespace: &str, name: &str, container_id: &str, uid: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};\
         K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}"
    )
}

/// Splits `CNI_ARGS` (`K=V;K=V`) into pairs; `None` when an entry has no `=`.
pub fn parse_cni_args(s: &str) -> Option<Vec<(String, String)>> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The spec's rule for container ids and network names: an alphanumeric first character, then
/// alphanumerics, `_`, `.` or `-`.
pub fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The bridge result of the spec's appendix ("Add example"), with an IPv6 address added.
    fn spec_result() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "veth3243", "mac": "55:44:33:22:11:11"},
                {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
            ],
            "ips": [
                {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2},
                {"address": "fd00:1::5/64", "gateway": "fd00:1::1", "interface": 2}
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:1::1"}],
            "dns": {"nameservers": ["10.1.0.1"]}
        })
    }

    #[test]
    fn a_spec_result_round_trips_unchanged() {
        let r: CniResult = serde_json::from_value(spec_result()).unwrap();
        assert_eq!(r.ips[1].address.to_string(), "fd00:1::5/64");
        assert_eq!(serde_json::to_value(&r).unwrap(), spec_result());
    }

    #[test]
    fn pod_ips_are_the_sandbox_interface_addresses_in_result_order() {
        let mut r: CniResult = serde_json::from_value(spec_result()).unwrap();
        assert_eq!(
            r.pod_ips(),
            vec![
                "10.1.0.5".parse::<IpAddr>().unwrap(),
                "fd00:1::5".parse().unwrap()
            ]
        );
        r.ips[0].interface = Some(0); // on the host bridge: not a pod IP
        assert_eq!(r.pod_ips(), vec!["fd00:1::5".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn results_before_1_0_carry_the_ip_version() {
        let r: CniResult = serde_json::from_value(spec_result()).unwrap();
        let old = r.to_json_for("0.4.0");
        assert_eq!(old["cniVersion"], "0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        assert!(r.to_json_for("1.0.0")["ips"][0].get("version").is_none());
        // and such a result still parses
        let back: CniResult = serde_json::from_value(old).unwrap();
        assert_eq!(back.ips, r.ips);
    }

    #[test]
    fn errors_and_version_answers_have_the_spec_shape() {
        let e = CniErrorResult::new(
            ErrorCode::InvalidNetworkConfig,
            "Invalid Configuration",
            "Network 192.168.0.0/31 too small to allocate from.",
        );
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"cniVersion": "1.0.0", "code": 7, "msg": "Invalid Configuration",
                   "details": "Network 192.168.0.0/31 too small to allocate from."})
        );
        let codes = [
            (ErrorCode::IncompatibleVersion, 1),
            (ErrorCode::UnsupportedField, 2),
            (ErrorCode::UnknownContainer, 3),
            (ErrorCode::InvalidEnvironment, 4),
            (ErrorCode::IoFailure, 5),
            (ErrorCode::DecodingFailure, 6),
            (ErrorCode::InvalidNetworkConfig, 7),
            (ErrorCode::TryAgainLater, 11),
        ];
        for (c, n) in codes {
            assert_eq!(c as u32, n);
        }
        assert_eq!(
            serde_json::to_value(VersionResult::ours("1.0.0")).unwrap(),
            json!({"cniVersion": "1.0.0",
                   "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }

    #[test]
    fn a_request_config_inserts_version_name_runtime_config_and_prev_result() {
        let p: PluginConf = serde_json::from_value(json!({
            "type": "portmap",
            "capabilities": {"portMappings": true, "bandwidth": false},
            "snat": true,
            "cni.dev/internal": 1
        }))
        .unwrap();
        let mut caps = Map::new();
        caps.insert("portMappings".into(), json!([{"hostPort": 80}]));
        caps.insert("bandwidth".into(), json!({"ingressRate": 1}));
        let prev = spec_result();
        let req = p.request("1.0.0", "dbnet", &caps, Some(&prev));
        assert_eq!(
            req,
            json!({
                "cniVersion": "1.0.0", "name": "dbnet", "type": "portmap", "snat": true,
                "runtimeConfig": {"portMappings": [{"hostPort": 80}]},
                "prevResult": prev
            })
        );
        let parsed: NetConf = serde_json::from_value(req).unwrap();
        assert_eq!(parsed.prev_result.unwrap().ips.len(), 2);
    }

    #[test]
    fn a_conflist_round_trips_and_picks_the_highest_supported_version() {
        let v = json!({
            "cniVersion": "0.4.0",
            "cniVersions": ["1.0.0", "9.9.9", "1.1.0"],
            "name": "dbnet",
            "disableCheck": true,
            "plugins": [{"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}}]
        });
        let l: NetworkConfigList = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&l).unwrap(), v);
        assert_eq!(l.selected_version(), "1.1.0");
        assert_eq!(l.plugins[0].extra["bridge"], "cni0");
    }

    #[test]
    fn a_single_plugin_conf_is_wrapped_into_a_list() {
        let p: PluginConf =
            serde_json::from_value(json!({"cniVersion": "0.3.1", "name": "n1", "type": "bridge"}))
                .unwrap();
        let l = NetworkConfigList::from_single(p).unwrap();
        assert_eq!((l.name.as_str(), l.cni_version.as_str()), ("n1", "0.3.1"));
        assert_eq!(l.plugins.len(), 1);
    }

    #[test]
    fn cni_args_and_identifiers_follow_the_spec() {
        let a = k8s_cni_args("default", "web", "abc", "u-1");
        assert_eq!(
            a,
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
        );
        assert_eq!(parse_cni_args(&a).unwrap().len(), 5);
        assert!(parse_cni_args("A=1;B").is_none());
        for (s, ok) in [
            ("abc", true),
            ("a.b_c-1", true),
            ("-a", false),
            ("", false),
            ("a/b", false),
        ] {
            assert_eq!(valid_identifier(s), ok, "{s}");
        }
    }
}
