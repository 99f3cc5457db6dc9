//! `dualstack masq-agent`: ip-masq-agent for both families, with its flags (`--masq-chain`,
//! `--nomasq-all-reserved-ranges`, `--enable-ipv6`, `--random-fully`, `--to-ports`), reading
//! `/etc/config/ip-masq-agent` (or `--config`), or the ConfigMap `kube-system/ip-masq-agent`
//! when `--kubeconfig` is given. The rules are `dualstack_masq`'s, the loop
//! `dualstack_agent::masq`. Also the `--masq-*` flags with which `dualstack agent` runs it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use dualstack_agent::masq::{ConfigSource, MasqSettings, NftCommand};
use dualstack_masq::MasqFlags;
use dualstack_masq::flags::{parse_to_ports, validate_chain};

use crate::flags::go_bool;

/// Flags of `dualstack masq-agent` (upstream's, plus where the configuration comes from).
#[derive(Debug, Clone, Args)]
pub struct MasqAgentArgs {
    /// Name of nat chain for iptables masquerade rules (here: the chain in our nftables table).
    #[arg(
        long = "masq-chain",
        value_name = "string",
        default_value = "IP-MASQ-AGENT"
    )]
    pub masq_chain: String,

    /// Whether to disable masquerade for all IPv4 ranges reserved by RFCs.
    #[arg(long = "nomasq-all-reserved-ranges", value_name = "bool", num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub nomasq_all_reserved_ranges: bool,

    /// Whether to enable IPv6.
    #[arg(long = "enable-ipv6", value_name = "bool", num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub enable_ipv6: bool,

    /// Whether to add --random-fully to the masquerade rule, if the system supports it.
    #[arg(long = "random-fully", value_name = "bool", num_args = 0..=1, default_missing_value = "true", default_value = "true", value_parser = go_bool)]
    pub random_fully: bool,

    /// Masquerade to specified ports only, example: "1024-29999,32768-65535"; applicable to
    /// tcp, udp, sctp protocols.
    #[arg(long = "to-ports", value_name = "string", default_value = "")]
    pub to_ports: String,

    /// The configuration file (YAML or JSON); missing: the defaults.
    #[arg(long = "config", value_name = "path", default_value = dualstack_masq::config::CONFIG_PATH)]
    pub config: PathBuf,

    /// A kubeconfig: read the ConfigMap kube-system/ip-masq-agent (key `config`) through the
    /// API instead of the file, and record InvalidConfig Events on it.
    #[arg(long = "kubeconfig", value_name = "string")]
    pub kubeconfig: Option<String>,

    /// This node's name, for Events (default: the hostname).
    #[arg(long = "node-name", value_name = "string")]
    pub node_name: Option<String>,
}

/// The `--masq-*` flags of `dualstack agent`: the same masq agent, in-process, for its node.
#[derive(Debug, Clone, Args)]
pub struct AgentMasqArgs {
    /// Run ip-masq-agent for this node, for the families of --node-ip, reading the ConfigMap
    /// kube-system/ip-masq-agent with the node's credentials (or --masq-config).
    #[arg(long = "masq-agent", value_name = "bool", num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub masq_agent: bool,

    /// A configuration file to read instead of the ConfigMap.
    #[arg(long = "masq-config", value_name = "path")]
    pub masq_config: Option<PathBuf>,

    /// ip-masq-agent's --masq-chain.
    #[arg(
        long = "masq-chain",
        value_name = "string",
        default_value = "IP-MASQ-AGENT"
    )]
    pub masq_chain: String,

    /// ip-masq-agent's --nomasq-all-reserved-ranges.
    #[arg(long = "masq-nomasq-all-reserved-ranges", value_name = "bool", num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub nomasq_all_reserved_ranges: bool,

    /// ip-masq-agent's --random-fully.
    #[arg(long = "masq-random-fully", value_name = "bool", num_args = 0..=1, default_missing_value = "true", default_value = "true", value_parser = go_bool)]
    pub random_fully: bool,

    /// ip-masq-agent's --to-ports.
    #[arg(long = "masq-to-ports", value_name = "string", default_value = "")]
    pub to_ports: String,
}

fn flags(
    chain: &str,
    all_reserved: bool,
    enable_ipv6: bool,
    random_fully: bool,
    to_ports: &str,
) -> Result<MasqFlags> {
    validate_chain(chain)?;
    let to_ports = if to_ports.is_empty() {
        Vec::new()
    } else {
        parse_to_ports(to_ports)
            .map_err(|e| anyhow!("Invalid --to-ports flag {to_ports:?}: {e}"))?
    };
    Ok(MasqFlags {
        masq_chain: chain.into(),
        nomasq_all_reserved_ranges: all_reserved,
        enable_ipv6,
        random_fully,
        to_ports,
    })
}

impl AgentMasqArgs {
    /// The settings of the in-agent masq agent, or None when `--masq-agent` is off. IPv6 is
    /// enabled when the node has an IPv6 address.
    pub fn settings(
        &self,
        client: &kube::Client,
        config: &dualstack_agent::Config,
    ) -> Result<Option<MasqSettings>> {
        if !self.masq_agent {
            return Ok(None);
        }
        let enable_ipv6 = config.node_ips.iter().any(|ip| ip.is_ipv6());
        Ok(Some(MasqSettings {
            flags: flags(
                &self.masq_chain,
                self.nomasq_all_reserved_ranges,
                enable_ipv6,
                self.random_fully,
                &self.to_ports,
            )?,
            source: match &self.masq_config {
                Some(p) => ConfigSource::File(p.clone()),
                None => ConfigSource::ConfigMap(client.clone()),
            },
            node_name: config.node_name.clone(),
        }))
    }
}

/// Runs `dualstack masq-agent`.
pub fn run(args: MasqAgentArgs) -> Result<()> {
    crate::cmd::init_tracing();
    let flags = flags(
        &args.masq_chain,
        args.nomasq_all_reserved_ranges,
        args.enable_ipv6,
        args.random_fully,
        &args.to_ports,
    )?;
    let node_name = args
        .node_name
        .clone()
        .unwrap_or_else(crate::flags::hostname)
        .to_lowercase();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let source = match &args.kubeconfig {
            None => ConfigSource::File(args.config.clone()),
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| anyhow!("{e}"))?;
                let config = kube::Config::from_custom_kubeconfig(
                    file,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .with_context(|| format!("loading kubeconfig {path}"))?;
                ConfigSource::ConfigMap(
                    kube::Client::try_from(config).context("building the API client")?,
                )
            }
        };
        let settings = MasqSettings {
            flags,
            source,
            node_name,
        };
        tokio::select! {
            _ = dualstack_agent::masq::run(settings, Arc::new(NftCommand)) => Ok(()),
            _ = crate::cmd::controller_manager::shutdown_signal() => Ok(()),
        }
    })
}
