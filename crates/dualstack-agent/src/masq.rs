//! The ip-masq-agent loop (upstream's `MasqDaemon.Run`): every `resyncInterval`, and at once when
//! the configuration changes, (1) read the configuration, (2) program IPv4, (3) program IPv6
//! (with `--enable-ipv6`). The rules are the pure `dualstack-masq` crate's; this module reads the
//! config (a file, or the ConfigMap `kube-system/ip-masq-agent` key `config` through the API),
//! applies each family's table with `nft -j -f -` (one atomic transaction that replaces the
//! table), and reports a bad configuration: a log line and, for the ConfigMap, a Warning Event
//! `InvalidConfig` on it, both naming the bad entry; the rules in force stay untouched.
//!
//! Runs standalone (`dualstack masq-agent`) and inside `dualstack agent` (its node's namespace).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dualstack_ipam::IpFamily;
use dualstack_masq::config::{CONFIGMAP_KEY, CONFIGMAP_NAME, CONFIGMAP_NAMESPACE};
use dualstack_masq::{MasqConfig, MasqFlags, render, ruleset};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// The Event reason of a configuration that cannot be used.
pub const INVALID_CONFIG: &str = "InvalidConfig";
/// `source.component` of our Events.
pub const COMPONENT: &str = "ip-masq-agent";

/// Where the configuration comes from.
#[derive(Clone)]
pub enum ConfigSource {
    /// A file (upstream: `/etc/config/ip-masq-agent`, a ConfigMap mount); missing → defaults.
    File(PathBuf),
    /// The ConfigMap `kube-system/ip-masq-agent`, key `config`, through the API; a missing
    /// ConfigMap or key → defaults, as a missing file.
    ConfigMap(kube::Client),
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::File(p) => f.debug_tuple("File").field(p).finish(),
            ConfigSource::ConfigMap(_) => f.write_str("ConfigMap"),
        }
    }
}

/// What the loop needs.
#[derive(Debug, Clone)]
pub struct MasqSettings {
    /// The flags that shape the rules.
    pub flags: MasqFlags,
    /// The configuration's source.
    pub source: ConfigSource,
    /// This node's name (`source.host` of Events).
    pub node_name: String,
}

/// Applies one nftables JSON transaction (`nft -j -f -`); a narrow trait so the loop can be
/// tested with a recording fake.
#[async_trait::async_trait]
pub trait Nft: Send + Sync {
    /// Applies `json` atomically, or fails with nft's message.
    async fn apply(&self, json: &str) -> Result<(), String>;
}

/// The real `nft` binary, in the caller's network namespace.
#[derive(Debug, Default)]
pub struct NftCommand;

#[async_trait::async_trait]
impl Nft for NftCommand {
    async fn apply(&self, json: &str) -> Result<(), String> {
        let mut child = tokio::process::Command::new("nft")
            .args(["-j", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("running nft: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(json.as_bytes())
                .await
                .map_err(|e| format!("writing to nft: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("waiting for nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

/// What one read of the source found.
enum Read {
    /// No config (file, ConfigMap or key missing): the defaults apply.
    Missing(String),
    /// The text, and the ConfigMap it came from.
    Text(String, Option<ObjectReference>),
}

/// The loop's state.
struct Daemon {
    settings: MasqSettings,
    nft: Arc<dyn Nft>,
    config: MasqConfig,
    /// The last config error reported (log and Event once per distinct text and error).
    last_error: Option<(String, String)>,
    /// The last ruleset applied per family (log at info only on change).
    applied: [Option<String>; 2],
    last_config_log: Option<String>,
}

/// Runs the masq agent until the process ends.
pub async fn run(settings: MasqSettings, nft: Arc<dyn Nft>) {
    let notify = Arc::new(Notify::new());
    match &settings.source {
        ConfigSource::ConfigMap(client) => {
            tokio::spawn(watch_configmap(client.clone(), notify.clone()));
        }
        ConfigSource::File(path) => {
            tokio::spawn(watch_file(path.clone(), notify.clone()));
        }
    }
    let mut d = Daemon {
        config: MasqConfig::new(settings.flags.nomasq_all_reserved_ranges),
        settings,
        nft,
        last_error: None,
        applied: [None, None],
        last_config_log: None,
    };
    tracing::info!(
        flags = ?d.settings.flags,
        source = %d.source_name(),
        "starting ip-masq-agent"
    );
    if !d.settings.flags.enable_ipv6 {
        // A table of ours left from a run with --enable-ipv6 would keep masquerading.
        let _ = d
            .nft
            .apply(&ruleset::delete_json(IpFamily::IPv6).to_string())
            .await;
    }
    loop {
        d.sync().await;
        tokio::select! {
            _ = tokio::time::sleep(d.config.resync_interval) => {}
            _ = notify.notified() => {}
        }
    }
}

impl Daemon {
    fn source_name(&self) -> String {
        match &self.settings.source {
            ConfigSource::File(p) => format!("file {}", p.display()),
            ConfigSource::ConfigMap(_) => {
                format!("ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} key {CONFIGMAP_KEY:?}")
            }
        }
    }

    async fn read(&self) -> Result<Read, String> {
        match &self.settings.source {
            ConfigSource::File(path) => match tokio::fs::read(path).await {
                Ok(bytes) => Ok(Read::Text(
                    String::from_utf8_lossy(&bytes).into_owned(),
                    None,
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Read::Missing(format!(
                    "No config file found at {:?}, using default values",
                    path.display().to_string()
                ))),
                Err(e) => Err(format!("reading {}: {e}", path.display())),
            },
            ConfigSource::ConfigMap(client) => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), CONFIGMAP_NAMESPACE);
                match api.get_opt(CONFIGMAP_NAME).await {
                    Ok(None) => Ok(Read::Missing(format!(
                        "No ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} found, using default values"
                    ))),
                    Ok(Some(cm)) => {
                        let r = ObjectReference {
                            api_version: Some("v1".into()),
                            kind: Some("ConfigMap".into()),
                            namespace: Some(CONFIGMAP_NAMESPACE.into()),
                            name: Some(CONFIGMAP_NAME.into()),
                            uid: cm.metadata.uid.clone(),
                            resource_version: cm.metadata.resource_version.clone(),
                            ..Default::default()
                        };
                        match cm.data.and_then(|mut d| d.remove(CONFIGMAP_KEY)) {
                            Some(text) => Ok(Read::Text(text, Some(r))),
                            None => Ok(Read::Missing(format!(
                                "ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} has no key {CONFIGMAP_KEY:?}, using default values"
                            ))),
                        }
                    }
                    Err(e) => Err(format!(
                        "reading ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}: {e}"
                    )),
                }
            }
        }
    }

    /// One iteration: config, then the rules of each family. A config error skips the rules.
    async fn sync(&mut self) {
        let flags = &self.settings.flags;
        let (parsed, origin) = match self.read().await {
            Err(e) => {
                tracing::error!("Error syncing configuration: {e}");
                return;
            }
            Ok(Read::Missing(why)) => {
                if self.last_config_log.as_deref() != Some(why.as_str()) {
                    tracing::info!("{why}");
                }
                self.last_config_log = Some(why);
                (Ok(MasqConfig::new(flags.nomasq_all_reserved_ranges)), None)
            }
            Ok(Read::Text(text, origin)) => (
                MasqConfig::parse(&text, flags.nomasq_all_reserved_ranges, flags.enable_ipv6)
                    .map_err(|e| (text, e.to_string())),
                origin,
            ),
        };
        match parsed {
            Ok(c) => {
                self.last_error = None;
                let used = format!("Using config: {}", c.to_json());
                if self.last_config_log.as_deref() != Some(used.as_str()) {
                    tracing::info!("{used}");
                    self.last_config_log = Some(used);
                }
                self.config = c;
            }
            Err((text, e)) => {
                let key = (text, e.clone());
                if self.last_error.as_ref() != Some(&key) {
                    tracing::error!(
                        source = %self.source_name(),
                        "Error syncing configuration: {e}; the previous rules stay in force"
                    );
                    if let (Some(r), ConfigSource::ConfigMap(client)) =
                        (origin, &self.settings.source)
                    {
                        let message = format!(
                            "invalid ip-masq-agent configuration in ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} key {CONFIGMAP_KEY:?}: {e}; the previous rules stay in force"
                        );
                        record_event(client, &r, &self.settings.node_name, &message).await;
                    }
                    self.last_error = Some(key);
                    self.last_config_log = None;
                } else {
                    tracing::debug!("Error syncing configuration: {e}");
                }
                return;
            }
        }
        let mut families = vec![IpFamily::IPv4];
        if flags.enable_ipv6 {
            families.push(IpFamily::IPv6);
        } else {
            tracing::debug!("IPv6 masquerading rules: not enabled.");
        }
        for family in families {
            let rs = render(&self.config, flags, family);
            let slot = &mut self.applied[family as usize];
            let name = match family {
                IpFamily::IPv4 => "IPv4",
                IpFamily::IPv6 => "IPv6",
            };
            match self.nft.apply(&rs.to_json_string()).await {
                Ok(()) => {
                    let text = rs.to_text();
                    if slot.as_deref() != Some(text.as_str()) {
                        tracing::info!("{name} masquerading rules: {text:?}");
                        *slot = Some(text);
                    }
                }
                Err(e) => {
                    *slot = None;
                    tracing::error!("Error syncing masquerade rules for {name}: {e}");
                }
            }
        }
    }
}

/// A Warning Event on the ConfigMap (best effort).
async fn record_event(client: &kube::Client, obj: &ObjectReference, node: &str, message: &str) {
    let now = jiff::Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{CONFIGMAP_NAME}.{:x}", now.as_nanosecond())),
            namespace: Some(CONFIGMAP_NAMESPACE.into()),
            ..Default::default()
        },
        involved_object: obj.clone(),
        reason: Some(INVALID_CONFIG.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.into()),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), CONFIGMAP_NAMESPACE);
    if let Err(error) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(%error, "could not record the InvalidConfig event");
    }
}

/// Wakes the loop on every change of the ConfigMap (a watch on its name).
async fn watch_configmap(client: kube::Client, notify: Arc<Notify>) {
    let api: Api<ConfigMap> = Api::namespaced(client, CONFIGMAP_NAMESPACE);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}"));
    let stream = watcher(api, cfg).default_backoff();
    futures::pin_mut!(stream);
    let mut initial = true;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(watcher::Event::InitDone) => {
                // The loop read the state itself at start; later relists may carry changes.
                if !initial {
                    notify.notify_one();
                }
                initial = false;
            }
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => notify.notify_one(),
            Err(e) => {
                tracing::warn!(error = %e, "watching the ip-masq-agent ConfigMap failed; retrying")
            }
        }
    }
}

/// Wakes the loop when the file's content changes (polled every second).
async fn watch_file(path: PathBuf, notify: Arc<Notify>) {
    let mut last = tokio::fs::read(&path).await.ok();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = tokio::fs::read(&path).await.ok();
        if now != last {
            last = now;
            notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recording(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl Nft for Recording {
        async fn apply(&self, json: &str) -> Result<(), String> {
            self.0.lock().unwrap().push(json.to_string());
            Ok(())
        }
    }

    fn daemon(path: PathBuf, nft: Arc<Recording>) -> Daemon {
        Daemon {
            config: MasqConfig::new(false),
            settings: MasqSettings {
                flags: MasqFlags {
                    enable_ipv6: true,
                    ..MasqFlags::default()
                },
                source: ConfigSource::File(path),
                node_name: "n1".into(),
            },
            nft,
            last_error: None,
            applied: [None, None],
            last_config_log: None,
        }
    }

    #[tokio::test]
    async fn a_bad_config_keeps_the_previous_config_and_skips_the_rule_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let nft = Arc::new(Recording::default());
        let mut d = daemon(path.clone(), nft.clone());

        // Missing file: defaults, both families programmed.
        d.sync().await;
        assert_eq!(nft.0.lock().unwrap().len(), 2);

        std::fs::write(&path, "nonMasqueradeCIDRs: [10.244.0.0/16, fc00::/48]\n").unwrap();
        d.sync().await;
        let applied = nft.0.lock().unwrap().clone();
        assert_eq!(applied.len(), 4);
        assert!(applied[3].contains("fc00::"), "{}", applied[3]);

        std::fs::write(&path, "nonMasqueradeCIDRs: [10.244.0.0/16, 10.0.0.1/8]\n").unwrap();
        d.sync().await;
        assert_eq!(
            nft.0.lock().unwrap().len(),
            4,
            "no rule sync on a bad config"
        );
        assert_eq!(
            d.config.non_masquerade_cidrs,
            ["10.244.0.0/16", "fc00::/48"]
        );
        assert!(
            d.last_error.as_ref().unwrap().1.contains("\"10.0.0.1/8\""),
            "{:?}",
            d.last_error
        );
    }
}
