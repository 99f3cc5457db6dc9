//! A lab made by `dualstack up` for an end-to-end test (root): its own data dir (so tests run
//! side by side), real kubectl on the host's loopback, commands on lab hosts through
//! `dualstack exec`, and `dualstack down` however the test ends.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::{Kubectl, binary};

/// Whether this process runs as root (the lab tests need it; CI runs as root).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A running lab, removed on drop.
pub struct Lab {
    dir: tempfile::TempDir,
    kubectl: Kubectl,
}

impl Lab {
    /// `dualstack up --nodes N FLAGS...` in a fresh dir named `PREFIX...`.
    pub fn up(prefix: &str, nodes: usize, flags: &[&str]) -> Lab {
        assert!(
            is_root(),
            "the lab tests need root (network namespaces); CI runs them as root"
        );
        let lab = Lab {
            dir: tempfile::Builder::new().prefix(prefix).tempdir().unwrap(),
            kubectl: Kubectl::require("1.33"),
        };
        let out = lab.dualstack(&[&["up", "--nodes", &nodes.to_string()], flags].concat());
        assert!(
            out.status.success(),
            "dualstack up failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            lab.logs()
        );
        lab
    }

    /// The lab's data dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `dualstack SUBCOMMAND --data-dir DIR ARGS...`.
    pub fn dualstack(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .arg(args[0])
            .arg("--data-dir")
            .arg(self.path())
            .args(&args[1..])
            .output()
            .unwrap()
    }

    /// Runs a command on a lab host (`node-N`, `outside`).
    pub fn exec(&self, host: &str, cmd: &[&str]) -> Output {
        self.dualstack(&[&["exec", host, "--"], cmd].concat())
    }

    /// kubectl with the lab's admin kubeconfig, `stdin` fed to it.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(self.kubectl.path())
            .arg("--kubeconfig")
            .arg(self.path().join("kubeconfig"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl apply -f -`.
    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl ARGS -o json`.
    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.kubectl_ok(&[args, &["-o", "json"]].concat())).unwrap()
    }

    /// The last 20 lines of every process log of the lab (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(d) = std::fs::read_dir(self.path().join("logs")) {
            for e in d.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                out += &format!(
                    "--- {}\n{}\n",
                    e.path().display(),
                    lines[lines.len().saturating_sub(20)..].join("\n")
                );
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.dualstack(&["down"]);
        if !out.status.success() {
            eprintln!(
                "dualstack down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
