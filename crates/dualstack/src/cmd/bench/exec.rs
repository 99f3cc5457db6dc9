//! Issue 12: `pods/exec` latency through the API server. A one-node lab (`dualstack up`,
//! root), one `sleep` pod; then
//!
//! - a whole `exec -- true` session: TLS to the API server, WebSocket upgrade
//!   (`v5.channel.k8s.io`), forwarded to the node's kubelet port, the command started in the
//!   pod's namespaces, its exit Status on the error channel, the close;
//! - a byte written to `cat`'s stdin and read back from its stdout inside one session (the
//!   streaming path alone);
//! - `kubectl exec -- true` as a user runs it (kubectl's own start and discovery included).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::nodes::Lab;
use super::support::{Report, Summary, block_on, ms};

/// `dualstack bench exec`
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Whole `exec -- true` sessions through our WebSocket client.
    #[arg(long, default_value_t = 200)]
    pub sessions: usize,
    /// Byte round trips through `cat` in one session.
    #[arg(long, default_value_t = 1000)]
    pub echoes: usize,
    /// `kubectl exec -- true` runs.
    #[arg(long, default_value_t = 20)]
    pub kubectl_runs: usize,
    /// The kubectl binary for the last row.
    #[arg(long, default_value = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33")]
    pub kubectl: PathBuf,
    /// Where the lab goes (a fresh dir inside).
    #[arg(long, default_value = "/tmp")]
    pub work_dir: PathBuf,
}

/// A WebSocket exec client of the API server (admin token, the lab's CA).
struct Client {
    addr: std::net::SocketAddr,
    token: String,
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    fn of_lab(lab: &Lab) -> Result<Client> {
        let kc = std::fs::read_to_string(lab.path().join("kubeconfig"))?;
        let field = |k: &str| {
            kc.lines()
                .find_map(|l| l.trim().strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let server = field("server:").context("no server in the kubeconfig")?;
        let token = field("token:").context("no token in the kubeconfig")?;
        let addr = server
            .trim_start_matches("https://")
            .parse()
            .with_context(|| format!("server {server}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(lab.path().join("server/pki/ca.crt"))? {
            roots.add(c?)?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Client {
            addr,
            token,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        })
    }

    /// Opens an exec session of `command` in `pod`.
    async fn open(
        &self,
        pod: &str,
        command: &[&str],
        stdin: bool,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    > {
        let mut q: String = command.iter().map(|c| format!("command={c}&")).collect();
        q += "stdout=true&stderr=true";
        if stdin {
            q += "&stdin=true";
        }
        let url = format!(
            "wss://{}/api/v1/namespaces/default/pods/{pod}/exec?{q}",
            self.addr
        );
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("Authorization", format!("Bearer {}", self.token).parse()?);
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse()?);
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self
            .tls
            .connect(ServerName::IpAddress(self.addr.ip().into()), tcp)
            .await?;
        let (ws, _) = tokio_tungstenite::client_async(req, tls).await?;
        Ok(ws)
    }
}

/// Runs a whole session of `true`; fails unless it ends with a Success Status.
async fn one_session(c: &Client, pod: &str) -> Result<()> {
    let mut ws = c.open(pod, &["true"], false).await?;
    while let Some(m) = ws.next().await {
        if let Message::Binary(b) = m?
            && b.first() == Some(&3)
        {
            let v: serde_json::Value = serde_json::from_slice(&b[1..])?;
            if v["status"] != "Success" {
                bail!("exec failed: {v}");
            }
            return Ok(());
        }
    }
    bail!("the session ended without a status")
}

/// Runs the suite.
pub fn run(args: ExecArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("dualstack bench exec needs root (it runs `dualstack up`)");
    }
    block_on(async move {
        let (lab, _) = Lab::up(&args.work_dir, 1)?;
        let pods: Api<Pod> = Api::namespaced(lab.client().await?, "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "target"},
            "spec": {"terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "main", "image": "none", "command": ["sleep", "100000"]}]}
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = pods.get("target").await?;
            if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
                break;
            }
            if Instant::now() > deadline {
                bail!("the target pod did not run in 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let client = Client::of_lab(&lab)?;
        // Warm up (the first exec pays for page-ins).
        for _ in 0..5 {
            one_session(&client, "target").await?;
        }
        let mut report = Report::default();

        let mut sessions = Vec::with_capacity(args.sessions);
        for _ in 0..args.sessions {
            let t = Instant::now();
            one_session(&client, "target").await?;
            sessions.push(t.elapsed());
        }
        let s = Summary::of(&mut sessions);
        report.row(
            format!(
                "`exec -- true` session, connect to exit status ({} sessions)",
                s.n
            ),
            format!("p50 {}, p99 {}", ms(s.p50), ms(s.p99)),
            "",
            None,
        );

        let mut ws = client.open("target", &["cat"], true).await?;
        let mut echoes = Vec::with_capacity(args.echoes);
        for i in 0..args.echoes {
            let byte = b'a' + (i % 26) as u8;
            let t = Instant::now();
            ws.send(Message::Binary(vec![0, byte].into())).await?;
            loop {
                let m = ws.next().await.context("the session ended")??;
                if let Message::Binary(b) = m
                    && b.first() == Some(&1)
                {
                    if b[1..] != [byte] {
                        bail!("echo mismatch: {:?}", &b[1..]);
                    }
                    break;
                }
            }
            echoes.push(t.elapsed());
        }
        let _ = ws.send(Message::Binary(vec![255, 0].into())).await;
        drop(ws);
        let s = Summary::of(&mut echoes);
        report.row(
            format!(
                "one byte stdin → stdout through `cat` ({} round trips)",
                s.n
            ),
            format!("p50 {}, p99 {}", ms(s.p50), ms(s.p99)),
            "",
            None,
        );

        let mut runs = Vec::with_capacity(args.kubectl_runs);
        for _ in 0..args.kubectl_runs {
            let t = Instant::now();
            let o = tokio::process::Command::new(&args.kubectl)
                .arg("--kubeconfig")
                .arg(lab.path().join("kubeconfig"))
                .args(["exec", "target", "--", "true"])
                .output()
                .await
                .with_context(|| format!("running {}", args.kubectl.display()))?;
            if !o.status.success() {
                bail!(
                    "kubectl exec failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            runs.push(t.elapsed());
        }
        let s = Summary::of(&mut runs);
        report.row(
            format!(
                "`kubectl exec target -- true`, whole process ({} runs)",
                s.n
            ),
            format!("p50 {}, p99 {}", ms(s.p50), ms(s.p99)),
            "",
            None,
        );
        drop(lab);
        report.print();
        Ok(())
    })
}
