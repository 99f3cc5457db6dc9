//! Pure dual-stack rules of Kubernetes, with upstream's messages.
//!
//! - [`config`]: the dual-stack flags of every component (`--service-cluster-ip-range`,
//!   `--cluster-cidr`, `--node-cidr-mask-size*`, `--feature-gates`, `--node-ip`, ...).
//! - [`net`]: sloppy/strict address parsing as upstream does it.
//! - [`ip`]: IP/CIDR field validation shared by the kinds.
//! - [`node`], [`pod`]: dual-stack rules of Node `podCIDRs` and Pod `podIPs`/`hostIPs`.
//! - [`service`]: the Service dual-stack rules (`ipFamily`, `ipFamilies`, `ipFamilyPolicy`,
//!   `clusterIPs`), validation, and the ClusterIP/NodePort allocation plan.
//!
//! Nothing here does I/O; the HTTP server, the controllers and the binary call into it.

pub mod config;
pub mod ip;
pub mod net;
pub mod node;
pub mod pod;
pub mod service;
