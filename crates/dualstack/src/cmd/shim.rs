//! `dualstack shim` (hidden): the small supervisor of one container process, so containers
//! outlive the agent and keep their exit codes. Dispatched from `main` before any runtime or
//! thread starts: joining a mount namespace needs a single-threaded process.
//!
//! `shim run SPEC`: becomes a session leader, joins the pod's network namespace, enters a
//! mount namespace of its own (`/` recursively slave) with the pod's hosts and resolv.conf
//! bound over `/etc/hosts` and `/etc/resolv.conf`, starts the container process in its own
//! process group with stdout and stderr on pipes whose lines it appends to the log in the CRI
//! format (`dualstack_node::logs`), records its pid and start time, waits, and records the exit
//! (code or signal) atomically once the output is drained (at most [`DRAIN`] after the exit:
//! a daemonized child may hold the pipes open).
//!
//! `shim exec --pid PID --spec SPEC -- CMD...`: runs CMD in the network and mount namespaces
//! of the container process PID with the container's environment (exec probes, `kubectl
//! exec`); with `--tty` it first becomes a session leader with its stdin (a pseudo-terminal)
//! as the controlling terminal.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use dualstack_agent::runtime::{ExitRecord, PidRecord, ShimSpec};
use dualstack_host::process::{ProcessRef, write_atomic};
use dualstack_node::logs::{self, Stream};

/// `dualstack shim ...`
#[derive(Debug, Clone, Args)]
pub struct ShimArgs {
    #[command(subcommand)]
    command: ShimCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum ShimCommand {
    /// Supervise the container described by a spec file.
    Run {
        /// The spec file the agent wrote.
        spec: PathBuf,
    },
    /// Run a command inside a running container's namespaces.
    Exec {
        /// The container process.
        #[arg(long)]
        pid: i32,
        /// The container's spec file (environment and working directory).
        #[arg(long)]
        spec: PathBuf,
        /// stdin is a terminal: make it the controlling terminal of a new session.
        #[arg(long)]
        tty: bool,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// Runs the subcommand (never returns for `exec` on success).
pub fn run(args: ShimArgs) -> Result<()> {
    match args.command {
        ShimCommand::Run { spec } => supervise(&spec),
        ShimCommand::Exec {
            pid,
            spec,
            tty,
            command,
        } => exec(pid, &spec, tty, &command),
    }
}

fn read_spec(path: &Path) -> Result<ShimSpec> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    write_atomic(path, &serde_json::to_vec(v)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Namespaces and mounts of the container; errors are start errors.
fn prepare(spec: &ShimSpec) -> Result<()> {
    if let Some(ns) = &spec.netns {
        dualstack_host::netns::enter(ns)?;
    }
    dualstack_host::mount::private_namespace()?;
    if let Some(h) = &spec.hosts {
        dualstack_host::mount::bind_file(h, Path::new("/etc/hosts"))?;
    }
    if let Some(r) = &spec.resolv {
        dualstack_host::mount::bind_file(r, Path::new("/etc/resolv.conf"))?;
    }
    if let Some(name) = &spec.hostname {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS).context("unshare uts")?;
        nix::unistd::sethostname(name).context("sethostname")?;
    }
    Ok(())
}

fn supervise(spec_path: &Path) -> Result<()> {
    // Own session: the agent's terminal and process group signals never reach us.
    let _ = nix::unistd::setsid();
    let spec = read_spec(spec_path)?;
    let started = now();
    let fail = |e: String| -> Result<()> {
        write_json(
            &spec.exit_file,
            &ExitRecord {
                code: None,
                signal: None,
                started_at: None,
                finished_at: now(),
                error: Some(e),
            },
        )
    };
    if let Err(e) = prepare(&spec) {
        return fail(format!("{e:#}"));
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    let stdin = match &spec.stdin {
        Some(fifo) => match open_stdin(fifo, spec.stdin_once) {
            Ok(f) => Stdio::from(f),
            Err(e) => return fail(format!("{e:#}")),
        },
        None => Stdio::null(),
    };
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(d) = &spec.cwd {
        cmd.current_dir(d);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "failed to start container process: exec: {:?}: {e}",
                spec.argv[0]
            ));
        }
    };
    let log = std::sync::Arc::new(log);
    let (drained_tx, drained) = std::sync::mpsc::channel::<()>();
    let outputs: [(Option<Box<dyn Read + Send>>, Stream); 2] = [
        (
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
            Stream::Stdout,
        ),
        (
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
            Stream::Stderr,
        ),
    ];
    for (out, stream) in outputs {
        if let Some(out) = out {
            let log = log.clone();
            let done = drained_tx.clone();
            std::thread::spawn(move || {
                copy_records(out, stream, &log);
                let _ = done.send(());
            });
        }
    }
    drop(drained_tx);
    let pid = i32::try_from(child.id())?;
    let start_time = ProcessRef::of(pid).map_or(0, |r| r.start_time);
    write_json(
        &spec.pid_file,
        &PidRecord {
            pid,
            start_time,
            started_at: started.clone(),
        },
    )?;
    let status = child.wait()?;
    let deadline = std::time::Instant::now() + DRAIN;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if drained.recv_timeout(left).is_err() {
            break;
        }
    }
    write_json(
        &spec.exit_file,
        &ExitRecord {
            code: status.code(),
            signal: status.signal(),
            started_at: Some(started),
            finished_at: now(),
            error: None,
        },
    )
}

/// Makes the stdin FIFO and opens the container's end. The shim holds a writer open so the
/// container does not read EOF before anyone attaches; with `stdin_once` it lets go once the
/// agent opens `<fifo>.done` (the first attach has ended), so the container reads EOF then.
fn open_stdin(fifo: &Path, once: bool) -> Result<std::fs::File> {
    match nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => bail!("mkfifo {}: {e}", fifo.display()),
    }
    // Read-write never blocks on a FIFO; the container's read-only end then finds a writer.
    let holder = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fifo)
        .with_context(|| format!("opening {}", fifo.display()))?;
    let reader = OpenOptions::new()
        .read(true)
        .open(fifo)
        .with_context(|| format!("opening {}", fifo.display()))?;
    if once {
        let done = fifo.with_extension("stdin.done");
        match nix::unistd::mkfifo(&done, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => bail!("mkfifo {}: {e}", done.display()),
        }
        std::thread::spawn(move || {
            // Blocks until the agent opens it for writing.
            let _ = std::fs::File::open(&done);
            drop(holder);
        });
    } else {
        // Held for the shim's life.
        std::mem::forget(holder);
    }
    Ok(reader)
}

/// How long the shim waits for the container's output to reach EOF after it exited.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Appends the lines of one output to the log as CRI records until EOF (a last line without
/// a newline is written as a partial record, so the log shows it as it was).
fn copy_records(mut out: Box<dyn Read + Send>, stream: Stream, log: &std::fs::File) {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let write = |partial: bool, content: &[u8]| {
        let rec = logs::format_record(jiff::Timestamp::now(), stream, partial, content);
        // One write per record: O_APPEND keeps records of both outputs whole.
        let _ = (&*log).write_all(&rec);
    };
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                for (partial, content) in logs::split_lines(&mut pending, &buf[..n]) {
                    write(partial, &content);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if !pending.is_empty() {
        write(true, &pending);
    }
}

fn exec(pid: i32, spec_path: &Path, tty: bool, command: &[String]) -> Result<()> {
    let spec = read_spec(spec_path)?;
    if tty {
        nix::unistd::setsid().context("setsid")?;
        rustix::process::ioctl_tiocsctty(std::io::stdin()).context("TIOCSCTTY")?;
    }
    let join = |kind: &str, flag: nix::sched::CloneFlags| -> Result<()> {
        let f = std::fs::File::open(format!("/proc/{pid}/ns/{kind}"))
            .with_context(|| format!("container {pid} is gone"))?;
        nix::sched::setns(&f, flag).with_context(|| format!("setns {kind}"))
    };
    join("net", nix::sched::CloneFlags::CLONE_NEWNET)?;
    join("uts", nix::sched::CloneFlags::CLONE_NEWUTS)?;
    join("mnt", nix::sched::CloneFlags::CLONE_NEWNS)?;
    let Some((prog, args)) = command.split_first() else {
        bail!("no command")
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd.current_dir(spec.cwd.as_deref().unwrap_or("/"));
    let e = cmd.exec();
    // As a shell (and runc) report it: 127 for a command not found, 126 otherwise.
    let (code, why) = match e.kind() {
        std::io::ErrorKind::NotFound => (127, "executable file not found in $PATH".to_string()),
        std::io::ErrorKind::PermissionDenied => (126, "permission denied".to_string()),
        _ => (126, e.to_string()),
    };
    eprintln!("exec failed: unable to start container process: exec: {prog:?}: {why}");
    std::process::exit(code)
}
