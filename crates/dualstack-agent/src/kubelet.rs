//! The agent's kubelet port (`--port`, 10250): HTTPS that only the API server may call, with
//! kubelet's paths for the streaming subresources the API server forwards:
//!
//! | path | what |
//! |---|---|
//! | `GET /containerLogs/<ns>/<pod>/<container>` | the container's log (`follow`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `previous`, `limitBytes`), from the CRI-format files of [`crate::runtime`] |
//! | `GET/POST /exec/<ns>/<pod>/<container>?command=...` | a command in the container's namespaces (`dualstack shim exec`), with a pseudo-terminal and resizes for `tty=true` |
//! | `GET/POST /attach/<ns>/<pod>/<container>` | the running container's output from now on, its stdin (a FIFO) for `stdin: true`, and its terminal's size for `tty: true` |
//! | `GET/POST /portForward/<ns>/<pod>` | TCP to `localhost:<port>` inside the pod, per SPDY stream pair |
//!
//! Protocols: exec and attach speak the WebSocket channel protocol (`v5.channel.k8s.io`,
//! `v4.channel.k8s.io`; kubectl 1.30+) or `v4.channel.k8s.io` over SPDY/3.1 (kubectl
//! 1.27–1.29); both drive one protocol-free session. Port-forward speaks SPDY/3.1
//! (`portforward.k8s.io`), plain or tunnelled in WebSocket binary messages
//! (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+). SPDY itself is [`crate::spdy`].
//!
//! Callers authenticate with a client certificate from `--client-ca-file`; only the API
//! server's identity ([`APISERVER_CLIENT_CN`]) is allowed (401 without a certificate, 403
//! for any other identity, in kubelet's words).

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
use crate::spdy;
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
    /// `/portForward/<ns>/<pod>[/<uid>]` (no container).
    PortForward(PodContainer),
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
        ["portForward", ns, pod] => Some(Route::PortForward(pc(ns, pod, None, ""))),
        ["portForward", ns, pod, uid] => Some(Route::PortForward(pc(ns, pod, Some(uid), ""))),
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
        Some(Route::Exec(pc)) => exec(cfg, pc, &q, req).await,
        Some(Route::Attach(pc)) => attach(cfg, pc, &q, req).await,
        Some(Route::PortForward(pc)) => port_forward(cfg, pc, req),
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
    /// SPDY/3.1 with the chosen `X-Stream-Protocol-Version`.
    Spdy { protocol: &'static str },
}

/// The subprotocols a subresource speaks.
struct Protocols {
    websocket: &'static [&'static str],
    spdy: &'static [&'static str],
}

/// exec and attach: the WebSocket channel protocols (kubectl 1.30+), `v4.channel.k8s.io` over
/// SPDY (kubectl 1.27–1.29).
const STREAMS: Protocols = Protocols {
    websocket: &PROTOCOLS,
    spdy: &["v4.channel.k8s.io"],
};

/// port-forward: SPDY tunnelled in WebSocket messages (kubectl 1.31+), or plain SPDY.
const PORT_FORWARD: Protocols = Protocols {
    websocket: &["SPDY/3.1+portforward.k8s.io"],
    spdy: &["portforward.k8s.io"],
};

/// The upgrade asked for; `Err` is the message of a 400 Status.
fn upgrade_of(req: &Request<Incoming>, p: &Protocols) -> Result<Upgrade, String> {
    let h = |n: &str| {
        req.headers()
            .get_all(n)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .collect::<Vec<_>>()
    };
    let upgrade = h(header::UPGRADE.as_str());
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let offered = h(header::SEC_WEBSOCKET_PROTOCOL.as_str());
        let Some(protocol) = p
            .websocket
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .copied()
        else {
            return Err(format!(
                "none of the offered WebSocket subprotocols {offered:?} is supported: {:?} are",
                p.websocket
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
        let offered = h("x-stream-protocol-version");
        return p
            .spdy
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .copied()
            .map(|protocol| Upgrade::Spdy { protocol })
            .ok_or_else(|| {
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {:?}",
                    p.spdy
                )
            });
    }
    Err("Upgrade request required".into())
}

/// The 101 answer of an upgrade.
fn switching(up: &Upgrade) -> Response<Body> {
    let b = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade");
    let b = match up {
        Upgrade::WebSocket { protocol, key } => b
            .header(header::UPGRADE, "websocket")
            .header(
                header::SEC_WEBSOCKET_ACCEPT,
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
            )
            .header(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            ),
        Upgrade::Spdy { protocol } => b.header(header::UPGRADE, "SPDY/3.1").header(
            "x-stream-protocol-version",
            HeaderValue::from_static(protocol),
        ),
    };
    b.body(full(Bytes::new())).expect("a valid response")
}

/// The running process of a container's latest run, with its spec file. A run whose shim
/// has not yet recorded the process (the pod is reported Running as the shim starts) is
/// waited for briefly.
async fn running(cfg: &ServerConfig, pc: &PodContainer) -> Option<(RunFiles, i32)> {
    let dir = pod_dir(&cfg.root_dir, pc)?;
    let run = RunFiles::latest(&dir.join(&pc.container))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let pid = loop {
        if run.read_exit().is_some() {
            return None;
        }
        if let Some(p) = run.read_pid() {
            break p;
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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

#[derive(Debug, Clone, Copy)]
struct StreamOpts {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl StreamOpts {
    fn of(q: &Query) -> Self {
        StreamOpts {
            stdin: q.flag("stdin"),
            stdout: q.flag("stdout") || !q.0.iter().any(|(k, _)| k == "stdout"),
            stderr: q.flag("stderr"),
            tty: q.flag("tty"),
        }
    }
}

/// What the client sent, whatever the protocol.
#[derive(Debug)]
enum In {
    Stdin(Vec<u8>),
    StdinEnd,
    Resize(u16, u16),
    Gone,
}

/// The protocol-free side of a streaming session (exec or attach).
struct Session {
    inbound: mpsc::Receiver<In>,
    out: mpsc::Sender<(u8, Vec<u8>)>,
    status: tokio::sync::oneshot::Sender<Value>,
}

/// The protocol side of a session.
struct Transport {
    inbound: mpsc::Sender<In>,
    out: mpsc::Receiver<(u8, Vec<u8>)>,
    status: tokio::sync::oneshot::Receiver<Value>,
}

fn session() -> (Session, Transport) {
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, out_rx) = mpsc::channel(64);
    let (st_tx, st_rx) = tokio::sync::oneshot::channel();
    (
        Session {
            inbound: in_rx,
            out: out_tx,
            status: st_tx,
        },
        Transport {
            inbound: in_tx,
            out: out_rx,
            status: st_rx,
        },
    )
}

/// Starts a streaming session on the upgraded connection of `req` (answered with 101 by the
/// caller): the protocol driver and the session body `body`.
fn start_session<F, Fut>(req: Request<Incoming>, up: &Upgrade, opts: StreamOpts, body: F)
where
    F: FnOnce(Session) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (s, t) = session();
    let websocket = matches!(up, Upgrade::WebSocket { .. });
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "kubelet port: upgrade failed");
                return;
            }
        };
        tokio::spawn(body(s));
        let io = TokioIo::new(upgraded);
        if websocket {
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            drive_websocket(ws, t).await;
        } else {
            drive_spdy(io, opts, t).await;
        }
    });
}

/// The WebSocket channel protocol (v4/v5) of a session.
async fn drive_websocket<S>(ws: WebSocketStream<S>, t: Transport)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let inbound = t.inbound;
    let reader = tokio::spawn(async move {
        while let Some(m) = source.next().await {
            let msg = match m {
                Ok(Message::Binary(b)) if !b.is_empty() => match b[0] {
                    channel::STDIN => In::Stdin(b[1..].to_vec()),
                    channel::RESIZE => match serde_json::from_slice::<Value>(&b[1..]) {
                        Ok(v) => resize_of(&v),
                        Err(_) => continue,
                    },
                    channel::CLOSE if b.get(1) == Some(&channel::STDIN) => In::StdinEnd,
                    _ => continue,
                },
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            if inbound.send(msg).await.is_err() {
                return;
            }
        }
        let _ = inbound.send(In::Gone).await;
    });
    let mut out = t.out;
    while let Some((ch, data)) = out.recv().await {
        if sink.send(frame(ch, &data)).await.is_err() {
            break;
        }
    }
    if let Ok(st) = t.status.await {
        let _ = sink
            .send(frame(channel::ERROR, st.to_string().as_bytes()))
            .await;
    }
    close(&mut sink).await;
    reader.abort();
}

fn resize_of(v: &Value) -> In {
    In::Resize(
        v["Width"].as_u64().unwrap_or(80).min(u64::from(u16::MAX)) as u16,
        v["Height"].as_u64().unwrap_or(24).min(u64::from(u16::MAX)) as u16,
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The `v4.channel.k8s.io` protocol over SPDY: the client opens one stream per channel
/// (`streamType` error, stdin, stdout, stderr, resize), each accepted with a reply; output is
/// written on those streams, the Status on the error stream, each closed with `FIN`.
async fn drive_spdy<IO>(io: IO, opts: StreamOpts, t: Transport)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut events, w) = spdy::start(io);
    let mut expected = vec!["error"];
    if opts.stdin {
        expected.push("stdin");
    }
    if opts.stdout {
        expected.push("stdout");
    }
    if opts.stderr && !opts.tty {
        expected.push("stderr");
    }
    if opts.tty {
        expected.push("resize");
    }
    let mut ids: std::collections::HashMap<String, u32> = Default::default();
    let mut early = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !expected.iter().all(|s| ids.contains_key(*s)) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(spdy::Event::Syn { id, headers })) => {
                if !w.reply(id).await {
                    return;
                }
                if let Some(st) = header(&headers, "streamtype") {
                    ids.insert(st.to_string(), id);
                }
            }
            Ok(Some(ev)) => early.push(ev),
            _ => {
                tracing::debug!(?ids, "SPDY session: the client did not open its streams");
                return;
            }
        }
    }
    let stdin_id = ids.get("stdin").copied();
    let resize_id = ids.get("resize").copied();
    let inbound = t.inbound;
    let reader = tokio::spawn(async move {
        let mut resize_buf: Vec<u8> = Vec::new();
        let mut pending = early.into_iter();
        loop {
            let ev = match pending.next() {
                Some(ev) => ev,
                None => match events.recv().await {
                    Some(ev) => ev,
                    None => break,
                },
            };
            let mut msgs = Vec::new();
            match ev {
                spdy::Event::Data { id, data, fin } if Some(id) == stdin_id => {
                    if !data.is_empty() {
                        msgs.push(In::Stdin(data));
                    }
                    if fin {
                        msgs.push(In::StdinEnd);
                    }
                }
                spdy::Event::Data { id, data, .. } if Some(id) == resize_id => {
                    resize_buf.extend_from_slice(&data);
                    let mut it =
                        serde_json::Deserializer::from_slice(&resize_buf).into_iter::<Value>();
                    let mut used = 0;
                    while let Some(Ok(v)) = it.next() {
                        used = it.byte_offset();
                        msgs.push(resize_of(&v));
                    }
                    resize_buf.drain(..used);
                }
                spdy::Event::Reset { id } if Some(id) == stdin_id => msgs.push(In::StdinEnd),
                _ => {}
            }
            for m in msgs {
                if inbound.send(m).await.is_err() {
                    return;
                }
            }
        }
        let _ = inbound.send(In::Gone).await;
    });
    let mut out = t.out;
    while let Some((ch, data)) = out.recv().await {
        let id = match ch {
            channel::STDOUT => ids.get("stdout"),
            channel::STDERR => ids.get("stderr").or(ids.get("stdout")),
            _ => None,
        };
        if let Some(id) = id
            && !w.data(*id, &data, false).await
        {
            break;
        }
    }
    for s in ["stdout", "stderr", "stdin", "resize"] {
        if let Some(id) = ids.get(s) {
            w.data(*id, &[], true).await;
        }
    }
    let status = t.status.await.map(|s| s.to_string()).unwrap_or_default();
    w.data(ids["error"], status.as_bytes(), true).await;
    // The client closes the connection once it has read everything.
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
}

async fn exec(
    cfg: &ServerConfig,
    pc: PodContainer,
    q: &Query,
    req: Request<Incoming>,
) -> Response<Body> {
    let command = q.all("command");
    let up = match upgrade_of(&req, &STREAMS) {
        Ok(u) => u,
        Err(m) => return status(StatusCode::BAD_REQUEST, "BadRequest", &m),
    };
    let Some((run, pid)) = running(cfg, &pc).await else {
        return container_not_found(&pc);
    };
    if command.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 command",
        );
    }
    let opts = StreamOpts::of(q);
    let exe = cfg.shim_exe.clone();
    let answer = switching(&up);
    start_session(req, &up, opts, move |s| async move {
        run_command(&exe, &run, pid, &command, opts, s).await;
    });
    answer
}

/// What the command's threads report.
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

/// Runs `command` in the container's namespaces (`dualstack shim exec`) for a session: its
/// output to the client, the client's stdin and resizes to it, its exit as the Status.
async fn run_command(
    exe: &Path,
    run: &RunFiles,
    pid: i32,
    command: &[String],
    opts: StreamOpts,
    mut s: Session,
) {
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
    // A terminal starts with the client's size: its first resize is awaited (briefly), so a
    // command that asks at once (`stty size`) sees it. What comes before it is replayed.
    let mut early: Vec<In> = Vec::new();
    let mut size: Option<rustix::termios::Winsize> = None;
    if opts.tty {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, s.inbound.recv()).await {
            if let In::Resize(cols, rows) = m {
                size = Some(rustix::termios::Winsize {
                    ws_col: cols,
                    ws_row: rows,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                });
                break;
            }
            early.push(m);
        }
    }
    let spawned = if opts.tty {
        match nix::pty::openpty(None, None) {
            Ok(pty) => {
                // Never inherited by other processes the agent starts meanwhile (openpty sets
                // no close-on-exec); the command gets its own copies as 0, 1 and 2.
                for fd in [&pty.master, &pty.slave] {
                    let _ = nix::fcntl::fcntl(
                        fd,
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                    );
                }
                let slave = std::fs::File::from(pty.slave);
                let clone = |f: &std::fs::File| f.try_clone().map(Stdio::from);
                match (clone(&slave), clone(&slave), clone(&slave)) {
                    (Ok(i), Ok(o), Ok(e)) => {
                        cmd.stdin(i).stdout(o).stderr(e);
                        let master = std::fs::File::from(pty.master);
                        if let Some(size) = size {
                            let _ = rustix::termios::tcsetwinsize(&master, size);
                        }
                        let r = cmd.spawn();
                        // The command's copies of the slave go too: with none left here, the
                        // master reads its end once the command and its children are gone.
                        cmd.stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null());
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
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(pipe(opts.stdin))
            .stdout(pipe(opts.stdout))
            .stderr(pipe(opts.stderr));
        cmd.spawn()
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = s.status.send(json!({"metadata": {}, "status": "Failure",
                "reason": "InternalError", "message": format!("starting the command failed: {e}")}));
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
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
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
    for m in early {
        match m {
            In::Stdin(d) => {
                let _ = in_tx.send(Some(d));
            }
            In::StdinEnd => {
                let _ = in_tx.send(None);
            }
            _ => {}
        }
    }
    let mut exit: Option<i32> = None;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut inbound_open = true;
    loop {
        let deadline = drain_deadline;
        tokio::select! {
            m = rx.recv() => match m {
                Some(Out::Data(ch, data)) => {
                    if s.out.send((ch, data)).await.is_err() {
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
            m = s.inbound.recv(), if inbound_open => match m {
                Some(In::Stdin(d)) => { let _ = in_tx.send(Some(d)); }
                Some(In::StdinEnd) => { let _ = in_tx.send(None); }
                Some(In::Resize(cols, rows)) => {
                    if let Some(m) = &pty_master {
                        let size = rustix::termios::Winsize {
                            ws_col: cols,
                            ws_row: rows,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        let _ = rustix::termios::tcsetwinsize(m, size);
                    }
                }
                Some(In::Gone) | None => {
                    // The client has gone: the command is left to end on its input's EOF,
                    // as a container runtime leaves it.
                    inbound_open = false;
                    let _ = in_tx.send(None);
                    if exit.is_none() {
                        return;
                    }
                }
            },
        }
    }
    if let Some(code) = exit {
        let _ = s.status.send(exit_status(command, code));
    }
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

async fn attach(
    cfg: &ServerConfig,
    pc: PodContainer,
    q: &Query,
    req: Request<Incoming>,
) -> Response<Body> {
    let up = match upgrade_of(&req, &STREAMS) {
        Ok(u) => u,
        Err(m) => return status(StatusCode::BAD_REQUEST, "BadRequest", &m),
    };
    let Some((run, _)) = running(cfg, &pc).await else {
        return container_not_found(&pc);
    };
    let opts = StreamOpts::of(q);
    let answer = switching(&up);
    start_session(req, &up, opts, move |s| async move {
        run_attach(run, opts, s).await;
    });
    answer
}

/// Streams the run's new log records until it ends or the client goes; with `stdin` asked
/// for and a container with `stdin: true`, the client's input goes to its stdin FIFO (with
/// `stdinOnce`, the end of this input is the end of the container's).
async fn run_attach(run: RunFiles, opts: StreamOpts, mut s: Session) {
    let spec: Option<crate::runtime::ShimSpec> = std::fs::read(run.spec())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let fifo = spec
        .as_ref()
        .and_then(|sp| sp.stdin.clone())
        .filter(|_| opts.stdin);
    let once = spec.as_ref().is_some_and(|sp| sp.stdin_once);
    // A terminal's size goes to the shim, which holds the terminal (`tty: true`).
    let resize = spec
        .as_ref()
        .and_then(|sp| sp.resize.clone())
        .filter(|_| opts.tty);
    let (in_tx, in_rx) = std::sync::mpsc::channel::<Option<Vec<u8>>>();
    if let Some(fifo) = fifo {
        std::thread::spawn(move || {
            use std::os::unix::fs::OpenOptionsExt;
            // Non-blocking open: no reader left (the container gone) is an error, not a wait;
            // then blocking writes.
            let Ok(mut w) = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                .open(&fifo)
            else {
                return;
            };
            let _ = nix::fcntl::fcntl(
                &w,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            );
            while let Ok(Some(data)) = in_rx.recv() {
                if w.write_all(&data).is_err() {
                    break;
                }
            }
            drop(w);
            if once {
                // The shim waits on this FIFO to let go of its writer.
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                    .open(fifo.with_extension("stdin.done"));
            }
        });
    }
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
                logs::Stream::Stdout => (channel::STDOUT, opts.stdout),
                logs::Stream::Stderr => (channel::STDERR, opts.stderr),
            };
            if !want {
                continue;
            }
            let mut data = r.content;
            if !r.partial {
                data.push(b'\n');
            }
            if s.out.send((ch, data)).await.is_err() {
                return;
            }
        }
        if ended && end == 0 {
            let _ = s.status.send(json!({"metadata": {}, "status": "Success"}));
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            m = s.inbound.recv() => match m {
                Some(In::Stdin(d)) => { let _ = in_tx.send(Some(d)); }
                Some(In::StdinEnd) => { let _ = in_tx.send(None); }
                Some(In::Resize(cols, rows)) => {
                    if let Some(path) = &resize {
                        send_size(path, cols, rows);
                    }
                }
                None | Some(In::Gone) => { let _ = in_tx.send(None); return }
            },
        }
    }
}

/// Writes "COLS ROWS" to the shim's resize FIFO: a non-blocking open (no shim reading it,
/// the container gone, is no wait) and one write of a few bytes, which a FIFO keeps whole.
fn send_size(path: &Path, cols: u16, rows: u16) {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(mut w) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
    {
        let _ = w.write_all(format!("{cols} {rows}\n").as_bytes());
    }
}

fn port_forward(cfg: &ServerConfig, pc: PodContainer, req: Request<Incoming>) -> Response<Body> {
    let up = match upgrade_of(&req, &PORT_FORWARD) {
        Ok(u) => u,
        Err(m) => return status(StatusCode::BAD_REQUEST, "BadRequest", &m),
    };
    let Some(dir) = pod_dir(&cfg.root_dir, &pc) else {
        return text(
            StatusCode::NOT_FOUND,
            &format!("pod not found ({:?})", pc.pod),
        );
    };
    let netns = Some(dir.join("net.ns")).filter(|p| dualstack_host::netns::exists(p));
    let uid = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let websocket = matches!(up, Upgrade::WebSocket { .. });
    let answer = switching(&up);
    let target = Forwarding {
        netns,
        pod: pc.pod,
        uid,
    };
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "port-forward: upgrade failed");
                return;
            }
        };
        if websocket {
            // kubectl 1.31+: the SPDY connection's bytes ride in binary messages.
            let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
            let (ours, theirs) = tokio::io::duplex(256 * 1024);
            tokio::spawn(tunnel(ws, theirs));
            serve_port_forward(ours, target).await;
        } else {
            serve_port_forward(upgraded, target).await;
        }
    });
    answer
}

/// Carries a byte stream in WebSocket binary messages, both ways.
async fn tunnel<S>(ws: WebSocketStream<S>, io: tokio::io::DuplexStream)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut sink, mut source) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(io);
    let down = tokio::spawn(async move {
        while let Some(Ok(m)) = source.next().await {
            match m {
                Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if sink
                    .send(Message::Binary(buf[..n].to_vec().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    close(&mut sink).await;
    down.abort();
}

/// Where port-forward connects: the pod's network namespace (the node's for `hostNetwork`).
#[derive(Debug, Clone)]
struct Forwarding {
    netns: Option<PathBuf>,
    pod: String,
    uid: String,
}

/// The port-forward protocol over SPDY: per forwarded connection the client opens an `error`
/// and a `data` stream (`port`, `requestID` headers); the data stream is spliced to a TCP
/// connection to `localhost:<port>` inside the pod; a failure is written on the error stream.
async fn serve_port_forward<IO>(io: IO, target: Forwarding)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    #[derive(Default)]
    struct Pair {
        error: Option<u32>,
        data: Option<u32>,
    }
    let (mut events, w) = spdy::start(io);
    let mut pairs: std::collections::HashMap<String, Pair> = Default::default();
    let mut to_pod: std::collections::HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> =
        Default::default();
    while let Some(ev) = events.recv().await {
        match ev {
            spdy::Event::Syn { id, headers } => {
                if !w.reply(id).await {
                    return;
                }
                let port = header(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                let req = header(&headers, "requestid")
                    .unwrap_or_default()
                    .to_string();
                let Some(port) = port else {
                    w.reset(id).await;
                    continue;
                };
                let p = pairs.entry(req.clone()).or_default();
                match header(&headers, "streamtype") {
                    Some("error") => p.error = Some(id),
                    Some("data") => p.data = Some(id),
                    _ => {}
                }
                if let (Some(e), Some(d)) = (p.error, p.data) {
                    pairs.remove(&req);
                    let (tx, rx) = mpsc::channel(16);
                    to_pod.insert(d, tx);
                    tokio::spawn(forward(target.clone(), port, d, e, w.clone(), rx));
                }
            }
            spdy::Event::Data { id, data, fin } => {
                if let Some(tx) = to_pod.get(&id) {
                    if !data.is_empty() && tx.send(Some(data)).await.is_err() {
                        to_pod.remove(&id);
                        continue;
                    }
                    if fin {
                        let _ = tx.send(None).await;
                        to_pod.remove(&id);
                    }
                }
            }
            spdy::Event::Reset { id } => {
                to_pod.remove(&id);
            }
        }
    }
}

/// Connects to `localhost:port` in the pod (IPv4, then IPv6).
async fn connect_in_pod(netns: Option<&Path>, port: u16) -> Result<tokio::net::TcpStream, String> {
    let mut errors = Vec::new();
    for (family, ip) in [
        ("IPv4", std::net::IpAddr::from([127, 0, 0, 1])),
        (
            "IPv6",
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ),
    ] {
        let addr = SocketAddr::new(ip, port);
        let make = move || {
            if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
        };
        let socket = match netns {
            Some(ns) => dualstack_host::netns::run_in(ns, make)
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
            None => make().map_err(|e| e.to_string()),
        };
        match socket {
            Ok(s) => match s.connect(addr).await {
                Ok(c) => return Ok(c),
                Err(e) => errors.push(format!("{family}: dial tcp {addr}: {e}")),
            },
            Err(e) => errors.push(format!("{family}: {e}")),
        }
    }
    Err(format!(
        "failed to connect to localhost:{port} inside the pod's network namespace, {}",
        errors.join(" ")
    ))
}

async fn forward(
    target: Forwarding,
    port: u16,
    data_id: u32,
    error_id: u32,
    w: spdy::Writer,
    mut from_client: mpsc::Receiver<Option<Vec<u8>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = match connect_in_pod(target.netns.as_deref(), port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                target.pod, target.uid
            );
            w.data(error_id, msg.as_bytes(), true).await;
            w.data(data_id, &[], true).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    let w2 = w.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !w2.data(data_id, &buf[..n], false).await {
                        return;
                    }
                }
            }
        }
        w2.data(data_id, &[], true).await;
    });
    tokio::spawn(async move {
        while let Some(m) = from_client.recv().await {
            match m {
                Some(d) => {
                    if wr.write_all(&d).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = wr.shutdown().await;
                    break;
                }
            }
        }
    });
    // The error stream ends when the pod's side has (as the kubelet's forwarder returns):
    // kubectl closes its local connection only then.
    let _ = up.await;
    w.data(error_id, &[], true).await;
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
        assert_eq!(
            parse_route("/portForward/ns/p"),
            Some(Route::PortForward(PodContainer {
                container: String::new(),
                ..pc(None)
            }))
        );
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
