//! `dualstack dns`: the cluster DNS server (a kube-dns / CoreDNS stand-in, `dualstack_dns`),
//! and `dualstack dns query`, a one-query client in the spirit of `dig`.
//!
//! The server follows Services and EndpointSlices with the credentials of `--kubeconfig`,
//! answers `--cluster-domain` (and the reverse zones of the addresses it knows) on UDP and TCP
//! at every `--listen` address, forwards other names to `--upstream` (default: the nameservers
//! of /etc/resolv.conf; `none` refuses them), and reports readiness on `--ready-address`
//! (`GET /ready`, 200 once both initial lists are in, as CoreDNS's `ready` plugin on :8181;
//! `GET /health` is 200 while it runs).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use dualstack_dns::records::Zone;
use dualstack_dns::server::Handler;
use dualstack_dns::view::ClusterView;

/// `dualstack dns ...`
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DnsCommand {
    #[command(subcommand)]
    pub query: Option<DnsSubcommand>,
    #[command(flatten)]
    pub serve: DnsArgs,
}

/// Subcommands of `dualstack dns`.
#[derive(Debug, Clone, Subcommand)]
pub enum DnsSubcommand {
    /// Ask a DNS server one question and print the answer (status, flags, records).
    Query(QueryArgs),
}

/// Flags of the DNS server.
#[derive(Debug, Clone, Args)]
pub struct DnsArgs {
    /// kubeconfig with the credentials to watch Services and EndpointSlices (a node's suffice).
    #[arg(long = "kubeconfig", value_name = "string")]
    pub kubeconfig: Option<String>,

    /// The cluster's DNS domain (kubelet's --cluster-domain).
    #[arg(
        long = "cluster-domain",
        value_name = "string",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// Addresses to serve on (comma-separated or repeated; `IP` or `IP:PORT`, `[IPv6]:PORT`).
    /// A specific address answers from itself, which a wildcard UDP socket on a host with
    /// several addresses does not promise.
    #[arg(long = "listen", value_name = "addresses", default_value = "[::]")]
    pub listen: Vec<String>,

    /// The port for --listen entries without one.
    #[arg(long = "port", value_name = "int", default_value = "53")]
    pub port: u16,

    /// Resolvers for names outside the cluster (comma-separated, `IP` or `IP:PORT`); default the
    /// nameservers of /etc/resolv.conf; `none`: refuse such names (REFUSED).
    #[arg(long = "upstream", value_name = "addresses")]
    pub upstream: Option<String>,

    /// Where `GET /ready` and `GET /health` are served; empty turns it off.
    #[arg(
        long = "ready-address",
        value_name = "ip:port",
        default_value = "[::]:8181"
    )]
    pub ready_address: String,
}

/// `dualstack dns query NAME [TYPE]`
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// The name (fully qualified; no search list is applied).
    pub name: String,
    /// The record type (A, AAAA, SRV, PTR, TXT, SOA, ANY, ...).
    #[arg(default_value = "A")]
    pub qtype: String,
    /// The server (`IP` or `IP:PORT`); default the first nameserver of /etc/resolv.conf.
    #[arg(long = "server", value_name = "address")]
    pub server: Option<String>,
    /// Ask over TCP instead of UDP.
    #[arg(long = "tcp")]
    pub tcp: bool,
    /// Ask for the PTR of this address (builds the in-addr.arpa / ip6.arpa name).
    #[arg(short = 'x', long = "reverse")]
    pub reverse: bool,
    /// How long to wait.
    #[arg(long = "timeout", value_name = "duration", default_value = "5s", value_parser = crate::flags::duration)]
    pub timeout: Duration,
}

/// Runs `dualstack dns`.
pub fn run(cmd: DnsCommand) -> Result<()> {
    match cmd.query {
        Some(DnsSubcommand::Query(q)) => query(q),
        None => serve(cmd.serve),
    }
}

/// `IP` or `IP:PORT` / `[IPv6]:PORT` entries, comma-separated.
fn addresses(values: &[String], port: u16) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for v in values.iter().flat_map(|v| v.split(',')) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let addr = if let Ok(a) = v.parse::<SocketAddr>() {
            a
        } else if let Ok(ip) = v
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            SocketAddr::new(ip, port)
        } else {
            bail!("invalid address {v:?}: want IP, IP:PORT or [IPv6]:PORT");
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

fn resolv_conf_nameservers() -> Vec<String> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    dualstack_node::files::DnsConfig::parse(&text).nameservers
}

fn serve(args: DnsArgs) -> Result<()> {
    // hickory-server logs every query at info.
    crate::cmd::init_tracing_with("info,hickory_server=warn");
    let zone =
        Zone::new(&args.cluster_domain).map_err(|e| anyhow!("invalid --cluster-domain: {e}"))?;
    let listen = addresses(&args.listen, args.port)?;
    if listen.is_empty() {
        bail!("--listen: no address");
    }
    let upstreams = match args.upstream.as_deref() {
        Some("none") => vec![],
        Some(list) => addresses(&[list.to_string()], 53)?,
        None => addresses(&resolv_conf_nameservers(), 53)?,
    };
    let ready_address: Option<SocketAddr> = match args.ready_address.as_str() {
        "" => None,
        a => Some(
            a.parse()
                .with_context(|| format!("invalid --ready-address {a:?}"))?,
        ),
    };
    let kubeconfig = args
        .kubeconfig
        .clone()
        .ok_or_else(|| anyhow!("--kubeconfig is required"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let file = kube::config::Kubeconfig::read_from(&kubeconfig).map_err(|e| anyhow!("{e}"))?;
        let config =
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {kubeconfig}"))?;
        let client = kube::Client::try_from(config).context("building the API client")?;
        let (view_tx, view_rx) = tokio::sync::watch::channel(Arc::new(ClusterView::default()));
        let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
        let sockets = dualstack_dns::server::bind(&listen).await?;
        tracing::info!(?listen, ?upstreams, domain = %args.cluster_domain, "dns serving");
        if let Some(addr) = ready_address {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --ready-address {addr}"))?;
            tokio::spawn(ready_server(listener, ready_rx));
        }
        let handler = Handler::new(zone, view_rx, upstreams);
        tokio::select! {
            r = dualstack_dns::server::serve(handler, sockets) => r.map_err(Into::into),
            _ = dualstack_dns::watch::follow(client, view_tx, ready_tx) => bail!("watches ended"),
            _ = crate::cmd::controller_manager::shutdown_signal() => Ok(()),
        }
    })
}

async fn ready_server(
    listener: tokio::net::TcpListener,
    ready: tokio::sync::watch::Receiver<bool>,
) {
    use axum::http::StatusCode;
    let app = axum::Router::new()
        .route(
            "/ready",
            axum::routing::get(move || {
                let ready = *ready.borrow();
                async move {
                    if ready {
                        (StatusCode::OK, "OK")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route("/health", axum::routing::get(|| async { "OK" }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "ready server stopped");
    }
}

/// The reverse name of an address (`4.3.2.1.in-addr.arpa.`, nibbles under `ip6.arpa.`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa."
        }
    }
}

fn query(q: QueryArgs) -> Result<()> {
    let qtype: hickory_proto::rr::RecordType = q
        .qtype
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| anyhow!("unknown record type {:?}", q.qtype))?;
    let (name, qtype) = if q.reverse {
        let ip: IpAddr = q
            .name
            .parse()
            .with_context(|| format!("-x {:?}: not an IP", q.name))?;
        (reverse_name(ip), hickory_proto::rr::RecordType::PTR)
    } else {
        (q.name.clone(), qtype)
    };
    let servers = match &q.server {
        Some(s) => vec![s.clone()],
        None => resolv_conf_nameservers(),
    };
    let server = *addresses(&servers, 53)?
        .first()
        .ok_or_else(|| anyhow!("no --server and no nameserver in /etc/resolv.conf"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let m = rt.block_on(dualstack_dns::client::query(
        server, &name, qtype, q.tcp, q.timeout,
    ))?;
    let md = &m.metadata;
    let flags: Vec<&str> = [
        (md.authoritative, "aa"),
        (md.truncation, "tc"),
        (md.recursion_desired, "rd"),
        (md.recursion_available, "ra"),
    ]
    .into_iter()
    .filter_map(|(on, f)| on.then_some(f))
    .collect();
    println!(
        ";; server: {server}, status: {}, flags: {}, answers: {}",
        format!("{:?}", md.response_code).to_ascii_uppercase(),
        flags.join(" "),
        m.answers.len()
    );
    for (section, records) in [
        ("ANSWER", &m.answers),
        ("AUTHORITY", &m.authorities),
        ("ADDITIONAL", &m.additionals),
    ] {
        if !records.is_empty() {
            println!(";; {section}");
            for r in records.iter() {
                println!("{r}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_of_both_families() {
        assert_eq!(
            reverse_name("10.96.0.10".parse().unwrap()),
            "10.0.96.10.in-addr.arpa."
        );
        assert_eq!(
            reverse_name("fd00:10:96::a".parse().unwrap()),
            "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa."
        );
    }

    #[test]
    fn listen_addresses_take_the_default_port_and_both_spellings() {
        let got = addresses(
            &["203.0.113.11,2001:db8:1::11".into(), "[::1]:5353".into()],
            53,
        )
        .unwrap();
        let want: Vec<SocketAddr> = vec![
            "203.0.113.11:53".parse().unwrap(),
            "[2001:db8:1::11]:53".parse().unwrap(),
            "[::1]:5353".parse().unwrap(),
        ];
        assert_eq!(got, want);
        assert!(addresses(&["nope".into()], 53).is_err());
    }
}
