//! The pure core of the nftables Service proxy: Services, EndpointSlices and node facts in,
//! typed nftables transactions out, one table per IP family.
//!
//! Start at [`DualStackProxier`] (upstream's meta proxier over two per-family [`Proxier`]s):
//! feed it Services and slices (`on_service`, `on_slice`, ... or `update` with full lists), call
//! `sync(now)` and apply each family's [`Transaction`] (`to_text()` for `nft -f -`). The
//! ruleset layout is in this crate's `README.md`; the rules are built in [`ruleset`], the
//! endpoint choice in [`categorize`], the family tokens in [`family`], and [`trace`] is a small
//! packet tracer over exactly the rule shapes of [`nft`].
//!
//! No tokio, no I/O, no clock: time comes in as `Instant` arguments.

pub mod categorize;
pub mod family;
pub mod input;
pub mod netlink;
pub mod nft;
pub mod proxier;
pub mod ruleset;
pub mod trace;

pub use input::{NodeConfig, NodePortAddress, ServiceInfo, ServiceKey, ServicePortName, SliceInfo};
pub use nft::{Protocol, Transaction};
pub use proxier::{
    DualStackProxier, FamilySync, HealthCheck, Proxier, RemovedUdpEndpoint, SyncResult,
};
pub use ruleset::Ruleset;

/// Errors of the proxy core.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    /// An EndpointSlice whose `addressType` is neither IPv4 nor IPv6 (e.g. FQDN).
    #[error("EndpointSlice address type not supported: {0}")]
    UnsupportedAddressType(String),
}
