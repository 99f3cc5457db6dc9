//! Flushing the conntrack entries of UDP endpoints that are no longer reachable through a
//! Service (upstream's `conntrack.CleanStaleEntries`): UDP has no connection to end, so without
//! this a client keeps sending to a removed endpoint for as long as its entry lives.

use std::net::IpAddr;
use std::process::Command;

use dualstack_proxy::RemovedUdpEndpoint;

use crate::ProxyRunError;

/// Deletes conntrack entries.
pub trait Conntrack: Send + Sync {
    /// Deletes the UDP entries that were DNATed to `ep` through its Service's addresses
    /// and node port.
    fn flush_udp(&self, ep: &RemovedUdpEndpoint) -> Result<(), ProxyRunError>;
}

/// The `conntrack` binary (Debian's `conntrack` package).
#[derive(Debug, Clone)]
pub struct ConntrackCommand {
    /// The executable.
    pub program: String,
}

impl Default for ConntrackCommand {
    fn default() -> Self {
        ConntrackCommand {
            program: "conntrack".to_string(),
        }
    }
}

/// The `conntrack -D` argument lists for one removed endpoint: one per Service address
/// (`--orig-dst IP --orig-port-dst PORT`) and one for the node port, each limited to entries
/// DNATed to the endpoint (`--dst-nat`).
pub fn flush_args(ep: &RemovedUdpEndpoint) -> Vec<Vec<String>> {
    let fam = if ep.endpoint.is_ipv6() {
        "ipv6"
    } else {
        "ipv4"
    };
    let base = |extra: Vec<String>| {
        let mut a: Vec<String> = ["-D", "-f", fam, "-p", "udp"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra);
        a.push("--dst-nat".to_string());
        a.push(ep.endpoint.to_string());
        a
    };
    let mut out: Vec<Vec<String>> = ep
        .service_ips
        .iter()
        .map(|ip: &IpAddr| {
            base(vec![
                "--orig-dst".to_string(),
                ip.to_string(),
                "--orig-port-dst".to_string(),
                ep.port.to_string(),
            ])
        })
        .collect();
    if let Some(np) = ep.node_port {
        out.push(base(vec!["--orig-port-dst".to_string(), np.to_string()]));
    }
    out
}

impl Conntrack for ConntrackCommand {
    fn flush_udp(&self, ep: &RemovedUdpEndpoint) -> Result<(), ProxyRunError> {
        for args in flush_args(ep) {
            let out = Command::new(&self.program)
                .args(&args)
                .output()
                .map_err(|e| ProxyRunError::Conntrack {
                    args: args.join(" "),
                    detail: e.to_string(),
                })?;
            // Exit 1 with "0 flow entries have been deleted" is not an error.
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && !stderr.contains("0 flow entries") {
                return Err(ProxyRunError::Conntrack {
                    args: args.join(" "),
                    detail: stderr.trim().to_string(),
                });
            }
        }
        Ok(())
    }
}

/// A fake that records what it was asked to flush.
#[derive(Debug, Clone, Default)]
pub struct RecordingConntrack {
    /// Every flushed endpoint.
    pub flushed: std::sync::Arc<std::sync::Mutex<Vec<RemovedUdpEndpoint>>>,
}

impl Conntrack for RecordingConntrack {
    fn flush_udp(&self, ep: &RemovedUdpEndpoint) -> Result<(), ProxyRunError> {
        self.flushed.lock().expect("not poisoned").push(ep.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dualstack_proxy::{Protocol, ServiceKey, ServicePortName};

    #[test]
    fn a_removed_udp_endpoint_is_flushed_per_service_address_and_node_port_in_its_family() {
        let ep = RemovedUdpEndpoint {
            service_port: ServicePortName {
                service: ServiceKey::new("ns", "dns"),
                port_name: "dns".to_string(),
                protocol: Protocol::Udp,
            },
            service_ips: vec!["fd00::10".parse().unwrap()],
            port: 53,
            node_port: Some(30053),
            endpoint: "fc00::5".parse().unwrap(),
            endpoint_port: 5353,
        };
        let text: Vec<String> = flush_args(&ep).iter().map(|a| a.join(" ")).collect();
        assert_eq!(
            text,
            [
                "-D -f ipv6 -p udp --orig-dst fd00::10 --orig-port-dst 53 --dst-nat fc00::5",
                "-D -f ipv6 -p udp --orig-port-dst 30053 --dst-nat fc00::5",
            ]
        );
    }
}
