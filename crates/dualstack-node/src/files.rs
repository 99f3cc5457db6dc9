//! The pod's `/etc/hosts` (kubelet's `managedHostsFileContent`) and `/etc/resolv.conf`
//! (kubelet's `GetPodDNS` as containerd renders it).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{PodDNSConfig, PodSpec};

/// The first line of a hosts file kubelet manages.
pub const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
/// The first line for a `hostNetwork` pod.
pub const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str =
    "# Kubernetes-managed hosts file (host network).\n";

/// kubelet's hosts file: the header, localhost lines of both families, one line per pod IP
/// (`IP\tHOSTNAME`, or `IP\tHOSTNAME.DOMAIN\tHOSTNAME` with a subdomain), then the
/// `hostAliases`. `host_network` pods get the other header (their file is the node's own
/// content in kubelet; here the same lines with the node's addresses).
pub fn hosts_file(
    ips: &[IpAddr],
    hostname: &str,
    domain: Option<&str>,
    spec: &PodSpec,
    host_network: bool,
) -> String {
    let mut out = String::from(if host_network {
        MANAGED_HOSTS_HEADER_HOST_NETWORK
    } else {
        MANAGED_HOSTS_HEADER
    });
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in ips {
        match domain.filter(|d| !d.is_empty()) {
            Some(d) => out.push_str(&format!("{ip}\t{hostname}.{d}\t{hostname}\n")),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    let aliases = spec.host_aliases.as_deref().unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            for h in a.hostnames.as_deref().unwrap_or_default() {
                out.push_str(&format!("{}\t{h}\n", a.ip));
            }
        }
    }
    out
}

/// The pod's hostname and domain as kubelet derives them (`spec.hostname` or the pod name;
/// `SUBDOMAIN.NAMESPACE.svc.CLUSTER_DOMAIN` when `spec.subdomain` is set).
pub fn hostname_and_domain(
    pod_name: &str,
    namespace: &str,
    spec: &PodSpec,
    cluster_domain: &str,
) -> (String, Option<String>) {
    let hostname = spec
        .hostname
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_name.to_string());
    let hostname: String = hostname.chars().take(63).collect();
    let hostname = hostname.trim_end_matches(['-', '.']).to_string();
    let domain = spec
        .subdomain
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| format!("{s}.{namespace}.svc.{cluster_domain}"));
    (hostname, domain)
}

/// A resolver configuration (what `/etc/resolv.conf` holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    /// `nameserver` lines, at most 3.
    pub nameservers: Vec<String>,
    /// The `search` list.
    pub searches: Vec<String>,
    /// `options` entries (`ndots:5`).
    pub options: Vec<String>,
}

/// kubelet's limit on nameservers (glibc's `MAXNS`).
const MAX_NAMESERVERS: usize = 3;
/// kubelet's limit on search domains (`MaxDNSSearchPathsExpanded`).
const MAX_SEARCHES: usize = 32;
/// kubelet's limit on the search line's length, spaces included (`MaxDNSSearchListCharsExpanded`).
const MAX_SEARCH_CHARS: usize = 2048;
/// A longer search domain is dropped (glibc aborts on one; kubelet filters them out).
const MAX_SEARCH_DOMAIN_LEN: usize = 253;

impl DnsConfig {
    /// Parses a resolv.conf as kubelet's `parseResolvConf`: `nameserver` lines accumulate;
    /// the last `search` (or `domain`) line wins, with trailing dots trimmed and `.` dropped;
    /// the last `options` line wins; `#` and `;` start comments.
    pub fn parse(text: &str) -> DnsConfig {
        let mut c = DnsConfig::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => c.nameservers.extend(fields.next().map(String::from)),
                Some("search" | "domain") => {
                    c.searches = fields
                        .filter(|s| *s != ".")
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect()
                }
                Some("options") => c.options = fields.map(String::from).collect(),
                _ => {}
            }
        }
        c
    }

    /// What kubelet uses as the node's resolver with `--resolv-conf=""`: the local machine's
    /// (`127.0.0.1` for an IPv4 node address, `::1` for IPv6; `127.0.0.1` without any) and the
    /// search list `.`, which effectively turns lookups through the host resolver off.
    pub fn local_resolver(node_ips: &[IpAddr]) -> DnsConfig {
        let mut nameservers: Vec<String> = node_ips
            .iter()
            .map(|ip| if ip.is_ipv6() { "::1" } else { "127.0.0.1" }.to_string())
            .collect();
        if nameservers.is_empty() {
            nameservers.push("127.0.0.1".into());
        }
        DnsConfig {
            nameservers,
            searches: vec![".".into()],
            options: vec![],
        }
    }

    /// The file content: `search`, `nameserver` lines, `options`, as containerd writes it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for n in &self.nameservers {
            out.push_str(&format!("nameserver {n}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// The cluster's DNS settings (kubelet's `--cluster-dns` and `--cluster-domain`).
#[derive(Debug, Clone, Default)]
pub struct ClusterDns {
    /// `--cluster-dns` addresses (empty: none known).
    pub servers: Vec<IpAddr>,
    /// `--cluster-domain` (`cluster.local`).
    pub domain: String,
}

/// kubelet's `GetPodDNS`: the pod's resolver configuration from its `dnsPolicy` and
/// `dnsConfig`, the cluster DNS settings and the node's own resolv.conf.
pub fn pod_dns(
    spec: &PodSpec,
    namespace: &str,
    cluster: &ClusterDns,
    host: &DnsConfig,
) -> DnsConfig {
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut c = if policy == "None" {
        DnsConfig::default()
    } else if cluster_first && !cluster.servers.is_empty() {
        let d = &cluster.domain;
        let mut searches = vec![
            format!("{namespace}.svc.{d}"),
            format!("svc.{d}"),
            d.clone(),
        ];
        searches.extend(host.searches.iter().cloned());
        DnsConfig {
            nameservers: cluster.servers.iter().map(IpAddr::to_string).collect(),
            searches,
            options: vec!["ndots:5".into()],
        }
    } else {
        host.clone()
    };
    if let Some(extra) = &spec.dns_config {
        merge(&mut c, extra);
    }
    dedup(&mut c.nameservers);
    c.nameservers.truncate(MAX_NAMESERVERS);
    dedup(&mut c.searches);
    fit_search_limits(&mut c.searches);
    c
}

/// kubelet's `formDNSSearchFitsLimits`: at most 32 domains, none longer than 253 characters,
/// and domains cut from the end until the line is at most 2048 characters.
fn fit_search_limits(searches: &mut Vec<String>) {
    searches.truncate(MAX_SEARCHES);
    searches.retain(|s| s.len() <= MAX_SEARCH_DOMAIN_LEN);
    while searches.len() > 1 && searches.join(" ").len() > MAX_SEARCH_CHARS {
        searches.pop();
    }
}

fn merge(c: &mut DnsConfig, extra: &PodDNSConfig) {
    c.nameservers
        .extend(extra.nameservers.iter().flatten().cloned());
    c.searches.extend(extra.searches.iter().flatten().cloned());
    for o in extra.options.iter().flatten() {
        let rendered = match &o.value {
            Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or("")),
            None => o.name.clone().unwrap_or_default(),
        };
        let name = o.name.as_deref().unwrap_or("");
        c.options
            .retain(|existing| existing.split(':').next() != Some(name));
        c.options.push(rendered);
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LOCAL: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";

    #[test]
    fn hosts_file_lists_the_pod_name_with_both_addresses_in_pod_ip_order() {
        let spec = PodSpec::default();
        for ips in [
            vec![ip("10.244.0.5"), ip("fd00:10:244::5")],
            vec![ip("fd00:10:244::5"), ip("10.244.0.5")],
        ] {
            let got = hosts_file(&ips, "web", None, &spec, false);
            let want = format!(
                "{MANAGED_HOSTS_HEADER}{LOCAL}{}\tweb\n{}\tweb\n",
                ips[0], ips[1]
            );
            assert_eq!(got, want);
        }
    }

    #[test]
    fn hosts_file_has_the_fqdn_with_a_subdomain_and_the_host_aliases() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [],
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.remote", "bar.remote"]}]
        }))
        .unwrap();
        let got = hosts_file(
            &[ip("10.244.0.5")],
            "web",
            Some("sub.default.svc.cluster.local"),
            &spec,
            false,
        );
        assert!(got.ends_with("10.244.0.5\tweb.sub.default.svc.cluster.local\tweb\n\n# Entries added by HostAliases.\n10.1.2.3\tfoo.remote\n10.1.2.3\tbar.remote\n"), "{got}");
    }

    #[test]
    fn cluster_first_uses_cluster_dns_searches_and_ndots() {
        let cluster = ClusterDns {
            servers: vec![ip("10.0.0.10"), ip("fd00:10::a")],
            domain: "cluster.local".into(),
        };
        let host = DnsConfig::parse("nameserver 192.0.2.53\nsearch example.com\noptions edns0\n");
        let spec = PodSpec::default();
        let got = pod_dns(&spec, "ns1", &cluster, &host).render();
        assert_eq!(
            got,
            "search ns1.svc.cluster.local svc.cluster.local cluster.local example.com\nnameserver 10.0.0.10\nnameserver fd00:10::a\noptions ndots:5\n"
        );
    }

    #[test]
    fn default_policy_and_host_network_and_missing_cluster_dns_copy_the_nodes_resolver() {
        let host_text = "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.com\n";
        let host = DnsConfig::parse(host_text);
        let cluster = ClusterDns {
            servers: vec![ip("10.0.0.10")],
            domain: "cluster.local".into(),
        };
        let mut spec = PodSpec {
            dns_policy: Some("Default".into()),
            ..Default::default()
        };
        assert_eq!(
            pod_dns(&spec, "ns1", &cluster, &host).render(),
            "search example.com\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"
        );
        spec.dns_policy = Some("ClusterFirst".into());
        spec.host_network = Some(true);
        assert_eq!(pod_dns(&spec, "ns1", &cluster, &host), host);
        spec.dns_policy = Some("ClusterFirstWithHostNet".into());
        assert_eq!(
            pod_dns(&spec, "ns1", &cluster, &host).nameservers,
            vec!["10.0.0.10"]
        );
        let none = ClusterDns {
            servers: vec![],
            domain: "cluster.local".into(),
        };
        spec.host_network = None;
        spec.dns_policy = Some("ClusterFirst".into());
        assert_eq!(pod_dns(&spec, "ns1", &none, &host), host);
    }

    #[test]
    fn the_hosts_resolv_conf_is_parsed_as_kubelet_does() {
        let c = DnsConfig::parse(
            "# comment\nnameserver 192.0.2.53\nsearch old.example\nnameserver 2001:db8::53\nsearch a.example. . b.example\noptions edns0\noptions ndots:2 timeout:1\n",
        );
        assert_eq!(c.nameservers, vec!["192.0.2.53", "2001:db8::53"]);
        assert_eq!(c.searches, vec!["a.example", "b.example"]);
        assert_eq!(c.options, vec!["ndots:2", "timeout:1"]);
    }

    #[test]
    fn an_empty_resolv_conf_flag_means_the_local_resolver_of_each_node_family() {
        for (ips, want) in [
            (
                vec![ip("203.0.113.11"), ip("2001:db8:1::11")],
                vec!["127.0.0.1", "::1"],
            ),
            (
                vec![ip("2001:db8:1::11"), ip("203.0.113.11")],
                vec!["::1", "127.0.0.1"],
            ),
            (vec![], vec!["127.0.0.1"]),
        ] {
            let c = DnsConfig::local_resolver(&ips);
            assert_eq!(c.nameservers, want);
            assert_eq!(c.searches, vec!["."]);
        }
    }

    #[test]
    fn search_lists_and_nameservers_are_cut_to_kubelets_limits() {
        let cluster = ClusterDns {
            servers: vec![ip("10.96.0.10"), ip("fd00:10:96::a")],
            domain: "cluster.local".into(),
        };
        let long = "x".repeat(254);
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [],
            "dnsConfig": {
                "nameservers": ["192.0.2.1", "192.0.2.2"],
                "searches": [long, "keep.example", "cluster.local"],
            }
        }))
        .unwrap();
        let got = pod_dns(&spec, "ns1", &cluster, &DnsConfig::default());
        // Three nameservers at most: the cluster's two, then the first extra one.
        assert_eq!(
            got.nameservers,
            vec!["10.96.0.10", "fd00:10:96::a", "192.0.2.1"]
        );
        // The 254-character domain is dropped, the duplicate cluster.local merged.
        assert_eq!(
            got.searches,
            vec![
                "ns1.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "keep.example"
            ]
        );
        // 40 domains of 63 characters: 32 kept by count, then cut to 2048 characters.
        let many: Vec<String> = (0..40)
            .map(|i| format!("{i:02}{}", "d".repeat(61)))
            .collect();
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [], "dnsPolicy": "None", "dnsConfig": {"searches": many}
        }))
        .unwrap();
        let got = pod_dns(&spec, "ns1", &cluster, &DnsConfig::default());
        assert_eq!(got.searches.len(), 32);
        assert!(got.searches.join(" ").len() <= 2048);
        let many: Vec<String> = (0..30)
            .map(|i| format!("{i:02}.{}", "d".repeat(80)))
            .collect();
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [], "dnsPolicy": "None", "dnsConfig": {"searches": many}
        }))
        .unwrap();
        let got = pod_dns(&spec, "ns1", &cluster, &DnsConfig::default());
        assert_eq!(
            got.searches.len(),
            24,
            "24 × 84 - 1 = 2015 ≤ 2048 < 25 × 84 - 1"
        );
        assert_eq!(got.searches[23], many[23]);
    }

    #[test]
    fn cluster_first_with_host_net_keeps_the_host_search_after_the_cluster_ones() {
        let cluster = ClusterDns {
            servers: vec![ip("fd00:10:96::a"), ip("10.96.0.10")],
            domain: "example.internal".into(),
        };
        let host = DnsConfig::parse("nameserver 192.0.2.53\nsearch corp.example\noptions rotate\n");
        let spec = PodSpec {
            host_network: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".into()),
            ..Default::default()
        };
        assert_eq!(
            pod_dns(&spec, "kube-system", &cluster, &host).render(),
            "search kube-system.svc.example.internal svc.example.internal example.internal corp.example\nnameserver fd00:10:96::a\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn dns_config_is_merged_into_the_policys_result() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["192.0.2.1"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}
        }))
        .unwrap();
        let got = pod_dns(&spec, "ns1", &ClusterDns::default(), &DnsConfig::default()).render();
        assert_eq!(
            got,
            "search a.example\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
        );
    }
}
