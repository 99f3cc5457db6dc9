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

/// Runs `sync` at once, then after every change of the store (bursts settle for 50 ms) and at
/// least every 10 s, until shutdown: the loop of the level-triggered controllers here.
pub(crate) fn resync_on_changes<F, Fut>(
    storage: crate::registry::Storage,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut sync: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut rev = storage.cache.subscribe();
        loop {
            sync().await;
            tokio::select! {
                _ = rev.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
                _ = shutdown.changed() => return,
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
}
