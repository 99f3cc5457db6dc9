//! LoadBalancer addresses at the edge: watches Services, rebuilds the pool from their ingress
//! addresses before deciding anything ([`LbAllocator::restore`]), then feeds every change to
//! [`LbAllocator::sync`] in one loop and writes `status.loadBalancer` with a merge patch on the
//! `status` subresource. One write per Service at a time; a Service changed while its write is
//! in flight is decided again afterwards. Refusals become `AllocationFailed` events (once per
//! distinct reason); Services refused for lack of addresses, or for an address another Service
//! holds, are retried when addresses are released.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualstack_ipam::{IpFamily, LbPool, PoolAllocError};
use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::events::{self, Recorder};
use super::{RunError, informer};
use crate::cache::{Cache, ObjKey};
use crate::metrics::{FamilyLabels, Metrics};
use crate::plan::loadbalancer::{
    LbAllocator, LbDecision, LbError, REASON_ALLOCATION_FAILED, REASON_IP_ALLOCATED, service_key,
};

/// Status writes in flight at most.
const WORKERS: usize = 16;
/// Delay before retrying a failed status write.
const RETRY: Duration = Duration::from_millis(500);

type WriteFuture = Pin<Box<dyn Future<Output = (ObjKey, Result<Service, kube::Error>)> + Send>>;

fn key_of(svc: &Service) -> ObjKey {
    ObjKey::of(svc)
}

async fn write_status(
    client: Client,
    key: ObjKey,
    ips: Option<Vec<IpAddr>>,
) -> (ObjKey, Result<Service, kube::Error>) {
    let api: Api<Service> = Api::namespaced(client, &key.namespace);
    let body = match ips {
        Some(ips) => {
            let ingress: Vec<serde_json::Value> = ips
                .iter()
                .map(|ip| serde_json::json!({"ip": ip.to_string()}))
                .collect();
            serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}})
        }
        None => serde_json::json!({"status": {"loadBalancer": {"ingress": null}}}),
    };
    let r = api
        .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&body))
        .await;
    (key, r)
}

struct Loop {
    client: Client,
    cache: Arc<Cache<Service>>,
    alloc: LbAllocator,
    metrics: Metrics,
    recorder: Arc<Recorder>,
    inflight: HashSet<ObjKey>,
    again: HashSet<ObjKey>,
    writes: FuturesUnordered<WriteFuture>,
    backlog: Vec<(ObjKey, Option<Vec<IpAddr>>)>,
    waiting_for_space: BTreeSet<ObjKey>,
    last_refusal: HashMap<ObjKey, String>,
}

impl Loop {
    fn account(&self, before: &[IpAddr], after: &[IpAddr]) {
        for ip in after.iter().filter(|ip| !before.contains(ip)) {
            let family = IpFamily::of_addr(ip).as_str().to_string();
            self.metrics
                .lb_allocations
                .get_or_create(&FamilyLabels { family })
                .inc();
        }
        for ip in before.iter().filter(|ip| !after.contains(ip)) {
            let family = IpFamily::of_addr(ip).as_str().to_string();
            self.metrics
                .lb_releases
                .get_or_create(&FamilyLabels { family })
                .inc();
        }
        for f in [IpFamily::IPv4, IpFamily::IPv6] {
            self.metrics
                .lb_used
                .get_or_create(&FamilyLabels {
                    family: f.as_str().into(),
                })
                .set(self.alloc.pool().used(f) as f64);
        }
    }

    /// Decides for one Service key (present or gone); returns true when addresses were freed.
    async fn sync(&mut self, key: &ObjKey) -> bool {
        let start = Instant::now();
        let skey = format!("{}/{}", key.namespace, key.name);
        let before: Vec<IpAddr> = self.alloc.held(&skey).to_vec();
        let Some(svc) = self.cache.get(key) else {
            self.alloc.forget(&skey);
            self.waiting_for_space.remove(key);
            self.last_refusal.remove(key);
            self.account(&before, &[]);
            return !before.is_empty();
        };
        if self.inflight.contains(key) {
            self.again.insert(key.clone());
            return false;
        }
        let decision = self.alloc.sync(&svc);
        let after: Vec<IpAddr> = self.alloc.held(&skey).to_vec();
        self.account(&before, &after);
        let freed = before.iter().any(|ip| !after.contains(ip));
        match decision {
            LbDecision::Ignore | LbDecision::Unchanged => {
                self.waiting_for_space.remove(key);
                self.last_refusal.remove(key);
            }
            LbDecision::SetIngress { ips, allocated } => {
                self.waiting_for_space.remove(key);
                self.last_refusal.remove(key);
                if allocated {
                    let list: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                    let message = format!("Assigned IP {list:?}");
                    self.recorder
                        .record(
                            &events::service_ref(&svc),
                            events::NORMAL,
                            REASON_IP_ALLOCATED,
                            &message,
                        )
                        .await;
                }
                self.backlog.push((key.clone(), Some(ips)));
            }
            LbDecision::ClearIngress => {
                self.waiting_for_space.remove(key);
                self.backlog.push((key.clone(), None));
            }
            LbDecision::Refuse(error) => {
                if matches!(
                    error,
                    LbError::InUse { .. }
                        | LbError::Pool(
                            PoolAllocError::Full { .. } | PoolAllocError::NoRangeForFamily { .. }
                        )
                ) {
                    self.waiting_for_space.insert(key.clone());
                }
                let message = format!("Failed to allocate IP for {:?}: {error}", service_key(&svc));
                if self.last_refusal.get(key) != Some(&message) {
                    tracing::warn!(service = %key, %error, "cannot allocate a load balancer address");
                    self.recorder
                        .record(
                            &events::service_ref(&svc),
                            events::WARNING,
                            REASON_ALLOCATION_FAILED,
                            &message,
                        )
                        .await;
                    self.last_refusal.insert(key.clone(), message);
                }
            }
        }
        self.metrics
            .lb_sync_duration
            .observe(start.elapsed().as_secs_f64());
        freed
    }

    fn dispatch(&mut self) {
        let mut keep = Vec::new();
        for (key, ips) in self.backlog.drain(..) {
            if self.inflight.len() >= WORKERS || self.inflight.contains(&key) {
                keep.push((key, ips));
                continue;
            }
            self.inflight.insert(key.clone());
            self.writes
                .push(Box::pin(write_status(self.client.clone(), key, ips)));
        }
        self.backlog = keep;
    }
}

/// Runs the LoadBalancer controller until dropped.
pub async fn run(
    client: Client,
    pool: LbPool,
    metrics: Metrics,
    recorder: Arc<Recorder>,
) -> Result<(), RunError> {
    let mut tasks = JoinSet::new();
    let (cache, mut rx) =
        informer::start_synced(Api::<Service>::all(client.clone()), &mut tasks).await;
    let services = cache.list();
    let mut alloc = LbAllocator::new(pool);
    let refs: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
    let losers = alloc.restore(&refs);
    if !losers.is_empty() {
        tracing::warn!(
            ?losers,
            "services claimed addresses held by older services; they get new ones"
        );
    }
    let mut keys: Vec<ObjKey> = services.iter().map(|s| key_of(s)).collect();
    keys.sort();
    drop(services);
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<ObjKey>();
    let mut lp = Loop {
        client,
        cache: cache.clone(),
        alloc,
        metrics,
        recorder,
        inflight: HashSet::new(),
        again: HashSet::new(),
        writes: FuturesUnordered::new(),
        backlog: Vec::new(),
        waiting_for_space: BTreeSet::new(),
        last_refusal: HashMap::new(),
    };
    lp.account(&[], &[]);
    tracing::info!(
        ipv4_used = lp.alloc.pool().used(IpFamily::IPv4),
        ipv6_used = lp.alloc.pool().used(IpFamily::IPv6),
        "load balancer controller started"
    );
    for key in keys {
        lp.sync(&key).await;
    }
    loop {
        lp.dispatch();
        let mut freed = false;
        tokio::select! {
            changes = rx.recv() => {
                let Some(changes) = changes else {
                    return Err(RunError::Stopped("service watch"));
                };
                let mut keys: Vec<ObjKey> = changes
                    .iter()
                    .filter_map(|c| c.new.as_ref().or(c.old.as_ref()).map(|s| key_of(s)))
                    .collect();
                keys.dedup();
                for key in keys {
                    freed |= lp.sync(&key).await;
                }
            }
            Some((key, result)) = lp.writes.next(), if !lp.writes.is_empty() => {
                lp.inflight.remove(&key);
                match result {
                    Ok(svc) => lp.cache.write_through(svc),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(error) => {
                        tracing::warn!(service = %key, %error, "could not write load balancer status; retrying");
                        let tx = retry_tx.clone();
                        let k = key.clone();
                        tasks.spawn(async move {
                            tokio::time::sleep(RETRY).await;
                            let _ = tx.send(k);
                        });
                    }
                }
                if lp.again.remove(&key) {
                    freed |= lp.sync(&key).await;
                }
            }
            Some(key) = retry_rx.recv() => {
                freed |= lp.sync(&key).await;
            }
            Some(done) = tasks.join_next() => {
                if !matches!(&done, Ok(())) {
                    tracing::error!(?done, "load balancer task ended");
                }
            }
        }
        if freed && !lp.waiting_for_space.is_empty() {
            let waiting: Vec<ObjKey> = lp.waiting_for_space.iter().cloned().collect();
            for key in waiting {
                lp.sync(&key).await;
            }
        }
    }
}
