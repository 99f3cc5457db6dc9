//! "A 201 means the object is on disk", proven below the process: the server runs in-process on
//! the embedded store opened through a probed file backend that counts fsyncs and can fail them
//! (`dualstack_store::probe`). `tests/crash.rs` of the binary proves the other half with SIGKILL
//! (nothing acknowledged is lost when the process dies; the page cache survives that, so only
//! this test shows the fsync itself).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualstack_api::config::ServiceClusterIpRange;
use dualstack_apiserver::Server;
use dualstack_apiserver::config::ServerConfig;
use dualstack_store::embedded::Embedded;
use dualstack_store::probe::DiskProbe;

/// `curl` with the admin token and the cluster CA; returns (status, body).
fn curl(
    server: &Server,
    data_dir: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let kubeconfig = std::fs::read_to_string(server.kubeconfig_path()).expect("kubeconfig");
    let token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token in kubeconfig");
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(data_dir.join("pki/ca.crt"))
    .args([
        "-X",
        method,
        "-H",
        &format!("Authorization: Bearer {token}"),
    ]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("{}{}", server.url(), path))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Waits until no write or fsync has happened for 300 ms (start-up writes settle).
fn quiet(probe: &DiskProbe) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (probe.writes(), probe.syncs());
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_millis(300) {
        assert!(Instant::now() < deadline, "the store never went quiet");
        std::thread::sleep(Duration::from_millis(20));
        let now = (probe.writes(), probe.syncs());
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

fn cm(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"v"}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_201_is_answered_after_an_fsync_and_a_failed_fsync_is_a_500_that_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    std::fs::create_dir_all(&data_dir).unwrap();
    let probe = DiskProbe::new();
    let backend =
        Arc::new(Embedded::open_probed(&data_dir.join("store.redb"), probe.clone()).unwrap());
    let config = ServerConfig {
        data_dir: data_dir.clone(),
        bind_address: [127, 0, 0, 1].into(),
        secure_port: 0,
        advertise_addresses: vec![[127, 0, 0, 1].into()],
        service_ranges: ServiceClusterIpRange::parse("10.0.0.0/16,fd00:10::/108").unwrap(),
        node_port_range: dualstack_ipam::ports::DEFAULT_NODE_PORT_RANGE,
        repair_interval: Duration::from_secs(180),
        connection_limits: Default::default(),
        netns_listeners: Vec::new(),
        kubelet: Default::default(),
    };
    let server = Server::start_with_backend(config, backend).await.unwrap();
    let cms = "/api/v1/namespaces/default/configmaps";

    let server = tokio::task::spawn_blocking(move || {
        for i in 0..5 {
            quiet(&probe);
            let syncs = probe.syncs();
            let (code, body) = curl(
                &server,
                &data_dir,
                "POST",
                cms,
                Some(&cm(&format!("synced-{i}"))),
            );
            assert_eq!(code, 201, "{body}");
            assert!(
                probe.syncs() > syncs,
                "create {i} was answered 201 before any fsync"
            );
        }

        quiet(&probe);
        probe.fail_syncs(true);
        let (code, body) = curl(&server, &data_dir, "POST", cms, Some(&cm("unsynced")));
        assert_eq!(code, 500, "a write whose fsync failed was answered: {body}");
        assert!(body.contains(r#""reason":"InternalError""#), "{body}");
        assert!(probe.failed_syncs() > 0);
        let (code, _) = curl(&server, &data_dir, "GET", &format!("{cms}/unsynced"), None);
        assert_eq!(code, 404, "the unacknowledged object is served");
        // Nothing is acknowledged after an fsync failure, even once the disk works again.
        probe.fail_syncs(false);
        let (code, body) = curl(&server, &data_dir, "POST", cms, Some(&cm("after")));
        assert_eq!(code, 500, "{body}");
        let (code, body) = curl(&server, &data_dir, "GET", cms, None);
        assert_eq!(code, 200, "{body}");
        assert!(
            !body.contains("unsynced") && !body.contains(r#""after""#),
            "{body}"
        );
        server
    })
    .await
    .unwrap();
    server.shutdown().await;
}
