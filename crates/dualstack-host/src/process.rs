//! Processes that outlive the agent: identified by pid *and* start time (field 22 of
//! `/proc/PID/stat`), so a recycled pid is never signalled; signals go to the process group
//! (a container is its own group); small files are written atomically (temp file + rename).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A process as recorded on disk: its pid and its start time in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRef {
    /// The pid.
    pub pid: i32,
    /// `starttime` from `/proc/PID/stat`.
    pub start_time: u64,
}

/// The start time of a running process (None if it is gone or a zombie).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The session id of a process (field 6 of `/proc/PID/stat`; None if it is gone).
pub fn session_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // rest[0] is field 3 (state), so the session (field 6) is rest[3].
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// Sends `signal` to every process of session `sid` (what a session leader's exit leaves
/// behind: an interactive shell's jobs each have a process group of their own). A session id
/// is the pid of its leader, which is not reused while any member lives. Returns how many
/// were signalled.
pub fn signal_session(sid: i32, signal: Signal) -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| session_of(*pid) == Some(sid))
        .filter(|pid| nix::sys::signal::kill(Pid::from_raw(*pid), signal).is_ok())
        .count()
}

impl ProcessRef {
    /// The reference of a running process.
    pub fn of(pid: i32) -> Option<ProcessRef> {
        start_time(pid).map(|start_time| ProcessRef { pid, start_time })
    }

    /// Whether this very process still runs (same pid, same start time, not a zombie).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }

    /// Sends `signal` to the process group led by this process, if it is still this process.
    /// Returns false when it is gone.
    pub fn signal_group(&self, signal: Signal) -> bool {
        self.alive() && killpg(Pid::from_raw(self.pid), signal).is_ok()
    }

    /// `PID START_TIME`, as stored in files.
    pub fn to_line(&self) -> String {
        format!("{} {}", self.pid, self.start_time)
    }

    /// Parses [`to_line`](Self::to_line).
    pub fn parse(s: &str) -> Option<ProcessRef> {
        let mut it = s.split_whitespace();
        Some(ProcessRef {
            pid: it.next()?.parse().ok()?,
            start_time: it.next()?.parse().ok()?,
        })
    }
}

/// Writes `contents` to `path` atomically: a temp file in the same directory, fsynced, renamed.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_pid_and_start_time_and_a_dead_one_is_not_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let r = ProcessRef::of(pid).unwrap();
        assert!(r.alive());
        assert_eq!(ProcessRef::parse(&r.to_line()), Some(r));
        let other = ProcessRef {
            pid,
            start_time: r.start_time + 1,
        };
        assert!(!other.alive());
        assert!(!other.signal_group(Signal::SIGKILL));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!r.alive());
    }

    #[test]
    fn atomic_writes_replace_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.exit");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
