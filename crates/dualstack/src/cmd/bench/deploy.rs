//! Issue 12 (root): a Deployment of N replicas (100 by default) on a fresh 3-node lab, from the
//! create to `status.readyReplicas == N` (the controllers, the scheduler, three agents starting
//! pods with both addresses), then its deletion until every pod is gone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::nodes::Lab;
use super::support::{Report, block_on, ms};

/// `dualstack bench deploy`
#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// Replicas.
    #[arg(long, default_value_t = 100)]
    pub replicas: i32,
    /// Where the lab goes (a fresh dir inside).
    #[arg(long, default_value = "/tmp")]
    pub work_dir: PathBuf,
}

fn deployment(replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "main", "image": "none", "command": ["sleep", "100000"]}]
                }
            }
        }
    }))
    .expect("static deployment")
}

/// Runs the suite.
pub fn run(args: DeployArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("dualstack bench deploy needs root (it runs `dualstack up`)");
    }
    block_on(async move {
        let (lab, _) = Lab::up(&args.work_dir, 3)?;
        let client = lab.client().await?;
        let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let start = Instant::now();
        deploys
            .create(&PostParams::default(), &deployment(args.replicas))
            .await?;
        let deadline = start + Duration::from_secs(300);
        loop {
            let d = deploys.get("bench").await?;
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            if ready == args.replicas {
                break;
            }
            if Instant::now() > deadline {
                bail!("{ready} of {} replicas ready after 300 s", args.replicas);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let to_ready = start.elapsed();
        let with_two = pods
            .list(&ListParams::default().labels("app=bench"))
            .await?
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.pod_ips.as_ref())
                    .is_some_and(|i| i.len() == 2)
            })
            .count();
        let start = Instant::now();
        deploys.delete("bench", &DeleteParams::default()).await?;
        loop {
            let left = pods
                .list_metadata(&ListParams::default().labels("app=bench"))
                .await?
                .items
                .len();
            if left == 0 {
                break;
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("{left} pods left 300 s after the Deployment's deletion");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let to_gone = start.elapsed();
        let mut report = Report::default();
        report.row(
            format!(
                "Deployment of {} replicas on 3 nodes: create → readyReplicas = {}",
                args.replicas, args.replicas
            ),
            format!("{} ({with_two} pods with two addresses)", ms(to_ready)),
            "",
            None,
        );
        report.row(
            "its deletion → every pod gone (background propagation)",
            ms(to_gone),
            "",
            None,
        );
        report.print();
        drop(lab);
        Ok::<(), anyhow::Error>(())
    })
    .context("bench deploy")
}
