//! `agnhost netexec`: the HTTP server (`/`, `/clientip`, `/dial`, `/echo`, `/exit`,
//! `/healthz`, `/readyz`, `/hostname`, `/hostName`, `/redirect`, `/shell`, `/shutdown`) and the
//! UDP server (`hostname`, `echo <msg>`, `clientip`), both families. Answers come from
//! `logic.rs`; this file does the sockets, the dialling and the process exits. SIGTERM and
//! SIGINT keep their default action (the process dies of them), as in upstream's Go program.
//! Not built in: HTTPS (`--tls-cert-file`), SCTP (`--sctp-port`) and `/upload`; asking for
//! them says so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderValue, Response, Uri, header};
use clap::Args;
use http_body_util::{BodyExt, Empty};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::logic::{self, Answer, DialProtocol};
use super::{bind_udp, hostname, listen_tcp, log};

/// `agnhost netexec` flags (upstream's names and defaults).
#[derive(Debug, Clone, Args)]
pub struct NetexecArgs {
    /// HTTP Listen Port.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// UDP Listen Port (-1: no UDP server).
    #[arg(long, default_value_t = 8081, allow_negative_numbers = true)]
    udp_port: i32,
    /// SCTP Listen Port (-1: none; SCTP is not built in).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    sctp_port: i32,
    /// Override the HTTP handler to always respond as if it were a GET with this path & params.
    #[arg(long, default_value = "")]
    http_override: String,
    /// A comma separated list of ip addresses the udp servers listen from.
    #[arg(long, default_value = "")]
    udp_listen_addresses: String,
    /// File containing an x509 certificate for HTTPS (not built in).
    #[arg(long, default_value = "")]
    tls_cert_file: String,
    /// File containing an x509 private key matching --tls-cert-file (not built in).
    #[arg(long, default_value = "")]
    tls_private_key_file: String,
}

struct Shared {
    ready: AtomicBool,
    hostname: String,
    override_uri: Option<Uri>,
    exit: mpsc::Sender<(i32, Duration)>,
}

/// Runs netexec until `/exit`, `/shutdown` or a signal ends the process.
pub async fn run(a: NetexecArgs) -> Result<()> {
    if !a.tls_cert_file.is_empty() {
        bail!("--tls-cert-file: HTTPS is not built into dualstack's agnhost netexec");
    }
    if a.sctp_port != -1 {
        bail!("--sctp-port: SCTP is not built into dualstack's agnhost netexec");
    }
    let override_uri = match a.http_override.as_str() {
        "" => None,
        o => Some(
            o.parse::<Uri>()
                .with_context(|| format!("override request failed: {o:?}"))?,
        ),
    };
    let (exit_tx, mut exit_rx) = mpsc::channel(1);
    let shared = Arc::new(Shared {
        ready: AtomicBool::new(false),
        hostname: hostname().context("failed to get hostname")?,
        override_uri,
        exit: exit_tx,
    });

    if a.udp_port != -1 {
        let port = u16::try_from(a.udp_port)
            .with_context(|| format!("failed to resolve UDP address for port {}", a.udp_port))?;
        let mut addrs = Vec::new();
        for s in a.udp_listen_addresses.split(',').filter(|s| !s.is_empty()) {
            let ip = s
                .parse()
                .map_err(|_| anyhow::anyhow!("parseAddress: invalid address {s}"))?;
            if !addrs.contains(&Some(ip)) {
                addrs.push(Some(ip));
            }
        }
        if addrs.is_empty() {
            addrs.push(None);
        }
        for ip in addrs {
            let sock = bind_udp(ip, port).await.with_context(|| {
                format!("Error occurred: failed to create listener for UDP address {ip:?}:{port}")
            })?;
            log(format!(
                "Started UDP server on port {} {port}",
                ip.map(|i| i.to_string()).unwrap_or_default()
            ));
            shared.ready.store(true, Ordering::SeqCst);
            tokio::spawn(udp_server(sock, shared.clone()));
        }
    }

    let listener = listen_tcp(a.http_port).await?;
    log(format!("Started HTTP server on port {}", a.http_port));
    let app = axum::Router::new()
        .fallback(http)
        .with_state(shared.clone());
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    );
    let (timeout_tx, mut timeout_rx) = mpsc::channel::<(i32, Duration)>(1);
    let serve = server.with_graceful_shutdown(async move {
        if let Some(req) = exit_rx.recv().await {
            let _ = timeout_tx.send(req).await;
        }
    });
    let mut serving = tokio::spawn(async move { serve.await });
    tokio::select! {
        r = &mut serving => { r??; bail!("the HTTP server stopped") }
        Some((code, timeout)) = timeout_rx.recv() => {
            let done = tokio::time::timeout(timeout, serving).await;
            log(format!(
                "Graceful shutdown completed with: {}",
                if done.is_ok() { "<nil>" } else { "context deadline exceeded" }
            ));
            std::process::exit(code);
        }
    }
}

async fn udp_server(sock: UdpSocket, shared: Arc<Shared>) {
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                log(format!(
                    "Error occurred: failed accepting UDP connections:{e}"
                ));
                shared.ready.store(false, Ordering::SeqCst);
                std::process::exit(1);
            }
        };
        match logic::udp_reply(&buf[..n], &shared.hostname, from) {
            Some(reply) => {
                if let Err(e) = sock.send_to(reply.as_bytes(), from).await {
                    log(format!(
                        "failed to write to UDP client {}: {e}",
                        logic::peer(from)
                    ));
                }
            }
            None if n > 0 => log(format!(
                "Unknown UDP command received from {}: {}",
                logic::peer(from),
                String::from_utf8_lossy(&buf[..n]).trim()
            )),
            None => {}
        }
    }
}

fn respond(a: Answer) -> Response<Body> {
    let mut r = Response::new(Body::from(a.body));
    *r.status_mut() = axum::http::StatusCode::from_u16(a.status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    r
}

async fn http(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    uri: Uri,
) -> Response<Body> {
    let uri = shared.override_uri.clone().unwrap_or(uri);
    let query: Vec<(String, String)> = match uri.query() {
        Some(q) => Query::<Vec<(String, String)>>::try_from_uri(
            &format!("/?{q}").parse().expect("a path and query"),
        )
        .map(|q| q.0)
        .unwrap_or_default(),
        None => Vec::new(),
    };
    match uri.path() {
        "/clientip" => {
            log("GET /clientip");
            respond(Answer::ok(logic::peer(from)))
        }
        "/dial" => dial(&query).await,
        "/echo" => {
            log(format!(
                "GET /echo?msg={}&code={}",
                logic::param(&query, "msg"),
                logic::param(&query, "code")
            ));
            respond(logic::echo(&query))
        }
        "/exit" => match logic::exit_request(&query) {
            Err(a) => respond(a),
            Ok(req) => {
                log(format!(
                    "Will begin shutdown in {:?}, allowing {:?} for connections to close, then will exit with {}",
                    req.wait, req.timeout, req.code
                ));
                tokio::time::sleep(req.wait).await;
                if req.timeout.is_zero() {
                    std::process::exit(req.code);
                }
                let _ = shared.exit.send((req.code, req.timeout)).await;
                respond(Answer::ok(""))
            }
        },
        "/healthz" | "/readyz" => {
            log(format!("GET {}", uri.path()));
            respond(logic::healthz(shared.ready.load(Ordering::SeqCst)))
        }
        "/hostname" | "/hostName" => {
            log(format!("GET {}", uri.path()));
            respond(Answer::ok(shared.hostname.clone()))
        }
        "/redirect" => match logic::redirect(&query) {
            Err(a) => respond(a),
            Ok((code, location)) => {
                let mut r = respond(Answer {
                    status: code,
                    content_type: "text/html; charset=utf-8",
                    body: String::new(),
                });
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
        },
        "/shell" => {
            let cmd = match logic::param(&query, "shellCommand") {
                "" => logic::param(&query, "cmd"),
                c => c,
            };
            log(format!("GET /shell?cmd={cmd}"));
            respond(shell(cmd).await)
        }
        "/shutdown" => {
            log("GET /shutdown");
            std::process::exit(0)
        }
        "/upload" => respond(Answer::error(
            501,
            "/upload is not built into dualstack's agnhost netexec",
        )),
        _ => {
            log("GET /");
            let now = jiff::Zoned::now();
            respond(Answer::ok(format!(
                "NOW: {}",
                now.strftime("%Y-%m-%d %H:%M:%S.%f %z %Z")
            )))
        }
    }
}

/// `/bin/sh -c CMD`, stdout and stderr through one pipe (Go's `CombinedOutput`).
async fn shell(cmd: &str) -> Answer {
    let cmd = cmd.to_string();
    let out = tokio::task::spawn_blocking(move || -> std::io::Result<(String, Option<String>)> {
        let (mut reader, writer) = std::io::pipe()?;
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()?;
        let mut output = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut output)?;
        let status = child.wait()?;
        let err = (!status.success()).then(|| match status.code() {
            Some(c) => format!("exit status {c}"),
            None => "signal: killed".to_string(),
        });
        Ok((String::from_utf8_lossy(&output).into_owned(), err))
    })
    .await;
    match out {
        Ok(Ok((output, err))) => logic::shell_answer(&output, err.as_deref()),
        Ok(Err(e)) => logic::shell_answer("", Some(&e.to_string())),
        Err(e) => logic::shell_answer("", Some(&e.to_string())),
    }
}

async fn dial(query: &[(String, String)]) -> Response<Body> {
    log(format!(
        "GET /dial?host={}&protocol={}&port={}&request={}&tries={}",
        logic::param(query, "host"),
        logic::param(query, "protocol"),
        logic::param(query, "port"),
        logic::param(query, "request"),
        logic::param(query, "tries"),
    ));
    let d = match logic::dial_request(query) {
        Ok(d) => d,
        Err(a) => return respond(a),
    };
    let addr = match logic::literal(&d.host) {
        Some(ip) => SocketAddr::new(ip, d.port),
        None => match tokio::net::lookup_host((d.host.as_str(), d.port))
            .await
            .ok()
            .and_then(|mut a| a.next())
        {
            Some(a) => a,
            None => {
                return respond(Answer::error(
                    400,
                    format!(
                        "host and/or port param are invalid. lookup {}: no such host",
                        d.host
                    ),
                ));
            }
        },
    };
    let mut tries = Vec::new();
    for _ in 0..d.tries {
        tries.push(match d.protocol {
            DialProtocol::Http => dial_http(addr, &d.request).await,
            DialProtocol::Udp => dial_udp(addr, &d.request).await,
        });
    }
    respond(logic::dial_answer(&tries))
}

const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

async fn dial_http(addr: SocketAddr, request: &str) -> Result<String, String> {
    let url = logic::dial_url(addr, request);
    let fail = |e: String| format!("Get {url:?}: {e}");
    let get = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: connect: {}", errno_text(&e)))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = axum::http::Request::get(format!("/{request}"))
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, "Go-http-client/1.1")
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    };
    match tokio::time::timeout(DIAL_TIMEOUT, get).await {
        Ok(r) => r.map_err(fail),
        Err(_) => Err(fail(
            "context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into(),
        )),
    }
}

async fn dial_udp(addr: SocketAddr, request: &str) -> Result<String, String> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("udp dial failed. err:{e}"))?;
    sock.connect(addr)
        .await
        .map_err(|e| format!("udp dial failed. err:{e}"))?;
    sock.send(request.as_bytes())
        .await
        .map_err(|e| format!("udp connection write failed. err:{e}"))?;
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(DIAL_TIMEOUT, sock.recv(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(Ok(_)) => Err("reading from udp connection failed. err:'<nil>'".into()),
        Ok(Err(e)) => Err(format!(
            "reading from udp connection failed. err:'read udp {}->{addr}: {}'",
            sock.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            errno_text(&e)
        )),
        Err(_) => Err(format!(
            "reading from udp connection failed. err:'read udp {}->{addr}: i/o timeout'",
            sock.local_addr().map(|a| a.to_string()).unwrap_or_default()
        )),
    }
}

/// An errno as Go names it ("connection refused"), without Rust's " (os error N)".
fn errno_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s,
    }
}
