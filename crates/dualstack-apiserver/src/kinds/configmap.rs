//! ConfigMaps: key names and the 1 MiB size limit.

use dualstack_apimachinery::field::{ErrorList, FieldError, Path};
use dualstack_apimachinery::validation::NameRule;
use k8s_openapi::api::core::v1::ConfigMap;

use crate::resource::{Column, Ctx, ResourceDef, Strategy, age_cell};

static DEF: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    namespaced: true,
    short_names: &["cm"],
    categories: &[],
    subresources: &[],
    name_rule: NameRule::Subdomain,
    field_labels: &[],
    return_deleted_object: false,
    allow_create_on_update: false,
    columns: &[
        Column::name(),
        Column::int("Data", "Number of data entries"),
        Column::age(),
    ],
};

/// Largest total size of a ConfigMap's data.
pub const MAX_SIZE: usize = 1024 * 1024;

/// `IsConfigMapKey`.
pub fn config_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        errs.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_string());
    }
    if key == "." {
        errs.push("must not be '.'".to_string());
    } else if key == ".." {
        errs.push("must not be '..'".to_string());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// The ConfigMap strategy.
#[derive(Debug, Default)]
pub struct ConfigMapStrategy;

impl Strategy for ConfigMapStrategy {
    type Obj = ConfigMap;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn validate(&self, _ctx: &Ctx, cm: &ConfigMap) -> ErrorList {
        let mut errs = Vec::new();
        let mut total = 0;
        let data_keys = cm.data.iter().flatten().map(|(k, v)| (k, v.len(), "data"));
        let bin_keys = cm
            .binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k, v.0.len(), "binaryData"));
        let mut seen = std::collections::BTreeSet::new();
        for (k, len, field) in data_keys.chain(bin_keys) {
            for m in config_key_errors(k) {
                errs.push(FieldError::invalid(&Path::new(field).key(k), k.as_str(), m));
            }
            if !seen.insert(k.clone()) {
                errs.push(FieldError::invalid(
                    &Path::new("data").key(k),
                    k.as_str(),
                    "duplicate of key present in binaryData",
                ));
            }
            total += len;
        }
        if total > MAX_SIZE {
            errs.push(FieldError::too_long(&Path::new(""), MAX_SIZE));
        }
        errs
    }

    fn row(&self, cm: &ConfigMap, now: jiff::Timestamp) -> Vec<serde_json::Value> {
        let n = cm.data.as_ref().map_or(0, |d| d.len())
            + cm.binary_data.as_ref().map_or(0, |d| d.len());
        vec![
            cm.metadata.name.clone().unwrap_or_default().into(),
            n.into(),
            age_cell(&cm.metadata, now),
        ]
    }
}
