//! Endpoints (core/v1): the legacy, single-family endpoint list of a Service.

use dualstack_api::ip::validate_ip;
use dualstack_apimachinery::field::{ErrorList, FieldError, Path};
use dualstack_apimachinery::validation::NameRule;
use k8s_openapi::api::core::v1::Endpoints;

use crate::resource::{Column, Ctx, ResourceDef, Strategy, age_cell};

static DEF: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    namespaced: true,
    short_names: &["ep"],
    categories: &[],
    subresources: &[],
    name_rule: NameRule::Subdomain,
    field_labels: &[],
    return_deleted_object: false,
    allow_create_on_update: true,
    columns: &[
        Column::name(),
        Column::new("Endpoints", "Endpoints of the service"),
        Column::age(),
    ],
};

/// The Endpoints strategy.
#[derive(Debug, Default)]
pub struct EndpointsStrategy;

/// `formatEndpoints`: `ip:port,...` with at most 3 shown.
pub fn format_endpoints(addrs: &[String]) -> String {
    if addrs.is_empty() {
        return "<none>".into();
    }
    let mut s = addrs.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if addrs.len() > 3 {
        s.push_str(&format!(" + {} more...", addrs.len() - 3));
    }
    s
}

fn host_port(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

impl Strategy for EndpointsStrategy {
    type Obj = Endpoints;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn defaults(&self, ep: &mut Endpoints) {
        for subset in ep.subsets.iter_mut().flatten() {
            for p in subset.ports.iter_mut().flatten() {
                p.protocol.get_or_insert_with(|| "TCP".into());
            }
        }
    }

    fn validate(&self, _ctx: &Ctx, ep: &Endpoints) -> ErrorList {
        let mut errs = Vec::new();
        for (i, subset) in ep.subsets.iter().flatten().enumerate() {
            let path = Path::new("subsets").index(i);
            for (j, a) in subset.addresses.iter().flatten().enumerate() {
                errs.extend(validate_ip(
                    &path.child("addresses").index(j).child("ip"),
                    &a.ip,
                ));
            }
            for (j, a) in subset.not_ready_addresses.iter().flatten().enumerate() {
                errs.extend(validate_ip(
                    &path.child("notReadyAddresses").index(j).child("ip"),
                    &a.ip,
                ));
            }
            for (j, p) in subset.ports.iter().flatten().enumerate() {
                if !(1..=65535).contains(&p.port) {
                    errs.push(FieldError::invalid(
                        &path.child("ports").index(j).child("port"),
                        p.port,
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        errs
    }

    fn row(&self, ep: &Endpoints, now: jiff::Timestamp) -> Vec<serde_json::Value> {
        let mut list = Vec::new();
        for s in ep.subsets.iter().flatten() {
            let ports: Vec<i32> = s.ports.iter().flatten().map(|p| p.port).collect();
            for a in s.addresses.iter().flatten() {
                if ports.is_empty() {
                    list.push(a.ip.clone());
                }
                for &p in &ports {
                    list.push(host_port(&a.ip, p));
                }
            }
        }
        vec![
            ep.metadata.name.clone().unwrap_or_default().into(),
            format_endpoints(&list).into(),
            age_cell(&ep.metadata, now),
        ]
    }
}

#[cfg(test)]
mod deprecation_tests {
    use super::*;

    #[test]
    fn v1_endpoints_are_deprecated_from_1_33_on_with_upstreams_warning() {
        let warning = "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice";
        for (major, minor, want) in [
            (1, 32, None),
            (1, 33, Some(warning)),
            (1, 34, Some(warning)),
        ] {
            assert_eq!(
                DEF.deprecation_warning(major, minor).as_deref(),
                want,
                "1.{minor}"
            );
        }
        // The server reports 1.33, so it warns.
        let (major, minor) = crate::discovery::major_minor();
        assert_eq!(
            DEF.deprecation_warning(major, minor).as_deref(),
            Some(warning)
        );
    }
}
