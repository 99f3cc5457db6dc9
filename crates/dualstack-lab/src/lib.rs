//! `dualstack up`, `dualstack exec`, `dualstack down`: a dual-stack cluster on one Linux
//! machine, in network namespaces, with no container images.
//!
//! [`plan`] is pure: the lab's address plan and the network it builds, as `ip -batch` scripts
//! per namespace. [`lab`] is the edge: it creates the namespaces under the data dir, starts the
//! server and one agent per node as background processes, waits for every node to be Ready, and
//! tears everything down again. Start with [`lab::up`]. [`dns`] renders the cluster DNS
//! (`kube-system/kube-dns` Service and Deployment) that `up` creates.
//!
//! Containment: every lab namespace hangs off a private switch namespace; nothing is attached
//! to the host's own namespace, so the lab has no route to the host's networks and the host
//! forwards nothing into or out of it. The API server reaches the nodes through listeners it
//! opens inside each node's namespace (`--netns-listener`), so no packet crosses the boundary.

pub mod dns;
pub mod lab;
pub mod plan;
