//! Dual-stack flags of every component, parsed and validated with upstream's rules and texts
//! (`shared/spec/upstream-dual-stack.md` §1).
//!
//! Start with [`ServiceClusterIpRange::parse`] (kube-apiserver `--service-cluster-ip-range`),
//! [`NodeIpamConfig::from_flags`] (kube-controller-manager `--allocate-node-cidrs`,
//! `--cluster-cidr`, `--node-cidr-mask-size*`), [`FeatureGates::parse`] and
//! [`parse_node_ips`] (kubelet `--node-ip`). The binary owns the flags themselves (clap) and turns
//! these errors into exit codes; nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use dualstack_ipam::{CidrSet, IpFamily, PortRange};
use ipnet::IpNet;

use crate::net::{nth_address, parse_cidr_sloppy, parse_ip_sloppy, range_size};

/// Upstream kube-apiserver's default `--service-cluster-ip-range` (`DefaultServiceIPCIDR`);
/// `10.96.0.0/12` is kubeadm's default, not the apiserver's.
pub const DEFAULT_SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";
/// Default `--node-cidr-mask-size-ipv4` (`defaultNodeMaskCIDRIPv4`).
pub const DEFAULT_NODE_CIDR_MASK_SIZE_IPV4: u8 = 24;
/// Default `--node-cidr-mask-size-ipv6` (`defaultNodeMaskCIDRIPv6`).
pub const DEFAULT_NODE_CIDR_MASK_SIZE_IPV6: u8 = 64;
/// Default `--service-node-port-range`.
pub const DEFAULT_SERVICE_NODE_PORT_RANGE: &str = "30000-32767";
/// kube-apiserver's `maxCIDRBits`: an IPv4 service range may have at most 20 host bits (/12).
pub const MAX_SERVICE_CIDR_HOST_BITS_IPV4: u8 = 20;
/// The IPAddress allocator's limit: IPv6 service ranges may be as large as /64.
pub const SHORTEST_IPV6_SERVICE_PREFIX: u8 = 64;

/// A flag value that upstream would refuse, with upstream's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--service-cluster-ip-range` entry 0 does not parse as a CIDR.
    #[error("service-cluster-ip-range[0] is not a valid cidr")]
    ServiceRangePrimaryInvalid,
    /// `--service-cluster-ip-range` entry 1 does not parse as a CIDR.
    #[error("service-cluster-ip-range[1] is not an ip net")]
    ServiceRangeSecondaryInvalid,
    /// The primary service range holds fewer than 8 addresses.
    #[error(
        "error determining service IP ranges for primary service cidr: the service cluster IP range must be at least 8 IP addresses"
    )]
    ServiceRangeTooSmall,
    /// No primary service range at all.
    #[error("--service-cluster-ip-range must contain at least one valid cidr")]
    ServiceRangeMissing,
    /// More than two comma-separated service ranges.
    #[error("--service-cluster-ip-range must not contain more than two entries")]
    ServiceRangeTooManyEntries,
    /// An IPv4 service range with more than 20 host bits; `flag` is the flag name with index.
    #[error("specified {flag} is too large; for 32-bit addresses, the mask must be >= {min_mask}")]
    ServiceRangeTooLarge {
        /// `--service-cluster-ip-range` or `--service-cluster-ip-range[1]`.
        flag: &'static str,
        /// Smallest accepted prefix length.
        min_mask: u8,
    },
    /// An IPv6 service range shorter than /64 (the ServiceCIDR rule).
    #[error("shortest allowed prefix length for service CIDR is 64, got {0}")]
    ServiceRangeIpv6TooLarge(u8),
    /// Both service ranges are of the same family.
    #[error(
        "--service-cluster-ip-range[0] and --service-cluster-ip-range[1] must be of different IP family"
    )]
    ServiceRangeSameFamily,
    /// The advertised (public) address is not of the primary service family.
    #[error("service IP family {range:?} must match public address family {address:?}")]
    PublicAddressFamilyMismatch {
        /// The primary service range.
        range: String,
        /// The advertised address.
        address: String,
    },
    /// A `--cluster-cidr` entry does not parse (netutils.ParseCIDRs).
    #[error("failed to parse cidr value:{value:?} with error:invalid CIDR address: {value}")]
    ClusterCidrInvalid {
        /// The entry as given.
        value: String,
    },
    /// Two cluster CIDRs of the same family.
    #[error(
        "len of ClusterCIDRs=={0} and they are not configured as dual stack (at least one from each IPFamily"
    )]
    ClusterCidrsNotDualStack(usize),
    /// More than two cluster CIDRs.
    #[error("length of clusterCIDRs is:{0} more than max allowed of 2")]
    ClusterCidrsTooMany(usize),
    /// `--allocate-node-cidrs` without `--cluster-cidr`.
    #[error("Controller: Must specify --cluster-cidr if --allocate-node-cidrs is set")]
    ClusterCidrRequired,
    /// `--node-cidr-mask-size` on a dual-stack cluster.
    #[error("usage of --node-cidr-mask-size is not allowed with dual-stack clusters")]
    NodeMaskSizeWithDualStack,
    /// `--node-cidr-mask-size` together with a per-family flag.
    #[error(
        "usage of --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6 is not allowed if --node-cidr-mask-size is set. For dual-stack clusters please unset it and use IPFamily specific flags"
    )]
    NodeMaskSizeWithPerFamily,
    /// `--node-cidr-mask-size-ipv4` on an IPv6-only cluster.
    #[error("usage of --node-cidr-mask-size-ipv4 is not allowed for a single-stack IPv6 cluster")]
    NodeMaskSizeIpv4OnIpv6Cluster,
    /// `--node-cidr-mask-size-ipv6` on an IPv4-only cluster.
    #[error("usage of --node-cidr-mask-size-ipv6 is not allowed for a single-stack IPv4 cluster")]
    NodeMaskSizeIpv6OnIpv4Cluster,
    /// A cluster CIDR whose prefix is longer than the node mask of its family.
    #[error(
        "Controller: Invalid --cluster-cidr, mask size of cluster CIDR must be less than or equal to --node-cidr-mask-size configured for CIDR family"
    )]
    ClusterCidrSmallerThanNodeMask,
    /// The node CIDR set cannot be built (IPv6 node mask more than 16 bits longer, or a mask
    /// beyond the address length).
    #[error("{0}")]
    CidrSet(String),
    /// kube-controller-manager's own copy of `--service-cluster-ip-range` is not dual-stack.
    #[error("serviceCIDR and secondaryServiceCIDR are not dualstack (from different IPfamiles)")]
    ServiceCidrsNotDualStack,
    /// A `--feature-gates` entry without `=value`.
    #[error("missing bool value for {0}")]
    FeatureGateMissingValue(String),
    /// A `--feature-gates` value that is not a Go boolean.
    #[error(
        "invalid value of {key}={value}, err: strconv.ParseBool: parsing {value:?}: invalid syntax"
    )]
    FeatureGateInvalidValue {
        /// Gate name.
        key: String,
        /// The value given.
        value: String,
    },
    /// A gate this component does not know.
    #[error("unrecognized feature gate: {0}")]
    FeatureGateUnknown(String),
    /// A GA gate set against its locked value.
    #[error("cannot set feature gate {key} to {value}, feature is locked to {locked}")]
    FeatureGateLocked {
        /// Gate name.
        key: String,
        /// Requested value.
        value: bool,
        /// The value it is locked to.
        locked: bool,
    },
    /// `IPv6DualStack=false` together with a dual-stack flag value.
    #[error(
        "{flag}={value} is dual-stack, which can only be used if IPv6DualStack feature is enabled (--feature-gates=IPv6DualStack=false was given)"
    )]
    DualStackGateDisabled {
        /// The dual-stack flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// `--node-ip` with more than two addresses or two of one family.
    #[error("must contain either a single IP or a dual-stack pair of IPs")]
    NodeIpNotDualStackPair,
    /// A dual-stack `--node-ip` with a cloud provider other than `external`.
    #[error("dual-stack not supported in this configuration")]
    NodeIpDualStackWithCloudProvider,
    /// A dual-stack `--node-ip` containing an unspecified address.
    #[error("dual-stack node IP cannot include '0.0.0.0' or '::'")]
    NodeIpDualStackUnspecified,
    /// `--service-node-port-range` does not parse.
    #[error("{0}")]
    NodePortRange(String),
    /// A flag value was rejected while parsing; upstream's pflag wording.
    #[error("invalid argument {value:?} for {flag:?} flag: {source}")]
    Flag {
        /// The flag name, with dashes.
        flag: &'static str,
        /// The value given.
        value: String,
        /// Why it was rejected.
        #[source]
        source: Box<ConfigError>,
    },
}

impl ConfigError {
    /// Wraps a value error in pflag's `invalid argument "v" for "--flag" flag: ...` form.
    pub fn for_flag(self, flag: &'static str, value: &str) -> ConfigError {
        ConfigError::Flag {
            flag,
            value: value.to_string(),
            source: Box::new(self),
        }
    }
}

/// Several validation failures, printed like Go's `utilerrors.NewAggregate`: the message alone
/// when there is one, `[a, b]` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                f.write_str("[")?;
                for (i, e) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// kube-apiserver's `--service-cluster-ip-range`: the primary range (entry 0, the cluster's
/// default service family) and an optional secondary range of the other family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceClusterIpRange {
    /// Entry 0. Its family is the cluster's default Service IP family.
    pub primary: IpNet,
    /// Entry 1, of the other family.
    pub secondary: Option<IpNet>,
    /// True when the flag was empty and [`DEFAULT_SERVICE_CLUSTER_IP_RANGE`] was used
    /// (upstream logs a deprecation warning then).
    pub defaulted: bool,
}

impl ServiceClusterIpRange {
    /// Parses and validates the flag value exactly as kube-apiserver's completion
    /// (`getServiceIPAndRanges`) and validation (`validateClusterIPFlags`) do, with the
    /// IPAddress allocator's size rules: IPv4 mask ≥ /12, IPv6 prefix ≥ /64.
    pub fn parse(value: &str) -> Result<Self, ConfigErrors> {
        let entries: Vec<&str> = if value.is_empty() {
            Vec::new()
        } else {
            value.split(',').collect()
        };
        if entries.is_empty() {
            let primary =
                parse_cidr_sloppy(DEFAULT_SERVICE_CLUSTER_IP_RANGE).expect("default parses");
            return Ok(Self {
                primary,
                secondary: None,
                defaulted: true,
            });
        }
        // Completion: parse errors stop everything.
        let primary =
            parse_cidr_sloppy(entries[0]).ok_or(ConfigError::ServiceRangePrimaryInvalid)?;
        if range_size(&primary).min(1 << 16) < 8 {
            return Err(ConfigError::ServiceRangeTooSmall.into());
        }
        let secondary = match entries.get(1) {
            Some(s) => Some(parse_cidr_sloppy(s).ok_or(ConfigError::ServiceRangeSecondaryInvalid)?),
            None => None,
        };
        // Validation: every problem is reported.
        let mut errs = Vec::new();
        if entries.len() > 2 {
            errs.push(ConfigError::ServiceRangeTooManyEntries);
        }
        if let Err(e) = check_service_range_size(&primary, "--service-cluster-ip-range") {
            errs.push(e);
        }
        if let Some(secondary) = &secondary {
            if IpFamily::of_net(secondary) == IpFamily::of_net(&primary) {
                errs.push(ConfigError::ServiceRangeSameFamily);
            }
            if let Err(e) = check_service_range_size(secondary, "--service-cluster-ip-range[1]") {
                errs.push(e);
            }
        }
        if errs.is_empty() {
            Ok(Self {
                primary,
                secondary,
                defaulted: false,
            })
        } else {
            Err(ConfigErrors(errs))
        }
    }

    /// The configured ranges, primary first.
    pub fn cidrs(&self) -> Vec<IpNet> {
        std::iter::once(self.primary)
            .chain(self.secondary)
            .collect()
    }

    /// The configured families, primary first.
    pub fn families(&self) -> Vec<IpFamily> {
        self.cidrs().iter().map(IpFamily::of_net).collect()
    }

    /// The cluster's default Service IP family: the primary range's.
    pub fn primary_family(&self) -> IpFamily {
        IpFamily::of_net(&self.primary)
    }

    /// True when both families are configured.
    pub fn is_dual_stack(&self) -> bool {
        self.secondary.is_some()
    }

    /// The range of `family`, if configured.
    pub fn range_of(&self, family: IpFamily) -> Option<IpNet> {
        self.cidrs()
            .into_iter()
            .find(|n| IpFamily::of_net(n) == family)
    }

    /// The ClusterIP of the `default/kubernetes` Service: network+1 of the primary range.
    pub fn api_server_service_ip(&self) -> IpAddr {
        nth_address(&self.primary, 1)
    }

    /// Checks the advertised address against the primary family
    /// (`validatePublicIPServiceClusterIPRangeIPFamilies`).
    pub fn check_public_address(&self, address: IpAddr) -> Result<(), ConfigError> {
        if IpFamily::of_addr(&address) == self.primary_family() {
            Ok(())
        } else {
            Err(ConfigError::PublicAddressFamilyMismatch {
                range: self.primary.to_string(),
                address: address.to_string(),
            })
        }
    }
}

impl fmt::Display for ServiceClusterIpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.secondary {
            Some(s) => write!(f, "{},{}", self.primary, s),
            None => write!(f, "{}", self.primary),
        }
    }
}

fn check_service_range_size(net: &IpNet, flag: &'static str) -> Result<(), ConfigError> {
    match IpFamily::of_net(net) {
        IpFamily::IPv4 => {
            let min_mask = 32 - MAX_SERVICE_CIDR_HOST_BITS_IPV4;
            if net.prefix_len() < min_mask {
                return Err(ConfigError::ServiceRangeTooLarge { flag, min_mask });
            }
        }
        IpFamily::IPv6 => {
            if net.prefix_len() < SHORTEST_IPV6_SERVICE_PREFIX {
                return Err(ConfigError::ServiceRangeIpv6TooLarge(net.prefix_len()));
            }
        }
    }
    Ok(())
}

/// Parses `--cluster-cidr` as kube-controller-manager's `validateCIDRs` does: one CIDR, or a
/// dual-stack pair, in flag order (the order decides `podCIDRs` order on every node).
pub fn parse_cluster_cidrs(value: &str) -> Result<Vec<IpNet>, ConfigError> {
    let mut cidrs = Vec::new();
    for entry in value.trim().split(',') {
        let net = parse_cidr_sloppy(entry).ok_or_else(|| ConfigError::ClusterCidrInvalid {
            value: entry.to_string(),
        })?;
        cidrs.push(net);
    }
    let has_v4 = cidrs.iter().any(|n| IpFamily::of_net(n) == IpFamily::IPv4);
    let has_v6 = cidrs.iter().any(|n| IpFamily::of_net(n) == IpFamily::IPv6);
    if cidrs.len() > 1 && !(has_v4 && has_v6) {
        return Err(ConfigError::ClusterCidrsNotDualStack(cidrs.len()));
    }
    if cidrs.len() > 2 {
        return Err(ConfigError::ClusterCidrsTooMany(cidrs.len()));
    }
    Ok(cidrs)
}

/// The three node mask flags as given; `None` or `Some(0)` means "not set", as upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCidrMaskFlags {
    /// `--node-cidr-mask-size` (single-stack only).
    pub node_cidr_mask_size: Option<u8>,
    /// `--node-cidr-mask-size-ipv4`.
    pub ipv4: Option<u8>,
    /// `--node-cidr-mask-size-ipv6`.
    pub ipv6: Option<u8>,
}

/// One node mask size per cluster CIDR, in cluster-CIDR order (`setNodeCIDRMaskSizes`).
pub fn node_cidr_mask_sizes(
    cluster_cidrs: &[IpNet],
    flags: NodeCidrMaskFlags,
) -> Result<Vec<u8>, ConfigError> {
    let set = |v: Option<u8>| v.filter(|&m| m != 0);
    let (mask, mask4, mask6) = (
        set(flags.node_cidr_mask_size),
        set(flags.ipv4),
        set(flags.ipv6),
    );
    let sorted = |v4: u8, v6: u8| -> Vec<u8> {
        cluster_cidrs
            .iter()
            .map(|n| {
                if IpFamily::of_net(n) == IpFamily::IPv6 {
                    v6
                } else {
                    v4
                }
            })
            .collect()
    };
    let (mut v4, mut v6) = (
        DEFAULT_NODE_CIDR_MASK_SIZE_IPV4,
        DEFAULT_NODE_CIDR_MASK_SIZE_IPV6,
    );
    if cluster_cidrs.len() > 1 {
        if mask.is_some() {
            return Err(ConfigError::NodeMaskSizeWithDualStack);
        }
        return Ok(sorted(mask4.unwrap_or(v4), mask6.unwrap_or(v6)));
    }
    let single_stack_ipv6 = cluster_cidrs
        .first()
        .is_some_and(|n| IpFamily::of_net(n) == IpFamily::IPv6);
    if let Some(m) = mask {
        if mask4.is_some() || mask6.is_some() {
            return Err(ConfigError::NodeMaskSizeWithPerFamily);
        }
        return Ok(sorted(m, m));
    }
    if let Some(m) = mask4 {
        if single_stack_ipv6 {
            return Err(ConfigError::NodeMaskSizeIpv4OnIpv6Cluster);
        }
        v4 = m;
    }
    if let Some(m) = mask6 {
        if !single_stack_ipv6 {
            return Err(ConfigError::NodeMaskSizeIpv6OnIpv4Cluster);
        }
        v6 = m;
    }
    Ok(sorted(v4, v6))
}

/// The node IPAM controller's configuration, validated as kube-controller-manager does before
/// it starts (`startNodeIpamController`, `NewNodeIpamController`, `NewCIDRSet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIpamConfig {
    /// `--cluster-cidr`, in flag order.
    pub cluster_cidrs: Vec<IpNet>,
    /// One node mask per cluster CIDR, same order.
    pub node_mask_sizes: Vec<u8>,
    /// Service ranges whose overlap with the cluster CIDRs is never given to nodes.
    pub service_cidrs: Vec<IpNet>,
}

impl NodeIpamConfig {
    /// Returns `Ok(None)` when `--allocate-node-cidrs` is off (the controller does not run).
    pub fn from_flags(
        allocate_node_cidrs: bool,
        cluster_cidr: &str,
        masks: NodeCidrMaskFlags,
        service: &ServiceClusterIpRange,
    ) -> Result<Option<Self>, ConfigError> {
        if cluster_cidr.trim().is_empty() {
            return if allocate_node_cidrs {
                Err(ConfigError::ClusterCidrRequired)
            } else {
                Ok(None)
            };
        }
        let cluster_cidrs = parse_cluster_cidrs(cluster_cidr)?;
        let node_mask_sizes = node_cidr_mask_sizes(&cluster_cidrs, masks)?;
        for (cidr, &mask) in cluster_cidrs.iter().zip(&node_mask_sizes) {
            if cidr.prefix_len() > mask {
                return Err(ConfigError::ClusterCidrSmallerThanNodeMask);
            }
            CidrSet::new(*cidr, mask).map_err(|e| ConfigError::CidrSet(e.to_string()))?;
        }
        if !allocate_node_cidrs {
            return Ok(None);
        }
        Ok(Some(Self {
            cluster_cidrs,
            node_mask_sizes,
            service_cidrs: service.cidrs(),
        }))
    }

    /// True when pod CIDRs of both families are given to nodes.
    pub fn is_dual_stack(&self) -> bool {
        self.cluster_cidrs.len() > 1
    }
}

/// A known feature gate: its default and whether it is locked (GA).
#[derive(Debug, Clone, Copy)]
struct GateSpec {
    name: &'static str,
    default: bool,
    locked: bool,
}

/// The gates this project knows. Dual-stack is GA and always on; the others are the gates whose
/// GA behaviour we implement (ServiceCIDR/IPAddress allocation, static subranges, nftables).
const KNOWN_GATES: &[GateSpec] = &[
    // Special: `false` is accepted only for a single-stack configuration; see check_dual_stack.
    GateSpec {
        name: "IPv6DualStack",
        default: true,
        locked: false,
    },
    GateSpec {
        name: "ServiceIPStaticSubrange",
        default: true,
        locked: true,
    },
    GateSpec {
        name: "ServiceNodePortStaticSubrange",
        default: true,
        locked: true,
    },
    GateSpec {
        name: "MultiCIDRServiceAllocator",
        default: true,
        locked: true,
    },
    GateSpec {
        name: "DisableAllocatorDualWrite",
        default: true,
        locked: true,
    },
    GateSpec {
        name: "NFTablesProxyMode",
        default: true,
        locked: true,
    },
    GateSpec {
        name: "CloudDualStackNodeIPs",
        default: true,
        locked: true,
    },
    GateSpec {
        name: "AllAlpha",
        default: false,
        locked: false,
    },
    GateSpec {
        name: "AllBeta",
        default: false,
        locked: false,
    },
];

/// `--feature-gates=Key=bool,...` as component-base's featuregate parses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureGates {
    explicit: BTreeMap<String, bool>,
}

impl FeatureGates {
    /// Parses the flag value; errors are already wrapped with the flag name.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        Self::parse_inner(value).map_err(|e| e.for_flag("--feature-gates", value))
    }

    fn parse_inner(value: &str) -> Result<Self, ConfigError> {
        let mut explicit = BTreeMap::new();
        for entry in value.split(',') {
            if entry.is_empty() {
                continue;
            }
            let (k, v) = match entry.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => {
                    return Err(ConfigError::FeatureGateMissingValue(
                        entry.trim().to_string(),
                    ));
                }
            };
            let b = parse_go_bool(v).ok_or_else(|| ConfigError::FeatureGateInvalidValue {
                key: k.to_string(),
                value: v.to_string(),
            })?;
            explicit.insert(k.to_string(), b);
        }
        for (k, &v) in &explicit {
            let spec = KNOWN_GATES
                .iter()
                .find(|g| g.name == k)
                .ok_or_else(|| ConfigError::FeatureGateUnknown(k.clone()))?;
            if spec.locked && spec.default != v {
                return Err(ConfigError::FeatureGateLocked {
                    key: k.clone(),
                    value: v,
                    locked: spec.default,
                });
            }
        }
        Ok(Self { explicit })
    }

    /// Whether `gate` is on (explicit value, else its default; unknown gates are off).
    pub fn enabled(&self, gate: &str) -> bool {
        self.explicit
            .get(gate)
            .copied()
            .unwrap_or_else(|| KNOWN_GATES.iter().any(|g| g.name == gate && g.default))
    }

    /// `IPv6DualStack=false` is accepted only when the given flag is single-stack.
    pub fn check_dual_stack(
        &self,
        flag: &'static str,
        value: &str,
        dual: bool,
    ) -> Result<(), ConfigError> {
        if dual && !self.enabled("IPv6DualStack") {
            return Err(ConfigError::DualStackGateDisabled {
                flag,
                value: value.to_string(),
            });
        }
        Ok(())
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// kubelet's `--node-ip` (`ParseNodeIPArgument`): 0, 1 or 2 addresses; unparsable entries are
/// skipped (upstream only logs them) and returned separately so the caller can log them.
pub fn parse_node_ips(
    value: &str,
    cloud_provider: &str,
) -> Result<(Vec<IpAddr>, Vec<String>), ConfigError> {
    let mut ips = Vec::new();
    let mut skipped = Vec::new();
    for entry in value.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        match parse_ip_sloppy(entry) {
            Some(ip) => ips.push(ip),
            None => skipped.push(entry.to_string()),
        }
    }
    if ips.len() > 2 || (ips.len() == 2 && IpFamily::of_addr(&ips[0]) == IpFamily::of_addr(&ips[1]))
    {
        return Err(ConfigError::NodeIpNotDualStackPair);
    }
    if ips.len() == 2 {
        if !cloud_provider.is_empty() && cloud_provider != "external" {
            return Err(ConfigError::NodeIpDualStackWithCloudProvider);
        }
        if ips.iter().any(|ip| ip.is_unspecified()) {
            return Err(ConfigError::NodeIpDualStackUnspecified);
        }
    }
    Ok((ips, skipped))
}

/// `--service-node-port-range` (`utilnet.ParsePortRange`), errors wrapped with the flag name.
pub fn parse_service_node_port_range(value: &str) -> Result<PortRange, ConfigError> {
    PortRange::parse(value).map_err(|e| {
        ConfigError::NodePortRange(e.to_string()).for_flag("--service-node-port-range", value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn service_err(v: &str) -> String {
        ServiceClusterIpRange::parse(v).unwrap_err().to_string()
    }

    #[test]
    fn service_range_primary_is_entry_zero_for_both_orders() {
        let d46 = ServiceClusterIpRange::parse("10.0.0.0/16,fd00:10::/108").unwrap();
        let d64 = ServiceClusterIpRange::parse("fd00:10::/108,10.0.0.0/16").unwrap();
        assert_eq!(d46.families(), vec![IpFamily::IPv4, IpFamily::IPv6]);
        assert_eq!(d64.families(), vec![IpFamily::IPv6, IpFamily::IPv4]);
        assert_eq!(d46.api_server_service_ip().to_string(), "10.0.0.1");
        assert_eq!(d64.api_server_service_ip().to_string(), "fd00:10::1");
        assert!(d46.is_dual_stack() && d64.is_dual_stack());
    }

    #[test]
    fn service_range_defaults_to_upstream_apiserver_default() {
        let r = ServiceClusterIpRange::parse("").unwrap();
        assert_eq!(r.primary, net("10.0.0.0/24"));
        assert!(r.defaulted && !r.is_dual_stack());
        assert_eq!(r.api_server_service_ip().to_string(), "10.0.0.1");
    }

    #[test]
    fn service_range_size_limits_per_family() {
        // (value, accepted or exact error) with IPv4 and IPv6 rows side by side.
        let rows: &[(&str, Result<(), &str>)] = &[
            ("10.0.0.0/12", Ok(())),
            ("fd00::/64", Ok(())),
            (
                "10.0.0.0/11",
                Err(
                    "specified --service-cluster-ip-range is too large; for 32-bit addresses, the mask must be >= 12",
                ),
            ),
            (
                "fd00::/63",
                Err("shortest allowed prefix length for service CIDR is 64, got 63"),
            ),
            (
                "10.0.0.0/16,fd00::/48",
                Err("shortest allowed prefix length for service CIDR is 64, got 48"),
            ),
            (
                "fd00::/108,10.0.0.0/8",
                Err(
                    "specified --service-cluster-ip-range[1] is too large; for 32-bit addresses, the mask must be >= 12",
                ),
            ),
            ("10.0.0.0/29", Ok(())),
            ("fd00::/125", Ok(())),
            (
                "10.0.0.0/30",
                Err(
                    "error determining service IP ranges for primary service cidr: the service cluster IP range must be at least 8 IP addresses",
                ),
            ),
            (
                "fd00::/126",
                Err(
                    "error determining service IP ranges for primary service cidr: the service cluster IP range must be at least 8 IP addresses",
                ),
            ),
        ];
        for (value, want) in rows {
            let got = ServiceClusterIpRange::parse(value)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "{value}");
        }
    }

    #[test]
    fn service_range_entry_errors_have_upstream_text() {
        assert_eq!(
            service_err("foo"),
            "service-cluster-ip-range[0] is not a valid cidr"
        );
        assert_eq!(
            service_err(",fd00::/108"),
            "service-cluster-ip-range[0] is not a valid cidr"
        );
        assert_eq!(
            service_err("10.0.0.0/16,bar"),
            "service-cluster-ip-range[1] is not an ip net"
        );
        assert_eq!(
            service_err("10.0.0.0/16,10.1.0.0/16"),
            "--service-cluster-ip-range[0] and --service-cluster-ip-range[1] must be of different IP family"
        );
        assert_eq!(
            service_err("fd00::/108,fd01::/108"),
            "--service-cluster-ip-range[0] and --service-cluster-ip-range[1] must be of different IP family"
        );
        assert_eq!(
            service_err("10.0.0.0/16,fd00::/108,10.1.0.0/16"),
            "--service-cluster-ip-range must not contain more than two entries"
        );
        // Several problems are reported together, as utilerrors.NewAggregate prints them.
        assert_eq!(
            service_err("10.0.0.0/8,10.1.0.0/16,fd00::/108"),
            "[--service-cluster-ip-range must not contain more than two entries, specified --service-cluster-ip-range is too large; for 32-bit addresses, the mask must be >= 12, --service-cluster-ip-range[0] and --service-cluster-ip-range[1] must be of different IP family]"
        );
    }

    #[test]
    fn service_range_accepts_sloppy_cidrs_and_masks_host_bits() {
        let r = ServiceClusterIpRange::parse("010.000.0.5/16").unwrap();
        assert_eq!(r.primary, net("10.0.0.0/16"));
    }

    #[test]
    fn public_address_must_match_primary_family() {
        let r = ServiceClusterIpRange::parse("fd00::/108,10.0.0.0/16").unwrap();
        assert!(r.check_public_address("::1".parse().unwrap()).is_ok());
        assert_eq!(
            r.check_public_address("127.0.0.1".parse().unwrap())
                .unwrap_err()
                .to_string(),
            r#"service IP family "fd00::/108" must match public address family "127.0.0.1""#
        );
    }

    #[test]
    fn cluster_cidrs_keep_flag_order_and_reject_non_dual_pairs() {
        assert_eq!(
            parse_cluster_cidrs("fc00::/48,10.244.0.0/16").unwrap(),
            vec![net("fc00::/48"), net("10.244.0.0/16")]
        );
        assert_eq!(
            parse_cluster_cidrs("10.244.0.0/16,10.245.0.0/16")
                .unwrap_err()
                .to_string(),
            "len of ClusterCIDRs==2 and they are not configured as dual stack (at least one from each IPFamily"
        );
        assert_eq!(
            parse_cluster_cidrs("10.244.0.0/16,fc00::/48,10.245.0.0/16")
                .unwrap_err()
                .to_string(),
            "length of clusterCIDRs is:3 more than max allowed of 2"
        );
        assert_eq!(
            parse_cluster_cidrs("10.244.0.0/16,nope")
                .unwrap_err()
                .to_string(),
            r#"failed to parse cidr value:"nope" with error:invalid CIDR address: nope"#
        );
    }

    #[test]
    fn node_mask_sizes_follow_cluster_cidr_order_and_upstream_rules() {
        let v4 = vec![net("10.244.0.0/16")];
        let v6 = vec![net("fc00::/48")];
        let d46 = vec![net("10.244.0.0/16"), net("fc00::/48")];
        let d64 = vec![net("fc00::/48"), net("10.244.0.0/16")];
        let f = |m: Option<u8>, m4: Option<u8>, m6: Option<u8>| NodeCidrMaskFlags {
            node_cidr_mask_size: m,
            ipv4: m4,
            ipv6: m6,
        };
        let none = f(None, None, None);
        assert_eq!(node_cidr_mask_sizes(&v4, none).unwrap(), vec![24]);
        assert_eq!(node_cidr_mask_sizes(&v6, none).unwrap(), vec![64]);
        assert_eq!(node_cidr_mask_sizes(&d46, none).unwrap(), vec![24, 64]);
        assert_eq!(node_cidr_mask_sizes(&d64, none).unwrap(), vec![64, 24]);
        assert_eq!(
            node_cidr_mask_sizes(&d64, f(None, Some(26), Some(80))).unwrap(),
            vec![80, 26]
        );
        assert_eq!(
            node_cidr_mask_sizes(&v4, f(Some(20), None, None)).unwrap(),
            vec![20]
        );
        assert_eq!(
            node_cidr_mask_sizes(&v6, f(Some(72), None, None)).unwrap(),
            vec![72]
        );
        assert_eq!(
            node_cidr_mask_sizes(&v4, f(Some(0), Some(0), None)).unwrap(),
            vec![24]
        );
        assert_eq!(
            node_cidr_mask_sizes(&v4, f(None, Some(26), None)).unwrap(),
            vec![26]
        );
        assert_eq!(
            node_cidr_mask_sizes(&v6, f(None, None, Some(80))).unwrap(),
            vec![80]
        );
        let err = |c: &[IpNet], fl| node_cidr_mask_sizes(c, fl).unwrap_err().to_string();
        assert_eq!(
            err(&d46, f(Some(24), None, None)),
            "usage of --node-cidr-mask-size is not allowed with dual-stack clusters"
        );
        assert_eq!(
            err(&v4, f(Some(24), Some(24), None)),
            "usage of --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6 is not allowed if --node-cidr-mask-size is set. For dual-stack clusters please unset it and use IPFamily specific flags"
        );
        assert_eq!(
            err(&v6, f(None, Some(24), None)),
            "usage of --node-cidr-mask-size-ipv4 is not allowed for a single-stack IPv6 cluster"
        );
        assert_eq!(
            err(&v4, f(None, None, Some(64))),
            "usage of --node-cidr-mask-size-ipv6 is not allowed for a single-stack IPv4 cluster"
        );
    }

    #[test]
    fn node_ipam_config_validates_before_start() {
        let svc = ServiceClusterIpRange::parse("10.0.0.0/16,fd00::/108").unwrap();
        let none = NodeCidrMaskFlags::default();
        assert_eq!(NodeIpamConfig::from_flags(false, "", none, &svc), Ok(None));
        assert_eq!(
            NodeIpamConfig::from_flags(true, "", none, &svc)
                .unwrap_err()
                .to_string(),
            "Controller: Must specify --cluster-cidr if --allocate-node-cidrs is set"
        );
        let cfg = NodeIpamConfig::from_flags(true, "10.244.0.0/16,fc00::/48", none, &svc)
            .unwrap()
            .unwrap();
        assert_eq!(cfg.node_mask_sizes, vec![24, 64]);
        assert!(cfg.is_dual_stack());
        // Equal sizes are allowed (exactly one node CIDR); a longer cluster prefix is not.
        let eq = NodeCidrMaskFlags {
            ipv4: Some(24),
            ..none
        };
        assert!(NodeIpamConfig::from_flags(true, "10.244.0.0/24", eq, &svc).is_ok());
        assert_eq!(
            NodeIpamConfig::from_flags(true, "10.244.0.0/25", none, &svc)
                .unwrap_err()
                .to_string(),
            "Controller: Invalid --cluster-cidr, mask size of cluster CIDR must be less than or equal to --node-cidr-mask-size configured for CIDR family"
        );
        assert_eq!(
            NodeIpamConfig::from_flags(true, "fc00::/47", none, &svc)
                .unwrap_err()
                .to_string(),
            "New CIDR set failed; the node CIDR size is too big"
        );
        // IPv4 has no 16-bit limit.
        let wide = NodeCidrMaskFlags {
            ipv4: Some(32),
            ..none
        };
        assert!(NodeIpamConfig::from_flags(true, "127.0.0.0/8", wide, &svc).is_ok());
    }

    #[test]
    fn feature_gates_accept_dual_stack_and_reject_unknown_and_bad_values() {
        let g = FeatureGates::parse("IPv6DualStack=true").unwrap();
        assert!(g.enabled("IPv6DualStack"));
        assert!(FeatureGates::parse("").unwrap().enabled("IPv6DualStack"));
        assert_eq!(
            FeatureGates::parse("Foo=true").unwrap_err().to_string(),
            r#"invalid argument "Foo=true" for "--feature-gates" flag: unrecognized feature gate: Foo"#
        );
        assert_eq!(
            FeatureGates::parse("IPv6DualStack")
                .unwrap_err()
                .to_string(),
            r#"invalid argument "IPv6DualStack" for "--feature-gates" flag: missing bool value for IPv6DualStack"#
        );
        assert_eq!(
            FeatureGates::parse("IPv6DualStack=yes")
                .unwrap_err()
                .to_string(),
            r#"invalid argument "IPv6DualStack=yes" for "--feature-gates" flag: invalid value of IPv6DualStack=yes, err: strconv.ParseBool: parsing "yes": invalid syntax"#
        );
        assert_eq!(
            FeatureGates::parse("ServiceIPStaticSubrange=false")
                .unwrap_err()
                .to_string(),
            r#"invalid argument "ServiceIPStaticSubrange=false" for "--feature-gates" flag: cannot set feature gate ServiceIPStaticSubrange to false, feature is locked to true"#
        );
        let off = FeatureGates::parse("IPv6DualStack=false").unwrap();
        assert!(
            off.check_dual_stack("--service-cluster-ip-range", "10.0.0.0/16", false)
                .is_ok()
        );
        assert_eq!(
            off.check_dual_stack("--service-cluster-ip-range", "10.0.0.0/16,fd00::/108", true)
                .unwrap_err()
                .to_string(),
            "--service-cluster-ip-range=10.0.0.0/16,fd00::/108 is dual-stack, which can only be used if IPv6DualStack feature is enabled (--feature-gates=IPv6DualStack=false was given)"
        );
    }

    #[test]
    fn node_ips_follow_kubelet_rules() {
        let ok = |v: &str| parse_node_ips(v, "").unwrap().0;
        assert_eq!(ok(""), Vec::<IpAddr>::new());
        assert_eq!(
            ok("10.0.0.1,fd00::1"),
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert_eq!(
            ok("fd00::1, 10.0.0.1"),
            vec![
                "fd00::1".parse::<IpAddr>().unwrap(),
                "10.0.0.1".parse().unwrap()
            ]
        );
        // Invalid entries are skipped, not errors.
        let (ips, skipped) = parse_node_ips("bogus,10.0.0.1", "").unwrap();
        assert_eq!((ips.len(), skipped), (1, vec!["bogus".to_string()]));
        let err = |v: &str, cp: &str| parse_node_ips(v, cp).unwrap_err().to_string();
        assert_eq!(
            err("10.0.0.1,10.0.0.2", ""),
            "must contain either a single IP or a dual-stack pair of IPs"
        );
        assert_eq!(
            err("fd00::1,fd00::2", ""),
            "must contain either a single IP or a dual-stack pair of IPs"
        );
        assert_eq!(
            err("10.0.0.1,fd00::1,10.0.0.2", ""),
            "must contain either a single IP or a dual-stack pair of IPs"
        );
        assert_eq!(
            err("10.0.0.1,fd00::1", "gce"),
            "dual-stack not supported in this configuration"
        );
        assert!(parse_node_ips("10.0.0.1,fd00::1", "external").is_ok());
        assert_eq!(
            err("0.0.0.0,fd00::1", ""),
            "dual-stack node IP cannot include '0.0.0.0' or '::'"
        );
        assert_eq!(
            err("10.0.0.1,::", ""),
            "dual-stack node IP cannot include '0.0.0.0' or '::'"
        );
    }
}
