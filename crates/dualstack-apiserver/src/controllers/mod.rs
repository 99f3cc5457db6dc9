//! Controllers that live inside the API server, as in kube-apiserver: bootstrap objects
//! (namespaces, the `kubernetes` ServiceCIDR and Service), the allocator sync with storage, the
//! namespace lifecycle, the ClusterIP/NodePort repair loop, and ServiceCIDR protection (finalizer
//! and `Ready` condition). They work directly on storage;
//! the kube-controller-manager controllers (node IPAM, EndpointSlices, load balancers) are in
//! `dualstack-controllers` and talk to the API like any client.

pub mod allocator_sync;
pub mod bootstrap;
pub mod events;
pub mod namespace;
pub mod repair;
pub mod servicecidr;
