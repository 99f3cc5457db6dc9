//! `dualstack up`: a local dual-stack cluster in network namespaces (see `dualstack_lab`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser};

use crate::cmd::server::ServerArgs;

/// The default data dir of `up`, `exec` and `down`.
pub const DEFAULT_LAB_DIR: &str = "/var/lib/dualstack/lab";

/// The lab's LoadBalancer pools unless `--loadbalancer-ip-pool` is given: documentation
/// ranges apart from the segment's (TEST-NET-2 and a /112 of 2001:db8:1b::/48).
pub const DEFAULT_LB_POOLS: [&str; 2] = ["198.51.100.0/24", "2001:db8:1b::/112"];

/// `dualstack up ...`
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// How many nodes (default 3 for a new lab; an existing lab keeps its own).
    #[arg(long = "nodes", value_name = "int")]
    pub nodes: Option<usize>,

    /// Where the lab keeps its state; a second lab needs another dir.
    #[arg(long = "data-dir", value_name = "path", default_value = DEFAULT_LAB_DIR)]
    pub data_dir: PathBuf,

    /// Service cluster IP ranges (kube-apiserver's flag; default 10.0.0.0/16,fd00::/108).
    /// IPv6 first makes an IPv6-primary cluster, nodes included.
    #[arg(long = "service-cluster-ip-range", value_name = "string")]
    pub service_cluster_ip_range: Option<String>,

    /// Pod ranges, split into node podCIDRs (kube-controller-manager's flag; default
    /// 10.244.0.0/16,fc00::/48).
    #[arg(long = "cluster-cidr", value_name = "string")]
    pub cluster_cidr: Option<String>,

    /// Mask size for node cidr in cluster.
    #[arg(long = "node-cidr-mask-size", value_name = "int32")]
    pub node_cidr_mask_size: Option<String>,

    /// Mask size for IPv4 node cidr in dual-stack cluster. Default is 24.
    #[arg(long = "node-cidr-mask-size-ipv4", value_name = "int32")]
    pub node_cidr_mask_size_ipv4: Option<String>,

    /// Mask size for IPv6 node cidr in dual-stack cluster. Default is 64.
    #[arg(long = "node-cidr-mask-size-ipv6", value_name = "int32")]
    pub node_cidr_mask_size_ipv6: Option<String>,

    /// A port range to reserve for services with NodePort visibility.
    #[arg(long = "service-node-port-range", value_name = "portRange")]
    pub service_node_port_range: Option<String>,

    /// Address pools for Services of type LoadBalancer (repeatable; default
    /// 198.51.100.0/24 and 2001:db8:1b::/112). The outside host routes them via the nodes.
    #[arg(long = "loadbalancer-ip-pool", value_name = "CIDR|FIRST-LAST")]
    pub loadbalancer_ip_pool: Vec<String>,

    /// Feature gates (IPv6DualStack=true is accepted).
    #[arg(long = "feature-gates", value_name = "mapStringBool")]
    pub feature_gates: Option<String>,

    /// A highly available control plane: a 3-member etcd cluster (Debian's etcd-server) and
    /// 3 API servers on it, on loopback, behind a balancer kubectl and the agents go through.
    #[arg(long = "ha")]
    pub ha: bool,

    /// How long to wait for the server and every node to be Ready.
    #[arg(long = "timeout", value_name = "duration", default_value = "120s", value_parser = crate::flags::duration)]
    pub timeout: Duration,
}

impl UpArgs {
    /// The server's flags for this lab, validated as `dualstack server` validates them.
    /// The second value says whether any server flag was given at all.
    fn server_flags(&self) -> Result<(Vec<String>, bool, bool)> {
        let services = self
            .service_cluster_ip_range
            .as_deref()
            .unwrap_or("10.0.0.0/16,fd00::/108");
        let pods = self
            .cluster_cidr
            .as_deref()
            .unwrap_or("10.244.0.0/16,fc00::/48");
        let mut flags = vec![
            format!("--service-cluster-ip-range={services}"),
            format!("--cluster-cidr={pods}"),
            "--allocate-node-cidrs=true".to_string(),
        ];
        let optional = [
            ("--feature-gates", &self.feature_gates),
            ("--node-cidr-mask-size", &self.node_cidr_mask_size),
            ("--node-cidr-mask-size-ipv4", &self.node_cidr_mask_size_ipv4),
            ("--node-cidr-mask-size-ipv6", &self.node_cidr_mask_size_ipv6),
            ("--service-node-port-range", &self.service_node_port_range),
        ];
        for (flag, v) in optional {
            if let Some(v) = v {
                flags.push(format!("{flag}={v}"));
            }
        }
        let pools: Vec<String> = if self.loadbalancer_ip_pool.is_empty() {
            DEFAULT_LB_POOLS.iter().map(|s| s.to_string()).collect()
        } else {
            self.loadbalancer_ip_pool.clone()
        };
        for p in &pools {
            flags.push(format!("--loadbalancer-ip-pool={p}"));
        }
        let server = ServerArgs::try_parse_from(
            std::iter::once("server".to_string()).chain(flags.iter().cloned()),
        )?;
        let (config, _) = server.resolve()?;
        let ipv6_primary = config.service_ranges.primary_family() == dualstack_ipam::IpFamily::IPv6;
        let explicit = optional.iter().any(|(_, v)| v.is_some())
            || self.service_cluster_ip_range.is_some()
            || self.cluster_cidr.is_some()
            || !self.loadbalancer_ip_pool.is_empty();
        Ok((flags, explicit, ipv6_primary))
    }
}

#[derive(Debug, Parser)]
struct ServerOnly {
    #[command(flatten)]
    server: ServerArgs,
}

impl ServerArgs {
    fn try_parse_from(args: impl IntoIterator<Item = String>) -> Result<ServerArgs, clap::Error> {
        ServerOnly::try_parse_from(args).map(|s| s.server)
    }
}

/// Runs `up`.
pub fn run(args: UpArgs) -> Result<()> {
    let (server_flags, explicit, ipv6_primary) = args.server_flags()?;
    let opts = dualstack_lab::lab::UpOptions {
        data_dir: args.data_dir.clone(),
        nodes: args.nodes,
        // On an existing lab, flags only count when given (the lab keeps its own).
        server_flags: if explicit || !args.data_dir.join("lab.json").exists() {
            server_flags
        } else {
            Vec::new()
        },
        ipv6_primary,
        exe: std::env::current_exe()?,
        timeout: args.timeout,
        ha: args.ha,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(dualstack_lab::lab::up(&opts))?;
    let dir = std::path::absolute(&args.data_dir)?;
    let d = dir.display();
    let p = &report.plan;
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "dualstack lab {d} is up: {} nodes Ready, cluster DNS answering, in {:.2}s ({} primary){}",
        p.nodes.len(),
        report.elapsed.as_secs_f64(),
        if p.ipv6_primary { "IPv6" } else { "IPv4" },
        if report.started {
            ""
        } else {
            ", already running"
        }
    );
    let _ = writeln!(
        out,
        "  kubectl:  export KUBECONFIG={}",
        report.kubeconfig.display()
    );
    let _ = writeln!(
        out,
        "            kubectl get nodes -o wide   (server {})",
        report.url
    );
    for n in &p.nodes {
        let _ = writeln!(out, "  {:<9} {}, {}", format!("{}:", n.name), n.v4, n.v6);
    }
    let _ = writeln!(
        out,
        "  outside:  {}, {}   (a host outside the cluster)",
        p.outside.v4, p.outside.v6
    );
    let _ = writeln!(
        out,
        "  a shell:  dualstack exec --data-dir {d} node-1 -- ip addr"
    );
    let _ = writeln!(out, "  stop:     dualstack down --data-dir {d}");
    // A closed stdout (`up | head -1`) is not an error of `up`.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    Ok(())
}
