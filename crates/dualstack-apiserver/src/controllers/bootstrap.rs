//! Objects every cluster has: the namespaces `default`, `kube-system`, `kube-public`,
//! `kube-node-lease`; the ServiceCIDR `kubernetes` (the flag ranges); the `default/kubernetes`
//! Service (network+1 of the primary range, port 443) with its Endpoints and EndpointSlice
//! pointing at this server. Reconciled every [`INTERVAL`] (upstream's bootstrap controller), so
//! a deleted one comes back.

use dualstack_apimachinery::status::ApiError;
use serde_json::{Value, json};

use crate::config::ServerConfig;
use crate::handlers::Resources;
use crate::registry::Storage;
use crate::resource::Ctx;

/// How often the bootstrap objects are reconciled (upstream's bootstrap controller: 10 s).
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Reconciles the bootstrap objects every [`INTERVAL`] until shutdown (the first run is
/// [`run`] at start).
pub fn start(
    storage: Storage,
    res: Resources,
    config: ServerConfig,
    port: u16,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = run(&storage, &res, &config, port).await {
                tracing::warn!(error = %e, "reconciling the bootstrap objects");
            }
        }
    })
}

/// Namespaces created at start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

async fn ensure(
    res: &Resources,
    plural: &str,
    ns: Option<&str>,
    name: &str,
    body: Value,
    update: bool,
) -> anyhow::Result<()> {
    let api = res
        .by_plural(plural)
        .ok_or_else(|| anyhow::anyhow!("no resource {plural}"))?;
    let mut ctx = Ctx::system("kube-apiserver");
    match api.get(ns, name).await {
        Ok(_) if !update => Ok(()),
        Ok(existing) => {
            let current: Value = serde_json::from_slice(&existing.output)?;
            let mut merged = body.clone();
            merged["metadata"] = current["metadata"].clone();
            if let Some(spec) = current.get("spec") {
                // Keep allocated values the server owns (clusterIPs, families) of the Service.
                if plural == "services" {
                    merged["spec"]["clusterIP"] = spec["clusterIP"].clone();
                    merged["spec"]["clusterIPs"] = spec["clusterIPs"].clone();
                    merged["spec"]["ipFamilies"] = spec["ipFamilies"].clone();
                }
            }
            api.update(&mut ctx, ns, name, None, merged, &[])
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("updating {plural}/{name}: {e}"))
        }
        Err(ApiError::NotFound { .. }) => match api.create(&mut ctx, ns, body, &[]).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(anyhow::anyhow!("creating {plural}/{name}: {e}")),
        },
        Err(e) => Err(anyhow::anyhow!("reading {plural}/{name}: {e}")),
    }
}

/// Creates or reconciles the bootstrap objects.
pub async fn run(
    storage: &Storage,
    res: &Resources,
    config: &ServerConfig,
    port: u16,
) -> anyhow::Result<()> {
    storage
        .consistent()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for ns in SYSTEM_NAMESPACES {
        ensure(
            res,
            "namespaces",
            None,
            ns,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            false,
        )
        .await?;
    }
    let cidrs: Vec<String> = config
        .service_ranges
        .cidrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    ensure(
        res,
        "servicecidrs",
        None,
        crate::kinds::servicecidr::DEFAULT_NAME,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": "kubernetes"}, "spec": {"cidrs": cidrs}}),
        true,
    )
    .await
    .or_else(|e| {
        // Upstream keeps a ServiceCIDR once created; a changed flag is reported, not applied.
        tracing::warn!(error = %e, "the kubernetes ServiceCIDR does not match --service-cluster-ip-range");
        Ok::<_, anyhow::Error>(())
    })?;
    let ip = config.service_ranges.api_server_service_ip().to_string();
    ensure(
        res,
        "services",
        Some("default"),
        "kubernetes",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "type": "ClusterIP", "clusterIP": ip, "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            },
        }),
        true,
    )
    .await?;
    let primary = config.advertise_addresses[0];
    ensure(
        res,
        "endpoints",
        Some("default"),
        "kubernetes",
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": primary.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        }),
        true,
    )
    .await?;
    let family = dualstack_ipam::IpFamily::of_addr(&primary);
    ensure(
        res,
        "endpointslices",
        Some("default"),
        "kubernetes",
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "apiserver"}},
            "addressType": family.as_str(),
            "endpoints": [{"addresses": [primary.to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }),
        true,
    )
    .await?;
    Ok(())
}
