//! Feeds a [`Cache`] from a kube-runtime watcher (paged list, then watch with bookmarks,
//! relisting after a 410, backing off on errors) and hands every change to a handler.

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

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
