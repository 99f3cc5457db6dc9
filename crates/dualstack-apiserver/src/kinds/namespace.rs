//! Namespaces: `spec.finalizers = ["kubernetes"]`, `status.phase`, the
//! `kubernetes.io/metadata.name` label; deletion marks them Terminating and the namespace
//! controller (`crate::controllers::namespace`) empties and finalizes them.

use dualstack_apimachinery::field::{ErrorList, FieldError, Path};
use dualstack_apimachinery::status::ApiError;
use dualstack_apimachinery::validation::NameRule;
use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec, NamespaceStatus};

use crate::resource::{Column, Ctx, ResourceDef, Strategy, age_cell};

/// Label every namespace carries with its own name.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The finalizer the namespace controller removes.
pub const FINALIZER: &str = "kubernetes";
/// Namespaces upstream's NamespaceLifecycle admission plugin refuses to delete.
pub const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

static DEF: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    namespaced: false,
    short_names: &["ns"],
    categories: &[],
    subresources: &["status", "finalize"],
    name_rule: NameRule::Label,
    field_labels: &["status.phase"],
    return_deleted_object: true,
    allow_create_on_update: false,
    columns: &[
        Column::name(),
        Column::new("Status", "The status of the namespace"),
        Column::age(),
    ],
};

/// The Namespace strategy.
#[derive(Debug, Default)]
pub struct NamespaceStrategy;

fn phase(ns: &Namespace) -> String {
    ns.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Active".into())
}

impl Strategy for NamespaceStrategy {
    type Obj = Namespace;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn defaults(&self, ns: &mut Namespace) {
        if let Some(name) = ns.metadata.name.clone() {
            ns.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(NAME_LABEL.into(), name);
        }
    }

    fn prepare_for_create(&self, ns: &mut Namespace) {
        ns.status = Some(NamespaceStatus {
            phase: Some("Active".into()),
            conditions: None,
        });
        let spec = ns.spec.get_or_insert_with(NamespaceSpec::default);
        let fins = spec.finalizers.get_or_insert_with(Vec::new);
        if !fins.iter().any(|f| f == FINALIZER) {
            fins.push(FINALIZER.into());
        }
        self.defaults(ns);
    }

    fn prepare_for_update(&self, new: &mut Namespace, old: &Namespace) {
        // spec.finalizers only change through /finalize.
        new.spec = old.spec.clone();
        self.defaults(new);
    }

    fn validate(&self, _ctx: &Ctx, ns: &Namespace) -> ErrorList {
        let mut errs = Vec::new();
        for (i, f) in ns
            .spec
            .iter()
            .flat_map(|s| s.finalizers.iter().flatten())
            .enumerate()
        {
            for m in dualstack_apimachinery::validation::is_qualified_name(f) {
                errs.push(FieldError::invalid(
                    &Path::new("spec").child("finalizers").index(i),
                    f.as_str(),
                    m,
                ));
            }
        }
        errs
    }

    fn admit_delete(&self, _ctx: &Ctx, ns: &Namespace) -> Result<(), ApiError> {
        let name = ns.metadata.name.as_deref().unwrap_or("");
        // One already terminating (stored by an older server) may finish.
        if IMMORTAL.contains(&name) && ns.metadata.deletion_timestamp.is_none() {
            return Err(ApiError::Forbidden(format!(
                "namespaces {name:?} is forbidden: this namespace may not be deleted"
            )));
        }
        Ok(())
    }

    fn on_delete_marked(&self, ns: &mut Namespace) {
        ns.status.get_or_insert_with(NamespaceStatus::default).phase = Some("Terminating".into());
    }

    fn fields(&self, ns: &Namespace, out: &mut Vec<(&'static str, String)>) {
        out.push(("status.phase", phase(ns)));
    }

    fn row(&self, ns: &Namespace, now: jiff::Timestamp) -> Vec<serde_json::Value> {
        vec![
            ns.metadata.name.clone().unwrap_or_default().into(),
            phase(ns).into(),
            age_cell(&ns.metadata, now),
        ]
    }
}
