//! Deployments (`apps/v1`): upstream's defaults (1 replica, RollingUpdate 25%/25%, 10 old
//! ReplicaSets kept, 600 s progress deadline), validation, generation bumps and `kubectl get
//! deploy` printing. The rollout itself is `dualstack-controllers`' `deployment-controller`.

use dualstack_apimachinery::field::{ErrorList, FieldError, Path};
use dualstack_apimachinery::status::{ApiError, GroupKind};
use dualstack_apimachinery::validation::NameRule;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStatus, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::replicaset::{
    containers_and_images, default_template, selector_cell, validate_selector_unchanged,
    validate_workload,
};
use crate::resource::{Column, Ctx, ResourceDef, Strategy, age_cell};

static DEF: ResourceDef = ResourceDef {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    namespaced: true,
    short_names: &["deploy"],
    categories: &["all"],
    subresources: &["scale", "status"],
    name_rule: NameRule::Subdomain,
    field_labels: &[],
    return_deleted_object: false,
    allow_create_on_update: false,
    columns: &[
        Column::name(),
        Column::new("Ready", "Number of the pod with ready state"),
        Column::new(
            "Up-to-date",
            "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
        ),
        Column::new(
            "Available",
            "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
        ),
        Column::age(),
        Column::wide("Containers", "Names of each container in the template."),
        Column::wide(
            "Images",
            "Images referenced by each container in the template.",
        ),
        Column::wide(
            "Selector",
            "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.",
        ),
    ],
};

/// `spec.selector` (and for Deployments `spec.template`) must be present: k8s-openapi's types
/// cannot hold their absence, so it is checked on the raw body with upstream's text.
pub fn require_fields(
    kind: &'static str,
    value: &mut Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    let name = value["metadata"]["name"].as_str().unwrap_or("").to_string();
    if !value["spec"].is_object() {
        value["spec"] = Value::Object(Default::default());
    }
    let errors: ErrorList = fields
        .iter()
        .filter(|f| value["spec"][**f].is_null())
        .map(|f| FieldError::required(&Path::new("spec").child(f), ""))
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        kind: GroupKind::new("apps", kind),
        name,
        errors,
    })
}

/// `IsValidPercent`/`ValidatePositiveIntOrPercent` of a rolling update bound; its value as
/// (percent?, number).
fn int_or_percent(path: &Path, v: &IntOrString, errs: &mut ErrorList) -> (bool, i64) {
    match v {
        IntOrString::Int(i) => {
            if *i < 0 {
                errs.push(FieldError::invalid(
                    path,
                    i64::from(*i),
                    "must be greater than or equal to 0",
                ));
            }
            (false, i64::from(*i))
        }
        IntOrString::String(s) => {
            let n = s
                .strip_suffix('%')
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|n| *n >= 0);
            match n {
                None => {
                    errs.push(FieldError::invalid(
                        path,
                        s.as_str(),
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    ));
                    (true, 0)
                }
                Some(n) => {
                    if n > 100 {
                        errs.push(FieldError::invalid(
                            path,
                            s.as_str(),
                            "must not be greater than 100%",
                        ));
                    }
                    (true, n)
                }
            }
        }
    }
}

fn validate_strategy(s: &DeploymentStrategy) -> ErrorList {
    let sp = Path::new("spec").child("strategy");
    let mut errs = Vec::new();
    match s.type_.as_deref() {
        Some("Recreate") => {
            if s.rolling_update.is_some() {
                errs.push(FieldError::forbidden(
                    &sp.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        Some("RollingUpdate") => {
            let ru = s.rolling_update.clone().unwrap_or_default();
            let rp = sp.child("rollingUpdate");
            let zero = IntOrString::Int(0);
            let (_, unavail) = int_or_percent(
                &rp.child("maxUnavailable"),
                ru.max_unavailable.as_ref().unwrap_or(&zero),
                &mut errs,
            );
            let (_, surge) = int_or_percent(
                &rp.child("maxSurge"),
                ru.max_surge.as_ref().unwrap_or(&zero),
                &mut errs,
            );
            if unavail == 0 && surge == 0 {
                errs.push(FieldError::invalid(
                    &rp.child("maxUnavailable"),
                    0i64,
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
        Some(other) => errs.push(FieldError::not_supported(
            &sp.child("type"),
            other,
            &["Recreate", "RollingUpdate"],
        )),
        None => errs.push(FieldError::required(&sp.child("type"), "")),
    }
    errs
}

/// The Deployment strategy.
#[derive(Debug, Default)]
pub struct DeploymentStrategyImpl;

impl Strategy for DeploymentStrategyImpl {
    type Obj = Deployment;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn upgrade_value(&self, _ctx: &mut Ctx, value: &mut Value) -> Result<(), ApiError> {
        require_fields("Deployment", value, &["selector", "template"])
    }

    fn defaults(&self, d: &mut Deployment) {
        let spec = d.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        let strategy = spec.strategy.get_or_insert_with(Default::default);
        let ty = strategy
            .type_
            .get_or_insert_with(|| "RollingUpdate".into())
            .clone();
        if ty == "RollingUpdate" {
            let ru = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            ru.max_unavailable
                .get_or_insert_with(|| IntOrString::String("25%".into()));
            ru.max_surge
                .get_or_insert_with(|| IntOrString::String("25%".into()));
        }
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        let mut t = Some(std::mem::take(&mut spec.template));
        default_template(&mut t);
        spec.template = t.unwrap_or_default();
    }

    fn prepare_for_create(&self, d: &mut Deployment) {
        d.status = Some(DeploymentStatus::default());
        d.metadata.generation = Some(1);
    }

    fn prepare_for_update(&self, new: &mut Deployment, old: &Deployment) {
        // As upstream's deploymentStrategy: spec or annotation changes make a new generation.
        let g = old.metadata.generation.unwrap_or(0);
        let changed = new.spec != old.spec || new.metadata.annotations != old.metadata.annotations;
        new.metadata.generation = Some(if changed { g + 1 } else { g });
    }

    fn validate(&self, _ctx: &Ctx, d: &Deployment) -> ErrorList {
        let spec = d.spec.clone().unwrap_or_default();
        let mut errs = validate_workload(
            "deployment",
            spec.replicas,
            Some(&spec.selector),
            Some(&spec.template),
        );
        if let Some(s) = &spec.strategy {
            errs.extend(validate_strategy(s));
        }
        let sp = Path::new("spec");
        if let Some(r) = spec.revision_history_limit.filter(|&r| r < 0) {
            errs.push(FieldError::invalid(
                &sp.child("revisionHistoryLimit"),
                r,
                "must be greater than or equal to 0",
            ));
        }
        if let Some(m) = spec.min_ready_seconds.filter(|&m| m < 0) {
            errs.push(FieldError::invalid(
                &sp.child("minReadySeconds"),
                m,
                "must be greater than or equal to 0",
            ));
        }
        if let Some(p) = spec.progress_deadline_seconds {
            if p < 0 {
                errs.push(FieldError::invalid(
                    &sp.child("progressDeadlineSeconds"),
                    p,
                    "must be greater than or equal to 0",
                ));
            } else if p <= spec.min_ready_seconds.unwrap_or(0) {
                errs.push(FieldError::invalid(
                    &sp.child("progressDeadlineSeconds"),
                    p,
                    "must be greater than minReadySeconds",
                ));
            }
        }
        errs
    }

    fn validate_update(&self, ctx: &Ctx, new: &Deployment, old: &Deployment) -> ErrorList {
        let mut errs = self.validate(ctx, new);
        errs.extend(validate_selector_unchanged(
            new.spec.as_ref().map(|s| &s.selector),
            old.spec.as_ref().map(|s| &s.selector),
        ));
        errs
    }

    fn row(&self, d: &Deployment, now: jiff::Timestamp) -> Vec<Value> {
        let spec = d.spec.clone().unwrap_or_default();
        let status = d.status.clone().unwrap_or_default();
        let (containers, images) = containers_and_images(Some(&spec.template));
        vec![
            d.metadata.name.clone().unwrap_or_default().into(),
            format!(
                "{}/{}",
                status.ready_replicas.unwrap_or(0),
                spec.replicas.unwrap_or(1)
            )
            .into(),
            i64::from(status.updated_replicas.unwrap_or(0)).into(),
            i64::from(status.available_replicas.unwrap_or(0)).into(),
            age_cell(&d.metadata, now),
            containers.into(),
            images.into(),
            selector_cell(Some(&spec.selector)).into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decoded(v: Value) -> Result<Deployment, ApiError> {
        let mut v = v;
        let s = DeploymentStrategyImpl;
        s.upgrade_value(&mut Ctx::system("t"), &mut v)?;
        let mut d: Deployment = serde_json::from_value(v).unwrap();
        s.defaults(&mut d);
        Ok(d)
    }

    #[test]
    fn defaults_are_upstreams() {
        let d = decoded(json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "x", "image": "x"}]}}}}))
        .unwrap();
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.revision_history_limit, Some(10));
        assert_eq!(spec.progress_deadline_seconds, Some(600));
        let st = spec.strategy.unwrap();
        assert_eq!(st.type_.as_deref(), Some("RollingUpdate"));
        let ru = st.rolling_update.unwrap();
        assert_eq!(ru.max_surge, Some(IntOrString::String("25%".into())));
        assert_eq!(ru.max_unavailable, Some(IntOrString::String("25%".into())));
        let ps = spec.template.spec.unwrap();
        assert_eq!(ps.restart_policy.as_deref(), Some("Always"));
        assert_eq!(ps.service_account_name, None);
    }

    #[test]
    fn selector_is_required_and_zero_surge_and_unavailable_is_refused() {
        let e =
            decoded(json!({"metadata": {"name": "web"}, "spec": {"template": {}}})).unwrap_err();
        let ApiError::Invalid { errors, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            format!("{}: {}", errors[0].field.as_str(), errors[0].body()),
            "spec.selector: Required value"
        );
        let d = decoded(json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "x", "image": "x"}]}}}}))
        .unwrap();
        let errs = DeploymentStrategyImpl.validate(&Ctx::system("t"), &d);
        assert_eq!(
            format!("{}: {}", errs[0].field.as_str(), errs[0].body()),
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
        );
    }
}
