//! The family tokens of nftables: the one place where `ip`/`ip6`, `ipv4_addr`/`ipv6_addr`, the
//! loopback range and the ICMP flavour are spelled. Every renderer asks [`Tokens`] for them.

use std::net::IpAddr;

use dualstack_ipam::IpFamily;
use ipnet::IpNet;

/// The nftables spellings of one IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// The family.
    pub family: IpFamily,
    /// The table family and the payload protocol of address matches: `ip` or `ip6`.
    pub nft_family: &'static str,
    /// The set key type of an address: `ipv4_addr` or `ipv6_addr`.
    pub addr_type: &'static str,
    /// The loopback range, excluded from "any local address" NodePorts: `127.0.0.0/8` or
    /// `::1/128`.
    pub loopback: &'static str,
    /// The ICMP protocol whose port-unreachable a plain `reject` sends: `icmp` or `icmpv6`.
    pub icmp: &'static str,
    /// The whole address space of the family: `0.0.0.0/0` or `::/0`.
    pub any: &'static str,
}

const V4: Tokens = Tokens {
    family: IpFamily::IPv4,
    nft_family: "ip",
    addr_type: "ipv4_addr",
    loopback: "127.0.0.0/8",
    icmp: "icmp",
    any: "0.0.0.0/0",
};

const V6: Tokens = Tokens {
    family: IpFamily::IPv6,
    nft_family: "ip6",
    addr_type: "ipv6_addr",
    loopback: "::1/128",
    icmp: "icmpv6",
    any: "::/0",
};

impl Tokens {
    /// The tokens of `family`.
    pub fn of(family: IpFamily) -> &'static Tokens {
        match family {
            IpFamily::IPv4 => &V4,
            IpFamily::IPv6 => &V6,
        }
    }

    /// The loopback range as a network.
    pub fn loopback_net(&self) -> IpNet {
        self.loopback.parse().expect("constant loopback range")
    }

    /// An address as a DNAT target: bare for IPv4, bracketed for IPv6 (`[fd00::1]:80`).
    pub fn dnat_target(&self, addr: IpAddr, port: u16) -> String {
        match addr {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        }
    }
}

/// Whether `addr` is of `family`.
pub fn is_of(family: IpFamily, addr: &IpAddr) -> bool {
    IpFamily::of_addr(addr) == family
}

/// Whether `net` is of `family`.
pub fn net_is_of(family: IpFamily, net: &IpNet) -> bool {
    IpFamily::of_net(net) == family
}
