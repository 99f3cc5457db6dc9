//! Keeps the in-memory ClusterIP and NodePort allocators equal to storage: at start they are
//! rebuilt from the `IPAddress` objects and NodePort keys (so a restart loses nothing), then
//! every change another writer (or API server) commits is applied. The store's "absent"
//! preconditions stay the guarantee; this only keeps candidates good.

use std::net::IpAddr;
use std::sync::Arc;

use dualstack_store::EventKind;
use dualstack_store::cache::Entry;
use tokio::sync::watch;

use crate::kinds::service::{IP_ADDRESS_PREFIX, NODE_PORT_PREFIX, ServiceAllocators};
use crate::registry::Storage;

fn ip_of(e: &Entry) -> Option<IpAddr> {
    e.kv.key.strip_prefix(IP_ADDRESS_PREFIX)?.parse().ok()
}

fn port_of(e: &Entry) -> Option<u16> {
    e.kv.key.strip_prefix(NODE_PORT_PREFIX)?.parse().ok()
}

fn take_ip(alloc: &ServiceAllocators, ip: IpAddr) {
    let mut ips = alloc.ips.lock().expect("ip allocators");
    if let Some(r) = ips.get_mut(dualstack_ipam::IpFamily::of_addr(&ip)) {
        let _ = r.allocate(ip);
    }
}

fn give_ip(alloc: &ServiceAllocators, ip: IpAddr) {
    let mut ips = alloc.ips.lock().expect("ip allocators");
    if let Some(r) = ips.get_mut(dualstack_ipam::IpFamily::of_addr(&ip)) {
        r.release(ip);
    }
}

/// Loads the current allocations and starts following changes.
pub async fn start(
    storage: &Storage,
    alloc: Arc<ServiceAllocators>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    storage
        .consistent()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ips = storage.cache.list(IP_ADDRESS_PREFIX, None, None, &|_| true);
    for e in &ips.items {
        if let Some(ip) = ip_of(e) {
            take_ip(&alloc, ip);
        }
    }
    let ports = storage.cache.list(NODE_PORT_PREFIX, None, None, &|_| true);
    for e in &ports.items {
        if let Some(p) = port_of(e) {
            let _ = alloc.ports.lock().expect("ports").allocate(p);
        }
    }
    let mut ip_watch = storage.cache.watch(IP_ADDRESS_PREFIX, ips.revision)?;
    let mut port_watch = storage.cache.watch(NODE_PORT_PREFIX, ports.revision)?;
    let storage = storage.clone();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                r = ip_watch.next() => match r {
                    Ok(batch) => for ev in batch {
                        if let Some(ip) = ip_of(&ev.entry) {
                            match ev.kind {
                                EventKind::Put => take_ip(&alloc, ip),
                                EventKind::Delete => give_ip(&alloc, ip),
                            }
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "allocator sync fell behind; reloading");
                        match storage.cache.watch(IP_ADDRESS_PREFIX, storage.cache.revision()) {
                            Ok(w) => ip_watch = w,
                            Err(_) => return,
                        }
                    }
                },
                r = port_watch.next() => match r {
                    Ok(batch) => for ev in batch {
                        if let Some(p) = port_of(&ev.entry) {
                            let mut ports = alloc.ports.lock().expect("ports");
                            match ev.kind {
                                EventKind::Put => { let _ = ports.allocate(p); }
                                EventKind::Delete => { ports.release(p); }
                            }
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "allocator sync fell behind; reloading");
                        match storage.cache.watch(NODE_PORT_PREFIX, storage.cache.revision()) {
                            Ok(w) => port_watch = w,
                            Err(_) => return,
                        }
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }))
}
