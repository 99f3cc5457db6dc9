//! Discovery, generated from the resource table: legacy (`/api`, `/apis`, `/api/v1`,
//! `/apis/{g}`, `/apis/{g}/{v}`) and aggregated (`apidiscovery.k8s.io` v2 and v2beta1, chosen by
//! the `Accept` header and announced in `Content-Type`, as clients decide by it), plus
//! `/version`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::handlers::Resources;
use crate::resource::ResourceDef;

/// The Kubernetes version this server reports.
pub const KUBE_MINOR: &str = "33";
/// `gitVersion`.
pub const GIT_VERSION: &str = "v1.33.0";

/// The reported `(major, minor)`, as numbers (what deprecations are compared with).
pub fn major_minor() -> (u32, u32) {
    (1, KUBE_MINOR.parse().expect("KUBE_MINOR is a number"))
}

/// `/version`: all nine fields, as the Python client requires.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, arch()),
    })
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Which discovery document format a request accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryFormat {
    /// `APIVersions` / `APIGroupList`.
    Legacy,
    /// `apidiscovery.k8s.io/v2`.
    V2,
    /// `apidiscovery.k8s.io/v2beta1`.
    V2Beta1,
}

impl DiscoveryFormat {
    /// Picks the format from `Accept`: aggregated v2 only if offered, else v2beta1, else legacy.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let Some(a) = accept else {
            return DiscoveryFormat::Legacy;
        };
        let offers = |v: &str| {
            a.split(',').any(|part| {
                let p: Vec<&str> = part.split(';').map(str::trim).collect();
                p.contains(&"g=apidiscovery.k8s.io")
                    && p.contains(&v)
                    && p.contains(&"as=APIGroupDiscoveryList")
            })
        };
        if offers("v=v2") {
            DiscoveryFormat::V2
        } else if offers("v=v2beta1") {
            DiscoveryFormat::V2Beta1
        } else {
            DiscoveryFormat::Legacy
        }
    }

    /// The response Content-Type.
    pub fn content_type(self) -> &'static str {
        match self {
            DiscoveryFormat::Legacy => "application/json",
            DiscoveryFormat::V2 => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            DiscoveryFormat::V2Beta1 => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            DiscoveryFormat::V2Beta1 => "apidiscovery.k8s.io/v2beta1",
            _ => "apidiscovery.k8s.io/v2",
        }
    }
}

/// The legacy `bindings` resource: create only, served by `handlers::legacy_binding`.
static BINDINGS: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Binding",
    plural: crate::handlers::BINDINGS,
    singular: "binding",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    name_rule: dualstack_apimachinery::validation::NameRule::Subdomain,
    field_labels: &[],
    return_deleted_object: false,
    allow_create_on_update: false,
    columns: &[],
};

fn verbs(def: &ResourceDef) -> Vec<&'static str> {
    if crate::authz::is_review(def) || std::ptr::eq(def, &BINDINGS) {
        return vec!["create"];
    }
    vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]
}

fn sub_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "finalize" => vec!["update"],
        "eviction" | "binding" => vec!["create"],
        _ => vec!["get", "patch", "update"],
    }
}

/// Every served resource definition: `bindings` (first, as upstream's alphabetical core list),
/// the stored kinds, then the create-only reviews.
fn defs(res: &Resources) -> impl Iterator<Item = &ResourceDef> {
    std::iter::once(&BINDINGS)
        .chain(res.list.iter().map(|r| r.def()))
        .chain(crate::authz::REVIEWS.iter())
}

/// Whether `/apis/{group}` is served.
pub fn serves_group(res: &Resources, group: &str) -> bool {
    !group.is_empty() && defs(res).any(|d| d.group == group)
}

/// The group, version and kind of a subresource whose kind is not its resource's.
fn sub_kind(sub: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match sub {
        "eviction" => Some(("policy", "v1", "Eviction")),
        "binding" => Some(("", "v1", "Binding")),
        "scale" => Some(("autoscaling", "v1", "Scale")),
        _ => None,
    }
}

/// Groups in discovery order: core first, then named groups.
fn groups(res: &Resources) -> BTreeMap<String, Vec<&ResourceDef>> {
    let mut m: BTreeMap<String, Vec<&ResourceDef>> = BTreeMap::new();
    for d in defs(res) {
        m.entry(d.group.to_string()).or_default().push(d);
    }
    m
}

/// `/api` (legacy).
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_version(group: &str) -> Value {
    json!({"groupVersion": format!("{group}/v1"), "version": "v1"})
}

/// `/apis` (legacy).
pub fn api_group_list(res: &Resources) -> Value {
    let groups: Vec<Value> = groups(res)
        .keys()
        .filter(|g| !g.is_empty())
        .map(|g| api_group(g))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
pub fn api_group(group: &str) -> Value {
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [group_version(group)],
        "preferredVersion": group_version(group),
    })
}

/// `/api/v1`, `/apis/{group}/{version}`: None when the group is not served.
pub fn resource_list(res: &Resources, group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = defs(res)
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for d in &defs {
        let mut r = json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": verbs(d),
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        resources.push(r);
        for sub in d.subresources {
            let mut r = json!({
                "name": format!("{}/{}", d.plural, sub),
                "singularName": "",
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": sub_verbs(sub),
            });
            if let Some((group, version, kind)) = sub_kind(sub) {
                // kubectl drain finds the Eviction API by this entry's group and version; a
                // kind of the resource's own group (Binding) names only the kind.
                if group != d.group {
                    r["group"] = group.into();
                    r["version"] = version.into();
                }
                r["kind"] = kind.into();
            }
            resources.push(r);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn aggregated_resource(d: &ResourceDef) -> Value {
    let mut r = json!({
        "resource": d.plural,
        "responseKind": {"group": d.group, "version": d.version, "kind": d.kind},
        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": d.singular,
        "verbs": verbs(d),
    });
    if !d.short_names.is_empty() {
        r["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        r["categories"] = json!(d.categories);
    }
    if !d.subresources.is_empty() {
        r["subresources"] = d
            .subresources
            .iter()
            .map(|s| {
                let (group, version, kind) = sub_kind(s).unwrap_or((d.group, d.version, d.kind));
                json!({"subresource": s, "responseKind": {"group": group, "version": version, "kind": kind}, "verbs": sub_verbs(s)})
            })
            .collect();
    }
    r
}

/// The aggregated document of `/api` (core only) or `/apis` (named groups).
pub fn aggregated(res: &Resources, core: bool, format: DiscoveryFormat) -> Value {
    let items: Vec<Value> = groups(res)
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, defs)| {
            let resources: Vec<Value> = defs.iter().map(|d| aggregated_resource(d)).collect();
            let mut meta = json!({"creationTimestamp": null});
            if !g.is_empty() {
                meta["name"] = g.clone().into();
            }
            json!({"metadata": meta, "versions": [{"version": "v1", "freshness": "Current", "resources": resources}]})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format.api_version(), "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_is_chosen_only_when_offered() {
        let v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let v2b1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(DiscoveryFormat::from_accept(Some(v2)), DiscoveryFormat::V2);
        assert_eq!(
            DiscoveryFormat::from_accept(Some(v2b1)),
            DiscoveryFormat::V2Beta1
        );
        assert_eq!(
            DiscoveryFormat::from_accept(Some("application/json")),
            DiscoveryFormat::Legacy
        );
        assert_eq!(DiscoveryFormat::from_accept(None), DiscoveryFormat::Legacy);
    }

    #[test]
    fn version_has_all_nine_fields() {
        let v = version();
        for f in [
            "major",
            "minor",
            "gitVersion",
            "gitCommit",
            "gitTreeState",
            "buildDate",
            "goVersion",
            "compiler",
            "platform",
        ] {
            assert!(v[f].is_string(), "{f}");
        }
    }
}
