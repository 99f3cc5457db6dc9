//! The order of `status.podIPs` and `status.hostIPs` (kubelet's `sortPodIPs`, spec §7.1).

use std::net::IpAddr;

/// Whether the node's primary family is IPv6: the family of its first node IP (IPv4 when
/// there is none).
pub fn primary_is_ipv6(node_ips: &[IpAddr]) -> bool {
    node_ips.first().is_some_and(IpAddr::is_ipv6)
}

/// kubelet's `sortPodIPs`: the first IP of the node's primary family, then the first of the
/// other family; everything else is dropped (at most two).
pub fn sort_pod_ips(node_ips: &[IpAddr], ips: &[IpAddr]) -> Vec<IpAddr> {
    let v6_first = primary_is_ipv6(node_ips);
    let primary = ips.iter().find(|ip| ip.is_ipv6() == v6_first);
    let secondary = ips.iter().find(|ip| ip.is_ipv6() != v6_first);
    primary.into_iter().chain(secondary).copied().collect()
}

/// The addresses of a `hostNetwork: true` pod, and every pod's `hostIPs`: the node IPs in
/// `--node-ip` order (one or two).
pub fn host_ips(node_ips: &[IpAddr]) -> Vec<IpAddr> {
    sort_pod_ips(node_ips, node_ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn pod_ips_follow_the_nodes_primary_family() {
        // (node IPs, CNI result, expected podIPs): IPv4-primary and IPv6-primary rows side by side.
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (
                &["192.0.2.1", "2001:db8:1::1"],
                &["10.244.0.5", "fd00:10:244::5"],
                &["10.244.0.5", "fd00:10:244::5"],
            ),
            (
                &["2001:db8:1::1", "192.0.2.1"],
                &["10.244.0.5", "fd00:10:244::5"],
                &["fd00:10:244::5", "10.244.0.5"],
            ),
            (
                &["192.0.2.1", "2001:db8:1::1"],
                &["fd00:10:244::5", "10.244.0.5"],
                &["10.244.0.5", "fd00:10:244::5"],
            ),
            (
                &["2001:db8:1::1", "192.0.2.1"],
                &["fd00:10:244::5", "10.244.0.5"],
                &["fd00:10:244::5", "10.244.0.5"],
            ),
            // Only the first of each family counts.
            (
                &["192.0.2.1"],
                &[
                    "10.244.0.5",
                    "10.244.0.6",
                    "fd00:10:244::5",
                    "fd00:10:244::6",
                ],
                &["10.244.0.5", "fd00:10:244::5"],
            ),
            (
                &["2001:db8:1::1"],
                &[
                    "10.244.0.5",
                    "10.244.0.6",
                    "fd00:10:244::5",
                    "fd00:10:244::6",
                ],
                &["fd00:10:244::5", "10.244.0.5"],
            ),
            // Single-stack results stay single.
            (&["192.0.2.1"], &["10.244.0.5"], &["10.244.0.5"]),
            (&["2001:db8:1::1"], &["10.244.0.5"], &["10.244.0.5"]),
            // No node IP: IPv4 first.
            (
                &[],
                &["fd00:10:244::5", "10.244.0.5"],
                &["10.244.0.5", "fd00:10:244::5"],
            ),
        ];
        for (node, result, want) in cases {
            assert_eq!(
                sort_pod_ips(&ips(node), &ips(result)),
                ips(want),
                "node {node:?} result {result:?}"
            );
        }
    }

    #[test]
    fn host_ips_are_the_node_ips_in_flag_order() {
        assert_eq!(
            host_ips(&ips(&["192.0.2.1", "2001:db8:1::1"])),
            ips(&["192.0.2.1", "2001:db8:1::1"])
        );
        assert_eq!(
            host_ips(&ips(&["2001:db8:1::1", "192.0.2.1"])),
            ips(&["2001:db8:1::1", "192.0.2.1"])
        );
        assert_eq!(host_ips(&ips(&["192.0.2.1"])), ips(&["192.0.2.1"]));
    }
}
