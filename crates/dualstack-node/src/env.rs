//! A container's environment and command line as kubelet builds them: `env` in order, each
//! value `$(VAR)`-expanded against the variables defined before it; `valueFrom.fieldRef` from
//! the pod (downward API); then `command` and `args` expanded against the result.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar};
use thiserror::Error;

/// Why an environment cannot be built (kubelet: `CreateContainerConfigError`).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvError {
    /// A `fieldRef` path the downward API does not support.
    #[error("unsupported fieldPath: {0}")]
    UnsupportedField(String),
    /// A source this agent does not serve (configMapKeyRef, secretKeyRef, resourceFieldRef, envFrom).
    #[error("env {name}: {source_kind} is not supported by this node agent")]
    UnsupportedSource {
        /// The variable.
        name: String,
        /// The source kind.
        source_kind: &'static str,
    },
}

/// The pod fields the downward API exposes.
#[derive(Debug, Clone, Default)]
pub struct PodFields {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.nodeName`.
    pub node_name: String,
    /// `spec.serviceAccountName`.
    pub service_account_name: String,
    /// `status.podIPs`, in order.
    pub pod_ips: Vec<String>,
    /// `status.hostIPs`, in order.
    pub host_ips: Vec<String>,
}

fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?.strip_prefix("['")?;
    rest.strip_suffix("']")
}

impl PodFields {
    /// kubelet's `podFieldSelectorRuntimeValue` (plus the metadata fields `fieldpath` resolves).
    pub fn get(&self, path: &str) -> Result<String, EnvError> {
        let first = |v: &[String]| v.first().cloned().unwrap_or_default();
        Ok(match path {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.namespace.clone(),
            "metadata.uid" => self.uid.clone(),
            "spec.nodeName" => self.node_name.clone(),
            "spec.serviceAccountName" => self.service_account_name.clone(),
            "status.podIP" => first(&self.pod_ips),
            "status.podIPs" => self.pod_ips.join(","),
            "status.hostIP" => first(&self.host_ips),
            "status.hostIPs" => self.host_ips.join(","),
            p => {
                if let Some(k) = subscript(p, "metadata.labels") {
                    self.labels.get(k).cloned().unwrap_or_default()
                } else if let Some(k) = subscript(p, "metadata.annotations") {
                    self.annotations.get(k).cloned().unwrap_or_default()
                } else {
                    return Err(EnvError::UnsupportedField(p.to_string()));
                }
            }
        })
    }
}

/// kubelet's `expansion.Expand`: `$(VAR)` becomes the variable's value when `lookup` knows it
/// and stays as written otherwise; `$$` is an escaped `$`; any other `$` is kept.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    let mut plain = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            out.push_str(&input[plain..i]);
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                }
                b'(' => match input[i + 2..].find(')') {
                    Some(end) => {
                        let name = &input[i + 2..i + 2 + end];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                    }
                    None => {
                        out.push_str(&input[i..]);
                        i = bytes.len();
                    }
                },
                _ => {
                    out.push('$');
                    i += 1;
                }
            }
            plain = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&input[plain.min(input.len())..]);
    out
}

/// The container's environment, in `env` order (a later duplicate replaces the value in
/// place, as kubelet's map-then-list does by name).
pub fn container_env(c: &Container, pod: &PodFields) -> Result<Vec<(String, String)>, EnvError> {
    if let Some(from) = c.env_from.as_ref().filter(|f| !f.is_empty()) {
        let kind = if from[0].config_map_ref.is_some() {
            "configMapRef"
        } else {
            "secretRef"
        };
        return Err(EnvError::UnsupportedSource {
            name: from[0].prefix.clone().unwrap_or_default(),
            source_kind: kind,
        });
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for EnvVar {
        name,
        value,
        value_from,
    } in c.env.iter().flatten()
    {
        let v = match (value, value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    pod.get(&f.field_path)?
                } else {
                    let source_kind = if from.config_map_key_ref.is_some() {
                        "configMapKeyRef"
                    } else if from.secret_key_ref.is_some() {
                        "secretKeyRef"
                    } else {
                        "resourceFieldRef"
                    };
                    return Err(EnvError::UnsupportedSource {
                        name: name.clone(),
                        source_kind,
                    });
                }
            }
            (Some(v), None) => {
                let lookup = |k: &str| {
                    env.iter()
                        .rev()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                };
                expand(v, &lookup)
            }
            (None, None) => String::new(),
        };
        match env.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v,
            None => env.push((name.clone(), v)),
        }
    }
    Ok(env)
}

/// `command` + `args`, expanded against `env`; `None` without a `command` (there is no image
/// to supply an entrypoint).
pub fn command_line(c: &Container, env: &[(String, String)]) -> Option<Vec<String>> {
    let command = c.command.as_ref().filter(|c| !c.is_empty())?;
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    Some(
        command
            .iter()
            .chain(c.args.iter().flatten())
            .map(|s| expand(s, &lookup))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    fn fields() -> PodFields {
        PodFields {
            name: "web".into(),
            namespace: "ns1".into(),
            uid: "u-1".into(),
            node_name: "node-a".into(),
            service_account_name: "default".into(),
            pod_ips: vec!["10.244.0.5".into(), "fd00:10:244::5".into()],
            host_ips: vec!["192.0.2.1".into(), "2001:db8:1::1".into()],
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn expansion_follows_kubelets_rules() {
        let lookup = |k: &str| (k == "A").then(|| "x".to_string());
        let cases = [
            ("$(A)", "x"),
            ("pre-$(A)-post", "pre-x-post"),
            ("$(B)", "$(B)"),
            ("$$(A)", "$(A)"),
            ("$$", "$"),
            ("$A", "$A"),
            ("$(A", "$(A"),
            ("a$", "a$"),
            ("é$(A)ü", "éxü"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &lookup), want, "{input}");
        }
    }

    #[test]
    fn field_refs_give_the_downward_api_values_in_family_order() {
        let c = container(serde_json::json!({"name": "c", "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
            {"name": "HIP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "HIPS", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIPs"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "value": "http://$(IP):80/$(NAME)/$(LATER)"},
            {"name": "LATER", "value": "l"}
        ]}));
        let env = container_env(&c, &fields()).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("NAME"), "web");
        assert_eq!(get("NS"), "ns1");
        assert_eq!(get("UID"), "u-1");
        assert_eq!(get("NODE"), "node-a");
        assert_eq!(get("IP"), "10.244.0.5");
        assert_eq!(get("IPS"), "10.244.0.5,fd00:10:244::5");
        assert_eq!(get("HIP"), "192.0.2.1");
        assert_eq!(get("HIPS"), "192.0.2.1,2001:db8:1::1");
        assert_eq!(get("APP"), "web");
        assert_eq!(get("URL"), "http://10.244.0.5:80/web/$(LATER)");
    }

    #[test]
    fn command_and_args_are_expanded_and_a_missing_command_is_none() {
        let c = container(
            serde_json::json!({"name": "c", "command": ["sh", "-c"], "args": ["echo $(MSG) $$(MSG) $(NOPE)"], "env": [{"name": "MSG", "value": "hi"}]}),
        );
        let env = container_env(&c, &fields()).unwrap();
        assert_eq!(
            command_line(&c, &env).unwrap(),
            vec!["sh", "-c", "echo hi $(MSG) $(NOPE)"]
        );
        let bare = container(serde_json::json!({"name": "c", "image": "nginx", "args": ["x"]}));
        assert_eq!(command_line(&bare, &[]), None);
    }

    #[test]
    fn unsupported_sources_are_errors() {
        let c = container(
            serde_json::json!({"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
        );
        assert_eq!(
            container_env(&c, &fields()).unwrap_err(),
            EnvError::UnsupportedSource {
                name: "X".into(),
                source_kind: "secretKeyRef"
            }
        );
        let c = container(
            serde_json::json!({"name": "c", "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}),
        );
        assert_eq!(
            container_env(&c, &fields()).unwrap_err(),
            EnvError::UnsupportedField("spec.bogus".into())
        );
    }
}
