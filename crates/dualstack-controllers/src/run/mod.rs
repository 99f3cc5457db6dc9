//! The edge: kube-rs clients and watchers around the pure planners of [`crate::plan`].
//!
//! [`ControllerManager::run`] campaigns for the Lease ([`lease`]) and, while leading, runs the
//! enabled controllers: [`nodeipam`], [`nodelifecycle`], [`endpoints`] (EndpointSlices and
//! Endpoints), [`loadbalancer`], the [`scheduler`], [`apps`] (ReplicaSets, Deployments) and
//! the garbage collector ([`gc`]). Each controller owns its watchers and writers in a `JoinSet`, so losing the
//! Lease (dropping the controllers' future) stops every request at once.
//!
//! Only standard API semantics are used (list/watch, create, replace with `resourceVersion`,
//! strategic and merge patches, the `status` subresource, core/v1 Events, coordination/v1
//! Leases), so the same code runs against any Kubernetes API server.

pub mod apps;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod informer;
pub mod lease;
pub mod loadbalancer;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod scheduler;

use std::future::Future;
use std::sync::Arc;

use dualstack_api::config::NodeIpamConfig;
use dualstack_ipam::LbPool;
use futures::FutureExt;
use futures::future::BoxFuture;
use kube::Client;
use thiserror::Error;

use crate::config::{
    ControllerSelection, DEPLOYMENT, ENDPOINTS, ENDPOINTSLICE, EndpointSliceOptions,
    GARBAGE_COLLECTOR, LeaderElectionConfig, NODE_IPAM, NODE_LIFECYCLE, REPLICASET, SCHEDULER,
    SERVICE_LB,
};
use crate::metrics::Metrics;
use crate::plan::nodeipam::NodeIpamError;
use crate::plan::nodelifecycle::LifecycleConfig;

/// Why the controllers stopped.
#[derive(Debug, Error)]
pub enum RunError {
    /// Node IPAM could not start (existing node CIDRs that cannot be occupied).
    #[error("failed to start node ipam controller: {0}")]
    NodeIpam(#[source] NodeIpamError),
    /// A watch or worker ended, which only happens when the process is going down.
    #[error("{0} stopped")]
    Stopped(&'static str),
}

/// What the controller manager runs.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// `--controllers`.
    pub controllers: ControllerSelection,
    /// Node IPAM (`None`: `--allocate-node-cidrs` is off).
    pub node_ipam: Option<NodeIpamConfig>,
    /// `--loadbalancer-ip-pool` (`None`: the LoadBalancer controller does not run).
    pub lb_pool: Option<LbPool>,
    /// EndpointSlice and Endpoints settings.
    pub endpoints: EndpointSliceOptions,
    /// Leader election.
    pub leader_election: LeaderElectionConfig,
    /// `--node-monitor-grace-period`, `--node-startup-grace-period`, `--node-monitor-period`.
    pub node_lifecycle: LifecycleConfig,
    /// When a controller fails to start: true ends [`ControllerManager::run`] with the error
    /// (kube-controller-manager exits); false logs it and keeps the other controllers running
    /// (the in-server mode, where the API server must go on serving).
    pub stop_on_error: bool,
}

/// The controller manager.
#[derive(Clone)]
pub struct ControllerManager {
    client: Client,
    config: ManagerConfig,
    metrics: Metrics,
}

impl ControllerManager {
    /// A manager talking to the API through `client`.
    pub fn new(client: Client, config: ManagerConfig, metrics: Metrics) -> Self {
        Self {
            client,
            config,
            metrics,
        }
    }

    /// The names of the controllers that will run, in start order.
    pub fn active(&self) -> Vec<&'static str> {
        let sel = &self.config.controllers;
        let mut out = Vec::new();
        if sel.enabled(NODE_IPAM) && self.config.node_ipam.is_some() {
            out.push(NODE_IPAM);
        }
        if sel.enabled(NODE_LIFECYCLE) {
            out.push(NODE_LIFECYCLE);
        }
        if sel.enabled(ENDPOINTSLICE) {
            out.push(ENDPOINTSLICE);
        }
        if sel.enabled(ENDPOINTS) {
            out.push(ENDPOINTS);
        }
        if sel.enabled(SERVICE_LB) && self.config.lb_pool.is_some() {
            out.push(SERVICE_LB);
        }
        if sel.enabled(SCHEDULER) {
            out.push(SCHEDULER);
        }
        for c in [REPLICASET, DEPLOYMENT, GARBAGE_COLLECTOR] {
            if sel.enabled(c) {
                out.push(c);
            }
        }
        out
    }

    fn controllers(&self) -> BoxFuture<'static, Result<(), RunError>> {
        let active = self.active();
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let mut futures: Vec<(&'static str, BoxFuture<'static, Result<(), RunError>>)> = Vec::new();
        if let (true, Some(cfg)) = (active.contains(&NODE_IPAM), self.config.node_ipam.clone()) {
            let recorder = Arc::new(events::Recorder::new(client.clone(), "cidrAllocator"));
            futures.push((
                NODE_IPAM,
                nodeipam::run(client.clone(), cfg, metrics.clone(), recorder).boxed(),
            ));
        }
        if active.contains(&NODE_LIFECYCLE) {
            let recorder = Arc::new(events::Recorder::new(client.clone(), "node-controller"));
            futures.push((
                NODE_LIFECYCLE,
                nodelifecycle::run(client.clone(), self.config.node_lifecycle, recorder).boxed(),
            ));
        }
        if active.contains(&SCHEDULER) {
            let recorder = Arc::new(events::Recorder::new(
                client.clone(),
                crate::plan::scheduler::DEFAULT_SCHEDULER,
            ));
            futures.push((SCHEDULER, scheduler::run(client.clone(), recorder).boxed()));
        }
        if active.contains(&REPLICASET) {
            let recorder = Arc::new(events::Recorder::new(client.clone(), REPLICASET));
            futures.push((
                REPLICASET,
                apps::run_replicasets(client.clone(), recorder).boxed(),
            ));
        }
        if active.contains(&DEPLOYMENT) {
            let recorder = Arc::new(events::Recorder::new(client.clone(), DEPLOYMENT));
            futures.push((
                DEPLOYMENT,
                apps::run_deployments(client.clone(), recorder).boxed(),
            ));
        }
        if active.contains(&GARBAGE_COLLECTOR) {
            futures.push((GARBAGE_COLLECTOR, gc::run(client.clone()).boxed()));
        }
        let enabled = endpoints::Enabled {
            slices: active.contains(&ENDPOINTSLICE),
            endpoints: active.contains(&ENDPOINTS),
        };
        if enabled.slices || enabled.endpoints {
            futures.push((
                ENDPOINTSLICE,
                endpoints::run(
                    client.clone(),
                    self.config.endpoints,
                    enabled,
                    metrics.clone(),
                )
                .boxed(),
            ));
        }
        if let (true, Some(pool)) = (active.contains(&SERVICE_LB), self.config.lb_pool.clone()) {
            let recorder = Arc::new(events::Recorder::new(
                client.clone(),
                "service-lb-controller",
            ));
            futures.push((
                SERVICE_LB,
                loadbalancer::run(client, pool, metrics, recorder).boxed(),
            ));
        }
        let stop_on_error = self.config.stop_on_error;
        let wrapped: Vec<BoxFuture<'static, Result<(), RunError>>> = futures
            .into_iter()
            .map(|(name, f)| {
                async move {
                    let result = f.await;
                    if let Err(error) = &result {
                        tracing::error!(controller = name, %error, "controller failed");
                    }
                    if stop_on_error {
                        return result;
                    }
                    futures::future::pending::<()>().await;
                    Ok(())
                }
                .boxed()
            })
            .collect();
        async move {
            if wrapped.is_empty() {
                futures::future::pending::<()>().await;
            }
            futures::future::try_join_all(wrapped).await.map(|_| ())
        }
        .boxed()
    }

    /// Runs until `shutdown` resolves or (with `stop_on_error`) a controller fails. With leader
    /// election, the controllers run only while this process holds the Lease.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RunError> {
        tracing::info!(controllers = ?self.active(), "controller manager starting");
        if !self.config.leader_election.enabled {
            tokio::select! {
                r = self.controllers() => r,
                _ = shutdown => Ok(()),
            }
        } else {
            let le = self.config.leader_election.clone();
            lease::run(
                self.client.clone(),
                &le,
                &self.metrics,
                || self.controllers(),
                shutdown,
            )
            .await
        }
    }
}
