//! ip-masq-agent end to end (issue 11), in a real `dualstack up` lab, over both families: a pod
//! (an IPv4 address and a ULA IPv6 address from fc00::/48) opens real TCP connections to the
//! `outside` host, whose server records the source address it sees. Every probe runs inside the
//! lab (pods, `dualstack exec`); the lab is removed by `dualstack down` however the test ends.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::lab::Lab;
use common::{binary, eventually};

const OUTSIDE_V4: &str = "203.0.113.100";
const OUTSIDE_V6: &str = "2001:db8:1::100";
const NODE1_V4: &str = "203.0.113.11";
const NODE1_V6: &str = "2001:db8:1::11";

/// The shared lab, plus the server these tests run on the `outside` host (stopped on drop,
/// before the lab goes).
struct MasqLab {
    lab: Lab,
    server: Option<Child>,
}

impl std::ops::Deref for MasqLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl MasqLab {
    fn up(nodes: usize) -> MasqLab {
        MasqLab {
            lab: Lab::up("ds-masq-", nodes, &[]),
            server: None,
        }
    }

    /// Stdout of a command on a lab host.
    fn exec(&self, host: &str, cmd: &[&str]) -> String {
        String::from_utf8_lossy(&self.lab.exec(host, cmd).stdout).into_owned()
    }

    fn log(&self, process: &str) -> String {
        std::fs::read_to_string(self.path().join(format!("logs/{process}.log"))).unwrap_or_default()
    }

    /// The peers log of the server on `outside`.
    fn peers_file(&self) -> PathBuf {
        self.path().join("outside-peers.log")
    }

    /// Starts a TCP server on `outside` (port 8080, both families) that answers every HTTP
    /// request with 200 and appends `<path> <peer address>` to [`Lab::peers_file`].
    fn start_outside_server(&mut self) {
        let script = self.path().join("peer_server.py");
        std::fs::write(
            &script,
            r#"import socket, sys
log = sys.argv[1]
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8080))
s.listen(64)
while True:
    c, a = s.accept()
    peer = a[0][7:] if a[0].startswith("::ffff:") else a[0]
    req = c.recv(4096).decode(errors="replace")
    path = req.split(" ")[1] if " " in req else "?"
    with open(log, "a") as f:
        f.write(path + " " + peer + "\n")
    body = peer.encode()
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    c.close()
"#,
        )
        .unwrap();
        let child = Command::new(binary())
            .arg("exec")
            .arg("--data-dir")
            .arg(self.path())
            .args(["outside", "--", "python3"])
            .arg(&script)
            .arg(self.peers_file())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(child);
        eventually(Duration::from_secs(10), || {
            self.exec("outside", &["ss", "-ltn"])
                .contains(":8080")
                .then_some(())
        })
        .expect("the outside server never listened");
    }

    /// Runs a pod on node-1 that fetches `/<tag>-4` and `/<tag>-6` from outside over IPv4 and
    /// IPv6, waits for it to succeed (the replies came back) and returns its addresses and the
    /// sources outside saw, per family.
    fn probe(&self, tag: &str) -> ([IpAddr; 2], [String; 2]) {
        let urls = [
            format!("http://{OUTSIDE_V4}:8080/{tag}-4"),
            format!("http://[{OUTSIDE_V6}]:8080/{tag}-6"),
        ];
        let script = urls
            .iter()
            .map(|u| format!("curl -g -sf -m 5 --retry 3 --retry-connrefused -o /dev/null {u} || {{ echo FAIL {u}; exit 1; }}"))
            .collect::<Vec<_>>()
            .join("; ");
        self.apply(&format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {tag}
spec:
  nodeName: node-1
  restartPolicy: Never
  containers:
  - name: client
    image: none
    command: ["sh", "-c", {script:?}]
"#
        ));
        let pod = eventually(Duration::from_secs(60), || {
            let p = self.json(&["get", "pod", tag]);
            match p["status"]["phase"].as_str() {
                Some("Succeeded") => Some(p),
                Some("Failed") => panic!(
                    "pod {tag} failed (no reply?): {}\nnode-1 log:\n{}",
                    p["status"],
                    tail(&self.log("node-1"), 30)
                ),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("pod {tag} never Succeeded"));
        let ips: Vec<IpAddr> = pod["status"]["podIPs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["ip"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(ips.len(), 2, "{pod}");
        assert!(ips[0].is_ipv4() && ips[1].is_ipv6(), "{ips:?}");
        let peers = std::fs::read_to_string(self.peers_file()).unwrap_or_default();
        let seen = |suffix: &str| {
            peers
                .lines()
                .rev()
                .filter_map(|l| l.split_once(' '))
                .find(|(p, _)| *p == format!("/{tag}-{suffix}"))
                .map(|(_, a)| a.to_string())
                .unwrap_or_else(|| panic!("outside never saw /{tag}-{suffix}:\n{peers}"))
        };
        ([ips[0], ips[1]], [seen("4"), seen("6")])
    }

    fn masq_table(&self, family: &str) -> String {
        self.exec(
            "node-1",
            &["nft", "list", "table", family, "dualstack-masq"],
        )
    }
}

impl Drop for MasqLab {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn configmap(config: &str) -> String {
    let indented: String = config.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ip-masq-agent\n  namespace: kube-system\ndata:\n  config: |\n{indented}"
    )
}

/// The issue's end-to-end story, both families at each step: masqueraded to the node's
/// address by the lab's defaults; the pod's own addresses once `outside` is a non-masquerade
/// destination (within one resync); a malformed ConfigMap changes nothing and says why (an
/// `InvalidConfig` Event on the ConfigMap and a log line, both naming the bad entry). Every
/// connection gets its replies (the pod exits 0), so `outside` routes to the pod CIDRs.
#[test]
fn pods_reach_outside_masqueraded_then_with_their_own_addresses_and_a_bad_config_changes_nothing() {
    let mut lab = MasqLab::up(1);
    let cm = lab.json(&["get", "configmap", "-n", "kube-system", "ip-masq-agent"]);
    let config = cm["data"]["config"].as_str().unwrap().to_string();
    assert!(config.contains("fc00::/48"), "{config}");
    lab.start_outside_server();

    // 1. The lab's defaults: outside lies outside every non-masquerade range.
    eventually(Duration::from_secs(30), || {
        let v4 = lab.masq_table("ip");
        let v6 = lab.masq_table("ip6");
        (v4.contains("masquerade") && v6.contains("fc00::/48")).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no masq tables on node-1:\n{}",
            tail(&lab.log("node-1"), 30)
        )
    });
    let (ips, seen) = lab.probe("masq");
    assert_eq!(seen, [NODE1_V4, NODE1_V6], "pod {ips:?}");

    // 2. outside becomes a non-masquerade destination: the pod's own addresses, both families.
    let resync = 2;
    lab.apply(&configmap(&format!(
        "nonMasqueradeCIDRs: [10.0.0.0/8, fc00::/48, {OUTSIDE_V4}/32, {OUTSIDE_V6}/128]\nresyncInterval: {resync}s\n"
    )));
    // Within two resync periods, plus room for the apply on a loaded machine.
    eventually(Duration::from_secs(2 * resync + 8), || {
        (lab.masq_table("ip").contains(OUTSIDE_V4) && lab.masq_table("ip6").contains(OUTSIDE_V6))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the new config was not applied within a resync:\n{}",
            tail(&lab.log("node-1"), 30)
        )
    });
    let (ips, seen) = lab.probe("nomasq");
    assert_eq!(seen, [ips[0].to_string(), ips[1].to_string()]);

    // 3. A malformed ConfigMap: the previous rules stay, the Event and the log say why.
    let bad = "203.0.113.100/24";
    lab.apply(&configmap(&format!(
        "nonMasqueradeCIDRs:\n  - {bad}\nresyncInterval: {resync}s\n"
    )));
    let event = eventually(Duration::from_secs(15), || {
        let events = lab.json(&["get", "events", "-n", "kube-system"]);
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"] == "InvalidConfig")
            .cloned()
    })
    .unwrap_or_else(|| panic!("no InvalidConfig event:\n{}", tail(&lab.log("node-1"), 30)));
    assert_eq!(event["involvedObject"]["kind"], "ConfigMap");
    assert_eq!(event["involvedObject"]["name"], "ip-masq-agent");
    assert_eq!(event["type"], "Warning");
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "CIDR \"{bad}\" is not aligned to a CIDR block, ip: \"203.0.113.100\" network: \"203.0.113.0/24\""
        )),
        "{message}"
    );
    assert!(
        lab.log("node-1").contains(&format!("CIDR \\\"{bad}\\\""))
            || lab.log("node-1").contains(&format!("CIDR \"{bad}\"")),
        "no log line naming {bad}:\n{}",
        tail(&lab.log("node-1"), 30)
    );
    std::thread::sleep(Duration::from_secs(2 * resync));
    assert!(lab.masq_table("ip").contains(OUTSIDE_V4));
    let (ips, seen) = lab.probe("stillnomasq");
    assert_eq!(seen, [ips[0].to_string(), ips[1].to_string()]);
}
