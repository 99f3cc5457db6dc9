//! Node IPAM: upstream's range allocator
//! (`kubernetes/kubernetes:pkg/controller/nodeipam/ipam/range_allocator.go`) over
//! [`dualstack_ipam::CidrSet`], one set per `--cluster-cidr` entry, in flag order.
//!
//! * Start: the service ranges' overlap with each cluster CIDR is occupied, then the podCIDRs
//!   of every existing node (`podCIDRs[i]` in set `i`), oldest node first, then nodes without
//!   CIDRs get theirs.
//! * A node whose own podCIDRs cannot be occupied (a CIDR that does not parse, lies outside its
//!   cluster CIDR, has no set, or overlaps CIDRs another node or the service range holds) is
//!   skipped with [`NodeAction::Invalid`] (an event and a log line) and owns nothing: the
//!   controller keeps allocating for other nodes. Upstream stops the controller at start
//!   instead (`failed to mark cidr`), which lets one node with foreign CIDRs (a node may not
//!   set them, but the admin may) stop node IPAM for the whole cluster.
//! * A node without podCIDRs gets one CIDR per set (`AllocateNext`, round-robin), written as
//!   `spec.podCIDRs` with `spec.podCIDR = podCIDRs[0]` in one patch.
//! * A set that is full: upstream's `CIDRNotAvailable` event and no update. Unlike upstream,
//!   which leaks the CIDRs already taken from earlier sets until restart, those are released
//!   (all-or-nothing, like the ClusterIP pair); the node is retried whenever CIDRs are released.
//! * A node that already has podCIDRs: occupy only. If they differ from CIDRs reserved for it
//!   while our patch was in flight, the node's own win and the reservation is released.
//! * A deleted node (or one with `deletionTimestamp`) releases its CIDRs.
//!
//! The planner holds the allocator state; it never talks to the API. Metrics come out as
//! [`AllocatorStats`].

use std::collections::{BTreeSet, HashMap};

use dualstack_api::config::NodeIpamConfig;
use dualstack_ipam::{CidrSet, CidrSetError};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use thiserror::Error;

/// Event reason when a family has no CIDR left for a node.
pub const REASON_CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";
/// Event reason when writing a node's CIDRs failed for good.
pub const REASON_CIDR_ASSIGNMENT_FAILED: &str = "CIDRAssignmentFailed";

/// Upstream `RecordNodeStatusChange`'s message.
pub fn node_status_message(node: &str, status: &str) -> String {
    format!("Node {node} status is now: {status}")
}

/// Why a node's CIDRs cannot be occupied, allocated or released (upstream's texts).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeIpamError {
    /// A `--cluster-cidr` with its mask cannot become a CIDR set.
    #[error("failed to create cidr set for {cidr}/{mask}: {source}")]
    NewSet {
        /// The cluster CIDR.
        cidr: IpNet,
        /// The node mask.
        mask: u8,
        /// Why.
        #[source]
        source: CidrSetError,
    },
    /// A podCIDR that does not parse.
    #[error("failed to parse node {node}, CIDR {cidr}")]
    Parse {
        /// The node.
        node: String,
        /// The value.
        cidr: String,
    },
    /// More podCIDRs than cluster CIDRs.
    #[error(
        "node:{node} has an allocated cidr: {cidr} at index:{index} that does not exist in cluster cidrs configuration"
    )]
    NoSet {
        /// The node.
        node: String,
        /// The CIDR.
        cidr: String,
        /// Its index in `podCIDRs`.
        index: usize,
    },
    /// Occupying a podCIDR failed (outside the cluster CIDR).
    #[error("failed to mark cidr[{cidr}] at idx [{index}] as occupied for node: {node}: {source}")]
    Occupy {
        /// The CIDR.
        cidr: IpNet,
        /// Its index.
        index: usize,
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: CidrSetError,
    },
    /// A podCIDR overlaps CIDRs already allocated (to another node or the service range).
    #[error(
        "failed to mark cidr[{cidr}] at idx [{index}] as occupied for node: {node}: it overlaps CIDRs already allocated"
    )]
    Overlap {
        /// The CIDR.
        cidr: IpNet,
        /// Its index.
        index: usize,
        /// The node.
        node: String,
    },
    /// Allocation from set `index` failed.
    #[error("failed to allocate cidr from cluster cidr at idx:{index}: {source}")]
    Allocate {
        /// The set.
        index: usize,
        /// Why.
        #[source]
        source: CidrSetError,
    },
}

/// Counters since the last [`RangeAllocator::take_stats`], per set (cluster CIDR order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Indices flipped to used (allocations and occupations), per set.
    pub allocations: Vec<u64>,
    /// Indices flipped to free, per set.
    pub releases: Vec<u64>,
    /// For each `AllocateNext`: (set, how many used candidates were skipped).
    pub tries: Vec<(usize, u64)>,
}

/// One [`CidrSet`] per cluster CIDR.
#[derive(Debug, Clone)]
pub struct RangeAllocator {
    sets: Vec<CidrSet>,
    stats: AllocatorStats,
}

fn node_name(node: &Node) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

/// `spec.podCIDRs`, or the singular `spec.podCIDR` on objects that only have that.
pub fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match spec.pod_cidrs.as_ref().filter(|c| !c.is_empty()) {
        Some(c) => c.clone(),
        None => spec
            .pod_cidr
            .iter()
            .filter(|c| !c.is_empty())
            .cloned()
            .collect(),
    }
}

impl RangeAllocator {
    /// The sets of `config`, with the overlap of its service ranges occupied
    /// (`filterOutServiceRange`).
    pub fn new(config: &NodeIpamConfig) -> Result<Self, NodeIpamError> {
        let mut sets = Vec::new();
        for (cidr, &mask) in config.cluster_cidrs.iter().zip(&config.node_mask_sizes) {
            let set = CidrSet::new(*cidr, mask).map_err(|source| NodeIpamError::NewSet {
                cidr: *cidr,
                mask,
                source,
            })?;
            sets.push(set);
        }
        let n = sets.len();
        let mut ra = Self {
            sets,
            stats: AllocatorStats {
                allocations: vec![0; n],
                releases: vec![0; n],
                tries: Vec::new(),
            },
        };
        for svc in &config.service_cidrs {
            for i in 0..ra.sets.len() {
                let cluster = ra.sets[i].cluster_cidr();
                let overlaps = cluster.contains(&svc.network()) || svc.contains(&cluster.network());
                if overlaps {
                    // Errors cannot happen for an overlapping range of the same family.
                    let _ = ra.occupy_in(i, svc);
                }
            }
        }
        Ok(ra)
    }

    /// The sets, in cluster CIDR order.
    pub fn sets(&self) -> &[CidrSet] {
        &self.sets
    }

    /// Counters since the last call.
    pub fn take_stats(&mut self) -> AllocatorStats {
        let n = self.sets.len();
        std::mem::replace(
            &mut self.stats,
            AllocatorStats {
                allocations: vec![0; n],
                releases: vec![0; n],
                tries: Vec::new(),
            },
        )
    }

    fn occupy_in(&mut self, i: usize, cidr: &IpNet) -> Result<(), CidrSetError> {
        let before = self.sets[i].allocated();
        self.sets[i].occupy(cidr)?;
        self.stats.allocations[i] += self.sets[i].allocated() - before;
        Ok(())
    }

    fn release_in(&mut self, i: usize, cidr: &IpNet) -> Result<(), CidrSetError> {
        let before = self.sets[i].allocated();
        self.sets[i].release(cidr)?;
        self.stats.releases[i] += before - self.sets[i].allocated();
        Ok(())
    }

    fn parse(node: &str, cidrs: &[String]) -> Result<Vec<IpNet>, NodeIpamError> {
        cidrs
            .iter()
            .map(|c| {
                dualstack_api::net::parse_cidr_sloppy(c).ok_or_else(|| NodeIpamError::Parse {
                    node: node.to_string(),
                    cidr: c.clone(),
                })
            })
            .collect()
    }

    /// Marks a node's podCIDRs as used (upstream `occupyCIDRs`); idempotent.
    pub fn occupy(&mut self, node: &str, cidrs: &[String]) -> Result<(), NodeIpamError> {
        let nets = Self::parse(node, cidrs)?;
        for (i, (net, raw)) in nets.iter().zip(cidrs).enumerate() {
            if i >= self.sets.len() {
                return Err(NodeIpamError::NoSet {
                    node: node.to_string(),
                    cidr: raw.clone(),
                    index: i,
                });
            }
            self.occupy_in(i, net)
                .map_err(|source| NodeIpamError::Occupy {
                    cidr: *net,
                    index: i,
                    node: node.to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Occupies a node's podCIDRs only if every one lies inside its cluster CIDR and none
    /// overlaps CIDRs already taken; returns what it occupied. Nothing is occupied on error.
    pub fn occupy_exclusive(
        &mut self,
        node: &str,
        cidrs: &[String],
    ) -> Result<Vec<IpNet>, NodeIpamError> {
        let nets = Self::parse(node, cidrs)?;
        for (i, (net, raw)) in nets.iter().zip(cidrs).enumerate() {
            let Some(set) = self.sets.get(i) else {
                return Err(NodeIpamError::NoSet {
                    node: node.to_string(),
                    cidr: raw.clone(),
                    index: i,
                });
            };
            let cluster = set.cluster_cidr();
            let occupy_err = |source| NodeIpamError::Occupy {
                cidr: *net,
                index: i,
                node: node.to_string(),
                source,
            };
            if !cluster.contains(net) {
                return Err(occupy_err(CidrSetError::OutOfClusterCidr {
                    cidr: *net,
                    cluster,
                }));
            }
            if set.any_allocated_in(net).map_err(occupy_err)? {
                return Err(NodeIpamError::Overlap {
                    cidr: *net,
                    index: i,
                    node: node.to_string(),
                });
            }
        }
        for (i, net) in nets.iter().enumerate() {
            // Checked above: inside the set.
            let _ = self.occupy_in(i, net);
        }
        Ok(nets)
    }

    /// Frees a node's CIDRs, `cidrs[i]` in set `i` (upstream `ReleaseCIDR`); idempotent.
    pub fn release(&mut self, cidrs: &[IpNet]) {
        for (i, net) in cidrs.iter().enumerate().take(self.sets.len()) {
            // Outside the set: nothing of ours to free.
            let _ = self.release_in(i, net);
        }
    }

    /// One CIDR from every set, or none: on failure the CIDRs already taken are released.
    pub fn allocate(&mut self) -> Result<Vec<IpNet>, NodeIpamError> {
        let mut got = Vec::with_capacity(self.sets.len());
        for i in 0..self.sets.len() {
            let start = self.sets[i].next_candidate();
            match self.sets[i].allocate_next() {
                Ok(net) => {
                    let index = self.sets[i].index_of(net.network()).unwrap_or(start);
                    let max = self.sets[i].max_cidrs();
                    self.stats.allocations[i] += 1;
                    self.stats.tries.push((i, (index + max - start) % max));
                    got.push(net);
                }
                Err(source) => {
                    for (j, net) in got.iter().enumerate() {
                        let _ = self.release_in(j, net);
                    }
                    return Err(NodeIpamError::Allocate { index: i, source });
                }
            }
        }
        Ok(got)
    }
}

/// What the controller must do for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAction {
    /// Patch `spec.podCIDR` and `spec.podCIDRs` with these CIDRs (reserved until confirmed).
    Assign {
        /// The node.
        node: String,
        /// One per cluster CIDR, in order.
        cidrs: Vec<IpNet>,
    },
    /// A family is exhausted: `CIDRNotAvailable` event, no update.
    NotAvailable {
        /// The node.
        node: String,
        /// Why.
        error: NodeIpamError,
    },
    /// The node's own podCIDRs cannot be occupied (logged; the node is left alone).
    Invalid {
        /// The node.
        node: String,
        /// Why.
        error: NodeIpamError,
    },
}

/// How a patch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOutcome {
    /// Written; the watch will confirm it.
    Written,
    /// Failed for good; release the reservation.
    Failed,
    /// Failed with a server timeout: it may have been written; keep the reservation (upstream).
    TimedOut,
}

/// The node IPAM controller's state: the allocator, the CIDRs each node holds, CIDRs reserved
/// for nodes whose patch is not yet confirmed by the watch, nodes waiting for a free CIDR, and
/// nodes skipped for podCIDRs that cannot be occupied (with those podCIDRs, so a node is
/// reported once, not on every heartbeat).
#[derive(Debug, Clone)]
pub struct NodeIpamPlanner {
    alloc: RangeAllocator,
    owned: HashMap<String, Vec<IpNet>>,
    reserved: HashMap<String, Vec<IpNet>>,
    pending: BTreeSet<String>,
    invalid: HashMap<String, Vec<String>>,
}

impl NodeIpamPlanner {
    /// Builds the allocator (an error in the configuration stops the controller, as upstream
    /// `NewCIDRRangeAllocator`) and occupies the existing nodes' CIDRs, oldest node first (of
    /// two overlapping nodes the older keeps its CIDRs). Returns the [`NodeAction::Invalid`]
    /// reports for nodes whose CIDRs cannot be occupied, then the assignments for the nodes
    /// without CIDRs, in name order.
    pub fn start(
        config: &NodeIpamConfig,
        nodes: &[&Node],
    ) -> Result<(Self, Vec<NodeAction>), NodeIpamError> {
        let mut planner = Self {
            alloc: RangeAllocator::new(config)?,
            owned: HashMap::new(),
            reserved: HashMap::new(),
            pending: BTreeSet::new(),
            invalid: HashMap::new(),
        };
        let mut sorted: Vec<&&Node> = nodes.iter().collect();
        sorted.sort_by_key(|n| {
            (
                pod_cidrs(n).is_empty(),
                n.metadata.creation_timestamp.clone(),
                n.metadata.name.clone(),
            )
        });
        let mut actions = Vec::new();
        for node in sorted {
            actions.extend(planner.on_node(node));
        }
        Ok((planner, actions))
    }

    /// The allocator (for metrics).
    pub fn allocator(&self) -> &RangeAllocator {
        &self.alloc
    }

    /// Counters since the last call.
    pub fn take_stats(&mut self) -> AllocatorStats {
        self.alloc.take_stats()
    }

    /// Nodes waiting for a CIDR.
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.pending.iter().map(String::as_str)
    }

    /// A node was added or changed.
    pub fn on_node(&mut self, node: &Node) -> Vec<NodeAction> {
        let name = node_name(node);
        if node.metadata.deletion_timestamp.is_some() {
            return self.on_delete(node);
        }
        let cidrs = pod_cidrs(node);
        if !cidrs.is_empty() {
            self.pending.remove(&name);
            if let Some(mine) = self.reserved.remove(&name) {
                let ours: Vec<String> = mine.iter().map(IpNet::to_string).collect();
                if ours == cidrs {
                    // Our patch, confirmed: the reservation becomes the node's.
                    self.owned.insert(name, mine);
                    return Vec::new();
                }
                // The node's own CIDRs win.
                self.alloc.release(&mine);
            }
            if let Some(held) = self.owned.get(&name) {
                if RangeAllocator::parse(&name, &cidrs).ok().as_ref() == Some(held) {
                    return Vec::new();
                }
                // podCIDRs are immutable once set; a recreated node may differ.
                let held = self.owned.remove(&name).unwrap_or_default();
                self.alloc.release(&held);
            }
            if self.invalid.get(&name) == Some(&cidrs) {
                return Vec::new(); // reported already
            }
            return match self.alloc.occupy_exclusive(&name, &cidrs) {
                Ok(nets) => {
                    self.invalid.remove(&name);
                    self.owned.insert(name, nets);
                    Vec::new()
                }
                Err(error) => {
                    self.invalid.insert(name.clone(), cidrs);
                    vec![NodeAction::Invalid { node: name, error }]
                }
            };
        }
        self.invalid.remove(&name);
        if let Some(held) = self.owned.remove(&name) {
            self.alloc.release(&held);
        }
        if self.reserved.contains_key(&name) {
            return Vec::new(); // our patch is in flight
        }
        match self.alloc.allocate() {
            Ok(cidrs) => {
                self.pending.remove(&name);
                self.reserved.insert(name.clone(), cidrs.clone());
                vec![NodeAction::Assign { node: name, cidrs }]
            }
            Err(error) => {
                self.pending.insert(name.clone());
                vec![NodeAction::NotAvailable { node: name, error }]
            }
        }
    }

    /// A node was deleted (or is being deleted): the CIDRs it held and any reservation are
    /// freed (never the CIDRs of a skipped node: they may be another node's).
    pub fn on_delete(&mut self, node: &Node) -> Vec<NodeAction> {
        let name = node_name(node);
        self.pending.remove(&name);
        self.invalid.remove(&name);
        if let Some(mine) = self.reserved.remove(&name) {
            self.alloc.release(&mine);
        }
        if let Some(held) = self.owned.remove(&name) {
            self.alloc.release(&held);
        }
        Vec::new()
    }

    /// Whether nodes wait and CIDRs may have been freed since; the caller then calls
    /// [`on_node`](Self::on_node) for each [`pending`](Self::pending) node it still has.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The patch for `node` with `cidrs` ended.
    pub fn on_patch(&mut self, node: &str, cidrs: &[IpNet], outcome: PatchOutcome) {
        if outcome == PatchOutcome::Failed
            && self.reserved.get(node).map(Vec::as_slice) == Some(cidrs)
        {
            self.reserved.remove(node);
            self.alloc.release(cidrs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dualstack_api::config::{NodeCidrMaskFlags, ServiceClusterIpRange};
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn config(cluster: &str, masks: NodeCidrMaskFlags, service: &str) -> NodeIpamConfig {
        let svc = ServiceClusterIpRange::parse(service).unwrap();
        NodeIpamConfig::from_flags(true, cluster, masks, &svc)
            .unwrap()
            .unwrap()
    }

    fn node(name: &str, cidrs: &[&str]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidrs: (!cidrs.is_empty())
                    .then(|| cidrs.iter().map(|s| s.to_string()).collect()),
                pod_cidr: cidrs.first().map(|s| s.to_string()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn assigned(actions: &[NodeAction]) -> Vec<String> {
        match actions {
            [NodeAction::Assign { cidrs, .. }] => cidrs.iter().map(IpNet::to_string).collect(),
            other => panic!("expected one assignment, got {other:?}"),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn should_give_one_cidr_per_family_in_cluster_cidr_order() {
        // IPv4 first and IPv6 first, side by side.
        for (cluster, first, second) in [
            (
                "10.244.0.0/16,fd00:10:244::/56",
                ["10.244.0.0/24", "fd00:10:244::/64"],
                ["10.244.1.0/24", "fd00:10:244:1::/64"],
            ),
            (
                "fd00:10:244::/56,10.244.0.0/16",
                ["fd00:10:244::/64", "10.244.0.0/24"],
                ["fd00:10:244:1::/64", "10.244.1.0/24"],
            ),
        ] {
            let cfg = config(
                cluster,
                NodeCidrMaskFlags::default(),
                "10.0.0.0/16,fd00:10::/108",
            );
            let (mut p, actions) = NodeIpamPlanner::start(&cfg, &[]).unwrap();
            assert!(actions.is_empty());
            assert_eq!(assigned(&p.on_node(&node("a", &[]))), first);
            assert_eq!(assigned(&p.on_node(&node("b", &[]))), second);
        }
    }

    #[test]
    fn should_occupy_existing_nodes_and_continue_round_robin_after_a_release() {
        let cfg = config(
            "10.244.0.0/16,fd00:10:244::/56",
            NodeCidrMaskFlags::default(),
            "",
        );
        let old = node("old", &["10.244.1.0/24", "fd00:10:244:1::/64"]);
        let fresh = node("fresh", &[]);
        let (mut p, actions) = NodeIpamPlanner::start(&cfg, &[&old, &fresh]).unwrap();
        // Index 0 is free, 1 is the old node's.
        assert_eq!(assigned(&actions), ["10.244.0.0/24", "fd00:10:244::/64"]);
        assert_eq!(
            assigned(&p.on_node(&node("c", &[]))),
            ["10.244.2.0/24", "fd00:10:244:2::/64"]
        );
        // The watch confirms c; then old goes away: its CIDR is not reused until the scan wraps.
        p.on_node(&node("c", &["10.244.2.0/24", "fd00:10:244:2::/64"]));
        p.on_delete(&old);
        assert_eq!(
            assigned(&p.on_node(&node("d", &[]))),
            ["10.244.3.0/24", "fd00:10:244:3::/64"]
        );
        let stats = p.take_stats();
        assert_eq!(stats.allocations, vec![4, 4]);
        assert_eq!(stats.releases, vec![1, 1]);
    }

    fn invalid(actions: &[NodeAction]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                NodeAction::Invalid { error, .. } => Some(error.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn should_skip_nodes_with_foreign_cidrs_at_start_and_keep_allocating() {
        let cfg = config(
            "10.244.0.0/16,fd00:10:244::/56",
            NodeCidrMaskFlags::default(),
            "",
        );
        let stray = node("stray", &["10.99.0.0/24", "fd00:10:244::/64"]);
        let garbage = node("g", &["nope"]);
        let fresh = node("fresh", &[]);
        let (mut p, actions) = NodeIpamPlanner::start(&cfg, &[&stray, &garbage, &fresh]).unwrap();
        assert_eq!(
            invalid(&actions),
            [
                "failed to parse node g, CIDR nope",
                "failed to mark cidr[10.99.0.0/24] at idx [0] as occupied for node: stray: cidr 10.99.0.0/24 is out the range of cluster cidr 10.244.0.0/16",
            ]
        );
        // Nothing of the stray node is occupied, and the new node gets the first CIDRs.
        assert!(actions.contains(&NodeAction::Assign {
            node: "fresh".into(),
            cidrs: vec![net("10.244.0.0/24"), net("fd00:10:244::/64")],
        }));
        // Reported once, not on every update of the node.
        assert!(p.on_node(&stray).is_empty());
        // Deleting it frees nothing it did not hold.
        p.on_node(&node("fresh", &["10.244.0.0/24", "fd00:10:244::/64"]));
        p.on_delete(&stray);
        assert!(p.allocator().sets()[1].is_allocated(&net("fd00:10:244::/64")));
        let single = config("10.244.0.0/16", NodeCidrMaskFlags::default(), "");
        let dual = node("d", &["10.244.0.0/24", "fd00:10:244::/64"]);
        let (_, actions) = NodeIpamPlanner::start(&single, &[&dual]).unwrap();
        assert_eq!(
            invalid(&actions),
            [
                "node:d has an allocated cidr: fd00:10:244::/64 at index:1 that does not exist in cluster cidrs configuration"
            ]
        );
    }

    #[test]
    fn should_skip_a_node_whose_cidrs_overlap_another_nodes_and_never_free_them() {
        let cfg = config("10.244.0.0/16", NodeCidrMaskFlags::default(), "");
        let mut a = node("a", &["10.244.0.0/24"]);
        a.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        // Younger, overlapping a's CIDR (a wider CIDR counts too).
        let mut b = node("b", &["10.244.0.0/23"]);
        b.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(60).unwrap(),
        ));
        let (mut p, actions) = NodeIpamPlanner::start(&cfg, &[&b, &a]).unwrap();
        assert_eq!(
            invalid(&actions),
            [
                "failed to mark cidr[10.244.0.0/23] at idx [0] as occupied for node: b: it overlaps CIDRs already allocated"
            ]
        );
        assert_eq!(p.allocator().sets()[0].allocated(), 1);
        p.on_delete(&b);
        assert!(p.allocator().sets()[0].is_allocated(&net("10.244.0.0/24")));
        // At run time too: a node created with a's CIDR is skipped; a new node gets the next.
        let c = node("c", &["10.244.0.0/24"]);
        assert_eq!(invalid(&p.on_node(&c)).len(), 1);
        assert_eq!(assigned(&p.on_node(&node("d", &[]))), ["10.244.1.0/24"]);
        // Deleting a frees its CIDR once.
        p.on_delete(&a);
        p.on_delete(&c);
        assert!(!p.allocator().sets()[0].is_allocated(&net("10.244.0.0/24")));
    }

    #[test]
    fn should_keep_service_ranges_off_nodes() {
        let cfg = config("10.0.0.0/23", NodeCidrMaskFlags::default(), "10.0.0.0/24");
        let (mut p, _) = NodeIpamPlanner::start(&cfg, &[]).unwrap();
        assert_eq!(assigned(&p.on_node(&node("a", &[]))), ["10.0.1.0/24"]);
    }

    #[test]
    fn should_report_cidr_not_available_without_a_partial_assignment() {
        // IPv6 first with room, IPv4 second with two /25s.
        let masks = NodeCidrMaskFlags {
            ipv4: Some(25),
            ..Default::default()
        };
        let cfg = config("fd00:10:244::/56,10.244.0.0/24", masks, "");
        let (mut p, _) = NodeIpamPlanner::start(&cfg, &[]).unwrap();
        assert_eq!(
            assigned(&p.on_node(&node("a", &[]))),
            ["fd00:10:244::/64", "10.244.0.0/25"]
        );
        assert_eq!(
            assigned(&p.on_node(&node("b", &[]))),
            ["fd00:10:244:1::/64", "10.244.0.128/25"]
        );
        let actions = p.on_node(&node("c", &[]));
        let [NodeAction::NotAvailable { node: n, error }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(n, "c");
        assert_eq!(
            error.to_string(),
            "failed to allocate cidr from cluster cidr at idx:1: CIDR allocation failed; there are no remaining CIDRs left to allocate in the accepted range"
        );
        // The IPv6 CIDR taken for c went back.
        assert_eq!(p.allocator().sets()[0].allocated(), 2);
        assert_eq!(p.pending().collect::<Vec<_>>(), vec!["c"]);
        // Deleting a frees an IPv4 CIDR; c's retry gets it (IPv6 continues round-robin).
        p.on_delete(&node("a", &["fd00:10:244::/64", "10.244.0.0/25"]));
        assert!(p.has_pending());
        assert_eq!(
            assigned(&p.on_node(&node("c", &[]))),
            ["fd00:10:244:3::/64", "10.244.0.0/25"]
        );
        assert!(!p.has_pending());
        assert_eq!(
            node_status_message("c", REASON_CIDR_NOT_AVAILABLE),
            "Node c status is now: CIDRNotAvailable"
        );
    }

    #[test]
    fn should_not_allocate_twice_while_a_patch_is_in_flight() {
        let cfg = config("10.244.0.0/16", NodeCidrMaskFlags::default(), "");
        let (mut p, _) = NodeIpamPlanner::start(&cfg, &[]).unwrap();
        assert_eq!(assigned(&p.on_node(&node("a", &[]))), ["10.244.0.0/24"]);
        // A stale event of `a` without CIDRs arrives before the watch shows the patch.
        assert!(p.on_node(&node("a", &[])).is_empty());
        p.on_patch("a", &[net("10.244.0.0/24")], PatchOutcome::Written);
        assert!(p.on_node(&node("a", &[])).is_empty());
        p.on_node(&node("a", &["10.244.0.0/24"]));
        assert_eq!(p.allocator().sets()[0].allocated(), 1);
    }

    #[test]
    fn should_let_a_nodes_own_cidrs_win_and_release_a_failed_reservation() {
        let cfg = config("10.244.0.0/16", NodeCidrMaskFlags::default(), "");
        let (mut p, _) = NodeIpamPlanner::start(&cfg, &[]).unwrap();
        assert_eq!(assigned(&p.on_node(&node("a", &[]))), ["10.244.0.0/24"]);
        // Someone else set a's CIDRs first.
        p.on_node(&node("a", &["10.244.9.0/24"]));
        let s = &p.allocator().sets()[0];
        assert!(!s.is_allocated(&net("10.244.0.0/24")) && s.is_allocated(&net("10.244.9.0/24")));
        // A failed patch gives the reservation back; a timed-out one keeps it.
        assert_eq!(assigned(&p.on_node(&node("b", &[]))), ["10.244.1.0/24"]);
        p.on_patch("b", &[net("10.244.1.0/24")], PatchOutcome::TimedOut);
        assert!(p.allocator().sets()[0].is_allocated(&net("10.244.1.0/24")));
        p.on_patch("b", &[net("10.244.1.0/24")], PatchOutcome::Failed);
        assert!(!p.allocator().sets()[0].is_allocated(&net("10.244.1.0/24")));
    }

    #[test]
    fn should_release_when_a_node_is_being_deleted() {
        let cfg = config("10.244.0.0/16", NodeCidrMaskFlags::default(), "");
        let a = node("a", &["10.244.0.0/24"]);
        let (mut p, _) = NodeIpamPlanner::start(&cfg, &[&a]).unwrap();
        let mut dying = a.clone();
        dying.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        p.on_node(&dying);
        assert_eq!(p.allocator().sets()[0].allocated(), 0);
    }

    #[test]
    fn should_count_tries_as_upstream_metrics() {
        // Half of a /16 with /24 nodes taken from the start: the next allocation skips 128.
        let cfg = config("10.0.0.0/16", NodeCidrMaskFlags::default(), "");
        let mut ra = RangeAllocator::new(&cfg).unwrap();
        ra.occupy("x", &["10.0.0.0/17".into()]).unwrap();
        ra.take_stats();
        assert_eq!(ra.allocate().unwrap(), vec![net("10.0.128.0/24")]);
        assert_eq!(ra.take_stats().tries, vec![(0, 128)]);
    }
}
