//! Feeds a [`Cache`] from a kube-runtime watcher (paged list, then watch with bookmarks,
//! relisting after a 410, backing off on errors) and hands every change to a handler.

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::cache::{Cache, Change};

/// Runs until dropped. `synced` turns true once the first list is in the cache.
pub async fn run<K, H>(
    api: Api<K>,
    config: watcher::Config,
    cache: Arc<Cache<K>>,
    synced: watch::Sender<bool>,
    mut handler: H,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    H: FnMut(Vec<Change<K>>) + Send,
{
    let kind = std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or("object");
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                let changes = cache.apply(event);
                if cache.is_synced() && !*synced.borrow() {
                    let _ = synced.send(true);
                }
                if !changes.is_empty() {
                    handler(changes);
                }
            }
            Err(error) => tracing::warn!(kind, %error, "watch failed; retrying"),
        }
    }
}

/// Waits until `rx` turns true.
pub async fn wait_synced(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Starts an informer over every `K` in `tasks`, waits for its first list and returns the cache
/// with the channel of later changes (the first list's changes are dropped: the caller starts
/// from the synced cache).
pub async fn start_synced<K>(
    api: Api<K>,
    tasks: &mut JoinSet<()>,
) -> (Arc<Cache<K>>, mpsc::UnboundedReceiver<Vec<Change<K>>>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let cache = Arc::new(Cache::<K>::default());
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Change<K>>>();
    let (synced_tx, mut synced) = watch::channel(false);
    tasks.spawn(run(
        api,
        watcher::Config::default(),
        cache.clone(),
        synced_tx,
        move |changes| {
            let _ = tx.send(changes);
        },
    ));
    wait_synced(&mut synced).await;
    while rx.try_recv().is_ok() {}
    (cache, rx)
}
