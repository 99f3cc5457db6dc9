//! IP and CIDR field validation with upstream's messages (`validation.IsValidIP`,
//! `IsValidCIDR`) and the family checks shared by Pods, Nodes and Services.

use std::net::IpAddr;

use dualstack_apimachinery::field::{ErrorList, FieldError, Path};
use dualstack_ipam::IpFamily;
use ipnet::IpNet;

/// Upstream's message for an invalid IP.
pub const INVALID_IP: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
/// Upstream's message for an invalid CIDR.
pub const INVALID_CIDR: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// Parses an API IP field (strict).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Parses an API CIDR field (strict; host bits allowed as in `netutils.ParseCIDRSloppy`).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse().ok()
}

/// `IsValidIP` at `path`.
pub fn validate_ip(path: &Path, value: &str) -> ErrorList {
    if parse_ip(value).is_some() {
        Vec::new()
    } else {
        vec![FieldError::invalid(path, value, INVALID_IP)]
    }
}

/// `IsValidCIDR` at `path`.
pub fn validate_cidr(path: &Path, value: &str) -> ErrorList {
    if parse_cidr(value).is_some() {
        Vec::new()
    } else {
        vec![FieldError::invalid(path, value, INVALID_CIDR)]
    }
}

/// True when the list holds at most one entry per family (and at most two).
pub fn is_dual_stack_or_single<T>(items: &[T], family: impl Fn(&T) -> IpFamily) -> bool {
    match items {
        [] | [_] => true,
        [a, b] => family(a) != family(b),
        _ => false,
    }
}
