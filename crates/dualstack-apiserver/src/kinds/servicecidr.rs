//! ServiceCIDRs (`networking.k8s.io/v1`): the Service ranges. The server keeps the one named
//! `kubernetes` equal to `--service-cluster-ip-range`.

use dualstack_api::ip::{is_dual_stack_or_single, parse_cidr, validate_cidr};
use dualstack_apimachinery::field::{ErrorList, FieldError, Path, Value};
use dualstack_apimachinery::validation::NameRule;
use dualstack_ipam::IpFamily;
use k8s_openapi::api::networking::v1::ServiceCIDR;

use crate::resource::{Column, Ctx, ResourceDef, Strategy, age_cell};

/// Name of the ServiceCIDR built from the flags.
pub const DEFAULT_NAME: &str = "kubernetes";

static DEF: ResourceDef = ResourceDef {
    group: "networking.k8s.io",
    version: "v1",
    kind: "ServiceCIDR",
    plural: "servicecidrs",
    singular: "servicecidr",
    namespaced: false,
    short_names: &[],
    categories: &[],
    subresources: &["status"],
    name_rule: NameRule::Subdomain,
    field_labels: &[],
    return_deleted_object: false,
    allow_create_on_update: false,
    columns: &[
        Column::name(),
        Column::new("CIDRs", "cidrs indicates the IPv4/IPv6 ranges"),
        Column::age(),
    ],
};

/// The ServiceCIDR strategy.
#[derive(Debug, Default)]
pub struct ServiceCidrStrategy;

fn cidrs(s: &ServiceCIDR) -> Vec<String> {
    s.spec
        .as_ref()
        .and_then(|s| s.cidrs.clone())
        .unwrap_or_default()
}

impl Strategy for ServiceCidrStrategy {
    type Obj = ServiceCIDR;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn prepare_for_create(&self, s: &mut ServiceCIDR) {
        s.status = None;
    }

    fn validate(&self, _ctx: &Ctx, s: &ServiceCIDR) -> ErrorList {
        let path = Path::new("spec").child("cidrs");
        let list = cidrs(s);
        let mut errs = Vec::new();
        if list.is_empty() {
            errs.push(FieldError::required(&path, ""));
        }
        if list.len() > 2 {
            errs.push(FieldError::too_many(&path, list.len(), 2));
        }
        for (i, c) in list.iter().enumerate() {
            errs.extend(validate_cidr(&path.index(i), c));
            if let Some(net) = parse_cidr(c) {
                if net.trunc() != net {
                    errs.push(FieldError::invalid(
                        &path.index(i),
                        c.as_str(),
                        format!("must be a valid CIDR value, (e.g. {})", net.trunc()),
                    ));
                }
                if IpFamily::of_net(&net) == IpFamily::IPv6 && net.prefix_len() < 64 {
                    errs.push(FieldError::invalid(
                        &path.index(i),
                        c.as_str(),
                        format!(
                            "shortest allowed prefix length for service CIDR is 64, got {}",
                            net.prefix_len()
                        ),
                    ));
                }
            }
        }
        let nets: Vec<_> = list.iter().filter_map(|c| parse_cidr(c)).collect();
        if nets.len() == 2 && !is_dual_stack_or_single(&nets, IpFamily::of_net) {
            errs.push(FieldError::invalid(&path, Value::StrList("string", list.clone()), "may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64"));
        }
        errs
    }

    fn validate_update(&self, ctx: &Ctx, new: &ServiceCIDR, old: &ServiceCIDR) -> ErrorList {
        let mut errs = self.validate(ctx, new);
        let (n, o) = (cidrs(new), cidrs(old));
        // Upstream allows only adding a second family to a single-stack ServiceCIDR.
        let upgrade = o.len() == 1 && n.len() == 2 && n[0] == o[0];
        if n != o && !upgrade {
            errs.push(FieldError::invalid(
                &Path::new("spec").child("cidrs"),
                Value::StrList("string", n),
                "field is immutable",
            ));
        }
        errs
    }

    fn row(&self, s: &ServiceCIDR, now: jiff::Timestamp) -> Vec<serde_json::Value> {
        vec![
            s.metadata.name.clone().unwrap_or_default().into(),
            cidrs(s).join(",").into(),
            age_cell(&s.metadata, now),
        ]
    }
}
