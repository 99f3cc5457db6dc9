//! The typed nftables model: only the shapes this proxy emits, and one transaction of operations
//! on our table, rendered as `nft -f` text ([`Transaction::to_text`]).
//!
//! Only text: nft 1.0.6's JSON input cannot declare a map whose data is a concatenation
//! (`ip daddr . th dport`, the DNAT targets of the backend maps), and its JSON parser was a
//! third slower than the text one on a full load (BENCHMARKS.md).
//!
//! The model is deliberately small: every [`Match`] and [`Stmt`] is a shape the packet tracer
//! ([`crate::trace`]) understands, so what we emit and what we test are the same values.

use std::fmt::Write as _;
use std::net::IpAddr;

use dualstack_ipam::IpFamily;
use ipnet::IpNet;

use crate::family::Tokens;

/// The name of our table, the same in both families (`ip dualstack-proxy`, `ip6 dualstack-proxy`).
pub const TABLE: &str = "dualstack-proxy";

/// A transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The nftables spelling, lowercase (`tcp`, `udp`, `sctp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`); absent means TCP.
    pub fn from_k8s(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// Which address of the packet a match looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// The source address.
    Saddr,
    /// The destination address.
    Daddr,
}

impl Dir {
    fn as_str(self) -> &'static str {
        match self {
            Dir::Saddr => "saddr",
            Dir::Daddr => "daddr",
        }
    }
}

/// The right-hand side of an address match.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddrRhs {
    /// One address.
    Addr(IpAddr),
    /// An anonymous set of networks (or one network).
    Nets(Vec<IpNet>),
    /// A named set of ours (`@cluster-ips`).
    Set(String),
}

/// A match expression of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Match {
    /// `ct state new`.
    CtStateNew,
    /// `numgen random mod N == 0`: holds with probability 1/N. Only rendering makes it, when it
    /// spells [`Stmt::Numgen`] as a cascade of rules (see [`cascade`]); the model never holds it.
    NumgenZero(u32),
    /// `ip saddr 10.0.0.0/8`, `ip daddr != { ... }`, `ip daddr @set`.
    Addr {
        /// Source or destination.
        dir: Dir,
        /// `!=` instead of `==`.
        negate: bool,
        /// What it is compared with.
        rhs: AddrRhs,
    },
    /// `fib saddr type local` / `fib daddr type local`.
    FibLocal(Dir),
    /// `meta l4proto tcp`.
    L4Proto(Protocol),
    /// `th dport 80`.
    ThDport(u16),
    /// `meta mark & MASK == 0`.
    MarkClear(u32),
    /// `ct status dnat`: the connection's destination was translated.
    CtStatusDnat,
    /// `ip saddr . ip daddr @SET`: the (translated) source and destination pair is in the set.
    SaddrDaddrIn(String),
}

/// A verdict, as a statement or as the value of a verdict map element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `return`.
    Return,
    /// `jump CHAIN`.
    Jump(String),
    /// `goto CHAIN`.
    Goto(String),
}

/// The key of a verdict-map lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmapKey {
    /// `ip daddr . meta l4proto . th dport`.
    DaddrProtoPort,
    /// `meta l4proto . th dport`.
    ProtoPort,
}

/// How a `reject` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectWith {
    /// The family's default: ICMP / ICMPv6 port unreachable.
    IcmpPortUnreachable,
    /// `reject with tcp reset`.
    TcpReset,
}

/// The statement of a rule (one per rule; the rule's matches come first).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Stmt {
    /// A plain verdict.
    Verdict(Verdict),
    /// `KEY vmap @MAP`.
    Vmap {
        /// The lookup key.
        key: VmapKey,
        /// The map name.
        map: String,
    },
    /// Go to one of the chains at random, each with probability 1/N (written to the kernel as
    /// a cascade of `numgen random mod K == 0` rules, see [`cascade`]).
    Numgen {
        /// The chains chosen among, in order.
        targets: Vec<String>,
    },
    /// `meta mark set meta mark | BITS`.
    MarkOr(u32),
    /// `meta mark set meta mark ^ BITS`.
    MarkXor(u32),
    /// `masquerade fully-random`.
    Masquerade,
    /// `reject` / `reject with tcp reset`.
    Reject(RejectWith),
    /// `dnat to ADDR:PORT` (the rule matches `meta l4proto` first).
    Dnat {
        /// The endpoint address.
        addr: IpAddr,
        /// The endpoint port.
        port: u16,
    },
    /// `update @SET { ip saddr }`.
    UpdateSaddr {
        /// The affinity set.
        set: String,
    },
    /// `dnat to KEY . numgen random mod N map @MAP`: one of N endpoints at random, looked up in
    /// a backend map keyed on the destination (or protocol . port) and a bucket 0..N. One such
    /// rule serves every Service with N endpoints.
    DnatMap {
        /// The destination part of the key.
        key: VmapKey,
        /// N, the number of buckets.
        modulus: u32,
        /// The backend map.
        map: String,
    },
}

/// The rules of one chain, shared between the model and the transactions that add them.
pub type Rules = std::sync::Arc<[Rule]>;

/// One rule: all matches, then the statement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The matches, all of which must hold.
    pub matches: Vec<Match>,
    /// The statement.
    pub stmt: Stmt,
    /// A comment shown in the ruleset.
    pub comment: Option<String>,
}

impl Rule {
    /// A rule without matches.
    pub fn new(stmt: Stmt) -> Self {
        Rule {
            matches: Vec::new(),
            stmt,
            comment: None,
        }
    }

    /// A rule with matches.
    pub fn when(matches: Vec<Match>, stmt: Stmt) -> Self {
        Rule {
            matches,
            stmt,
            comment: None,
        }
    }

    /// The same rule with a comment.
    pub fn comment(mut self, comment: &str) -> Self {
        self.comment = Some(comment.to_string());
        self
    }
}

/// The type of a base chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChainType {
    /// `type filter`.
    Filter,
    /// `type nat`.
    Nat,
}

/// A netfilter hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `prerouting`.
    Prerouting,
    /// `input`.
    Input,
    /// `forward`.
    Forward,
    /// `output`.
    Output,
    /// `postrouting`.
    Postrouting,
}

impl Hook {
    fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// Where a base chain hangs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BaseHook {
    /// filter or nat.
    pub kind: ChainType,
    /// The hook.
    pub hook: Hook,
    /// The priority (lower runs first; dstnat is -100, srcnat 100).
    pub priority: i32,
}

/// A chain declaration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChainDef {
    /// The chain name.
    pub name: String,
    /// The hook of a base chain; `None` for a regular chain.
    pub base: Option<BaseHook>,
}

/// The type of a set or map of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetType {
    /// A set of addresses of the family.
    Addr,
    /// A verdict map keyed on address . protocol . port.
    AddrProtoPortVerdict,
    /// A verdict map keyed on protocol . port.
    ProtoPortVerdict,
    /// A backend map: address . protocol . port . bucket → endpoint address . port.
    AddrProtoPortBucketTarget,
    /// A backend map: protocol . port . bucket → endpoint address . port.
    ProtoPortBucketTarget,
    /// A set of address pairs (source . destination).
    AddrPair,
}

/// A set or map declaration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SetDef {
    /// The name.
    pub name: String,
    /// The key (and value) type.
    pub ty: SetType,
    /// For affinity sets: `flags dynamic,timeout ; timeout Ns`.
    pub timeout_secs: Option<u32>,
    /// `size N`: the most elements the set holds. A set with a size is a fixed hash table
    /// sized for it (the kernel's `nft_hash`), which loads a hundred thousand elements about
    /// 40 % faster than the growing one (`nft_rhash`) a set without a size gets; it refuses
    /// elements beyond the size, so the proxier declares room to spare and makes the next
    /// sync a full one, with larger sizes, before a set would fill (`ruleset::set_size`).
    pub size: Option<u32>,
    /// A comment.
    pub comment: Option<String>,
}

impl SetDef {
    pub(crate) fn is_map(&self) -> bool {
        !matches!(self.ty, SetType::Addr | SetType::AddrPair)
    }
}

/// The key of a set or map element.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// An address.
    Addr(IpAddr),
    /// address . protocol . port.
    AddrProtoPort(IpAddr, Protocol, u16),
    /// protocol . port.
    ProtoPort(Protocol, u16),
    /// address . protocol . port . bucket.
    AddrProtoPortBucket(IpAddr, Protocol, u16, u32),
    /// protocol . port . bucket.
    ProtoPortBucket(Protocol, u16, u32),
    /// source . destination.
    AddrPair(IpAddr, IpAddr),
}

/// The value of a map element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// A verdict (verdict maps).
    Verdict(Verdict),
    /// A DNAT target, address . port (backend maps).
    Target(IpAddr, u16),
}

/// A set or map element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Element {
    /// The key.
    pub key: Key,
    /// The value of a map element; `None` in a plain set.
    pub value: Option<Value>,
    /// A comment (`ns/svc:port`).
    pub comment: Option<String>,
}

/// One operation of a transaction on our table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `add table` (idempotent).
    AddTable,
    /// `delete table` (after an `add table`, so it never fails).
    DeleteTable,
    /// `add chain` (idempotent).
    AddChain(ChainDef),
    /// `flush chain`.
    FlushChain(String),
    /// `delete chain`.
    DeleteChain(String),
    /// `add rule` for each rule, at the end of a chain (shared with the model, not copied).
    AddRules {
        /// The chain.
        chain: String,
        /// The rules, in order.
        rules: Rules,
    },
    /// `add set` / `add map`.
    AddSet(SetDef),
    /// `delete set`.
    DeleteSet(String),
    /// `add element SET { ... }`.
    AddElements {
        /// The set or map.
        set: String,
        /// The elements.
        elements: Vec<Element>,
    },
    /// `delete element SET { keys }`.
    DeleteElements {
        /// The set or map.
        set: String,
        /// The keys.
        keys: Vec<Key>,
    },
}

/// One nftables transaction on the table of one family: applied all or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The family of the table.
    pub family: IpFamily,
    /// Whether this rebuilds the table from scratch (`add table; delete table; ...`).
    pub full: bool,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new(family: IpFamily, full: bool) -> Self {
        Transaction {
            family,
            full,
            ops: Vec::new(),
        }
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The `nft -f` text, one command per line.
    pub fn to_text(&self) -> String {
        let t = Tokens::of(self.family);
        let mut out = String::with_capacity(self.ops.len() * 96);
        for op in &self.ops {
            text_op(&mut out, t, op);
            out.push('\n');
        }
        out
    }
}

/// The `nft` text of one operation of `family` (several lines for several rules), for error
/// reports that name the operation the kernel refused.
pub fn op_text(family: IpFamily, op: &Op) -> String {
    let mut out = String::new();
    text_op(&mut out, Tokens::of(family), op);
    out
}

// ---------------------------------------------------------------------------------------------
// text

fn text_op(out: &mut String, t: &Tokens, op: &Op) {
    let f = t.nft_family;
    match op {
        Op::AddTable => {
            let _ = write!(
                out,
                "add table {f} {TABLE} {{ comment \"rules for dualstack-proxy\" ; }}"
            );
        }
        Op::DeleteTable => {
            let _ = write!(out, "delete table {f} {TABLE}");
        }
        Op::AddChain(c) => {
            let _ = write!(out, "add chain {f} {TABLE} {}", c.name);
            if let Some(b) = c.base {
                let kind = match b.kind {
                    ChainType::Filter => "filter",
                    ChainType::Nat => "nat",
                };
                let _ = write!(
                    out,
                    " {{ type {kind} hook {} priority {} ; }}",
                    b.hook.as_str(),
                    b.priority
                );
            }
        }
        Op::FlushChain(c) => {
            let _ = write!(out, "flush chain {f} {TABLE} {c}");
        }
        Op::DeleteChain(c) => {
            let _ = write!(out, "delete chain {f} {TABLE} {c}");
        }
        Op::AddRules { chain, rules } => {
            for (i, rule) in rules.iter().flat_map(cascade).enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                let _ = write!(out, "add rule {f} {TABLE} {chain} ");
                text_rule(out, t, &rule);
            }
        }
        Op::AddSet(s) => {
            let kw = if s.is_map() { "map" } else { "set" };
            let ty = match s.ty {
                SetType::Addr => t.addr_type.to_string(),
                SetType::AddrProtoPortVerdict => {
                    format!("{} . inet_proto . inet_service : verdict", t.addr_type)
                }
                SetType::ProtoPortVerdict => "inet_proto . inet_service : verdict".to_string(),
                SetType::AddrPair => format!("{} . {}", t.addr_type, t.addr_type),
                // nft 1.0.6 reads `ip daddr . th dport` back from the kernel as "conflicting
                // protocols" and then refuses any later rule naming the map (`tcp dport` would
                // add a `meta l4proto tcp` dependency): only a full transaction, which declares
                // the map, adds rules naming it. See `ruleset::MAX_SHARED_ENDPOINTS`.
                SetType::AddrProtoPortBucketTarget => format!(
                    "typeof {f} daddr . meta l4proto . th dport . numgen random mod 1 : {f} daddr . th dport"
                ),
                SetType::ProtoPortBucketTarget => format!(
                    "typeof meta l4proto . th dport . numgen random mod 1 : {f} daddr . th dport"
                ),
            };
            let ty = if ty.starts_with("typeof") {
                ty
            } else {
                format!("type {ty}")
            };
            let _ = write!(out, "add {kw} {f} {TABLE} {} {{ {ty} ;", s.name);
            if let Some(n) = s.size {
                let _ = write!(out, " size {n} ;");
            }
            if let Some(secs) = s.timeout_secs {
                let _ = write!(out, " flags dynamic,timeout ; timeout {secs}s ;");
            }
            if let Some(c) = &s.comment {
                let _ = write!(out, " comment \"{c}\" ;");
            }
            out.push_str(" }");
        }
        Op::DeleteSet(s) => {
            let _ = write!(out, "delete set {f} {TABLE} {s}");
        }
        Op::AddElements { set, elements } => {
            let _ = write!(out, "add element {f} {TABLE} {set} {{ ");
            for (i, e) in elements.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                text_key(out, &e.key);
                if let Some(c) = &e.comment {
                    let _ = write!(out, " comment \"{c}\"");
                }
                match &e.value {
                    Some(Value::Verdict(v)) => {
                        out.push_str(" : ");
                        text_verdict(out, v);
                    }
                    Some(Value::Target(a, port)) => {
                        let _ = write!(out, " : {a} . {port}");
                    }
                    None => {}
                }
            }
            out.push_str(" }");
        }
        Op::DeleteElements { set, keys } => {
            let _ = write!(out, "delete element {f} {TABLE} {set} {{ ");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                text_key(out, k);
            }
            out.push_str(" }");
        }
    }
}

fn text_key(out: &mut String, k: &Key) {
    let _ = match k {
        Key::Addr(a) => write!(out, "{a}"),
        Key::AddrProtoPort(a, p, port) => write!(out, "{a} . {} . {port}", p.as_str()),
        Key::ProtoPort(p, port) => write!(out, "{} . {port}", p.as_str()),
        Key::AddrProtoPortBucket(a, p, port, b) => {
            write!(out, "{a} . {} . {port} . {b}", p.as_str())
        }
        Key::ProtoPortBucket(p, port, b) => write!(out, "{} . {port} . {b}", p.as_str()),
        Key::AddrPair(a, b) => write!(out, "{a} . {b}"),
    };
}

fn text_verdict(out: &mut String, v: &Verdict) {
    let _ = match v {
        Verdict::Accept => write!(out, "accept"),
        Verdict::Drop => write!(out, "drop"),
        Verdict::Return => write!(out, "return"),
        Verdict::Jump(c) => write!(out, "jump {c}"),
        Verdict::Goto(c) => write!(out, "goto {c}"),
    };
}

fn text_nets(out: &mut String, nets: &[IpNet]) {
    if let [one] = nets {
        let _ = write!(out, "{one}");
        return;
    }
    out.push_str("{ ");
    for (i, n) in nets.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{n}");
    }
    out.push_str(" }");
}

/// How a rule is written to the kernel. A [`Stmt::Numgen`] choice among N chains becomes N
/// rules, `numgen random mod (N-i) == 0 goto CHAIN_i` for i < N-1 and a plain `goto` last: each
/// chain is taken with probability 1/N (the cascade iptables' `statistic` rules make), and no
/// set is made. Upstream's `numgen random mod N vmap { ... }` makes an anonymous set per
/// Service, and the kernel finds sets by walking the table's sets, so loading 10,000 Services
/// that way is quadratic (BENCHMARKS.md, "Where nft's time goes"). Every other rule is written
/// as it is.
pub(crate) fn cascade(rule: &Rule) -> Vec<Rule> {
    let Stmt::Numgen { targets } = &rule.stmt else {
        return vec![rule.clone()];
    };
    let n = targets.len();
    targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            let mut matches = rule.matches.clone();
            if i + 1 < n {
                matches.push(Match::NumgenZero(u32::try_from(n - i).unwrap_or(u32::MAX)));
            }
            Rule {
                matches,
                stmt: Stmt::Verdict(Verdict::Goto(target.clone())),
                comment: rule.comment.clone(),
            }
        })
        .collect()
}

/// The `nft` text of one rule (without the `add rule ...` prefix).
pub fn rule_text(family: IpFamily, rule: &Rule) -> String {
    let mut s = String::new();
    text_rule(&mut s, Tokens::of(family), rule);
    s
}

fn text_rule(out: &mut String, t: &Tokens, rule: &Rule) {
    let f = t.nft_family;
    for m in &rule.matches {
        match m {
            Match::CtStateNew => out.push_str("ct state new"),
            Match::Addr { dir, negate, rhs } => {
                let _ = write!(out, "{f} {}", dir.as_str());
                if *negate {
                    out.push_str(" !=");
                }
                out.push(' ');
                match rhs {
                    AddrRhs::Addr(a) => {
                        let _ = write!(out, "{a}");
                    }
                    AddrRhs::Nets(n) => text_nets(out, n),
                    AddrRhs::Set(s) => {
                        let _ = write!(out, "@{s}");
                    }
                }
            }
            Match::FibLocal(d) => {
                let _ = write!(out, "fib {} type local", d.as_str());
            }
            Match::L4Proto(p) => {
                let _ = write!(out, "meta l4proto {}", p.as_str());
            }
            Match::ThDport(p) => {
                let _ = write!(out, "th dport {p}");
            }
            Match::MarkClear(m) => {
                let _ = write!(out, "mark and {m:#x} == 0");
            }
            Match::NumgenZero(n) => {
                let _ = write!(out, "numgen random mod {n} == 0");
            }
            Match::CtStatusDnat => out.push_str("ct status dnat"),
            Match::SaddrDaddrIn(set) => {
                let _ = write!(out, "{f} saddr . {f} daddr @{set}");
            }
        }
        out.push(' ');
    }
    match &rule.stmt {
        Stmt::Verdict(v) => text_verdict(out, v),
        Stmt::Vmap { key, map } => {
            let _ = match key {
                VmapKey::DaddrProtoPort => {
                    write!(out, "{f} daddr . meta l4proto . th dport vmap @{map}")
                }
                VmapKey::ProtoPort => write!(out, "meta l4proto . th dport vmap @{map}"),
            };
        }
        Stmt::Numgen { targets } => {
            let _ = write!(out, "numgen random mod {} vmap {{ ", targets.len());
            for (i, c) in targets.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{i} : goto {c}");
            }
            out.push_str(" }");
        }
        Stmt::MarkOr(b) => {
            let _ = write!(out, "mark set mark or {b:#x}");
        }
        Stmt::MarkXor(b) => {
            let _ = write!(out, "mark set mark xor {b:#x}");
        }
        Stmt::Masquerade => out.push_str("masquerade fully-random"),
        Stmt::Reject(RejectWith::IcmpPortUnreachable) => out.push_str("reject"),
        Stmt::Reject(RejectWith::TcpReset) => out.push_str("reject with tcp reset"),
        Stmt::Dnat { addr, port } => {
            let _ = write!(out, "dnat to {}", t.dnat_target(*addr, *port));
        }
        Stmt::UpdateSaddr { set } => {
            let _ = write!(out, "update @{set} {{ {f} saddr }}");
        }
        Stmt::DnatMap { key, modulus, map } => {
            let _ = match key {
                VmapKey::DaddrProtoPort => write!(
                    out,
                    "dnat to {f} daddr . meta l4proto . th dport . numgen random mod {modulus} map @{map}"
                ),
                VmapKey::ProtoPort => write!(
                    out,
                    "dnat to meta l4proto . th dport . numgen random mod {modulus} map @{map}"
                ),
            };
        }
    }
    if let Some(c) = &rule.comment {
        let _ = write!(out, " comment \"{c}\"");
    }
}
