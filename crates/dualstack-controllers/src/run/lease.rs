//! Leader election at the edge: reads and writes the Lease as [`Elector`] decides (optimistic
//! concurrency on `resourceVersion`, so two candidates never both win a write), runs the
//! controllers only while leading, renews every retry period, and stops the controllers when it
//! cannot renew within the renew deadline or finds another holder. On shutdown the leader gives
//! the Lease up so a standby takes over at once.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use super::RunError;
use crate::config::LeaderElectionConfig;
use crate::metrics::{Metrics, NameLabels};
use crate::plan::leader::{Elector, LeaseRecord, Step};

enum Attempt {
    Leading,
    Wait(Instant),
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    name: &str,
    elector: &mut Elector,
) -> Result<Attempt, kube::Error> {
    let current = api.get_opt(name).await?;
    let record = current.as_ref().map(|l| {
        l.spec
            .as_ref()
            .map(LeaseRecord::from_spec)
            .unwrap_or_default()
    });
    let now = Instant::now();
    match elector.decide(record.as_ref(), now, jiff::Timestamp::now()) {
        Step::Wait { until } => Ok(Attempt::Wait(until)),
        Step::Create(r) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..Default::default()
                },
                spec: Some(r.to_spec()),
            };
            api.create(&PostParams::default(), &lease).await?;
            elector.written(r, now);
            Ok(Attempt::Leading)
        }
        Step::Update(r) => {
            let mut lease = current.expect("update follows a read");
            lease.spec = Some(r.to_spec());
            api.replace(name, &PostParams::default(), &lease).await?;
            elector.written(r, now);
            Ok(Attempt::Leading)
        }
    }
}

async fn release(api: &Api<Lease>, name: &str, elector: &Elector) {
    let Some(record) = elector.release(jiff::Timestamp::now()) else {
        return;
    };
    let attempt = async {
        let mut lease = api.get(name).await?;
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder == Some(elector.identity()) {
            lease.spec = Some(record.to_spec());
            api.replace(name, &PostParams::default(), &lease).await?;
        }
        Ok::<_, kube::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(())) => tracing::info!(identity = elector.identity(), "released leader lease"),
        Ok(Err(error)) => tracing::warn!(%error, "could not release leader lease"),
        Err(_) => tracing::warn!("timed out releasing leader lease"),
    }
}

/// Campaigns for the Lease and runs `start()` while leading, until `shutdown` resolves (then
/// the Lease is released) or the controllers fail.
pub async fn run<F, Fut>(
    client: Client,
    config: &LeaderElectionConfig,
    metrics: &Metrics,
    mut start: F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), RunError>>,
{
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let name = config.name.as_str();
    let lease = format!("{}/{}", config.namespace, config.name);
    let gauge = metrics
        .leader
        .get_or_create(&NameLabels { name: name.into() })
        .clone();
    let mut elector = Elector::new(
        config.identity.clone(),
        config.lease_duration,
        config.retry_period,
    );
    tokio::pin!(shutdown);
    tracing::info!(identity = %config.identity, %lease, "attempting to acquire leader lease");
    loop {
        // Campaign.
        loop {
            let attempt = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                a = tokio::time::timeout(config.retry_period, try_acquire_or_renew(&api, name, &mut elector)) => a,
            };
            let wake = match attempt {
                Ok(Ok(Attempt::Leading)) => break,
                Ok(Ok(Attempt::Wait(until))) => until,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "failed to acquire lease");
                    Instant::now() + config.retry_period
                }
                Err(_) => Instant::now() + config.retry_period,
            };
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        tracing::info!(identity = %config.identity, %lease, "successfully acquired lease");
        gauge.set(1);
        let mut last_renew = Instant::now();
        let controllers = start();
        tokio::pin!(controllers);
        let lost = loop {
            tokio::select! {
                _ = &mut shutdown => {
                    gauge.set(0);
                    release(&api, name, &elector).await;
                    return Ok(());
                }
                result = &mut controllers => {
                    gauge.set(0);
                    release(&api, name, &elector).await;
                    return result;
                }
                _ = tokio::time::sleep(config.retry_period) => {
                    let attempt = tokio::time::timeout(config.retry_period, try_acquire_or_renew(&api, name, &mut elector)).await;
                    match attempt {
                        Ok(Ok(Attempt::Leading)) => last_renew = Instant::now(),
                        Ok(Ok(Attempt::Wait(_))) => {
                            break format!("lease taken by {}", elector.observed_holder().unwrap_or(""));
                        }
                        Ok(Err(error)) => tracing::warn!(%error, "failed to renew lease"),
                        Err(_) => tracing::warn!("timed out renewing lease"),
                    }
                    if last_renew.elapsed() >= config.renew_deadline {
                        break "failed to renew lease within the renew deadline".to_string();
                    }
                }
            }
        };
        gauge.set(0);
        tracing::error!(%lease, reason = %lost, "leaderelection lost; stopping controllers");
    }
}
