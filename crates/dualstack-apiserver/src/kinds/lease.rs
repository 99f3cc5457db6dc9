//! Leases (`coordination.k8s.io/v1`): leader election and node heartbeats.

use dualstack_apimachinery::field::{ErrorList, FieldError, Path};
use dualstack_apimachinery::status::ApiError;
use dualstack_apimachinery::validation::NameRule;
use k8s_openapi::api::coordination::v1::Lease;

use crate::resource::{Column, Ctx, ResourceDef, Strategy, age_cell};

static DEF: ResourceDef = ResourceDef {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    name_rule: NameRule::Subdomain,
    field_labels: &[],
    return_deleted_object: false,
    allow_create_on_update: true,
    columns: &[
        Column::name(),
        Column::new("Holder", "The holder of the lease"),
        Column::age(),
    ],
};

/// The Lease strategy.
#[derive(Debug, Default)]
pub struct LeaseStrategy;

impl Strategy for LeaseStrategy {
    type Obj = Lease;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn admit(&self, ctx: &Ctx, l: &Lease, _old: Option<&Lease>) -> Result<(), ApiError> {
        let name = l.metadata.name.as_deref().unwrap_or("");
        crate::auth::admit_lease(&ctx.user, l.metadata.namespace.as_deref(), name).map_err(|why| {
            ApiError::Forbidden(format!(
                "leases.coordination.k8s.io {name:?} is forbidden: {why}"
            ))
        })
    }

    fn validate(&self, _ctx: &Ctx, l: &Lease) -> ErrorList {
        let mut errs = Vec::new();
        if let Some(spec) = &l.spec {
            if let Some(d) = spec.lease_duration_seconds.filter(|&d| d <= 0) {
                errs.push(FieldError::invalid(
                    &Path::new("spec").child("leaseDurationSeconds"),
                    d,
                    "must be greater than 0",
                ));
            }
            if let Some(t) = spec.lease_transitions.filter(|&t| t < 0) {
                errs.push(FieldError::invalid(
                    &Path::new("spec").child("leaseTransitions"),
                    t,
                    "must be greater than or equal to 0",
                ));
            }
        }
        errs
    }

    fn row(&self, l: &Lease, now: jiff::Timestamp) -> Vec<serde_json::Value> {
        let holder = l
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        vec![
            l.metadata.name.clone().unwrap_or_default().into(),
            holder.into(),
            age_cell(&l.metadata, now),
        ]
    }
}
