//! Test support: run the real `dualstack server` binary on a free loopback port with its own
//! data directory, and drive it with real kubectl binaries and plain HTTPS.
//!
//! Address plan used by the tests (documentation ranges and ULAs only):
//! - Services: `10.0.0.0/16` and `fd00:10::/108` (both orders for the two dual-stack clusters)
//! - Pods (cluster CIDR): `10.244.0.0/16` and `fd00:10:244::/56`
//! - Nodes: `192.0.2.0/24` and `2001:db8:1::/64`
//! - Load balancers: `198.51.100.0/24` and `2001:db8:lb::/120`

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `dualstack server`.
pub struct TestServer {
    child: Option<Child>,
    /// Data directory (kept alive by `_dir` unless `persist`).
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The admin token.
    pub token: String,
    /// Extra flags used to start it (for restarts).
    pub args: Vec<String>,
    log: PathBuf,
}

/// Path of the built binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dualstack"))
}

fn read_token(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .expect("token in kubeconfig")
}

impl TestServer {
    /// Starts a server with these extra flags in a fresh data directory.
    pub fn start(args: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        let mut s = Self::start_in(&data_dir, args);
        s._dir = Some(dir);
        s
    }

    /// Starts a server on an existing data directory (not removed on drop).
    pub fn start_in(data_dir: &Path, args: &[&str]) -> TestServer {
        let log = data_dir.with_extension("log");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, url) = spawn(data_dir, &args, &log);
        let kubeconfig = data_dir.join("kubeconfig");
        let token = read_token(&kubeconfig);
        let s = TestServer {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            _dir: None,
            url,
            kubeconfig,
            token,
            args,
            log,
        };
        s.wait_ready();
        s
    }

    /// Waits until `/readyz` answers ok.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = self.request("GET", "/readyz", None, None) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in time; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts on the same data directory with the same (or new) flags.
    pub fn restart(&mut self, args: Option<&[&str]>) {
        self.kill9();
        if let Some(a) = args {
            self.args = a.iter().map(|s| s.to_string()).collect();
        }
        let (child, url) = spawn(&self.data_dir, &self.args, &self.log);
        self.child = Some(child);
        self.url = url;
        self.token = read_token(&self.kubeconfig);
        self.wait_ready();
    }

    /// One HTTPS request with the admin token (curl: the tests use the real TLS stack of the
    /// server and a well-known client). Returns (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        content_type: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        self.request_as(&self.token, method, path, body, content_type)
    }

    /// Like [`request`](Self::request) with another bearer token.
    pub fn request_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
        content_type: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let ca = self.data_dir.join("pki/ca.crt");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "--cacert"]).arg(&ca);
        cmd.args(["-X", method, "-o", "-", "-w", "\n%{http_code}"]);
        if !token.is_empty() {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if let Some(ct) = content_type {
            cmd.args(["-H", &format!("Content-Type: {ct}")]);
        }
        if let Some(b) = body {
            cmd.args(["--data-binary", b]);
        }
        cmd.arg(format!("{}{}", self.url, path));
        let out = cmd.output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        Ok((code.trim().parse().unwrap_or(0), body.to_string()))
    }

    /// Runs a kubectl binary against this server.
    pub fn kubectl(&self, k: &Kubectl, args: &[&str]) -> Output {
        k.run(&self.kubeconfig, args, None)
    }

    /// Runs kubectl and asserts success; returns stdout.
    pub fn kubectl_ok(&self, k: &Kubectl, args: &[&str]) -> String {
        let out = self.kubectl(k, args);
        assert!(
            out.status.success(),
            "kubectl {} {:?} failed:\nstdout: {}\nstderr: {}",
            k.name,
            args,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs kubectl with stdin.
    pub fn kubectl_stdin(&self, k: &Kubectl, args: &[&str], stdin: &str) -> Output {
        k.run(&self.kubeconfig, args, Some(stdin))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn(data_dir: &Path, args: &[String], log: &Path) -> (Child, String) {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = Command::new(binary())
        .arg("server")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--secure-port", "0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dualstack server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log_file = log_file;
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            use std::io::Write;
            let _ = writeln!(log_file, "{line}");
            if !sent {
                if let Some(i) = line.find("url=https://") {
                    let url: String = line[i + 4..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send(Ok(url));
                    sent = true;
                } else if line.starts_with("Error:") {
                    let _ = tx.send(Err(line.clone()));
                    sent = true;
                }
            }
        }
        if !sent {
            let _ = tx.send(Err("server exited before serving".into()));
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(url)) => (child, strip_ansi(&url)),
        Ok(Err(e)) => {
            let _ = child.kill();
            panic!(
                "server failed to start: {e}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        Err(_) => {
            let _ = child.kill();
            panic!(
                "server did not start in time\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for n in chars.by_ref() {
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A kubectl binary.
pub struct Kubectl {
    /// Its label (`1.27`, `dispatcher`).
    pub name: String,
    path: PathBuf,
    cache: tempfile::TempDir,
}

const SDK_BIN: &str = "/usr/lib/google-cloud-sdk/bin";

impl Kubectl {
    /// The versioned binary `kubectl.<version>` (PATH or the Cloud SDK folder), or None.
    pub fn version(version: &str) -> Option<Kubectl> {
        let name = format!("kubectl.{version}");
        let path = find(&name)?;
        Some(Kubectl {
            name: version.to_string(),
            path,
            cache: tempfile::tempdir().ok()?,
        })
    }

    /// `/usr/bin/kubectl` (the version dispatcher).
    pub fn dispatcher() -> Option<Kubectl> {
        let p = PathBuf::from("/usr/bin/kubectl");
        p.exists().then(|| Kubectl {
            name: "dispatcher".into(),
            path: p,
            cache: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// Like [`version`](Self::version) but panics with a clear message when missing.
    pub fn require(version: &str) -> Kubectl {
        Self::version(version).unwrap_or_else(|| panic!("kubectl.{version} not found on PATH or in {SDK_BIN}; install the Google Cloud SDK kubectl components"))
    }

    /// The binary.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn run(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.path);
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path());
        cmd.args(args);
        cmd.env(
            "PATH",
            format!("{}:{}", std::env::var("PATH").unwrap_or_default(), SDK_BIN),
        );
        if let Some(input) = stdin {
            use std::io::Write;
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("spawn kubectl");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
            return child.wait_with_output().expect("kubectl");
        }
        cmd.output().expect("run kubectl")
    }
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').chain(std::iter::once(SDK_BIN)) {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    None
}

/// Writes a file into a temp dir and returns its path.
pub fn write_temp(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write");
    p
}

/// Retries `f` until it returns Some or the timeout passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
