//! Address and CIDR parsing with upstream's rules.
//!
//! Kubernetes parses flag values with `netutils.ParseIPSloppy` / `ParseCIDRSloppy`, which accept
//! IPv4 octets with leading zeros (`010.0.0.1` is `10.0.0.1`, read as decimal) for backward
//! compatibility. API fields use the strict parsers (`ParseIP`), which reject them.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// Parses an IP address, accepting IPv4 octets with leading zeros (read as decimal).
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    parse_ipv4_leading_zeros(s).map(IpAddr::V4)
}

/// Parses a CIDR sloppily (see [`parse_ip_sloppy`]) and returns its network (host bits cleared),
/// as Go's `ParseCIDR` second result does: `10.0.0.5/16` gives `10.0.0.0/16`.
pub fn parse_cidr_sloppy(s: &str) -> Option<IpNet> {
    let (addr, prefix) = s.split_once('/')?;
    let ip = parse_ip_sloppy(addr)?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    IpNet::new(ip, prefix).ok().map(|n| n.trunc())
}

/// Parses an IP address strictly, as API validation does (`netutils.ParseIPSloppy` is not used
/// for API fields since 1.30; leading zeros are rejected).
pub fn parse_ip_strict(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok()
}

/// Parses a CIDR strictly and returns it unchanged (host bits kept).
pub fn parse_cidr_strict(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok()
}

fn parse_ipv4_leading_zeros(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// Number of addresses in a CIDR, saturating at `u128::MAX` for `::/0`.
pub fn range_size(net: &IpNet) -> u128 {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// The address `offset` positions after the network address of `net`.
pub fn nth_address(net: &IpNet, offset: u128) -> IpAddr {
    match net.network() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(offset as u32))),
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6).wrapping_add(offset),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sloppy_parsing_accepts_leading_zeros_as_decimal() {
        assert_eq!(
            parse_ip_sloppy("010.000.000.001"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_cidr_sloppy("010.0.0.5/16"),
            Some("10.0.0.0/16".parse().unwrap())
        );
        assert_eq!(
            parse_cidr_sloppy("fd00::5/108"),
            Some("fd00::/108".parse().unwrap())
        );
        assert_eq!(parse_ip_strict("010.0.0.1"), None);
    }

    #[test]
    fn sloppy_parsing_rejects_garbage() {
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "fd00::/129",
            "x/8",
            "1.2.3/8",
        ] {
            assert_eq!(parse_cidr_sloppy(bad), None, "{bad}");
        }
        assert_eq!(parse_ip_sloppy("256.1.1.1"), None);
    }

    #[test]
    fn range_size_and_nth_address_for_both_families() {
        let v4: IpNet = "10.0.0.0/24".parse().unwrap();
        let v6: IpNet = "fd00::/108".parse().unwrap();
        assert_eq!(range_size(&v4), 256);
        assert_eq!(range_size(&v6), 1 << 20);
        assert_eq!(range_size(&"::/0".parse().unwrap()), u128::MAX);
        assert_eq!(nth_address(&v4, 1), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(nth_address(&v6, 1), "fd00::1".parse::<IpAddr>().unwrap());
    }
}
