//! The CNI runtime the agent uses: runs the plugins of the first network configuration list in
//! a conf dir as the spec's section 3 says, and keeps each ADD's result for DEL and CHECK.
//!
//! - ADD: plugins in order, each gets the previous one's result as `prevResult`; the final
//!   result and the configuration used are cached (libcni's place:
//!   `cacheDir/results/<network>-<container id>-<ifname>`). A failed ADD is followed by a
//!   best-effort DEL of the same list (the spec requires a DEL after a failed ADD; doing it
//!   here means the caller's retry starts clean), then the ADD's error is returned.
//! - DEL: plugins in reverse order with the cached configuration and result; without a cache
//!   entry, the current configuration and no `prevResult`; without either, nothing to do.
//!   Idempotent.
//! - CHECK: the cached configuration and result, plugins in order; skipped when the list sets
//!   `disableCheck` or its version predates CHECK (0.4.0).
//!
//! The conf dir is read on every call, so a configuration dropped in later is picked up.
//! Plugins are looked up by `type` in the bin dirs; the type `dualstack` falls back to this very
//! executable run as `<exe> cni`, so the agent needs nothing installed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use crate::conf::{self, PLUGIN_TYPE};
use crate::error::CniError;
use crate::types::{self, CniErrorResult, CniResult, NetworkConfigList};

/// How long one plugin execution may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One attachment of a pod to the network: the spec's attachment parameters plus the pod
/// identity that goes into `CNI_ARGS`. Serializable, so a runtime can keep it with its sandbox
/// (the agent's `sandbox.json`) for DEL after a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    /// `CNI_CONTAINERID`: the sandbox id.
    pub container_id: String,
    /// `CNI_NETNS`: the pod's network namespace file.
    pub netns: PathBuf,
    /// `CNI_IFNAME`: the interface inside the pod (`eth0`).
    pub ifname: String,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: String,
    /// `K8S_POD_NAME`.
    pub pod_name: String,
    /// `K8S_POD_UID`.
    pub pod_uid: String,
}

impl Attachment {
    fn validate(&self) -> Result<(), CniError> {
        if !types::valid_identifier(&self.container_id) {
            return Err(CniError::InvalidAttachment(format!(
                "invalid characters in container id {:?}",
                self.container_id
            )));
        }
        if let Err(e) = crate::plugin::validate_ifname(&self.ifname) {
            return Err(CniError::InvalidAttachment(e));
        }
        Ok(())
    }

    fn cni_args(&self) -> String {
        types::k8s_cni_args(
            &self.pod_namespace,
            &self.pod_name,
            &self.container_id,
            &self.pod_uid,
        )
    }
}

/// What is cached per attachment (shaped like libcni's `cniCacheV1`, with the configuration
/// list kept as JSON rather than base64).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheEntry {
    kind: String,
    container_id: String,
    if_name: String,
    network_name: String,
    netns: PathBuf,
    cni_args: String,
    config: NetworkConfigList,
    result: Value,
}

const CACHE_KIND: &str = "cniCacheV1";

/// The CNI runtime of one node.
#[derive(Debug, Clone)]
pub struct Runtime {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    self_plugin: Option<PathBuf>,
    timeout: Duration,
}

impl Runtime {
    /// A runtime reading configurations from `conf_dir`, plugins from `bin_dirs` (in order) and
    /// keeping results under `cache_dir`.
    pub fn new(conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Self {
        Self {
            conf_dir,
            bin_dirs,
            cache_dir,
            self_plugin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Runs `path cni` for the type `dualstack` (when no file of that name is in the bin dirs)
    /// instead of the current executable. Tests use the built `dualstack` binary.
    pub fn with_self_plugin(mut self, path: PathBuf) -> Self {
        self.self_plugin = Some(path);
        self
    }

    /// Limits each plugin execution to `timeout` (the plugin is killed after it).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Loads the first network config list in conf_dir now (not cached across calls: a config
    /// dropped in later is picked up), runs ADD and caches the result.
    pub async fn add(&self, att: &Attachment) -> Result<CniResult, CniError> {
        att.validate()?;
        let list = self.load()?;
        let version = list.selected_version();
        let mut prev: Option<Value> = None;
        for p in &list.plugins {
            let req = p.request(&version, &list.name, &Map::new(), prev.as_ref());
            match self.exec(&p.plugin_type, "ADD", att, &req).await {
                Ok(out) => prev = Some(out),
                Err(e) => {
                    if let Err(del) = self.del_list(&list, att, None).await {
                        tracing::warn!(error = %del, container = %att.container_id, "DEL after failed ADD failed");
                    }
                    return Err(e);
                }
            }
        }
        let raw = prev.unwrap_or(Value::Null);
        let result: CniResult =
            serde_json::from_value(raw.clone()).map_err(|e| CniError::BadOutput {
                plugin: list
                    .plugins
                    .last()
                    .map(|p| p.plugin_type.clone())
                    .unwrap_or_default(),
                command: "ADD",
                reason: format!("result is not a CNI result: {e}"),
            })?;
        let entry = CacheEntry {
            kind: CACHE_KIND.to_string(),
            container_id: att.container_id.clone(),
            if_name: att.ifname.clone(),
            network_name: list.name.clone(),
            netns: att.netns.clone(),
            cni_args: att.cni_args(),
            config: list,
            result: raw,
        };
        self.write_cache(&entry)?;
        Ok(result)
    }

    /// Runs CHECK with the cached ADD result and configuration.
    pub async fn check(&self, att: &Attachment) -> Result<(), CniError> {
        att.validate()?;
        let entry = self.find_cache(att)?.ok_or_else(|| {
            CniError::NoCachedResult(format!("{}/{}", att.container_id, att.ifname))
        })?;
        let list = &entry.config;
        let version = list.selected_version();
        if list.disable_check || types::version_less(&version, "0.4.0") {
            return Ok(());
        }
        for p in &list.plugins {
            let req = p.request(&version, &list.name, &Map::new(), Some(&entry.result));
            self.exec(&p.plugin_type, "CHECK", att, &req).await?;
        }
        Ok(())
    }

    /// Uses the cached ADD result and config (libcni caches under
    /// cacheDir/results/<net>-<id>-<ifname>); idempotent.
    pub async fn del(&self, att: &Attachment) -> Result<(), CniError> {
        att.validate()?;
        let cached = self.find_cache(att)?;
        match &cached {
            Some(entry) => {
                self.del_list(&entry.config, att, Some(&entry.result))
                    .await?
            }
            None => match conf::load_first(&self.conf_dir).map_err(|source| CniError::Io {
                op: "read conf dir",
                path: self.conf_dir.clone(),
                source,
            })? {
                Some(loaded) => self.del_list(&loaded.list, att, None).await?,
                None => return Ok(()),
            },
        }
        if let Some(entry) = cached {
            let path = self.cache_path(&entry.network_name, att);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CniError::Io {
                        op: "remove",
                        path,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    async fn del_list(
        &self,
        list: &NetworkConfigList,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<(), CniError> {
        let version = list.selected_version();
        for p in list.plugins.iter().rev() {
            let req = p.request(&version, &list.name, &Map::new(), prev);
            self.exec(&p.plugin_type, "DEL", att, &req).await?;
        }
        Ok(())
    }

    fn load(&self) -> Result<NetworkConfigList, CniError> {
        conf::load_first(&self.conf_dir)
            .map_err(|source| CniError::Io {
                op: "read conf dir",
                path: self.conf_dir.clone(),
                source,
            })?
            .map(|l| l.list)
            .ok_or_else(|| CniError::NoConfig(self.conf_dir.clone()))
    }

    fn cache_path(&self, network: &str, att: &Attachment) -> PathBuf {
        self.cache_dir
            .join("results")
            .join(format!("{network}-{}-{}", att.container_id, att.ifname))
    }

    fn write_cache(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let dir = self.cache_dir.join("results");
        let name = format!(
            "{}-{}-{}",
            entry.network_name, entry.container_id, entry.if_name
        );
        let bytes = serde_json::to_vec(entry).unwrap_or_default();
        conf::write_atomic(&dir, &name, &bytes)
            .map(|_| ())
            .map_err(|source| CniError::Io {
                op: "write",
                path: dir.join(name),
                source,
            })
    }

    /// The cache entry of the attachment, whatever network it was made on (the configuration
    /// may have changed since).
    fn find_cache(&self, att: &Attachment) -> Result<Option<CacheEntry>, CniError> {
        let dir = self.cache_dir.join("results");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CniError::Io {
                    op: "read",
                    path: dir,
                    source,
                });
            }
        };
        let suffix = format!("-{}-{}", att.container_id, att.ifname);
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(&suffix) {
                continue;
            }
            let path = e.path();
            let bytes = std::fs::read(&path).map_err(|source| CniError::Io {
                op: "read",
                path: path.clone(),
                source,
            })?;
            match serde_json::from_slice::<CacheEntry>(&bytes) {
                Ok(c) if c.container_id == att.container_id && c.if_name == att.ifname => {
                    return Ok(Some(c));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable CNI cache entry")
                }
            }
        }
        Ok(None)
    }

    /// The executable for `plugin_type` and the arguments to give it.
    fn find_plugin(&self, plugin_type: &str) -> Result<(PathBuf, Vec<&'static str>), CniError> {
        let not_found = || CniError::PluginNotFound {
            plugin: plugin_type.to_string(),
            dirs: self.bin_dirs.clone(),
        };
        if plugin_type.is_empty()
            || plugin_type.contains('/')
            || plugin_type == "."
            || plugin_type == ".."
        {
            return Err(not_found());
        }
        for d in &self.bin_dirs {
            let p = d.join(plugin_type);
            if p.is_file() {
                return Ok((p, Vec::new()));
            }
        }
        if plugin_type == PLUGIN_TYPE {
            let exe = match &self.self_plugin {
                Some(p) => p.clone(),
                None => std::env::current_exe().map_err(|source| CniError::Exec {
                    plugin: plugin_type.to_string(),
                    path: PathBuf::from("/proc/self/exe"),
                    source,
                })?,
            };
            return Ok((exe, vec!["cni"]));
        }
        Err(not_found())
    }

    async fn exec(
        &self,
        plugin_type: &str,
        command: &'static str,
        att: &Attachment,
        req: &Value,
    ) -> Result<Value, CniError> {
        let (path, args) = self.find_plugin(plugin_type)?;
        let exec_err = |source| CniError::Exec {
            plugin: plugin_type.to_string(),
            path: path.clone(),
            source,
        };
        let cni_path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let mut child = tokio::process::Command::new(&path)
            .args(&args)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &att.container_id)
            .env("CNI_NETNS", &att.netns)
            .env("CNI_IFNAME", &att.ifname)
            .env("CNI_ARGS", att.cni_args())
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(exec_err)?;
        let input = serde_json::to_vec(req).unwrap_or_default();
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| exec_err(std::io::Error::other("no stdin pipe")))?;
        let run = async move {
            // A plugin may exit without reading stdin; its error is in the output then.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
            child.wait_with_output().await
        };
        let out = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| CniError::Timeout {
                plugin: plugin_type.to_string(),
                command,
                after: self.timeout,
            })?
            .map_err(exec_err)?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !stderr.is_empty() {
            tracing::debug!(plugin = plugin_type, command, stderr = %stderr, "CNI plugin stderr");
        }
        let bad = |reason: String| CniError::BadOutput {
            plugin: plugin_type.to_string(),
            command,
            reason: if stderr.is_empty() {
                reason
            } else {
                format!("{reason}; stderr: {stderr}")
            },
        };
        if !out.status.success() {
            return match serde_json::from_slice::<CniErrorResult>(&out.stdout) {
                Ok(error) => Err(CniError::Plugin {
                    plugin: plugin_type.to_string(),
                    command,
                    error,
                }),
                Err(_) => Err(bad(format!(
                    "failed ({}) without an error object: {:?}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout)
                ))),
            };
        }
        if command != "ADD" {
            return Ok(Value::Null);
        }
        match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) | Err(_) => Err(bad(format!(
                "ADD printed no result object: {:?}",
                String::from_utf8_lossy(&out.stdout)
            ))),
        }
    }
}
