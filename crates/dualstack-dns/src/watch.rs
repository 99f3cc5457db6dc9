//! The answer cache: Services and EndpointSlices followed by watches (kube-rs), the view rebuilt
//! after each burst of events and published to the handler. A new Service is answered as soon
//! as its watch event arrives (milliseconds), well within the second the issue asks for.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::view::ClusterView;

/// One watched kind's objects by `namespace/name`, with the list that an `Init` starts.
struct Store<K> {
    objects: BTreeMap<String, K>,
    pending: Option<BTreeMap<String, K>>,
    synced: bool,
}

impl<K: kube::Resource> Store<K> {
    fn new() -> Self {
        Store {
            objects: BTreeMap::new(),
            pending: None,
            synced: false,
        }
    }

    fn key(k: &K) -> String {
        format!(
            "{}/{}",
            k.meta().namespace.as_deref().unwrap_or(""),
            k.meta().name.as_deref().unwrap_or("")
        )
    }

    /// Applies one event; returns whether the objects changed.
    fn apply(&mut self, e: Event<K>) -> bool {
        match e {
            Event::Apply(k) => {
                self.objects.insert(Self::key(&k), k);
                true
            }
            Event::Delete(k) => self.objects.remove(&Self::key(&k)).is_some(),
            Event::Init => {
                self.pending = Some(BTreeMap::new());
                false
            }
            Event::InitApply(k) => {
                self.pending
                    .get_or_insert_with(BTreeMap::new)
                    .insert(Self::key(&k), k);
                false
            }
            Event::InitDone => {
                self.objects = self.pending.take().unwrap_or_default();
                self.synced = true;
                true
            }
        }
    }
}

enum Change {
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
}

/// Follows Services and EndpointSlices of all namespaces and publishes a fresh view on `view`
/// after every burst of changes; `ready` turns true once both initial lists are in. Runs until
/// the watch streams end (never, in practice: the watcher retries with back-off).
pub async fn follow(
    client: Client,
    view: watch::Sender<Arc<ClusterView>>,
    ready: watch::Sender<bool>,
) {
    let services = watcher::watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map_ok(|e| Change::Service(Box::new(e)));
    let slices = watcher::watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .map_ok(|e| Change::Slice(Box::new(e)));
    let mut events = futures::stream::select(services, slices).boxed();
    let mut svc = Store::<Service>::new();
    let mut eps = Store::<EndpointSlice>::new();
    while let Some(first) = events.next().await {
        let mut changed = false;
        let mut handle = |c: Result<Change, watcher::Error>| match c {
            Ok(Change::Service(e)) => changed |= svc.apply(*e),
            Ok(Change::Slice(e)) => changed |= eps.apply(*e),
            Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
        };
        handle(first);
        // Drain what is already queued, so a burst makes one rebuild.
        while let Some(Some(next)) = futures::FutureExt::now_or_never(events.next()) {
            handle(next);
        }
        if changed && svc.synced && eps.synced {
            let v = ClusterView::build(svc.objects.values(), eps.objects.values());
            tracing::debug!(services = v.services.len(), "dns view rebuilt");
            view.send_replace(Arc::new(v));
            ready.send_replace(true);
        }
    }
    tracing::warn!("service and endpointslice watches ended");
}
