//! What every suite needs: a real `dualstack server` child process in a temporary data
//! directory ([`ServerProcess`]), HTTPS clients that trust its CA and keep their connection
//! alive ([`Connector`], [`Conn`]), a concurrent create driver ([`create_many`]), latency
//! summaries ([`Summary`]) and the markdown table the suites print ([`Report`]).
//!
//! Clients speak HTTP/1.1 by default, one TLS connection per concurrent client (a request at a
//! time on each), or HTTP/2 with `--http2` (still one connection per create client; watchers
//! share a connection per [`H2_STREAMS_PER_CONN`] streams, as client-go multiplexes them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_rustls::TlsConnector;

/// Watch streams multiplexed on one HTTP/2 connection (hyper's server allows 200).
pub const H2_STREAMS_PER_CONN: usize = 100;

/// How long a server may take to log its URL and then to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a suite's future on a runtime of its own (the client side of the benchmark).
pub fn block_on<F: std::future::Future<Output = Result<()>>>(fut: F) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// How the suites start the server and talk to it (flags shared by every suite).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerOpts {
    /// Speak HTTP/2 instead of HTTP/1.1.
    #[arg(long)]
    pub http2: bool,
    /// The server's --controllers: `-*` measures the API server alone; `*` also runs the
    /// built-in controllers (EndpointSlices, Endpoints for every Service) as a plain
    /// `dualstack server` does.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "-*",
        allow_hyphen_values = true
    )]
    pub controllers: String,
    /// Another flag for the server (repeatable), e.g. `--server-arg=--leader-elect=false`.
    #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

impl ServerOpts {
    /// `base`, then `--controllers`, then the extra flags.
    pub fn flags(&self, base: &[&str]) -> Vec<String> {
        let mut flags: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        flags.push(format!("--controllers={}", self.controllers));
        flags.extend(self.server_args.iter().cloned());
        flags
    }

    /// The protocol's name, for reports.
    pub fn protocol(&self) -> &'static str {
        if self.http2 { "HTTP/2" } else { "HTTP/1.1" }
    }
}

/// A `dualstack server` child process with its own temporary data directory; killed on drop.
pub struct ServerProcess {
    child: Child,
    /// The child's process id (for `/proc/<pid>/status`).
    pub pid: u32,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The flags after `--data-dir` and `--secure-port`.
    pub flags: Vec<String>,
    connector: Connector,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("pid", &self.pid)
            .field("url", &self.url)
            .finish()
    }
}

/// The filesystem a path is on.
#[derive(Debug, Clone)]
pub struct Filesystem {
    /// e.g. `ext4`, `xfs`, `tmpfs`.
    pub name: String,
    /// Whether it lives in memory (tmpfs, ramfs), where fsync is free.
    pub in_memory: bool,
}

/// The filesystem of `path` (`statfs`'s magic number).
pub fn filesystem(path: &Path) -> Result<Filesystem> {
    let st = rustix::fs::statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u64;
    let (name, in_memory) = match magic {
        0xEF53 => ("ext4", false),
        0x5846_5342 => ("xfs", false),
        0x9123_683E => ("btrfs", false),
        0x2FC1_2FC1 => ("zfs", false),
        0x794C_7630 => ("overlayfs", false),
        0x0102_1994 => ("tmpfs", true),
        0x8584_58F6 => ("ramfs", true),
        _ => ("other", false),
    };
    let name = if name == "other" {
        format!("filesystem 0x{magic:x}")
    } else {
        name.to_string()
    };
    Ok(Filesystem { name, in_memory })
}

/// The filesystem line the suites print: where the durable store lives.
pub fn data_dir_note() -> String {
    let tmp = std::env::temp_dir();
    match filesystem(&tmp) {
        Ok(fs) => format!(
            "data directory under {} on {} (fsync before every acknowledged write)",
            tmp.display(),
            fs.name
        ),
        Err(e) => format!("data directory under {}: {e}", tmp.display()),
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak resident) in KiB.
    pub peak_kib: u64,
}

impl Memory {
    /// `VmRSS` in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    /// `VmHWM` in MiB.
    pub fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

impl ServerProcess {
    /// Starts `dualstack server --data-dir <tempdir> --secure-port 0 <flags>`, waits for its URL
    /// on stderr and for `/readyz`.
    pub async fn start(flags: &[&str], http2: bool) -> Result<ServerProcess> {
        Self::spawn(flags.iter().map(|s| s.to_string()).collect(), http2).await
    }

    /// Like [`start`](Self::start) with `base`, then the flags of `opts`.
    pub async fn start_with(opts: &ServerOpts, base: &[&str]) -> Result<ServerProcess> {
        Self::spawn(opts.flags(base), opts.http2).await
    }

    async fn spawn(flags: Vec<String>, http2: bool) -> Result<ServerProcess> {
        let dir = tempfile::Builder::new()
            .prefix("dualstack-bench-")
            .tempdir()
            .context("creating a temporary directory")?;
        let fs = filesystem(dir.path())?;
        if fs.in_memory {
            bail!(
                "the data directory {} is on {}, which would flatter durable writes (fsync costs nothing there): set TMPDIR to a directory on a disk",
                dir.path().display(),
                fs.name
            );
        }
        Self::launch(dir, flags, http2).await
    }

    /// Kills the server and starts it again on the same data directory with the same flags.
    pub async fn restart(self) -> Result<ServerProcess> {
        let ServerProcess {
            mut child,
            flags,
            connector,
            dir,
            ..
        } = self;
        let _ = child.kill().await;
        Self::launch(dir, flags, connector.http2()).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        flags: Vec<String>,
        http2: bool,
    ) -> Result<ServerProcess> {
        let data_dir = dir.path().join("data");
        let log = dir.path().join("server.log");
        let exe = std::env::current_exe().context("finding the dualstack binary")?;
        let mut child = Command::new(exe)
            .arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--secure-port", "0"])
            .args(&flags)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting dualstack server")?;
        let pid = child.id().context("server pid")?;
        let stderr = child.stderr.take().context("server stderr")?;
        let (url_tx, url_rx) = tokio::sync::oneshot::channel::<String>();
        let mut log_file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .await?;
        tokio::spawn(async move {
            let mut url_tx = Some(url_tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = log_file.write_all(line.as_bytes()).await;
                let _ = log_file.write_all(b"\n").await;
                let _ = log_file.flush().await;
                if let Some(url) = serving_url(&line)
                    && let Some(tx) = url_tx.take()
                {
                    let _ = tx.send(url);
                }
            }
        });
        let url = match tokio::time::timeout(START_TIMEOUT, url_rx).await {
            Ok(Ok(url)) => url,
            _ => bail!(
                "dualstack server did not start serving; its log:\n{}",
                tail(&log, 40)
            ),
        };
        let addr: SocketAddr = url
            .strip_prefix("https://")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected server URL {url}"))?;
        let token = read_token(&data_dir.join("kubeconfig"))?;
        let connector = Connector::new(addr, &data_dir.join("pki/ca.crt"), &token, http2)?;
        let server = ServerProcess {
            child,
            pid,
            url,
            flags,
            connector,
            log,
            dir,
        };
        server.wait_ready().await?;
        progress(&format!("server pid {pid} ready at {}", server.url));
        Ok(server)
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut conn = self.connector.connect().await?;
        loop {
            match conn.request(Method::GET, "/readyz", None).await {
                Ok((StatusCode::OK, _)) => return Ok(()),
                Ok(_) => {}
                Err(_) => conn = self.connector.connect().await?,
            }
            if Instant::now() > deadline {
                bail!(
                    "dualstack server not ready in time; its log:\n{}",
                    tail(&self.log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The command line, for reports.
    pub fn command_line(&self) -> String {
        format!(
            "dualstack server --data-dir <tmp> --secure-port 0 {}",
            self.flags.join(" ")
        )
    }

    /// A connector for clients of this server (admin token).
    pub fn connector(&self) -> Connector {
        self.connector.clone()
    }

    /// CPU time the server has used (user + system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("reading /proc/{}/stat", self.pid))?;
        // Fields after the command name (which may hold spaces) start at field 3 (state);
        // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
        match (ticks(14), ticks(15)) {
            (Some(u), Some(s)) => Ok(Duration::from_millis((u + s) * 10)),
            _ => bail!("unexpected /proc/{}/stat", self.pid),
        }
    }

    /// Waits until the server is idle (under 5% of a core over two 500 ms windows in a row,
    /// e.g. once its built-in controllers have caught up), at most `max`; returns the wait.
    pub async fn settle(&self, max: Duration) -> Result<Duration> {
        const WINDOW: Duration = Duration::from_millis(500);
        let start = Instant::now();
        let mut quiet = 0;
        let mut last = self.cpu_time()?;
        while quiet < 2 && start.elapsed() < max {
            tokio::time::sleep(WINDOW).await;
            let now = self.cpu_time()?;
            quiet = if now.saturating_sub(last) <= WINDOW / 20 {
                quiet + 1
            } else {
                0
            };
            last = now;
        }
        Ok(start.elapsed())
    }

    /// The server's resident memory now.
    pub fn memory(&self) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("reading /proc/{}/status", self.pid))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in /proc/{}/status", self.pid))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }

    /// Kills the server and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The URL of a `serving url=https://...` log line (ANSI colours, if any, removed).
fn serving_url(line: &str) -> Option<String> {
    let plain = strip_ansi(line);
    let i = plain.find("url=https://")?;
    let url = plain[i + 4..].split_whitespace().next()?;
    Some(url.trim_matches('"').to_string())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_token(kubeconfig: &Path) -> Result<String> {
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .with_context(|| format!("no token in {}", kubeconfig.display()))
}

/// Opens authenticated HTTPS connections to one server. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    addr: SocketAddr,
    authority: Arc<str>,
    authorization: header::HeaderValue,
    tls: TlsConnector,
    http2: bool,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("addr", &self.addr)
            .field("http2", &self.http2)
            .finish()
    }
}

impl Connector {
    /// Trusts `ca` (PEM), sends `token`; offers only `h2` or only `http/1.1` by ALPN.
    pub fn new(addr: SocketAddr, ca: &Path, token: &str, http2: bool) -> Result<Connector> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![if http2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        Ok(Connector {
            addr,
            authority: addr.to_string().into(),
            authorization: format!("Bearer {token}").parse()?,
            tls: TlsConnector::from(Arc::new(cfg)),
            http2,
        })
    }

    /// Whether connections speak HTTP/2.
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// A new TLS connection (TCP_NODELAY, as the server sets it).
    pub async fn connect(&self) -> Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self.tls.connect(name, tcp).await.context("TLS handshake")?;
        let io = TokioIo::new(tls);
        let sender = if self.http2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .context("HTTP/2 handshake")?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .context("HTTP/1.1 handshake")?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        let mut conn = Conn {
            sender,
            connector: self.clone(),
        };
        // Authenticate at once, as a client does with its first request: the server keeps
        // connections that never authenticated in a small, evictable tier.
        conn.expect(StatusCode::OK, Method::GET, "/version", None)
            .await?;
        Ok(conn)
    }

    /// Opens `n` connections, at most 32 handshakes at a time.
    pub async fn connect_many(&self, n: usize) -> Result<Vec<Conn>> {
        use futures::StreamExt;
        futures::stream::iter(0..n)
            .map(|_| self.connect())
            .buffered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One keep-alive connection.
pub struct Conn {
    sender: Sender,
    connector: Connector,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("connector", &self.connector)
            .finish()
    }
}

impl Conn {
    /// Sends a request (JSON body, if any) and returns the response head with its body stream.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>> {
        let c = &self.connector;
        let mut req = Request::builder()
            .method(method)
            .header(header::AUTHORIZATION, c.authorization.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "dualstack-bench/0.1");
        req = if c.http2 {
            req.uri(format!("https://{}{path}", c.authority))
        } else {
            req.uri(path).header(header::HOST, &*c.authority)
        };
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        Ok(resp)
    }

    /// Sends a request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Like [`request`](Self::request), failing unless the status is `want`.
    pub async fn expect(
        &mut self,
        want: StatusCode,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes> {
        let (status, body) = self.request(method.clone(), path, body).await?;
        if status != want {
            bail!(
                "{method} {path}: {status} (wanted {want}): {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            );
        }
        Ok(body)
    }
}

/// Latency percentiles of a set of samples (nearest rank).
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Summary {
    /// Summarizes `samples` (sorted in place).
    pub fn of(samples: &mut [Duration]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        Summary {
            n: samples.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// Milliseconds with a precision that suits the value.
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// The outcome of [`create_many`].
#[derive(Debug, Clone)]
pub struct CreateRun {
    /// Creates answered 201.
    pub created: usize,
    /// Creates answered otherwise (or failed on the wire).
    pub failed: usize,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// Latency of every successful create.
    pub latencies: Vec<Duration>,
    /// Each successful create's answer body, when asked for.
    pub bodies: Vec<Bytes>,
}

impl CreateRun {
    /// Successful creates per second.
    pub fn per_second(&self) -> f64 {
        self.created as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency summary.
    pub fn summary(&self) -> Summary {
        Summary::of(&mut self.latencies.clone())
    }

    /// Adds another run's results (for runs split into rounds); elapsed times add up.
    pub fn merge(&mut self, other: CreateRun) {
        self.created += other.created;
        self.failed += other.failed;
        self.first_error = self.first_error.take().or(other.first_error);
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.bodies.extend(other.bodies);
    }

    /// Fails when any create failed.
    pub fn ensure_ok(&self, what: &str) -> Result<()> {
        match &self.first_error {
            Some(e) => Err(anyhow!(
                "{} of {} {what} creates failed; first: {e}",
                self.failed,
                self.failed + self.created
            )),
            None => Ok(()),
        }
    }
}

/// POSTs `count` objects to `path` from one task per connection in `conns`; object `i`'s body
/// is `body(i)`. The connections are open before the clock starts.
pub async fn create_many(
    conns: &mut Vec<Conn>,
    path: &str,
    count: usize,
    keep_bodies: bool,
    body: Arc<dyn Fn(usize) -> Bytes + Send + Sync>,
) -> Result<CreateRun> {
    let next = Arc::new(AtomicUsize::new(0));
    let path: Arc<str> = path.into();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(conns.len());
    for mut conn in conns.drain(..) {
        let (next, path, body) = (next.clone(), path.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = CreateRun {
                created: 0,
                failed: 0,
                first_error: None,
                elapsed: Duration::ZERO,
                latencies: Vec::with_capacity(count / 16 + 1),
                bodies: Vec::new(),
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let req = body(i);
                let t = Instant::now();
                match conn.request(Method::POST, &path, Some(req)).await {
                    Ok((StatusCode::CREATED, b)) => {
                        run.latencies.push(t.elapsed());
                        run.created += 1;
                        if keep_bodies {
                            run.bodies.push(b);
                        }
                    }
                    Ok((status, b)) => {
                        run.failed += 1;
                        run.first_error.get_or_insert_with(|| {
                            format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&b[..b.len().min(300)])
                            )
                        });
                    }
                    Err(e) => {
                        run.failed += 1;
                        run.first_error.get_or_insert_with(|| format!("{e:#}"));
                        // The connection may be gone; open another one.
                        match conn.connector.connect().await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (conn, run)
        }));
    }
    let mut total = CreateRun {
        created: 0,
        failed: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(count),
        bodies: Vec::new(),
    };
    for t in tasks {
        let (conn, run) = t.await?;
        conns.push(conn);
        total.merge(run);
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

/// A progress line on stderr (stdout carries only the report), with the time since start.
pub fn progress(what: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed();
    eprintln!("bench [{:6.2}s] {what}", t.as_secs_f64());
}

/// The load average, for the report's header (other work on the machine skews figures).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One row of a report.
#[derive(Debug, Clone)]
pub struct Row {
    measurement: String,
    result: String,
    goal: String,
    met: Option<bool>,
}

/// A markdown table of measurements with their goals.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Adds a measurement with its goal; `met` is None when there is no goal.
    pub fn row(
        &mut self,
        measurement: impl Into<String>,
        result: impl Into<String>,
        goal: impl Into<String>,
        met: Option<bool>,
    ) {
        self.rows.push(Row {
            measurement: measurement.into(),
            result: result.into(),
            goal: goal.into(),
            met,
        });
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        println!("| measurement | result | goal | met |");
        println!("|---|---:|---|---|");
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            println!("| {} | {} | {} | {met} |", r.measurement, r.result, r.goal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.n, 100);
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        let one = Summary::of(&mut [Duration::from_millis(7)]);
        assert_eq!(
            (one.p50, one.p99),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
    }

    #[test]
    fn serving_url_is_found_with_or_without_colours() {
        let plain = "2026-01-01T00:00:00Z  INFO dualstack_apiserver::server: serving url=https://127.0.0.1:41234";
        assert_eq!(
            serving_url(plain).as_deref(),
            Some("https://127.0.0.1:41234")
        );
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[3murl\u{1b}[0m\u{1b}[2m=\u{1b}[0mhttps://127.0.0.1:5 x";
        assert_eq!(
            serving_url(coloured).as_deref(),
            Some("https://127.0.0.1:5")
        );
        assert_eq!(serving_url("API server ready"), None);
    }
}
