//! The nfnetlink encoding of element-only transactions: a sync that only adds and deletes map
//! and set elements (an endpoint replaced, a Service added or removed among shared Services) is
//! sent to the kernel as one netlink batch, without an `nft` process that parses text and first
//! reads the table back. The kernel applies a batch all or nothing, as `nft -f`.
//!
//! Pure: bytes out. The socket is the edge's (`dualstack-proxy-run`). Layouts follow the
//! kernel's uapi `linux/netfilter/nf_tables.h` and `nfnetlink.h`; a value in a concatenation
//! takes a whole number of 32-bit registers (zero padding), as nft lays it out
//! (`nft --debug=netlink` prints the same bytes; see the tests).

use std::net::IpAddr;

use dualstack_ipam::IpFamily;

use crate::nft::{Element, Key, Op, TABLE, Transaction, Value, Verdict};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// libnftnl's `NFTNL_UDATA_SET_ELEM_COMMENT`.
const UDATA_SET_ELEM_COMMENT: u8 = 0;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;
/// Elements per message, so one message stays well under the socket's buffer.
const ELEMENTS_PER_MESSAGE: usize = 256;

/// Whether `tx` is an incremental transaction of element operations only (what
/// [`element_batch`] encodes), without encoding it.
pub fn is_element_only(tx: &Transaction) -> bool {
    !tx.full
        && !tx.ops.is_empty()
        && tx
            .ops
            .iter()
            .all(|op| matches!(op, Op::AddElements { .. } | Op::DeleteElements { .. }))
}

/// One batch ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The bytes: batch begin, the element messages, batch end.
    pub bytes: Vec<u8>,
    /// The sequence numbers of the messages the kernel acknowledges (one ack or error each).
    pub acked: Vec<u32>,
}

/// The batch of `tx` when it holds only element operations; `None` otherwise (the edge then
/// uses `nft`). Sequence numbers start at `seq`.
pub fn element_batch(tx: &Transaction, seq: u32) -> Option<Batch> {
    if !is_element_only(tx) {
        return None;
    }
    let family = match tx.family {
        IpFamily::IPv4 => 2u8,  // NFPROTO_IPV4
        IpFamily::IPv6 => 10u8, // NFPROTO_IPV6
    };
    let mut out = Vec::new();
    let mut seq = seq;
    let mut acked = Vec::new();
    message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        |_| {},
    );
    seq += 1;
    for op in &tx.ops {
        match op {
            Op::AddElements { set, elements } => {
                for chunk in elements.chunks(ELEMENTS_PER_MESSAGE) {
                    message(
                        &mut out,
                        NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM,
                        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
                        seq,
                        family,
                        0,
                        |b| elements_attrs(b, set, chunk),
                    );
                    acked.push(seq);
                    seq += 1;
                }
            }
            Op::DeleteElements { set, keys } => {
                for chunk in keys.chunks(ELEMENTS_PER_MESSAGE) {
                    let elems: Vec<Element> = chunk
                        .iter()
                        .map(|k| Element {
                            key: k.clone(),
                            value: None,
                            comment: None,
                        })
                        .collect();
                    message(
                        &mut out,
                        NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELSETELEM,
                        NLM_F_REQUEST | NLM_F_ACK,
                        seq,
                        family,
                        0,
                        |b| elements_attrs(b, set, &elems),
                    );
                    acked.push(seq);
                    seq += 1;
                }
            }
            _ => unreachable!("checked by is_element_only"),
        }
    }
    message(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        |_| {},
    );
    Some(Batch { bytes: out, acked })
}

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

fn elements_attrs(out: &mut Vec<u8>, set: &str, elements: &[Element]) {
    attr_str(out, NFTA_SET_ELEM_LIST_TABLE, TABLE);
    attr_str(out, NFTA_SET_ELEM_LIST_SET, set);
    attr(out, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, |b| {
        for e in elements {
            attr(b, NFTA_LIST_ELEM | NLA_F_NESTED, |b| element(b, e));
        }
    });
}

fn element(out: &mut Vec<u8>, e: &Element) {
    attr(out, NFTA_SET_ELEM_KEY | NLA_F_NESTED, |b| {
        attr(b, NFTA_DATA_VALUE, |b| {
            b.extend_from_slice(&key_bytes(&e.key))
        });
    });
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
        // nft keeps comments of at most 128 bytes; ours are `ns/name:port` (≤ 253 + 63 + 15):
        // cut like nft would refuse, so the kernel never sees more than fits the TLV.
        let mut c = c.as_bytes().to_vec();
        c.truncate(127);
        attr(out, NFTA_SET_ELEM_USERDATA, |b| {
            b.push(UDATA_SET_ELEM_COMMENT);
            b.push(u8::try_from(c.len() + 1).expect("cut to 127"));
            b.extend_from_slice(&c);
            b.push(0);
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
fn push_proto(out: &mut Vec<u8>, p: crate::nft::Protocol) {
    let n = match p {
        crate::nft::Protocol::Tcp => 6,
        crate::nft::Protocol::Udp => 17,
        crate::nft::Protocol::Sctp => 132,
    };
    out.extend_from_slice(&[n, 0, 0, 0]);
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

    #[test]
    fn only_element_only_incremental_transactions_have_a_batch() {
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
            elements: vec![Element {
                key: Key::AddrProtoPort("fd00::1".parse().unwrap(), Protocol::Tcp, 80),
                value: Some(Value::Verdict(Verdict::Goto("pick-cluster-2".into()))),
                comment: Some("ns/svc:http".into()),
            }],
        });
        let b = element_batch(&tx, 7).expect("element-only");
        assert_eq!(b.acked, vec![8, 9]);
        // Begin, two messages, end; each length field matches.
        let mut at = 0;
        let mut types = Vec::new();
        while at < b.bytes.len() {
            let len = u32::from_ne_bytes(b.bytes[at..at + 4].try_into().unwrap()) as usize;
            types.push(u16::from_ne_bytes(
                b.bytes[at + 4..at + 6].try_into().unwrap(),
            ));
            assert_eq!(len % 4, 0);
            at += len;
        }
        assert_eq!(at, b.bytes.len());
        assert_eq!(types, vec![0x10, 10 << 8 | 14, 10 << 8 | 12, 0x11]);
        let text = String::from_utf8_lossy(&b.bytes);
        assert!(text.contains("pick-cluster-2\0") && text.contains("ns/svc:http\0"));

        tx.ops.push(Op::FlushChain("x".into()));
        assert!(
            element_batch(&tx, 1).is_none(),
            "a chain operation needs nft"
        );
        let mut full = Transaction::new(IpFamily::IPv4, true);
        full.ops.push(Op::AddElements {
            set: "cluster-ips".into(),
            elements: vec![],
        });
        assert!(
            element_batch(&full, 1).is_none(),
            "a full sync goes through nft"
        );
    }
}
