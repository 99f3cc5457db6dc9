//! A small packet tracer over a [`Ruleset`]: it walks the base chains of the hooks a new
//! connection's first packet meets, in priority order, and evaluates exactly the rule shapes of
//! [`crate::nft`] (in the spirit of upstream's pkg/proxy/nftables/helpers_test.go).
//!
//! `numgen` load balancing forks the trace, so a packet yields one [`Outcome`] per reachable
//! endpoint. Affinity sets are dynamic and start empty, so `ip saddr @affinity-*` never matches
//! and `update @affinity-*` is a no-op here. Routing is reduced to "is the (DNATed) destination
//! an address of this node": then the packet is delivered (input), else forwarded.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::nft::{
    AddrRhs, Dir, Hook, Key, Match, Protocol, Rule, Stmt, Value, Verdict as NftVerdict, VmapKey,
};
use crate::ruleset::Ruleset;

/// Where a packet comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A pod on this node (arrives on a pod interface: prerouting).
    Pod,
    /// The node itself (locally generated: output).
    Node,
    /// Another host (arrives on an uplink: prerouting).
    Outside,
}

/// The first packet of a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Protocol.
    pub proto: Protocol,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// Where it comes from.
    pub origin: Origin,
}

/// What finally happens to the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fate {
    /// Passed untouched (not a Service address of ours).
    Accept,
    /// DNATed to this endpoint.
    Dnat(IpAddr, u16),
    /// Rejected (ICMP unreachable or TCP reset).
    Reject,
    /// Dropped.
    Drop,
}

/// One possible outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outcome {
    /// The fate.
    pub fate: Fate,
    /// Whether it is masqueraded on the way out.
    pub masquerade: bool,
}

#[derive(Clone, Copy, Debug)]
struct State {
    daddr: IpAddr,
    dport: u16,
    mark: u32,
    dnat: Option<(IpAddr, u16)>,
}

#[derive(Clone, Copy, Debug)]
enum Flow {
    Continue,
    Accept,
    Drop,
    Reject,
    Dnat(IpAddr, u16),
    Masquerade,
}

/// The tracer over one family's ruleset.
#[derive(Debug)]
pub struct Tracer<'a> {
    chains: HashMap<&'a str, &'a [Rule]>,
    base: Vec<(Hook, i32, &'a str)>,
    sets: HashMap<&'a str, HashSet<IpAddr>>,
    maps: HashMap<&'a str, HashMap<Key, NftVerdict>>,
    targets: HashMap<&'a str, HashMap<Key, (IpAddr, u16)>>,
    pairs: HashMap<&'a str, HashSet<(IpAddr, IpAddr)>>,
    local: Vec<IpAddr>,
}

impl<'a> Tracer<'a> {
    /// A tracer for `ruleset` on a node whose own addresses are `local_addresses`.
    pub fn new(ruleset: &'a Ruleset, local_addresses: &[IpAddr]) -> Self {
        let mut chains: HashMap<&str, &[Rule]> = HashMap::new();
        let mut base = Vec::new();
        for (c, rules) in &ruleset.base.chains {
            chains.insert(c.name.as_str(), &rules[..]);
            if let Some(b) = c.base {
                base.push((b.hook, b.priority, c.name.as_str()));
            }
        }
        let mut sets: HashMap<&str, HashSet<IpAddr>> = HashMap::new();
        let mut maps: HashMap<&str, HashMap<Key, NftVerdict>> = HashMap::new();
        let mut targets: HashMap<&str, HashMap<Key, (IpAddr, u16)>> = HashMap::new();
        let mut pairs: HashMap<&str, HashSet<(IpAddr, IpAddr)>> = HashMap::new();
        let mut add = |set: &'a str, e: &crate::nft::Element| match (&e.value, &e.key) {
            (Some(Value::Verdict(v)), _) => {
                maps.entry(set)
                    .or_default()
                    .insert(e.key.clone(), v.clone());
            }
            (Some(Value::Target(a, port)), _) => {
                targets
                    .entry(set)
                    .or_default()
                    .insert(e.key.clone(), (*a, *port));
            }
            (None, Key::Addr(a)) => {
                sets.entry(set).or_default().insert(*a);
            }
            (None, Key::AddrPair(a, b)) => {
                pairs.entry(set).or_default().insert((*a, *b));
            }
            (None, _) => {}
        };
        for (s, e) in &ruleset.base.elements {
            add(s, e);
        }

        for f in ruleset.services.values() {
            for (name, rules) in &f.chains {
                chains.insert(name.as_str(), &rules[..]);
            }
            for ((s, _), e) in &f.elements {
                add(s, e);
            }
        }
        for a in &ruleset.hairpin {
            pairs
                .entry(crate::ruleset::HAIRPIN_ENDPOINTS)
                .or_default()
                .insert((*a, *a));
        }
        Tracer {
            chains,
            base,
            sets,
            maps,
            targets,
            pairs,
            local: local_addresses.to_vec(),
        }
    }

    /// Records `addr` in the dynamic set `set`, as an earlier connection's `update` would (to
    /// trace session affinity).
    pub fn remember(&mut self, set: &'a str, addr: IpAddr) {
        self.sets.entry(set).or_default().insert(addr);
    }

    fn base_chains(&self, hook: Hook) -> Vec<&'a str> {
        let mut v: Vec<(i32, &str)> = self
            .base
            .iter()
            .filter(|(h, _, _)| *h == hook)
            .map(|(_, p, n)| (*p, *n))
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect()
    }

    /// Every possible outcome of the packet, sorted and deduplicated.
    pub fn trace(&self, p: &Packet) -> Vec<Outcome> {
        let st = State {
            daddr: p.dst,
            dport: p.dport,
            mark: 0,
            dnat: None,
        };
        let first = match p.origin {
            Origin::Node => Hook::Output,
            Origin::Pod | Origin::Outside => Hook::Prerouting,
        };
        let mut out = Vec::new();
        self.run_hooks(p, first, st, &mut out);
        out.sort();
        out.dedup();
        out
    }

    fn next_hook(&self, p: &Packet, hook: Hook, st: &State) -> Option<Hook> {
        match hook {
            Hook::Prerouting => Some(if self.local.contains(&st.daddr) {
                Hook::Input
            } else {
                Hook::Forward
            }),
            Hook::Output | Hook::Forward => Some(Hook::Postrouting),
            Hook::Input | Hook::Postrouting => {
                let _ = p;
                None
            }
        }
    }

    fn run_hooks(&self, p: &Packet, hook: Hook, st: State, out: &mut Vec<Outcome>) {
        let chains = self.base_chains(hook);
        self.run_chains(p, hook, &chains, 0, st, false, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn run_chains(
        &self,
        p: &Packet,
        hook: Hook,
        chains: &[&'a str],
        i: usize,
        st: State,
        masq: bool,
        out: &mut Vec<Outcome>,
    ) {
        let Some(chain) = chains.get(i) else {
            match self.next_hook(p, hook, &st) {
                Some(next) => {
                    let next_chains = self.base_chains(next);
                    self.run_chains(p, next, &next_chains, 0, st, masq, out);
                }
                None => out.push(Outcome {
                    fate: st
                        .dnat
                        .map_or(Fate::Accept, |(a, port)| Fate::Dnat(a, port)),
                    masquerade: masq,
                }),
            }
            return;
        };
        for (st2, flow) in self.eval_chain(p, chain, st, 0) {
            let fate = |f| Outcome {
                fate: f,
                masquerade: false,
            };
            match flow {
                Flow::Continue | Flow::Accept => {
                    self.run_chains(p, hook, chains, i + 1, st2, masq, out)
                }
                Flow::Dnat(a, port) => {
                    let st3 = State {
                        daddr: a,
                        dport: port,
                        dnat: Some((a, port)),
                        ..st2
                    };
                    self.run_chains(p, hook, chains, i + 1, st3, masq, out);
                }
                Flow::Masquerade => self.run_chains(p, hook, chains, i + 1, st2, true, out),
                Flow::Drop => out.push(fate(Fate::Drop)),
                Flow::Reject => out.push(fate(Fate::Reject)),
            }
        }
    }

    fn eval_chain(&self, p: &Packet, name: &str, st: State, depth: usize) -> Vec<(State, Flow)> {
        assert!(depth < 32, "chain loop at {name}");
        let rules = self
            .chains
            .get(name)
            .unwrap_or_else(|| panic!("jump to a chain that does not exist: {name}"));
        self.eval_rules(p, rules, 0, st, depth)
    }

    fn eval_verdict(
        &self,
        p: &Packet,
        v: &NftVerdict,
        rules: &[Rule],
        i: usize,
        st: State,
        depth: usize,
    ) -> Vec<(State, Flow)> {
        match v {
            NftVerdict::Accept => vec![(st, Flow::Accept)],
            NftVerdict::Drop => vec![(st, Flow::Drop)],
            NftVerdict::Return => vec![(st, Flow::Continue)],
            NftVerdict::Goto(c) => self.eval_chain(p, c, st, depth + 1),
            NftVerdict::Jump(c) => {
                let mut out = Vec::new();
                for (st2, flow) in self.eval_chain(p, c, st, depth + 1) {
                    match flow {
                        Flow::Continue => out.extend(self.eval_rules(p, rules, i + 1, st2, depth)),
                        other => out.push((st2, other)),
                    }
                }
                out
            }
        }
    }

    fn eval_rules(
        &self,
        p: &Packet,
        rules: &[Rule],
        i: usize,
        mut st: State,
        depth: usize,
    ) -> Vec<(State, Flow)> {
        let Some(rule) = rules.get(i) else {
            return vec![(st, Flow::Continue)];
        };
        if !rule.matches.iter().all(|m| self.matches(p, &st, m)) {
            return self.eval_rules(p, rules, i + 1, st, depth);
        }
        match &rule.stmt {
            Stmt::Verdict(v) => self.eval_verdict(p, v, rules, i, st, depth),
            Stmt::Vmap { key, map } => {
                let k = match key {
                    VmapKey::DaddrProtoPort => Key::AddrProtoPort(st.daddr, p.proto, st.dport),
                    VmapKey::ProtoPort => Key::ProtoPort(p.proto, st.dport),
                };
                match self.maps.get(map.as_str()).and_then(|m| m.get(&k)) {
                    Some(v) => self.eval_verdict(p, v, rules, i, st, depth),
                    None => self.eval_rules(p, rules, i + 1, st, depth),
                }
            }
            Stmt::Numgen { targets } => targets
                .iter()
                .flat_map(|t| self.eval_chain(p, t, st, depth + 1))
                .collect(),
            Stmt::MarkOr(b) => {
                st.mark |= b;
                self.eval_rules(p, rules, i + 1, st, depth)
            }
            Stmt::MarkXor(b) => {
                st.mark ^= b;
                self.eval_rules(p, rules, i + 1, st, depth)
            }
            Stmt::Masquerade => vec![(st, Flow::Masquerade)],
            Stmt::Reject(_) => vec![(st, Flow::Reject)],
            Stmt::Dnat { addr, port } => vec![(st, Flow::Dnat(*addr, *port))],
            Stmt::UpdateSaddr { .. } => self.eval_rules(p, rules, i + 1, st, depth),
            Stmt::DnatMap { key, modulus, map } => {
                let map = self.targets.get(map.as_str());
                let found: Vec<(State, Flow)> = (0..*modulus)
                    .filter_map(|b| {
                        let k = match key {
                            VmapKey::DaddrProtoPort => {
                                Key::AddrProtoPortBucket(st.daddr, p.proto, st.dport, b)
                            }
                            VmapKey::ProtoPort => Key::ProtoPortBucket(p.proto, st.dport, b),
                        };
                        map.and_then(|m| m.get(&k))
                            .map(|(a, port)| (st, Flow::Dnat(*a, *port)))
                    })
                    .collect();
                // A bucket without an element is a lookup miss: the rule does not apply.
                assert!(
                    found.is_empty() || found.len() == *modulus as usize,
                    "backend map holds {} of {modulus} buckets for {}:{}",
                    found.len(),
                    st.daddr,
                    st.dport
                );
                if found.is_empty() {
                    self.eval_rules(p, rules, i + 1, st, depth)
                } else {
                    found
                }
            }
        }
    }

    fn matches(&self, p: &Packet, st: &State, m: &Match) -> bool {
        match m {
            Match::CtStateNew => true,
            Match::Addr { dir, negate, rhs } => {
                let a = match dir {
                    Dir::Saddr => p.src,
                    Dir::Daddr => st.daddr,
                };
                let hit = match rhs {
                    AddrRhs::Addr(x) => *x == a,
                    AddrRhs::Nets(nets) => nets.iter().any(|n| n.contains(&a)),
                    AddrRhs::Set(s) => self.sets.get(s.as_str()).is_some_and(|s| s.contains(&a)),
                };
                hit != *negate
            }
            Match::FibLocal(dir) => {
                let a = match dir {
                    Dir::Saddr => p.src,
                    Dir::Daddr => st.daddr,
                };
                self.local.contains(&a)
            }
            Match::L4Proto(proto) => *proto == p.proto,
            Match::ThDport(port) => *port == st.dport,
            Match::MarkClear(m) => st.mark & m == 0,
            // Only rendering makes it; the model the tracer reads chooses with `Stmt::Numgen`.
            Match::NumgenZero(_) => true,
            Match::CtStatusDnat => st.dnat.is_some(),
            Match::SaddrDaddrIn(set) => self
                .pairs
                .get(set.as_str())
                .is_some_and(|s| s.contains(&(p.src, st.daddr))),
        }
    }
}
