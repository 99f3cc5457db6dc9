//! Start-up and the HTTP edge: PKI and tokens, storage and watch cache, the resources, the
//! built-in controllers, and the HTTPS listener (rustls with ring, HTTP/2 and HTTP/1.1) with
//! authentication, request metrics and routing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dualstack_apimachinery::decode::MAX_BODY_BYTES;
use dualstack_apimachinery::status::ApiError;
use dualstack_store::Backend;
use dualstack_store::cache::Cache;
use dualstack_store::embedded::Embedded;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::auth::{AUTHENTICATED_GROUP, MASTERS_GROUP, Tokens, UserInfo};
use crate::config::ServerConfig;
use crate::conn::{
    Backoff, ConnId, Governor, LogLimiter, PLAIN_HTTP_ANSWER, looks_like_plain_http,
};
use crate::discovery::{self, DiscoveryFormat};
use crate::handlers::{self, RequestContext, Resources, error_response, json_response};
use crate::kinds::{self, KindsDecorator, service::ServiceAllocators};
use crate::metrics::{Metrics, RequestLabels};
use crate::openapi::OpenApi;
use crate::registry::Storage;
use crate::request::{Query, parse_path};
use crate::tls::{Pki, server_url, write_kubeconfig};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
struct AppState {
    rc: RequestContext,
    tokens: Arc<Tokens>,
    openapi: Arc<OpenApi>,
    metrics: Metrics,
    server_address: String,
    ready: watch::Receiver<bool>,
    /// Permits for requests with large bodies, run on blocking threads.
    heavy: Arc<tokio::sync::Semaphore>,
    /// The client of kubelet ports (pods/log, exec, attach); None when its files are unusable.
    kubelet: Option<Arc<crate::kubelet::KubeletClient>>,
}

/// Bodies larger than this are handled on a blocking thread.
const OFFLOAD_BODY_BYTES: usize = 16 * 1024;

/// A running server.
pub struct Server {
    addr: SocketAddr,
    url: String,
    kubeconfig: PathBuf,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The storage, for in-process controllers and tests.
    pub storage: Storage,
    /// The resources.
    pub resources: Resources,
    /// The ClusterIP and NodePort allocators.
    pub allocators: Arc<ServiceAllocators>,
    /// What `/metrics` serves (other components may add theirs).
    pub metrics: Metrics,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("url", &self.url).finish()
    }
}

fn admin() -> UserInfo {
    UserInfo::new("admin", &[MASTERS_GROUP, "system:authenticated"])
}

impl Server {
    /// Starts the server on the embedded store in the data directory and returns once it
    /// accepts connections.
    pub async fn start(config: ServerConfig) -> Result<Server> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        // The store, keys and tokens are secrets: only the server's user may read them.
        restrict(&config.data_dir, 0o700)?;
        let backend: Arc<dyn Backend> = Arc::new(
            Embedded::open(&config.data_dir.join("store.redb")).context("opening the store")?,
        );
        restrict(&config.data_dir.join("store.redb"), 0o600)?;
        Self::start_with_backend(config, backend).await
    }

    /// Starts the server on a given store (tests: a probed or faulty one).
    pub async fn start_with_backend(
        config: ServerConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<Server> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        restrict(&config.data_dir, 0o700)?;
        let pki = Pki::new(&config.data_dir);
        // Names in-cluster clients use too: the `kubernetes` Service's IP (upstream's
        // apiServerServiceIP) and the addresses of the listeners in other namespaces.
        let mut addrs = config.advertise_addresses.clone();
        addrs.push(config.bind_address);
        addrs.push(config.service_ranges.api_server_service_ip());
        addrs.extend(config.netns_listeners.iter().map(|(_, at)| at.ip()));
        pki.ensure(&addrs, &[])?;
        let tokens = Arc::new(Tokens::new(&config.data_dir));
        let admin_token = tokens.ensure(&admin())?;

        restrict(&config.data_dir.join("pki"), 0o700)?;
        let allocators = Arc::new(ServiceAllocators::new(
            &config.service_ranges,
            config.node_port_range,
        )?);
        let decorator = Arc::new(KindsDecorator::new(allocators.clone()));
        let cache = Cache::start(backend.clone(), "/registry/", decorator).await?;
        let storage = Storage { backend, cache };
        let resources = Resources::new(kinds::all(&storage, allocators.clone()));
        let openapi = Arc::new(OpenApi::build(&resources));
        let metrics = Metrics::new();

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = watch::channel(false);
        let listener = listen(SocketAddr::new(config.bind_address, config.secure_port))
            .with_context(|| {
                format!(
                    "listening on {}:{}",
                    config.bind_address, config.secure_port
                )
            })?;
        let addr = listener.local_addr()?;
        let mut extra = Vec::new();
        for (ns, at) in &config.netns_listeners {
            extra.push(listen_in_netns(ns, *at).with_context(|| {
                format!("listening on {at} in network namespace {}", ns.display())
            })?);
        }

        let mut tasks = Vec::new();
        tasks.push(
            crate::controllers::allocator_sync::start(
                &storage,
                allocators.clone(),
                shutdown_rx.clone(),
            )
            .await?,
        );
        crate::controllers::bootstrap::run(&storage, &resources, &config, addr.port()).await?;
        crate::controllers::servicecidr::sync(&resources).await;
        tasks.push(crate::controllers::bootstrap::start(
            storage.clone(),
            resources.clone(),
            config.clone(),
            addr.port(),
            shutdown_rx.clone(),
        ));
        tasks.push(crate::controllers::namespace::start(
            storage.clone(),
            resources.clone(),
            shutdown_rx.clone(),
        ));
        tasks.push(crate::controllers::servicecidr::start(
            storage.clone(),
            resources.clone(),
            shutdown_rx.clone(),
        ));
        tasks.push(crate::controllers::repair::start(
            storage.clone(),
            resources.clone(),
            allocators.clone(),
            config.repair_interval,
            shutdown_rx.clone(),
            ready_tx,
        ));
        let url = server_url(addr.ip(), addr.port());
        let kubeconfig = config.data_dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &url, &pki.ca_pem()?, "admin", &admin_token)?;

        let state = AppState {
            rc: RequestContext {
                resources: resources.clone(),
                storage: storage.clone(),
            },
            tokens,
            openapi,
            metrics: metrics.clone(),
            server_address: format!("{}", addr),
            ready: ready_rx,
            heavy: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            kubelet: match crate::kubelet::KubeletClient::new(&config.kubelet, &pki.ca_cert) {
                Ok(k) => Some(Arc::new(k)),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "no kubelet client: pods/log, exec and attach are not available");
                    None
                }
            },
        };
        let tokens = state.tokens.clone();
        let router = router(state);
        let tls = pki.server_config()?;
        let governor = Governor::new(config.connection_limits);
        tasks.push(tokio::spawn(reap_loop(
            governor.clone(),
            shutdown_rx.clone(),
        )));
        for listener in extra {
            tasks.push(tokio::spawn(accept_loop(
                listener,
                tls.clone(),
                router.clone(),
                tokens.clone(),
                governor.clone(),
                shutdown_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(accept_loop(
            listener,
            tls,
            router,
            tokens,
            governor,
            shutdown_rx,
        )));
        tracing::info!(%url, "serving");
        Ok(Server {
            addr,
            url,
            kubeconfig,
            shutdown,
            tasks,
            storage,
            resources,
            allocators,
            metrics,
        })
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// Stops serving and the built-in controllers.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    tokens: Arc<Tokens>,
    governor: Governor,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    let mut accept_log = LogLimiter::new(Duration::from_secs(5));
    let mut refused_log = LogLimiter::new(Duration::from_secs(5));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => {
                    backoff.succeeded();
                    c
                }
                Err(e) => {
                    // Out of descriptors (or another transient error): back off rather than
                    // spin, and log at a bounded rate.
                    if let Some(n) = accept_log.allow(std::time::Instant::now()) {
                        tracing::warn!(error = %e, suppressed = n, "accept failed");
                    }
                    tokio::time::sleep(backoff.failed()).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Some((id, kill)) = governor.admit() else {
            if let Some(n) = refused_log.allow(std::time::Instant::now()) {
                let (held, _) = governor.counts();
                tracing::warn!(%peer, held, suppressed = n, "connection refused: every connection is busy");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        crate::conn::keepalive(&tcp);
        let tls = tls.clone();
        let router = router.clone();
        let governor = governor.clone();
        let tokens = tokens.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = serve_connection(tcp, peer, tls, router, tokens, governor.clone(), id) => {}
                _ = kill.notified() => {
                    tracing::debug!(%peer, "connection closed by the connection governor");
                }
            }
            governor.closed(id);
        });
        // Let the new connection's task run before the next accept: a client's ClientHello is
        // usually in the socket already, so it reaches the protected "hello" state before a
        // burst of newer connections could evict it (see `conn`).
        tokio::task::yield_now().await;
    }
}

/// One connection: plain-HTTP detection, the TLS handshake (bounded by the governor's reaper),
/// then HTTP/2 or HTTP/1.1 with header-read timeouts; every request is counted in flight until
/// its response body ends.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    tokens: Arc<Tokens>,
    governor: Governor,
    id: ConnId,
) {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) if looks_like_plain_http(first[0]) => {
            use tokio::io::AsyncWriteExt;
            let mut tcp = tcp;
            let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
            let _ = tcp.shutdown().await;
            return;
        }
        Ok(1) => {}
        _ => return,
    }
    // Read the whole ClientHello first: a connection that gets this far is worth more than
    // one that sent nothing or half a record (see `conn`).
    let start =
        match tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await
        {
            Ok(start) => start,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TLS ClientHello failed");
                return;
            }
        };
    governor.hello(id);
    let stream = match start.into_stream(tls).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
    };
    let trusted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let router = router.clone();
        let governor = governor.clone();
        let tokens = tokens.clone();
        let trusted = trusted.clone();
        async move {
            governor.begin(id);
            let mut req = req;
            req.extensions_mut().insert(crate::conn::ConnHandle {
                governor: governor.clone(),
                id,
            });
            let guard = InFlight {
                governor: governor.clone(),
                id,
            };
            if !trusted.load(std::sync::atomic::Ordering::Relaxed)
                && bearer_token(req.headers()).is_some_and(|t| tokens.authenticate(t).is_some())
            {
                trusted.store(true, std::sync::atomic::Ordering::Relaxed);
                governor.trust(id);
            }
            let resp = router
                .oneshot(req.map(axum::body::Body::new))
                .await
                .unwrap_or_else(|never| match never {});
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                axum::body::Body::new(GuardedBody {
                    inner: b,
                    _guard: guard,
                })
            }))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Time to read a request's headers on an open HTTP/1.1 connection.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts a request in flight until dropped.
struct InFlight {
    governor: Governor,
    id: ConnId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.governor.end(self.id);
    }
}

/// A response body that keeps its request counted in flight until it ends (watches included).
struct GuardedBody {
    inner: axum::body::Body,
    _guard: InFlight,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Closes connections past their deadlines, once a second.
async fn reap_loop(governor: Governor, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let n = governor.reap();
                if n > 0 {
                    tracing::debug!(closed = n, "closed connections past their deadlines");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Binds the listening socket with the kernel's largest accept backlog (`somaxconn`, as Go's
/// listener does), not the 128 of a plain bind: a burst of connections must wait in the queue,
/// not have its SYNs dropped (a dropped SYN costs a client a one-second retransmission).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    listen_on(new_socket(addr)?, addr)
}

/// As [`listen`], in another network namespace: a socket belongs to the namespace of the
/// thread that created it, so only its creation runs inside `ns`.
fn listen_in_netns(ns: &std::path::Path, addr: SocketAddr) -> Result<TcpListener> {
    let socket = dualstack_host::netns::run_in(ns, move || new_socket(addr))??;
    Ok(listen_on(socket, addr)?)
}

fn new_socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
}

fn listen_on(socket: tokio::net::TcpSocket, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let backlog = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(4096)
        .clamp(128, 65535);
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Sets the permission bits of `path`.
fn restrict(path: &std::path::Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {} to {mode:o}", path.display()))
}

/// Raises the soft open-file limit to the hard one (as Go programs do at start) and returns it.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if let Some(hard) = l.maximum
        && l.current.is_some_and(|c| c < hard)
    {
        l.current = Some(hard);
        let _ = setrlimit(Resource::Nofile, l);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/healthz/{*rest}", get(health))
        .route("/livez/{*rest}", get(health))
        .route("/readyz/{*rest}", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3_index))
        .route("/openapi/v3/{*path}", get(openapi_v3))
        .route("/api", get(api_root))
        .route("/api/", get(api_root))
        .route("/apis", get(apis_root))
        .route("/apis/", get(apis_root))
        .fallback(resource)
        .with_state(state)
}

fn public(path: &str) -> bool {
    path.starts_with("/healthz")
        || path.starts_with("/livez")
        || path.starts_with("/readyz")
        || path.starts_with("/version")
}

/// The bearer token of a request, as upstream's bearer authenticator reads it: the scheme is
/// case-insensitive; another scheme, or an empty token, means no token (anonymous).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

fn authenticate(state: &AppState, headers: &HeaderMap, path: &str) -> Result<UserInfo, ApiError> {
    let token = bearer_token(headers);
    match token.and_then(|t| state.tokens.authenticate(t)) {
        Some(mut u) => {
            if !u.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                u.groups.push(AUTHENTICATED_GROUP.into());
            }
            crate::authz::effective_user(u, headers)
        }
        // Impersonation headers are never ignored: the anonymous user may not impersonate.
        None if public(path) && token.is_none() => {
            crate::authz::effective_user(UserInfo::anonymous(), headers)
        }
        None => Err(ApiError::Unauthorized),
    }
}

fn json_value(v: &serde_json::Value) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(v).unwrap_or_default(),
        &[],
    )
}

async fn version(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = authenticate(&s, &headers, uri.path()) {
        return error_response(&e);
    }
    json_value(&discovery::version())
}

async fn health(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = authenticate(&s, &headers, uri.path()) {
        return error_response(&e);
    }
    let path = uri.path().trim_start_matches('/');
    let (endpoint, sub) = match path.split_once('/') {
        Some((e, sub)) => (e, Some(sub.trim_end_matches('/'))),
        None => (path, None),
    };
    let q = query_of(&uri);
    let verbose = q.contains_key("verbose");
    let exclude: Vec<String> = uri
        .query()
        .map(|qs| {
            form_urlencoded::parse(qs.as_bytes())
                .filter(|(k, _)| k == "exclude")
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default();
    let checks = health_checks(&s).await;
    let (code, body) = crate::health::render(endpoint, sub, &checks, verbose, &exclude);
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn health_checks(s: &AppState) -> Vec<crate::health::Check> {
    use crate::health::Check;
    let backend = &s.rc.storage.backend;
    let storage = match tokio::time::timeout(Duration::from_secs(2), async {
        backend.health().await?;
        backend.current_revision().await
    })
    .await
    {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the store did not answer within 2s".into()),
    };
    vec![
        Check {
            name: "ping",
            failure: None,
        },
        Check {
            name: "log",
            failure: None,
        },
        Check {
            // `etcd` on etcd, as upstream's.
            name: backend.health_check_name(),
            failure: storage,
        },
        Check {
            name: "poststarthook/start-service-ip-repair-controllers",
            failure: (!*s.ready.borrow()).then(|| "not finished".to_string()),
        },
        Check {
            name: "shutdown",
            failure: None,
        },
    ]
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let user = match authenticate(&s, &headers, uri.path()) {
        Ok(u) => u,
        Err(e) => return error_response(&e),
    };
    // As upstream's RBAC: only the admin may read `/metrics` (a node may not).
    if !user.is_admin() {
        return error_response(&ApiError::Forbidden(format!(
            "forbidden: User {:?} cannot get path \"/metrics\"",
            user.name
        )));
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn openapi_v2(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = authenticate(&s, &headers, uri.path()) {
        return error_response(&e);
    }
    // client-go asks for the gnostic protobuf (and decodes it whatever the Content-Type), so
    // protobuf stays the default; a client that asks for JSON alone gets JSON.
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/json") && !accept.contains("protobuf") {
        let mut r = json_response(StatusCode::OK, s.openapi.v2_json.clone(), &[]);
        r.headers_mut()
            .insert(header::VARY, "Accept".parse().expect("vary"));
        return r;
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            ),
            (header::VARY, "Accept"),
        ],
        s.openapi.v2.clone(),
    )
        .into_response()
}

async fn openapi_v3_index(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = authenticate(&s, &headers, uri.path()) {
        return error_response(&e);
    }
    json_value(&s.openapi.v3_index)
}

async fn openapi_v3(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = authenticate(&s, &headers, uri.path()) {
        return error_response(&e);
    }
    let path = uri
        .path()
        .trim_start_matches("/openapi/v3/")
        .trim_end_matches('/');
    match s.openapi.v3_docs.get(path) {
        Some((hash, doc)) => {
            let mut r = json_response(StatusCode::OK, doc.clone(), &[]);
            r.headers_mut()
                .insert(header::ETAG, format!("\"{hash}\"").parse().expect("etag"));
            r
        }
        None => error_response(&ApiError::UnknownPath),
    }
}

async fn api_root(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = authenticate(&s, &headers, uri.path()) {
        return error_response(&e);
    }
    let fmt =
        DiscoveryFormat::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = match fmt {
        DiscoveryFormat::Legacy => discovery::api_versions(&s.server_address),
        f => discovery::aggregated(&s.rc.resources, true, f),
    };
    discovery_response(fmt, &body)
}

async fn apis_root(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = authenticate(&s, &headers, uri.path()) {
        return error_response(&e);
    }
    let fmt =
        DiscoveryFormat::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = match fmt {
        DiscoveryFormat::Legacy => discovery::api_group_list(&s.rc.resources),
        f => discovery::aggregated(&s.rc.resources, false, f),
    };
    discovery_response(fmt, &body)
}

fn discovery_response(fmt: DiscoveryFormat, body: &serde_json::Value) -> Response {
    let mut r = json_value(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        fmt.content_type().parse().expect("content type"),
    );
    r.headers_mut()
        .insert(header::VARY, "Accept".parse().expect("vary"));
    r
}

fn query_of(uri: &Uri) -> Query {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn metric_verb(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match (method.as_str(), has_name, watch) {
        ("GET", true, _) => "GET",
        ("GET", false, true) => "WATCH",
        ("GET", false, false) => "LIST",
        ("POST", _, _) => "POST",
        ("PUT", _, _) => "PUT",
        ("PATCH", _, _) => "PATCH",
        ("DELETE", true, _) => "DELETE",
        ("DELETE", false, _) => "DELETECOLLECTION",
        _ => "OTHER",
    }
}

async fn resource(State(s): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let user = match authenticate(&s, &parts.headers, &path) {
        Ok(u) => u,
        Err(e) => return error_response(&e),
    };
    let q = query_of(&parts.uri);
    // Group / version discovery documents.
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|x| !x.is_empty())
        .collect();
    match segs.as_slice() {
        ["api", v] if parts.method == Method::GET => {
            return match discovery::resource_list(&s.rc.resources, "", v) {
                Some(doc) => json_value(&doc),
                None => error_response(&ApiError::UnknownPath),
            };
        }
        ["apis", g] if parts.method == Method::GET => {
            return if discovery::serves_group(&s.rc.resources, g) {
                json_value(&discovery::api_group(g))
            } else {
                error_response(&ApiError::UnknownPath)
            };
        }
        ["apis", g, v] if parts.method == Method::GET => {
            return match discovery::resource_list(&s.rc.resources, g, v) {
                Some(doc) => json_value(&doc),
                None => error_response(&ApiError::UnknownPath),
            };
        }
        _ => {}
    }
    if let Some(pp) = crate::proxy::parse(&path) {
        return crate::proxy::handle(
            &s.rc,
            s.kubelet.as_deref(),
            &user,
            pp,
            Request::from_parts(parts, body),
        )
        .await;
    }
    let Some(info) = parse_path(&path) else {
        if let Some(e) = crate::kubelet::unserved_proxy_path(&path) {
            return error_response(&e);
        }
        return error_response(&ApiError::UnknownPath);
    };
    if crate::kubelet::handles(&info) {
        // Streams (and upgrades): the body is not read here. Upstream counts connections
        // (exec, attach, proxy) under the verb CONNECT.
        let verb = if info.subresource.as_deref() == Some("log") {
            "GET"
        } else {
            "CONNECT"
        };
        let resp = crate::kubelet::handle(
            &s.rc,
            s.kubelet.as_deref(),
            &user,
            info.clone(),
            q,
            Request::from_parts(parts, body),
        )
        .await;
        s.metrics.observe(
            RequestLabels {
                verb: verb.into(),
                group: String::new(),
                version: info.version.clone(),
                resource: info.resource.clone(),
                subresource: info.subresource.clone().unwrap_or_default(),
                scope: "resource".into(),
                component: "apiserver".into(),
                code: resp.status().as_u16().to_string(),
            },
            start.elapsed().as_secs_f64(),
        );
        return resp;
    }
    let body: Bytes = match http_body_util::Limited::new(body, MAX_BODY_BYTES + 1)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return error_response(&ApiError::TooLarge(MAX_BODY_BYTES)),
    };
    if body.len() > MAX_BODY_BYTES {
        return error_response(&ApiError::TooLarge(MAX_BODY_BYTES));
    }
    let watch = crate::request::bool_param(&q, "watch").unwrap_or(false);
    // Only served resources and subresources become label values, so made-up paths cannot
    // create series (upstream cleans unknown values the same way).
    let served =
        s.rc.resources
            .get(&info.group, &info.version, &info.resource)
            .map(|r| r.def().clone());
    let (group, version, resource, subresource) = match &served {
        Some(d) => (
            info.group.clone(),
            info.version.clone(),
            info.resource.clone(),
            info.subresource
                .as_deref()
                .filter(|sub| d.subresources.contains(sub))
                .map_or_else(
                    || {
                        if info.subresource.is_some() {
                            "other".to_string()
                        } else {
                            String::new()
                        }
                    },
                    str::to_string,
                ),
        ),
        None => (
            String::new(),
            String::new(),
            "other".to_string(),
            String::new(),
        ),
    };
    let labels = RequestLabels {
        verb: metric_verb(&parts.method, info.name.is_some(), watch).into(),
        group,
        version,
        resource,
        subresource,
        scope: if info.name.is_some() {
            "resource"
        } else if info.namespace.is_some() {
            "namespace"
        } else {
            "cluster"
        }
        .into(),
        component: "apiserver".into(),
        code: String::new(),
    };
    let resp = if body.len() > OFFLOAD_BODY_BYTES {
        // Decoding, patching and validating a large body is CPU work that must not hold an
        // async worker (health checks and watches share them): run the whole request on a
        // blocking thread, a bounded number at a time.
        let Ok(_permit) = s.heavy.clone().acquire_owned().await else {
            return error_response(&ApiError::Unavailable("server is shutting down".into()));
        };
        let rc = s.rc.clone();
        let handle = tokio::runtime::Handle::current();
        match tokio::task::spawn_blocking(move || {
            handle.block_on(handlers::handle(
                &rc,
                &user,
                parts.method,
                info,
                q,
                parts.headers,
                body,
            ))
        })
        .await
        {
            Ok(r) => r,
            Err(e) => error_response(&ApiError::Internal(format!("request failed: {e}"))),
        }
    } else {
        handlers::handle(&s.rc, &user, parts.method, info, q, parts.headers, body).await
    };
    s.metrics.observe(
        RequestLabels {
            code: resp.status().as_u16().to_string(),
            ..labels
        },
        start.elapsed().as_secs_f64(),
    );
    resp
}
