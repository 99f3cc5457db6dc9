//! Start-up and the HTTP edge: PKI and tokens, storage and watch cache, the resources, the
//! built-in controllers, and the HTTPS listener (rustls with ring, HTTP/2 and HTTP/1.1) with
//! authentication, request metrics and routing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

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
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{MASTERS_GROUP, Tokens, UserInfo};
use crate::config::ServerConfig;
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
}

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
    UserInfo {
        name: "admin".into(),
        groups: vec![MASTERS_GROUP.into(), "system:authenticated".into()],
    }
}

impl Server {
    /// Starts the server on the embedded store in the data directory and returns once it
    /// accepts connections.
    pub async fn start(config: ServerConfig) -> Result<Server> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let backend: Arc<dyn Backend> = Arc::new(
            Embedded::open(&config.data_dir.join("store.redb")).context("opening the store")?,
        );
        Self::start_with_backend(config, backend).await
    }

    /// Starts the server on a given store (tests: a probed or faulty one).
    pub async fn start_with_backend(
        config: ServerConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<Server> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let pki = Pki::new(&config.data_dir);
        let mut addrs = config.advertise_addresses.clone();
        addrs.push(config.bind_address);
        pki.ensure(&addrs, &[])?;
        let tokens = Arc::new(Tokens::new(&config.data_dir));
        let admin_token = tokens.ensure(&admin())?;

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
        let listener = TcpListener::bind(SocketAddr::new(config.bind_address, config.secure_port))
            .await
            .with_context(|| {
                format!(
                    "listening on {}:{}",
                    config.bind_address, config.secure_port
                )
            })?;
        let addr = listener.local_addr()?;

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
        };
        let router = router(state);
        let tls = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
        tasks.push(tokio::spawn(accept_loop(
            listener,
            tls,
            router,
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
    tls: tokio_rustls::TlsAcceptor,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let stream = match tls.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = TowerToHyperService::new(router);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(ready))
        .route("/healthz/{*rest}", get(health))
        .route("/livez/{*rest}", get(health))
        .route("/readyz/{*rest}", get(ready))
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

fn authenticate(state: &AppState, headers: &HeaderMap, path: &str) -> Result<UserInfo, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match token.and_then(|t| state.tokens.authenticate(t)) {
        Some(u) => Ok(u),
        None if public(path) && token.is_none() => Ok(UserInfo::anonymous()),
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
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok",
    )
        .into_response()
}

async fn ready(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = authenticate(&s, &headers, uri.path()) {
        return error_response(&e);
    }
    if *s.ready.borrow() {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "ok",
        )
            .into_response()
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "[-]poststarthook/start-service-ip-repair-controllers failed: not finished\nreadyz check failed").into_response()
    }
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = authenticate(&s, &headers, uri.path()) {
        return error_response(&e);
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
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
        )],
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
            return if s.rc.resources.list.iter().any(|r| r.def().group == *g) {
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
    let Some(info) = parse_path(&path) else {
        return error_response(&ApiError::UnknownPath);
    };
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
    let labels = RequestLabels {
        verb: metric_verb(&parts.method, info.name.is_some(), watch).into(),
        group: info.group.clone(),
        version: info.version.clone(),
        resource: info.resource.clone(),
        subresource: info.subresource.clone().unwrap_or_default(),
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
    let resp = handlers::handle(&s.rc, &user, parts.method, info, q, parts.headers, body).await;
    s.metrics.observe(
        RequestLabels {
            code: resp.status().as_u16().to_string(),
            ..labels
        },
        start.elapsed().as_secs_f64(),
    );
    resp
}
