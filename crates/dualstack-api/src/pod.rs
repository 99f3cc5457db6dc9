//! Pod dual-stack rules: `status.podIPs` / `status.hostIPs` (`validatePodIPs`,
//! `validateHostIPs`) and the v1 conversion of `podIP` / `podIPs`.

use dualstack_apimachinery::field::{ErrorList, FieldError, Path, Value};
use dualstack_ipam::IpFamily;
use k8s_openapi::api::core::v1::{HostIP, Pod, PodIP};

use crate::ip::{is_dual_stack_or_single, parse_ip, validate_ip};

/// v1 conversion: `podIP` wins when it disagrees with `podIPs[0]`; afterwards
/// `podIP == podIPs[0].ip` (likewise `hostIP` / `hostIPs`).
pub fn normalize_pod_ips(pod: &mut Pod) {
    let Some(st) = pod.status.as_mut() else {
        return;
    };
    let single = st.pod_ip.clone().filter(|s| !s.is_empty());
    let first = st
        .pod_ips
        .as_ref()
        .and_then(|p| p.first())
        .map(|p| p.ip.clone());
    match (single, first) {
        (Some(s), Some(f)) if f != s => st.pod_ips = Some(vec![PodIP { ip: s }]),
        (Some(s), None) => st.pod_ips = Some(vec![PodIP { ip: s }]),
        _ => {}
    }
    st.pod_ip = st
        .pod_ips
        .as_ref()
        .and_then(|p| p.first())
        .map(|p| p.ip.clone());
    let single = st.host_ip.clone().filter(|s| !s.is_empty());
    let first = st
        .host_ips
        .as_ref()
        .and_then(|p| p.first())
        .map(|p| p.ip.clone());
    if let (Some(s), None) = (single, first) {
        st.host_ips = Some(vec![HostIP { ip: s }]);
    }
}

fn validate_ip_list(path: &Path, ips: &[String]) -> ErrorList {
    let mut errs = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        errs.extend(validate_ip(&path.index(i), ip));
    }
    if !errs.is_empty() || ips.len() < 2 {
        return errs;
    }
    let parsed: Vec<_> = ips.iter().filter_map(|i| parse_ip(i)).collect();
    if !is_dual_stack_or_single(&parsed, IpFamily::of_addr) {
        errs.push(FieldError::invalid(
            path,
            Value::Raw(format!(
                "[]core.PodIP{{{}}}",
                ips.iter()
                    .map(|i| format!("core.PodIP{{IP:{i:?}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            "may specify no more than one IP for each IP family",
        ));
    }
    for (i, ip) in ips.iter().enumerate() {
        if ips[..i].contains(ip) {
            errs.push(FieldError::duplicate(&path.index(i), ip.as_str()));
        }
    }
    errs
}

/// Status validation of pod and host IPs.
pub fn validate_pod_status_ips(pod: &Pod) -> ErrorList {
    let Some(st) = &pod.status else {
        return Vec::new();
    };
    let path = Path::new("status");
    let pod_ips: Vec<String> = st.pod_ips.iter().flatten().map(|p| p.ip.clone()).collect();
    let mut errs = validate_ip_list(&path.child("podIPs"), &pod_ips);
    let host_ips: Vec<String> = st.host_ips.iter().flatten().map(|p| p.ip.clone()).collect();
    if let (Some(h), Some(first)) = (
        st.host_ip.as_deref().filter(|h| !h.is_empty()),
        host_ips.first(),
    ) && h != first
    {
        errs.push(FieldError::invalid(
            &path.child("hostIPs").index(0).child("ip"),
            first.as_str(),
            "must be equal to `hostIP`",
        ));
    }
    errs.extend(validate_ip_list(&path.child("hostIPs"), &host_ips));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    fn pod(ip: Option<&str>, ips: &[&str]) -> Pod {
        Pod {
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_string),
                pod_ips: (!ips.is_empty())
                    .then(|| ips.iter().map(|i| PodIP { ip: i.to_string() }).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_ip_equals_the_first_pod_ips_entry() {
        let mut p = pod(None, &["fd00::5", "10.244.0.5"]);
        normalize_pod_ips(&mut p);
        assert_eq!(
            p.status.as_ref().unwrap().pod_ip.as_deref(),
            Some("fd00::5")
        );
        let mut p = pod(Some("10.244.0.9"), &["10.244.0.5", "fd00::5"]);
        normalize_pod_ips(&mut p);
        assert_eq!(
            p.status.as_ref().unwrap().pod_ips.as_ref().unwrap().len(),
            1
        );
    }

    #[test]
    fn pod_ips_are_one_per_family() {
        assert!(validate_pod_status_ips(&pod(None, &["10.244.0.5", "fd00::5"])).is_empty());
        let errs = validate_pod_status_ips(&pod(None, &["10.244.0.5", "10.244.0.6"]));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field.as_str(), "status.podIPs");
        assert_eq!(
            errs[0].detail,
            "may specify no more than one IP for each IP family"
        );
        let errs = validate_pod_status_ips(&pod(None, &["x"]));
        assert_eq!(
            errs[0].to_string(),
            r#"status.podIPs[0]: Invalid value: "x": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"#
        );
    }
}
