//! One module per kind: its [`ResourceDef`](crate::resource::ResourceDef), defaulting,
//! validation and printing. [`all`] builds the served resources.

use std::collections::HashMap;
use std::sync::Arc;

use dualstack_store::Revision;
use dualstack_store::cache::{Decorated, Decorator};

use crate::api::{ResourceApi, TypedApi, decorate_object};
use crate::registry::Storage;
use crate::resource::Strategy;

pub mod configmap;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod event;
pub mod ipaddress;
pub mod lease;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod replicaset;
pub mod service;
pub mod servicecidr;

/// Every served resource, in discovery order.
pub fn all(storage: &Storage, alloc: Arc<service::ServiceAllocators>) -> Vec<Arc<dyn ResourceApi>> {
    vec![
        Arc::new(TypedApi::new(namespace::NamespaceStrategy, storage.clone())),
        Arc::new(TypedApi::new(node::NodeStrategy, storage.clone())),
        Arc::new(TypedApi::new(pod::PodStrategy, storage.clone())),
        Arc::new(TypedApi::new(
            service::ServiceStrategy { alloc },
            storage.clone(),
        )),
        Arc::new(TypedApi::new(endpoints::EndpointsStrategy, storage.clone())),
        Arc::new(TypedApi::new(configmap::ConfigMapStrategy, storage.clone())),
        Arc::new(TypedApi::new(event::EventStrategy, storage.clone())),
        Arc::new(TypedApi::new(
            endpointslice::EndpointSliceStrategy,
            storage.clone(),
        )),
        Arc::new(TypedApi::new(lease::LeaseStrategy, storage.clone())),
        Arc::new(TypedApi::new(
            servicecidr::ServiceCidrStrategy,
            storage.clone(),
        )),
        Arc::new(TypedApi::new(ipaddress::IpAddressStrategy, storage.clone())),
        Arc::new(TypedApi::new(
            deployment::DeploymentStrategyImpl,
            storage.clone(),
        )),
        Arc::new(TypedApi::new(
            replicaset::ReplicaSetStrategy,
            storage.clone(),
        )),
    ]
}

type DecorateFn = Arc<dyn Fn(&[u8], Revision) -> Decorated + Send + Sync>;

fn entry<S: Strategy>(s: S) -> (String, DecorateFn) {
    let key = s.def().storage_resource();
    (
        key,
        Arc::new(move |stored: &[u8], rev: Revision| decorate_object(&s, stored, rev)),
    )
}

/// The watch cache's view of every kind (built before the registries, which need the cache).
pub struct KindsDecorator {
    by_resource: HashMap<String, DecorateFn>,
}

impl std::fmt::Debug for KindsDecorator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindsDecorator")
            .field("resources", &self.by_resource.len())
            .finish()
    }
}

impl KindsDecorator {
    /// Decorators for every kind.
    pub fn new(alloc: Arc<service::ServiceAllocators>) -> Self {
        let by_resource = [
            entry(namespace::NamespaceStrategy),
            entry(node::NodeStrategy),
            entry(pod::PodStrategy),
            entry(service::ServiceStrategy { alloc }),
            entry(endpoints::EndpointsStrategy),
            entry(configmap::ConfigMapStrategy),
            entry(event::EventStrategy),
            entry(endpointslice::EndpointSliceStrategy),
            entry(lease::LeaseStrategy),
            entry(servicecidr::ServiceCidrStrategy),
            entry(ipaddress::IpAddressStrategy),
            entry(deployment::DeploymentStrategyImpl),
            entry(replicaset::ReplicaSetStrategy),
        ]
        .into_iter()
        .collect();
        Self { by_resource }
    }
}

impl Decorator for KindsDecorator {
    fn decorate(&self, key: &str, value: &[u8], revision: Revision) -> Decorated {
        match self
            .by_resource
            .get(dualstack_store::cache::resource_of(key))
        {
            Some(f) => f(value, revision),
            None => Decorated {
                attrs: Default::default(),
                output: bytes::Bytes::copy_from_slice(value),
                keep_value: false,
            },
        }
    }
}
