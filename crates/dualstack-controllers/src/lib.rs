//! The kube-controller-manager side of dual-stack Kubernetes, over the Kubernetes API with
//! kube-rs, so the same controllers run inside `dualstack server` and standalone as
//! `dualstack controller-manager --kubeconfig FILE` against any API server.
//!
//! Where to start:
//!
//! * [`plan`]: the controllers' logic as pure functions `plan = f(desired, observed)`, no I/O:
//!   node IPAM ([`plan::nodeipam`]), EndpointSlices per address type ([`plan::endpointslice`]),
//!   the legacy Endpoints object ([`plan::endpoints`]), LoadBalancer addresses
//!   ([`plan::loadbalancer`]), the scheduler ([`plan::scheduler`]), node lifecycle
//!   ([`plan::nodelifecycle`]) and leader election decisions ([`plan::leader`]).
//! * [`run`]: the thin edge that watches the API (kube-runtime watchers feeding [`cache::Cache`]),
//!   calls the planners and applies their plans; [`run::ControllerManager`] wires everything
//!   behind a `coordination.k8s.io/v1` Lease.
//! * [`config`]: the controller-manager's own flags (`--controllers`, `--loadbalancer-ip-pool`,
//!   leader election, EndpointSlice limits) with upstream's messages; the node IPAM flags are
//!   validated by `dualstack_api::config`.
//! * [`metrics`]: Prometheus metrics with upstream's names, encodable on their own or registered
//!   into another registry.

#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod metrics;
pub mod plan;
pub mod queue;
pub mod run;

pub use config::{
    ControllerConfigError, ControllerSelection, EndpointSliceOptions, LeaderElectionConfig,
};
pub use metrics::Metrics;
pub use run::{ControllerManager, ManagerConfig, RunError};
