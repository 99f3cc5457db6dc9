//! The controllers' decisions as pure functions of what is desired and what is observed: no
//! tokio, no HTTP, no clock (times are arguments). Each module's output is a plan that
//! [`crate::run`] applies.
//!
//! * [`nodeipam`]: upstream's range allocator — one `CidrSet` per `--cluster-cidr`, occupancy
//!   rebuilt from nodes, one CIDR per family per node, all-or-nothing.
//! * [`endpointslice`]: the EndpointSlice reconciler, one set of slices per address type.
//! * [`endpoints`]: the legacy Endpoints object (primary family only).
//! * [`loadbalancer`]: LoadBalancer ingress addresses from the pools, one per family.
//! * [`leader`]: the Lease decisions of client-go's leader elector.
//! * [`pods`]: pod and service helpers shared by the endpoint planners (readiness, named ports,
//!   selectors, families).
//! * [`scheduler`]: kube-scheduler's filters (unschedulable, taints, node selector and
//!   affinity, pod count) and the fewest-pods score, with upstream's `FailedScheduling` texts.
//! * [`nodelifecycle`]: node health from Leases and heartbeats, `Unknown` conditions, the
//!   `NoSchedule` condition taints, pods marked not ready.
//! * [`replicaset`], [`deployment`]: pods of a ReplicaSet (diff, delete ranking, status);
//!   a Deployment's ReplicaSets (template hash, revisions, rolling update / Recreate steps,
//!   conditions).
//! * [`gc`]: the garbage collector over owner references (background, foreground, orphan).
//! * [`trigger`]: the `endpoints.kubernetes.io/last-change-trigger-time` tracker.

pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod gc;
pub mod leader;
pub mod loadbalancer;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod pods;
pub mod replicaset;
pub mod scheduler;
pub mod trigger;
