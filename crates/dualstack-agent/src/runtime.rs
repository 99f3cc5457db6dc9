//! The agent's runtime state on disk and its container processes.
//!
//! Layout under `--root-dir` (mirrors kubelet's `/var/lib/kubelet/pods/<uid>` and
//! `/var/log/pods/NS_NAME_UID/CONTAINER/N.log`; pod-level files have a dot in their name, which
//! no container name can have):
//!
//! ```text
//! pods/<uid>/pod.json            namespace, name, uid (for adoption and clean-up)
//! pods/<uid>/sandbox.json        the pod's IPs and network attachment (CNI ADD is never repeated)
//! pods/<uid>/net.ns              the sandbox network namespace (bind-mounted nsfs file)
//! pods/<uid>/etc.hosts           the pod's /etc/hosts
//! pods/<uid>/resolv.conf         the pod's /etc/resolv.conf
//! pods/<uid>/<container>/<n>.spec.json   what the shim of run n starts
//! pods/<uid>/<container>/<n>.shim        the shim (pid + start time), written by the agent
//! pods/<uid>/<container>/<n>.pid         the container process (pid + start time + start), by the shim
//! pods/<uid>/<container>/<n>.exit        its exit status, written atomically by the shim
//! pods/<uid>/<container>/<n>.log         stdout and stderr (CRI records)
//! pods/<uid>/<container>/<n>.stdin       `stdin: true`: the container's stdin (a FIFO)
//! pods/<uid>/<container>/<n>.stdin.done  `stdinOnce`: opened once the first attach ended
//! pods/<uid>/<container>/<n>.resize      `tty: true`: "COLS ROWS" lines for the terminal (a FIFO)
//! ```
//!
//! Each container runs under its own `dualstack shim` (a separate session, so it survives the
//! agent); the agent learns of a shim's end through a pidfd, for shims it started and for
//! shims it adopted after a restart alike.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use dualstack_host::process::{ProcessRef, write_atomic};
use jiff::Timestamp;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

/// What a shim starts (written by the agent as `<n>.spec.json`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ShimSpec {
    /// `command` + `args`, expanded.
    pub argv: Vec<String>,
    /// The environment, in order.
    pub env: Vec<(String, String)>,
    /// `workingDir`.
    pub cwd: Option<String>,
    /// The pod's network namespace (None: the node's, for `hostNetwork`).
    pub netns: Option<PathBuf>,
    /// Bound over `/etc/hosts`.
    pub hosts: Option<PathBuf>,
    /// Bound over `/etc/resolv.conf`.
    pub resolv: Option<PathBuf>,
    /// The UTS hostname (None: the node's).
    pub hostname: Option<String>,
    /// stdout and stderr.
    pub log: PathBuf,
    /// Where the shim writes the container's [`PidRecord`].
    pub pid_file: PathBuf,
    /// Where the shim writes the [`ExitRecord`].
    pub exit_file: PathBuf,
    /// `stdin: true`: the container's stdin is this FIFO (made by the shim), which `kubectl
    /// attach -i` writes to. None: `/dev/null`.
    #[serde(default)]
    pub stdin: Option<PathBuf>,
    /// `stdinOnce`: the shim stops holding the FIFO open once the first attach has ended
    /// (signalled through `<stdin>.done`), so the container reads EOF.
    #[serde(default)]
    pub stdin_once: bool,
    /// `tty: true`: the container's stdin, stdout and stderr are a pseudo-terminal whose
    /// master the shim keeps: what the terminal shows goes to the log (as stdout, each read
    /// as it comes, so a prompt shows before its line ends), the stdin FIFO's bytes are typed
    /// into it, and the `resize` FIFO sets its size.
    #[serde(default)]
    pub tty: bool,
    /// With `tty`: the FIFO (made by the shim) of "COLS ROWS" lines that `kubectl attach -t`
    /// sends as the client's terminal changes size.
    #[serde(default)]
    pub resize: Option<PathBuf>,
}

/// The container process, as the shim records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PidRecord {
    /// Its pid (also its process group).
    pub pid: i32,
    /// Its start time in ticks (pid reuse check).
    pub start_time: u64,
    /// When it started (RFC 3339).
    pub started_at: String,
}

/// How the container process ended, as the shim records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// When it started (RFC 3339), if it did.
    pub started_at: Option<String>,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// Why it could not start (kubelet's `StartError`).
    pub error: Option<String>,
}

impl ExitRecord {
    /// The kubelet view of this exit.
    pub fn to_exit(&self) -> dualstack_node::status::Exit {
        let ts = |s: &str| s.parse::<Timestamp>().ok();
        let finished = ts(&self.finished_at).unwrap_or_else(Timestamp::now);
        let started = self.started_at.as_deref().and_then(ts);
        match &self.error {
            Some(e) => dualstack_node::status::Exit {
                exit_code: 128,
                signal: None,
                reason: "StartError".into(),
                message: Some(e.clone()),
                started_at: started,
                finished_at: finished,
            },
            None => dualstack_node::status::Exit::new(self.code, self.signal, started, finished),
        }
    }
}

/// The files of one run of one container.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// `pods/<uid>/<container>`.
    pub dir: PathBuf,
    /// The run number (= restartCount when it started).
    pub n: u32,
}

impl RunFiles {
    /// The files of run `n` in `dir`.
    pub fn new(dir: &Path, n: u32) -> Self {
        RunFiles {
            dir: dir.to_path_buf(),
            n,
        }
    }
    fn file(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.n))
    }
    /// `<n>.spec.json`.
    pub fn spec(&self) -> PathBuf {
        self.file("spec.json")
    }
    /// `<n>.shim`.
    pub fn shim(&self) -> PathBuf {
        self.file("shim")
    }
    /// `<n>.pid`.
    pub fn pid(&self) -> PathBuf {
        self.file("pid")
    }
    /// `<n>.exit`.
    pub fn exit(&self) -> PathBuf {
        self.file("exit")
    }
    /// `<n>.log`.
    pub fn log(&self) -> PathBuf {
        self.file("log")
    }
    /// `<n>.stdin`.
    pub fn stdin(&self) -> PathBuf {
        self.file("stdin")
    }
    /// `<n>.resize`.
    pub fn resize(&self) -> PathBuf {
        self.file("resize")
    }

    /// The recorded exit, if the shim wrote one.
    pub fn read_exit(&self) -> Option<ExitRecord> {
        serde_json::from_slice(&fs::read(self.exit()).ok()?).ok()
    }
    /// The recorded container process, if the shim started it.
    pub fn read_pid(&self) -> Option<PidRecord> {
        serde_json::from_slice(&fs::read(self.pid()).ok()?).ok()
    }
    /// The recorded shim.
    pub fn read_shim(&self) -> Option<ProcessRef> {
        ProcessRef::parse(&fs::read_to_string(self.shim()).ok()?)
    }

    /// The highest run number recorded in `dir` (a container's latest run).
    pub fn latest(dir: &Path) -> Option<RunFiles> {
        let n = fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".spec.json")?
                    .parse::<u32>()
                    .ok()
            })
            .max()?;
        Some(RunFiles::new(dir, n))
    }
}

/// Starts `exe shim run SPEC` for `spec` (written first), detached: the shim makes itself a
/// session leader (`setsid`), so signals to the agent's group never reach it. Returns the shim.
pub fn spawn_shim(exe: &Path, files: &RunFiles, spec: &ShimSpec) -> io::Result<ProcessRef> {
    fs::create_dir_all(&files.dir)?;
    write_atomic(
        &files.spec(),
        &serde_json::to_vec_pretty(spec).map_err(io::Error::other)?,
    )?;
    let errors = fs::File::create(files.dir.join(format!("{}.shim.log", files.n)))?;
    let child = Command::new(exe)
        .arg("shim")
        .arg("run")
        .arg(files.spec())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errors)
        .spawn()?;
    let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
    // The child is reaped by `wait_exit` (std's Child does not reap on drop).
    drop(child);
    let r = ProcessRef::of(pid).unwrap_or(ProcessRef { pid, start_time: 0 });
    write_atomic(&files.shim(), r.to_line().as_bytes())?;
    Ok(r)
}

/// Waits until the shim `r` has ended (pidfd; works for adopted shims that are not our
/// children) and reaps it if it is our child.
pub async fn wait_shim(r: ProcessRef) {
    if !r.alive() {
        reap(r.pid);
        return;
    }
    let Some(pid) = rustix::process::Pid::from_raw(r.pid) else {
        return;
    };
    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => {
            // `AsyncFd::new` is deprecated for fds the caller might close behind tokio's back;
            // this OwnedFd is moved in and lives exactly as long as the AsyncFd (the safe
            // alternative, `register`, is `unsafe`, which this workspace forbids).
            #[allow(deprecated)]
            let registered = AsyncFd::new(fd);
            if let Ok(afd) = registered {
                let _ = afd.readable().await;
            } else {
                poll_until_dead(r).await;
            }
        }
        Err(_) => poll_until_dead(r).await,
    }
    reap(r.pid);
}

async fn poll_until_dead(r: ProcessRef) {
    while r.alive() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// Signals the container process group of a run (checked against its start time).
pub fn signal_container(files: &RunFiles, signal: Signal) -> bool {
    match files.read_pid() {
        Some(p) => ProcessRef {
            pid: p.pid,
            start_time: p.start_time,
        }
        .signal_group(signal),
        None => false,
    }
}

/// Writes a small file atomically, creating its directory.
pub fn write_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    write_atomic(path, contents)
}
