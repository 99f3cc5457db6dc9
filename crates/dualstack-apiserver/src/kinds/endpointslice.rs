//! EndpointSlices (`discovery.k8s.io/v1`): one address family per slice (`addressType`).

use dualstack_api::ip::{INVALID_IP, parse_ip};
use dualstack_apimachinery::field::{ErrorList, FieldError, Path};
use dualstack_apimachinery::validation::{NameRule, is_dns1123_label};
use dualstack_ipam::IpFamily;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::kinds::endpoints::format_endpoints;
use crate::resource::{Column, Ctx, ResourceDef, Strategy, age_cell};

static DEF: ResourceDef = ResourceDef {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    name_rule: NameRule::Subdomain,
    field_labels: &["addressType"],
    return_deleted_object: false,
    allow_create_on_update: false,
    columns: &[
        Column::name(),
        Column::new("AddressType", "The type of addresses in this slice"),
        Column::new("Ports", "The ports of the endpoints"),
        Column::new("Endpoints", "The addresses of the endpoints"),
        Column::age(),
    ],
};

/// Most endpoints in one slice (validation limit; the controller uses 100).
pub const MAX_ENDPOINTS: usize = 1000;
/// Most ports in one slice.
pub const MAX_PORTS: usize = 100;

/// The EndpointSlice strategy.
#[derive(Debug, Default)]
pub struct EndpointSliceStrategy;

impl Strategy for EndpointSliceStrategy {
    type Obj = EndpointSlice;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn defaults(&self, s: &mut EndpointSlice) {
        for p in s.ports.iter_mut().flatten() {
            if p.protocol.is_none() {
                p.protocol = Some("TCP".into());
            }
        }
    }

    fn validate(&self, _ctx: &Ctx, s: &EndpointSlice) -> ErrorList {
        let mut errs = Vec::new();
        let at = s.address_type.as_str();
        let family = match at {
            "IPv4" => Some(IpFamily::IPv4),
            "IPv6" => Some(IpFamily::IPv6),
            "FQDN" => None,
            "" => {
                errs.push(FieldError::required(&Path::new("addressType"), ""));
                None
            }
            other => {
                errs.push(FieldError::not_supported(
                    &Path::new("addressType"),
                    other,
                    &["IPv4", "IPv6", "FQDN"],
                ));
                None
            }
        };
        if s.endpoints.len() > MAX_ENDPOINTS {
            errs.push(FieldError::too_many(
                &Path::new("endpoints"),
                s.endpoints.len(),
                MAX_ENDPOINTS,
            ));
        }
        for (i, ep) in s.endpoints.iter().enumerate() {
            let path = Path::new("endpoints").index(i).child("addresses");
            if ep.addresses.is_empty() {
                errs.push(FieldError::required(
                    &path,
                    "must contain at least 1 address",
                ));
            }
            if ep.addresses.len() > 100 {
                errs.push(FieldError::too_many(&path, ep.addresses.len(), 100));
            }
            for (j, a) in ep.addresses.iter().enumerate() {
                match (family, parse_ip(a)) {
                    (Some(_), None) => {
                        errs.push(FieldError::invalid(&path.index(j), a.as_str(), INVALID_IP))
                    }
                    (Some(f), Some(ip)) if IpFamily::of_addr(&ip) != f => {
                        errs.push(FieldError::invalid(
                            &path.index(j),
                            a.as_str(),
                            format!("must be an {} address", f.as_str()),
                        ))
                    }
                    _ => {}
                }
            }
        }
        let ports = s.ports.as_deref().unwrap_or_default();
        if ports.len() > MAX_PORTS {
            errs.push(FieldError::too_many(
                &Path::new("ports"),
                ports.len(),
                MAX_PORTS,
            ));
        }
        for (i, p) in ports.iter().enumerate() {
            let path = Path::new("ports").index(i);
            if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
                for m in is_dns1123_label(n) {
                    errs.push(FieldError::invalid(&path.child("name"), n, m));
                }
            }
            if let Some(port) = p.port.filter(|p| !(1..=65535).contains(p)) {
                errs.push(FieldError::invalid(
                    &path.child("port"),
                    port,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        errs
    }

    fn validate_update(&self, ctx: &Ctx, new: &EndpointSlice, old: &EndpointSlice) -> ErrorList {
        let mut errs = self.validate(ctx, new);
        if new.address_type != old.address_type {
            errs.push(FieldError::invalid(
                &Path::new("addressType"),
                new.address_type.as_str(),
                "field is immutable",
            ));
        }
        errs
    }

    fn fields(&self, s: &EndpointSlice, out: &mut Vec<(&'static str, String)>) {
        out.push(("addressType", s.address_type.clone()));
    }

    fn row(&self, s: &EndpointSlice, now: jiff::Timestamp) -> Vec<serde_json::Value> {
        let ports: Vec<String> = s
            .ports
            .iter()
            .flatten()
            .map(|p| p.port.map_or("<unset>".to_string(), |p| p.to_string()))
            .collect();
        let ports = if ports.is_empty() {
            "<unset>".to_string()
        } else {
            ports.join(",")
        };
        let addrs: Vec<String> = s
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        let eps = if addrs.is_empty() {
            "<unset>".to_string()
        } else {
            format_endpoints(&addrs)
        };
        vec![
            s.metadata.name.clone().unwrap_or_default().into(),
            s.address_type.clone().into(),
            ports.into(),
            eps.into(),
            age_cell(&s.metadata, now),
        ]
    }
}
