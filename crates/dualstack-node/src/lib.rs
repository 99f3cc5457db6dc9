//! What a kubelet decides, as pure code (no tokio, no I/O, no clock: times are arguments).
//!
//! Start with [`status`]: container facts (created, running, exited, in back-off) in, the
//! pod's `status` (phase, conditions, `containerStatuses`) out, with kubelet's reasons and
//! messages. The rest are the pieces a pod worker needs on the way: [`ips`] (the order of
//! `podIPs`/`hostIPs`, §7.1), [`image`] (what a container runs: its command, or the built-in
//! `agnhost`/`pause` of upstream's test images), [`files`] (the pod's `/etc/hosts` and `/etc/resolv.conf`),
//! [`env`] (`valueFrom.fieldRef` and `$(VAR)` expansion), [`backoff`] (restart policy and
//! `CrashLoopBackOff`), [`probe`] (probe thresholds), [`logs`] (the CRI log format and
//! `kubectl logs` options) and [`node`] (the Node's status).

pub mod backoff;
pub mod env;
pub mod files;
pub mod image;
pub mod ips;
pub mod logs;
pub mod node;
pub mod probe;
pub mod status;
