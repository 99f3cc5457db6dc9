//! Test support: run the real `dualstack server` binary on a free loopback port with its own
//! data directory, and drive it with real kubectl binaries and plain HTTPS.
//!
//! Address plan used by the tests (documentation ranges and ULAs only):
//! - Services: `10.0.0.0/16` and `fd00:10::/108` (both orders for the two dual-stack clusters)
//! - Pods (cluster CIDR): `10.244.0.0/16` and `fd00:10:244::/56`
//! - Nodes: `192.0.2.0/24` and `2001:db8:1::/64`
//! - Load balancers: `198.51.100.0/24` and `2001:db8:1b::/120`

#![allow(dead_code)]

pub mod lab;

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

/// `dualstack token create --node NAME` for this server's data directory (with
/// `--kubeconfig-out FILE` when given): the node's bearer token.
pub fn node_token(s: &TestServer, node: &str, kubeconfig_out: Option<&Path>) -> String {
    let mut cmd = Command::new(binary());
    cmd.args(["token", "create", "--node", node, "--data-dir"])
        .arg(&s.data_dir);
    if let Some(out) = kubeconfig_out {
        cmd.arg("--kubeconfig-out").arg(out);
    }
    let out = cmd.output().expect("run dualstack token create");
    assert!(
        out.status.success(),
        "token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
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
    /// A kube-rs client with the admin kubeconfig (30 s reads, 5 s connects).
    pub async fn kube_client(&self) -> kube::Client {
        let file = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let mut config =
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        config.read_timeout = Some(Duration::from_secs(30));
        config.connect_timeout = Some(Duration::from_secs(5));
        kube::Client::try_from(config).unwrap()
    }

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

    /// The server process id (None after [`kill9`](Self::kill9)).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The port the server listens on (from its URL).
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in server URL")
    }

    /// The CA certificate clients trust.
    pub fn ca(&self) -> PathBuf {
        self.data_dir.join("pki/ca.crt")
    }

    /// An admin request with a JSON body of content type `ct`; the answer's status and JSON body
    /// (`Null` when the body is not JSON).
    pub fn json_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        ct: &str,
    ) -> (u16, serde_json::Value) {
        let text = body.map(|b| b.to_string());
        let (code, out) = self
            .request(method, path, text.as_deref(), body.map(|_| ct))
            .expect("curl");
        (
            code,
            serde_json::from_str(&out).unwrap_or(serde_json::Value::Null),
        )
    }

    /// POSTs a JSON object and asserts 201; returns the created object.
    pub fn create_json(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let (code, out) = self.json_call("POST", path, Some(&body), "application/json");
        assert_eq!(code, 201, "POST {path}: {out}");
        out
    }

    /// One HTTPS request with any token (empty: none), any body (sent from a file, so bodies of
    /// several MiB work) and extra headers; returns status, response headers and body.
    pub fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Response {
        self.call_with(&[], token, method, path, body, headers)
    }

    /// Like [`call`](Self::call) with extra curl options (e.g. `--http1.1`).
    pub fn call_with(
        &self,
        curl_options: &[&str],
        token: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Response {
        let tmp = tempfile::tempdir().expect("tempdir");
        let head = tmp.path().join("headers");
        let mut cmd = Command::new("curl");
        cmd.args(curl_options);
        cmd.args(["-sS", "--max-time", "30", "--cacert"])
            .arg(self.ca());
        cmd.args(["-X", method, "-o", "-", "-D"]).arg(&head);
        if !token.is_empty() {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        for (k, v) in headers {
            cmd.args(["-H", &format!("{k}: {v}")]);
        }
        if let Some(b) = body {
            let f = tmp.path().join("body");
            std::fs::write(&f, b).expect("write body");
            cmd.arg("--data-binary").arg(format!("@{}", f.display()));
        }
        cmd.arg(format!("{}{}", self.url, path));
        let out = cmd.output().expect("run curl");
        let head = std::fs::read_to_string(&head).unwrap_or_default();
        // The last header block counts (a `100 Continue` block may precede it).
        let block = head
            .split("\r\n\r\n")
            .filter(|b| !b.trim().is_empty())
            .last()
            .unwrap_or("");
        let mut lines = block.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Response {
            status,
            headers,
            body: String::from_utf8_lossy(&out.stdout).to_string(),
            curl_error: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    /// Starts a streaming GET (a watch) with the admin token; events arrive line by line.
    pub fn watch(&self, path: &str) -> WatchStream {
        self.watch_as(&self.token, path)
    }

    /// Like [`watch`](Self::watch) with another bearer token.
    pub fn watch_as(&self, token: &str, path: &str) -> WatchStream {
        let mut cmd = Command::new("curl");
        // `-i` would make curl hold the head back until the first body bytes; `-D /dev/stderr`
        // writes it as soon as it arrives, so read the head from stderr and the body from stdout.
        cmd.args([
            "-sS",
            "-N",
            "-D",
            "/dev/stderr",
            "--max-time",
            "120",
            "--cacert",
        ])
        .arg(self.ca());
        if !token.is_empty() {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        cmd.arg(format!("{}{}", self.url, path));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn curl");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let head_tx = tx.clone();
        let (body_go, body_wait) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            // The head ends with an empty line; the body thread waits for it, so head lines
            // always come first.
            let mut released = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let end = line.trim_end_matches('\r').is_empty();
                if head_tx.send(line).is_err() {
                    return;
                }
                if end && !released {
                    released = true;
                    let _ = body_go.send(());
                }
            }
            if !released {
                let _ = body_go.send(());
            }
        });
        std::thread::spawn(move || {
            let _ = body_wait.recv();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        WatchStream {
            child,
            lines: rx,
            status: 0,
            headers: Vec::new(),
            head_done: false,
            ended: false,
        }
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

/// `s` without terminal colour escapes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
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

/// A response of [`TestServer::call`].
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status (0 when the request failed at the transport level).
    pub status: u16,
    /// Response headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// What curl printed on stderr.
    pub curl_error: String,
}

impl Response {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.body))
    }

    /// Every value of one header (name case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A streaming response read line by line (curl `-N -i`); the curl process dies with it. The
/// response head is read lazily: the server may send it only with the first event.
pub struct WatchStream {
    child: Child,
    lines: mpsc::Receiver<String>,
    status: u16,
    headers: Vec<(String, String)>,
    head_done: bool,
    ended: bool,
}

/// What [`WatchStream::next_line`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// One body line.
    Line(String),
    /// Nothing within the timeout; the stream is still open.
    Timeout,
    /// The server ended the stream.
    End,
}

impl WatchStream {
    /// Reads the response head if it has not been read yet, waiting at most `timeout`; true
    /// once it is complete.
    pub fn head_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.head_done && !self.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.ended = true;
                    return false;
                }
            };
            let line = line.trim_end_matches('\r');
            if self.status == 0 {
                if line.starts_with("HTTP/") {
                    self.status = line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                }
                continue;
            }
            if line.is_empty() {
                // A `100 Continue` head is followed by the real one.
                if self.status == 100 {
                    self.status = 0;
                    continue;
                }
                self.head_done = true;
                return true;
            }
            if let Some((k, v)) = line.split_once(':') {
                self.headers
                    .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        self.head_done
    }

    /// The HTTP status (waits up to 30 s for the head; 0 if none came).
    pub fn status(&mut self) -> u16 {
        self.head_within(Duration::from_secs(30));
        self.status
    }

    /// One response header (waits for the head like [`status`](Self::status)).
    pub fn header(&mut self, name: &str) -> Option<String> {
        self.head_within(Duration::from_secs(30));
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }

    /// The next body line, waiting at most `timeout` (for the head too).
    pub fn next_line(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        if !self.head_within(timeout) {
            return if self.ended { Next::End } else { Next::Timeout };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => Next::Line(l),
            Err(mpsc::RecvTimeoutError::Timeout) => Next::Timeout,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.ended = true;
                Next::End
            }
        }
    }

    /// The next event as JSON, or None if nothing arrived within `timeout` or the stream ended.
    /// Panics on a line that is not one JSON object.
    pub fn next_event(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        match self.next_line(timeout) {
            Next::Line(l) => Some(
                serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("watch line is not one JSON object ({e}): {l}")),
            ),
            Next::Timeout | Next::End => None,
        }
    }

    /// Reads events until one matches `pred` (returned) or `timeout` passes (panics with what
    /// was seen).
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Next::Line(l) => {
                    let v: serde_json::Value = serde_json::from_str(&l)
                        .unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {l}"));
                    if pred(&v) {
                        return v;
                    }
                    seen.push(summary(&v));
                }
                Next::Timeout => panic!("no matching watch event in {timeout:?}; saw {seen:?}"),
                Next::End => panic!("watch ended without a matching event; saw {seen:?}"),
            }
        }
    }
}

/// `TYPE name@rv` of a watch event, for messages.
pub fn summary(ev: &serde_json::Value) -> String {
    format!(
        "{} {}@{}",
        ev["type"].as_str().unwrap_or("?"),
        ev["object"]["metadata"]["name"].as_str().unwrap_or(""),
        ev["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
    )
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
