//! Pure IP address management for a dual-stack cluster: no I/O, no async, no clock, no global
//! randomness (each allocator holds a seedable RNG).
//!
//! Where to start:
//!
//! * [`IpFamily`] ([`family`]): the `IPv4`/`IPv6` type every crate of the project uses.
//! * [`ClusterIpRange`] ([`cluster_ip`]): the ClusterIP allocator of one service CIDR, with the
//!   KEP-3070 static/dynamic bands, dry runs and snapshot/restore. Its module doc explains the
//!   O(1) design.
//! * [`ServiceIpAllocators`] ([`dual`]): one range per configured family, primary first;
//!   allocates a Service's ClusterIPs all-or-nothing.
//! * [`CidrSet`] ([`cidr_set`]): carves one cluster CIDR into node pod CIDRs, round-robin, as
//!   the node IPAM controller does (one set per `--cluster-cidr` entry).
//! * [`NodePortAllocator`] ([`ports`]) and [`LbPool`] ([`lb_pool`]): NodePorts and
//!   LoadBalancer addresses.
//!
//! Error texts are upstream Kubernetes' where upstream has one. Persistence wraps these
//! structures from the outside through their snapshots.

#![warn(missing_docs)]

pub mod cidr_set;
pub mod cluster_ip;
pub mod dual;
pub mod family;
pub mod lb_pool;
pub mod ports;

mod bands;
mod bitmap;

pub use cidr_set::{CidrSet, CidrSetError};
pub use cluster_ip::{AllocError, ClusterIpRange, RangeError, RangeSnapshot, range_offset};
pub use dual::{DualError, ReleaseReport, ServiceIpAllocators};
pub use family::IpFamily;
pub use lb_pool::{LbPool, PoolAllocError, PoolEntryError, PoolRange};
pub use ports::{
    DEFAULT_NODE_PORT_RANGE, NodePortAllocator, PortAllocError, PortRange, PortRangeError,
    PortSnapshot,
};
