//! IPAddresses (`networking.k8s.io/v1`): one object per allocated ClusterIP, named by the
//! address, pointing at its Service. Created and deleted atomically with the Service.

use dualstack_apimachinery::field::{ErrorList, FieldError, Path};
use dualstack_apimachinery::validation::NameRule;
use k8s_openapi::api::networking::v1::IPAddress;

use crate::resource::{Column, Ctx, ResourceDef, Strategy, age_cell};

static DEF: ResourceDef = ResourceDef {
    group: "networking.k8s.io",
    version: "v1",
    kind: "IPAddress",
    plural: "ipaddresses",
    singular: "ipaddress",
    namespaced: false,
    short_names: &["ip"],
    categories: &[],
    subresources: &[],
    name_rule: NameRule::Any,
    field_labels: &[],
    return_deleted_object: false,
    allow_create_on_update: false,
    columns: &[
        Column::name(),
        Column::new(
            "ParentRef",
            "ParentRef references the resource that an IPAddress is attached to.",
        ),
        Column::age(),
    ],
};

/// The IPAddress strategy.
#[derive(Debug, Default)]
pub struct IpAddressStrategy;

/// Upstream's `ValidateIPAddressName`: a canonical IP.
pub fn validate_ip_address_name(name: &str) -> ErrorList {
    let path = Path::new("metadata").child("name");
    match name.parse::<std::net::IpAddr>() {
        Err(_) => vec![FieldError::invalid(
            &path,
            name,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        )],
        Ok(ip) if ip.to_string() != name => {
            vec![FieldError::invalid(
                &path,
                name,
                format!("must be in canonical form ({ip:?})"),
            )]
        }
        Ok(ip) if ip.is_unspecified() || ip.is_loopback() => {
            vec![FieldError::invalid(
                &path,
                name,
                "may not be an unspecified or loopback address",
            )]
        }
        Ok(_) => Vec::new(),
    }
}

impl Strategy for IpAddressStrategy {
    type Obj = IPAddress;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn validate(&self, _ctx: &Ctx, ip: &IPAddress) -> ErrorList {
        let mut errs = validate_ip_address_name(ip.metadata.name.as_deref().unwrap_or(""));
        match &ip.spec {
            None => errs.push(FieldError::required(&Path::new("spec"), "")),
            Some(spec) => {
                let p = Path::new("spec").child("parentRef");
                if spec.parent_ref.resource.is_empty() {
                    errs.push(FieldError::required(&p.child("resource"), ""));
                }
                if spec.parent_ref.name.is_empty() {
                    errs.push(FieldError::required(&p.child("name"), ""));
                }
            }
        }
        errs
    }

    fn validate_update(&self, ctx: &Ctx, new: &IPAddress, old: &IPAddress) -> ErrorList {
        let mut errs = self.validate(ctx, new);
        if new.spec != old.spec {
            errs.push(FieldError::invalid(
                &Path::new("spec").child("parentRef"),
                "",
                "field is immutable",
            ));
        }
        errs
    }

    fn row(&self, ip: &IPAddress, now: jiff::Timestamp) -> Vec<serde_json::Value> {
        let parent = ip.spec.as_ref().map(|s| {
            let r = &s.parent_ref;
            let res = match r.group.as_deref() {
                Some(g) if !g.is_empty() => format!("{}.{g}", r.resource),
                _ => r.resource.clone(),
            };
            match r.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => format!("{res}/{ns}/{}", r.name),
                _ => format!("{res}/{}", r.name),
            }
        });
        vec![
            ip.metadata.name.clone().unwrap_or_default().into(),
            parent.unwrap_or_default().into(),
            age_cell(&ip.metadata, now),
        ]
    }
}
