//! Network configuration files: our plugin's configuration, the conflist the agent writes, and
//! which file of a conf dir a runtime uses.
//!
//! Rendering and selection are pure; [`write_dualstack_conflist`] and [`load_first`] are the
//! two thin file-system functions around them.
//!
//! Our plugin's configuration (`"type": "dualstack"`), all fields besides `type` optional
//! except `ranges`:
//!
//! | field | meaning | default |
//! |---|---|---|
//! | `bridge` | the node's bridge; its addresses are the gateways (first host of each range) | `ds0` |
//! | `ranges` | the node's podCIDRs, at most one per family, in the node's order (primary first) | — |
//! | `dataDir` | the IPAM store; allocations live under `dataDir/<network name>/` | `/var/lib/cni/networks` |
//! | `mtu` | MTU of the bridge and of both veth ends | 1500 |
//!
//! ```json
//! {"cniVersion":"1.0.0","name":"dualstack","plugins":[{"type":"dualstack","bridge":"ds0",
//!  "ranges":["10.244.1.0/24","fc00:0:0:1::/64"],"dataDir":"/var/lib/dualstack/cni","mtu":1500}]}
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::types::{CNI_VERSION, NetworkConfigList, PluginConf};

/// The network name and plugin type of our conflist.
pub const NETWORK_NAME: &str = "dualstack";
/// Our plugin's `type`.
pub const PLUGIN_TYPE: &str = "dualstack";
/// The file the agent writes; `10-` so that it sorts before most distributions' examples.
pub const CONFLIST_FILE: &str = "10-dualstack.conflist";
/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "ds0";
/// Default IPAM directory (host-local's).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// Default MTU.
pub const DEFAULT_MTU: u32 = 1500;

/// The plugin-specific part of our plugin's configuration (see the module docs). Other keys
/// of the request configuration (`cniVersion`, `prevResult`, conventions) are ignored here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DualstackConf {
    /// The bridge name.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The node's podCIDRs.
    pub ranges: Vec<IpNet>,
    /// The IPAM store directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// MTU of bridge and veths.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_string()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_mtu() -> u32 {
    DEFAULT_MTU
}

/// Our conflist for a node with `pod_cidrs`.
pub fn render_dualstack_conflist(pod_cidrs: &[IpNet], data_dir: &Path) -> NetworkConfigList {
    let conf = DualstackConf {
        bridge: DEFAULT_BRIDGE.to_string(),
        ranges: pod_cidrs.iter().map(IpNet::trunc).collect(),
        data_dir: data_dir.to_path_buf(),
        mtu: DEFAULT_MTU,
    };
    let extra = match serde_json::to_value(conf) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    NetworkConfigList {
        cni_version: CNI_VERSION.to_string(),
        cni_versions: Vec::new(),
        name: NETWORK_NAME.to_string(),
        disable_check: false,
        disable_gc: false,
        plugins: vec![PluginConf {
            plugin_type: PLUGIN_TYPE.to_string(),
            extra,
        }],
    }
}

/// The kind of a configuration file, by extension, as libcni's `ConfFiles(dir, [".conf",
/// ".conflist", ".json"])` finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfKind {
    /// `*.conflist`: a network configuration list.
    List,
    /// `*.conf` / `*.json`: a single plugin configuration, wrapped into a list.
    Single,
}

/// The kind of `file_name`, or `None` when a runtime ignores it.
pub fn conf_kind(file_name: &str) -> Option<ConfKind> {
    if file_name.starts_with('.') {
        return None;
    }
    match Path::new(file_name).extension()?.to_str()? {
        "conflist" => Some(ConfKind::List),
        "conf" | "json" => Some(ConfKind::Single),
        _ => None,
    }
}

/// The configuration files among `names`, in the order a runtime tries them: lexicographic
/// (kubelet and containerd take the first that loads).
pub fn candidates<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(&'a str, ConfKind)> {
    let mut out: Vec<_> = names
        .into_iter()
        .filter_map(|n| conf_kind(n).map(|k| (n, k)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// Parses a configuration file's bytes; the reason on failure.
pub fn parse(kind: ConfKind, bytes: &[u8]) -> Result<NetworkConfigList, String> {
    let list = match kind {
        ConfKind::List => {
            serde_json::from_slice::<NetworkConfigList>(bytes).map_err(|e| e.to_string())?
        }
        ConfKind::Single => {
            let p: PluginConf = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            NetworkConfigList::from_single(p)?
        }
    };
    if list.name.is_empty() {
        return Err("network config has no name".into());
    }
    if list.plugins.is_empty() {
        return Err(format!("network {} has no plugins", list.name));
    }
    Ok(list)
}

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file.
    pub path: PathBuf,
    /// Its network configuration list.
    pub list: NetworkConfigList,
}

/// The first configuration file of `dir` that loads, as kubelet/containerd choose: candidates in
/// lexicographic order, invalid ones skipped (with a warning). `Ok(None)` when there is none
/// (also when `dir` does not exist).
pub fn load_first(dir: &Path) -> io::Result<Option<Loaded>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for e in entries {
        let e = e?;
        if e.file_type()?.is_dir() {
            continue;
        }
        if let Ok(n) = e.file_name().into_string() {
            names.push(n);
        }
    }
    for (name, kind) in candidates(names.iter().map(String::as_str)) {
        let path = dir.join(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping unreadable CNI config");
                continue;
            }
        };
        match parse(kind, &bytes) {
            Ok(list) => return Ok(Some(Loaded { path, list })),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping invalid CNI config")
            }
        }
    }
    Ok(None)
}

/// Writes our conflist for `pod_cidrs` as `conf_dir/10-dualstack.conflist`, atomically (a
/// temporary file in the same directory, fsync, rename), creating `conf_dir` if needed.
pub fn write_dualstack_conflist(
    conf_dir: &Path,
    pod_cidrs: &[IpNet],
    data_dir: &Path,
) -> io::Result<PathBuf> {
    let list = render_dualstack_conflist(pod_cidrs, data_dir);
    let mut bytes = serde_json::to_vec_pretty(&list).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(conf_dir, CONFLIST_FILE, &bytes)
}

/// Writes `dir/name` atomically.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    use std::io::Write;
    fs::create_dir_all(dir)?;
    let path = dir.join(name);
    // A leading dot keeps a half-written file out of `candidates`.
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn our_conflist_has_the_documented_shape() {
        let cidrs: Vec<IpNet> = vec![
            "10.244.1.0/24".parse().unwrap(),
            "fc00:0:0:1::/64".parse().unwrap(),
        ];
        let l = render_dualstack_conflist(&cidrs, Path::new("/var/lib/dualstack/cni"));
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            json!({"cniVersion": "1.0.0", "name": "dualstack", "plugins": [{
                "type": "dualstack", "bridge": "ds0",
                "ranges": ["10.244.1.0/24", "fc00:0:0:1::/64"],
                "dataDir": "/var/lib/dualstack/cni", "mtu": 1500}]})
        );
        let conf: DualstackConf =
            serde_json::from_value(serde_json::Value::Object(l.plugins[0].extra.clone())).unwrap();
        assert_eq!(conf.ranges, cidrs);
    }

    #[test]
    fn our_plugin_config_has_defaults_and_keeps_protocol_fields_out() {
        let c: DualstackConf = serde_json::from_value(json!({"ranges": ["10.0.0.0/24"]})).unwrap();
        assert_eq!((c.bridge.as_str(), c.mtu), ("ds0", 1500));
        assert_eq!(c.data_dir, Path::new("/var/lib/cni/networks"));
        // The request configuration also carries cniVersion, name, prevResult, ...: not refused.
        let c: DualstackConf =
            serde_json::from_value(json!({"ranges": [], "cniVersion": "1.0.0", "prevResult": {}}))
                .unwrap();
        assert!(c.ranges.is_empty());
        assert!(serde_json::from_value::<DualstackConf>(json!({"ranges": ["10.0.0.0"]})).is_err());
    }

    #[test]
    fn candidates_are_conf_conflist_and_json_files_in_lexicographic_order() {
        let names = [
            "99-loopback.conf",
            "10-dualstack.conflist",
            "README",
            "05-old.json",
            ".10-dualstack.conflist.tmp.1",
            "20-x.conflist.bak",
            "00-a.conflist",
        ];
        assert_eq!(
            candidates(names),
            vec![
                ("00-a.conflist", ConfKind::List),
                ("05-old.json", ConfKind::Single),
                ("10-dualstack.conflist", ConfKind::List),
                ("99-loopback.conf", ConfKind::Single),
            ]
        );
    }

    #[test]
    fn load_first_skips_invalid_files_and_wraps_single_confs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_first(&dir.path().join("missing")).unwrap().is_none());
        assert!(load_first(dir.path()).unwrap().is_none());
        fs::write(dir.path().join("00-broken.conflist"), "{not json").unwrap();
        fs::write(
            dir.path().join("01-empty.conflist"),
            r#"{"cniVersion":"1.0.0","name":"e","plugins":[]}"#,
        )
        .unwrap();
        fs::write(
            dir.path().join("50-single.conf"),
            r#"{"cniVersion":"0.4.0","name":"one","type":"bridge"}"#,
        )
        .unwrap();
        let got = load_first(dir.path()).unwrap().unwrap();
        assert_eq!(got.list.name, "one");
        assert_eq!(got.list.plugins[0].plugin_type, "bridge");

        let cidrs: Vec<IpNet> = vec![
            "fc00:0:0:1::/64".parse().unwrap(),
            "10.244.1.0/24".parse().unwrap(),
        ];
        let path = write_dualstack_conflist(dir.path(), &cidrs, Path::new("/d")).unwrap();
        assert_eq!(path, dir.path().join("10-dualstack.conflist"));
        let got = load_first(dir.path()).unwrap().unwrap();
        assert_eq!((got.path, got.list.name.as_str()), (path, "dualstack"));
        assert_eq!(
            got.list.plugins[0].extra["ranges"],
            json!(["fc00:0:0:1::/64", "10.244.1.0/24"])
        );
    }
}
