//! The nfnetlink encoding of our transactions: every sync, full or incremental, is sent to the
//! kernel as one netlink batch that we encode ourselves, without an `nft` process that parses
//! text and first reads the table back. The kernel applies a batch all or nothing, as `nft -f`.
//!
//! Pure: bytes out. The socket is the edge's (`dualstack-proxy-run`). Layouts follow the
//! kernel's uapi `linux/netfilter/nf_tables.h` and `nfnetlink.h`; registers, expression order
//! and the user data that `nft list` reads back (set key types, `typeof`, comments) are laid out
//! as nft 1.0.6 lays them out for the same text, so `nft list ruleset` shows exactly what
//! [`Transaction::to_text`] says (`nft --debug=netlink,mnl` prints nft's bytes; see the tests
//! here and `dualstack-proxy-run/tests/netlink.rs`, which compares the kernel's listings).
//!
//! What the encoding covers is what [`crate::nft`] models, nothing more:
//! - tables, base and regular chains, flush and delete;
//! - named sets and maps of the six [`SetType`]s (the affinity sets with a timeout);
//! - anonymous interval sets for `ip saddr != { nets }`, sent as the rbtree layout (sorted
//!   ranges, each end marked `INTERVAL_END`);
//! - expressions: payload, meta (l4proto, mark), ct (state, status), bitwise, cmp, lookup,
//!   immediate, numgen, nat (dnat, map dnat), masq, reject, fib, dynset.
//!
//! Concatenated keys take whole 32-bit registers; nft names a register that starts a 16-byte
//! boundary by its 128-bit number (`NFT_REG_1` ...) and any other by its 32-bit one
//! (`NFT_REG32_00` + word), and so do we ([`reg`]).

use std::collections::HashMap;
use std::net::IpAddr;

use dualstack_ipam::IpFamily;
use ipnet::IpNet;

use crate::nft::{
    AddrRhs, BaseHook, ChainType, Dir, Element, Hook, Key, Match, Op, Protocol, RejectWith, Rule,
    SetDef, SetType, Stmt, TABLE, Transaction, Value, Verdict, VmapKey,
};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_TIMEOUT: u16 = 11;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
/// The data type of a verdict map (`NFT_DATA_VERDICT`).
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

/// libnftnl's user data tags: `NFTNL_UDATA_{TABLE,RULE,SET_ELEM}_COMMENT`, the set's
/// `NFTNL_UDATA_SET_*`, and a set element's `NFTNL_UDATA_SET_ELEM_FLAGS`.
const UDATA_COMMENT: u8 = 0;
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_MERGE_ELEMENTS: u8 = 2;
const UDATA_SET_KEY_TYPEOF: u8 = 3;
const UDATA_SET_DATA_TYPEOF: u8 = 4;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
const UDATA_SET_COMMENT: u8 = 7;
const UDATA_SET_ELEM_FLAGS: u8 = 1;
/// `NFTNL_SET_ELEM_F_INTERVAL_OPEN`: a range that runs to the end of the address space.
const SET_ELEM_F_INTERVAL_OPEN: u32 = 1;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;
/// nft's datatype numbers (`TYPE_*`), which `nft list` reads from a set's key type.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
/// Elements per message at most (as nft sends them).
const ELEMENTS_PER_MESSAGE: usize = 256;
/// Bytes of elements per message at most: a message's element list is one netlink attribute,
/// whose length is 16 bits. 256 elements with long comments and chain names would not fit.
const ELEMENT_BYTES_PER_MESSAGE: usize = 48 * 1024;

/// One batch ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The bytes: batch begin, the messages, batch end.
    pub bytes: Vec<u8>,
    /// The sequence number of the batch begin; every message of the batch has a number from
    /// here to [`Batch::last_seq`].
    pub first_seq: u32,
    /// The sequence number of the last message, the only one that asks for an acknowledgement
    /// (the kernel reports every refused message and then aborts the whole batch).
    pub last_seq: u32,
    /// Which operation of the transaction each message (by sequence number, ascending) encodes.
    pub ops: Vec<(u32, usize)>,
}

impl Batch {
    /// The index of the operation that message `seq` encodes.
    pub fn op_of(&self, seq: u32) -> Option<usize> {
        // By offset from the batch's first number, so a batch across a wrap of the sequence
        // numbers is searched in order.
        let at = |s: u32| s.wrapping_sub(self.first_seq);
        match self.ops.binary_search_by_key(&at(seq), |(s, _)| at(*s)) {
            Ok(i) => Some(self.ops[i].1),
            Err(0) => None,
            Err(i) => Some(self.ops[i - 1].1),
        }
    }
}

/// Whether `tx` is an incremental transaction of element operations only (an endpoint
/// replaced, a shared Service added or removed).
pub fn is_element_only(tx: &Transaction) -> bool {
    !tx.full
        && !tx.ops.is_empty()
        && tx
            .ops
            .iter()
            .all(|op| matches!(op, Op::AddElements { .. } | Op::DeleteElements { .. }))
}

/// The batch of `tx`; sequence numbers start at `seq`. An empty transaction is a batch with no
/// messages between begin and end.
pub fn batch(tx: &Transaction, seq: u32) -> Batch {
    let mut e = Encoder {
        family: tx.family,
        nfproto: match tx.family {
            IpFamily::IPv4 => 2,  // NFPROTO_IPV4
            IpFamily::IPv6 => 10, // NFPROTO_IPV6
        },
        out: Vec::with_capacity(tx.ops.len() * 128),
        seq,
        set_ids: HashMap::new(),
        next_set_id: 1,
        ops: Vec::new(),
        op: 0,
        last_start: 0,
    };
    e.raw_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, |_| {});
    for (i, op) in tx.ops.iter().enumerate() {
        e.op = i;
        e.encode_op(op);
    }
    let last_seq = e.seq.wrapping_sub(1);
    if last_seq != seq {
        // Ask for one acknowledgement, of the last message: it arrives after any error.
        e.set_ack_on_last();
    }
    e.raw_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, |_| {});
    Batch {
        bytes: e.out,
        first_seq: seq,
        last_seq,
        ops: e.ops,
    }
}

struct Encoder {
    family: IpFamily,
    nfproto: u8,
    out: Vec<u8>,
    seq: u32,
    /// Sets created in this batch, by name: their ids (`NFTA_SET_ID`), which name them to the
    /// kernel before it has them (and are the only name of an anonymous set).
    set_ids: HashMap<String, u32>,
    next_set_id: u32,
    ops: Vec<(u32, usize)>,
    op: usize,
    last_start: usize,
}

impl Encoder {
    fn addr_len(&self) -> u32 {
        match self.family {
            IpFamily::IPv4 => 4,
            IpFamily::IPv6 => 16,
        }
    }

    fn addr_type(&self) -> u32 {
        match self.family {
            IpFamily::IPv4 => TYPE_IPADDR,
            IpFamily::IPv6 => TYPE_IP6ADDR,
        }
    }

    /// A batch-control message (begin or end): no family, the subsystem as resource id.
    fn raw_message(&mut self, ty: u16, flags: u16, family: u8, body: impl FnOnce(&mut Vec<u8>)) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        message(
            &mut self.out,
            ty,
            flags,
            seq,
            family,
            NFNL_SUBSYS_NFTABLES,
            body,
        );
    }

    /// An nf_tables message of the current operation.
    fn msg(&mut self, ty: u16, flags: u16, body: impl FnOnce(&mut Vec<u8>)) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        if self.ops.last().is_none_or(|(_, op)| *op != self.op) {
            self.ops.push((seq, self.op));
        }
        self.last_start = self.out.len();
        message(
            &mut self.out,
            NFNL_SUBSYS_NFTABLES << 8 | ty,
            NLM_F_REQUEST | flags,
            seq,
            self.nfproto,
            0,
            body,
        );
    }

    fn set_ack_on_last(&mut self) {
        let at = self.last_start + 6;
        let flags = u16::from_ne_bytes([self.out[at], self.out[at + 1]]) | NLM_F_ACK;
        self.out[at..at + 2].copy_from_slice(&flags.to_ne_bytes());
    }

    fn encode_op(&mut self, op: &Op) {
        match op {
            Op::AddTable => self.msg(NFT_MSG_NEWTABLE, NLM_F_CREATE, |b| {
                attr_str(b, NFTA_TABLE_NAME, TABLE);
                attr_u32(b, NFTA_TABLE_FLAGS, 0);
                attr(b, NFTA_TABLE_USERDATA, |b| {
                    udata_str(b, UDATA_COMMENT, "rules for dualstack-proxy")
                });
            }),
            Op::DeleteTable => self.msg(NFT_MSG_DELTABLE, 0, |b| {
                attr_str(b, NFTA_TABLE_NAME, TABLE);
            }),
            Op::AddChain(c) => self.msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE, |b| {
                attr_str(b, NFTA_CHAIN_TABLE, TABLE);
                attr_str(b, NFTA_CHAIN_NAME, &c.name);
                if let Some(h) = c.base {
                    base_hook(b, h);
                }
            }),
            Op::FlushChain(c) => self.msg(NFT_MSG_DELRULE, 0, |b| {
                attr_str(b, NFTA_RULE_TABLE, TABLE);
                attr_str(b, NFTA_RULE_CHAIN, c);
            }),
            Op::DeleteChain(c) => self.msg(NFT_MSG_DELCHAIN, 0, |b| {
                attr_str(b, NFTA_CHAIN_TABLE, TABLE);
                attr_str(b, NFTA_CHAIN_NAME, c);
            }),
            Op::AddRules { chain, rules } => {
                for rule in rules.iter().flat_map(crate::nft::cascade) {
                    self.rule(chain, &rule);
                }
            }
            Op::AddSet(s) => self.named_set(s),
            Op::DeleteSet(s) => {
                self.set_ids.remove(s);
                self.msg(NFT_MSG_DELSET, 0, |b| {
                    attr_str(b, NFTA_SET_TABLE, TABLE);
                    attr_str(b, NFTA_SET_NAME, s);
                })
            }
            Op::AddElements { set, elements } => {
                let id = self.set_ids.get(set).copied();
                for chunk in chunks(elements, element_size) {
                    self.msg(NFT_MSG_NEWSETELEM, NLM_F_CREATE, |b| {
                        elements_attrs(b, set, id, |b| {
                            for (i, e) in chunk.iter().enumerate() {
                                attr(b, list_elem(i), |b| element(b, e));
                            }
                        })
                    });
                }
            }
            Op::DeleteElements { set, keys } => {
                let id = self.set_ids.get(set).copied();
                for chunk in chunks(keys, |_| KEY_ELEMENT_SIZE) {
                    self.msg(NFT_MSG_DELSETELEM, 0, |b| {
                        elements_attrs(b, set, id, |b| {
                            for (i, k) in chunk.iter().enumerate() {
                                attr(b, list_elem(i), |b| key_attr(b, k));
                            }
                        })
                    });
                }
            }
        }
    }

    fn new_set_id(&mut self, name: &str) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        self.set_ids.insert(name.to_string(), id);
        id
    }

    fn named_set(&mut self, s: &SetDef) {
        let id = self.new_set_id(&s.name);
        let a = self.addr_type();
        let al = self.addr_len();
        let f = self.family;
        // (key type, key length, data type and length of a map)
        let (key_type, key_len, data): (u32, u32, Option<(u32, u32)>) = match s.ty {
            SetType::Addr => (a, al, None),
            SetType::AddrProtoPortVerdict => (
                concat_type(&[a, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
                al + 8,
                Some((NFT_DATA_VERDICT, 0)),
            ),
            SetType::ProtoPortVerdict => (
                concat_type(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
                8,
                Some((NFT_DATA_VERDICT, 0)),
            ),
            SetType::AddrProtoPortBucketTarget => (
                concat_type(&[a, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE, TYPE_INTEGER]),
                al + 12,
                Some((concat_type(&[a, TYPE_INET_SERVICE]), al + 4)),
            ),
            SetType::ProtoPortBucketTarget => (
                concat_type(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE, TYPE_INTEGER]),
                12,
                Some((concat_type(&[a, TYPE_INET_SERVICE]), al + 4)),
            ),
            SetType::AddrPair => (concat_type(&[a, a]), 2 * al, None),
        };
        let mut flags = if s.is_map() { NFT_SET_MAP } else { 0 };
        if s.timeout_secs.is_some() {
            flags |= NFT_SET_TIMEOUT | NFT_SET_EVAL;
        }
        let udata = set_udata(f, s);
        self.msg(NFT_MSG_NEWSET, NLM_F_CREATE, |b| {
            attr_str(b, NFTA_SET_TABLE, TABLE);
            attr_str(b, NFTA_SET_NAME, &s.name);
            attr_u32(b, NFTA_SET_FLAGS, flags);
            attr_u32(b, NFTA_SET_KEY_TYPE, key_type);
            attr_u32(b, NFTA_SET_KEY_LEN, key_len);
            if let Some((ty, len)) = data {
                attr_u32(b, NFTA_SET_DATA_TYPE, ty);
                attr_u32(b, NFTA_SET_DATA_LEN, len);
            }
            attr_u32(b, NFTA_SET_ID, id);
            if let Some(size) = s.size {
                attr(b, NFTA_SET_DESC | NLA_F_NESTED, |b| {
                    attr_u32(b, NFTA_SET_DESC_SIZE, size)
                });
            }
            if let Some(secs) = s.timeout_secs {
                attr(b, NFTA_SET_TIMEOUT, |b| {
                    b.extend_from_slice(&(u64::from(secs) * 1000).to_be_bytes())
                });
            }
            attr(b, NFTA_SET_USERDATA, |b| b.extend_from_slice(&udata));
        });
    }

    /// An anonymous interval set of `nets`, matched on `dir`: the set and its elements are
    /// sent before the rule that looks it up by id. Returns the id.
    fn anonymous_set(&mut self, dir: Dir, nets: &[IpNet]) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        let elements = interval_elements(nets);
        let (key_type, key_len) = (self.addr_type(), self.addr_len());
        let mut udata = Vec::new();
        udata_u32(&mut udata, UDATA_SET_KEYBYTEORDER, 2);
        udata_u32(&mut udata, UDATA_SET_MERGE_ELEMENTS, 1);
        udata_nested(&mut udata, UDATA_SET_KEY_TYPEOF, |u| {
            typeof_payload_addr(u, self.family, dir)
        });
        // The size counts the end of an open range too, though it is not sent (as nft does).
        let open = usize::from(elements.last().is_some_and(|(_, _, open)| *open));
        let size = u32::try_from(elements.len() + open).unwrap_or(u32::MAX);
        self.msg(NFT_MSG_NEWSET, NLM_F_CREATE, |b| {
            attr_str(b, NFTA_SET_TABLE, TABLE);
            attr_str(b, NFTA_SET_NAME, "__set%d");
            attr_u32(
                b,
                NFTA_SET_FLAGS,
                NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL,
            );
            attr_u32(b, NFTA_SET_KEY_TYPE, key_type);
            attr_u32(b, NFTA_SET_KEY_LEN, key_len);
            attr_u32(b, NFTA_SET_ID, id);
            attr(b, NFTA_SET_DESC | NLA_F_NESTED, |b| {
                attr_u32(b, NFTA_SET_DESC_SIZE, size)
            });
            attr(b, NFTA_SET_USERDATA, |b| b.extend_from_slice(&udata));
        });
        for chunk in chunks(&elements, |_| INTERVAL_ELEMENT_SIZE) {
            self.msg(NFT_MSG_NEWSETELEM, NLM_F_CREATE, |b| {
                elements_attrs(b, "__set%d", Some(id), |b| {
                    for (i, (addr, end, open)) in chunk.iter().enumerate() {
                        attr(b, list_elem(i), |b| {
                            if *end {
                                attr_u32(b, NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
                            }
                            attr(b, NFTA_SET_ELEM_KEY | NLA_F_NESTED, |b| {
                                attr(b, NFTA_DATA_VALUE, |b| push_addr(b, addr))
                            });
                            if *open {
                                attr(b, NFTA_SET_ELEM_USERDATA, |b| {
                                    udata_u32(b, UDATA_SET_ELEM_FLAGS, SET_ELEM_F_INTERVAL_OPEN)
                                });
                            }
                        });
                    }
                })
            });
        }
        id
    }

    fn rule(&mut self, chain: &str, rule: &Rule) {
        // Anonymous sets first: the rule names them by id.
        let mut anon = Vec::new();
        for m in &rule.matches {
            if let Match::Addr {
                dir,
                rhs: AddrRhs::Nets(nets),
                ..
            } = m
                && nets.len() > 1
            {
                anon.push(self.anonymous_set(*dir, nets));
            }
        }
        let mut exprs = Vec::with_capacity(256);
        let mut anon = anon.into_iter();
        for m in &rule.matches {
            self.match_exprs(&mut exprs, m, &mut anon);
        }
        self.stmt_exprs(&mut exprs, &rule.stmt);
        self.msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, |b| {
            attr_str(b, NFTA_RULE_TABLE, TABLE);
            attr_str(b, NFTA_RULE_CHAIN, chain);
            attr(b, NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, |b| {
                b.extend_from_slice(&exprs)
            });
            if let Some(c) = &rule.comment {
                attr(b, NFTA_RULE_USERDATA, |b| udata_str(b, UDATA_COMMENT, c));
            }
        });
    }

    fn addr_offset(&self, dir: Dir) -> u32 {
        match (self.family, dir) {
            (IpFamily::IPv4, Dir::Saddr) => 12,
            (IpFamily::IPv4, Dir::Daddr) => 16,
            (IpFamily::IPv6, Dir::Saddr) => 8,
            (IpFamily::IPv6, Dir::Daddr) => 24,
        }
    }

    fn load_addr(&self, b: &mut Vec<u8>, dir: Dir, dreg: u32) {
        payload(
            b,
            dreg,
            BASE_NETWORK,
            self.addr_offset(dir),
            self.addr_len(),
        );
    }

    fn lookup(&self, b: &mut Vec<u8>, sreg: u32, dreg: Option<u32>, set: &str, invert: bool) {
        let id = self.set_ids.get(set).copied();
        lookup_expr(b, sreg, dreg, set, id, invert);
    }

    fn match_exprs(&self, b: &mut Vec<u8>, m: &Match, anon: &mut impl Iterator<Item = u32>) {
        match m {
            Match::CtStateNew => {
                ct_load(b, CT_STATE);
                bitwise(b, 0x8u32.to_ne_bytes().as_slice(), &[0; 4], false);
                cmp(b, CMP_NEQ, &[0; 4]);
            }
            Match::NumgenZero(n) => {
                numgen(b, 1, *n);
                cmp(b, CMP_EQ, &[0; 4]);
            }
            Match::Addr { dir, negate, rhs } => {
                let op = if *negate { CMP_NEQ } else { CMP_EQ };
                match rhs {
                    AddrRhs::Addr(a) => {
                        self.load_addr(b, *dir, 1);
                        let mut v = Vec::new();
                        push_addr(&mut v, a);
                        cmp(b, op, &v);
                    }
                    AddrRhs::Nets(nets) if nets.len() == 1 => self.prefix(b, *dir, op, &nets[0]),
                    AddrRhs::Nets(_) => {
                        let id = anon.next().expect("an anonymous set per multi-net match");
                        self.load_addr(b, *dir, 1);
                        lookup_expr(b, 1, None, "__set%d", Some(id), *negate);
                    }
                    AddrRhs::Set(s) => {
                        self.load_addr(b, *dir, 1);
                        self.lookup(b, 1, None, s, *negate);
                    }
                }
            }
            Match::FibLocal(dir) => {
                expr(b, "fib", |b| {
                    attr_u32(
                        b,
                        3, // NFTA_FIB_FLAGS
                        match dir {
                            Dir::Saddr => 1, // NFTA_FIB_F_SADDR
                            Dir::Daddr => 2, // NFTA_FIB_F_DADDR
                        },
                    );
                    attr_u32(b, 2, 3); // NFTA_FIB_RESULT: NFT_FIB_RESULT_ADDRTYPE
                    attr_u32(b, 1, 1); // NFTA_FIB_DREG
                });
                cmp(b, CMP_EQ, &2u32.to_ne_bytes()); // RTN_LOCAL
            }
            Match::L4Proto(p) => {
                meta_load(b, META_L4PROTO, 1);
                cmp(b, CMP_EQ, &[proto_number(*p)]);
            }
            Match::ThDport(port) => {
                payload(b, 1, BASE_TRANSPORT, 2, 2);
                cmp(b, CMP_EQ, &port.to_be_bytes());
            }
            Match::MarkClear(mask) => {
                meta_load(b, META_MARK, 1);
                bitwise(b, &mask.to_ne_bytes(), &[0; 4], true);
                cmp(b, CMP_EQ, &[0; 4]);
            }
            Match::CtStatusDnat => {
                ct_load(b, CT_STATUS);
                bitwise(b, &0x20u32.to_ne_bytes(), &[0; 4], false); // IPS_DST_NAT
                cmp(b, CMP_NEQ, &[0; 4]);
            }
            Match::SaddrDaddrIn(set) => {
                self.load_addr(b, Dir::Saddr, 1);
                self.load_addr(b, Dir::Daddr, reg(self.addr_len() / 4));
                self.lookup(b, 1, None, set, false);
            }
        }
    }

    /// `ip saddr 10.0.0.0/16` as nft writes it: a byte-aligned prefix compares only its
    /// bytes; any other is masked first.
    fn prefix(&self, b: &mut Vec<u8>, dir: Dir, op: u32, net: &IpNet) {
        let bits = u32::from(net.prefix_len());
        let full = self.addr_len() * 8;
        let mut addr = Vec::new();
        push_addr(&mut addr, &net.network());
        if bits == full {
            self.load_addr(b, dir, 1);
            cmp(b, op, &addr);
        } else if bits > 0 && bits % 8 == 0 {
            let n = bits / 8;
            payload(b, 1, BASE_NETWORK, self.addr_offset(dir), n);
            cmp(b, op, &addr[..n as usize]);
        } else {
            let mut mask = Vec::new();
            push_addr(&mut mask, &net.netmask());
            self.load_addr(b, dir, 1);
            bitwise(b, &mask, &vec![0; mask.len()], false);
            cmp(b, op, &addr);
        }
    }

    /// Loads `key` into consecutive registers from `reg 1`; returns the next free 32-bit word.
    fn load_key(&self, b: &mut Vec<u8>, key: VmapKey) -> u32 {
        let mut word = 0;
        if key == VmapKey::DaddrProtoPort {
            self.load_addr(b, Dir::Daddr, 1);
            word = self.addr_len() / 4;
        }
        meta_load(b, META_L4PROTO, reg(word));
        payload(b, reg(word + 1), BASE_TRANSPORT, 2, 2);
        word + 2
    }

    fn stmt_exprs(&self, b: &mut Vec<u8>, stmt: &Stmt) {
        match stmt {
            Stmt::Verdict(v) => immediate(b, 0, |b| {
                attr(b, NFTA_DATA_VERDICT | NLA_F_NESTED, |b| verdict(b, v))
            }),
            Stmt::Vmap { key, map } => {
                self.load_key(b, *key);
                self.lookup(b, 1, Some(0), map, false);
            }
            Stmt::Numgen { .. } => unreachable!("written as a cascade of rules"),
            Stmt::MarkOr(bits) => {
                meta_load(b, META_MARK, 1);
                bitwise(b, &(!bits).to_ne_bytes(), &bits.to_ne_bytes(), true);
                meta_set(b, META_MARK, 1);
            }
            Stmt::MarkXor(bits) => {
                meta_load(b, META_MARK, 1);
                bitwise(b, &u32::MAX.to_ne_bytes(), &bits.to_ne_bytes(), true);
                meta_set(b, META_MARK, 1);
            }
            Stmt::Masquerade => expr(b, "masq", |b| {
                attr_u32(b, 1, 0x10); // NFTA_MASQ_FLAGS: NF_NAT_RANGE_PROTO_RANDOM_FULLY
            }),
            Stmt::Reject(with) => {
                let (ty, code) = match (with, self.family) {
                    (RejectWith::TcpReset, _) => (1, 0), // NFT_REJECT_TCP_RST
                    // NFT_REJECT_ICMP_UNREACH: port unreachable
                    (RejectWith::IcmpPortUnreachable, IpFamily::IPv4) => (0, 3),
                    (RejectWith::IcmpPortUnreachable, IpFamily::IPv6) => (0, 4),
                };
                expr(b, "reject", |b| {
                    attr_u32(b, 1, ty); // NFTA_REJECT_TYPE
                    attr(b, 2, |b| b.push(code)); // NFTA_REJECT_ICMP_CODE
                });
            }
            Stmt::Dnat { addr, port } => {
                immediate(b, 1, |b| attr(b, NFTA_DATA_VALUE, |b| push_addr(b, addr)));
                immediate(b, 2, |b| {
                    attr(b, NFTA_DATA_VALUE, |b| {
                        b.extend_from_slice(&port.to_be_bytes())
                    })
                });
                self.nat_dnat(b, 2, true);
            }
            Stmt::UpdateSaddr { set } => {
                self.load_addr(b, Dir::Saddr, 1);
                let id = self.set_ids.get(set).copied();
                expr(b, "dynset", |b| {
                    attr_u32(b, 4, 1); // NFTA_DYNSET_SREG_KEY
                    attr_u32(b, 3, 1); // NFTA_DYNSET_OP: NFT_DYNSET_OP_UPDATE
                    attr_str(b, 1, set); // NFTA_DYNSET_SET_NAME
                    if let Some(id) = id {
                        attr_u32(b, 2, id); // NFTA_DYNSET_SET_ID
                    }
                });
            }
            Stmt::DnatMap { key, modulus, map } => {
                let word = self.load_key(b, *key);
                numgen(b, reg(word), *modulus);
                self.lookup(b, 1, Some(1), map, false);
                // The target is address . port: the port follows the address's registers.
                self.nat_dnat(b, reg(self.addr_len() / 4), false);
            }
        }
    }

    fn nat_dnat(&self, b: &mut Vec<u8>, proto_reg: u32, flags: bool) {
        let nfproto = u32::from(self.nfproto);
        expr(b, "nat", |b| {
            attr_u32(b, 1, 1); // NFTA_NAT_TYPE: NFT_NAT_DNAT
            attr_u32(b, 2, nfproto); // NFTA_NAT_FAMILY
            attr_u32(b, 3, 1); // NFTA_NAT_REG_ADDR_MIN
            attr_u32(b, 5, proto_reg); // NFTA_NAT_REG_PROTO_MIN
            if flags {
                attr_u32(b, 7, 2); // NFTA_NAT_FLAGS: NF_NAT_RANGE_PROTO_SPECIFIED
            }
        });
    }
}

const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const META_MARK: u32 = 3;
const META_L4PROTO: u32 = 16;
const CT_STATE: u32 = 0;
const CT_STATUS: u32 = 2;

/// The register of 32-bit word `word` of the key area, named as nft names it.
fn reg(word: u32) -> u32 {
    if word.is_multiple_of(4) {
        1 + word / 4 // NFT_REG_1 ...
    } else {
        8 + word // NFT_REG32_00 + word
    }
}

fn concat_type(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << 6) | t)
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn base_hook(b: &mut Vec<u8>, h: BaseHook) {
    let kind = match h.kind {
        ChainType::Filter => "filter",
        ChainType::Nat => "nat",
    };
    let num = match h.hook {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    };
    attr_str(b, NFTA_CHAIN_TYPE, kind);
    attr(b, NFTA_CHAIN_HOOK | NLA_F_NESTED, |b| {
        attr_u32(b, NFTA_HOOK_HOOKNUM, num);
        attr(b, NFTA_HOOK_PRIORITY, |b| {
            b.extend_from_slice(&h.priority.to_be_bytes())
        });
    });
}

/// The sorted, merged ranges of `nets` as rbtree elements: (address, is an interval end,
/// runs to the top of the address space). A leading end at the zero address closes the gap
/// below the first range, as nft sends it.
fn interval_elements(nets: &[IpNet]) -> Vec<(IpAddr, bool, bool)> {
    let mut ranges: Vec<(u128, u128)> = nets
        .iter()
        .map(|n| (addr_u128(&n.network()), addr_u128(&n.broadcast())))
        .collect();
    ranges.sort();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let v4 = matches!(nets.first(), Some(IpNet::V4(_)));
    let top = if v4 { u128::from(u32::MAX) } else { u128::MAX };
    let addr = |x: u128| -> IpAddr {
        if v4 {
            IpAddr::V4(std::net::Ipv4Addr::from(
                u32::try_from(x).expect("an IPv4 value"),
            ))
        } else {
            IpAddr::V6(std::net::Ipv6Addr::from(x))
        }
    };
    let mut out = Vec::new();
    if merged.first().is_some_and(|(lo, _)| *lo != 0) {
        out.push((addr(0), true, false));
    }
    for (lo, hi) in merged {
        if hi == top {
            out.push((addr(lo), false, true));
        } else {
            out.push((addr(lo), false, false));
            out.push((addr(hi + 1), true, false));
        }
    }
    out
}

fn addr_u128(a: &IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

// ---------------------------------------------------------------------------------------------
// user data (what `nft list` reads back)

fn udata(b: &mut Vec<u8>, ty: u8, value: &[u8]) {
    b.push(ty);
    b.push(u8::try_from(value.len()).expect("user data values are short"));
    b.extend_from_slice(value);
}

fn udata_u32(b: &mut Vec<u8>, ty: u8, v: u32) {
    udata(b, ty, &v.to_ne_bytes());
}

fn udata_nested(b: &mut Vec<u8>, ty: u8, f: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    f(&mut inner);
    udata(b, ty, &inner);
}

/// A comment: nft keeps at most 128 bytes with the terminating zero; longer ones are cut.
fn udata_str(b: &mut Vec<u8>, ty: u8, s: &str) {
    let mut v = s.as_bytes().to_vec();
    v.truncate(127);
    v.push(0);
    udata(b, ty, &v);
}

/// nft's expression kinds in a set's `typeof` description.
const TYPEOF_PAYLOAD: u32 = 7;
const TYPEOF_META: u32 = 9;
const TYPEOF_CONCAT: u32 = 13;
const TYPEOF_NUMGEN: u32 = 23;

fn typeof_expr(u: &mut Vec<u8>, kind: u32, data: impl FnOnce(&mut Vec<u8>)) {
    udata_u32(u, 0, kind);
    udata_nested(u, 1, data);
}

/// `payload` of protocol `desc`, field `field` (nft's `PROTO_DESC_*` and field numbers).
fn typeof_payload(u: &mut Vec<u8>, desc: u32, field: u32) {
    typeof_expr(u, TYPEOF_PAYLOAD, |d| {
        udata_u32(d, 0, desc);
        udata_u32(d, 1, field);
    });
}

fn typeof_payload_addr(u: &mut Vec<u8>, f: IpFamily, dir: Dir) {
    let (desc, field) = match (f, dir) {
        (IpFamily::IPv4, Dir::Saddr) => (12, 11),
        (IpFamily::IPv4, Dir::Daddr) => (12, 12),
        (IpFamily::IPv6, Dir::Saddr) => (13, 8),
        (IpFamily::IPv6, Dir::Daddr) => (13, 9),
    };
    typeof_payload(u, desc, field);
}

fn typeof_th_dport(u: &mut Vec<u8>) {
    typeof_payload(u, 11, 2);
}

fn typeof_l4proto(u: &mut Vec<u8>) {
    typeof_expr(u, TYPEOF_META, |d| udata_u32(d, 0, META_L4PROTO));
}

fn typeof_numgen_random_mod_1(u: &mut Vec<u8>) {
    typeof_expr(u, TYPEOF_NUMGEN, |d| {
        udata_u32(d, 0, 1); // random
        udata_u32(d, 1, 1); // mod 1
        udata_u32(d, 2, 0); // offset
    });
}

type TypeofMember = fn(&mut Vec<u8>, IpFamily);

fn typeof_concat(u: &mut Vec<u8>, f: IpFamily, members: &[TypeofMember]) {
    typeof_expr(u, TYPEOF_CONCAT, |d| {
        for (i, m) in members.iter().enumerate() {
            udata_nested(d, u8::try_from(i).expect("few members"), |e| m(e, f));
        }
    });
}

fn set_udata(f: IpFamily, s: &SetDef) -> Vec<u8> {
    let daddr: TypeofMember = |u, f| typeof_payload_addr(u, f, Dir::Daddr);
    let proto: TypeofMember = |u, _| typeof_l4proto(u);
    let dport: TypeofMember = |u, _| typeof_th_dport(u);
    let bucket: TypeofMember = |u, _| typeof_numgen_random_mod_1(u);
    let mut u = Vec::new();
    match s.ty {
        SetType::Addr => udata_u32(&mut u, UDATA_SET_KEYBYTEORDER, 2),
        SetType::AddrPair => {
            udata_u32(&mut u, UDATA_SET_KEYBYTEORDER, 0);
            udata_nested(&mut u, UDATA_SET_KEY_TYPEOF, |u| typeof_concat(u, f, &[]));
        }
        SetType::AddrProtoPortVerdict | SetType::ProtoPortVerdict => {
            udata_u32(&mut u, UDATA_SET_KEYBYTEORDER, 0);
            udata_u32(&mut u, UDATA_SET_DATABYTEORDER, 0);
            udata_nested(&mut u, UDATA_SET_KEY_TYPEOF, |u| typeof_concat(u, f, &[]));
            udata_u32(&mut u, UDATA_SET_DATA_INTERVAL, 0);
        }
        SetType::AddrProtoPortBucketTarget | SetType::ProtoPortBucketTarget => {
            let key: &[TypeofMember] = if s.ty == SetType::AddrProtoPortBucketTarget {
                &[daddr, proto, dport, bucket]
            } else {
                &[proto, dport, bucket]
            };
            udata_u32(&mut u, UDATA_SET_KEYBYTEORDER, 0);
            udata_u32(&mut u, UDATA_SET_DATABYTEORDER, 0);
            udata_nested(&mut u, UDATA_SET_KEY_TYPEOF, |u| typeof_concat(u, f, key));
            udata_nested(&mut u, UDATA_SET_DATA_TYPEOF, |u| {
                typeof_concat(u, f, &[daddr, dport])
            });
            udata_u32(&mut u, UDATA_SET_DATA_INTERVAL, 0);
        }
    }
    if let Some(c) = &s.comment {
        udata_str(&mut u, UDATA_SET_COMMENT, c);
    }
    u
}

// ---------------------------------------------------------------------------------------------
// expressions

fn expr(b: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    attr(b, NFTA_LIST_ELEM | NLA_F_NESTED, |b| {
        attr_str(b, NFTA_EXPR_NAME, name);
        attr(b, NFTA_EXPR_DATA | NLA_F_NESTED, data);
    });
}

fn payload(b: &mut Vec<u8>, dreg: u32, base: u32, offset: u32, len: u32) {
    expr(b, "payload", |b| {
        attr_u32(b, 1, dreg); // NFTA_PAYLOAD_DREG
        attr_u32(b, 2, base); // NFTA_PAYLOAD_BASE
        attr_u32(b, 3, offset); // NFTA_PAYLOAD_OFFSET
        attr_u32(b, 4, len); // NFTA_PAYLOAD_LEN
    });
}

fn meta_load(b: &mut Vec<u8>, key: u32, dreg: u32) {
    expr(b, "meta", |b| {
        attr_u32(b, 2, key); // NFTA_META_KEY
        attr_u32(b, 1, dreg); // NFTA_META_DREG
    });
}

fn meta_set(b: &mut Vec<u8>, key: u32, sreg: u32) {
    expr(b, "meta", |b| {
        attr_u32(b, 2, key); // NFTA_META_KEY
        attr_u32(b, 3, sreg); // NFTA_META_SREG
    });
}

fn ct_load(b: &mut Vec<u8>, key: u32) {
    expr(b, "ct", |b| {
        attr_u32(b, 2, key); // NFTA_CT_KEY
        attr_u32(b, 1, 1); // NFTA_CT_DREG
    });
}

/// `reg 1 = (reg 1 & mask) ^ xor`; nft names the boolean operation only for `meta mark`.
fn bitwise(b: &mut Vec<u8>, mask: &[u8], xor: &[u8], with_op: bool) {
    let len = u32::try_from(mask.len()).expect("short");
    expr(b, "bitwise", |b| {
        attr_u32(b, 1, 1); // NFTA_BITWISE_SREG
        attr_u32(b, 2, 1); // NFTA_BITWISE_DREG
        if with_op {
            attr_u32(b, 6, 0); // NFTA_BITWISE_OP: NFT_BITWISE_BOOL
        }
        attr_u32(b, 3, len); // NFTA_BITWISE_LEN
        attr(b, 4 | NLA_F_NESTED, |b| {
            attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(mask))
        });
        attr(b, 5 | NLA_F_NESTED, |b| {
            attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(xor))
        });
    });
}

fn cmp(b: &mut Vec<u8>, op: u32, data: &[u8]) {
    expr(b, "cmp", |b| {
        attr_u32(b, 1, 1); // NFTA_CMP_SREG
        attr_u32(b, 2, op); // NFTA_CMP_OP
        attr(b, 3 | NLA_F_NESTED, |b| {
            attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(data))
        });
    });
}

fn numgen(b: &mut Vec<u8>, dreg: u32, modulus: u32) {
    expr(b, "numgen", |b| {
        attr_u32(b, 1, dreg); // NFTA_NG_DREG
        attr_u32(b, 2, modulus); // NFTA_NG_MODULUS
        attr_u32(b, 3, 1); // NFTA_NG_TYPE: NFT_NG_RANDOM
        attr_u32(b, 4, 0); // NFTA_NG_OFFSET
    });
}

fn lookup_expr(
    b: &mut Vec<u8>,
    sreg: u32,
    dreg: Option<u32>,
    set: &str,
    id: Option<u32>,
    invert: bool,
) {
    expr(b, "lookup", |b| {
        attr_u32(b, 2, sreg); // NFTA_LOOKUP_SREG
        if let Some(d) = dreg {
            attr_u32(b, 3, d); // NFTA_LOOKUP_DREG
        }
        attr_str(b, 1, set); // NFTA_LOOKUP_SET
        if let Some(id) = id {
            attr_u32(b, 4, id); // NFTA_LOOKUP_SET_ID
        }
        if invert {
            attr_u32(b, 5, 1); // NFTA_LOOKUP_FLAGS: NFT_LOOKUP_F_INV
        }
    });
}

fn immediate(b: &mut Vec<u8>, dreg: u32, data: impl FnOnce(&mut Vec<u8>)) {
    expr(b, "immediate", |b| {
        attr_u32(b, 1, dreg); // NFTA_IMMEDIATE_DREG
        attr(b, 2 | NLA_F_NESTED, data); // NFTA_IMMEDIATE_DATA
    });
}

// ---------------------------------------------------------------------------------------------
// messages and attributes

/// A netlink message with an `nfgenmsg` header; `body` appends the attributes.
fn message(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes()); // length, patched below
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    body(out);
    let len = u32::try_from(out.len() - start).expect("message under 4 GiB");
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// An attribute with `payload` written by `f`, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&ty.to_ne_bytes());
    f(out);
    let len = u16::try_from(out.len() - start).expect("attribute under 64 KiB");
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn attr_str(out: &mut Vec<u8>, ty: u16, s: &str) {
    attr(out, ty, |b| {
        b.extend_from_slice(s.as_bytes());
        b.push(0);
    });
}

/// A 32-bit attribute, in network order as nf_tables takes them.
fn attr_u32(out: &mut Vec<u8>, ty: u16, v: u32) {
    attr(out, ty, |b| b.extend_from_slice(&v.to_be_bytes()));
}

/// The element list of `set` (named by `id` too when this batch creates it); `each` writes one
/// `NFTA_LIST_ELEM` per element into the list.
fn elements_attrs(out: &mut Vec<u8>, set: &str, id: Option<u32>, each: impl FnOnce(&mut Vec<u8>)) {
    attr_str(out, NFTA_SET_ELEM_LIST_TABLE, TABLE);
    attr_str(out, NFTA_SET_ELEM_LIST_SET, set);
    if let Some(id) = id {
        attr_u32(out, NFTA_SET_ELEM_LIST_SET_ID, id);
    }
    attr(out, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, each);
}

/// An upper bound of a key-only element's bytes (a 32-byte key at most: an IPv6 pair).
const KEY_ELEMENT_SIZE: usize = 48;
/// An upper bound of an anonymous interval set element's bytes.
const INTERVAL_ELEMENT_SIZE: usize = 64;

/// An upper bound of `e`'s bytes in an element list.
fn element_size(e: &Element) -> usize {
    let value = match &e.value {
        Some(Value::Verdict(v)) => {
            let chain = match v {
                Verdict::Jump(c) | Verdict::Goto(c) => c.len() + 8,
                _ => 0,
            };
            24 + chain
        }
        Some(Value::Target(..)) => 32,
        None => 0,
    };
    let comment = e.comment.as_ref().map_or(0, |c| c.len().min(127) + 12);
    KEY_ELEMENT_SIZE + value + comment
}

/// `items` cut into runs for one message each: at most [`ELEMENTS_PER_MESSAGE`] and
/// [`ELEMENT_BYTES_PER_MESSAGE`] by `size`.
fn chunks<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start >= ELEMENTS_PER_MESSAGE || bytes + n > ELEMENT_BYTES_PER_MESSAGE)
        {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// The nest of the `i`th element of a list: nft numbers them from 1 (the kernel reads any
/// number).
fn list_elem(i: usize) -> u16 {
    u16::try_from(i + 1).unwrap_or(NFTA_LIST_ELEM) | NLA_F_NESTED
}

fn key_attr(out: &mut Vec<u8>, k: &Key) {
    attr(out, NFTA_SET_ELEM_KEY | NLA_F_NESTED, |b| {
        attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(&key_bytes(k)));
    });
}

fn element(out: &mut Vec<u8>, e: &Element) {
    key_attr(out, &e.key);
    match &e.value {
        Some(Value::Verdict(v)) => attr(out, NFTA_SET_ELEM_DATA | NLA_F_NESTED, |b| {
            attr(b, NFTA_DATA_VERDICT | NLA_F_NESTED, |b| verdict(b, v));
        }),
        Some(Value::Target(addr, port)) => attr(out, NFTA_SET_ELEM_DATA | NLA_F_NESTED, |b| {
            attr(b, NFTA_DATA_VALUE, |b| {
                push_addr(b, addr);
                push_port(b, *port);
            });
        }),
        None => {}
    }
    if let Some(c) = &e.comment {
        attr(out, NFTA_SET_ELEM_USERDATA, |b| {
            udata_str(b, UDATA_COMMENT, c)
        });
    }
}

fn verdict(out: &mut Vec<u8>, v: &Verdict) {
    let (code, chain) = match v {
        Verdict::Accept => (NF_ACCEPT, None),
        Verdict::Drop => (NF_DROP, None),
        Verdict::Return => (NFT_RETURN, None),
        Verdict::Jump(c) => (NFT_JUMP, Some(c)),
        Verdict::Goto(c) => (NFT_GOTO, Some(c)),
    };
    attr(out, NFTA_VERDICT_CODE, |b| {
        b.extend_from_slice(&code.to_be_bytes())
    });
    if let Some(c) = chain {
        attr_str(out, NFTA_VERDICT_CHAIN, c);
    }
}

fn push_addr(out: &mut Vec<u8>, a: &IpAddr) {
    match a {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

/// A port in network order in its own 32-bit register.
fn push_port(out: &mut Vec<u8>, port: u16) {
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
}

/// The protocol number in its own 32-bit register.
fn push_proto(out: &mut Vec<u8>, p: Protocol) {
    out.extend_from_slice(&[proto_number(p), 0, 0, 0]);
}

/// The key as the kernel compares it.
pub fn key_bytes(k: &Key) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    match k {
        Key::Addr(a) => push_addr(&mut b, a),
        Key::AddrProtoPort(a, p, port) => {
            push_addr(&mut b, a);
            push_proto(&mut b, *p);
            push_port(&mut b, *port);
        }
        Key::ProtoPort(p, port) => {
            push_proto(&mut b, *p);
            push_port(&mut b, *port);
        }
        Key::AddrProtoPortBucket(a, p, port, bucket) => {
            push_addr(&mut b, a);
            push_proto(&mut b, *p);
            push_port(&mut b, *port);
            // `numgen` writes its result in host byte order.
            b.extend_from_slice(&bucket.to_ne_bytes());
        }
        Key::ProtoPortBucket(p, port, bucket) => {
            push_proto(&mut b, *p);
            push_port(&mut b, *port);
            b.extend_from_slice(&bucket.to_ne_bytes());
        }
        Key::AddrPair(a, c) => {
            push_addr(&mut b, a);
            push_addr(&mut b, c);
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::Protocol;

    /// nft's `--debug=netlink` prints each 32-bit register as a little-endian word.
    fn words(b: &[u8]) -> String {
        b.chunks(4)
            .map(|w| {
                let mut w = w.to_vec();
                w.reverse();
                w.iter().map(|x| format!("{x:02x}")).collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn keys_and_targets_are_laid_out_as_nft_lays_them_out() {
        // nft --debug=netlink "add element ip t sb { 10.0.0.1 . udp . 53 . 1 : 10.1.1.2 . 5353 }"
        //   element 0100000a 00000011 00003500 00000001  : 0201010a 0000e914
        let k = Key::AddrProtoPortBucket("10.0.0.1".parse().unwrap(), Protocol::Udp, 53, 1);
        assert_eq!(words(&key_bytes(&k)), "0100000a 00000011 00003500 00000001");
        let mut data = Vec::new();
        push_addr(&mut data, &"10.1.1.2".parse().unwrap());
        push_port(&mut data, 5353);
        assert_eq!(words(&data), "0201010a 0000e914");
        // "add element ip t v { 10.0.0.1 . tcp . 80 ... }": element 0100000a 00000006 00005000
        let k = Key::AddrProtoPort("10.0.0.1".parse().unwrap(), Protocol::Tcp, 80);
        assert_eq!(words(&key_bytes(&k)), "0100000a 00000006 00005000");
    }

    /// (type, flags, seq) of each message.
    fn headers(b: &Batch) -> Vec<(u16, u16, u32)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < b.bytes.len() {
            let word = |o: usize| b.bytes[at + o..at + o + 4].try_into().unwrap();
            let half = |o: usize| b.bytes[at + o..at + o + 2].try_into().unwrap();
            let len = u32::from_ne_bytes(word(0)) as usize;
            assert_eq!(len % 4, 0);
            out.push((
                u16::from_ne_bytes(half(4)),
                u16::from_ne_bytes(half(6)),
                u32::from_ne_bytes(word(8)),
            ));
            at += len;
        }
        assert_eq!(at, b.bytes.len());
        out
    }

    #[test]
    fn a_batch_asks_one_acknowledgement_and_maps_messages_to_operations() {
        let mut tx = Transaction::new(IpFamily::IPv6, false);
        tx.ops.push(Op::DeleteElements {
            set: "service-ips".into(),
            keys: vec![Key::AddrProtoPort(
                "fd00::1".parse().unwrap(),
                Protocol::Tcp,
                80,
            )],
        });
        tx.ops.push(Op::AddElements {
            set: "service-ips".into(),
            elements: (0..300u16)
                .map(|p| Element {
                    key: Key::AddrProtoPort("fd00::1".parse().unwrap(), Protocol::Tcp, p),
                    value: Some(Value::Verdict(Verdict::Goto("pick-cluster-2".into()))),
                    comment: Some("ns/svc:http".into()),
                })
                .collect(),
        });
        tx.ops.push(Op::FlushChain("x".into()));
        assert!(!is_element_only(&tx));
        let b = batch(&tx, 7);
        let h = headers(&b);
        let types: Vec<u16> = h.iter().map(|m| m.0).collect();
        // Begin, one delete, 300 elements in two messages, the flush (DELRULE), end.
        assert_eq!(
            types,
            vec![
                0x10,
                10 << 8 | 14,
                10 << 8 | 12,
                10 << 8 | 12,
                10 << 8 | 8,
                0x11
            ]
        );
        assert_eq!((b.first_seq, b.last_seq), (7, 11));
        let acked: Vec<u32> = h
            .iter()
            .filter(|m| m.1 & NLM_F_ACK != 0)
            .map(|m| m.2)
            .collect();
        assert_eq!(acked, vec![11], "only the last message is acknowledged");
        assert_eq!(
            [8, 9, 10, 11].map(|s| b.op_of(s)),
            [Some(0), Some(1), Some(1), Some(2)]
        );
        let text = String::from_utf8_lossy(&b.bytes);
        assert!(text.contains("pick-cluster-2\0") && text.contains("ns/svc:http\0"));

        // Across a wrap of the sequence numbers the mapping holds.
        let wrapped = batch(&tx, u32::MAX - 1);
        assert_eq!(
            [u32::MAX, 0, 1, 2].map(|s| wrapped.op_of(s)),
            [Some(0), Some(1), Some(1), Some(2)]
        );

        let empty = batch(&Transaction::new(IpFamily::IPv4, false), 1);
        assert_eq!(headers(&empty).len(), 2);
        assert_eq!(empty.first_seq, empty.last_seq, "nothing to acknowledge");
    }

    #[test]
    fn rules_append_and_new_objects_create() {
        let mut tx = Transaction::new(IpFamily::IPv4, true);
        tx.ops.push(Op::AddTable);
        tx.ops.push(Op::DeleteTable);
        tx.ops.push(Op::AddTable);
        tx.ops.push(Op::AddRules {
            chain: "c".into(),
            rules: vec![Rule::new(Stmt::Numgen {
                targets: vec!["a".into(), "b".into()],
            })]
            .into(),
        });
        let h = headers(&batch(&tx, 1));
        let flags: Vec<(u16, u16)> = h[1..h.len() - 1]
            .iter()
            .map(|m| (m.0 & 0xff, m.1 & !NLM_F_ACK))
            .collect();
        let c = NLM_F_REQUEST | NLM_F_CREATE;
        assert_eq!(
            flags,
            vec![
                (NFT_MSG_NEWTABLE, c),
                (NFT_MSG_DELTABLE, NLM_F_REQUEST),
                (NFT_MSG_NEWTABLE, c),
                // A choice of two chains is two rules (see `nft::cascade`).
                (NFT_MSG_NEWRULE, c | NLM_F_APPEND),
                (NFT_MSG_NEWRULE, c | NLM_F_APPEND),
            ]
        );
    }

    #[test]
    fn long_names_and_comments_spread_elements_over_more_messages() {
        let chain = "c".repeat(250);
        let mut tx = Transaction::new(IpFamily::IPv6, false);
        tx.ops.push(Op::AddElements {
            set: "service-ips".into(),
            elements: (0..1000u16)
                .map(|p| Element {
                    key: Key::AddrProtoPort("fd00::1".parse().unwrap(), Protocol::Tcp, p),
                    value: Some(Value::Verdict(Verdict::Goto(chain.clone()))),
                    comment: Some("x".repeat(200)),
                })
                .collect(),
        });
        let b = batch(&tx, 1);
        let h = headers(&b);
        // 1,000 elements of ~440 bytes: more than the 4 messages 256 a message would make,
        // each under the 64 KiB an element list may take.
        assert!(h.len() - 2 > 4, "{} messages", h.len() - 2);
        let mut at = 0;
        while at < b.bytes.len() {
            let len = u32::from_ne_bytes(b.bytes[at..at + 4].try_into().unwrap()) as usize;
            assert!(len < 65_535, "a message of {len} bytes");
            at += len;
        }
        let found = b
            .bytes
            .windows(chain.len())
            .filter(|w| *w == chain.as_bytes())
            .count();
        assert_eq!(found, 1000, "every element sent once");
    }

    #[test]
    fn networks_become_sorted_merged_intervals() {
        let nets = |v: &[&str]| -> Vec<IpNet> { v.iter().map(|n| n.parse().unwrap()).collect() };
        let show = |v: Vec<(IpAddr, bool, bool)>| -> Vec<String> {
            v.into_iter()
                .map(|(a, end, open)| {
                    format!(
                        "{a}{}{}",
                        if end { " end" } else { "" },
                        if open { " open" } else { "" }
                    )
                })
                .collect()
        };
        // Overlapping and adjacent ranges merge; a gap below the first is closed at zero.
        assert_eq!(
            show(interval_elements(&nets(&[
                "10.1.0.0/16",
                "10.0.0.0/8",
                "11.0.0.0/8",
                "10.9.9.9/32"
            ]))),
            ["0.0.0.0 end", "10.0.0.0", "12.0.0.0 end"]
        );
        assert_eq!(
            show(interval_elements(&nets(&["0.0.0.0/0", "10.0.0.0/8"]))),
            ["0.0.0.0 open"]
        );
        assert_eq!(
            show(interval_elements(&nets(&["fd02::1/128", "ffff::/16"]))),
            [":: end", "fd02::1", "fd02::2 end", "ffff:: open"]
        );
    }

    #[test]
    fn concatenations_take_whole_registers_named_as_nft_names_them() {
        // ip daddr . meta l4proto . th dport . numgen: words 0, 1, 2, 3.
        assert_eq!([0, 1, 2, 3].map(reg), [1, 9, 10, 11]);
        // ip6 daddr takes words 0..=3; l4proto starts the second 16-byte register.
        assert_eq!([4, 5, 6].map(reg), [2, 13, 14]);
        assert_eq!(
            concat_type(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
            0x730d
        );
    }
}
