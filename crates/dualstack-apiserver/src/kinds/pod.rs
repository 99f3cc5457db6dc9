//! Pods: upstream's defaults for what kubectl and the agent send, the core validation rules,
//! the dual-stack `status.podIPs` rules, graceful deletion, and `kubectl get pods` printing.

use dualstack_api::pod::{normalize_pod_ips, validate_pod_status_ips};
use dualstack_apimachinery::field::{ErrorList, FieldError, Path};
use dualstack_apimachinery::validation::{NameRule, is_dns1123_label};
use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, PodSpec, PodStatus};

use crate::resource::{Column, Ctx, ResourceDef, Strategy, age_cell};

static DEF: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    namespaced: true,
    short_names: &["po"],
    categories: &["all"],
    subresources: &["binding", "eviction", "status"],
    name_rule: NameRule::Subdomain,
    field_labels: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ],
    return_deleted_object: true,
    allow_create_on_update: false,
    columns: &[
        Column::name(),
        Column::new(
            "Ready",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        Column::new(
            "Status",
            "The aggregate status of the containers in this pod.",
        ),
        Column::new(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        Column::age(),
        Column::wide(
            "IP",
            "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
        ),
        Column::wide("Node", "Name of the node where the pod is scheduled."),
        Column::wide(
            "Nominated Node",
            "Name of the node the pod is nominated to (preemption).",
        ),
        Column::wide("Readiness Gates", "Pod readiness gates."),
    ],
};

/// Default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The Pod strategy.
#[derive(Debug, Default)]
pub struct PodStrategy;

fn default_container(c: &mut Container) {
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    if c.image_pull_policy.is_none() {
        let image = c.image.clone().unwrap_or_default();
        let last = image.rsplit('/').next().unwrap_or("");
        let tag = if image.contains('@') {
            Some("digest")
        } else {
            last.split_once(':').map(|(_, t)| t)
        };
        c.image_pull_policy = Some(
            if matches!(tag, None | Some("latest")) {
                "Always"
            } else {
                "IfNotPresent"
            }
            .into(),
        );
    }
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
}

fn validate_containers(path: &Path, containers: &[Container], required: bool) -> ErrorList {
    let mut errs = Vec::new();
    if required && containers.is_empty() {
        errs.push(FieldError::required(path, ""));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let p = path.index(i);
        if c.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else {
            for m in is_dns1123_label(&c.name) {
                errs.push(FieldError::invalid(&p.child("name"), c.name.as_str(), m));
            }
            if !names.insert(c.name.clone()) {
                errs.push(FieldError::duplicate(&p.child("name"), c.name.as_str()));
            }
        }
        if c.image.as_deref().unwrap_or("").trim().is_empty() {
            errs.push(FieldError::required(&p.child("image"), ""));
        }
        for (j, port) in c.ports.iter().flatten().enumerate() {
            let pp = p.child("ports").index(j);
            if !(1..=65535).contains(&port.container_port) {
                errs.push(FieldError::invalid(
                    &pp.child("containerPort"),
                    port.container_port,
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if let Some(proto) = port.protocol.as_deref()
                && !matches!(proto, "TCP" | "UDP" | "SCTP")
            {
                errs.push(FieldError::not_supported(
                    &pp.child("protocol"),
                    proto,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
    }
    errs
}

/// `SetDefaults_PodSpec` and the containers' defaults (also run on the pod templates of
/// Deployments and ReplicaSets; the service account and service links are the Pod's own).
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.termination_grace_period_seconds
        .get_or_insert(DEFAULT_GRACE_SECONDS);
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.containers.iter_mut().for_each(default_container);
    spec.init_containers
        .iter_mut()
        .flatten()
        .for_each(default_container);
}

/// The PodSpec rules we check, under `sp` (`spec`, `spec.template.spec`).
pub fn validate_pod_spec(sp: &Path, spec: &PodSpec) -> ErrorList {
    let mut errs = validate_containers(&sp.child("containers"), &spec.containers, true);
    errs.extend(validate_containers(
        &sp.child("initContainers"),
        spec.init_containers.as_deref().unwrap_or_default(),
        false,
    ));
    if let Some(rp) = spec.restart_policy.as_deref()
        && !matches!(rp, "Always" | "OnFailure" | "Never")
    {
        errs.push(FieldError::not_supported(
            &sp.child("restartPolicy"),
            rp,
            &["Always", "Never", "OnFailure"],
        ));
    }
    if let Some(g) = spec.termination_grace_period_seconds.filter(|&g| g < 0) {
        errs.push(FieldError::invalid(
            &sp.child("terminationGracePeriodSeconds"),
            g,
            "must be greater than or equal to 0",
        ));
    }
    errs
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

impl Strategy for PodStrategy {
    type Obj = Pod;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn defaults(&self, p: &mut Pod) {
        if let Some(spec) = p.spec.as_mut() {
            default_pod_spec(spec);
            spec.enable_service_links.get_or_insert(true);
            if spec.service_account_name.is_none() {
                spec.service_account_name = Some("default".into());
            }
        }
        normalize_pod_ips(p);
    }

    fn prepare_for_create(&self, p: &mut Pod) {
        p.status = Some(PodStatus {
            phase: Some("Pending".into()),
            qos_class: Some("BestEffort".into()),
            ..Default::default()
        });
    }

    fn validate(&self, _ctx: &Ctx, p: &Pod) -> ErrorList {
        let Some(spec) = &p.spec else {
            return vec![FieldError::required(&Path::new("spec"), "")];
        };
        let mut errs = validate_pod_spec(&Path::new("spec"), spec);
        errs.extend(validate_pod_status_ips(p));
        errs
    }

    fn validate_update(&self, ctx: &Ctx, new: &Pod, old: &Pod) -> ErrorList {
        let mut errs = self.validate(ctx, new);
        // Only images, activeDeadlineSeconds and tolerations may change.
        let strip = |p: &Pod| {
            let mut s = p.spec.clone().unwrap_or_default();
            for c in s.containers.iter_mut() {
                c.image = None;
            }
            for c in s.init_containers.iter_mut().flatten() {
                c.image = None;
            }
            s.active_deadline_seconds = None;
            s.tolerations = None;
            s
        };
        if strip(new) != strip(old) {
            errs.push(FieldError::forbidden(
                &Path::new("spec"),
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        errs
    }

    fn validate_status_update(&self, _ctx: &Ctx, new: &Pod, _old: &Pod) -> ErrorList {
        validate_pod_status_ips(new)
    }

    fn fields(&self, p: &Pod, out: &mut Vec<(&'static str, String)>) {
        let spec = p.spec.clone().unwrap_or_default();
        let st = p.status.clone().unwrap_or_default();
        out.push(("spec.nodeName", spec.node_name.unwrap_or_default()));
        out.push((
            "spec.restartPolicy",
            spec.restart_policy.unwrap_or_default(),
        ));
        out.push((
            "spec.schedulerName",
            spec.scheduler_name.unwrap_or_default(),
        ));
        out.push((
            "spec.serviceAccountName",
            spec.service_account_name.unwrap_or_default(),
        ));
        out.push((
            "spec.hostNetwork",
            spec.host_network.unwrap_or(false).to_string(),
        ));
        out.push(("status.phase", st.phase.unwrap_or_default()));
        out.push(("status.podIP", st.pod_ip.unwrap_or_default()));
        out.push((
            "status.nominatedNodeName",
            st.nominated_node_name.unwrap_or_default(),
        ));
    }

    fn grace_period(&self, p: &Pod, requested: Option<i64>) -> Option<i64> {
        let spec = p.spec.as_ref()?;
        if spec.node_name.as_deref().unwrap_or("").is_empty()
            || matches!(phase(p).as_str(), "Succeeded" | "Failed")
        {
            return None;
        }
        Some(
            requested
                .or(spec.termination_grace_period_seconds)
                .unwrap_or(DEFAULT_GRACE_SECONDS),
        )
    }

    fn row(&self, p: &Pod, now: jiff::Timestamp) -> Vec<serde_json::Value> {
        let spec = p.spec.clone().unwrap_or_default();
        let st = p.status.clone().unwrap_or_default();
        let statuses = st.container_statuses.unwrap_or_default();
        let ready = statuses.iter().filter(|c| c.ready).count();
        let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
        let mut reason = st
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| phase(p));
        for c in &statuses {
            if let Some(w) = c
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone())
            {
                reason = w;
            }
        }
        if p.metadata.deletion_timestamp.is_some() {
            reason = "Terminating".into();
        }
        let gates = spec.readiness_gates.as_ref().map(|g| g.len()).unwrap_or(0);
        vec![
            p.metadata.name.clone().unwrap_or_default().into(),
            format!("{ready}/{}", spec.containers.len()).into(),
            reason.into(),
            restarts.to_string().into(),
            age_cell(&p.metadata, now),
            // Every family's address, primary first (upstream prints podIP alone).
            Some(
                st.pod_ips
                    .iter()
                    .flatten()
                    .map(|i| i.ip.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .filter(|i| !i.is_empty())
            .or(st.pod_ip.filter(|i| !i.is_empty()))
            .unwrap_or_else(|| "<none>".into())
            .into(),
            spec.node_name
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "<none>".into())
                .into(),
            st.nominated_node_name
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "<none>".into())
                .into(),
            if gates == 0 {
                "<none>".to_string()
            } else {
                format!("0/{gates}")
            }
            .into(),
        ]
    }
}

/// Why a pod cannot be bound (upstream's `setPodNodeAndMetadata` errors; the handler wraps
/// them in a 409 on `pods/binding`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The pod has a `deletionTimestamp`.
    #[error("pod {0} is being deleted, cannot be assigned to a host")]
    Deleting(String),
    /// `spec.nodeName` is already set.
    #[error("pod {pod} is already assigned to node {node:?}")]
    AlreadyAssigned {
        /// The pod.
        pod: String,
        /// Its node.
        node: String,
    },
    /// `spec.schedulingGates` is not empty.
    #[error("pod {0} has non-empty .spec.schedulingGates")]
    Gated(String),
}

/// Upstream's `BindingREST` on the stored pod JSON: sets `spec.nodeName` of an unassigned pod
/// that is neither being deleted nor gated, merges the binding's annotations, and sets the
/// `PodScheduled` condition to `True` as `UpdatePodCondition` does (the whole condition is
/// replaced; `lastTransitionTime` moves only when the status changes). `now` is the RFC 3339
/// time of the write.
pub fn assign_pod(
    pod: &mut serde_json::Value,
    node: &str,
    annotations: Option<&serde_json::Map<String, serde_json::Value>>,
    now: &str,
) -> Result<(), BindError> {
    use serde_json::{Value, json};
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return Err(BindError::Deleting(name));
    }
    if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(BindError::AlreadyAssigned {
            pod: name,
            node: current.to_string(),
        });
    }
    if pod["spec"]["schedulingGates"]
        .as_array()
        .is_some_and(|g| !g.is_empty())
    {
        return Err(BindError::Gated(name));
    }
    pod["spec"]["nodeName"] = node.into();
    if let Some(extra) = annotations.filter(|a| !a.is_empty()) {
        if !pod["metadata"]["annotations"].is_object() {
            pod["metadata"]["annotations"] = json!({});
        }
        for (k, v) in extra {
            pod["metadata"]["annotations"][k] = v.clone();
        }
    }
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let mut condition = json!({
        "type": "PodScheduled",
        "status": "True",
        "lastProbeTime": null,
        "lastTransitionTime": now,
    });
    let conditions = pod["status"]
        .as_object_mut()
        .expect("an object")
        .entry("conditions")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !conditions.is_array() {
        *conditions = Value::Array(Vec::new());
    }
    let list = conditions.as_array_mut().expect("an array");
    match list.iter_mut().find(|c| c["type"] == "PodScheduled") {
        Some(old) => {
            if old["status"] == "True" {
                condition["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = condition;
        }
        None => list.push(condition),
    }
    Ok(())
}

#[cfg(test)]
mod binding_tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2025-01-02T03:04:05Z";

    #[test]
    fn binding_sets_the_node_the_annotations_and_the_scheduled_condition() {
        let mut pod = json!({
            "metadata": {"name": "p", "annotations": {"a": "1"}},
            "spec": {},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available", "lastTransitionTime": "2020-01-01T00:00:00Z"}
            ]}
        });
        let extra = json!({"b": "2"});
        assign_pod(&mut pod, "n1", extra.as_object(), NOW).unwrap();
        assert_eq!(pod["spec"]["nodeName"], "n1");
        assert_eq!(pod["metadata"]["annotations"], json!({"a": "1", "b": "2"}));
        assert_eq!(
            pod["status"]["conditions"],
            json!([{"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                    "lastTransitionTime": NOW}])
        );
    }

    #[test]
    fn binding_keeps_the_transition_time_when_already_scheduled_true() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}
        ]}});
        assign_pod(&mut pod, "n1", None, NOW).unwrap();
        assert_eq!(
            pod["status"]["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
    }

    #[test]
    fn binding_refuses_assigned_deleting_and_gated_pods_with_upstreams_texts() {
        let cases = [
            (
                json!({"metadata": {"name": "p"}, "spec": {"nodeName": "x"}}),
                "pod p is already assigned to node \"x\"",
            ),
            (
                json!({"metadata": {"name": "p", "deletionTimestamp": NOW}, "spec": {}}),
                "pod p is being deleted, cannot be assigned to a host",
            ),
            (
                json!({"metadata": {"name": "p"}, "spec": {"schedulingGates": [{"name": "g"}]}}),
                "pod p has non-empty .spec.schedulingGates",
            ),
        ];
        for (mut pod, want) in cases {
            let before = pod.clone();
            let err = assign_pod(&mut pod, "n1", None, NOW).unwrap_err();
            assert_eq!(err.to_string(), want);
            assert_eq!(pod, before, "a refused binding changes nothing");
        }
    }
}
