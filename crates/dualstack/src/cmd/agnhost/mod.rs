//! `dualstack agnhost` (hidden): our own implementation of the subcommands of upstream's e2e
//! test image `agnhost` that the network tests use, with upstream's flags, defaults, endpoints,
//! texts and status codes (`kubernetes/kubernetes:test/images/agnhost/{netexec,serve-hostname,pause}`).
//! Pods whose image is agnhost or pause run this (see `dualstack_node::image`).
//!
//! Every server listens on both families the way Go's `:PORT` does: one `[::]` socket that
//! also takes IPv4 (v4-mapped), or `0.0.0.0` where the namespace has no IPv6. The request →
//! answer logic is pure (`logic.rs`); this file and `netexec.rs` hold the sockets.

mod logic;
mod netexec;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Args, Subcommand};
use tokio::net::{TcpListener, UdpSocket};

/// `dualstack agnhost SUBCOMMAND`
#[derive(Debug, Clone, Args)]
pub struct AgnhostArgs {
    #[command(subcommand)]
    command: AgnhostCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum AgnhostCommand {
    /// Creates HTTP and UDP servers with various endpoints.
    Netexec(netexec::NetexecArgs),
    /// Serves the hostname through HTTP / TCP / UDP on the given port.
    ServeHostname(ServeHostnameArgs),
    /// Pauses the execution. Useful for keeping the containers running.
    Pause(PauseArgs),
}

/// `agnhost serve-hostname` flags (Go booleans: `--http=false` turns HTTP off).
#[derive(Debug, Clone, Args)]
struct ServeHostnameArgs {
    /// Serve raw over TCP.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    tcp: bool,
    /// Serve raw over UDP.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    udp: bool,
    /// Serve HTTP.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true", require_equals = true)]
    http: bool,
    /// Close connection per each HTTP request.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    close: bool,
    /// Port number.
    #[arg(long, default_value_t = 9376)]
    port: u16,
}

/// `agnhost pause` flags.
#[derive(Debug, Clone, Args)]
struct PauseArgs {
    /// Exit 0 on SIGTERM/SIGINT, as the pause image does (agnhost's own `pause` exits 2 and 1).
    #[arg(long, hide = true)]
    exit_zero: bool,
}

/// Runs the subcommand.
pub fn run(args: AgnhostArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.command {
        AgnhostCommand::Netexec(a) => rt.block_on(netexec::run(a)),
        AgnhostCommand::ServeHostname(a) => rt.block_on(serve_hostname(a)),
        AgnhostCommand::Pause(a) => rt.block_on(pause(a)),
    }
}

/// A line on stderr in Go's `log` format.
pub(crate) fn log(msg: impl std::fmt::Display) {
    let now = jiff::Zoned::now();
    eprintln!("{} {msg}", now.strftime("%Y/%m/%d %H:%M:%S"));
}

/// The hostname as Go's `os.Hostname` reads it (the UTS namespace's).
pub(crate) fn hostname() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim_end()
        .to_string())
}

/// A TCP listener on `port` for both families (Go's `:port`).
pub(crate) async fn listen_tcp(port: u16) -> io::Result<TcpListener> {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(l) => Ok(l),
        Err(e) if no_ipv6(&e) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await,
        Err(e) => Err(e),
    }
}

/// A UDP socket on `ip:port`, or for both families when `ip` is `None`.
pub(crate) async fn bind_udp(ip: Option<std::net::IpAddr>, port: u16) -> io::Result<UdpSocket> {
    match ip {
        Some(ip) => UdpSocket::bind(SocketAddr::new(ip, port)).await,
        None => match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)).await {
            Ok(s) => Ok(s),
            Err(e) if no_ipv6(&e) => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await,
            Err(e) => Err(e),
        },
    }
}

fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EAFNOSUPPORT | nix::libc::EADDRNOTAVAIL)
    )
}

async fn pause(args: PauseArgs) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first, so a signal right after "Paused" is caught.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    println!("Paused");
    let code = tokio::select! {
        _ = term.recv() => 2,
        _ = int.recv() => 1,
    };
    let code = if args.exit_zero { 0 } else { code };
    println!("exiting {code}");
    std::process::exit(code)
}

async fn serve_hostname(a: ServeHostnameArgs) -> Result<()> {
    if a.http && (a.tcp || a.udp) {
        bail!("Can't server TCP/UDP mode and HTTP mode at the same time");
    }
    let name = hostname().context("Error from os.Hostname()")?;
    if a.tcp {
        let l = listen_tcp(a.port)
            .await
            .context("Error from net.Listen()")?;
        let name = name.clone();
        tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((mut conn, from)) => {
                        log(format!("TCP request from {}", logic::peer(from)));
                        let name = name.clone();
                        tokio::spawn(async move {
                            use tokio::io::AsyncWriteExt;
                            let _ = conn.write_all(name.as_bytes()).await;
                        });
                    }
                    Err(e) => {
                        log(format!("Error from Accept(): {e}"));
                        std::process::exit(1);
                    }
                }
            }
        });
    }
    if a.udp {
        let sock = bind_udp(None, a.port)
            .await
            .context("Error from ListenUDP()")?;
        let name = name.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 16];
            loop {
                match sock.recv_from(&mut buf).await {
                    Ok((_, from)) => {
                        log(format!("UDP request from {}", logic::peer(from)));
                        let _ = sock.send_to(name.as_bytes(), from).await;
                    }
                    Err(e) => {
                        log(format!("Error from ReadFrom(): {e}"));
                        std::process::exit(1);
                    }
                }
            }
        });
    }
    if a.http {
        let l = listen_tcp(a.port).await?;
        let (name, close) = (name.clone(), a.close);
        let app = axum::Router::new().fallback(
            move |axum::extract::ConnectInfo(from): axum::extract::ConnectInfo<SocketAddr>| {
                let name = name.clone();
                async move {
                    log(format!("HTTP request from {}", logic::peer(from)));
                    let mut r = axum::response::Response::new(axum::body::Body::from(name));
                    if close {
                        r.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    r
                }
            },
        );
        tokio::spawn(async move {
            if let Err(e) =
                axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>()).await
            {
                log(e);
                std::process::exit(1);
            }
        });
    }
    // Only SIGTERM is caught, as upstream (SIGINT keeps its default action).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    log(format!("Serving on port {}.", a.port));
    term.recv().await;
    log("Shutting down after receiving signal: terminated.");
    log("Awaiting pod deletion.");
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    Ok(())
}
