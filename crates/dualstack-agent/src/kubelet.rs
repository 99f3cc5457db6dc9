//! The agent's kubelet port (`--port`, 10250): HTTPS that only the API server may call, with
//! kubelet's paths for the streaming subresources the API server forwards:
//!
//! | path | what |
//! |---|---|
//! | `GET /containerLogs/<ns>/<pod>/<container>` | the container's log (`follow`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `previous`, `limitBytes`), from the CRI-format files of [`crate::runtime`] |
//! | `GET/POST /exec/<ns>/<pod>/<container>?command=...` | a command in the container's namespaces (`dualstack shim exec`) over WebSocket, `v5.channel.k8s.io` / `v4.channel.k8s.io`, with a pseudo-terminal and resizes for `tty=true` |
//! | `GET/POST /attach/<ns>/<pod>/<container>` | the running container's output from now on (its stdin is `/dev/null`) |
//! | `/portForward/<ns>/<pod>` | not served: a Status that says so |
//!
//! Callers authenticate with a client certificate from `--client-ca-file`; only the API
//! server's identity ([`APISERVER_CLIENT_CN`]) is allowed (401 without a certificate, 403
//! for any other identity, in kubelet's words). SPDY/3.1 upgrades (kubectl before 1.30) are
//! validated like WebSocket ones, then answered with a Status naming the kubectl needed.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::runtime::RunFiles;
use dualstack_node::logs::{self, LogOptions, Renderer};

/// The Common Name of the API server's kubelet client certificate (kubeadm's
/// `apiserver-kubelet-client`), the only caller allowed.
pub const APISERVER_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// kubelet's default `--port`.
pub const DEFAULT_PORT: u16 = 10250;

/// The WebSocket subprotocols served, preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// How often a followed log is polled for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Settings of the kubelet port.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address (`--address` and `--port`).
    pub addr: SocketAddr,
    /// `--tls-cert-file`.
    pub cert: PathBuf,
    /// `--tls-private-key-file`.
    pub key: PathBuf,
    /// `--client-ca-file`.
    pub client_ca: PathBuf,
    /// `--root-dir` (pods and logs).
    pub root_dir: PathBuf,
    /// The binary providing `dualstack shim exec`.
    pub shim_exe: PathBuf,
}

/// Failures starting the kubelet port.
#[derive(Debug, Error)]
pub enum KubeletError {
    /// A certificate, key or CA file could not be read.
    #[error("reading {path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The TLS configuration was refused.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// A Kubernetes `Status` answer.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body.to_string()))
        .expect("a valid response")
}

/// A plain-text error, as kubelet writes streaming errors.
fn text(code: StatusCode, message: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(message.to_string()))
        .expect("a valid response")
}

/// The TLS configuration: our serving certificate, client certificates verified against the
/// CA but optional (a caller without one gets a 401, not a failed handshake).
pub fn tls_config(cfg: &ServerConfig) -> Result<Arc<rustls::ServerConfig>, KubeletError> {
    let pem_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls::pki_types::pem::Error| KubeletError::Pem {
            path: path.clone(),
            message: e.to_string(),
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(pem_err(&cfg.cert))?
        .collect::<Result<_, _>>()
        .map_err(pem_err(&cfg.cert))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(pem_err(&cfg.key))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&cfg.client_ca).map_err(pem_err(&cfg.client_ca))? {
        roots
            .add(ca.map_err(pem_err(&cfg.client_ca))?)
            .map_err(|e| KubeletError::Tls(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| KubeletError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KubeletError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| KubeletError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Binds the kubelet port and serves it until the process ends (`tls` from [`tls_config`],
/// so bad files are reported before anything starts).
pub async fn serve(cfg: ServerConfig, tls: Arc<rustls::ServerConfig>) -> Result<(), KubeletError> {
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|source| KubeletError::Listen {
            addr: cfg.addr,
            source,
        })?;
    tracing::info!(addr = %cfg.addr, "serving the kubelet port");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let cfg = Arc::new(cfg);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting on the kubelet port failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "kubelet port: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| common_name(c.as_ref()));
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let cfg = cfg.clone();
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(route(&cfg, identity.as_deref(), req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "kubelet port: connection ended");
            }
        });
    }
}

/// The subject Common Name of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// What a request asks for, from its path (kubelet's routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/containerLogs/<ns>/<pod>/<container>`.
    Logs(PodContainer),
    /// `/exec/<ns>/<pod>[/<uid>]/<container>`.
    Exec(PodContainer),
    /// `/attach/<ns>/<pod>[/<uid>]/<container>`.
    Attach(PodContainer),
    /// `/portForward/<ns>/<pod>[/<uid>]`.
    PortForward,
}

/// A container of a pod, by names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainer {
    /// The namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The pod's uid when the path names it.
    pub uid: Option<String>,
    /// The container.
    pub container: String,
}

/// Parses a kubelet path.
pub fn parse_route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let pc = |ns: &str, pod: &str, uid: Option<&str>, c: &str| PodContainer {
        namespace: ns.to_string(),
        pod: pod.to_string(),
        uid: uid.map(str::to_string),
        container: c.to_string(),
    };
    match segs.as_slice() {
        ["containerLogs", ns, pod, c] => Some(Route::Logs(pc(ns, pod, None, c))),
        ["exec", ns, pod, c] => Some(Route::Exec(pc(ns, pod, None, c))),
        ["exec", ns, pod, uid, c] => Some(Route::Exec(pc(ns, pod, Some(uid), c))),
        ["attach", ns, pod, c] => Some(Route::Attach(pc(ns, pod, None, c))),
        ["attach", ns, pod, uid, c] => Some(Route::Attach(pc(ns, pod, Some(uid), c))),
        ["portForward", _, _] | ["portForward", _, _, _] => Some(Route::PortForward),
        _ => None,
    }
}

async fn route(
    cfg: &ServerConfig,
    identity: Option<&str>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let verb = if req.method() == Method::GET {
        "get"
    } else {
        "create"
    };
    match identity {
        None => return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"),
        Some(cn) if cn != APISERVER_CLIENT_CN => {
            return text(
                StatusCode::FORBIDDEN,
                &format!("Forbidden (user={cn}, verb={verb}, resource=nodes, subresource=proxy)"),
            );
        }
        Some(_) => {}
    }
    let q = Query::parse(req.uri().query().unwrap_or(""));
    match parse_route(&path) {
        Some(Route::Logs(pc)) if req.method() == Method::GET => container_logs(cfg, &pc, &q).await,
        Some(Route::Exec(pc)) => exec(cfg, pc, &q, req),
        Some(Route::Attach(pc)) => attach(cfg, pc, &q, req),
        Some(Route::PortForward) => status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "port forwarding is not supported by this node agent (dualstack): reach the pod by its IPs from a node (`dualstack exec node-N -- ...`) or through a Service",
        ),
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// Query parameters (repeated keys kept, for `command`).
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Self {
        Query(form_urlencoded::parse(q.as_bytes()).into_owned().collect())
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

/// The pod directory of `pc` (by `pods/<uid>/pod.json`; with several, the named uid or the
/// newest).
fn pod_dir(root: &Path, pc: &PodContainer) -> Option<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(root.join("pods")).ok()?.flatten() {
        let Ok(bytes) = std::fs::read(e.path().join("pod.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        if v["namespace"] != pc.namespace.as_str() || v["name"] != pc.pod.as_str() {
            continue;
        }
        if let Some(uid) = &pc.uid
            && v["uid"] != uid.as_str()
        {
            continue;
        }
        let t = e
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
            best = Some((t, e.path()));
        }
    }
    best.map(|(_, p)| p)
}

fn container_not_found(pc: &PodContainer) -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        &format!("container not found ({:?})", pc.container),
    )
}

/// The options of a log request; errors are kubelet's texts.
fn log_options(q: &Query, now: Timestamp) -> Result<LogOptions, String> {
    let num = |k: &str| -> Result<Option<i64>, String> {
        q.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("invalid value {v:?} for {k}"))
            })
            .transpose()
    };
    let since = match (num("sinceSeconds")?, q.get("sinceTime")) {
        (Some(s), _) => Some(now - jiff::SignedDuration::from_secs(s)),
        (None, Some(t)) => Some(
            t.parse::<Timestamp>()
                .map_err(|_| format!("invalid value {t:?} for sinceTime"))?,
        ),
        (None, None) => None,
    };
    Ok(LogOptions {
        tail_lines: num("tailLines")?.map(|n| n.max(0) as u64),
        since,
        timestamps: q.flag("timestamps"),
        limit_bytes: num("limitBytes")?.map(|n| n.max(0) as u64),
    })
}

async fn container_logs(cfg: &ServerConfig, pc: &PodContainer, q: &Query) -> Response<Body> {
    let opts = match log_options(q, Timestamp::now()) {
        Ok(o) => o,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let Some(dir) = pod_dir(&cfg.root_dir, pc) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pod {:?} not found on this node", pc.pod),
        );
    };
    let cdir = dir.join(&pc.container);
    let Some(latest) = RunFiles::latest(&cdir) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "container {:?} in pod {:?} is waiting to start: ContainerCreating",
                pc.container, pc.pod
            ),
        );
    };
    let run = if q.flag("previous") {
        match latest.n.checked_sub(1) {
            Some(n) => RunFiles::new(&cdir, n),
            None => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!(
                        "previous terminated container {:?} in pod {:?} not found",
                        pc.container, pc.pod
                    ),
                );
            }
        }
    } else {
        latest
    };
    let follow = q.flag("follow");
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    tokio::spawn(stream_log(run, opts, follow, tx));
    let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(BodyExt::boxed(body))
        .expect("a valid response")
}

/// Sends the log of `run`; with `follow`, goes on with new lines until the run has ended and
/// its log is drained, or the caller has gone.
async fn stream_log(
    run: RunFiles,
    opts: LogOptions,
    follow: bool,
    tx: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
) {
    let path = run.log();
    let bytes = tokio::fs::read(&path).await.unwrap_or_default();
    // Only whole lines now; a line being written is read on the next poll.
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let records: Vec<logs::Record> = bytes[..end]
        .split(|&b| b == b'\n')
        .filter_map(logs::parse_record)
        .collect();
    let mut renderer = Renderer::new(&opts);
    let mut out = Vec::new();
    for r in &records[logs::tail_start(&records, opts.tail_lines)..] {
        renderer.push(r, &mut out);
    }
    if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
        return;
    }
    if !follow {
        return;
    }
    let mut offset = end as u64;
    loop {
        if renderer.done() {
            return;
        }
        let ended = run.read_exit().is_some();
        let mut chunk = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&path) {
            use std::io::Seek;
            if f.seek(std::io::SeekFrom::Start(offset)).is_ok() {
                let _ = f.read_to_end(&mut chunk);
            }
        }
        let end = chunk.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        offset += end as u64;
        let mut out = Vec::new();
        for r in chunk[..end]
            .split(|&b| b == b'\n')
            .filter_map(logs::parse_record)
        {
            renderer.push(&r, &mut out);
        }
        if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
            return;
        }
        if ended && end == 0 {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return,
        }
    }
}

/// What an upgrade request asks for.
enum Upgrade {
    /// A WebSocket with the chosen subprotocol.
    WebSocket { protocol: &'static str, key: String },
    /// SPDY/3.1 (kubectl 1.27–1.29).
    Spdy,
}

/// The upgrade asked for; `Err` is the message of a 400 Status.
fn upgrade_of(req: &Request<Incoming>) -> Result<Upgrade, String> {
    let h = |n: header::HeaderName| {
        req.headers()
            .get_all(n)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .collect::<Vec<_>>()
    };
    let upgrade = h(header::UPGRADE);
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let offered = h(header::SEC_WEBSOCKET_PROTOCOL);
        let Some(protocol) = PROTOCOLS
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .copied()
        else {
            return Err(format!(
                "none of the offered WebSocket subprotocols {offered:?} is supported: {PROTOCOLS:?} are (kubectl 1.30 or newer)"
            ));
        };
        let key = req
            .headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        return Ok(Upgrade::WebSocket { protocol, key });
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        return Ok(Upgrade::Spdy);
    }
    Err("Upgrade request required".into())
}

fn spdy_refused(what: &str) -> Response<Body> {
    status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &format!(
            "{what} over SPDY/3.1 is not supported by this cluster (dualstack): use kubectl 1.30 or newer, which speaks WebSocket (v5.channel.k8s.io)"
        ),
    )
}

fn switching(protocol: &str, key: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
        )
        .header(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(protocol).expect("a valid protocol"),
        )
        .body(full(Bytes::new()))
        .expect("a valid response")
}

/// The running process of a container's latest run, with its spec file.
fn running(cfg: &ServerConfig, pc: &PodContainer) -> Option<(RunFiles, i32)> {
    let dir = pod_dir(&cfg.root_dir, pc)?;
    let run = RunFiles::latest(&dir.join(&pc.container))?;
    if run.read_exit().is_some() {
        return None;
    }
    let pid = run.read_pid()?;
    let alive = dualstack_host::process::ProcessRef {
        pid: pid.pid,
        start_time: pid.start_time,
    }
    .alive();
    alive.then_some((run.clone(), pid.pid))
}

/// Channels of the remotecommand protocol.
mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    pub const CLOSE: u8 = 255;
}

/// The error-channel Status of an ended command (v4/v5): success, or upstream's
/// `NonZeroExitCode` with the `ExitCode` cause kubectl turns into its exit code.
pub fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: command '{}' exited with {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

fn exec(cfg: &ServerConfig, pc: PodContainer, q: &Query, req: Request<Incoming>) -> Response<Body> {
    let command = q.all("command");
    let up = match upgrade_of(&req) {
        Ok(u) => u,
        Err(m) => return status(StatusCode::BAD_REQUEST, "BadRequest", &m),
    };
    let Some((run, pid)) = running(cfg, &pc) else {
        return container_not_found(&pc);
    };
    if command.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 command",
        );
    }
    let Upgrade::WebSocket { protocol, key } = up else {
        return spdy_refused("exec");
    };
    let opts = StreamOpts {
        stdin: q.flag("stdin"),
        stdout: q.flag("stdout") || !q.0.iter().any(|(k, _)| k == "stdout"),
        stderr: q.flag("stderr"),
        tty: q.flag("tty"),
    };
    let exe = cfg.shim_exe.clone();
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(up) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await;
                run_exec(ws, &exe, &run, pid, &command, opts).await;
            }
            Err(e) => tracing::debug!(error = %e, "exec: upgrade failed"),
        }
    });
    switching(protocol, &key)
}

#[derive(Debug, Clone, Copy)]
struct StreamOpts {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// What the session's threads report.
enum Out {
    Data(u8, Vec<u8>),
    Exited(i32),
}

/// Reads `r` until EOF into channel `ch`.
fn pump(mut r: impl Read + Send + 'static, ch: u8, tx: mpsc::Sender<Out>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(Out::Data(ch, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
}

async fn run_exec<S>(
    ws: WebSocketStream<S>,
    exe: &Path,
    run: &RunFiles,
    pid: i32,
    command: &[String],
    opts: StreamOpts,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut source) = ws.split();
    let mut cmd = Command::new(exe);
    cmd.arg("shim")
        .arg("exec")
        .arg("--pid")
        .arg(pid.to_string())
        .arg("--spec")
        .arg(run.spec());
    if opts.tty {
        cmd.arg("--tty");
    }
    cmd.arg("--").args(command);
    let (tx, mut rx) = mpsc::channel::<Out>(64);
    let mut stdin_w: Option<std::fs::File> = None;
    let mut pty_master: Option<std::fs::File> = None;
    let spawned = if opts.tty {
        match nix::pty::openpty(None, None) {
            Ok(pty) => {
                let slave = std::fs::File::from(pty.slave);
                let clone = |f: &std::fs::File| f.try_clone().map(Stdio::from);
                match (clone(&slave), clone(&slave), clone(&slave)) {
                    (Ok(i), Ok(o), Ok(e)) => {
                        cmd.stdin(i).stdout(o).stderr(e);
                        let master = std::fs::File::from(pty.master);
                        let r = cmd.spawn();
                        drop(slave);
                        if r.is_ok() {
                            if let Ok(m) = master.try_clone() {
                                pump(m, channel::STDOUT, tx.clone());
                            }
                            pty_master = Some(master);
                        }
                        r
                    }
                    _ => Err(std::io::Error::other("duplicating the terminal failed")),
                }
            }
            Err(e) => Err(std::io::Error::other(e)),
        }
    } else {
        cmd.stdin(if opts.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if opts.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if opts.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.spawn().inspect(|_| {})
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let st = json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
                "message": format!("starting the command failed: {e}")});
            let _ = sink
                .send(frame(channel::ERROR, st.to_string().as_bytes()))
                .await;
            close(&mut sink).await;
            return;
        }
    };
    if let Some(o) = child.stdout.take() {
        pump(o, channel::STDOUT, tx.clone());
    }
    if let Some(e) = child.stderr.take() {
        pump(e, channel::STDERR, tx.clone());
    }
    if let Some(i) = child.stdin.take() {
        stdin_w = Some(std::fs::File::from(std::os::fd::OwnedFd::from(i)));
    }
    if let Some(m) = &pty_master {
        stdin_w = m.try_clone().ok();
    }
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let code = match child.wait() {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
                }
                Err(_) => 1,
            };
            let _ = tx.blocking_send(Out::Exited(code));
        });
    }
    drop(tx);
    // stdin writes go through a thread: pipe and terminal writes block.
    let (in_tx, in_rx) = std::sync::mpsc::channel::<Option<Vec<u8>>>();
    if let Some(mut w) = stdin_w {
        std::thread::spawn(move || {
            while let Ok(Some(data)) = in_rx.recv() {
                if w.write_all(&data).is_err() {
                    return;
                }
            }
        });
    }
    let mut exit: Option<i32> = None;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        let deadline = drain_deadline;
        tokio::select! {
            m = rx.recv() => match m {
                Some(Out::Data(ch, data)) => {
                    if sink.send(frame(ch, &data)).await.is_err() {
                        break;
                    }
                }
                Some(Out::Exited(code)) => {
                    exit = Some(code);
                    // Output still in flight is sent; a daemonized child holding the
                    // pipes open does not hold the session.
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                }
                None => break,
            },
            _ = async { tokio::time::sleep_until(deadline.expect("set")).await }, if deadline.is_some() => break,
            m = source.next() => match m {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => match b[0] {
                    channel::STDIN => { let _ = in_tx.send(Some(b[1..].to_vec())); }
                    channel::RESIZE => {
                        if let (Some(m), Ok(v)) = (&pty_master, serde_json::from_slice::<Value>(&b[1..])) {
                            let size = rustix::termios::Winsize {
                                ws_col: v["Width"].as_u64().unwrap_or(80) as u16,
                                ws_row: v["Height"].as_u64().unwrap_or(24) as u16,
                                ws_xpixel: 0,
                                ws_ypixel: 0,
                            };
                            let _ = rustix::termios::tcsetwinsize(m, size);
                        }
                    }
                    channel::CLOSE if b.get(1) == Some(&channel::STDIN) => {
                        let _ = in_tx.send(None);
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client has gone: the command is left to end on its own input EOF.
                    let _ = in_tx.send(None);
                    if exit.is_none() {
                        return;
                    }
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let Some(code) = exit else {
        close(&mut sink).await;
        return;
    };
    let st = exit_status(command, code);
    let _ = sink
        .send(frame(channel::ERROR, st.to_string().as_bytes()))
        .await;
    close(&mut sink).await;
}

/// Ends the session with a normal closure (1000): client-go treats a close without a status
/// code (1005) as an error of the stream.
async fn close<S>(sink: &mut S)
where
    S: futures::Sink<Message> + Unpin,
{
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = sink.close().await;
}

fn frame(ch: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(ch);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

fn attach(
    cfg: &ServerConfig,
    pc: PodContainer,
    q: &Query,
    req: Request<Incoming>,
) -> Response<Body> {
    let up = match upgrade_of(&req) {
        Ok(u) => u,
        Err(m) => return status(StatusCode::BAD_REQUEST, "BadRequest", &m),
    };
    let Some((run, _)) = running(cfg, &pc) else {
        return container_not_found(&pc);
    };
    let Upgrade::WebSocket { protocol, key } = up else {
        return spdy_refused("attach");
    };
    let stdout = q.flag("stdout") || !q.0.iter().any(|(k, _)| k == "stdout");
    let stderr = q.flag("stderr");
    tokio::spawn(async move {
        let Ok(up) = hyper::upgrade::on(req).await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await;
        run_attach(ws, run, stdout, stderr).await;
    });
    switching(protocol, &key)
}

/// Streams the run's new log records until it ends or the client goes (stdin is not
/// attachable: containers run with `/dev/null` as stdin).
async fn run_attach<S>(ws: WebSocketStream<S>, run: RunFiles, stdout: bool, stderr: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut source) = ws.split();
    let path = run.log();
    let mut offset = std::fs::metadata(&path).map_or(0, |m| m.len());
    loop {
        let ended = run.read_exit().is_some();
        let mut chunk = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&path) {
            use std::io::Seek;
            if f.seek(std::io::SeekFrom::Start(offset)).is_ok() {
                let _ = f.read_to_end(&mut chunk);
            }
        }
        let end = chunk.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        offset += end as u64;
        for r in chunk[..end]
            .split(|&b| b == b'\n')
            .filter_map(logs::parse_record)
        {
            let (ch, want) = match r.stream {
                logs::Stream::Stdout => (channel::STDOUT, stdout),
                logs::Stream::Stderr => (channel::STDERR, stderr),
            };
            if !want {
                continue;
            }
            let mut data = r.content;
            if !r.partial {
                data.push(b'\n');
            }
            if sink.send(frame(ch, &data)).await.is_err() {
                return;
            }
        }
        if ended && end == 0 {
            let st = json!({"metadata": {}, "status": "Success"});
            let _ = sink
                .send(frame(channel::ERROR, st.to_string().as_bytes()))
                .await;
            close(&mut sink).await;
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            m = source.next() => if matches!(m, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_paths_are_parsed() {
        let pc = |uid: Option<&str>| PodContainer {
            namespace: "ns".into(),
            pod: "p".into(),
            uid: uid.map(str::to_string),
            container: "c".into(),
        };
        assert_eq!(
            parse_route("/containerLogs/ns/p/c"),
            Some(Route::Logs(pc(None)))
        );
        assert_eq!(parse_route("/exec/ns/p/c"), Some(Route::Exec(pc(None))));
        assert_eq!(
            parse_route("/exec/ns/p/u1/c"),
            Some(Route::Exec(pc(Some("u1"))))
        );
        assert_eq!(parse_route("/attach/ns/p/c"), Some(Route::Attach(pc(None))));
        assert_eq!(parse_route("/portForward/ns/p"), Some(Route::PortForward));
        assert_eq!(parse_route("/pods"), None);
    }

    #[test]
    fn a_non_zero_exit_carries_the_exit_code_cause_kubectl_reads() {
        let v = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(&[], 0)["status"], "Success");
    }

    #[test]
    fn log_options_resolve_since_seconds_against_now() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let q = Query::parse("sinceSeconds=30&tailLines=5&timestamps=true&limitBytes=10");
        let o = log_options(&q, now).unwrap();
        assert_eq!(o.since, Some("2026-01-01T00:00:30Z".parse().unwrap()));
        assert_eq!(o.tail_lines, Some(5));
        assert!(o.timestamps);
        assert_eq!(o.limit_bytes, Some(10));
        assert!(log_options(&Query::parse("tailLines=x"), now).is_err());
    }
}
