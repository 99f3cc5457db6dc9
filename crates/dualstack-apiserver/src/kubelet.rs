//! The streaming subresources of pods, forwarded to the kubelet port of the pod's node as
//! upstream's API server does: `pods/log` (a streamed body), `pods/exec`, `pods/attach` and
//! `pods/portforward` (the upgrade request passed through; once the node answers 101 the two connections are
//! spliced, so the WebSocket protocol is the node agent's business). The node is reached at
//! the first of its `status.addresses` whose type comes first in
//! `--kubelet-preferred-address-types` (upstream's default `Hostname,InternalDNS,InternalIP,
//! ExternalDNS,ExternalIP`; a name is resolved by the host's resolver and its addresses tried in
//! order) on `status.daemonEndpoints.kubeletEndpoint.Port`
//! (`--kubelet-port`, 10250, when unset), over TLS with `--kubelet-client-certificate` /
//! `--kubelet-client-key`, verified against `--kubelet-certificate-authority`. With
//! `--kubelet-netns NODE=FILE` (ours) the socket is created inside that network namespace,
//! so a server that runs on a host reaches lab nodes without any route from the host.
//!
//! Subresources upstream has and we do not serve answer a Status saying so (never a bare 404).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use dualstack_apimachinery::status::ApiError;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

use crate::auth::{Attributes, UserInfo, authorize, forbidden_message};
use crate::handlers::{RequestContext, error_response};
use crate::request::{Query, RequestInfo};

/// The Common Name of the API server's client certificate for kubelet ports (kubeadm's
/// `apiserver-kubelet-client`); the node agent accepts only this identity.
pub const APISERVER_KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// kube-apiserver's `--kubelet-port` default.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// The node address types (`NodeAddressType`), in kube-apiserver's default order of
/// `--kubelet-preferred-address-types`.
pub const NODE_ADDRESS_TYPES: [&str; 5] = [
    "Hostname",
    "InternalDNS",
    "InternalIP",
    "ExternalDNS",
    "ExternalIP",
];

/// Parses `--kubelet-preferred-address-types`: a comma-separated list of node address types,
/// each known, none twice.
pub fn parse_preferred_address_types(v: &str) -> Result<Vec<String>, String> {
    let mut types: Vec<String> = Vec::new();
    for t in v.split(',').map(str::trim) {
        if !NODE_ADDRESS_TYPES.contains(&t) {
            return Err(format!(
                "unknown node address type {t:?}; supported: {}",
                NODE_ADDRESS_TYPES.join(", ")
            ));
        }
        if types.iter().any(|x| x == t) {
            return Err(format!("node address type {t:?} is given twice"));
        }
        types.push(t.to_string());
    }
    Ok(types)
}

/// How the server reaches kubelet ports (`--kubelet-*` flags).
#[derive(Debug, Clone, Default)]
pub struct KubeletClientConfig {
    /// `--kubelet-client-certificate`.
    pub client_cert: Option<PathBuf>,
    /// `--kubelet-client-key`.
    pub client_key: Option<PathBuf>,
    /// `--kubelet-certificate-authority` (None: the server's own CA).
    pub ca: Option<PathBuf>,
    /// `--kubelet-port`, used when a Node publishes no kubelet endpoint (0: 10250).
    pub port: u16,
    /// `--kubelet-netns NODE=FILE` (ours): dial this node from inside that network namespace.
    pub netns: Vec<(String, PathBuf)>,
    /// `--kubelet-preferred-address-types` (empty: upstream's default, [`NODE_ADDRESS_TYPES`]).
    pub preferred_address_types: Vec<String>,
}

/// The client side, built once at start.
#[derive(Debug, Clone)]
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
    port: u16,
    netns: Vec<(String, PathBuf)>,
    preferred_address_types: Vec<String>,
}

impl KubeletClient {
    /// Reads the certificate files; `default_ca` is the server's CA file.
    pub fn new(cfg: &KubeletClientConfig, default_ca: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let ca = cfg.ca.clone().unwrap_or_else(|| default_ca.to_path_buf());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots.add(c.with_context(|| format!("reading {}", ca.display()))?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut tls = match (&cfg.client_cert, &cfg.client_key) {
            (Some(c), Some(k)) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(c)
                    .with_context(|| format!("reading {}", c.display()))?
                    .collect::<Result<_, _>>()?;
                let key = PrivateKeyDer::from_pem_file(k)
                    .with_context(|| format!("reading {}", k.display()))?;
                builder.with_client_auth_cert(certs, key)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => anyhow::bail!("--kubelet-client-certificate and --kubelet-client-key go together"),
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: Arc::new(tls),
            port: if cfg.port == 0 {
                DEFAULT_KUBELET_PORT
            } else {
                cfg.port
            },
            netns: cfg.netns.clone(),
            preferred_address_types: if cfg.preferred_address_types.is_empty() {
                NODE_ADDRESS_TYPES.map(String::from).to_vec()
            } else {
                cfg.preferred_address_types.clone()
            },
        })
    }
}

impl KubeletClient {
    /// The `--kubelet-netns` map.
    pub fn netns(&self) -> &[(String, PathBuf)] {
        &self.netns
    }
}

/// A TCP connection to `addr`, the socket made inside `netns` when given (10 s to connect).
pub async fn dial(
    addr: SocketAddr,
    netns: Option<PathBuf>,
) -> anyhow::Result<tokio::net::TcpStream> {
    let new_socket = move || {
        if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
    };
    let socket = match netns {
        // The socket is made on a thread inside the namespace; it belongs to it for life.
        Some(ns) => dualstack_host::netns::run_in(&ns, new_socket)??,
        None => new_socket()?,
    };
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(10), socket.connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("i/o timeout"))??;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Whether the request is one of the pod subresources handled here (or an upstream
/// subresource we do not serve).
pub fn handles(info: &RequestInfo) -> bool {
    info.group.is_empty()
        && info.name.is_some()
        && matches!(
            (info.resource.as_str(), info.subresource.as_deref()),
            ("pods", Some("log" | "exec" | "attach" | "portforward")) | ("nodes", Some("proxy"))
        )
}

/// `/api/v1/nodes/NAME/proxy/<path>` (a path below the subresource, which
/// [`crate::request::parse_path`] does not take): the Status that says it is not served.
pub fn unserved_proxy_path(path: &str) -> Option<ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let i = parts.iter().position(|p| *p == "proxy")?;
    let resource = *parts.get(i.checked_sub(2)?)?;
    let core = parts.first() == Some(&"api");
    (core && resource == "nodes" && parts.len() > i + 1).then(|| {
        ApiError::BadRequest(format!(
            "the {resource}/proxy subresource is not supported by this server (dualstack): it serves pods/log, pods/exec, pods/attach, pods/portforward, pods/proxy and services/proxy"
        ))
    })
}

/// Handles a request [`handles`] accepted.
pub async fn handle(
    rc: &RequestContext,
    client: Option<&KubeletClient>,
    user: &UserInfo,
    info: RequestInfo,
    q: Query,
    req: http::Request<Body>,
) -> Response {
    match handle_inner(rc, client, user, &info, &q, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn handle_inner(
    rc: &RequestContext,
    client: Option<&KubeletClient>,
    user: &UserInfo,
    info: &RequestInfo,
    q: &Query,
    req: http::Request<Body>,
) -> Result<Response, ApiError> {
    let sub = info.subresource.as_deref().unwrap_or_default();
    let method = req.method().clone();
    let verb = match (sub, &method) {
        ("log", &Method::GET) => "get",
        ("log", _) => return Err(ApiError::MethodNotAllowed),
        (_, &Method::GET) => "get",
        (_, &Method::POST) => "create",
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let name = info.name.as_deref().expect("handles() checks the name");
    let attrs = Attributes {
        verb,
        group: "",
        resource: &info.resource,
        subresource: Some(sub),
        namespace: info.namespace.as_deref(),
        name: Some(name),
        node_name_selector: None,
    };
    if let Err(reason) = authorize(user, &attrs, &crate::authz::CacheGraph::new(rc)) {
        return Err(ApiError::Forbidden(forbidden_message(
            user, &attrs, &reason,
        )));
    }
    let what = format!("{}/{sub}", info.resource);
    if !matches!(sub, "log" | "exec" | "attach" | "portforward") {
        return Err(ApiError::BadRequest(format!(
            "the {what} subresource is not supported by this server (dualstack): it serves pods/log, pods/exec, pods/attach, pods/portforward, pods/proxy and services/proxy"
        )));
    }
    let Some(ns) = info.namespace.as_deref() else {
        return Err(ApiError::UnknownPath);
    };
    let pods = rc
        .resources
        .get("", "v1", "pods")
        .ok_or(ApiError::UnknownPath)?
        .clone();
    let pod: Value = serde_json::from_slice(&pods.get(Some(ns), name).await?.output)
        .map_err(|e| ApiError::Internal(format!("decoding pod: {e}")))?;
    let container = if sub == "portforward" {
        String::new()
    } else {
        validate_container(q.get("container").map(String::as_str), &pod, name)?
    };
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if sub != "log" && matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::BadRequest(match sub {
            "exec" => {
                format!("cannot exec into a container in a completed pod; current phase is {phase}")
            }
            "attach" => {
                format!("cannot attach to a container in a completed pod; current phase is {phase}")
            }
            _ => format!("cannot port forward to a completed pod; current phase is {phase}"),
        }));
    }
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        if sub == "log" {
            // Upstream: no host yet means an empty log.
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::empty())
                .expect("a valid response"));
        }
        return Err(ApiError::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let Some(client) = client else {
        return Err(ApiError::BadRequest(format!(
            "{what} is not available: the server has no kubelet client configuration (--kubelet-client-certificate, --kubelet-client-key)"
        )));
    };
    let nodes = rc
        .resources
        .get("", "v1", "nodes")
        .ok_or(ApiError::UnknownPath)?
        .clone();
    let node: Value = serde_json::from_slice(&nodes.get(None, node_name).await?.output)
        .map_err(|e| ApiError::Internal(format!("decoding node: {e}")))?;
    let addr =
        node_address(&node, &client.preferred_address_types, client.port).ok_or_else(|| {
            let known: Vec<String> = node["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    format!(
                        "{{{} {}}}",
                        a["type"].as_str().unwrap_or_default(),
                        a["address"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            ApiError::BadRequest(format!(
                "no preferred addresses found; known addresses: [{}]",
                known.join(" ")
            ))
        })?;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let query: String = {
        // From the raw query: `command` repeats.
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()) {
            if k != "container" {
                ser.append_pair(&k, &v);
            }
        }
        ser.finish()
    };
    let path = match sub {
        "log" => {
            check_log_options(q)?;
            format!(
                "/containerLogs/{}/{}/{}",
                enc(ns),
                enc(name),
                enc(&container)
            )
        }
        "portforward" => format!("/portForward/{}/{}", enc(ns), enc(name)),
        _ => format!("/{sub}/{}/{}/{}", enc(ns), enc(name), enc(&container)),
    };
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let netns = client
        .netns
        .iter()
        .find(|(n, _)| n == node_name)
        .map(|(_, p)| p.clone());
    let (mut sender, conn) = connect(client, &addr, netns)
        .await
        .map_err(|e| ApiError::Internal(format!("dialing backend: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (parts, _body) = req.into_parts();
    let mut out = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, addr.to_string());
    for h in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_PROTOCOL,
    ] {
        for v in parts.headers.get_all(&h) {
            out = out.header(&h, v);
        }
    }
    for v in parts.headers.get_all("x-stream-protocol-version") {
        out = out.header("x-stream-protocol-version", v);
    }
    let out = out
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| ApiError::Internal(format!("error dialing backend: {e}")))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        copy_headers(resp.headers(), answer.headers_mut().expect("builder"));
        let backend = hyper::upgrade::on(&mut resp);
        // The session outlives the client's HTTP connection task: it keeps the connection's
        // slot in the governor until it ends (see `conn`).
        let hold = parts
            .extensions
            .get::<crate::conn::ConnHandle>()
            .and_then(crate::conn::ConnHandle::hold);
        if hold.is_none() {
            tracing::warn!("an upgraded session whose connection the governor does not know");
        }
        let mut client_req = http::Request::from_parts(parts, Body::empty());
        let frontend = hyper::upgrade::on(&mut client_req);
        tokio::spawn(async move {
            let _hold = hold;
            let (Ok(b), Ok(f)) = (backend.await, frontend.await) else {
                return;
            };
            let mut b = TokioIo::new(b);
            let mut f = TokioIo::new(f);
            let _ = tokio::io::copy_bidirectional(&mut f, &mut b).await;
        });
        return Ok(answer.body(Body::empty()).expect("a valid response"));
    }
    let code = resp.status();
    if sub == "log" && !code.is_success() {
        // Upstream's response checker: the node's error becomes a Status.
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(node_error(code, &body));
    }
    // A streamed log, or a failed upgrade passed through as the node wrote it (kubectl shows
    // "unable to upgrade connection: <text>").
    let mut answer = Response::builder().status(code);
    for h in [header::CONTENT_TYPE] {
        if let Some(v) = resp.headers().get(&h) {
            answer = answer.header(&h, v);
        }
    }
    Ok(answer
        .body(Body::new(resp.into_body()))
        .expect("a valid response"))
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for h in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_ACCEPT,
        header::SEC_WEBSOCKET_PROTOCOL,
    ] {
        for v in from.get_all(&h) {
            to.append(&h, v.clone());
        }
    }
    for v in from.get_all("x-stream-protocol-version") {
        to.append("x-stream-protocol-version", v.clone());
    }
}

/// A node's error answer as a Status (its own Status when it wrote one).
fn node_error(code: StatusCode, body: &[u8]) -> Response {
    if let Ok(v) = serde_json::from_slice::<Value>(body)
        && v["kind"] == "Status"
    {
        return crate::handlers::json_response(code, body.to_vec(), &[]);
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    let e = match code {
        StatusCode::NOT_FOUND => ApiError::BadRequest(text),
        c if c.is_client_error() => ApiError::BadRequest(text),
        _ => ApiError::Internal(text),
    };
    error_response(&e)
}

/// `PodLogOptions` checks upstream makes before the node is asked.
fn check_log_options(q: &Query) -> Result<(), ApiError> {
    if q.get("sinceSeconds").is_some() && q.get("sinceTime").is_some() {
        return Err(ApiError::BadRequest(
            "at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
        ));
    }
    for k in ["tailLines", "limitBytes", "sinceSeconds"] {
        if let Some(v) = q.get(k) {
            let n: i64 = v.parse().map_err(|_| {
                ApiError::BadRequest(format!("{k}: Invalid value: {v:?}: not an integer"))
            })?;
            let min = if k == "tailLines" { 0 } else { 1 };
            if n < min {
                return Err(ApiError::BadRequest(format!(
                    "PodLogOptions \"\" is invalid: {k}: Invalid value: {n}: must be {}",
                    if min == 0 {
                        "greater than or equal to 0"
                    } else {
                        "greater than 0"
                    }
                )));
            }
        }
    }
    Ok(())
}

/// Upstream's `validateContainer`: the named container must exist; without a name, a pod
/// with one container means that one.
pub fn validate_container(
    container: Option<&str>,
    pod: &Value,
    name: &str,
) -> Result<String, ApiError> {
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let containers = names("containers");
    let mut all = names("initContainers");
    all.extend(containers.iter().cloned());
    all.extend(names("ephemeralContainers"));
    match container.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => match containers.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                all.join(" ")
            ))),
        },
    }
}

/// Where a node's kubelet port is: an address of the node's (an IP, or a name to resolve) and
/// the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletEndpoint {
    /// The address as the node published it.
    pub host: String,
    /// `status.daemonEndpoints.kubeletEndpoint.Port`, or the default.
    pub port: u16,
}

impl KubeletEndpoint {
    /// The address when it is an IP.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl std::fmt::Display for KubeletEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip() {
            Some(ip) => write!(f, "{}", SocketAddr::new(ip, self.port)),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// The node's kubelet endpoint, as upstream's `GetPreferredNodeAddress` picks it: for each type
/// in `preferred` order, the first of the node's addresses of that type.
pub fn node_address(
    node: &Value,
    preferred: &[String],
    default_port: u16,
) -> Option<KubeletEndpoint> {
    let addrs = node["status"]["addresses"].as_array()?;
    let host = preferred.iter().find_map(|t| {
        addrs
            .iter()
            .filter(|a| a["type"] == t.as_str())
            .find_map(|a| a["address"].as_str().filter(|h| !h.is_empty()))
    })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(default_port);
    Some(KubeletEndpoint {
        host: host.to_string(),
        port,
    })
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>;

/// A TLS connection to a kubelet port (the socket made inside `netns` when given). A name is
/// resolved by the host's resolver, its addresses tried in order (as Go's dialer does), and
/// the serving certificate verified for that name.
async fn connect(
    client: &KubeletClient,
    addr: &KubeletEndpoint,
    netns: Option<PathBuf>,
) -> anyhow::Result<(
    Sender,
    impl std::future::Future<Output = hyper::Result<()>> + Send + 'static,
)> {
    let (tcp, server_name) = match addr.ip() {
        Some(ip) => {
            let sa = SocketAddr::new(ip, addr.port);
            let tcp = dial(sa, netns)
                .await
                .map_err(|e| anyhow::anyhow!("dial tcp {sa}: {e}"))?;
            (tcp, ServerName::IpAddress(ip.into()))
        }
        None => {
            let name = ServerName::try_from(addr.host.clone())
                .map_err(|_| anyhow::anyhow!("dial tcp {addr}: not a valid host name"))?;
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((addr.host.as_str(), addr.port))
                    .await
                    .map_err(|e| anyhow::anyhow!("dial tcp: lookup {}: {e}", addr.host))?
                    .collect();
            let mut last = anyhow::anyhow!("dial tcp: lookup {}: no such host", addr.host);
            let mut connected = None;
            // Go's dialer shares its deadline among the addresses: an unreachable first one
            // does not take the whole 10 s.
            let share = std::time::Duration::from_secs(10)
                / u32::try_from(resolved.len().max(1)).unwrap_or(u32::MAX);
            for sa in resolved {
                match tokio::time::timeout(share, dial(sa, netns.clone())).await {
                    Ok(Ok(tcp)) => {
                        connected = Some(tcp);
                        break;
                    }
                    Ok(Err(e)) => last = anyhow::anyhow!("dial tcp {sa}: {e}"),
                    Err(_) => last = anyhow::anyhow!("dial tcp {sa}: i/o timeout"),
                }
            }
            (connected.ok_or(last)?, name)
        }
    };
    // A node that vanished mid-session ends the session (and frees its slot).
    crate::conn::keepalive(&tcp);
    let tls = tokio_rustls::TlsConnector::from(client.tls.clone())
        .connect(server_name, tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    Ok((sender, conn.with_upgrades()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_validated_with_upstreams_messages() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(validate_container(Some("b"), &pod, "p").unwrap(), "b");
        assert_eq!(validate_container(Some("i"), &pod, "p").unwrap(), "i");
        assert_eq!(
            validate_container(Some("x"), &pod, "p")
                .unwrap_err()
                .to_string(),
            "container x is not valid for pod p"
        );
        assert_eq!(
            validate_container(None, &pod, "p").unwrap_err().to_string(),
            "a container name must be specified for pod p, choose one of: [i a b]"
        );
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(validate_container(None, &one, "p").unwrap(), "a");
    }

    fn types(v: &str) -> Vec<String> {
        parse_preferred_address_types(v).unwrap()
    }

    fn at(node: &Value, preferred: &str) -> Option<String> {
        node_address(node, &types(preferred), 10250).map(|e| e.to_string())
    }

    #[test]
    fn the_node_is_reached_at_the_first_address_of_the_first_preferred_type() {
        let node = json!({"status": {"addresses": [
            {"type": "Hostname", "address": "node-1"},
            {"type": "InternalIP", "address": "2001:db8:1::11"},
            {"type": "InternalIP", "address": "203.0.113.11"},
            {"type": "ExternalIP", "address": "198.51.100.7"},
        ]}});
        // Upstream's default order: the Hostname first (resolved when dialed).
        let all = NODE_ADDRESS_TYPES.join(",");
        assert_eq!(at(&node, &all).as_deref(), Some("node-1:10250"));
        // kubeadm's order: the first InternalIP, the primary family's.
        assert_eq!(
            at(&node, "InternalIP,ExternalIP,Hostname").as_deref(),
            Some("[2001:db8:1::11]:10250")
        );
        assert_eq!(
            at(&node, "ExternalIP,InternalIP").as_deref(),
            Some("198.51.100.7:10250")
        );
        // A type the node lacks is skipped; none at all is no endpoint.
        assert_eq!(
            at(&node, "InternalDNS,InternalIP").as_deref(),
            Some("[2001:db8:1::11]:10250")
        );
        assert_eq!(at(&node, "ExternalDNS"), None);
        assert_eq!(at(&json!({}), &all), None);
        // The published port wins over the default.
        let mut with_port = node.clone();
        with_port["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": 10251}});
        assert_eq!(
            at(&with_port, "InternalIP").as_deref(),
            Some("[2001:db8:1::11]:10251")
        );
        let e = node_address(&node, &types("Hostname"), 10250).unwrap();
        assert_eq!((e.ip(), e.host.as_str()), (None, "node-1"));
    }

    /// A node published by name: the name is resolved, its addresses are tried in order
    /// (`localhost` is `::1` and `127.0.0.1`; only the IPv4 one listens here, whichever the
    /// resolver puts first), and the serving certificate is checked for the name.
    #[tokio::test]
    async fn a_node_address_that_is_a_name_is_resolved_and_its_certificate_checked_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::tls::Pki::new(dir.path());
        let (crt, key) = (dir.path().join("k.crt"), dir.path().join("k.key"));
        pki.issue(&crt, &key, "system:node:n", &[], &["localhost".to_string()])
            .unwrap();
        let (other_crt, other_key) = (dir.path().join("o.crt"), dir.path().join("o.key"));
        pki.issue(
            &other_crt,
            &other_key,
            "system:node:o",
            &[],
            &["node-o".to_string()],
        )
        .unwrap();
        let serve = |crt: PathBuf, key: PathBuf| async move {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&crt)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&key).unwrap();
            let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let _ = acceptor.accept(tcp).await;
                    });
                }
            });
            port
        };
        let client = KubeletClient::new(
            &KubeletClientConfig {
                ca: Some(pki.ca_cert.clone()),
                ..Default::default()
            },
            &pki.ca_cert,
        )
        .unwrap();
        let endpoint = |port| KubeletEndpoint {
            host: "localhost".to_string(),
            port,
        };
        let good = serve(crt, key).await;
        assert!(connect(&client, &endpoint(good), None).await.is_ok());
        // A certificate for another name is refused.
        let wrong = serve(other_crt, other_key).await;
        let e = connect(&client, &endpoint(wrong), None)
            .await
            .err()
            .expect("a certificate without the name")
            .to_string();
        assert!(e.contains("certificate"), "{e}");
        // (No name that fails to resolve: that lookup would leave the machine for the host's
        // DNS servers.)
    }

    #[test]
    fn preferred_address_types_are_known_types_each_once() {
        assert_eq!(
            types("InternalIP, ExternalIP,Hostname"),
            ["InternalIP", "ExternalIP", "Hostname"]
        );
        assert_eq!(
            parse_preferred_address_types("InternalIP,LegacyHostIP").unwrap_err(),
            "unknown node address type \"LegacyHostIP\"; supported: Hostname, InternalDNS, InternalIP, ExternalDNS, ExternalIP"
        );
        assert!(parse_preferred_address_types("").is_err());
        assert_eq!(
            parse_preferred_address_types("InternalIP,InternalIP").unwrap_err(),
            "node address type \"InternalIP\" is given twice"
        );
    }

    #[test]
    fn proxy_paths_below_the_subresource_say_they_are_not_served() {
        let e = unserved_proxy_path("/api/v1/nodes/node-1/proxy/metrics").unwrap();
        assert!(
            e.to_string()
                .starts_with("the nodes/proxy subresource is not supported")
        );
        assert!(unserved_proxy_path("/api/v1/namespaces/default/pods/p/proxy/x/y").is_none());
        assert!(unserved_proxy_path("/api/v1/namespaces/default/configmaps/x/y/z").is_none());
    }

    #[test]
    fn streaming_pod_subresources_are_handled_here() {
        let info = |res: &str, sub: &str| RequestInfo {
            group: String::new(),
            version: "v1".into(),
            namespace: Some("ns".into()),
            resource: res.into(),
            name: Some("p".into()),
            subresource: Some(sub.into()),
        };
        assert!(handles(&info("pods", "exec")));
        assert!(handles(&info("pods", "log")));
        assert!(
            !handles(&info("services", "proxy")),
            "proxied over HTTP in proxy.rs"
        );
        assert!(!handles(&info("pods", "status")));
    }
}
