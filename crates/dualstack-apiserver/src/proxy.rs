//! `pods/proxy` and `services/proxy`: HTTP to a pod (`NAME[:PORT]`) or to a ready endpoint of
//! a Service (`[SCHEME:]NAME[:PORT]`, `http` only), with the path below `.../proxy/`, as
//! upstream's API server proxies them (`kubectl get --raw .../proxy/...`, `kubectl proxy`).
//! The server dials the pod's address itself; with `--kubelet-netns` (the lab) from inside
//! the namespace of the pod's node, so nothing is sent from the host's namespace.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use axum::body::Body;
use axum::response::Response;
use dualstack_apimachinery::status::ApiError;
use http::{Method, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::auth::{Attributes, UserInfo, authorize, forbidden_message};
use crate::handlers::{RequestContext, error_response};
use crate::kubelet::KubeletClient;

/// A proxy request's parts from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPath {
    /// The namespace.
    pub namespace: String,
    /// `pods` or `services`.
    pub resource: String,
    /// The name as written (`web:8080`, `http:web:http`).
    pub name: String,
    /// The path below `proxy` (with its leading slash).
    pub rest: String,
}

/// Parses `/api/v1/namespaces/NS/{pods,services}/NAME/proxy[/REST]`.
pub fn parse(path: &str) -> Option<ProxyPath> {
    let p = path.strip_prefix("/api/v1/namespaces/")?;
    let mut it = p.splitn(5, '/');
    let (ns, res, name, sub) = (it.next()?, it.next()?, it.next()?, it.next()?);
    if sub != "proxy" || !matches!(res, "pods" | "services") || ns.is_empty() || name.is_empty() {
        return None;
    }
    Some(ProxyPath {
        namespace: ns.to_string(),
        resource: res.to_string(),
        name: name.to_string(),
        rest: format!("/{}", it.next().unwrap_or_default()),
    })
}

/// Splits `[scheme:]name[:port]` (a pod takes `name[:port]`).
pub fn split_name(name: &str, service: bool) -> Result<(String, Option<String>), ApiError> {
    let parts: Vec<&str> = name.split(':').collect();
    let (scheme, n, port) = match (parts.as_slice(), service) {
        ([n], _) => ("", *n, None),
        ([n, p], false) => ("", *n, Some(*p)),
        ([a, b], true) if matches!(*a, "http" | "https") => (*a, *b, None),
        ([n, p], true) => ("", *n, Some(*p)),
        ([s, n, p], true) => (*s, *n, Some(*p)),
        _ => {
            return Err(ApiError::BadRequest(format!(
                "invalid {} request {name:?}",
                if service { "service" } else { "pod" }
            )));
        }
    };
    if scheme == "https" {
        return Err(ApiError::BadRequest(
            "https proxying is not supported by this server (dualstack): use http".into(),
        ));
    }
    Ok((
        n.to_string(),
        port.filter(|p| !p.is_empty()).map(str::to_string),
    ))
}

/// Proxies one request.
pub async fn handle(
    rc: &RequestContext,
    client: Option<&KubeletClient>,
    user: &UserInfo,
    pp: ProxyPath,
    req: http::Request<Body>,
) -> Response {
    match inner(rc, client, user, pp, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn get(rc: &RequestContext, plural: &str, ns: &str, name: &str) -> Result<Value, ApiError> {
    let api = rc
        .resources
        .get("", "v1", plural)
        .ok_or(ApiError::UnknownPath)?
        .clone();
    serde_json::from_slice(&api.get(Some(ns), name).await?.output)
        .map_err(|e| ApiError::Internal(format!("decoding {plural}: {e}")))
}

/// A port given by number, or by name among `ports` (`[{name, containerPort|port}]`).
fn resolve_port(given: Option<&str>, named: &[(String, u16)], default: u16) -> Option<u16> {
    match given {
        None => Some(default),
        Some(p) => p
            .parse()
            .ok()
            .or_else(|| named.iter().find(|(n, _)| n == p).map(|(_, n)| *n)),
    }
}

async fn inner(
    rc: &RequestContext,
    client: Option<&KubeletClient>,
    user: &UserInfo,
    pp: ProxyPath,
    req: http::Request<Body>,
) -> Result<Response, ApiError> {
    let verb = match *req.method() {
        Method::GET | Method::HEAD | Method::OPTIONS => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let attrs = Attributes {
        verb,
        group: "",
        resource: &pp.resource,
        subresource: Some("proxy"),
        namespace: Some(&pp.namespace),
        name: Some(&pp.name),
        node_name_selector: None,
    };
    if let Err(reason) = authorize(user, &attrs, &crate::authz::CacheGraph::new(rc)) {
        return Err(ApiError::Forbidden(forbidden_message(
            user, &attrs, &reason,
        )));
    }
    let service = pp.resource == "services";
    let (name, port) = split_name(&pp.name, service)?;
    let (ip, port, node) = if service {
        let svc = get(rc, "services", &pp.namespace, &name).await?;
        let sports: Vec<(String, u16)> = svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["name"].as_str().unwrap_or_default().to_string(),
                    u16::try_from(p["port"].as_u64()?).ok()?,
                ))
            })
            .collect();
        // The Service port (by name or number), then the endpoint port of the same name.
        let sport_name = match port.as_deref() {
            None => sports.first().map(|(n, _)| n.clone()),
            Some(p) => sports
                .iter()
                .find(|(n, num)| n == p || num.to_string() == p)
                .map(|(n, _)| n.clone()),
        }
        .ok_or_else(|| {
            ApiError::Unavailable(format!("no endpoints available for service {:?}", pp.name))
        })?;
        let eps = get(rc, "endpoints", &pp.namespace, &name)
            .await
            .map_err(|_| {
                ApiError::Unavailable(format!("no endpoints available for service {:?}", pp.name))
            })?;
        let mut found = None;
        for subset in eps["subsets"].as_array().into_iter().flatten() {
            let Some(port) = subset["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"].as_str().unwrap_or_default() == sport_name)
                .and_then(|p| u16::try_from(p["port"].as_u64()?).ok())
            else {
                continue;
            };
            if let Some(a) = subset["addresses"].as_array().and_then(|a| a.first())
                && let Some(ip) = a["ip"].as_str().and_then(|s| s.parse::<IpAddr>().ok())
            {
                found = Some((ip, port, a["nodeName"].as_str().map(str::to_string)));
                break;
            }
        }
        found.ok_or_else(|| {
            ApiError::Unavailable(format!("no endpoints available for service {:?}", pp.name))
        })?
    } else {
        let pod = get(rc, "pods", &pp.namespace, &name).await?;
        let ip = pod["status"]["podIP"]
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .ok_or_else(|| ApiError::BadRequest(format!("pod {name} has no IP address")))?;
        let named: Vec<(String, u16)> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_string(),
                    u16::try_from(p["containerPort"].as_u64()?).ok()?,
                ))
            })
            .collect();
        let port = resolve_port(port.as_deref(), &named, 80).ok_or_else(|| {
            ApiError::BadRequest(format!("invalid port {:?}", port.unwrap_or_default()))
        })?;
        (
            ip,
            port,
            pod["spec"]["nodeName"].as_str().map(str::to_string),
        )
    };
    let netns: Option<PathBuf> = client.and_then(|c| {
        let map = c.netns();
        node.as_deref()
            .and_then(|n| map.iter().find(|(m, _)| m == n))
            .or(map.first())
            .map(|(_, p)| p.clone())
    });
    let addr = SocketAddr::new(ip, port);
    let tcp = crate::kubelet::dial(addr, netns).await.map_err(|e| {
        ApiError::Unavailable(format!(
            "error trying to reach {} {:?}: dial tcp {addr}: {e}",
            if service { "service" } else { "pod" },
            name
        ))
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (parts, body) = req.into_parts();
    let uri = match parts.uri.query() {
        Some(q) => format!("{}?{q}", pp.rest),
        None => pp.rest.clone(),
    };
    let mut out = http::Request::builder().method(parts.method).uri(uri);
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "authorization"
                | "connection"
                | "upgrade"
                | "keep-alive"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "proxy-authorization"
        ) {
            out = out.header(k, v);
        }
    }
    let out = out
        .header(header::HOST, addr.to_string())
        .body(body)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let resp = sender
        .send_request(out)
        .await
        .map_err(|e| ApiError::Unavailable(format!("error trying to reach {}: {e}", name)))?;
    let (rparts, rbody) = resp.into_parts();
    let mut answer = Response::builder().status(rparts.status);
    for (k, v) in &rparts.headers {
        if !matches!(
            k.as_str(),
            "connection" | "keep-alive" | "transfer-encoding"
        ) {
            answer = answer.header(k, v);
        }
    }
    Ok(answer.body(Body::new(rbody)).expect("a valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_paths_and_names_are_parsed_as_upstream_writes_them() {
        let p = parse("/api/v1/namespaces/ns/services/http:web:80/proxy/a/b").unwrap();
        assert_eq!(
            (p.resource.as_str(), p.name.as_str(), p.rest.as_str()),
            ("services", "http:web:80", "/a/b")
        );
        assert_eq!(
            parse("/api/v1/namespaces/ns/pods/web/proxy").unwrap().rest,
            "/"
        );
        assert_eq!(parse("/api/v1/namespaces/ns/configmaps/x/proxy"), None);
        assert_eq!(
            split_name("web:8080", false).unwrap(),
            ("web".into(), Some("8080".into()))
        );
        assert_eq!(
            split_name("http:web:api", true).unwrap(),
            ("web".into(), Some("api".into()))
        );
        assert_eq!(split_name("web", true).unwrap(), ("web".into(), None));
        assert!(split_name("https:web:443", true).is_err());
        assert_eq!(
            resolve_port(Some("http"), &[("http".into(), 8080)], 80),
            Some(8080)
        );
        assert_eq!(resolve_port(None, &[], 80), Some(80));
        assert_eq!(resolve_port(Some("nope"), &[], 80), None);
    }
}
