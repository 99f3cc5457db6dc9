//! `kubectl logs`, `exec`, `cp` and `attach` end to end (root): real `dualstack up` labs, real
//! kubectl 1.33 (WebSocket) and 1.27 (SPDY only), the API server forwarding to each node's
//! kubelet port from inside the node's network namespace.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::eventually;
use common::lab::Lab;
use serde_json::Value;

fn out(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait_running(lab: &Lab, name: &str) -> Value {
    eventually(Duration::from_secs(60), || {
        let p = lab.json(&["get", "pod", name]);
        (p["status"]["containerStatuses"][0]["state"]["running"].is_object()).then_some(p)
    })
    .unwrap_or_else(|| panic!("pod {name} never ran:\n{}", lab.logs()))
}

fn kubectl_path(version: &str) -> std::path::PathBuf {
    common::Kubectl::require(version).path().to_path_buf()
}

#[test]
fn kubectl_logs_follows_a_running_pod_and_serves_tail_timestamps_and_previous() {
    let lab = Lab::up("ds-logs-", 1, &[]);
    lab.kubectl_ok(&[
        "run",
        "ticker",
        "--image=none",
        "--restart=Never",
        "--command",
        "--",
        "sh",
        "-c",
        "for i in $(seq 1 20); do echo tick $i; sleep 0.5; done; printf end",
    ]);
    wait_running(&lab, "ticker");
    let before = lab.kubectl_ok(&["logs", "ticker"]);
    // Follow while it runs: kubectl returns by itself once the container has ended.
    let k = kubectl_path("1.33");
    let mut child = Command::new(&k)
        .arg("--kubeconfig")
        .arg(lab.path().join("kubeconfig"))
        .args(["logs", "-f", "ticker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "kubectl logs -f did not end with the container:\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut followed = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    assert!(status.success(), "kubectl logs -f failed: {followed}");
    let want: String = (1..=20).map(|i| format!("tick {i}\n")).collect::<String>() + "end";
    assert_eq!(
        followed, want,
        "the followed log is the whole log, in order"
    );
    assert!(
        !before.contains("tick 20"),
        "the pod was still running when logs -f began: {before:?}"
    );

    assert_eq!(
        lab.kubectl_ok(&["logs", "ticker", "--tail=2"]),
        "tick 20\nend"
    );
    let stamped = lab.kubectl_ok(&["logs", "ticker", "--tail=1", "--timestamps"]);
    let (ts, line) = stamped.split_once(' ').unwrap();
    assert_eq!(line, "end");
    assert!(
        ts.parse::<jiff::Timestamp>().is_ok(),
        "an RFC 3339 timestamp: {stamped:?}"
    );
    assert_eq!(
        lab.kubectl_ok(&["logs", "ticker", "--limit-bytes=7"]),
        "tick 1\n"
    );
    assert_eq!(
        lab.kubectl_ok(&["logs", "ticker", "--since=1h", "--tail=1"]),
        "end"
    );

    let o = lab.kubectl(&["logs", "ticker", "--previous"], None);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "Error from server (BadRequest): previous terminated container \"ticker\" in pod \"ticker\" not found"
        ),
        "{}",
        out(&o)
    );
    let o = lab.kubectl(&["logs", "ticker", "-c", "nope"], None);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("container nope is not valid for pod ticker"),
        "{}",
        out(&o)
    );

    // --previous: the run before a restart.
    lab.kubectl_ok(&[
        "run",
        "crasher",
        "--image=none",
        "--command",
        "--",
        "sh",
        "-c",
        "echo run-$(cat /proc/sys/kernel/random/uuid); sleep 3; exit 1",
    ]);
    eventually(Duration::from_secs(60), || {
        let p = lab.json(&["get", "pod", "crasher"]);
        let c = &p["status"]["containerStatuses"][0];
        (c["restartCount"].as_u64() >= Some(1) && c["state"]["running"].is_object()).then_some(())
    })
    .unwrap_or_else(|| panic!("crasher never restarted:\n{}", lab.logs()));
    let current = lab.kubectl_ok(&["logs", "crasher"]);
    let previous = lab.kubectl_ok(&["logs", "crasher", "--previous"]);
    assert!(previous.starts_with("run-"), "{previous:?}");
    assert!(current.starts_with("run-"), "{current:?}");
    assert_ne!(current, previous, "--previous is the earlier run");

    // kubelet's events about the container: the image present, created and started (twice: one
    // Event, counted), and the back-off between runs; `kubectl describe` shows them.
    let events = eventually(Duration::from_secs(30), || {
        let all = lab.json(&["get", "events"]);
        let mine: Vec<Value> = all["items"]
            .as_array()?
            .iter()
            .filter(|e| {
                e["involvedObject"]["name"] == "crasher" && e["source"]["component"] == "kubelet"
            })
            .cloned()
            .collect();
        let has = |reason: &str| mine.iter().any(|e| e["reason"] == reason);
        // (The second start's count is written a moment after the restart.)
        let restarted = mine
            .iter()
            .any(|e| e["reason"] == "Started" && e["count"].as_i64() >= Some(2));
        (has("Pulled") && has("Created") && restarted && has("BackOff")).then_some(mine)
    })
    .unwrap_or_else(|| {
        panic!(
            "no kubelet events for crasher:\n{}",
            lab.kubectl_ok(&["get", "events"])
        )
    });
    let started = events.iter().find(|e| e["reason"] == "Started").unwrap();
    assert_eq!(started["message"], "Started container crasher", "{started}");
    assert_eq!(started["type"], "Normal");
    assert!(started["count"].as_i64() >= Some(2), "{started}");
    assert_eq!(started["source"]["host"], "node-1");
    assert_eq!(
        started["involvedObject"]["fieldPath"],
        "spec.containers{crasher}"
    );
    let pulled = events.iter().find(|e| e["reason"] == "Pulled").unwrap();
    assert_eq!(
        pulled["message"],
        "Container image \"none\" already present on machine"
    );
    assert_eq!(pulled["type"], "Normal");
    let created = events.iter().find(|e| e["reason"] == "Created").unwrap();
    assert_eq!(created["message"], "Created container: crasher");
    let backoff = events.iter().find(|e| e["reason"] == "BackOff").unwrap();
    assert_eq!(backoff["type"], "Warning");
    let described = lab.kubectl_ok(&["describe", "pod", "crasher"]);
    assert!(
        described.contains("Back-off restarting failed container crasher in pod crasher_default("),
        "{described}"
    );
    // Deleting a running pod: kubelet says it stops the container.
    lab.kubectl_ok(&[
        "run",
        "stopper",
        "--image=none",
        "--restart=Never",
        "--command",
        "--",
        "sleep",
        "600",
    ]);
    wait_running(&lab, "stopper");
    lab.kubectl_ok(&["delete", "pod", "stopper", "--wait=true", "--timeout=60s"]);
    let killing = eventually(Duration::from_secs(20), || {
        lab.json(&["get", "events"])["items"]
            .as_array()?
            .iter()
            .find(|e| e["involvedObject"]["name"] == "stopper" && e["reason"] == "Killing")
            .cloned()
    })
    .expect("a Killing event for stopper");
    assert_eq!(killing["message"], "Stopping container stopper");
}

/// The server and client pods of the exec test: a web server on both families and a
/// single-stack IPv6 Service in front of it.
const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: web
    image: none
    command: ["python3", "-m", "http.server", "--bind", "::", "8080"]
---
apiVersion: v1
kind: Service
metadata: {name: web6}
spec:
  ipFamilies: [IPv6]
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - name: c
    image: none
    command: ["sleep", "3600"]
"#;

#[test]
fn kubectl_exec_returns_exit_codes_runs_in_the_pod_and_reaches_an_ipv6_cluster_ip() {
    let lab = Lab::up("ds-exec-", 2, &[]);
    lab.apply(WEB);
    wait_running(&lab, "web");
    let client = wait_running(&lab, "client");
    let svc = lab.json(&["get", "svc", "web6"]);
    let vip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(vip.contains(':'), "an IPv6 ClusterIP: {vip}");

    // Inside the pod's network namespace: its own addresses.
    let ips = lab.kubectl_ok(&["exec", "client", "--", "ip", "-o", "addr", "show", "eth0"]);
    for ip in client["status"]["podIPs"].as_array().unwrap() {
        assert!(ips.contains(ip["ip"].as_str().unwrap()), "{ips}");
    }

    // curl against the IPv6 ClusterIP (the Service's endpoints may take a moment).
    let url = format!("http://[{vip}]/");
    let ok = eventually(Duration::from_secs(30), || {
        let o = lab.kubectl(
            &[
                "exec",
                "client",
                "--",
                "curl",
                "-g",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "3",
                &url,
            ],
            None,
        );
        (o.status.success() && o.stdout == b"200").then_some(())
    });
    assert!(
        ok.is_some(),
        "curl to {url} from the pod never answered 200:\n{}",
        lab.logs()
    );
    // A refused port: curl's exit code 7 comes back as kubectl's.
    let o = lab.kubectl(
        &[
            "exec",
            "client",
            "--",
            "curl",
            "-g",
            "-s",
            "--max-time",
            "3",
            &format!("http://[{vip}]:81/"),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(7), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("command terminated with exit code 7"),
        "{}",
        out(&o)
    );
    // python too, with its own exit code.
    let py = format!(
        "import sys, urllib.request\nb = urllib.request.urlopen('http://[{vip}]/', timeout=3).read()\nsys.exit(5 if b else 6)"
    );
    let o = lab.kubectl(&["exec", "client", "--", "python3", "-c", &py], None);
    assert_eq!(o.status.code(), Some(5), "{}", out(&o));

    // stdin reaches the command and its end closes it (v5 close signal).
    let o = lab.kubectl(
        &["exec", "-i", "client", "--", "wc", "-c"],
        Some("twelve bytes"),
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "12",
        "{}",
        out(&o)
    );
    let o = lab.kubectl(&["exec", "client", "--", "no-such-command"], None);
    assert_eq!(o.status.code(), Some(127), "{}", out(&o));
    let o = lab.kubectl(&["exec", "client", "-c", "nope", "--", "true"], None);
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("Error from server (BadRequest): container nope is not valid for pod client"),
        "{}",
        out(&o)
    );

    // -it under a pseudo-terminal (script), with the terminal's size passed on.
    let k = kubectl_path("1.33");
    let cmd = format!(
        "stty cols 101 rows 31; {} --kubeconfig {} exec -it client -- sh -c 'tty; stty size; exit 4'",
        k.display(),
        lab.path().join("kubeconfig").display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "a terminal in the pod: {}",
        out(&o)
    );
    assert!(
        text.contains("31 101"),
        "the size was passed on: {}",
        out(&o)
    );
    assert!(
        text.contains("command terminated with exit code 4"),
        "{}",
        out(&o)
    );

    // kubectl cp both ways (tar over exec).
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.txt");
    std::fs::write(&src, "copied both ways\n").unwrap();
    let in_pod = dir.path().join("in-pod.txt");
    lab.kubectl_ok(&[
        "cp",
        src.to_str().unwrap(),
        &format!("client:{}", in_pod.display()),
    ]);
    assert_eq!(
        lab.kubectl_ok(&["exec", "client", "--", "cat", in_pod.to_str().unwrap()]),
        "copied both ways\n"
    );
    let back = dir.path().join("back.txt");
    lab.kubectl_ok(&[
        "cp",
        &format!("client:{}", in_pod.display()),
        back.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "copied both ways\n"
    );

    // kubectl 1.27 speaks only SPDY/3.1: the same exec, exit codes, stdin and -it.
    let k127 = kubectl_path("1.27");
    let old = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(&k127)
            .arg("--kubeconfig")
            .arg(lab.path().join("kubeconfig"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let o = old(
        &[
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n", "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("err\ncommand terminated with exit code 3"),
        "{}",
        out(&o)
    );
    let o = old(
        &["exec", "-i", "client", "--", "wc", "-c"],
        Some("twelve bytes"),
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "12",
        "{}",
        out(&o)
    );
    let cmd = format!(
        "stty cols 99 rows 29; {} --kubeconfig {} exec -it client -- sh -c 'tty; stty size'",
        k127.display(),
        lab.path().join("kubeconfig").display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("/dev/pts/") && text.contains("29 99"),
        "{}",
        out(&o)
    );
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let big_src = dir.path().join("big.bin");
    std::fs::write(&big_src, &big).unwrap();
    let big_pod = dir.path().join("big-in-pod.bin");
    let o = old(
        &[
            "cp",
            big_src.to_str().unwrap(),
            &format!("client:{}", big_pod.display()),
        ],
        None,
    );
    assert!(o.status.success(), "{}", out(&o));
    let big_back = dir.path().join("big-back.bin");
    let o = old(
        &[
            "cp",
            &format!("client:{}", big_pod.display()),
            big_back.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        std::fs::read(&big_back).unwrap() == big,
        "3 MB through SPDY both ways"
    );

    // attach with stdin: `kubectl run -i --rm` (stdin + stdinOnce) with both protocols.
    for (version, name) in [("1.33", "attach-ws"), ("1.27", "attach-spdy")] {
        let mut child = Command::new(kubectl_path(version))
            .arg("--kubeconfig")
            .arg(lab.path().join("kubeconfig"))
            .args([
                "run",
                name,
                "-i",
                "--rm",
                "--image=none",
                "--restart=Never",
                "--command",
                "--",
            ])
            .args(["sh", "-c", "cat; echo done-$?"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            input.write_all(b"via attach\n").unwrap();
        }
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let o = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "kubectl {version} run -i: {}", out(&o));
        assert!(
            text.contains("via attach\ndone-0\n"),
            "kubectl {version}: stdin reached the container and its end ended it: {}",
            out(&o)
        );
    }

    // Subresources not served say so.
    let o = lab.kubectl(
        &["get", "--raw", "/api/v1/nodes/node-1/proxy/metrics"],
        None,
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the nodes/proxy subresource is not supported"),
        "{}",
        out(&o)
    );
}

/// Runs `kubectl ARGS` under a pseudo-terminal of 97 columns and 33 rows (`script`); once
/// kubectl says it is attached, types `input`; returns what the terminal showed by the time
/// kubectl ended (60 s at most).
fn on_terminal(lab: &Lab, version: &str, args: &str, input: &str) -> String {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    let cmd = format!(
        "stty cols 97 rows 33; {} --kubeconfig {} {args}",
        kubectl_path(version).display(),
        lab.path().join("kubeconfig").display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let shown = Arc::new(Mutex::new(Vec::new()));
    {
        let (mut stdout, shown) = (child.stdout.take().unwrap(), shown.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
    }
    let text = |shown: &Mutex<Vec<u8>>| String::from_utf8_lossy(&shown.lock().unwrap()).to_string();
    let attached = eventually(Duration::from_secs(60), || {
        text(&shown)
            .contains("If you don't see a command prompt")
            .then_some(())
    });
    let mut stdin = child.stdin.take().unwrap();
    if attached.is_some() {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    std::thread::sleep(Duration::from_millis(200));
    text(&shown)
}

/// `tty: true` containers get a terminal of their own, kept by the shim: `kubectl run -it`
/// (1.33, WebSocket) and `kubectl attach -it` (1.27, SPDY) reach a shell on it, typed input
/// comes back, and the client's terminal size is the container's.
#[test]
fn kubectl_run_it_and_attach_it_reach_a_shell_on_the_containers_terminal() {
    let lab = Lab::up("ds-tty-", 1, &[]);
    // (`sleep`: kubectl sends the first size and the typed input from separate goroutines.)
    let input = "tty; sleep 1; stty size; echo sum-$((40+2)); echo term-$TERM; exit 3\n";
    let shown = on_terminal(
        &lab,
        "1.33",
        "run term -it --rm --image=none --restart=Never --command -- sh",
        input,
    );
    for want in ["/dev/pts/", "33 97", "sum-42", "term-xterm"] {
        assert!(
            shown.contains(want),
            "kubectl run -it: {want:?} missing from {shown:?}\n{}",
            lab.logs()
        );
    }
    lab.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: term2}
spec:
  restartPolicy: Never
  containers:
  - {name: sh, image: none, command: [sh], tty: true, stdin: true}
"#,
    );
    wait_running(&lab, "term2");
    // A job in the background: the shell gives it a process group of its own.
    let shown = on_terminal(
        &lab,
        "1.27",
        "attach -it term2",
        &format!("sleep 1000 & echo bg-$!; {input}"),
    );
    for want in ["/dev/pts/", "33 97", "sum-42"] {
        assert!(
            shown.contains(want),
            "kubectl 1.27 attach -it: {want:?} missing from {shown:?}\n{}",
            lab.logs()
        );
    }
    // (The terminal echoes the typed `bg-$!` first.)
    let bg: i32 = shown
        .split("bg-")
        .skip(1)
        .find_map(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or_else(|| panic!("no job pid in {shown:?}"));
    // The shell's exit is the container's.
    let code = eventually(Duration::from_secs(30), || {
        lab.json(&["get", "pod", "term2"])["status"]["containerStatuses"][0]["state"]["terminated"]
            ["exitCode"]
            .as_i64()
    });
    assert_eq!(code, Some(3));
    // The job went with the container, as with the end of a container's pid namespace.
    let cmdline = |pid: i32| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let gone = eventually(Duration::from_secs(10), || {
        (!String::from_utf8_lossy(&cmdline(bg)).contains("1000")).then_some(())
    });
    assert!(
        gone.is_some(),
        "the background job {bg} outlived its container"
    );
    // A program that is not there is a start error, as without a terminal.
    lab.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: term3}
spec:
  restartPolicy: Never
  containers:
  - {name: sh, image: none, command: [no-such-program], tty: true, stdin: true}
"#,
    );
    let state = eventually(Duration::from_secs(30), || {
        let t = lab.json(&["get", "pod", "term3"])["status"]["containerStatuses"][0]["state"]
            ["terminated"]
            .clone();
        t.is_object().then_some(t)
    })
    .expect("term3 terminated");
    assert_eq!(state["reason"], "StartError", "{state}");
    assert_eq!(state["exitCode"], 128, "{state}");
    assert!(
        state["message"]
            .as_str()
            .unwrap_or_default()
            .contains(r#"exec: "no-such-program": No such file or directory"#),
        "{state}"
    );
}

/// `kubectl port-forward` to the web pod; returns the child and the local port.
/// `kubectl port-forward pod/web :REMOTE` (kubectl picks a free local port, so tests running
/// side by side never collide); the child and the local port it listens on.
fn port_forward(lab: &Lab, version: &str, remote: u16) -> (std::process::Child, u16) {
    let mut child = Command::new(kubectl_path(version))
        .arg("--kubeconfig")
        .arg(lab.path().join("kubeconfig"))
        .args([
            "port-forward",
            "--address=127.0.0.1",
            "pod/web",
            &format!(":{remote}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // kubectl prints "Forwarding from 127.0.0.1:PORT -> REMOTE" once it listens.
    let stdout = child.stdout.as_mut().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' && stdout.read(&mut byte).unwrap() == 1 {
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).to_string();
    let port = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("kubectl {version} port-forward said {line:?}"));
    (child, port)
}

fn http_get(port: u16, path: &str) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut v = Vec::new();
    s.read_to_end(&mut v).map_err(|e| e.to_string())?;
    Ok(v)
}

#[test]
fn kubectl_port_forward_and_the_proxy_subresources_reach_the_pod() {
    let lab = Lab::up("ds-pf-", 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("blob"), &body).unwrap();
    lab.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  containers:
  - name: web
    image: none
    ports: [{{name: http, containerPort: 8080}}]
    command: ["python3", "-m", "http.server", "--bind", "::", "--directory", "{}", "8080"]
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: websvc}}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {{app: web}}
  ports: [{{name: web, port: 80, targetPort: 8080}}]
"#,
        dir.path().display()
    ));
    // Running is not enough: a forward opened before the server listens is
    // refused by the node, and kubectl then closes the connection unanswered.
    eventually(Duration::from_secs(60), || {
        let p = lab.json(&["get", "pod", "web"]);
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("pod web never became Ready:\n{}", lab.logs()));
    // 1.33 tunnels SPDY in WebSocket; 1.27 speaks SPDY/3.1 itself.
    for version in ["1.33", "1.27"] {
        let (mut pf, local) = port_forward(&lab, version, 8080);
        let mut last = String::new();
        let Some(got) = eventually(Duration::from_secs(20), || {
            // An empty answer is a forward the node refused: kubectl's
            // output (below, on timeout) says why.
            http_get(local, "/blob")
                .and_then(|v| match v.is_empty() {
                    true => Err("an empty answer".to_string()),
                    false => Ok(v),
                })
                .map_err(|e| last = e)
                .ok()
        }) else {
            let _ = pf.kill();
            let o = pf.wait_with_output().unwrap();
            panic!(
                "kubectl {version} port-forward never answered ({last}): {}\n{}",
                out(&o),
                lab.logs()
            );
        };
        let at = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("kubectl {version}: no HTTP header in {:?}", got))
            + 4;
        assert!(got.starts_with(b"HTTP/1.0 200"), "{version}");
        assert!(
            got[at..] == body[..],
            "kubectl {version}: the 2 MB body came through whole"
        );
        pf.kill().unwrap();
        pf.wait().unwrap();
    }
    // pods/proxy and services/proxy (the server dials from inside the pod's node).
    std::fs::write(dir.path().join("small.txt"), "proxied\n").unwrap();
    assert_eq!(
        lab.kubectl_ok(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/web:http/proxy/small.txt"
        ]),
        "proxied\n"
    );
    let via_svc = eventually(Duration::from_secs(20), || {
        let o = lab.kubectl(
            &[
                "get",
                "--raw",
                "/api/v1/namespaces/default/services/http:websvc:web/proxy/small.txt",
            ],
            None,
        );
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).to_string())
    });
    assert_eq!(
        via_svc.as_deref(),
        Some("proxied\n"),
        "services/proxy:\n{}",
        lab.logs()
    );

    // A closed port in the pod: kubectl reports the node's error.
    let (mut pf, local) = port_forward(&lab, "1.33", 81);
    let _ = http_get(local, "/");
    let start = Instant::now();
    while pf.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = pf.kill();
    let o = pf.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("error forwarding port 81 to pod web"),
        "{}",
        out(&o)
    );
}

#[test]
fn only_the_api_servers_certificate_is_accepted_on_the_kubelet_port() {
    let lab = Lab::up("ds-kport-", 1, &[]);
    let pki = dualstack_apiserver::tls::Pki::new(&lab.path().join("server"));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("u.crt"), dir.path().join("u.key"));
    pki.issue(&cert, &key, "someone-else", &["system:masters"], &[])
        .unwrap();
    let url = "https://127.0.0.1:10250/containerLogs/default/x/x";
    let code = |extra: &[&str]| {
        let mut args = vec!["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        args.push(url);
        let o = lab.exec("node-1", &args);
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(code(&[]), "401", "no client certificate");
    assert_eq!(
        code(&[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap()
        ]),
        "403",
        "a certificate of the cluster CA with another identity"
    );
    let server_pki = lab.path().join("server/pki");
    let c = server_pki.join("apiserver-kubelet-client.crt");
    let k = server_pki.join("apiserver-kubelet-client.key");
    assert_eq!(
        code(&["--cert", c.to_str().unwrap(), "--key", k.to_str().unwrap()]),
        "404",
        "the API server's identity gets through (to a pod that is not there)"
    );
}
