//! `dualstack lb`: a small TCP balancer on loopback in front of several API servers, what
//! `dualstack up --ha` gives kubectl (on the host) and the agents (one listener inside each
//! node's namespace, as the single server's `--netns-listener`s are otherwise): a connection
//! goes to the server that last accepted one and, when it refuses or does not answer within a
//! second, to the next. TLS passes through untouched (the servers share one CA and serving
//! certificate), so a client sees one server URL and fails over between servers, as the
//! client-side balancer of a k3s agent does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::net::{TcpListener, TcpStream};

/// Flags of `dualstack lb`.
#[derive(Debug, Clone, Args)]
pub struct LbArgs {
    /// Where to listen on the host.
    #[arg(long = "listen", value_name = "ip:port")]
    pub listen: SocketAddr,

    /// Also listen inside another network namespace: `NETNS_FILE=ADDRESS:PORT` (repeatable).
    #[arg(long = "netns-listener", value_name = "netns=ip:port", value_parser = netns_listener)]
    pub netns_listeners: Vec<(PathBuf, SocketAddr)>,

    /// A server to forward to (repeatable; tried in order, starting from the last good one).
    #[arg(long = "backend", value_name = "ip:port", required = true)]
    pub backends: Vec<SocketAddr>,
}

fn netns_listener(v: &str) -> Result<(PathBuf, SocketAddr), String> {
    let (ns, at) = v
        .rsplit_once('=')
        .ok_or_else(|| format!("{v:?}: want NETNS_FILE=ADDRESS:PORT"))?;
    let at = at
        .parse()
        .map_err(|e| format!("{at:?}: {e} (want ADDRESS:PORT)"))?;
    Ok((PathBuf::from(ns), at))
}

/// The order in which backends are tried: the preferred one first, then the others in turn.
pub fn try_order(preferred: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (preferred + k) % n)
}

/// How long a backend may take to accept a connection before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

async fn forward(
    mut client: TcpStream,
    backends: Arc<Vec<SocketAddr>>,
    preferred: Arc<AtomicUsize>,
) {
    let start = preferred.load(Ordering::Relaxed);
    for i in try_order(start, backends.len()) {
        let at = backends[i];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(at)).await {
            Ok(Ok(mut server)) => {
                if i != start {
                    preferred.store(i, Ordering::Relaxed);
                    tracing::info!(backend = %at, "failed over");
                }
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                return;
            }
            Ok(Err(e)) => tracing::debug!(backend = %at, error = %e, "backend refused"),
            Err(_) => tracing::debug!(backend = %at, "backend did not answer"),
        }
    }
    tracing::warn!("no backend accepted the connection");
}

async fn serve(listener: TcpListener, backends: Arc<Vec<SocketAddr>>, preferred: Arc<AtomicUsize>) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(forward(tcp, backends.clone(), preferred.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn bind_std(at: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(at)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Runs the balancer until killed.
pub fn run(args: LbArgs) -> Result<()> {
    crate::cmd::init_tracing();
    if args.backends.is_empty() {
        bail!("at least one --backend is required");
    }
    let mut listeners =
        vec![bind_std(args.listen).with_context(|| format!("listening on {}", args.listen))?];
    for (ns, at) in &args.netns_listeners {
        let at = *at;
        let l = dualstack_host::netns::run_in(ns, move || bind_std(at))?
            .with_context(|| format!("listening on {at} in {}", ns.display()))?;
        listeners.push(l);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let backends = Arc::new(args.backends);
        let preferred = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for l in listeners {
            let l = TcpListener::from_std(l)?;
            tasks.push(tokio::spawn(serve(l, backends.clone(), preferred.clone())));
        }
        tracing::info!(listen = %args.listen, backends = ?backends, "balancing");
        for t in tasks {
            t.await?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_backend_is_tried_first_then_the_others_in_turn() {
        assert_eq!(try_order(0, 3).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(try_order(2, 3).collect::<Vec<_>>(), vec![2, 0, 1]);
    }
}
