//! CNI for dualstack: the spec's types, the node's dual-stack pod address allocator, our
//! bridge plugin (`dualstack cni`) and the CNI runtime the agent uses.
//!
//! Start with [`types`] (the spec's JSON), then [`plugin`] (ADD/DEL/CHECK of our plugin) and
//! [`runtime`] (running the plugins of a network configuration list as the spec says).
//! Pure: [`types`], [`ipam`], and [`conf`] except its two file functions. Edges: [`store`] (the
//! IPAM files and their lock), [`plugin`] (netlink through `dualstack-host`), [`runtime`]
//! (processes).

pub mod conf;
pub mod error;
pub mod ipam;
pub mod plugin;
pub mod runtime;
pub mod store;
pub mod types;

pub use error::CniError;
pub use runtime::{Attachment, Runtime};
pub use types::CniResult;
