//! ReplicaSets (`apps/v1`), and what Deployments share with them: the selector and template
//! rules of upstream's `ValidateReplicaSetSpec`/`ValidatePodTemplateSpecForReplicaSet`, template
//! defaulting, generation bumps, `kubectl get rs` printing and the `autoscaling/v1` Scale view.

use std::collections::BTreeMap;

use dualstack_apimachinery::field::{ErrorList, FieldError, Path, Value as FieldValue};
use dualstack_apimachinery::selector::LabelSelector as Selector;
use dualstack_apimachinery::validation::NameRule;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use super::pod::{default_pod_spec, validate_pod_spec};
use crate::resource::{Column, Ctx, ResourceDef, Strategy, age_cell};

static DEF: ResourceDef = ResourceDef {
    group: "apps",
    version: "v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    namespaced: true,
    short_names: &["rs"],
    categories: &["all"],
    subresources: &["scale", "status"],
    name_rule: NameRule::Subdomain,
    field_labels: &["status.replicas"],
    return_deleted_object: false,
    allow_create_on_update: false,
    columns: &[
        Column::name(),
        Column::int(
            "Desired",
            "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/#how-a-replicaset-works",
        ),
        Column::int(
            "Current",
            "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/#how-a-replicaset-works",
        ),
        Column::int(
            "Ready",
            "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
        ),
        Column::age(),
        Column::wide("Containers", "Names of each container in the template."),
        Column::wide(
            "Images",
            "Images referenced by each container in the template.",
        ),
        Column::wide(
            "Selector",
            "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
        ),
    ],
};

/// Go's `%#v` of a `map[string]string`, as upstream prints template labels in field errors.
fn go_map(m: Option<&BTreeMap<String, String>>) -> FieldValue {
    match m {
        None => FieldValue::Raw("map[string]string(nil)".into()),
        Some(m) => FieldValue::Raw(format!(
            "map[string]string{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k:?}:{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Go's `%#v` of a `*metav1.LabelSelector` (for the immutable-selector error).
fn go_selector(s: Option<&LabelSelector>) -> FieldValue {
    match s {
        None => FieldValue::Raw("(*v1.LabelSelector)(nil)".into()),
        Some(s) => {
            let FieldValue::Raw(labels) = go_map(s.match_labels.as_ref()) else {
                unreachable!("go_map is raw")
            };
            FieldValue::Raw(format!(
                "&v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}"
            ))
        }
    }
}

/// Defaults of a workload's pod template (`SetDefaults_PodSpec` through the template).
pub fn default_template(t: &mut Option<PodTemplateSpec>) {
    if let Some(spec) = t.as_mut().and_then(|t| t.spec.as_mut()) {
        default_pod_spec(spec);
    }
}

/// `replicas`, `selector` and `template` of a Deployment or ReplicaSet spec (`kind` as in
/// upstream's "empty selector is invalid for deployment").
pub fn validate_workload(
    kind: &str,
    replicas: Option<i32>,
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
) -> ErrorList {
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    if let Some(r) = replicas.filter(|&r| r < 0) {
        errs.push(FieldError::invalid(
            &sp.child("replicas"),
            r,
            "must be greater than or equal to 0",
        ));
    }
    let mut parsed = None;
    match selector {
        None => errs.push(FieldError::required(&sp.child("selector"), "")),
        Some(sel) => match Selector::from_api(sel) {
            Ok(s) if s.is_empty() => errs.push(FieldError::invalid(
                &sp.child("selector"),
                go_selector(Some(sel)),
                format!("empty selector is invalid for {kind}"),
            )),
            Ok(s) => parsed = Some(s),
            Err(_) => errs.push(FieldError::invalid(
                &sp.child("selector"),
                go_selector(Some(sel)),
                "invalid label selector",
            )),
        },
    }
    let tp = sp.child("template");
    let Some(template) = template else {
        errs.push(FieldError::required(&tp, ""));
        return errs;
    };
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    if let Some(s) = &parsed
        && !s.matches(labels.unwrap_or(&BTreeMap::new()))
    {
        errs.push(FieldError::invalid(
            &tp.child("metadata").child("labels"),
            go_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
    match &template.spec {
        None => errs.push(FieldError::required(&tp.child("spec"), "")),
        Some(spec) => {
            errs.extend(validate_pod_spec(&tp.child("spec"), spec));
            if let Some(rp) = spec.restart_policy.as_deref()
                && rp != "Always"
            {
                errs.push(FieldError::not_supported(
                    &tp.child("spec").child("restartPolicy"),
                    rp,
                    &["Always"],
                ));
            }
            if spec.active_deadline_seconds.is_some() {
                errs.push(FieldError::forbidden(
                    &tp.child("spec").child("activeDeadlineSeconds"),
                    "activeDeadlineSeconds in ReplicaSet is not Supported",
                ));
            }
        }
    }
    errs
}

/// `spec.selector` is immutable in `apps/v1`.
pub fn validate_selector_unchanged(
    new: Option<&LabelSelector>,
    old: Option<&LabelSelector>,
) -> ErrorList {
    if new == old {
        return Vec::new();
    }
    vec![FieldError::invalid(
        &Path::new("spec").child("selector"),
        go_selector(new),
        "field is immutable",
    )]
}

/// Names and images of the template's containers (`kubectl get -o wide`).
pub fn containers_and_images(t: Option<&PodTemplateSpec>) -> (String, String) {
    let cs = t
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    (
        cs.iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join(","),
        cs.iter()
            .map(|c| c.image.clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The selector as `kubectl get -o wide` prints it.
pub fn selector_cell(s: Option<&LabelSelector>) -> String {
    s.map_or_else(|| "<none>".into(), Selector::format_api)
}

/// The `autoscaling/v1` Scale of a Deployment or ReplicaSet JSON (the `scale` subresource).
pub fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = serde_json::from_value::<LabelSelector>(obj["spec"]["selector"].clone())
        .ok()
        .and_then(|s| Selector::from_api(&s).ok())
        .map(|s| {
            s.0.iter()
                .map(|r| match r {
                    dualstack_apimachinery::selector::LabelRequirement::In(k, v)
                        if v.len() == 1 =>
                    {
                        format!("{k}={}", v[0])
                    }
                    dualstack_apimachinery::selector::LabelRequirement::In(k, v) => {
                        format!("{k} in ({})", v.join(","))
                    }
                    dualstack_apimachinery::selector::LabelRequirement::NotIn(k, v) => {
                        format!("{k} notin ({})", v.join(","))
                    }
                    dualstack_apimachinery::selector::LabelRequirement::Exists(k) => k.clone(),
                    dualstack_apimachinery::selector::LabelRequirement::DoesNotExist(k) => {
                        format!("!{k}")
                    }
                    _ => String::new(),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let mut m = json!({
        "name": meta["name"],
        "namespace": meta["namespace"],
        "uid": meta["uid"],
        "resourceVersion": meta["resourceVersion"],
        "creationTimestamp": meta["creationTimestamp"],
    });
    if let Some(o) = m.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": m,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// The ReplicaSet strategy.
#[derive(Debug, Default)]
pub struct ReplicaSetStrategy;

impl Strategy for ReplicaSetStrategy {
    type Obj = ReplicaSet;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn upgrade_value(
        &self,
        _ctx: &mut Ctx,
        value: &mut Value,
    ) -> Result<(), dualstack_apimachinery::status::ApiError> {
        super::deployment::require_fields("ReplicaSet", value, &["selector"])
    }

    fn defaults(&self, rs: &mut ReplicaSet) {
        let spec = rs.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        spec.min_ready_seconds.get_or_insert(0);
        default_template(&mut spec.template);
    }

    fn prepare_for_create(&self, rs: &mut ReplicaSet) {
        rs.status = Some(ReplicaSetStatus::default());
        rs.metadata.generation = Some(1);
    }

    fn prepare_for_update(&self, new: &mut ReplicaSet, old: &ReplicaSet) {
        let g = old.metadata.generation.unwrap_or(0);
        new.metadata.generation = Some(if new.spec != old.spec { g + 1 } else { g });
    }

    fn validate(&self, _ctx: &Ctx, rs: &ReplicaSet) -> ErrorList {
        let spec = rs.spec.clone().unwrap_or_default();
        validate_workload(
            "deployment",
            spec.replicas,
            Some(&spec.selector),
            spec.template.as_ref(),
        )
    }

    fn validate_update(&self, ctx: &Ctx, new: &ReplicaSet, old: &ReplicaSet) -> ErrorList {
        let mut errs = self.validate(ctx, new);
        errs.extend(validate_selector_unchanged(
            new.spec.as_ref().map(|s| &s.selector),
            old.spec.as_ref().map(|s| &s.selector),
        ));
        errs
    }

    fn fields(&self, rs: &ReplicaSet, out: &mut Vec<(&'static str, String)>) {
        out.push((
            "status.replicas",
            rs.status.as_ref().map_or(0, |s| s.replicas).to_string(),
        ));
    }

    fn row(&self, rs: &ReplicaSet, now: jiff::Timestamp) -> Vec<Value> {
        let spec = rs.spec.clone().unwrap_or_default();
        let status = rs.status.clone().unwrap_or_default();
        let (containers, images) = containers_and_images(spec.template.as_ref());
        vec![
            rs.metadata.name.clone().unwrap_or_default().into(),
            spec.replicas.unwrap_or(1).into(),
            status.replicas.into(),
            status.ready_replicas.unwrap_or(0).into(),
            age_cell(&rs.metadata, now),
            containers.into(),
            images.into(),
            selector_cell(Some(&spec.selector)).into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn rs(selector: &[(&str, &str)], labels: &[(&str, &str)]) -> ReplicaSet {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": map(selector)},
                "template": {"metadata": {"labels": map(labels)}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
            }
        }))
        .unwrap()
    }

    #[test]
    fn template_labels_must_match_the_selector_with_upstreams_message() {
        let s = ReplicaSetStrategy;
        let ctx = Ctx::system("test");
        let mut ok = rs(&[("app", "web")], &[("app", "web"), ("x", "y")]);
        s.defaults(&mut ok);
        assert!(s.validate(&ctx, &ok).is_empty());
        let mut bad = rs(&[("app", "web")], &[("app", "db")]);
        s.defaults(&mut bad);
        let errs = s.validate(&ctx, &bad);
        assert_eq!(
            format!("{}: {}", errs[0].field.as_str(), errs[0].body()),
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"
        );
        let mut empty = rs(&[], &[("app", "web")]);
        s.defaults(&mut empty);
        assert!(
            s.validate(&ctx, &empty)[0]
                .body()
                .contains("empty selector is invalid")
        );
    }

    #[test]
    fn generation_bumps_only_on_spec_changes() {
        let s = ReplicaSetStrategy;
        let mut old = rs(&[("app", "web")], &[("app", "web")]);
        old.metadata = ObjectMeta {
            generation: Some(3),
            ..old.metadata
        };
        let mut same = old.clone();
        same.metadata.labels = Some(BTreeMap::from([("a".into(), "b".into())]));
        s.prepare_for_update(&mut same, &old);
        assert_eq!(same.metadata.generation, Some(3));
        let mut scaled = old.clone();
        scaled.spec.as_mut().unwrap().replicas = Some(5);
        s.prepare_for_update(&mut scaled, &old);
        assert_eq!(scaled.metadata.generation, Some(4));
    }

    #[test]
    fn scale_view_carries_replicas_and_the_selector_string() {
        let v = json!({"metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2}});
        let s = scale_of(&v);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web");
        assert_eq!(s["metadata"]["resourceVersion"], "7");
    }
}
