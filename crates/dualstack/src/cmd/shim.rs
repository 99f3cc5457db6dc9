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
//! With `tty: true` the container's stdin, stdout and stderr are the slave of a pseudo-terminal
//! whose master the shim keeps, as a container runtime's shim does: the container starts
//! through `shim tty` (a new session with the terminal as its controlling terminal); what the
//! master reads goes to the log as stdout records, each read as it comes (a prompt without
//! its newline is a partial record at once, so `attach` shows it); the stdin FIFO's bytes are
//! written to the master (its end, with `stdinOnce`, hangs the terminal up: SIGHUP to its
//! foreground group and the container process, as closing the console does under containerd);
//! "COLS ROWS" lines on the `resize` FIFO set the terminal's size; when the container process
//! ends, what is left of its session (an interactive shell's jobs) is killed, as the end of a
//! container's pid namespace kills it. A tty container gets `TERM=xterm` unless it sets one.
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
    /// Start a `tty: true` container: a new session whose controlling terminal is stdin,
    /// then the container's command.
    Tty {
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
        ShimCommand::Tty { command } => {
            nix::unistd::setsid().context("setsid")?;
            rustix::process::ioctl_tiocsctty(std::io::stdin()).context("TIOCSCTTY")?;
            exec_command(&command, None, None)
        }
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
            Ok(f) => Some(f),
            Err(e) => return fail(format!("{e:#}")),
        },
        None => None,
    };
    let mut cmd = Command::new(&spec.argv[0]);
    let mut terminal = None;
    if spec.tty {
        // The command is started through `shim tty`, which cannot report a missing program as
        // a start error: look for it first, as the exec would.
        let path = spec
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        if find_program(&spec.argv[0], path, spec.cwd.as_deref()).is_none() {
            return fail(format!(
                "failed to start container process: exec: {:?}: {}",
                spec.argv[0],
                std::io::Error::from(nix::errno::Errno::ENOENT)
            ));
        }
        let t = match Terminal::open(&spec, stdin) {
            Ok(t) => t,
            Err(e) => return fail(format!("{e:#}")),
        };
        let slaves = match (t.slave(), t.slave(), t.slave()) {
            (Ok(i), Ok(o), Ok(e)) => (i, o, e),
            _ => return fail("duplicating the terminal failed".to_string()),
        };
        cmd = Command::new("/proc/self/exe");
        cmd.args(["shim", "tty", "--"])
            .args(&spec.argv)
            .stdin(slaves.0)
            .stdout(slaves.1)
            .stderr(slaves.2);
        terminal = Some(t);
    } else {
        cmd.args(&spec.argv[1..])
            .stdin(stdin.map_or_else(Stdio::null, Stdio::from))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
    }
    cmd.env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
    if spec.tty && !spec.env.iter().any(|(k, _)| k == "TERM") {
        // As containerd does for a container with a terminal.
        cmd.env("TERM", "xterm");
    }
    if let Some(d) = &spec.cwd {
        cmd.current_dir(d);
    }
    let spawned = cmd.spawn();
    // The command keeps the copies of the terminal's slave it was given: with none left here,
    // the master reads its end (EIO) once the container and its children are gone.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "failed to start container process: exec: {:?}: {e}",
                spec.argv[0]
            ));
        }
    };
    let pid = i32::try_from(child.id())?;
    let terminal = match terminal.map(|t| t.started(pid)).transpose() {
        Ok(t) => t,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return fail(format!("{e:#}"));
        }
    };
    if terminal.is_some() {
        // `shim tty` makes the container a session (and group) leader first: the agent
        // signals its group, so the pid is recorded once that holds.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while dualstack_host::process::session_of(pid).is_some_and(|s| s != pid)
            && std::time::Instant::now() < until
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let log = std::sync::Arc::new(log);
    let (drained_tx, drained) = std::sync::mpsc::channel::<()>();
    let mut outputs_n = 0;
    if let Some(master) = terminal {
        outputs_n += 1;
        let log = log.clone();
        let done = drained_tx.clone();
        std::thread::spawn(move || {
            copy_terminal(master, &log);
            let _ = done.send(());
        });
    }
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
            outputs_n += 1;
            let log = log.clone();
            let done = drained_tx.clone();
            std::thread::spawn(move || {
                copy_records(out, stream, &log);
                let _ = done.send(());
            });
        }
    }
    drop(drained_tx);
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
    if spec.tty {
        // The container's pid namespace would end with it: so do its session's other
        // processes (a shell's jobs, each in a process group of its own).
        dualstack_host::process::signal_session(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + DRAIN;
    for _ in 0..outputs_n {
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

/// The PATH of a container without one (what container runtimes set).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where `program` is found as `execvp` would find it: a name with a slash as it is (relative
/// to `cwd`), else the first executable file of that name in `path`.
fn find_program(program: &str, path: &str, cwd: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let base = match cwd {
            Some(d) => PathBuf::from(d),
            None => std::env::current_dir().ok()?,
        };
        let p = base.join(program);
        return executable(&p).then_some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| executable(p))
}

/// The pseudo-terminal of a `tty: true` container, before and after its start.
struct Terminal {
    master: std::fs::File,
    slave: std::fs::File,
    stdin: Option<std::fs::File>,
    resize: Option<PathBuf>,
}

impl Terminal {
    /// Opens the terminal; `stdin` is the stdin FIFO's reader when the container has one.
    fn open(spec: &ShimSpec, stdin: Option<std::fs::File>) -> Result<Terminal> {
        let pty = nix::pty::openpty(None, None).context("openpty")?;
        // Not inherited by the container (it gets its own copies of the slave as 0, 1, 2):
        // no copy of the master in it, none of the slave that outlives its stdio.
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .context("FD_CLOEXEC")?;
        }
        if let Some(r) = &spec.resize {
            match nix::unistd::mkfifo(r, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => bail!("mkfifo {}: {e}", r.display()),
            }
        }
        Ok(Terminal {
            master: std::fs::File::from(pty.master),
            slave: std::fs::File::from(pty.slave),
            stdin,
            resize: spec.resize.clone(),
        })
    }

    fn slave(&self) -> Result<Stdio> {
        Ok(Stdio::from(self.slave.try_clone().context("dup")?))
    }

    /// Once the container (`pid`) holds the slave: drops the shim's copy, starts typing the
    /// stdin FIFO's bytes and applying sizes; the master's reader for the log.
    fn started(self, pid: i32) -> Result<std::fs::File> {
        drop(self.slave);
        if let Some(mut input) = self.stdin {
            let mut master = self.master.try_clone()?;
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match input.read(&mut buf) {
                        Ok(0) => {
                            // The input's end (stdinOnce): a hang-up, as when containerd
                            // closes the console.
                            hang_up(&master, pid);
                            return;
                        }
                        Ok(n) => {
                            if master.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            });
        }
        if let Some(path) = self.resize {
            let master = self.master.try_clone()?;
            // Read-write: never an end of input when a writer goes.
            let fifo = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(fifo).lines() {
                    let Ok(line) = line else { return };
                    if let Some(size) = parse_size(&line) {
                        let _ = rustix::termios::tcsetwinsize(&master, size);
                    }
                }
            });
        }
        Ok(self.master)
    }
}

/// What a terminal's hang-up does: SIGHUP to its foreground process group and to its
/// controlling process (the container), SIGCONT so a stopped job sees it.
fn hang_up(master: &std::fs::File, pid: i32) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    if let Ok(group) = rustix::termios::tcgetpgrp(master) {
        let group = Pid::from_raw(group.as_raw_nonzero().get());
        let _ = killpg(group, Signal::SIGHUP);
        let _ = killpg(group, Signal::SIGCONT);
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGHUP);
}

/// A "COLS ROWS" line of the resize FIFO.
fn parse_size(line: &str) -> Option<rustix::termios::Winsize> {
    let (cols, rows) = line.trim().split_once(' ')?;
    Some(rustix::termios::Winsize {
        ws_col: cols.parse().ok()?,
        ws_row: rows.parse().ok()?,
        ws_xpixel: 0,
        ws_ypixel: 0,
    })
}

/// Appends what the terminal shows to the log as stdout records until the terminal's end:
/// whole lines, and what follows the last newline of each read as a partial record at once.
fn copy_terminal(mut master: std::fs::File, log: &std::fs::File) {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut records = logs::split_lines(&mut pending, &buf[..n]);
                if !pending.is_empty() {
                    records.push((true, std::mem::take(&mut pending)));
                }
                for (partial, content) in records {
                    let rec = logs::format_record(
                        jiff::Timestamp::now(),
                        Stream::Stdout,
                        partial,
                        &content,
                    );
                    let _ = (&*log).write_all(&rec);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EIO: no process holds the slave any more.
            Err(_) => break,
        }
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
    let mut env = spec.env.clone();
    if tty && !env.iter().any(|(k, _)| k == "TERM") {
        // As containerd's exec with a terminal.
        env.push(("TERM".to_string(), "xterm".to_string()));
    }
    exec_command(
        command,
        Some(&env),
        Some(spec.cwd.as_deref().unwrap_or("/")),
    )
}

/// Replaces this process with `command` (with this environment and directory, else this
/// process's); on failure exits as a shell (and runc) report it: 127 for a command not found,
/// 126 otherwise.
fn exec_command(
    command: &[String],
    env: Option<&[(String, String)]>,
    cwd: Option<&str>,
) -> Result<()> {
    let Some((prog, args)) = command.split_first() else {
        bail!("no command")
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if let Some(env) = env {
        cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    }
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_lines_are_columns_then_rows() {
        let s = parse_size("97 33\n").unwrap();
        assert_eq!((s.ws_col, s.ws_row), (97, 33));
        assert!(parse_size("97").is_none());
        assert!(parse_size("x 33").is_none());
        assert!(parse_size("70000 33").is_none());
    }

    #[test]
    fn programs_are_found_as_execvp_finds_them() {
        assert_eq!(
            find_program("sh", "/nowhere:/bin:/usr/bin", None),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            find_program("no-such-program-here", DEFAULT_PATH, None),
            None
        );
        // Not executable: passed over.
        assert_eq!(find_program("passwd", "/etc", None), None);
        assert_eq!(
            find_program("/bin/sh", "", None),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            find_program("bin/sh", "", Some("/")),
            Some(PathBuf::from("/bin/sh"))
        );
        // A directory is not a program.
        assert_eq!(find_program("/bin", "", None), None);
        assert_eq!(find_program("./nope", "", Some("/")), None);
    }
}
