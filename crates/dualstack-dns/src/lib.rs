//! Cluster DNS for both families: a kube-dns / CoreDNS stand-in that follows the Kubernetes
//! DNS-based service discovery specification.
//!
//! Start at [`records::Zone::answer`]: the pure name → answer logic over a [`view::ClusterView`]
//! (Services and ready EndpointSlice endpoints, built by [`view::ClusterView::build`]). The
//! edges: [`server`] (UDP and TCP through hickory-server; hickory-proto does the wire format and
//! sets TC when a UDP answer does not fit), [`watch`] (Service and EndpointSlice watches that
//! rebuild the view, so a new Service resolves within a second), [`client`] (a one-query client
//! for `dualstack dns query` and the benchmark).

pub mod client;
pub mod records;
pub mod server;
pub mod view;
pub mod watch;

#[cfg(test)]
mod tests;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name that is not a valid DNS name (the cluster domain, a query, an ExternalName).
    #[error("invalid DNS name {name:?}")]
    Name {
        /// The text.
        name: String,
        /// hickory's reason.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// A socket could not be bound, or I/O on it failed.
    #[error("{what}")]
    Io {
        /// What was being done (`binding udp [::]:53`).
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A DNS message could not be encoded or decoded.
    #[error("dns message: {0}")]
    Proto(String),
    /// No answer within the timeout.
    #[error("no answer from {server} within {timeout:?}")]
    Timeout {
        /// The server asked.
        server: std::net::SocketAddr,
        /// How long we waited.
        timeout: std::time::Duration,
    },
    /// The Kubernetes API failed.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
}
