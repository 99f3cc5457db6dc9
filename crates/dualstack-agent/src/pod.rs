//! One worker per pod bound to the node: sandbox (network namespace + pod network, or the
//! node's for `hostNetwork`), containers (started, restarted with back-off, probed), status
//! patches through `pods/NAME/status`, and graceful deletion (SIGTERM, the grace period,
//! SIGKILL, network torn down, then the pod deleted with grace 0 and a uid precondition, as
//! kubelet's status manager does). A restarted agent adopts what `--root-dir` records: live
//! shims keep running and the recorded attachment is reused (no second CNI ADD).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dualstack_controllers::run::events::{NORMAL, WARNING};
use dualstack_node::backoff::{Backoff, crash_loop_message, should_restart};
use dualstack_node::env::{PodFields, container_env};
use dualstack_node::files::{hostname_and_domain, hosts_file, pod_dns};
use dualstack_node::image::container_argv;
use dualstack_node::ips::{host_ips, sort_pod_ips};
use dualstack_node::probe::{Kind, ProbeState, Timing};
use dualstack_node::status::{
    self, CONTAINER_CREATING, CRASH_LOOP_BACK_OFF, CREATE_CONTAINER_CONFIG_ERROR, Exit, State,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::network::Attachment;
use crate::runtime::{self, RunFiles, ShimSpec};
use crate::{Agent, probe};

/// `pods/<uid>/sandbox.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    /// The pod's IPs in the node's family order.
    pub ips: Vec<IpAddr>,
    /// `hostNetwork`.
    pub host_network: bool,
    /// The network attachment (None for `hostNetwork`).
    pub attachment: Option<Attachment>,
}

/// `pods/<uid>/pod.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PodRecord {
    namespace: String,
    name: String,
    uid: String,
}

enum Event {
    Exited {
        idx: usize,
        n: u32,
        exit: Exit,
    },
    Probed {
        idx: usize,
        n: u32,
        kind: Kind,
        /// Err: the failure's message.
        result: Result<(), String>,
        at: Timestamp,
    },
}

struct Ctr {
    spec: Container,
    n: u32,
    state: State,
    last: Option<Exit>,
    /// The exit that waits for a restart (back-off).
    pending: Option<Exit>,
    running: bool,
    ready: bool,
    readiness: Option<ProbeState>,
    liveness: Option<ProbeState>,
    probing: [bool; 2],
}

impl Ctr {
    fn files(&self, dir: &Path) -> RunFiles {
        RunFiles::new(&dir.join(&self.spec.name), self.n)
    }
}

/// A pod worker.
pub struct Worker {
    agent: Arc<Agent>,
    pod: Pod,
    uid: String,
    dir: PathBuf,
    updates: watch::Receiver<Option<Pod>>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    sandbox: Option<Sandbox>,
    ctrs: Vec<Ctr>,
    backoff: Backoff,
    reported: Option<PodStatus>,
    start_time: Timestamp,
    gone: bool,
    sandbox_error: Option<String>,
    /// The attachment of a sandbox whose namespace is gone (the node restarted): released
    /// (CNI DEL) before a new sandbox is made.
    stale_attachment: Option<Attachment>,
    /// This pod's events, recorded one at a time in the order they happened.
    events: mpsc::UnboundedSender<PodEvent>,
}

/// An event to record: the object (a container), type, reason and message.
type PodEvent = (ObjectReference, &'static str, &'static str, String);

fn now() -> Timestamp {
    Timestamp::now()
}

fn io_msg(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Worker {
    /// A worker for `pod`; `updates` carries later versions (None: gone from the API).
    pub fn new(agent: Arc<Agent>, pod: Pod, updates: watch::Receiver<Option<Pod>>) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = agent.pods_dir().join(&uid);
        let (tx, rx) = mpsc::unbounded_channel();
        // One task records the pod's events in order: a task per event could overtake another
        // (Created before Pulled). It ends once the worker and its shim watchers are gone.
        let (events, mut queue) = mpsc::unbounded_channel::<PodEvent>();
        let recorder = agent.events.clone();
        tokio::spawn(async move {
            while let Some((obj, type_, reason, message)) = queue.recv().await {
                recorder.record(&obj, type_, reason, &message).await;
            }
        });
        let ctrs = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| Ctr {
                spec: c.clone(),
                n: 0,
                state: State::Waiting {
                    reason: CONTAINER_CREATING.into(),
                    message: None,
                },
                last: None,
                pending: None,
                running: false,
                ready: false,
                readiness: None,
                liveness: None,
                probing: [false; 2],
            })
            .collect();
        Worker {
            agent,
            pod,
            uid,
            dir,
            updates,
            tx,
            rx,
            sandbox: None,
            ctrs,
            backoff: Backoff::default(),
            reported: None,
            start_time: now(),
            gone: false,
            sandbox_error: None,
            stale_attachment: None,
            events,
        }
    }

    /// Records an event about container `idx`, as kubelet's `recordContainerEvent` does
    /// (`involvedObject.fieldPath: spec.containers{NAME}`); best effort, in the background.
    fn event(&self, idx: usize, type_: &'static str, reason: &'static str, message: String) {
        let _ = self
            .events
            .send((self.container_ref(idx), type_, reason, message));
    }

    fn container_ref(&self, idx: usize) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: self.pod.metadata.name.clone(),
            namespace: self.pod.metadata.namespace.clone(),
            uid: Some(self.uid.clone()),
            resource_version: self.pod.metadata.resource_version.clone(),
            field_path: Some(format!("spec.containers{{{}}}", self.ctrs[idx].spec.name)),
        }
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(
            self.agent.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }
    fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }
    fn namespace(&self) -> String {
        self.pod.metadata.namespace.clone().unwrap_or_default()
    }
    fn spec_host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }
    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }
    fn terminal(&self) -> bool {
        matches!(self.phase().as_str(), "Succeeded" | "Failed")
    }
    fn phase(&self) -> String {
        let statuses: Vec<_> = self.facts().iter().map(status::Container::status).collect();
        status::phase(
            self.pod.spec.as_ref().unwrap_or(&Default::default()),
            &statuses,
        )
        .to_string()
    }
    fn deleting(&self) -> bool {
        self.gone || self.pod.metadata.deletion_timestamp.is_some()
    }

    /// Runs until the pod is deleted.
    pub async fn run(mut self) {
        let api_terminal = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let adopted = self.adopt();
        if !adopted && api_terminal {
            // Finished before this agent knew it (or its records are gone): nothing to run.
            self.wait_for_deletion().await;
            self.finish_deletion().await;
            return;
        }
        loop {
            if self.deleting() {
                self.terminate().await;
                return;
            }
            if self.sandbox.is_none() {
                if let Some(a) = self.stale_attachment.take()
                    && let Err(e) = self.agent.network.teardown(&a).await
                {
                    tracing::warn!(pod = %self.name(), error = %e, "releasing the lost sandbox's network failed");
                }
                self.ensure_sandbox().await;
            }
            let wake = self.sync();
            self.report().await;
            let sleep = async {
                match wake {
                    Some(t) => {
                        let d = t.duration_since(now());
                        tokio::time::sleep(Duration::try_from(d).unwrap_or(Duration::ZERO)).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let mut net = self.agent.network_ready.clone();
            let waiting_net = self.sandbox.is_none() && !*net.borrow();
            tokio::select! {
                r = self.updates.changed() => {
                    match r {
                        Ok(()) => match self.updates.borrow_and_update().clone() {
                            Some(p) => self.pod = p,
                            None => self.gone = true,
                        },
                        Err(_) => self.gone = true,
                    }
                }
                Some(ev) = self.rx.recv() => self.handle(ev),
                _ = sleep => {}
                _ = net.wait_for(|r| *r), if waiting_net => {}
            }
            while let Ok(ev) = self.rx.try_recv() {
                self.handle(ev);
            }
        }
    }

    async fn wait_for_deletion(&mut self) {
        while !self.deleting() {
            match self.updates.changed().await {
                Ok(()) => match self.updates.borrow_and_update().clone() {
                    Some(p) => self.pod = p,
                    None => self.gone = true,
                },
                Err(_) => self.gone = true,
            }
        }
    }

    // ---- sandbox ------------------------------------------------------------------

    fn netns_path(&self) -> PathBuf {
        self.dir.join("net.ns")
    }

    async fn ensure_sandbox(&mut self) {
        let host_network = self.spec_host_network();
        let record = PodRecord {
            namespace: self.namespace(),
            name: self.name(),
            uid: self.uid.clone(),
        };
        if let Err(e) = runtime::write_file(
            &self.dir.join("pod.json"),
            &serde_json::to_vec(&record).unwrap_or_default(),
        ) {
            self.sandbox_error = Some(io_msg(e));
            return;
        }
        let node_ips = self.agent.config.node_ips.clone();
        let sandbox = if host_network {
            Sandbox {
                ips: host_ips(&node_ips),
                host_network,
                attachment: None,
            }
        } else {
            if !*self.agent.network_ready.borrow() {
                self.sandbox_error = Some(dualstack_node::node::NETWORK_NOT_READY_MESSAGE.into());
                return;
            }
            let ns = self.netns_path();
            let ns2 = ns.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || dualstack_host::netns::create(&ns2))
                .await
                .map_err(io_msg)
                .and_then(|r| r.map_err(io_msg))
            {
                self.sandbox_error = Some(format!("creating the pod network namespace: {e}"));
                return;
            }
            // The runtime, not the network plugin, brings the sandbox's loopback up (as
            // containerd does): the reference `bridge` plugin leaves `lo` down.
            if let Err(e) = loopback_up(&ns).await {
                self.sandbox_error = Some(format!("bringing up the pod's loopback: {e}"));
                return;
            }
            let a = Attachment {
                container_id: format!("dualstack-{}", self.uid),
                netns: ns,
                ifname: "eth0".into(),
                pod_namespace: self.namespace(),
                pod_name: self.name(),
                pod_uid: self.uid.clone(),
            };
            match self.agent.network.setup(&a).await {
                Ok(ips) => Sandbox {
                    ips: sort_pod_ips(&node_ips, &ips),
                    host_network,
                    attachment: Some(a),
                },
                Err(e) => {
                    tracing::warn!(pod = %self.name(), error = %e, "pod network setup failed");
                    self.sandbox_error = Some(format!("failed to set up sandbox network: {e}"));
                    return;
                }
            }
        };
        if let Err(e) = self.write_pod_files(&sandbox) {
            self.sandbox_error = Some(e);
            return;
        }
        if let Err(e) = runtime::write_file(
            &self.dir.join("sandbox.json"),
            &serde_json::to_vec_pretty(&sandbox).unwrap_or_default(),
        ) {
            self.sandbox_error = Some(io_msg(e));
            return;
        }
        self.sandbox_error = None;
        self.sandbox = Some(sandbox);
    }

    fn write_pod_files(&self, sandbox: &Sandbox) -> Result<(), String> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let cfg = &self.agent.config;
        let (hostname, domain) = hostname_and_domain(
            &self.name(),
            &self.namespace(),
            &spec,
            &cfg.cluster_dns.domain,
        );
        let hosts = if sandbox.host_network {
            // kubelet: the node's own hosts file under the host-network header.
            let node = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            format!(
                "{}{node}",
                dualstack_node::files::MANAGED_HOSTS_HEADER_HOST_NETWORK
            )
        } else {
            hosts_file(&sandbox.ips, &hostname, domain.as_deref(), &spec, false)
        };
        runtime::write_file(&self.dir.join("etc.hosts"), hosts.as_bytes()).map_err(io_msg)?;
        let dns = pod_dns(
            &spec,
            &self.namespace(),
            &cfg.cluster_dns,
            &self.agent.host_dns,
        );
        runtime::write_file(&self.dir.join("resolv.conf"), dns.render().as_bytes()).map_err(io_msg)
    }

    /// Reads what `--root-dir` recorded for this pod; true if it had a sandbox.
    fn adopt(&mut self) -> bool {
        let Ok(bytes) = std::fs::read(self.dir.join("sandbox.json")) else {
            return false;
        };
        let Ok(sandbox) = serde_json::from_slice::<Sandbox>(&bytes) else {
            return false;
        };
        let previous = self.pod.status.clone().unwrap_or_default();
        if let Some(t) = previous.start_time.as_ref() {
            self.start_time = t.0;
        }
        for idx in 0..self.ctrs.len() {
            let cdir = self.dir.join(&self.ctrs[idx].spec.name);
            let Some(latest) = RunFiles::latest(&cdir) else {
                continue;
            };
            let c = &mut self.ctrs[idx];
            c.n = latest.n;
            if latest.n > 0 {
                c.last = RunFiles::new(&cdir, latest.n - 1)
                    .read_exit()
                    .map(|e| e.to_exit());
            }
            if let Some(exit) = latest.read_exit() {
                let _ = self.tx.send(Event::Exited {
                    idx,
                    n: latest.n,
                    exit: exit.to_exit(),
                });
                c.running = true;
                continue;
            }
            match latest.read_shim().filter(|s| s.alive()) {
                Some(shim) => {
                    let started = latest
                        .read_pid()
                        .and_then(|p| p.started_at.parse().ok())
                        .unwrap_or_else(now);
                    c.running = true;
                    c.state = State::Running {
                        started_at: started,
                    };
                    let was_ready = previous
                        .container_statuses
                        .iter()
                        .flatten()
                        .any(|s| s.name == c.spec.name && s.ready);
                    Self::arm_probes(c, started, was_ready);
                    let tx = self.tx.clone();
                    let n = latest.n;
                    tokio::spawn(async move {
                        runtime::wait_shim(shim).await;
                        let exit = read_exit_or_lost(&latest);
                        let _ = tx.send(Event::Exited { idx, n, exit });
                    });
                }
                None => {
                    let exit = read_exit_or_lost(&latest);
                    let _ = self.tx.send(Event::Exited {
                        idx,
                        n: latest.n,
                        exit,
                    });
                    c.running = true;
                }
            }
        }
        if !sandbox.host_network && !dualstack_host::netns::exists(&self.netns_path()) {
            // The namespace is gone with every process in it (the node restarted): the
            // containers count as exited and a new sandbox is made, as kubelet does after a
            // reboot. Its old addresses are released first (the same container id is used).
            tracing::info!(pod = %self.name(), ips = ?sandbox.ips, "the pod's sandbox is gone; making a new one");
            self.stale_attachment = sandbox.attachment;
            let _ = std::fs::remove_file(self.dir.join("sandbox.json"));
            return true;
        }
        tracing::info!(pod = %self.name(), ips = ?sandbox.ips, "adopted pod");
        self.sandbox = Some(sandbox);
        true
    }

    // ---- containers ---------------------------------------------------------------

    fn arm_probes(c: &mut Ctr, started: Timestamp, ready: bool) {
        c.readiness = c.spec.readiness_probe.as_ref().map(|p| {
            let mut s = ProbeState::new(Kind::Readiness, Timing::of(p), started);
            s.result = ready;
            s
        });
        c.liveness = c
            .spec
            .liveness_probe
            .as_ref()
            .map(|p| ProbeState::new(Kind::Liveness, Timing::of(p), started));
        c.ready = c.readiness.as_ref().is_none_or(|r| r.result);
        c.probing = [false; 2];
    }

    fn pod_fields(&self) -> PodFields {
        let m = &self.pod.metadata;
        let spec = self.pod.spec.clone().unwrap_or_default();
        PodFields {
            name: self.name(),
            namespace: self.namespace(),
            uid: self.uid.clone(),
            labels: m.labels.clone().unwrap_or_default(),
            annotations: m.annotations.clone().unwrap_or_default(),
            node_name: spec.node_name.unwrap_or_default(),
            service_account_name: spec.service_account_name.unwrap_or_default(),
            pod_ips: self
                .sandbox
                .iter()
                .flat_map(|s| s.ips.iter())
                .map(IpAddr::to_string)
                .collect(),
            host_ips: host_ips(&self.agent.config.node_ips)
                .iter()
                .map(IpAddr::to_string)
                .collect(),
        }
    }

    /// Starts, restarts or holds each container; returns when to look again.
    fn sync(&mut self) -> Option<Timestamp> {
        let sandbox = self.sandbox.clone()?;
        let t = now();
        let policy = self.restart_policy();
        let terminal = self.terminal();
        let fields = self.pod_fields();
        let mut wake: Option<Timestamp> = None;
        let mut soonest = |at: Timestamp| {
            wake = Some(wake.map_or(at, |w: Timestamp| w.min(at)));
        };
        for idx in 0..self.ctrs.len() {
            let name = self.ctrs[idx].spec.name.clone();
            if let Some(exit) = self.ctrs[idx].pending.clone() {
                if terminal || !should_restart(&policy, exit.exit_code) {
                    let c = &mut self.ctrs[idx];
                    c.pending = None;
                    c.state = State::Terminated(exit);
                    continue;
                }
                let key = format!("{}/{name}", self.uid);
                if let Some(d) = self.backoff.in_back_off_since(&key, exit.finished_at, t) {
                    // kubelet's message (a repeat is counted on the same Event).
                    self.event(
                        idx,
                        WARNING,
                        "BackOff",
                        format!(
                            "Back-off restarting failed container {name} in pod {}_{}({})",
                            fields.name, fields.namespace, self.uid
                        ),
                    );
                    let c = &mut self.ctrs[idx];
                    c.state = State::Waiting {
                        reason: CRASH_LOOP_BACK_OFF.into(),
                        message: Some(crash_loop_message(
                            d,
                            &name,
                            &fields.name,
                            &fields.namespace,
                            &self.uid,
                        )),
                    };
                    c.last = Some(exit.clone());
                    soonest(exit.finished_at + SignedDuration::try_from(d).unwrap_or_default());
                    continue;
                }
                self.backoff.next(&key, t);
                let c = &mut self.ctrs[idx];
                c.last = Some(exit);
                c.pending = None;
                c.n += 1;
                self.start(idx, &sandbox, &fields);
            } else if !self.ctrs[idx].running
                && !matches!(self.ctrs[idx].state, State::Terminated(_))
            {
                self.start(idx, &sandbox, &fields);
            }
            let c = &self.ctrs[idx];
            for p in [&c.readiness, &c.liveness].into_iter().flatten() {
                let i = usize::from(p.kind == Kind::Liveness);
                if c.running && matches!(c.state, State::Running { .. }) && !c.probing[i] {
                    soonest(p.next_due());
                }
            }
        }
        self.launch_due_probes(t);
        wake
    }

    fn start(&mut self, idx: usize, sandbox: &Sandbox, fields: &PodFields) {
        let c = &self.ctrs[idx];
        let exe = self.agent.config.shim_exe.to_string_lossy().into_owned();
        // kubelet makes sure of the image before anything else, and a node that has it says so
        // on every start. Here an image is "present" when the container can run: it names a
        // command, or a built-in image.
        if container_argv(&c.spec, &[], &exe).is_some() {
            let image = c.spec.image.clone().unwrap_or_default();
            let message = format!("Container image {image:?} already present on machine");
            self.event(idx, NORMAL, "Pulled", message);
        }
        let env = match container_env(&c.spec, fields) {
            Ok(e) => e,
            Err(e) => {
                self.event(idx, WARNING, "Failed", format!("Error: {e}"));
                self.ctrs[idx].state = State::Waiting {
                    reason: CREATE_CONTAINER_CONFIG_ERROR.into(),
                    message: Some(e.to_string()),
                };
                return;
            }
        };
        let Some(argv) = container_argv(&c.spec, &env, &exe) else {
            let image = c.spec.image.clone().unwrap_or_default();
            let message = format!(
                "container {:?} has no command: this node runs host programs and pulls no image (image {image:?}); set command",
                c.spec.name
            );
            self.event(idx, WARNING, "Failed", format!("Error: {message}"));
            self.ctrs[idx].state = State::Waiting {
                reason: CREATE_CONTAINER_CONFIG_ERROR.into(),
                message: Some(message),
            };
            return;
        };
        let files = c.files(&self.dir);
        let mut env_all = vec![
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            (
                "HOSTNAME".to_string(),
                if sandbox.host_network {
                    self.agent.config.node_name.clone()
                } else {
                    fields.name.clone()
                },
            ),
        ];
        for (k, v) in env {
            env_all.retain(|(n, _)| *n != k);
            env_all.push((k, v));
        }
        let spec = ShimSpec {
            argv,
            env: env_all,
            cwd: c.spec.working_dir.clone().filter(|d| !d.is_empty()),
            netns: (!sandbox.host_network).then(|| self.netns_path()),
            hosts: Some(self.dir.join("etc.hosts")),
            resolv: Some(self.dir.join("resolv.conf")),
            hostname: (!sandbox.host_network).then(|| {
                let spec = self.pod.spec.clone().unwrap_or_default();
                hostname_and_domain(&fields.name, &fields.namespace, &spec, "").0
            }),
            log: files.log(),
            pid_file: files.pid(),
            exit_file: files.exit(),
            stdin: (c.spec.stdin == Some(true)).then(|| files.stdin()),
            stdin_once: c.spec.stdin_once == Some(true),
            tty: c.spec.tty == Some(true),
            resize: (c.spec.tty == Some(true)).then(|| files.resize()),
        };
        let t = now();
        match runtime::spawn_shim(&self.agent.config.shim_exe, &files, &spec) {
            Ok(shim) => {
                let name = self.ctrs[idx].spec.name.clone();
                self.event(idx, NORMAL, "Created", format!("Created container: {name}"));
                let (obj, events) = (self.container_ref(idx), self.events.clone());
                let c = &mut self.ctrs[idx];
                c.running = true;
                c.state = State::Running { started_at: t };
                Self::arm_probes(c, t, false);
                let tx = self.tx.clone();
                let n = c.n;
                tokio::spawn(async move {
                    // Started once the shim has the process (its pid file), or Failed with
                    // the shim's start error, as kubelet after the runtime's StartContainer;
                    // looked for until the shim ends, and never holding up its exit.
                    let record = |type_, reason, message: String| {
                        let _ = events.send((obj.clone(), type_, reason, message));
                    };
                    let started = |files: &RunFiles| {
                        if let Some(e) = files.read_exit().and_then(|x| x.error) {
                            record(WARNING, "Failed", format!("Error: {e}"));
                            return true;
                        }
                        if files.read_pid().is_some() {
                            record(NORMAL, "Started", format!("Started container {name}"));
                            return true;
                        }
                        false
                    };
                    let wait = runtime::wait_shim(shim);
                    tokio::pin!(wait);
                    let mut told = false;
                    loop {
                        tokio::select! {
                            _ = &mut wait => break,
                            _ = tokio::time::sleep(Duration::from_millis(10)), if !told => {
                                told = started(&files);
                            }
                        }
                    }
                    if !told {
                        started(&files);
                    }
                    let exit = read_exit_or_lost(&files);
                    let _ = tx.send(Event::Exited { idx, n, exit });
                });
            }
            Err(e) => {
                self.event(
                    idx,
                    WARNING,
                    "Failed",
                    format!("Error: starting the shim: {e}"),
                );
                let exit = Exit {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(format!("starting the shim: {e}")),
                    started_at: None,
                    finished_at: t,
                };
                let _ = self.tx.send(Event::Exited { idx, n: c.n, exit });
                self.ctrs[idx].running = true;
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Exited { idx, n, exit } => {
                let Some(c) = self.ctrs.get_mut(idx).filter(|c| c.n == n) else {
                    return;
                };
                tracing::info!(pod = %self.pod.metadata.name.as_deref().unwrap_or(""), container = %c.spec.name, code = exit.exit_code, "container exited");
                c.running = false;
                c.ready = false;
                c.readiness = None;
                c.liveness = None;
                if self.pod.metadata.deletion_timestamp.is_some() || self.gone {
                    c.state = State::Terminated(exit);
                } else {
                    c.state = State::Terminated(exit.clone());
                    c.pending = Some(exit);
                }
            }
            Event::Probed {
                idx,
                n,
                kind,
                result,
                at,
            } => {
                let ok = result.is_ok();
                if let Err(why) = &result
                    && self.ctrs.get(idx).is_some_and(|c| c.n == n && c.running)
                {
                    // kubelet's prober: every failed probe is an event (repeats are counted).
                    let which = match kind {
                        Kind::Readiness => "Readiness",
                        Kind::Liveness => "Liveness",
                    };
                    self.event(
                        idx,
                        WARNING,
                        "Unhealthy",
                        format!("{which} probe failed: {why}"),
                    );
                }
                let grace = self.grace_seconds();
                let dir = self.dir.clone();
                let Some(c) = self.ctrs.get_mut(idx).filter(|c| c.n == n && c.running) else {
                    return;
                };
                let i = usize::from(kind == Kind::Liveness);
                c.probing[i] = false;
                let probe = if kind == Kind::Readiness {
                    c.readiness.as_mut()
                } else {
                    c.liveness.as_mut()
                };
                let Some(p) = probe else { return };
                match (kind, p.record(ok, at)) {
                    (Kind::Readiness, Some(r)) => c.ready = r,
                    (Kind::Liveness, Some(false)) => {
                        tracing::info!(container = %c.spec.name, "liveness probe failed; container will be restarted");
                        let files = c.files(&dir);
                        let message = format!(
                            "Container {} failed liveness probe, will be restarted",
                            c.spec.name
                        );
                        tokio::spawn(kill_run(files, grace));
                        // kubelet puts the probe on hold: no more failures of this run.
                        c.liveness = None;
                        self.event(idx, NORMAL, "Killing", message);
                    }
                    _ => {}
                }
            }
        }
    }

    fn launch_due_probes(&mut self, t: Timestamp) {
        let Some(sandbox) = &self.sandbox else { return };
        let pod_ip = sandbox.ips.first().copied();
        let netns = (!sandbox.host_network).then(|| self.netns_path());
        for idx in 0..self.ctrs.len() {
            let dir = self.dir.clone();
            let c = &mut self.ctrs[idx];
            if !c.running || !matches!(c.state, State::Running { .. }) {
                continue;
            }
            for kind in [Kind::Readiness, Kind::Liveness] {
                let i = usize::from(kind == Kind::Liveness);
                let (state, spec) = match kind {
                    Kind::Readiness => (&c.readiness, &c.spec.readiness_probe),
                    Kind::Liveness => (&c.liveness, &c.spec.liveness_probe),
                };
                let (Some(state), Some(spec)) = (state, spec) else {
                    continue;
                };
                if c.probing[i] || state.next_due() > t {
                    continue;
                }
                let files = c.files(&dir);
                if spec.exec.is_some() && files.read_pid().is_none() {
                    // The shim has not recorded the process yet: the probe waits for it
                    // (a probe of nothing would be a false failure).
                    continue;
                }
                c.probing[i] = true;
                let target = probe::Target {
                    pod_ip,
                    netns: netns.clone(),
                    pid: files.read_pid().map(|p| p.pid),
                    spec_file: files.spec(),
                    exe: self.agent.config.shim_exe.clone(),
                };
                let (spec, container, timeout, tx, n) = (
                    spec.clone(),
                    c.spec.clone(),
                    state.timing.timeout,
                    self.tx.clone(),
                    c.n,
                );
                tokio::spawn(async move {
                    let at = now();
                    let result = probe::run(&spec, &container, &target, timeout).await;
                    let _ = tx.send(Event::Probed {
                        idx,
                        n,
                        kind,
                        result,
                        at,
                    });
                });
            }
        }
    }

    fn facts(&self) -> Vec<status::Container> {
        self.ctrs
            .iter()
            .map(|c| {
                let mut state = c.state.clone();
                if self.sandbox.is_none() && !matches!(state, State::Terminated(_)) {
                    state = State::Waiting {
                        reason: CONTAINER_CREATING.into(),
                        message: None,
                    };
                }
                status::Container {
                    name: c.spec.name.clone(),
                    image: c.spec.image.clone().unwrap_or_default(),
                    state,
                    last: c.last.clone(),
                    restart_count: i32::try_from(c.n).unwrap_or(i32::MAX),
                    ready: c.ready,
                    container_id: Some(format!("dualstack://{}/{}/{}", self.uid, c.spec.name, c.n)),
                }
            })
            .collect()
    }

    async fn report(&mut self) {
        if self.gone {
            return;
        }
        let facts = self.facts();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let previous = self.reported.clone().or_else(|| self.pod.status.clone());
        let pod_ips: Vec<IpAddr> = self.sandbox.iter().flat_map(|s| s.ips.clone()).collect();
        let host = host_ips(&self.agent.config.node_ips);
        let st = status::pod_status(&status::Input {
            spec: &spec,
            previous: previous.as_ref(),
            containers: &facts,
            pod_ips: &pod_ips,
            host_ips: &host,
            start_time: self.start_time,
            sandbox_ready: self.sandbox.is_some(),
            now: now(),
        });
        if self.reported.as_ref() == Some(&st) {
            return;
        }
        match self
            .api()
            .patch_status(
                &self.name(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": st})),
            )
            .await
        {
            Ok(p) => {
                self.reported = Some(st);
                if p.metadata.uid.as_deref() == Some(&self.uid) {
                    self.pod.metadata.deletion_timestamp = p.metadata.deletion_timestamp.or(self
                        .pod
                        .metadata
                        .deletion_timestamp
                        .take());
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => self.gone = true,
            Err(e) => tracing::warn!(pod = %self.name(), error = %e, "pod status update failed"),
        }
    }

    // ---- deletion -----------------------------------------------------------------

    fn grace_seconds(&self) -> i64 {
        self.pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0)
    }

    async fn terminate(&mut self) {
        let grace = self.grace_seconds();
        let running: Vec<usize> = (0..self.ctrs.len())
            .filter(|&i| {
                self.ctrs[i].running
                    && self.ctrs[i].pending.is_none()
                    && matches!(self.ctrs[i].state, State::Running { .. })
            })
            .collect();
        let mut left: HashSet<usize> = running.iter().copied().collect();
        for &i in &running {
            let name = self.ctrs[i].spec.name.clone();
            self.event(i, NORMAL, "Killing", format!("Stopping container {name}"));
            let f = self.ctrs[i].files(&self.dir);
            signal_when_started(&f, Signal::SIGTERM).await;
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        let mut killed = false;
        while !left.is_empty() {
            tokio::select! {
                Some(ev) = self.rx.recv() => {
                    if let Event::Exited { idx, .. } = &ev {
                        left.remove(idx);
                    }
                    self.handle(ev);
                }
                _ = tokio::time::sleep_until(deadline), if !killed => {
                    for &i in &left {
                        runtime::signal_container(&self.ctrs[i].files(&self.dir), Signal::SIGKILL);
                    }
                    killed = true;
                }
                _ = tokio::time::sleep(Duration::from_secs(10)), if killed => break,
            }
        }
        for c in &mut self.ctrs {
            c.pending = None;
        }
        if !self.gone {
            self.report().await;
        }
        self.teardown_sandbox().await;
        self.finish_deletion().await;
    }

    async fn teardown_sandbox(&mut self) {
        let sandbox = self.sandbox.take().or_else(|| {
            serde_json::from_slice(&std::fs::read(self.dir.join("sandbox.json")).ok()?).ok()
        });
        if let Some(a) = sandbox.and_then(|s| s.attachment) {
            if let Err(e) = self.agent.network.teardown(&a).await {
                tracing::warn!(pod = %self.name(), error = %e, "pod network teardown failed");
            }
        } else if self.netns_path().exists() {
            // Created but never attached: still remove any half-made attachment.
            let a = Attachment {
                container_id: format!("dualstack-{}", self.uid),
                netns: self.netns_path(),
                ifname: "eth0".into(),
                pod_namespace: self.namespace(),
                pod_name: self.name(),
                pod_uid: self.uid.clone(),
            };
            let _ = self.agent.network.teardown(&a).await;
        }
        let ns = self.netns_path();
        let _ = tokio::task::spawn_blocking(move || dualstack_host::netns::remove(&ns)).await;
    }

    async fn finish_deletion(&mut self) {
        // Files first: once the pod is gone from the API nothing of it is left on the node
        // (the network was torn down before; a crash here leaves a pod being deleted with no
        // records, which the next agent deletes without running anything).
        let _ = std::fs::remove_dir_all(&self.dir);
        if !self.gone {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.api().delete(&self.name(), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(pod = %self.name(), error = %e, "deleting the pod failed"),
            }
        }
        self.backoff.forget_prefix(&self.uid);
        tracing::info!(pod = %self.name(), "pod deleted");
    }
}

fn read_exit_or_lost(files: &RunFiles) -> Exit {
    match files.read_exit() {
        Some(e) => e.to_exit(),
        None => Exit {
            exit_code: 137,
            signal: None,
            reason: "ContainerStatusUnknown".into(),
            message: Some("The container could not be located when the pod was terminated".into()),
            started_at: None,
            finished_at: now(),
        },
    }
}

/// SIGTERM once the shim has recorded the container process (a just-started container may not
/// have its pid file yet).
async fn signal_when_started(files: &RunFiles, sig: Signal) {
    for _ in 0..50 {
        if files.read_pid().is_some() || files.read_exit().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runtime::signal_container(files, sig);
}

/// Kills one run: SIGTERM, then SIGKILL after the grace period.
async fn kill_run(files: RunFiles, grace: i64) {
    signal_when_started(&files, Signal::SIGTERM).await;
    let deadline =
        std::time::Instant::now() + Duration::from_secs(u64::try_from(grace).unwrap_or(0));
    while std::time::Instant::now() < deadline {
        if files.read_exit().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runtime::signal_container(&files, Signal::SIGKILL);
}

/// Removes what `--root-dir` holds for pods the API no longer has (after an agent restart):
/// their processes are killed, their network torn down, their files removed.
pub async fn clean_orphans(agent: &Arc<Agent>, live: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(agent.pods_dir()) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let uid = e.file_name().to_string_lossy().to_string();
        if live.contains(&uid) {
            continue;
        }
        let dir = e.path();
        for c in std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            if let Some(run) = RunFiles::latest(&c.path())
                && run.read_exit().is_none()
            {
                runtime::signal_container(&run, Signal::SIGKILL);
            }
        }
        let sandbox: Option<Sandbox> = std::fs::read(dir.join("sandbox.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(a) = sandbox.and_then(|s| s.attachment) {
            let _ = agent.network.teardown(&a).await;
        }
        let ns = dir.join("net.ns");
        let _ = tokio::task::spawn_blocking(move || dualstack_host::netns::remove(&ns)).await;
        let _ = std::fs::remove_dir_all(&dir);
        tracing::info!(%uid, "cleaned up a pod the API no longer has");
    }
}

/// Sets `lo` up inside the pod's network namespace.
async fn loopback_up(ns: &std::path::Path) -> Result<(), dualstack_host::netlink::NetlinkError> {
    let nl = dualstack_host::netlink::Netlink::connect_in(ns)?;
    if let Some(lo) = nl.link_by_name("lo").await?
        && !lo.up
    {
        nl.set_up(lo.index).await?;
    }
    Ok(())
}
