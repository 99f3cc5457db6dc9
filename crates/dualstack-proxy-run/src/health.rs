//! The HTTP side: `/healthz` and `/livez` on `--healthz-bind-address`, `/metrics` on
//! `--metrics-bind-address`, and one health-check server per `healthCheckNodePort` of the
//! `externalTrafficPolicy: Local` Services (upstream's `pkg/proxy/healthcheck`: 200 with local
//! endpoints, 503 without, the same JSON body).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dualstack_proxy::HealthCheck;
use tokio::task::JoinHandle;

use crate::ProxyRunError;
use crate::metrics::Metrics;

/// What `/healthz` reports.
#[derive(Debug, Default)]
pub struct ProxyHealth {
    /// The wall-clock time of the last successful sync.
    pub last_updated: Option<jiff::Timestamp>,
    /// Since when a change has been waiting for a sync (`None`: nothing waits).
    pub pending_since: Option<jiff::Timestamp>,
    /// `--nftables-sync-period`: unhealthy when a change waits longer than twice this.
    pub sync_period: Duration,
}

impl ProxyHealth {
    /// Upstream's rule: healthy unless a change has waited more than 2 × the sync period or
    /// no sync ever succeeded.
    pub fn healthy(&self, now: jiff::Timestamp) -> bool {
        let Some(_) = self.last_updated else {
            return false;
        };
        match self.pending_since {
            Some(since) => {
                let waited = now.duration_since(since).unsigned_abs();
                waited <= self.sync_period * 2
            }
            None => true,
        }
    }
}

/// Shared state of the HTTP servers.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Sync health.
    pub health: Arc<Mutex<ProxyHealth>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

fn json(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn healthz(State(s): State<Shared>) -> Response {
    let now = jiff::Timestamp::now();
    let h = s.health.lock().expect("not poisoned");
    let ok = h.healthy(now);
    let body = serde_json::json!({
        "lastUpdated": h.last_updated.map(|t| t.to_string()).unwrap_or_default(),
        "currentTime": now.to_string(),
        "nodeEligible": true,
    });
    json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body.to_string(),
    )
}

async fn metrics(State(s): State<Shared>) -> Response {
    let mut r = s.metrics.encode().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener, ProxyRunError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyRunError::Listen {
            what: what.to_string(),
            addr: addr.to_string(),
            source,
        })
}

/// Starts the `/healthz` server (`None`: disabled).
pub async fn serve_healthz(
    addr: Option<SocketAddr>,
    shared: Shared,
) -> Result<Option<JoinHandle<()>>, ProxyRunError> {
    let Some(addr) = addr else { return Ok(None) };
    let l = bind(addr, "--healthz-bind-address").await?;
    let app = Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/livez", axum::routing::get(healthz))
        .with_state(shared);
    Ok(Some(tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    })))
}

/// Starts the `/metrics` server (`None`: disabled).
pub async fn serve_metrics(
    addr: Option<SocketAddr>,
    shared: Shared,
) -> Result<Option<JoinHandle<()>>, ProxyRunError> {
    let Some(addr) = addr else { return Ok(None) };
    let l = bind(addr, "--metrics-bind-address").await?;
    let app = Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/healthz", axum::routing::get(healthz))
        .with_state(shared);
    Ok(Some(tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    })))
}

/// Upstream's body for a health-check node port.
pub fn health_check_body(hc: &HealthCheck, proxy_healthy: bool) -> String {
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {}\n}}",
        hc.service.namespace, hc.service.name, hc.local_endpoints, proxy_healthy
    )
}

/// Per port: the check of each family (`[IPv4, IPv6]`); a request is answered with the count
/// of its own family, as upstream's per-family health servers do.
type Checks = Arc<Mutex<BTreeMap<u16, [Option<HealthCheck>; 2]>>>;

/// The health-check node port servers: one listener per port, on every address of both
/// families (`[::]`, or `0.0.0.0` where IPv6 is off).
#[derive(Debug, Default)]
pub struct HealthCheckServers {
    checks: Checks,
    servers: HashMap<u16, JoinHandle<()>>,
}

impl HealthCheckServers {
    /// Makes the servers match `wanted`: new ports get a listener, gone ones are closed,
    /// counts are updated in place.
    pub async fn sync(&mut self, v4: Vec<HealthCheck>, v6: Vec<HealthCheck>, shared: &Shared) {
        let mut by_port: BTreeMap<u16, [Option<HealthCheck>; 2]> = BTreeMap::new();
        for (i, list) in [v4, v6].into_iter().enumerate() {
            for h in list {
                let port = h.node_port;
                by_port.entry(port).or_default()[i] = Some(h);
            }
        }
        self.servers.retain(|port, task| {
            let keep = by_port.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        *self.checks.lock().expect("not poisoned") = by_port.clone();
        for port in by_port.keys() {
            if self.servers.contains_key(port) {
                continue;
            }
            let l = match tokio::net::TcpListener::bind(("::", *port)).await {
                Ok(l) => l,
                Err(_) => match tokio::net::TcpListener::bind(("0.0.0.0", *port)).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(port, error = %e, "cannot open the health-check node port");
                        continue;
                    }
                },
            };
            let checks = self.checks.clone();
            let shared = shared.clone();
            let port = *port;
            let app = Router::new().fallback(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
                let checks = checks.clone();
                let shared = shared.clone();
                async move {
                    let v6 = match peer.ip() {
                        std::net::IpAddr::V4(_) => false,
                        std::net::IpAddr::V6(a) => a.to_ipv4_mapped().is_none(),
                    };
                    let hc = checks
                        .lock()
                        .expect("not poisoned")
                        .get(&port)
                        .and_then(|c| {
                            c[usize::from(v6)].clone().or_else(|| {
                                c[usize::from(!v6)].clone().map(|mut h| {
                                    h.local_endpoints = 0;
                                    h
                                })
                            })
                        });
                    let healthy = shared
                        .health
                        .lock()
                        .expect("not poisoned")
                        .healthy(jiff::Timestamp::now());
                    match hc {
                        Some(hc) => {
                            let ok = hc.local_endpoints > 0 && healthy;
                            json(
                                if ok {
                                    StatusCode::OK
                                } else {
                                    StatusCode::SERVICE_UNAVAILABLE
                                },
                                health_check_body(&hc, healthy),
                            )
                        }
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                }
            });
            self.servers.insert(
                port,
                tokio::spawn(async move {
                    let _ = axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
                        .await;
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dualstack_proxy::ServiceKey;

    #[test]
    fn the_health_check_body_is_upstreams_json() {
        let hc = HealthCheck {
            service: ServiceKey::new("default", "web"),
            node_port: 31000,
            local_endpoints: 1,
        };
        let v: serde_json::Value = serde_json::from_str(&health_check_body(&hc, true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "service": {"namespace": "default", "name": "web"},
                "localEndpoints": 1,
                "serviceProxyHealthy": true
            })
        );
    }

    #[test]
    fn healthz_fails_when_a_change_waits_longer_than_twice_the_sync_period() {
        let now = jiff::Timestamp::now();
        let mut h = ProxyHealth {
            sync_period: Duration::from_secs(30),
            ..Default::default()
        };
        assert!(!h.healthy(now), "never synced");
        h.last_updated = Some(now);
        assert!(h.healthy(now));
        h.pending_since = Some(now - jiff::SignedDuration::from_secs(61));
        assert!(!h.healthy(now));
    }
}
