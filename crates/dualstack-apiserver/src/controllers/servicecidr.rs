//! ServiceCIDR protection, as kube-controller-manager's `service-cidr-controller`
//! (`pkg/controller/servicecidrs/servicecidrs_controller.go`):
//!
//! - every live ServiceCIDR carries the finalizer [`FINALIZER`] and the condition `Ready=True`
//!   (reason empty, message [`READY_MESSAGE`]), the `kubernetes` one from the flags included;
//! - a ServiceCIDR being deleted keeps its finalizer while an `IPAddress` of the ClusterIP
//!   allocator lies in it and in no other ServiceCIDR (it would be orphaned): its condition turns
//!   `Ready=False`, reason `Terminating`, with upstream's message; once none does, the finalizer
//!   is removed and the object goes.
//!
//! One difference: upstream waits 10 s after the deletion before it removes the finalizer, so
//! that allocators reading ServiceCIDRs stop using the range first. Our allocators take their
//! ranges from `--service-cluster-ip-range`, not from ServiceCIDRs, so there is nothing to wait
//! for. The decisions are the pure functions [`can_delete`] and [`desired`]; [`start`] applies
//! them whenever the store changes (and every 10 s).

use std::net::IpAddr;

use dualstack_apimachinery::status::ApiError;
use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::handlers::Resources;
use crate::kinds::service::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::registry::{Storage, now, time_string};
use crate::resource::Ctx;

/// `networking.k8s.io/service-cidr-finalizer`.
pub const FINALIZER: &str = "networking.k8s.io/service-cidr-finalizer";
/// The message of `Ready=True`.
pub const READY_MESSAGE: &str = "Kubernetes Service CIDR is ready";
/// The reason of `Ready=False` while deletion is blocked.
pub const TERMINATING_REASON: &str = "Terminating";
/// The message of `Ready=False` while deletion is blocked.
pub const TERMINATING_MESSAGE: &str = "There are still IPAddresses referencing the ServiceCIDR, please remove them or create a new ServiceCIDR";
/// The field manager of the controller's writes.
const MANAGER: &str = "service-cidr-controller";

/// Whether a ServiceCIDR with `cidrs` may go: every one of its CIDRs is contained in another
/// ServiceCIDR (`others`), or no allocated address (`addresses`) lies in it and in no other
/// (upstream's `canDeleteCIDR`).
pub fn can_delete(cidrs: &[IpNet], others: &[IpNet], addresses: &[IpAddr]) -> bool {
    let has_parent = cidrs.iter().all(|c| others.iter().any(|o| o.contains(c)));
    has_parent
        || !addresses
            .iter()
            .any(|a| cidrs.iter().any(|c| c.contains(a)) && !others.iter().any(|o| o.contains(a)))
}

/// What the controller wants for one ServiceCIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    /// Live: the finalizer and `Ready=True`.
    Ready,
    /// Being deleted with addresses that would be orphaned: `Ready=False`, `Terminating`.
    Blocked,
    /// Being deleted, nothing depends on it: remove the finalizer.
    Release,
}

/// The decision for a ServiceCIDR (`deleting`: it has a `deletionTimestamp`).
pub fn desired(deleting: bool, cidrs: &[IpNet], others: &[IpNet], addresses: &[IpAddr]) -> Desired {
    match (deleting, can_delete(cidrs, others, addresses)) {
        (false, _) => Desired::Ready,
        (true, false) => Desired::Blocked,
        (true, true) => Desired::Release,
    }
}

fn nets(v: &Value) -> Vec<IpNet> {
    v["spec"]["cidrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str()?.parse().ok())
        .collect()
}

fn finalizers(v: &Value) -> Vec<String> {
    v["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

/// Sets the `Ready` condition unless it already has this status, reason and message.
async fn set_ready(
    res: &Resources,
    mut v: Value,
    status: &str,
    reason: &str,
    message: &str,
) -> Result<(), ApiError> {
    let mut conditions: Vec<Value> = v["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let current = conditions.iter().position(|c| c["type"] == "Ready");
    if let Some(i) = current {
        let c = &conditions[i];
        if c["status"] == status && c["reason"] == reason && c["message"] == message {
            return Ok(());
        }
        conditions.remove(i);
    }
    conditions.push(json!({"type": "Ready", "status": status, "reason": reason,
        "message": message, "lastTransitionTime": time_string(now())}));
    v["status"] = json!({"conditions": conditions});
    let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
    let api = res.by_plural("servicecidrs").ok_or(ApiError::UnknownPath)?;
    api.update(
        &mut Ctx::system(MANAGER),
        None,
        &name,
        Some("status"),
        v,
        &[],
    )
    .await
    .map(|_| ())
}

/// Writes `finalizers` as the object's finalizers; returns the object as written.
async fn set_finalizers(
    res: &Resources,
    mut v: Value,
    finalizers: Vec<String>,
) -> Result<Value, ApiError> {
    v["metadata"]["finalizers"] = json!(finalizers);
    let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
    let api = res.by_plural("servicecidrs").ok_or(ApiError::UnknownPath)?;
    let (written, _) = api
        .update(&mut Ctx::system(MANAGER), None, &name, None, v, &[])
        .await?;
    serde_json::from_slice(&written.output).map_err(|e| ApiError::Internal(e.to_string()))
}

async fn sync_one(
    res: &Resources,
    v: Value,
    all: &[Value],
    addresses: &[IpAddr],
) -> Result<(), ApiError> {
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let others: Vec<IpNet> = all
        .iter()
        .filter(|o| o["metadata"]["name"].as_str() != Some(name))
        .flat_map(nets)
        .collect();
    let deleting = v["metadata"]["deletionTimestamp"].is_string();
    let mut fins = finalizers(&v);
    match desired(deleting, &nets(&v), &others, addresses) {
        Desired::Ready => {
            let v = if fins.iter().any(|f| f == FINALIZER) {
                v
            } else {
                fins.push(FINALIZER.to_string());
                set_finalizers(res, v, fins).await?
            };
            set_ready(res, v, "True", "", READY_MESSAGE).await
        }
        Desired::Blocked => {
            set_ready(res, v, "False", TERMINATING_REASON, TERMINATING_MESSAGE).await
        }
        Desired::Release if fins.iter().any(|f| f == FINALIZER) => {
            fins.retain(|f| f != FINALIZER);
            set_finalizers(res, v, fins).await.map(|_| ())
        }
        Desired::Release => Ok(()),
    }
}

fn list(res: &Resources, plural: &str) -> Vec<Value> {
    let Some(api) = res.by_plural(plural) else {
        return Vec::new();
    };
    let Ok(page) = api.list(None, &Default::default()) else {
        return Vec::new();
    };
    page.items
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.output).ok())
        .collect()
}

/// The addresses of the ClusterIP allocator's `IPAddress` objects (names are addresses).
fn allocated_addresses(res: &Resources) -> Vec<IpAddr> {
    let Some(api) = res.by_plural("ipaddresses") else {
        return Vec::new();
    };
    let Ok(page) = api.list(None, &Default::default()) else {
        return Vec::new();
    };
    page.items
        .iter()
        .filter_map(|e| serde_json::from_slice::<Value>(&e.output).ok())
        .filter(|ip| ip["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY)
        .filter_map(|ip| ip["metadata"]["name"].as_str()?.parse().ok())
        .collect()
}

/// One pass over every ServiceCIDR. The server runs one before it reports ready, so the
/// bootstrap ServiceCIDR is protected and `Ready` from the first request on.
pub async fn sync(res: &Resources) {
    let cidrs = list(res, "servicecidrs");
    // The allocated addresses matter only to a ServiceCIDR being deleted: read them (every
    // IPAddress) only then, not on every change of the store.
    let any_deleting = cidrs
        .iter()
        .any(|v| v["metadata"]["deletionTimestamp"].is_string());
    let addresses: Vec<IpAddr> = if any_deleting {
        allocated_addresses(res)
    } else {
        Vec::new()
    };
    for v in &cidrs {
        let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
        match sync_one(res, v.clone(), &cidrs, &addresses).await {
            Ok(()) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {}
            Err(e) => tracing::warn!(servicecidr = name, error = %e, "service-cidr-controller"),
        }
    }
}

/// Runs the controller until shutdown.
pub fn start(
    storage: Storage,
    res: Resources,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    super::resync_on_changes(storage, shutdown, move || {
        let res = res.clone();
        async move { sync(&res).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_service_cidr_may_go_only_when_no_address_would_be_orphaned() {
        // (cidrs, others, addresses, can delete): IPv4 and IPv6 rows side by side.
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], bool);
        let cases: [Case; 10] = [
            (&["10.0.0.0/16"], &[], &[], true),
            (&["fd00:10::/108"], &[], &[], true),
            (&["10.0.0.0/16"], &[], &["10.0.0.1"], false),
            (&["fd00:10::/108"], &[], &["fd00:10::1"], false),
            // Addresses of other ranges do not hold it.
            (&["10.0.0.0/16"], &[], &["10.1.0.1", "fd00:10::1"], true),
            (&["fd00:10::/108"], &[], &["10.0.0.1", "fd00:11::1"], true),
            // An address also in another ServiceCIDR is not orphaned.
            (&["10.0.0.0/16"], &["10.0.0.0/8"], &["10.0.0.1"], true),
            (&["fd00:10::/108"], &["fd00:10::/64"], &["fd00:10::1"], true),
            // Dual-stack: one family's address holds it.
            (
                &["10.0.0.0/16", "fd00:10::/108"],
                &["10.0.0.0/8"],
                &["fd00:10::1"],
                false,
            ),
            (
                &["10.0.0.0/16", "fd00:10::/108"],
                &["fd00:10::/64"],
                &["10.0.0.1"],
                false,
            ),
        ];
        for (cidrs, others, addresses, want) in cases {
            let cidrs: Vec<_> = cidrs.iter().map(|c| n(c)).collect();
            let others: Vec<_> = others.iter().map(|c| n(c)).collect();
            let addresses: Vec<_> = addresses.iter().map(|x| a(x)).collect();
            assert_eq!(
                can_delete(&cidrs, &others, &addresses),
                want,
                "{cidrs:?} {others:?} {addresses:?}"
            );
        }
    }

    #[test]
    fn live_service_cidrs_are_ready_and_deleted_ones_are_blocked_or_released() {
        let cidrs = [n("10.0.0.0/16")];
        assert_eq!(
            desired(false, &cidrs, &[], &[a("10.0.0.1")]),
            Desired::Ready
        );
        assert_eq!(
            desired(true, &cidrs, &[], &[a("10.0.0.1")]),
            Desired::Blocked
        );
        assert_eq!(desired(true, &cidrs, &[], &[]), Desired::Release);
    }
}
