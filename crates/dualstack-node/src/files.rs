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
/// kubelet's limit on search domains.
const MAX_SEARCHES: usize = 32;

impl DnsConfig {
    /// Parses a resolv.conf (`nameserver`, `search`/`domain`, `options`; later `search` lines
    /// replace earlier ones, as the resolver does).
    pub fn parse(text: &str) -> DnsConfig {
        let mut c = DnsConfig::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => c.nameservers.extend(fields.next().map(String::from)),
                Some("search" | "domain") => c.searches = fields.map(String::from).collect(),
                Some("options") => c.options.extend(fields.map(String::from)),
                _ => {}
            }
        }
        c
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
    c.searches.truncate(MAX_SEARCHES);
    c
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
