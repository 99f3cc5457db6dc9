//! A pod's `status` from what the agent knows about its containers, as kubelet's
//! `generateAPIPodStatus` builds it: `containerStatuses` (state, reason, exit code,
//! `restartCount`, `ready`), the phase (`getPhase`), the conditions
//! (`PodReadyToStartContainers`, `Initialized`, `Ready`, `ContainersReady`, `PodScheduled`),
//! `startTime`, `podIPs` and `hostIPs`.

use std::net::IpAddr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// kubelet's waiting reason while the sandbox and the container are being made.
pub const CONTAINER_CREATING: &str = "ContainerCreating";
/// kubelet's waiting reason during restart back-off.
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
/// kubelet's waiting reason when the container's configuration cannot be built.
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";

/// How a container run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code (128 + signal when killed by a signal, as container runtimes report).
    pub exit_code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `StartError`, `ContainerStatusUnknown`.
    pub reason: String,
    /// A message (start errors).
    pub message: Option<String>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Timestamp,
}

impl Exit {
    /// A normal exit: reason `Completed` for 0, `Error` otherwise; a signal gives 128 + signal.
    pub fn new(
        code: Option<i32>,
        signal: Option<i32>,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    ) -> Exit {
        let exit_code = code.unwrap_or_else(|| 128 + signal.unwrap_or(9));
        Exit {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at,
            finished_at,
        }
    }

    fn terminated(&self, container_id: Option<String>) -> ContainerStateTerminated {
        ContainerStateTerminated {
            container_id,
            exit_code: self.exit_code,
            signal: self.signal,
            reason: Some(self.reason.clone()),
            message: self.message.clone(),
            started_at: self.started_at.map(Time),
            finished_at: Some(Time(self.finished_at)),
        }
    }
}

/// What the agent knows about one container now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running and not started: `reason` is `ContainerCreating`, `CrashLoopBackOff`,
    /// `CreateContainerConfigError`, ...
    Waiting {
        /// kubelet's reason.
        reason: String,
        /// kubelet's message.
        message: Option<String>,
    },
    /// Its process runs.
    Running {
        /// When it started.
        started_at: Timestamp,
    },
    /// It ended and will not be started again.
    Terminated(Exit),
}

/// One container's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// `name`.
    pub name: String,
    /// `image` from the spec (reported as is; nothing is pulled).
    pub image: String,
    /// The current state.
    pub state: State,
    /// The previous run's end (`lastState.terminated`).
    pub last: Option<Exit>,
    /// How often it was started again.
    pub restart_count: i32,
    /// Running and its readiness probe (if any) succeeds.
    pub ready: bool,
    /// The runtime's id of the current run (`dualstack://...`).
    pub container_id: Option<String>,
}

impl Container {
    /// The API form.
    pub fn status(&self) -> ContainerStatus {
        let state = match &self.state {
            State::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            State::Running { started_at } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..Default::default()
            },
            State::Terminated(e) => ContainerState {
                terminated: Some(e.terminated(self.container_id.clone())),
                ..Default::default()
            },
        };
        let running = matches!(self.state, State::Running { .. });
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: String::new(),
            container_id: self
                .container_id
                .clone()
                .filter(|_| !matches!(self.state, State::Waiting { .. })),
            state: Some(state),
            last_state: Some(match &self.last {
                Some(e) => ContainerState {
                    terminated: Some(e.terminated(None)),
                    ..Default::default()
                },
                None => ContainerState::default(),
            }),
            ready: self.ready && running,
            restart_count: self.restart_count,
            started: Some(running),
            ..Default::default()
        }
    }
}

/// kubelet's `getPhase` for regular containers.
pub fn phase(spec: &PodSpec, statuses: &[ContainerStatus]) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    for c in &spec.containers {
        let Some(st) = statuses.iter().find(|s| s.name == c.name) else {
            unknown += 1;
            continue;
        };
        let state = st.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            if st
                .last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .is_some()
            {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if waiting > 0 {
        "Pending"
    } else if running > 0 && unknown == 0 {
        "Running"
    } else if running == 0 && stopped > 0 && unknown == 0 {
        if policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

fn condition(
    kind: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
    now: Timestamp,
    previous: &[PodCondition],
) -> PodCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let since = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: kind.into(),
        status,
        reason,
        message,
        last_transition_time: Some(since),
        last_probe_time: None,
        observed_generation: None,
    }
}

/// kubelet's pod conditions, in its order. `sandbox_ready`: the pod's network is set up.
pub fn conditions(
    phase: &str,
    spec: &PodSpec,
    statuses: &[ContainerStatus],
    sandbox_ready: bool,
    now: Timestamp,
    previous: &[PodCondition],
) -> Vec<PodCondition> {
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    for c in &spec.containers {
        match statuses.iter().find(|s| s.name == c.name) {
            None => unknown.push(c.name.clone()),
            Some(s) if !s.ready => unready.push(c.name.clone()),
            Some(_) => {}
        }
    }
    let (ready, reason, message) = if terminal {
        (false, Some("PodCompleted".to_string()), None)
    } else if unknown.is_empty() && unready.is_empty() {
        (true, None, None)
    } else {
        let mut parts = Vec::new();
        if !unknown.is_empty() {
            parts.push(format!(
                "containers with unknown status: [{}]",
                unknown.join(" ")
            ));
        }
        if !unready.is_empty() {
            parts.push(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            ));
        }
        (
            false,
            Some("ContainersNotReady".to_string()),
            Some(parts.join(", ")),
        )
    };
    let mut out = vec![
        condition(
            "PodReadyToStartContainers",
            sandbox_ready && !terminal,
            None,
            None,
            now,
            previous,
        ),
        condition("Initialized", true, None, None, now, previous),
        condition(
            "Ready",
            ready,
            reason.clone(),
            message.clone(),
            now,
            previous,
        ),
        condition("ContainersReady", ready, reason, message, now, previous),
    ];
    match previous.iter().find(|c| c.type_ == "PodScheduled") {
        Some(c) => out.push(c.clone()),
        None => out.push(condition("PodScheduled", true, None, None, now, previous)),
    }
    out
}

/// Everything the pod status is computed from.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The pod's spec.
    pub spec: &'a PodSpec,
    /// The status the API holds now (for transition times, `qosClass`, `PodScheduled`).
    pub previous: Option<&'a PodStatus>,
    /// One entry per container of the spec, in spec order.
    pub containers: &'a [Container],
    /// The pod's IPs, already in the node's family order (empty before the sandbox has them).
    pub pod_ips: &'a [IpAddr],
    /// The node's IPs in `--node-ip` order.
    pub host_ips: &'a [IpAddr],
    /// When the agent first saw the pod.
    pub start_time: Timestamp,
    /// Whether the sandbox's network is set up.
    pub sandbox_ready: bool,
    /// Now.
    pub now: Timestamp,
}

/// The pod's `status` (kubelet's `generateAPIPodStatus`).
pub fn pod_status(i: &Input<'_>) -> PodStatus {
    let statuses: Vec<ContainerStatus> = i.containers.iter().map(Container::status).collect();
    let phase = phase(i.spec, &statuses);
    let previous = i
        .previous
        .and_then(|p| p.conditions.clone())
        .unwrap_or_default();
    let conditions = conditions(phase, i.spec, &statuses, i.sandbox_ready, i.now, &previous);
    let start_time = i
        .previous
        .and_then(|p| p.start_time.clone())
        .unwrap_or(Time(i.start_time));
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        start_time: Some(start_time),
        pod_ip: i.pod_ips.first().map(IpAddr::to_string),
        pod_ips: (!i.pod_ips.is_empty()).then(|| {
            i.pod_ips
                .iter()
                .map(|ip| PodIP { ip: ip.to_string() })
                .collect()
        }),
        host_ip: i.host_ips.first().map(IpAddr::to_string),
        host_ips: (!i.host_ips.is_empty()).then(|| {
            i.host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.to_string() })
                .collect()
        }),
        qos_class: i
            .previous
            .and_then(|p| p.qos_class.clone())
            .or(Some("BestEffort".into())),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn spec(policy: &str, names: &[&str]) -> PodSpec {
        PodSpec {
            restart_policy: Some(policy.into()),
            containers: names
                .iter()
                .map(|n| k8s_openapi::api::core::v1::Container {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn c(name: &str, state: State, last: Option<Exit>, ready: bool) -> Container {
        Container {
            name: name.into(),
            image: String::new(),
            state,
            last,
            restart_count: 0,
            ready,
            container_id: None,
        }
    }

    fn running() -> State {
        State::Running { started_at: t(0) }
    }
    fn exited(code: i32) -> State {
        State::Terminated(Exit::new(Some(code), None, Some(t(0)), t(1)))
    }
    fn creating() -> State {
        State::Waiting {
            reason: CONTAINER_CREATING.into(),
            message: None,
        }
    }
    fn backoff() -> State {
        State::Waiting {
            reason: CRASH_LOOP_BACK_OFF.into(),
            message: None,
        }
    }

    #[test]
    fn phase_follows_kubelets_get_phase() {
        let e1 = Some(Exit::new(Some(1), None, Some(t(0)), t(1)));
        // (restartPolicy, containers, phase)
        let cases: Vec<(&str, Vec<Container>, &str)> = vec![
            ("Always", vec![c("a", creating(), None, false)], "Pending"),
            ("Always", vec![c("a", running(), None, true)], "Running"),
            (
                "Always",
                vec![
                    c("a", running(), None, true),
                    c("b", creating(), None, false),
                ],
                "Pending",
            ),
            (
                "Always",
                vec![c("a", backoff(), e1.clone(), false)],
                "Running",
            ),
            ("Never", vec![c("a", exited(0), None, false)], "Succeeded"),
            (
                "Never",
                vec![
                    c("a", exited(0), None, false),
                    c("b", exited(2), None, false),
                ],
                "Failed",
            ),
            (
                "Never",
                vec![
                    c("a", running(), None, true),
                    c("b", exited(2), None, false),
                ],
                "Running",
            ),
            (
                "OnFailure",
                vec![c("a", exited(0), None, false)],
                "Succeeded",
            ),
            (
                "OnFailure",
                vec![c("a", backoff(), e1.clone(), false)],
                "Running",
            ),
            ("Always", vec![c("a", exited(0), None, false)], "Running"),
        ];
        for (policy, containers, want) in cases {
            let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
            let statuses: Vec<_> = containers.iter().map(Container::status).collect();
            assert_eq!(
                phase(&spec(policy, &names), &statuses),
                want,
                "{policy} {containers:?}"
            );
        }
        assert_eq!(phase(&spec("Always", &["a"]), &[]), "Pending");
    }

    #[test]
    fn conditions_carry_kubelets_reasons_and_messages() {
        let s = spec("Always", &["a", "b"]);
        let statuses: Vec<_> = [
            c("a", running(), None, true),
            c("b", running(), None, false),
        ]
        .iter()
        .map(Container::status)
        .collect();
        let got = conditions("Running", &s, &statuses, true, t(5), &[]);
        let kinds: Vec<_> = got
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("PodReadyToStartContainers", "True"),
                ("Initialized", "True"),
                ("Ready", "False"),
                ("ContainersReady", "False"),
                ("PodScheduled", "True")
            ]
        );
        assert_eq!(got[2].reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            got[2].message.as_deref(),
            Some("containers with unready status: [b]")
        );
        // A transition time stays while the status stays.
        let later = conditions("Running", &s, &statuses, true, t(9), &got);
        assert_eq!(later[2].last_transition_time, Some(Time(t(5))));
        let all: Vec<_> = [c("a", running(), None, true), c("b", running(), None, true)]
            .iter()
            .map(Container::status)
            .collect();
        let ready = conditions("Running", &s, &all, true, t(10), &later);
        assert_eq!(
            (
                ready[2].status.as_str(),
                ready[2].last_transition_time.clone()
            ),
            ("True", Some(Time(t(10))))
        );
        let done = conditions("Succeeded", &s, &all, true, t(11), &ready);
        assert_eq!(done[2].reason.as_deref(), Some("PodCompleted"));
        assert_eq!(done[0].status, "False");
    }

    #[test]
    fn container_status_reports_state_last_state_and_exit_reasons() {
        let mut x = c(
            "a",
            backoff(),
            Some(Exit::new(Some(3), None, Some(t(0)), t(1))),
            false,
        );
        x.restart_count = 2;
        let st = x.status();
        assert_eq!(
            st.state.unwrap().waiting.unwrap().reason.as_deref(),
            Some(CRASH_LOOP_BACK_OFF)
        );
        let last = st.last_state.unwrap().terminated.unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
        assert_eq!(st.restart_count, 2);
        let killed = Exit::new(None, Some(15), None, t(1));
        assert_eq!((killed.exit_code, killed.reason.as_str()), (143, "Error"));
        assert_eq!(Exit::new(Some(0), None, None, t(1)).reason, "Completed");
    }

    #[test]
    fn pod_status_has_pod_ip_equal_to_the_first_pod_ip_and_host_ips() {
        let s = spec("Always", &["a"]);
        let containers = [c("a", running(), None, true)];
        let pod_ips: Vec<IpAddr> = vec![
            "fd00:10:244::5".parse().unwrap(),
            "10.244.0.5".parse().unwrap(),
        ];
        let host_ips: Vec<IpAddr> = vec![
            "2001:db8:1::1".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
        ];
        let st = pod_status(&Input {
            spec: &s,
            previous: None,
            containers: &containers,
            pod_ips: &pod_ips,
            host_ips: &host_ips,
            start_time: t(0),
            sandbox_ready: true,
            now: t(1),
        });
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(st.pod_ip.as_deref(), Some("fd00:10:244::5"));
        assert_eq!(
            st.pod_ips
                .unwrap()
                .iter()
                .map(|p| p.ip.clone())
                .collect::<Vec<_>>(),
            vec!["fd00:10:244::5", "10.244.0.5"]
        );
        assert_eq!(st.host_ip.as_deref(), Some("2001:db8:1::1"));
        assert_eq!(st.host_ips.unwrap().len(), 2);
        assert_eq!(st.start_time, Some(Time(t(0))));
    }
}
