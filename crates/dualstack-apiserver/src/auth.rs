//! Authentication (bearer tokens from `DATA_DIR/tokens.json`) and authorization: the admin
//! (group `system:masters`) may do everything; a node (`system:node:<name>`, group
//! `system:nodes`) may only touch its own Node, the pods bound to it, its own Lease, and record
//! events, and read what an agent needs (nodes, services, endpoints, slices, namespaces,
//! configmaps, service CIDRs). This is the spirit of upstream's Node authorizer plus the
//! NodeRestriction admission plugin; object-level checks (is this pod bound to me?) are in
//! [`NodeRestriction`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Group of the admin user.
pub const MASTERS_GROUP: &str = "system:masters";
/// Group of node users.
pub const NODES_GROUP: &str = "system:nodes";
/// User name prefix of node users.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// User name, e.g. `admin` or `system:node:n1`.
    pub name: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The anonymous user (only for the public endpoints).
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// The node name when this is a node user.
    pub fn node_name(&self) -> Option<&str> {
        if self.groups.iter().any(|g| g == NODES_GROUP) {
            self.name.strip_prefix(NODE_USER_PREFIX)
        } else {
            None
        }
    }

    /// Whether this user may do everything.
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS_GROUP)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenEntry {
    token: String,
    #[serde(flatten)]
    user: UserInfo,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFileData {
    tokens: Vec<TokenEntry>,
}

/// The token file, re-read when it changes on disk (so `dualstack token create` works while the
/// server runs).
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, Vec<TokenEntry>)>,
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

impl Tokens {
    /// The token file of a data directory.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("tokens.json"),
            cache: Mutex::new((None, Vec::new())),
        }
    }

    fn read(&self) -> Result<TokenFileData> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("parsing {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFileData::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Returns the token of `user`, creating one if it has none.
    pub fn ensure(&self, user: &UserInfo) -> Result<String> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let lock_path = self.path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        lock.lock()?;
        let mut data = self.read()?;
        if let Some(e) = data.tokens.iter().find(|e| e.user == *user) {
            return Ok(e.token.clone());
        }
        let token = random_token();
        data.tokens.push(TokenEntry {
            token: token.clone(),
            user: user.clone(),
        });
        crate::tls::write_private(&self.path, &serde_json::to_vec_pretty(&data)?)?;
        Ok(token)
    }

    /// Looks a bearer token up.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().expect("token cache");
        if (cache.0 != mtime || cache.0.is_none())
            && let Ok(data) = self.read()
        {
            *cache = (mtime, data.tokens);
        }
        cache
            .1
            .iter()
            .find(|e| constant_time_eq(e.token.as_bytes(), token.as_bytes()))
            .map(|e| e.user.clone())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The attributes of a request the authorizer decides on.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'a str,
    /// API group.
    pub group: &'a str,
    /// Plural resource.
    pub resource: &'a str,
    /// Subresource (`status`, ...).
    pub subresource: Option<&'a str>,
    /// Namespace, if any.
    pub namespace: Option<&'a str>,
    /// Object name, if any.
    pub name: Option<&'a str>,
    /// `spec.nodeName=` value of the field selector, for pod lists.
    pub node_name_selector: Option<&'a str>,
}

/// Decides, or returns the reason for a 403.
pub fn authorize(user: &UserInfo, a: &Attributes<'_>) -> Result<(), String> {
    if user.is_admin() {
        return Ok(());
    }
    let Some(node) = user.node_name() else {
        return Err(String::new());
    };
    let read = matches!(a.verb, "get" | "list" | "watch");
    match (a.group, a.resource) {
        ("", "nodes") => {
            if read || a.name == Some(node) || (a.verb == "create" && a.name.is_none()) {
                Ok(())
            } else {
                Err(format!(
                    "node '{node}' cannot modify node '{}'",
                    a.name.unwrap_or("")
                ))
            }
        }
        ("", "pods") => match a.verb {
            "list" | "watch" if a.node_name_selector == Some(node) => Ok(()),
            "list" | "watch" => Err(format!(
                "node '{node}' can only list pods with fieldSelector spec.nodeName={node}"
            )),
            // Object-level: NodeRestriction checks the pod is bound to this node. As upstream's
            // node role: read it, write only its status, delete it (eviction).
            "get" | "delete" if a.name.is_some() && a.subresource.is_none() => Ok(()),
            "get" | "update" | "patch" if a.name.is_some() && a.subresource == Some("status") => {
                Ok(())
            }
            _ => Err(format!("node '{node}' cannot {} pods", a.verb)),
        },
        ("", "services" | "endpoints" | "namespaces" | "configmaps")
        | ("discovery.k8s.io", "endpointslices")
        | ("networking.k8s.io", "servicecidrs" | "ipaddresses")
            if read =>
        {
            Ok(())
        }
        ("", "events") | ("events.k8s.io", "events")
            if matches!(a.verb, "create" | "update" | "patch" | "get") =>
        {
            Ok(())
        }
        ("coordination.k8s.io", "leases") if a.namespace == Some("kube-node-lease") => {
            if a.name.is_none_or(|n| n == node) && a.verb != "list" && a.verb != "watch"
                || read && a.name == Some(node)
            {
                Ok(())
            } else {
                Err(format!("node '{node}' can only access its own lease"))
            }
        }
        _ => Err(String::new()),
    }
}

/// Object-level node restriction: a node may only read or change pods bound to it.
#[derive(Debug, Clone, Copy)]
pub struct NodeRestriction;

impl NodeRestriction {
    /// Checks a pod (its `spec.nodeName`) against the node user; `None` when allowed.
    pub fn pod(user: &UserInfo, pod_node_name: Option<&str>) -> Option<String> {
        let node = user.node_name()?;
        if pod_node_name == Some(node) {
            None
        } else {
            Some(format!("node '{node}' can only access pods bound to it"))
        }
    }
}

/// Upstream's Forbidden message for a request.
pub fn forbidden_message(user: &UserInfo, a: &Attributes<'_>, reason: &str) -> String {
    let mut resource = a.resource.to_string();
    if let Some(s) = a.subresource {
        resource = format!("{resource}/{s}");
    }
    let mut why = match a.namespace {
        Some(ns) if !ns.is_empty() => format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            user.name, a.verb, resource, a.group, ns
        ),
        _ => format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            user.name, a.verb, resource, a.group
        ),
    };
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    let qualified = if a.group.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    match a.name {
        Some(n) => format!("{qualified} {n:?} is forbidden: {why}"),
        None => format!("{qualified} is forbidden: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> UserInfo {
        UserInfo {
            name: format!("system:node:{n}"),
            groups: vec![NODES_GROUP.into()],
        }
    }

    fn attrs<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        ns: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            group,
            resource,
            subresource: None,
            namespace: ns,
            name,
            node_name_selector: None,
        }
    }

    #[test]
    fn tokens_are_issued_once_and_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::new(dir.path());
        let admin = UserInfo {
            name: "admin".into(),
            groups: vec![MASTERS_GROUP.into()],
        };
        let tok = t.ensure(&admin).unwrap();
        assert_eq!(t.ensure(&admin).unwrap(), tok);
        assert_eq!(t.authenticate(&tok), Some(admin));
        assert_eq!(t.authenticate("nope"), None);
        let n1 = t.ensure(&node("n1")).unwrap();
        assert_eq!(t.authenticate(&n1).unwrap().node_name(), Some("n1"));
    }

    #[test]
    fn nodes_may_only_touch_their_own_node_and_read_cluster_state() {
        let u = node("n1");
        assert!(authorize(&u, &attrs("update", "", "nodes", None, Some("n1"))).is_ok());
        assert!(authorize(&u, &attrs("update", "", "nodes", None, Some("n2"))).is_err());
        assert!(authorize(&u, &attrs("list", "", "nodes", None, None)).is_ok());
        assert!(authorize(&u, &attrs("list", "", "services", None, None)).is_ok());
        assert!(authorize(&u, &attrs("create", "", "services", Some("default"), None)).is_err());
        assert!(
            authorize(
                &u,
                &attrs("delete", "", "configmaps", Some("default"), Some("x"))
            )
            .is_err()
        );
        let mut pods = attrs("list", "", "pods", None, None);
        assert!(authorize(&u, &pods).is_err());
        pods.node_name_selector = Some("n1");
        assert!(authorize(&u, &pods).is_ok());
        assert!(NodeRestriction::pod(&u, Some("n2")).is_some());
        assert!(NodeRestriction::pod(&u, Some("n1")).is_none());
    }

    #[test]
    fn forbidden_messages_match_upstream_shape() {
        let u = node("n1");
        let a = attrs("update", "", "nodes", None, Some("n2"));
        assert_eq!(
            forbidden_message(&u, &a, "node 'n1' cannot modify node 'n2'"),
            r#"nodes "n2" is forbidden: User "system:node:n1" cannot update resource "nodes" in API group "" at the cluster scope: node 'n1' cannot modify node 'n2'"#
        );
        let a = attrs("create", "", "services", Some("default"), None);
        assert_eq!(
            forbidden_message(&u, &a, ""),
            r#"services is forbidden: User "system:node:n1" cannot create resource "services" in API group "" in the namespace "default""#
        );
    }
}
