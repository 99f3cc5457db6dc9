//! The ruleset of one family: the fixed part ([`Base`]: base chains, helper chains, sets and
//! maps) and one [`Fragment`] per Service (its chains, affinity sets and map elements), built
//! after upstream's nftables proxier. `README.md` of this crate describes the layout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use dualstack_ipam::IpFamily;
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::categorize::{Endpoint, categorize, endpoints_for_port, externally_accessible};
use crate::input::{
    FamilyConfig, NodePortMatch, ServiceInfo, ServiceKey, ServicePortName, SlicesOf,
};
use crate::nft::{
    AddrRhs, BaseHook, ChainDef, ChainType, Dir, Element, Hook, Key, Match, Op, Protocol,
    RejectWith, Rule, Rules, SetDef, SetType, Stmt, Transaction, Value, Verdict, VmapKey,
};

/// Set of the active ClusterIPs (wrong ports on them are rejected).
pub const CLUSTER_IPS: &str = "cluster-ips";
/// Set of the addresses that accept NodePort traffic.
pub const NODEPORT_IPS: &str = "nodeport-ips";
/// Verdict map: ClusterIP, externalIP and LoadBalancer IP . protocol . port → service chain.
pub const SERVICE_IPS: &str = "service-ips";
/// Verdict map: protocol . NodePort → external chain.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Verdict map: IP . protocol . port of Services without usable endpoints → reject or drop.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Verdict map: protocol . NodePort of Services without usable endpoints → reject or drop.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Verdict map: LoadBalancer IP . protocol . port with source ranges → firewall chain.
pub const FIREWALL_IPS: &str = "firewall-ips";
/// Backend map: Service address . protocol . port . bucket → endpoint address . port.
pub const SERVICE_BACKENDS: &str = "service-backends";
/// Backend map: protocol . NodePort . bucket → endpoint address . port.
pub const NODEPORT_BACKENDS: &str = "nodeport-backends";
/// Set of `endpoint . endpoint` pairs of this node's endpoints: hairpin traffic (a pod reaching
/// itself through a Service) is masqueraded.
pub const HAIRPIN_ENDPOINTS: &str = "hairpin-endpoints";

/// The helper chain of the no-endpoint maps.
pub const REJECT_CHAIN: &str = "reject-chain";
/// The helper chain that sets the masquerade mark.
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";

/// The base chains: name, type, hook, priority, what it is for. The filter chains at -110 run
/// before DNAT (dstnat is -100) so source-range checks see the original destination; those at 0
/// run after it, so only traffic that was *not* DNATed (no endpoints, wrong port, unallocated
/// ClusterIP) still carries a Service address there.
pub const BASE_CHAINS: &[(&str, ChainType, Hook, i32, &str)] = &[
    (
        "filter-prerouting-pre-dnat",
        ChainType::Filter,
        Hook::Prerouting,
        -110,
        "loadBalancerSourceRanges, before DNAT",
    ),
    (
        "filter-output-pre-dnat",
        ChainType::Filter,
        Hook::Output,
        -110,
        "the same for traffic of the node itself",
    ),
    (
        "filter-forward",
        ChainType::Filter,
        Hook::Forward,
        0,
        "no endpoints, wrong ports, unallocated ClusterIPs",
    ),
    (
        "filter-input",
        ChainType::Filter,
        Hook::Input,
        0,
        "no endpoints on NodePorts and Service IPs delivered locally",
    ),
    (
        "filter-output",
        ChainType::Filter,
        Hook::Output,
        0,
        "no endpoints, wrong ports, unallocated ClusterIPs from the node",
    ),
    (
        "nat-prerouting",
        ChainType::Nat,
        Hook::Prerouting,
        -100,
        "DNAT of arriving traffic (dstnat)",
    ),
    (
        "nat-output",
        ChainType::Nat,
        Hook::Output,
        -100,
        "DNAT of the node's own traffic (dstnat)",
    ),
    (
        "nat-postrouting",
        ChainType::Nat,
        Hook::Postrouting,
        100,
        "masquerade of marked traffic (srcnat)",
    ),
];

/// Prefixes of per-Service chain and set names; any chain of ours with one of them belongs to a
/// Service.
pub const SERVICE_CHAIN_PREFIXES: &[&str] =
    &["service-", "local-", "external-", "firewall-", "endpoint-"];

/// The fixed part of a family's ruleset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// Sets and maps.
    pub sets: Vec<SetDef>,
    /// Chains with their rules.
    pub chains: Vec<(ChainDef, Rules)>,
    /// Fixed set elements (`nodeport-ips`).
    pub elements: Vec<(&'static str, Element)>,
}

/// Which traffic a shared pick chain takes (its masquerade rule differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PickKind {
    /// To a ClusterIP: masquerade off-cluster sources only.
    Cluster,
    /// To an externalIP or LoadBalancer IP (`externalTrafficPolicy: Cluster`): masquerade.
    External,
    /// To a NodePort (`externalTrafficPolicy: Cluster`): masquerade, key without address.
    NodePort,
}

/// The most endpoints a shared Service port may have: the pick chains for 1..=this many are
/// part of the fixed table. They are fixed rather than made as needed because nft 1.0.6 cannot
/// add a rule naming a backend map in a later transaction than the one that declared the map
/// (it reads the map's data type back as "conflicting protocols"); a port with more endpoints
/// gets chains of its own, as upstream's layout.
pub const MAX_SHARED_ENDPOINTS: u32 = 64;

/// A shared pick chain: one random choice among N endpoints through a backend map, for every
/// Service port with N endpoints and no per-Service rule (no affinity, `Cluster` policies, no
/// source ranges). Named `pick-<kind>-<N>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pick {
    /// The traffic it takes.
    pub kind: PickKind,
    /// The number of endpoints.
    pub n: u32,
}

impl Pick {
    /// The chain name.
    pub fn chain(&self) -> String {
        let kind = match self.kind {
            PickKind::Cluster => "cluster",
            PickKind::External => "external",
            PickKind::NodePort => "nodeport",
        };
        format!("pick-{kind}-{}", self.n)
    }

    /// The chain's rules: the masquerade mark, then DNAT through the backend map.
    pub fn rules(&self, cfg: &FamilyConfig) -> Rules {
        let mut rules = Vec::new();
        match self.kind {
            PickKind::Cluster if cfg.masquerade_all => {
                rules.push(Rule::new(jump(MARK_FOR_MASQUERADE)))
            }
            PickKind::Cluster => {
                if let Some(cidr) = cfg.local_detector {
                    rules.push(Rule::when(
                        vec![saddr(true, AddrRhs::Nets(vec![cidr]))],
                        jump(MARK_FOR_MASQUERADE),
                    ));
                }
            }
            PickKind::External | PickKind::NodePort => {
                rules.push(Rule::new(jump(MARK_FOR_MASQUERADE)))
            }
        }
        let (key, map) = match self.kind {
            PickKind::NodePort => (VmapKey::ProtoPort, NODEPORT_BACKENDS),
            _ => (VmapKey::DaddrProtoPort, SERVICE_BACKENDS),
        };
        rules.push(Rule::new(Stmt::DnatMap {
            key,
            modulus: self.n,
            map: map.to_string(),
        }));
        rules.into()
    }
}

/// What one Service contributes to a family's ruleset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Its chains with their rules.
    pub chains: BTreeMap<String, Rules>,
    /// Its local endpoints behind pick chains, for [`HAIRPIN_ENDPOINTS`] (shared between
    /// Services, so the proxier counts them).
    pub hairpin: BTreeSet<IpAddr>,
    /// Its affinity sets.
    pub sets: BTreeMap<String, SetDef>,
    /// Its elements of the shared sets and maps, by set and key.
    pub elements: BTreeMap<(&'static str, Key), Element>,
    /// Per port, what conntrack cleanup and health checks need.
    pub ports: Vec<PortSummary>,
}

/// A port of a Service in one family, summarised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSummary {
    /// The port's name.
    pub name: ServicePortName,
    /// The Service port.
    pub port: u16,
    /// The node port.
    pub node_port: Option<u16>,
    /// ClusterIP, externalIPs and LoadBalancer IPs of this family.
    pub service_ips: Vec<IpAddr>,
    /// The endpoints traffic may be sent to (`address`, `port`).
    pub reachable: Vec<(IpAddr, u16)>,
    /// How many local endpoints the Local policy uses.
    pub local_endpoints: usize,
}

/// The whole ruleset of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// The family.
    pub family: IpFamily,
    /// The fixed part.
    pub base: Base,
    /// One fragment per Service with a ClusterIP of this family.
    pub services: BTreeMap<ServiceKey, Fragment>,
    /// The endpoints in [`HAIRPIN_ENDPOINTS`].
    pub hairpin: BTreeSet<IpAddr>,
}

impl Ruleset {
    /// One transaction that replaces our table wholesale (`add table; delete table; ...`): used
    /// first and after any error. Established connections keep their conntrack NAT state.
    pub fn full_transaction(&self) -> Transaction {
        full_transaction(
            self.family,
            &self.base,
            &self.hairpin,
            self.services.values(),
        )
    }

    /// The rules of a chain, wherever it lives.
    pub fn chain(&self, name: &str) -> Option<&[Rule]> {
        if let Some((_, r)) = self.base.chains.iter().find(|(c, _)| c.name == name) {
            return Some(r);
        }
        self.services
            .values()
            .find_map(|f| f.chains.get(name).map(|r| &r[..]))
    }
}

/// The full transaction of a family from its base and fragments (in this order).
pub(crate) fn full_transaction<'a>(
    family: IpFamily,
    base: &Base,
    hairpin: &BTreeSet<IpAddr>,
    services: impl Iterator<Item = &'a Fragment> + Clone,
) -> Transaction {
    let mut tx = Transaction::new(family, true);
    tx.ops.push(Op::AddTable);
    tx.ops.push(Op::DeleteTable);
    tx.ops.push(Op::AddTable);
    // Every set of the base gets a size with room to spare for what it holds now.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (set, _) in &base.elements {
        *counts.entry(set).or_default() += 1;
    }
    for f in services.clone() {
        for (set, _) in f.elements.keys() {
            *counts.entry(set).or_default() += 1;
        }
    }
    *counts.entry(HAIRPIN_ENDPOINTS).or_default() += hairpin.len();
    for s in &base.sets {
        let mut s = s.clone();
        if s.timeout_secs.is_none() {
            s.size = Some(set_size(counts.get(s.name.as_str()).copied().unwrap_or(0)));
        }
        tx.ops.push(Op::AddSet(s));
    }
    for (c, _) in &base.chains {
        tx.ops.push(Op::AddChain(c.clone()));
    }
    for f in services.clone() {
        for s in f.sets.values() {
            tx.ops.push(Op::AddSet(s.clone()));
        }
        for name in f.chains.keys() {
            tx.ops.push(Op::AddChain(regular(name)));
        }
    }
    for (c, rules) in &base.chains {
        tx.ops.push(Op::AddRules {
            chain: c.name.clone(),
            rules: rules.clone(),
        });
    }
    for f in services.clone() {
        for (c, rules) in &f.chains {
            if !rules.is_empty() {
                tx.ops.push(Op::AddRules {
                    chain: c.clone(),
                    rules: rules.clone(),
                });
            }
        }
    }
    for (set, e) in &base.elements {
        tx.ops.push(Op::AddElements {
            set: set.to_string(),
            elements: vec![e.clone()],
        });
    }
    let pairs: Vec<Element> = hairpin.iter().map(|a| hairpin_element(*a)).collect();
    push_elements(
        &mut tx.ops,
        services
            .flat_map(|f| f.elements.iter().map(|((s, _), e)| (*s, e)))
            .chain(pairs.iter().map(|e| (HAIRPIN_ENDPOINTS, e))),
    );
    tx
}

/// The fewest elements a set of the base is sized for.
pub const MIN_SET_SIZE: u32 = 1024;

/// The size a full sync declares for a set of the base that holds `count` elements: at least
/// twice that, rounded up to a power of two, and [`MIN_SET_SIZE`] at least. An incremental sync
/// that would fill a set becomes a full one, which sizes it anew (`Proxier::sync`).
pub fn set_size(count: usize) -> u32 {
    let want = count.saturating_mul(2).max(MIN_SET_SIZE as usize);
    u32::try_from(want.next_power_of_two()).unwrap_or(u32::MAX)
}

/// The [`HAIRPIN_ENDPOINTS`] element of a local endpoint.
pub(crate) fn hairpin_element(addr: IpAddr) -> Element {
    Element {
        key: Key::AddrPair(addr, addr),
        value: None,
        comment: None,
    }
}

/// Adds elements grouped by set, in set order, as few `add element` commands as possible.
pub(crate) fn push_elements<'a>(
    ops: &mut Vec<Op>,
    elements: impl Iterator<Item = (&'static str, &'a Element)>,
) {
    let mut by_set: BTreeMap<&'static str, Vec<Element>> = BTreeMap::new();
    for (s, e) in elements {
        by_set.entry(s).or_default().push(e.clone());
    }
    for (set, elements) in by_set {
        ops.push(Op::AddElements {
            set: set.to_string(),
            elements,
        });
    }
}

pub(crate) fn regular(name: &str) -> ChainDef {
    ChainDef {
        name: name.to_string(),
        base: None,
    }
}

fn set(name: &str, ty: SetType, comment: &str) -> SetDef {
    SetDef {
        name: name.to_string(),
        ty,
        timeout_secs: None,
        size: None,
        comment: Some(comment.to_string()),
    }
}

fn jump(c: &str) -> Stmt {
    Stmt::Verdict(Verdict::Jump(c.to_string()))
}

fn goto(c: &str) -> Stmt {
    Stmt::Verdict(Verdict::Goto(c.to_string()))
}

fn saddr(negate: bool, rhs: AddrRhs) -> Match {
    Match::Addr {
        dir: Dir::Saddr,
        negate,
        rhs,
    }
}

fn daddr(negate: bool, rhs: AddrRhs) -> Match {
    Match::Addr {
        dir: Dir::Daddr,
        negate,
        rhs,
    }
}

/// Builds the fixed part of a family's ruleset.
pub fn base(cfg: &FamilyConfig) -> Base {
    let sets = vec![
        set(CLUSTER_IPS, SetType::Addr, "Active ClusterIPs"),
        set(
            NODEPORT_IPS,
            SetType::Addr,
            "IPs that accept NodePort traffic",
        ),
        set(
            FIREWALL_IPS,
            SetType::AddrProtoPortVerdict,
            "destinations that are subject to LoadBalancerSourceRanges",
        ),
        set(
            NO_ENDPOINT_NODEPORTS,
            SetType::ProtoPortVerdict,
            "vmap to drop or reject packets to service nodeports with no endpoints",
        ),
        set(
            NO_ENDPOINT_SERVICES,
            SetType::AddrProtoPortVerdict,
            "vmap to drop or reject packets to services with no endpoints",
        ),
        set(
            SERVICE_IPS,
            SetType::AddrProtoPortVerdict,
            "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        ),
        set(
            SERVICE_NODEPORTS,
            SetType::ProtoPortVerdict,
            "NodePort traffic",
        ),
        set(
            SERVICE_BACKENDS,
            SetType::AddrProtoPortBucketTarget,
            "endpoints of Service addresses by bucket",
        ),
        set(
            NODEPORT_BACKENDS,
            SetType::ProtoPortBucketTarget,
            "endpoints of NodePorts by bucket",
        ),
        set(
            HAIRPIN_ENDPOINTS,
            SetType::AddrPair,
            "local endpoints reaching themselves",
        ),
    ];
    let new = || vec![Match::CtStateNew];
    let mut chains: Vec<(ChainDef, Rules)> = Vec::new();
    for (name, kind, hook, priority, _) in BASE_CHAINS {
        let rules = match *name {
            "filter-prerouting-pre-dnat" | "filter-output-pre-dnat" => {
                vec![Rule::when(new(), jump("firewall-check"))]
            }
            "filter-forward" | "filter-output" => vec![
                Rule::when(new(), jump("service-endpoints-check")),
                Rule::when(new(), jump("cluster-ips-check")),
            ],
            "filter-input" => vec![
                Rule::when(new(), jump("nodeport-endpoints-check")),
                Rule::when(new(), jump("service-endpoints-check")),
            ],
            "nat-prerouting" | "nat-output" => vec![Rule::new(jump("services"))],
            _ => vec![Rule::new(jump("masquerading"))],
        };
        chains.push((
            ChainDef {
                name: name.to_string(),
                base: Some(BaseHook {
                    kind: *kind,
                    hook: *hook,
                    priority: *priority,
                }),
            },
            rules.into(),
        ));
    }
    let nodeport_match = |map: &str| match &cfg.nodeports {
        NodePortMatch::Addrs(_) => Rule::when(
            vec![daddr(false, AddrRhs::Set(NODEPORT_IPS.to_string()))],
            Stmt::Vmap {
                key: VmapKey::ProtoPort,
                map: map.to_string(),
            },
        ),
        NodePortMatch::AllLocal => {
            let lo: IpNet = crate::family::Tokens::of(cfg.family).loopback_net();
            Rule::when(
                vec![
                    Match::FibLocal(Dir::Daddr),
                    daddr(true, AddrRhs::Nets(vec![lo])),
                ],
                Stmt::Vmap {
                    key: VmapKey::ProtoPort,
                    map: map.to_string(),
                },
            )
        }
    };
    let mut cluster_ips_check = vec![
        Rule::when(
            vec![daddr(false, AddrRhs::Set(CLUSTER_IPS.to_string()))],
            Stmt::Reject(RejectWith::IcmpPortUnreachable),
        )
        .comment("Reject traffic to invalid ports of ClusterIPs"),
    ];
    if !cfg.service_cidrs.is_empty() {
        cluster_ips_check.push(
            Rule::when(
                vec![daddr(false, AddrRhs::Nets(cfg.service_cidrs.clone()))],
                Stmt::Verdict(Verdict::Drop),
            )
            .comment("Drop traffic to unallocated ClusterIPs"),
        );
    }
    let helpers: Vec<(&str, Vec<Rule>)> = vec![
        ("cluster-ips-check", cluster_ips_check),
        (
            "firewall-check",
            vec![Rule::new(Stmt::Vmap {
                key: VmapKey::DaddrProtoPort,
                map: FIREWALL_IPS.to_string(),
            })],
        ),
        (MARK_FOR_MASQUERADE, vec![Rule::new(Stmt::MarkOr(cfg.mark))]),
        (
            "masquerading",
            vec![
                Rule::when(
                    vec![
                        Match::CtStatusDnat,
                        Match::SaddrDaddrIn(HAIRPIN_ENDPOINTS.to_string()),
                    ],
                    jump(MARK_FOR_MASQUERADE),
                )
                .comment("hairpin"),
                Rule::when(
                    vec![Match::MarkClear(cfg.mark)],
                    Stmt::Verdict(Verdict::Return),
                ),
                Rule::new(Stmt::MarkXor(cfg.mark)),
                Rule::new(Stmt::Masquerade),
            ],
        ),
        (
            "nodeport-endpoints-check",
            vec![nodeport_match(NO_ENDPOINT_NODEPORTS)],
        ),
        (
            REJECT_CHAIN,
            vec![
                Rule::when(
                    vec![Match::L4Proto(Protocol::Tcp)],
                    Stmt::Reject(RejectWith::TcpReset),
                ),
                Rule::new(Stmt::Reject(RejectWith::IcmpPortUnreachable)),
            ],
        ),
        (
            "service-endpoints-check",
            vec![Rule::new(Stmt::Vmap {
                key: VmapKey::DaddrProtoPort,
                map: NO_ENDPOINT_SERVICES.to_string(),
            })],
        ),
        (
            "services",
            vec![
                Rule::new(Stmt::Vmap {
                    key: VmapKey::DaddrProtoPort,
                    map: SERVICE_IPS.to_string(),
                }),
                nodeport_match(SERVICE_NODEPORTS),
            ],
        ),
    ];
    for (name, rules) in helpers {
        chains.push((regular(name), rules.into()));
    }
    for kind in [PickKind::Cluster, PickKind::External, PickKind::NodePort] {
        for n in 1..=MAX_SHARED_ENDPOINTS {
            let pick = Pick { kind, n };
            chains.push((regular(&pick.chain()), pick.rules(cfg)));
        }
    }
    let elements = match &cfg.nodeports {
        NodePortMatch::Addrs(addrs) => addrs
            .iter()
            .map(|a| {
                (
                    NODEPORT_IPS,
                    Element {
                        key: Key::Addr(*a),
                        value: None,
                        comment: None,
                    },
                )
            })
            .collect(),
        NodePortMatch::AllLocal => Vec::new(),
    };
    Base {
        sets,
        chains,
        elements,
    }
}

/// The first 8 characters of base32(sha256(`s`)), as upstream's chain-name hash.
fn hash8(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let d = Sha256::digest(s.as_bytes());
    let bits = u64::from_be_bytes([0, 0, 0, d[0], d[1], d[2], d[3], d[4]]);
    (0..8)
        .map(|i| ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// nftables' longest chain or set name.
pub const NAME_LENGTH_MAX: usize = 256;

/// `<prefix><HASH8>-<rest>`, cut to [`NAME_LENGTH_MAX`] with `...` when longer.
fn hashed_name(prefix: &str, rest: &str) -> String {
    let mut name = format!("{prefix}{}-{rest}", hash8(&format!("{prefix}{rest}")));
    if name.len() > NAME_LENGTH_MAX {
        name.truncate(NAME_LENGTH_MAX - 3);
        name.push_str("...");
    }
    name
}

/// The names of one Service port's chains.
struct Names {
    cluster: String,
    local: String,
    external: String,
    firewall: String,
    base: String,
}

impl Names {
    fn new(spn: &ServicePortName) -> Names {
        let base = format!(
            "{}/{}/{}/{}",
            spn.service.namespace,
            spn.service.name,
            spn.protocol.as_str(),
            spn.port_name
        );
        Names {
            cluster: hashed_name("service-", &base),
            local: hashed_name("local-", &base),
            external: hashed_name("external-", &base),
            firewall: hashed_name("firewall-", &base),
            base,
        }
    }

    /// `endpoint-<HASH>-ns/svc/proto/port__<ip with : as .>/<port>`, and with affinity its set
    /// `affinity-<HASH>-...`.
    fn endpoint(&self, ep: &Endpoint, affinity: bool) -> EndpointNames {
        let rest = format!(
            "{}__{}/{}",
            self.base,
            ep.addr.to_string().replace(':', "."),
            ep.port
        );
        EndpointNames {
            chain: hashed_name("endpoint-", &rest),
            affinity: if affinity {
                hashed_name("affinity-", &rest)
            } else {
                String::new()
            },
        }
    }
}

/// The chain and affinity set names of one endpoint ("" without affinity).
struct EndpointNames {
    chain: String,
    affinity: String,
}

/// Builds what one Service contributes to the ruleset of `cfg.family`; `None` when it has no
/// ClusterIP of that family.
pub fn service_fragment(
    cfg: &FamilyConfig,
    svc: &ServiceInfo,
    slices: Option<&SlicesOf>,
) -> Option<Fragment> {
    let family = cfg.family;
    let cluster_ip = svc.cluster_ip(family)?;
    let external_ips = svc.external_ips(family);
    let lb_ips = svc.load_balancer_ips(family);
    let source_ranges = svc.source_ranges(family);
    let empty = SlicesOf::new();
    let slices = slices.unwrap_or(&empty);
    let mut f = Fragment::default();
    let mark_masq = || jump(MARK_FOR_MASQUERADE);
    let add_elem = |f: &mut Fragment,
                    set: &'static str,
                    key: Key,
                    value: Option<Verdict>,
                    comment: Option<&str>| {
        f.elements.entry((set, key.clone())).or_insert(Element {
            key,
            value: value.map(Value::Verdict),
            comment: comment.map(str::to_string),
        });
    };
    let add_target = |f: &mut Fragment, set: &'static str, key: Key, ep: &Endpoint| {
        f.elements.entry((set, key.clone())).or_insert(Element {
            key,
            value: Some(Value::Target(ep.addr, ep.port)),
            comment: None,
        });
    };
    add_elem(&mut f, CLUSTER_IPS, Key::Addr(cluster_ip), None, None);

    for port in &svc.ports {
        let spn = ServicePortName {
            service: svc.key.clone(),
            port_name: port.name.clone(),
            protocol: port.protocol,
        };
        let spn_str = spn.to_string();
        let names = Names::new(&spn);
        let proto = port.protocol;
        let eps = endpoints_for_port(port, slices, &cfg.node_name);
        let ext_acc = externally_accessible(port, !external_ips.is_empty(), !lb_ips.is_empty());
        let external_local = ext_acc && svc.external_local;
        let cat = categorize(&eps, svc, ext_acc);
        let uses_cluster_endpoints = !svc.internal_local || ext_acc;
        let uses_local_endpoints = svc.internal_local || external_local;
        let uses_cluster_chain = !cat.cluster.is_empty() && uses_cluster_endpoints;
        let uses_local_chain = !cat.local.is_empty() && uses_local_endpoints;

        let (internal_chain, has_internal) = if svc.internal_local {
            (&names.local, cat.has_any && !cat.local.is_empty())
        } else {
            (&names.cluster, cat.has_any)
        };
        let (external_policy_chain, has_external) = if external_local {
            (&names.local, cat.has_any && !cat.local.is_empty())
        } else {
            (&names.cluster, cat.has_any)
        };
        let uses_external_chain = cat.has_any && ext_acc;
        let reject = Verdict::Goto(REJECT_CHAIN.to_string());
        let internal_filter = if cat.has_any {
            Verdict::Drop
        } else {
            reject.clone()
        };
        let external_filter = internal_filter.clone();
        let uses_fw = !lb_ips.is_empty() && !source_ranges.is_empty();
        let mut service_ips = vec![cluster_ip];
        service_ips.extend(external_ips.iter().copied());
        service_ips.extend(lb_ips.iter().copied());
        let summary = |reachable: &[Endpoint]| PortSummary {
            name: spn.clone(),
            port: port.port,
            node_port: port.node_port,
            service_ips: service_ips.clone(),
            reachable: reachable.iter().map(|e| (e.addr, e.port)).collect(),
            local_endpoints: cat.local.len(),
        };

        // The common case needs no chain of its own: every destination goes to the shared
        // pick chain of its endpoint count, which DNATs through the backend maps.
        let shared = svc.affinity_timeout_secs.is_none()
            && !svc.internal_local
            && !external_local
            && !uses_fw
            && !cat.cluster.is_empty()
            && cat.cluster.len() <= MAX_SHARED_ENDPOINTS as usize;
        if shared {
            let n = u32::try_from(cat.cluster.len()).unwrap_or(u32::MAX);
            let to_pick = |f: &mut Fragment, map: &'static str, key: Key, kind: PickKind| {
                let pick = Pick { kind, n };
                add_elem(f, map, key, Some(Verdict::Goto(pick.chain())), None);
            };
            to_pick(
                &mut f,
                SERVICE_IPS,
                Key::AddrProtoPort(cluster_ip, proto, port.port),
                PickKind::Cluster,
            );
            for ip in external_ips.iter().chain(&lb_ips) {
                to_pick(
                    &mut f,
                    SERVICE_IPS,
                    Key::AddrProtoPort(*ip, proto, port.port),
                    PickKind::External,
                );
            }
            if let Some(np) = port.node_port {
                to_pick(
                    &mut f,
                    SERVICE_NODEPORTS,
                    Key::ProtoPort(proto, np),
                    PickKind::NodePort,
                );
            }
            for (b, ep) in (0u32..).zip(&cat.cluster) {
                for ip in &service_ips {
                    let key = Key::AddrProtoPortBucket(*ip, proto, port.port, b);
                    add_target(&mut f, SERVICE_BACKENDS, key, ep);
                }
                if let Some(np) = port.node_port {
                    add_target(
                        &mut f,
                        NODEPORT_BACKENDS,
                        Key::ProtoPortBucket(proto, np, b),
                        ep,
                    );
                }
                if ep.local {
                    f.hairpin.insert(ep.addr);
                }
            }
            f.ports.push(summary(&cat.cluster));
            continue;
        }

        // ClusterIP.
        let key = Key::AddrProtoPort(cluster_ip, proto, port.port);
        if has_internal {
            add_elem(
                &mut f,
                SERVICE_IPS,
                key,
                Some(Verdict::Goto(internal_chain.clone())),
                None,
            );
        } else {
            add_elem(
                &mut f,
                NO_ENDPOINT_SERVICES,
                key,
                Some(internal_filter),
                Some(&spn_str),
            );
        }
        // externalIPs.
        for ip in &external_ips {
            let key = Key::AddrProtoPort(*ip, proto, port.port);
            if cat.has_any {
                add_elem(
                    &mut f,
                    SERVICE_IPS,
                    key.clone(),
                    Some(Verdict::Goto(names.external.clone())),
                    None,
                );
            }
            if !has_external {
                add_elem(
                    &mut f,
                    NO_ENDPOINT_SERVICES,
                    key,
                    Some(external_filter.clone()),
                    Some(&spn_str),
                );
            }
        }
        // LoadBalancer IPs, with the source-range firewall.
        if uses_fw {
            let mut allowed = source_ranges.clone();
            if source_ranges
                .iter()
                .any(|r| cfg.node_ips.iter().any(|n| r.contains(n)))
            {
                // Node traffic to an LB IP that is local comes back with the LB IP as source.
                allowed.extend(lb_ips.iter().map(|ip| IpNet::from(*ip)));
            }
            f.chains.insert(
                names.firewall.clone(),
                vec![Rule::when(
                    vec![saddr(true, AddrRhs::Nets(allowed))],
                    Stmt::Verdict(Verdict::Drop),
                )]
                .into(),
            );
        }
        for ip in &lb_ips {
            let key = Key::AddrProtoPort(*ip, proto, port.port);
            if cat.has_any {
                add_elem(
                    &mut f,
                    SERVICE_IPS,
                    key.clone(),
                    Some(Verdict::Goto(names.external.clone())),
                    None,
                );
            }
            if uses_fw {
                add_elem(
                    &mut f,
                    FIREWALL_IPS,
                    key.clone(),
                    Some(Verdict::Goto(names.firewall.clone())),
                    Some(&spn_str),
                );
            }
            if !has_external {
                add_elem(
                    &mut f,
                    NO_ENDPOINT_SERVICES,
                    key,
                    Some(external_filter.clone()),
                    Some(&spn_str),
                );
            }
        }
        // NodePort.
        if let Some(np) = port.node_port {
            let key = Key::ProtoPort(proto, np);
            if cat.has_any {
                add_elem(
                    &mut f,
                    SERVICE_NODEPORTS,
                    key.clone(),
                    Some(Verdict::Goto(names.external.clone())),
                    None,
                );
            }
            if !has_external {
                add_elem(
                    &mut f,
                    NO_ENDPOINT_NODEPORTS,
                    key,
                    Some(external_filter.clone()),
                    Some(&spn_str),
                );
            }
        }

        // Internal traffic: masquerade what comes from off the cluster to the ClusterIP.
        let mut internal_rules = Vec::new();
        if has_internal {
            let mut m = vec![
                daddr(false, AddrRhs::Addr(cluster_ip)),
                Match::L4Proto(proto),
                Match::ThDport(port.port),
            ];
            if !cfg.masquerade_all {
                if let Some(cidr) = cfg.local_detector {
                    m.push(saddr(true, AddrRhs::Nets(vec![cidr])));
                    internal_rules.push(Rule::when(m, mark_masq()));
                }
            } else {
                internal_rules.push(Rule::when(m, mark_masq()));
            }
        }

        // External traffic.
        if uses_external_chain {
            let mut rules = Vec::new();
            if !external_local {
                rules.push(Rule::new(mark_masq()));
            } else {
                if let Some(cidr) = cfg.local_detector {
                    rules.push(
                        Rule::when(
                            vec![saddr(false, AddrRhs::Nets(vec![cidr]))],
                            goto(&names.cluster),
                        )
                        .comment("short-circuit pod traffic"),
                    );
                }
                rules.push(
                    Rule::when(vec![Match::FibLocal(Dir::Saddr)], mark_masq())
                        .comment("masquerade local traffic"),
                );
                rules.push(
                    Rule::when(vec![Match::FibLocal(Dir::Saddr)], goto(&names.cluster))
                        .comment("short-circuit local traffic"),
                );
            }
            if has_external {
                rules.push(Rule::new(goto(external_policy_chain)));
            }
            f.chains.insert(names.external.clone(), rules.into());
        }

        // Names of every reachable endpoint, computed once.
        let affinity = svc.affinity_timeout_secs.is_some();
        let ep_names: BTreeMap<(IpAddr, u16), EndpointNames> = cat
            .all_reachable
            .iter()
            .map(|ep| ((ep.addr, ep.port), names.endpoint(ep, affinity)))
            .collect();
        let name_of = |ep: &Endpoint| &ep_names[&(ep.addr, ep.port)];

        // Affinity sets, one per reachable endpoint.
        if let Some(timeout) = svc.affinity_timeout_secs {
            for n in ep_names.values() {
                f.sets.insert(
                    n.affinity.clone(),
                    SetDef {
                        name: n.affinity.clone(),
                        ty: SetType::Addr,
                        timeout_secs: Some(timeout),
                        size: None,
                        comment: None,
                    },
                );
            }
        }

        // Policy chains: affinity lookups, then random load balancing.
        let policy_rules = |eps: &[Endpoint]| {
            let mut rules = Vec::new();
            if affinity {
                for ep in eps {
                    let n = name_of(ep);
                    rules.push(Rule::when(
                        vec![saddr(false, AddrRhs::Set(n.affinity.clone()))],
                        goto(&n.chain),
                    ));
                }
            }
            rules.push(Rule::new(Stmt::Numgen {
                targets: eps.iter().map(|e| name_of(e).chain.clone()).collect(),
            }));
            rules
        };
        if uses_cluster_chain {
            let mut rules = if internal_chain == &names.cluster {
                std::mem::take(&mut internal_rules)
            } else {
                Vec::new()
            };
            rules.extend(policy_rules(&cat.cluster));
            f.chains.insert(names.cluster.clone(), rules.into());
        }
        if uses_local_chain {
            let mut rules = if internal_chain == &names.local {
                std::mem::take(&mut internal_rules)
            } else {
                Vec::new()
            };
            rules.extend(policy_rules(&cat.local));
            f.chains.insert(names.local.clone(), rules.into());
        }

        // Endpoint chains: hairpin masquerade, affinity update, DNAT.
        for ep in &cat.all_reachable {
            let n = name_of(ep);
            let mut rules = vec![Rule::when(
                vec![saddr(false, AddrRhs::Addr(ep.addr))],
                mark_masq(),
            )];
            if affinity {
                rules.push(Rule::new(Stmt::UpdateSaddr {
                    set: n.affinity.clone(),
                }));
            }
            rules.push(Rule::when(
                vec![Match::L4Proto(proto)],
                Stmt::Dnat {
                    addr: ep.addr,
                    port: ep.port,
                },
            ));
            f.chains.insert(n.chain.clone(), rules.into());
        }

        f.ports.push(summary(&cat.all_reachable));
    }
    Some(f)
}
