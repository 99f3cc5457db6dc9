//! Nodes: `spec.podCIDRs` one per family and immutable once set; printing as `kubectl get
//! nodes` does.

use dualstack_api::node::{normalize_pod_cidrs, validate_pod_cidrs, validate_pod_cidrs_update};
use dualstack_apimachinery::field::ErrorList;
use dualstack_apimachinery::status::ApiError;
use dualstack_apimachinery::validation::NameRule;
use k8s_openapi::api::core::v1::Node;

use crate::resource::{Column, Ctx, ResourceDef, Strategy, age_cell};

static DEF: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    namespaced: false,
    short_names: &["no"],
    categories: &[],
    subresources: &["status"],
    name_rule: NameRule::Subdomain,
    field_labels: &["spec.unschedulable"],
    return_deleted_object: false,
    allow_create_on_update: false,
    columns: &[
        Column::name(),
        Column::new("Status", "The status of the node"),
        Column::new("Roles", "The roles of the node"),
        Column::age(),
        Column::new("Version", "Kubelet Version reported by the node."),
        Column::wide(
            "Internal-IP",
            "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses",
        ),
        Column::wide(
            "External-IP",
            "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses",
        ),
        Column::wide(
            "OS-Image",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        ),
        Column::wide(
            "Kernel-Version",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        ),
        Column::wide(
            "Container-Runtime",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        ),
    ],
};

/// The Node strategy.
#[derive(Debug, Default)]
pub struct NodeStrategy;

fn status_cell(n: &Node) -> String {
    let mut parts = Vec::new();
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    parts.push(match ready {
        Some("True") => "Ready",
        Some("False") => "NotReady",
        _ => "Unknown",
    });
    if n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        parts.push("SchedulingDisabled");
    }
    parts.join(",")
}

fn roles(n: &Node) -> String {
    let mut roles: Vec<String> = n
        .metadata
        .labels
        .iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                Some(r.to_string())
            } else if k == "kubernetes.io/role" {
                Some(v.clone())
            } else {
                None
            }
        })
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn address(n: &Node, ty: &str) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == ty))
        .map_or_else(|| "<none>".to_string(), |a| a.address.clone())
}

impl Strategy for NodeStrategy {
    type Obj = Node;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn defaults(&self, n: &mut Node) {
        normalize_pod_cidrs(n);
    }

    fn admit(&self, ctx: &Ctx, n: &Node, old: Option<&Node>) -> Result<(), ApiError> {
        crate::auth::admit_node(&ctx.user, n, old).map_err(|why| {
            ApiError::Forbidden(format!(
                "nodes {:?} is forbidden: {why}",
                n.metadata.name.as_deref().unwrap_or("")
            ))
        })
    }

    fn validate(&self, _ctx: &Ctx, n: &Node) -> ErrorList {
        validate_pod_cidrs(n)
    }

    fn validate_update(&self, ctx: &Ctx, new: &Node, old: &Node) -> ErrorList {
        let mut errs = self.validate(ctx, new);
        errs.extend(validate_pod_cidrs_update(new, old));
        errs
    }

    fn fields(&self, n: &Node, out: &mut Vec<(&'static str, String)>) {
        let u = n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        out.push(("spec.unschedulable", u.to_string()));
    }

    fn row(&self, n: &Node, now: jiff::Timestamp) -> Vec<serde_json::Value> {
        let info = n.status.as_ref().and_then(|s| s.node_info.as_ref());
        let s = |f: fn(&k8s_openapi::api::core::v1::NodeSystemInfo) -> &String| {
            info.map(f)
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| "<unknown>".into())
        };
        vec![
            n.metadata.name.clone().unwrap_or_default().into(),
            status_cell(n).into(),
            roles(n).into(),
            age_cell(&n.metadata, now),
            info.map(|i| i.kubelet_version.clone())
                .unwrap_or_default()
                .into(),
            address(n, "InternalIP").into(),
            address(n, "ExternalIP").into(),
            s(|i| &i.os_image).into(),
            s(|i| &i.kernel_version).into(),
            s(|i| &i.container_runtime_version).into(),
        ]
    }
}
