//! The per-family proxier ([`Proxier`]) with its change tracking, and the dual-stack front
//! ([`DualStackProxier`], upstream's meta proxier): Services go to both families, slices by
//! `addressType`.
//!
//! A proxier keeps the inputs (Services, slices by Service) and the last ruleset it produced.
//! Every change marks its Service dirty; [`Proxier::sync`] rebuilds only the dirty Services'
//! fragments and turns the difference into a transaction, so the work is O(changed).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dualstack_ipam::IpFamily;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::ProxyError;
use crate::input::{
    FamilyConfig, NodeConfig, ServiceInfo, ServiceKey, ServicePortName, SliceInfo, SlicesOf,
};
use crate::nft::{Op, Protocol, SetDef, Transaction};
use crate::ruleset::{
    self, Base, Fragment, HAIRPIN_ENDPOINTS, Ruleset, hairpin_element, push_elements, regular,
};

/// How long a chain no longer referenced stays (flushed) before it is deleted: kernels before
/// 6.2 notice a dropped map reference only a moment later, as upstream's proxier notes.
pub const STALE_CHAIN_DELAY: Duration = Duration::from_secs(1);

/// A UDP endpoint no longer reachable through a Service: its conntrack entries should go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedUdpEndpoint {
    /// The Service port.
    pub service_port: ServicePortName,
    /// The Service's addresses of this family that may have been NATed to it.
    pub service_ips: Vec<IpAddr>,
    /// The Service port.
    pub port: u16,
    /// The node port, if any.
    pub node_port: Option<u16>,
    /// The endpoint address.
    pub endpoint: IpAddr,
    /// The endpoint port.
    pub endpoint_port: u16,
}

/// A Service whose health-check node port the edge must answer
/// (`externalTrafficPolicy: Local` with `healthCheckNodePort`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// The Service.
    pub service: ServiceKey,
    /// `spec.healthCheckNodePort`.
    pub node_port: u16,
    /// Local endpoints in use (0 means the node answers 503), the most over its ports.
    pub local_endpoints: usize,
}

/// What one family's sync produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilySync {
    /// The transaction to apply (empty when nothing changed).
    pub transaction: Transaction,
    /// UDP endpoints whose conntrack entries should be flushed once it is applied.
    pub removed_udp_endpoints: Vec<RemovedUdpEndpoint>,
}

/// One IP family's proxier.
#[derive(Debug)]
pub struct Proxier {
    cfg: FamilyConfig,
    base: Base,
    services: HashMap<ServiceKey, ServiceInfo>,
    slices: HashMap<ServiceKey, SlicesOf>,
    /// The fragments last emitted (what the kernel holds after the last applied sync).
    applied: HashMap<ServiceKey, Fragment>,
    dirty: HashSet<ServiceKey>,
    full_pending: bool,
    stale_chains: BTreeMap<String, Instant>,
    /// How many fragments hold each local endpoint in their `hairpin`.
    hairpin: HashMap<IpAddr, usize>,
    /// The sets of the base with a size: (declared size, elements held now).
    set_fill: HashMap<String, (u32, usize)>,
}

impl Proxier {
    /// A proxier of one family; its first sync is a full one.
    pub fn new(cfg: FamilyConfig) -> Self {
        Proxier {
            base: ruleset::base(&cfg),
            cfg,
            services: HashMap::new(),
            slices: HashMap::new(),
            applied: HashMap::new(),
            dirty: HashSet::new(),
            full_pending: true,
            set_fill: HashMap::new(),
            stale_chains: BTreeMap::new(),
            hairpin: HashMap::new(),
        }
    }

    /// The family.
    pub fn family(&self) -> IpFamily {
        self.cfg.family
    }

    /// Replaces the node facts; a change of the fixed part makes the next sync a full one.
    pub fn set_config(&mut self, cfg: FamilyConfig) {
        if cfg == self.cfg {
            return;
        }
        self.base = ruleset::base(&cfg);
        self.cfg = cfg;
        self.full_pending = true;
    }

    /// Makes the next sync rebuild the table wholesale (after an apply error or a restart).
    pub fn request_full_sync(&mut self) {
        self.full_pending = true;
    }

    /// A Service was added or changed (`None` info: it is no longer ours, e.g. became headless).
    pub fn upsert_service(&mut self, key: ServiceKey, info: Option<ServiceInfo>) {
        match info {
            Some(info) => {
                if self.services.get(&key) != Some(&info) {
                    self.services.insert(key.clone(), info);
                    self.dirty.insert(key);
                }
            }
            None => self.delete_service(&key),
        }
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, key: &ServiceKey) {
        if self.services.remove(key).is_some() {
            self.dirty.insert(key.clone());
        }
    }

    /// A slice of this family was added or changed.
    pub fn upsert_slice(&mut self, slice: SliceInfo) {
        let slices = self.slices.entry(slice.service.clone()).or_default();
        if slices.get(&slice.name) != Some(&slice) {
            self.dirty.insert(slice.service.clone());
            slices.insert(slice.name.clone(), slice);
        }
    }

    /// A slice of this family was deleted.
    pub fn delete_slice(&mut self, service: &ServiceKey, name: &str) {
        if let Some(slices) = self.slices.get_mut(service) {
            if slices.remove(name).is_some() {
                self.dirty.insert(service.clone());
            }
            if slices.is_empty() {
                self.slices.remove(service);
            }
        }
    }

    /// Whether a sync would emit anything: changes, or stale chains still to delete (so the
    /// edge syncs again after [`STALE_CHAIN_DELAY`]).
    pub fn has_changes(&self) -> bool {
        self.full_pending || !self.dirty.is_empty() || !self.stale_chains.is_empty()
    }

    /// Computes the transaction for everything changed since the last sync. `now` orders the
    /// deletion of stale chains ([`STALE_CHAIN_DELAY`]). The edge applies the transaction; if
    /// that fails it calls [`Proxier::request_full_sync`] and syncs again.
    pub fn sync(&mut self, now: Instant) -> FamilySync {
        if self.full_pending {
            return self.full_sync();
        }
        let mut tx = Transaction::new(self.cfg.family, false);
        let mut removed = Vec::new();
        let dirty: BTreeSet<ServiceKey> = self.dirty.drain().collect();
        let mut new_fragments = Vec::with_capacity(dirty.len());
        for key in dirty {
            let new = self
                .services
                .get(&key)
                .and_then(|svc| ruleset::service_fragment(&self.cfg, svc, self.slices.get(&key)));
            let old = self.applied.get(&key);
            if old == new.as_ref() {
                continue;
            }
            removed.extend(removed_udp(old, new.as_ref()));
            new_fragments.push((key, new));
        }
        let empty = Fragment::default();
        // 1. Elements that go or change, so no map points at a chain about to be flushed.
        let mut deletes: BTreeMap<&'static str, Vec<crate::nft::Key>> = BTreeMap::new();
        for (key, new) in &new_fragments {
            let old = self.applied.get(key).unwrap_or(&empty);
            let new = new.as_ref().unwrap_or(&empty);
            for ((set, k), e) in &old.elements {
                if new.elements.get(&(*set, k.clone())) != Some(e) {
                    deletes.entry(set).or_default().push(k.clone());
                }
            }
        }
        for (set, keys) in deletes {
            tx.ops.push(Op::DeleteElements {
                set: set.to_string(),
                keys,
            });
        }
        // 2. Sets and chains: new ones added, changed ones flushed and refilled, gone ones
        //    flushed now and deleted later.
        //    Every new set and chain is declared before any rule refers to it.
        let mut gone_sets = Vec::new();
        for (key, new) in &new_fragments {
            let old = self.applied.get(key).unwrap_or(&empty);
            let new = new.as_ref().unwrap_or(&empty);
            for (name, s) in &new.sets {
                if !old.sets.contains_key(name) {
                    tx.ops.push(Op::AddSet(s.clone()));
                }
            }
            for name in new.chains.keys() {
                if !old.chains.contains_key(name) && self.stale_chains.remove(name).is_none() {
                    tx.ops.push(Op::AddChain(regular(name)));
                }
            }
        }
        for (key, new) in &new_fragments {
            let old = self.applied.get(key).unwrap_or(&empty);
            let new = new.as_ref().unwrap_or(&empty);
            for (name, rules) in &new.chains {
                match old.chains.get(name) {
                    Some(old_rules) if old_rules == rules => continue,
                    Some(_) => tx.ops.push(Op::FlushChain(name.clone())),
                    None => {}
                }
                if !rules.is_empty() {
                    tx.ops.push(Op::AddRules {
                        chain: name.clone(),
                        rules: rules.clone(),
                    });
                }
            }
            for name in old.chains.keys() {
                if !new.chains.contains_key(name) {
                    tx.ops.push(Op::FlushChain(name.clone()));
                    self.stale_chains.insert(name.clone(), now);
                }
            }
            for name in old.sets.keys() {
                if !new.sets.contains_key(name) {
                    gone_sets.push(name.clone());
                }
            }
        }
        // 3. Hairpin pairs whose count fell to zero go; elements that are new or changed come.
        let mut hairpin_before: BTreeMap<IpAddr, bool> = BTreeMap::new();
        for (key, new) in &new_fragments {
            let old = self.applied.get(key).unwrap_or(&empty);
            let new = new.as_ref().unwrap_or(&empty);
            for a in old.hairpin.difference(&new.hairpin) {
                hairpin_before
                    .entry(*a)
                    .or_insert(self.hairpin.contains_key(a));
                if let Some(n) = self.hairpin.get_mut(a) {
                    *n -= 1;
                    if *n == 0 {
                        self.hairpin.remove(a);
                    }
                }
            }
            for a in new.hairpin.difference(&old.hairpin) {
                hairpin_before
                    .entry(*a)
                    .or_insert(self.hairpin.contains_key(a));
                *self.hairpin.entry(*a).or_default() += 1;
            }
        }
        let gone_pairs: Vec<crate::nft::Key> = hairpin_before
            .iter()
            .filter(|(a, was)| **was && !self.hairpin.contains_key(*a))
            .map(|(a, _)| hairpin_element(*a).key)
            .collect();
        if !gone_pairs.is_empty() {
            tx.ops.push(Op::DeleteElements {
                set: HAIRPIN_ENDPOINTS.to_string(),
                keys: gone_pairs,
            });
        }
        let new_pairs: Vec<crate::nft::Element> = hairpin_before
            .iter()
            .filter(|(a, was)| !**was && self.hairpin.contains_key(*a))
            .map(|(a, _)| hairpin_element(*a))
            .collect();
        let mut adds: Vec<(&'static str, &crate::nft::Element)> =
            new_pairs.iter().map(|e| (HAIRPIN_ENDPOINTS, e)).collect();
        for (key, new) in &new_fragments {
            let old = self.applied.get(key).unwrap_or(&empty);
            if let Some(new) = new {
                for ((set, k), e) in &new.elements {
                    if old.elements.get(&(*set, k.clone())) != Some(e) {
                        adds.push((*set, e));
                    }
                }
            }
        }
        push_elements(&mut tx.ops, adds.into_iter());
        // 4. Affinity sets no rule refers to any more (their rules were flushed above).
        for s in gone_sets {
            tx.ops.push(Op::DeleteSet(s));
        }
        // 5. Chains stale for long enough.
        let ripe: Vec<String> = self
            .stale_chains
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= STALE_CHAIN_DELAY)
            .map(|(n, _)| n.clone())
            .collect();
        for name in ripe {
            self.stale_chains.remove(&name);
            tx.ops.push(Op::DeleteChain(name));
        }
        for (key, new) in new_fragments {
            match new {
                Some(f) => self.applied.insert(key, f),
                None => self.applied.remove(&key),
            };
        }
        // 6. A set that would hold more than its size refuses elements: sync it all instead,
        //    with sizes for what the sets hold now.
        if !self.account(&tx) {
            let mut full = self.full_sync();
            full.removed_udp_endpoints.extend(removed);
            return full;
        }
        FamilySync {
            transaction: tx,
            removed_udp_endpoints: removed,
        }
    }

    /// Counts what `tx` adds to and deletes from the sized sets; false when one would hold more
    /// than its size. A full transaction declares the sizes afresh.
    fn account(&mut self, tx: &Transaction) -> bool {
        if tx.full {
            self.set_fill.clear();
        }
        for op in &tx.ops {
            match op {
                // Only a full transaction declares sized sets (fragments' sets have no size).
                Op::AddSet(SetDef {
                    name,
                    size: Some(size),
                    ..
                }) if tx.full => {
                    self.set_fill.insert(name.clone(), (*size, 0));
                }
                Op::AddElements { set, elements } => {
                    if let Some((_, n)) = self.set_fill.get_mut(set) {
                        *n += elements.len();
                    }
                }
                Op::DeleteElements { set, keys } => {
                    if let Some((_, n)) = self.set_fill.get_mut(set) {
                        *n = n.saturating_sub(keys.len());
                    }
                }
                _ => {}
            }
        }
        self.set_fill.values().all(|(size, n)| *n <= *size as usize)
    }

    fn full_sync(&mut self) -> FamilySync {
        let mut removed = Vec::new();
        let mut fresh = HashMap::with_capacity(self.services.len());
        for (key, svc) in &self.services {
            if let Some(f) = ruleset::service_fragment(&self.cfg, svc, self.slices.get(key)) {
                fresh.insert(key.clone(), f);
            }
        }
        for (key, old) in &self.applied {
            removed.extend(removed_udp(Some(old), fresh.get(key)));
        }
        self.applied = fresh;
        self.dirty.clear();
        self.stale_chains.clear();
        self.full_pending = false;
        self.hairpin.clear();
        for f in self.applied.values() {
            for a in &f.hairpin {
                *self.hairpin.entry(*a).or_default() += 1;
            }
        }
        let hairpin: BTreeSet<IpAddr> = self.hairpin.keys().copied().collect();
        let sorted: BTreeMap<&ServiceKey, &Fragment> = self.applied.iter().collect();
        let transaction = ruleset::full_transaction(
            self.cfg.family,
            &self.base,
            &hairpin,
            sorted.values().copied(),
        );
        self.account(&transaction);
        FamilySync {
            transaction,
            removed_udp_endpoints: removed,
        }
    }

    /// The whole ruleset last emitted, sorted (for golden tests and the packet tracer).
    pub fn ruleset(&self) -> Ruleset {
        Ruleset {
            family: self.cfg.family,
            base: self.base.clone(),
            services: self
                .applied
                .iter()
                .map(|(k, f)| (k.clone(), f.clone()))
                .collect(),
            hairpin: self.hairpin.keys().copied().collect(),
        }
    }

    /// The Services whose health-check node port must be answered, with their local endpoint
    /// counts in this family.
    pub fn health_checks(&self) -> Vec<HealthCheck> {
        let mut out: Vec<HealthCheck> = self
            .services
            .values()
            .filter(|s| s.external_local && s.cluster_ip(self.cfg.family).is_some())
            .filter_map(|s| {
                Some(HealthCheck {
                    service: s.key.clone(),
                    node_port: s.health_check_node_port?,
                    local_endpoints: self
                        .applied
                        .get(&s.key)
                        .map(|f| f.ports.iter().map(|p| p.local_endpoints).max().unwrap_or(0))
                        .unwrap_or(0),
                })
            })
            .collect();
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }
}

fn removed_udp(old: Option<&Fragment>, new: Option<&Fragment>) -> Vec<RemovedUdpEndpoint> {
    let Some(old) = old else { return Vec::new() };
    let mut out = Vec::new();
    for p in old
        .ports
        .iter()
        .filter(|p| p.name.protocol == Protocol::Udp)
    {
        let still = new.and_then(|n| n.ports.iter().find(|q| q.name == p.name));
        for &(addr, port) in &p.reachable {
            if still.is_some_and(|q| q.reachable.contains(&(addr, port))) {
                continue;
            }
            out.push(RemovedUdpEndpoint {
                service_port: p.name.clone(),
                service_ips: p.service_ips.clone(),
                port: p.port,
                node_port: p.node_port,
                endpoint: addr,
                endpoint_port: port,
            });
        }
    }
    out
}

/// What one dual-stack sync produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    /// The IPv4 table's part.
    pub ipv4: FamilySync,
    /// The IPv6 table's part.
    pub ipv6: FamilySync,
}

impl SyncResult {
    /// Both families, IPv4 first.
    pub fn families(&self) -> [&FamilySync; 2] {
        [&self.ipv4, &self.ipv6]
    }
}

/// The dual-stack front: an IPv4 and an IPv6 [`Proxier`], as upstream's meta proxier.
#[derive(Debug)]
pub struct DualStackProxier {
    v4: Proxier,
    v6: Proxier,
}

impl DualStackProxier {
    /// Both proxiers from the node facts.
    pub fn new(config: &NodeConfig) -> Self {
        DualStackProxier {
            v4: Proxier::new(config.for_family(IpFamily::IPv4)),
            v6: Proxier::new(config.for_family(IpFamily::IPv6)),
        }
    }

    /// The proxier of `family`.
    pub fn family(&self, family: IpFamily) -> &Proxier {
        match family {
            IpFamily::IPv4 => &self.v4,
            IpFamily::IPv6 => &self.v6,
        }
    }

    /// The proxier of `family`, mutably.
    pub fn family_mut(&mut self, family: IpFamily) -> &mut Proxier {
        match family {
            IpFamily::IPv4 => &mut self.v4,
            IpFamily::IPv6 => &mut self.v6,
        }
    }

    /// New node facts (node IPs, flags) for both families.
    pub fn set_config(&mut self, config: &NodeConfig) {
        self.v4.set_config(config.for_family(IpFamily::IPv4));
        self.v6.set_config(config.for_family(IpFamily::IPv6));
    }

    /// A Service was added or changed: broadcast to both families.
    pub fn on_service(&mut self, svc: &Service) {
        let Some(name) = svc.metadata.name.as_deref() else {
            return;
        };
        let key = ServiceKey::new(svc.metadata.namespace.as_deref().unwrap_or("default"), name);
        let info = ServiceInfo::from_service(svc);
        self.v4.upsert_service(key.clone(), info.clone());
        self.v6.upsert_service(key, info);
    }

    /// A Service was deleted.
    pub fn on_service_deleted(&mut self, namespace: &str, name: &str) {
        let key = ServiceKey::new(namespace, name);
        self.v4.delete_service(&key);
        self.v6.delete_service(&key);
    }

    /// A slice was added or changed: routed by `addressType`.
    pub fn on_slice(&mut self, slice: &EndpointSlice) -> Result<(), ProxyError> {
        if let Some(info) = SliceInfo::from_slice(slice)? {
            self.family_mut(info.family).upsert_slice(info);
        }
        Ok(())
    }

    /// A slice was deleted.
    pub fn on_slice_deleted(&mut self, slice: &EndpointSlice) -> Result<(), ProxyError> {
        if let Some(info) = SliceInfo::from_slice(slice)? {
            self.family_mut(info.family)
                .delete_slice(&info.service, &info.name);
        }
        Ok(())
    }

    /// Replaces every input with these full lists (a convenience for edges that list instead of
    /// watch): only what differs from the stored inputs is marked changed, then syncs.
    pub fn update(
        &mut self,
        services: &[Service],
        slices: &[EndpointSlice],
        now: Instant,
    ) -> Result<SyncResult, ProxyError> {
        let mut seen_svcs: HashSet<ServiceKey> = HashSet::with_capacity(services.len());
        for svc in services {
            self.on_service(svc);
            if let Some(name) = svc.metadata.name.as_deref() {
                seen_svcs.insert(ServiceKey::new(
                    svc.metadata.namespace.as_deref().unwrap_or("default"),
                    name,
                ));
            }
        }
        let mut seen_slices: HashSet<(IpFamily, ServiceKey, String)> =
            HashSet::with_capacity(slices.len());
        for slice in slices {
            if let Some(info) = SliceInfo::from_slice(slice)? {
                seen_slices.insert((info.family, info.service.clone(), info.name.clone()));
                self.family_mut(info.family).upsert_slice(info);
            }
        }
        for p in [&mut self.v4, &mut self.v6] {
            let gone: Vec<ServiceKey> = p
                .services
                .keys()
                .filter(|k| !seen_svcs.contains(*k))
                .cloned()
                .collect();
            for k in gone {
                p.delete_service(&k);
            }
            let fam = p.family();
            let gone: Vec<(ServiceKey, String)> = p
                .slices
                .iter()
                .flat_map(|(k, s)| s.keys().map(move |n| (k.clone(), n.clone())))
                .filter(|(k, n)| !seen_slices.contains(&(fam, k.clone(), n.clone())))
                .collect();
            for (k, n) in gone {
                p.delete_slice(&k, &n);
            }
        }
        Ok(self.sync(now))
    }

    /// Makes the next sync of both families a full one.
    pub fn request_full_sync(&mut self) {
        self.v4.request_full_sync();
        self.v6.request_full_sync();
    }

    /// Syncs both families, side by side when both have much to do (a full sync of 10,000
    /// Services renders in about 200 ms per family).
    pub fn sync(&mut self, now: Instant) -> SyncResult {
        const PARALLEL_ABOVE: usize = 64;
        let big = |p: &Proxier| p.full_pending || p.dirty.len() > PARALLEL_ABOVE;
        if big(&self.v4) && big(&self.v6) {
            let (v4, v6) = (&mut self.v4, &mut self.v6);
            let (ipv4, ipv6) = std::thread::scope(|s| {
                let h = s.spawn(|| v6.sync(now));
                let ipv4 = v4.sync(now);
                (ipv4, h.join().expect("IPv6 sync panicked"))
            });
            return SyncResult { ipv4, ipv6 };
        }
        SyncResult {
            ipv4: self.v4.sync(now),
            ipv6: self.v6.sync(now),
        }
    }

    /// The Services needing a health-check node port, over both families (local endpoints
    /// summed).
    pub fn health_checks(&self) -> Vec<HealthCheck> {
        let mut by: BTreeMap<ServiceKey, HealthCheck> = BTreeMap::new();
        for hc in self
            .v4
            .health_checks()
            .into_iter()
            .chain(self.v6.health_checks())
        {
            by.entry(hc.service.clone())
                .and_modify(|e| e.local_endpoints += hc.local_endpoints)
                .or_insert(hc);
        }
        by.into_values().collect()
    }
}
