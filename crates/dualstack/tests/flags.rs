//! `dualstack server` flags, on the real binary: `--help` lists every dual-stack flag of
//! issue 2; a bad value exits non-zero with upstream's message on stderr before anything starts
//! (no data directory, no listener); good values start a server that uses them.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

#[test]
fn server_help_lists_every_dual_stack_flag() {
    let out = Command::new(common::binary())
        .args(["server", "--help"])
        .output()
        .expect("run dualstack server --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--service-cluster-ip-range",
        "--cluster-cidr",
        "--node-cidr-mask-size",
        "--node-cidr-mask-size-ipv4",
        "--node-cidr-mask-size-ipv6",
        "--allocate-node-cidrs",
        "--service-node-port-range",
        "--node-ip",
        "--feature-gates",
        "--data-dir",
        "--bind-address",
        "--secure-port",
    ] {
        assert!(
            help.split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                .any(|w| w == flag),
            "{flag} missing from --help:\n{help}"
        );
    }
}

/// Runs `dualstack server` with these flags on a data directory that does not exist yet;
/// returns (exit code, stderr). Fails if the server is still running after 15 s.
fn run_server(data_dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(common::binary())
        .arg("server")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--secure-port", "0"])
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dualstack server");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`dualstack server {args:?}` did not exit: the flags were accepted");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_rejected(args: &[&str], message: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let (code, stderr) = run_server(&data_dir, args);
    assert!(
        code.is_some_and(|c| c != 0),
        "{args:?} exited with {code:?}"
    );
    assert!(
        stderr.contains(message),
        "{args:?}: want {message:?} on stderr, got:\n{stderr}"
    );
    // Nothing started: no data directory (store, PKI, kubeconfig) and no listener.
    assert!(
        !data_dir.exists(),
        "{args:?} created {} before failing",
        data_dir.display()
    );
    assert!(!stderr.contains("serving"), "{args:?} started serving");
}

#[test]
fn bad_service_cluster_ip_ranges_exit_before_start_with_upstreams_message() {
    for (value, message) in [
        (
            "10.0.0.0/8",
            "specified --service-cluster-ip-range is too large; for 32-bit addresses, the mask must be >= 12",
        ),
        (
            "10.0.0.0/16,fd00::/48",
            "shortest allowed prefix length for service CIDR is 64, got 48",
        ),
        (
            "fd00::/63",
            "shortest allowed prefix length for service CIDR is 64, got 63",
        ),
        (
            "fd00::/108,10.0.0.0/8",
            "specified --service-cluster-ip-range[1] is too large; for 32-bit addresses, the mask must be >= 12",
        ),
        (
            "10.0.0.0/16,10.1.0.0/16",
            "--service-cluster-ip-range[0] and --service-cluster-ip-range[1] must be of different IP family",
        ),
        (
            "10.0.0.0/16,fd00::/108,10.1.0.0/16",
            "--service-cluster-ip-range must not contain more than two entries",
        ),
        (
            "10.0.0.0/30",
            "error determining service IP ranges for primary service cidr: the service cluster IP range must be at least 8 IP addresses",
        ),
        ("foo", "service-cluster-ip-range[0] is not a valid cidr"),
        (
            "10.0.0.0/16,bar",
            "service-cluster-ip-range[1] is not an ip net",
        ),
    ] {
        assert_rejected(&[&format!("--service-cluster-ip-range={value}")], message);
    }
}

#[test]
fn bad_feature_gates_exit_before_start_with_upstreams_message() {
    assert_rejected(
        &["--feature-gates=Foo=true"],
        r#"invalid argument "Foo=true" for "--feature-gates" flag: unrecognized feature gate: Foo"#,
    );
    assert_rejected(
        &["--feature-gates=IPv6DualStack=yes"],
        r#"invalid argument "IPv6DualStack=yes" for "--feature-gates" flag: invalid value of IPv6DualStack=yes, err: strconv.ParseBool: parsing "yes": invalid syntax"#,
    );
    assert_rejected(
        &["--feature-gates=IPv6DualStack"],
        r#"invalid argument "IPv6DualStack" for "--feature-gates" flag: missing bool value for IPv6DualStack"#,
    );
    assert_rejected(
        &["--feature-gates=ServiceIPStaticSubrange=false"],
        "cannot set feature gate ServiceIPStaticSubrange to false, feature is locked to true",
    );
    // IPv6DualStack=false cannot go with a dual-stack value of either flag.
    assert_rejected(
        &[
            "--feature-gates=IPv6DualStack=false",
            "--service-cluster-ip-range=10.0.0.0/16,fd00::/108",
        ],
        "--service-cluster-ip-range=10.0.0.0/16,fd00::/108 is dual-stack, which can only be used if IPv6DualStack feature is enabled (--feature-gates=IPv6DualStack=false was given)",
    );
    assert_rejected(
        &[
            "--feature-gates=IPv6DualStack=false",
            "--allocate-node-cidrs",
            "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
        ],
        "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56 is dual-stack, which can only be used if IPv6DualStack feature is enabled (--feature-gates=IPv6DualStack=false was given)",
    );
}

#[test]
fn bad_node_cidr_settings_exit_before_start_with_upstreams_message() {
    let rows: &[(&[&str], &str)] = &[
        (
            &["--allocate-node-cidrs"],
            "Controller: Must specify --cluster-cidr if --allocate-node-cidrs is set",
        ),
        (
            &[
                "--allocate-node-cidrs",
                "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
                "--node-cidr-mask-size=24",
            ],
            "usage of --node-cidr-mask-size is not allowed with dual-stack clusters",
        ),
        (
            &[
                "--allocate-node-cidrs",
                "--cluster-cidr=10.244.0.0/16",
                "--node-cidr-mask-size=24",
                "--node-cidr-mask-size-ipv4=24",
            ],
            "usage of --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6 is not allowed if --node-cidr-mask-size is set. For dual-stack clusters please unset it and use IPFamily specific flags",
        ),
        (
            &[
                "--allocate-node-cidrs",
                "--cluster-cidr=fd00:10:244::/56",
                "--node-cidr-mask-size-ipv4=24",
            ],
            "usage of --node-cidr-mask-size-ipv4 is not allowed for a single-stack IPv6 cluster",
        ),
        (
            &[
                "--allocate-node-cidrs",
                "--cluster-cidr=10.244.0.0/16",
                "--node-cidr-mask-size-ipv6=64",
            ],
            "usage of --node-cidr-mask-size-ipv6 is not allowed for a single-stack IPv4 cluster",
        ),
        (
            &["--allocate-node-cidrs", "--cluster-cidr=10.244.0.0/25"],
            "Controller: Invalid --cluster-cidr, mask size of cluster CIDR must be less than or equal to --node-cidr-mask-size configured for CIDR family",
        ),
        (
            &["--allocate-node-cidrs", "--cluster-cidr=fd00:10:244::/47"],
            "New CIDR set failed; the node CIDR size is too big",
        ),
        (
            &[
                "--allocate-node-cidrs",
                "--cluster-cidr=10.244.0.0/16,10.245.0.0/16",
            ],
            "len of ClusterCIDRs==2 and they are not configured as dual stack (at least one from each IPFamily",
        ),
        (
            &["--allocate-node-cidrs", "--cluster-cidr=bogus"],
            r#"failed to parse cidr value:"bogus" with error:invalid CIDR address: bogus"#,
        ),
    ];
    for (args, message) in rows {
        assert_rejected(args, message);
    }
}

#[test]
fn bad_node_port_ranges_node_ips_and_listen_flags_exit_before_start() {
    assert_rejected(
        &["--service-node-port-range=40000-30000"],
        r#"invalid argument "40000-30000" for "--service-node-port-range" flag: end port cannot be less than start port: 40000-30000"#,
    );
    assert_rejected(
        &["--service-node-port-range=30000-70000"],
        "the port range cannot be greater than 65535: 30000-70000",
    );
    assert_rejected(
        &["--node-ip=10.0.0.1,10.0.0.2"],
        "must contain either a single IP or a dual-stack pair of IPs",
    );
    assert_rejected(
        &["--node-ip=fd00::1"],
        r#"service IP family "10.0.0.0/24" must match public address family "fd00::1""#,
    );
    assert_rejected(&["--bind-address=not-an-ip"], "--bind-address");
    assert_rejected(&["--node-cidr-mask-size-ipv4=abc"], "abc");
}

#[test]
fn unknown_kubelet_address_types_exit_before_start() {
    assert_rejected(
        &["--kubelet-preferred-address-types=InternalIP,LegacyHostIP"],
        r#"unknown node address type "LegacyHostIP"; supported: Hostname, InternalDNS, InternalIP, ExternalDNS, ExternalIP"#,
    );
    assert_rejected(
        &["--kubelet-preferred-address-types=InternalIP,InternalIP"],
        r#"node address type "InternalIP" is given twice"#,
    );
}

#[test]
fn a_non_numeric_node_port_range_reports_strconvs_error_like_upstream() {
    // k8s.io/apimachinery/pkg/util/net.PortRange.Set returns strconv.Atoi's error for a single
    // port or either end of a hyphen range; `unable to parse port range` is for mixed notations.
    assert_rejected(
        &["--service-node-port-range=abc"],
        r#"invalid argument "abc" for "--service-node-port-range" flag: strconv.Atoi: parsing "abc": invalid syntax"#,
    );
    assert_rejected(
        &["--service-node-port-range=30000-abc"],
        r#"invalid argument "30000-abc" for "--service-node-port-range" flag: strconv.Atoi: parsing "abc": invalid syntax"#,
    );
}

fn get(s: &TestServer, path: &str) -> Value {
    let (code, body) = s.request("GET", path, None, None).unwrap();
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn every_dual_stack_flag_with_a_good_value_starts_a_server_that_uses_it() {
    // IPv6 primary everywhere, to see that the order of the flag values counts.
    let s = TestServer::start(&[
        "--feature-gates=IPv6DualStack=true",
        "--service-cluster-ip-range=fd00:10::/108,10.0.0.0/16",
        "--allocate-node-cidrs",
        "--cluster-cidr=fd00:10:244::/56,10.244.0.0/16",
        "--node-cidr-mask-size-ipv4=24",
        "--node-cidr-mask-size-ipv6=64",
        "--service-node-port-range=30000-30099",
        "--node-ip=::1,127.0.0.1",
        "--bind-address=127.0.0.1",
    ]);
    // The kubernetes Service takes network+1 of the primary (IPv6) range.
    let k = get(&s, "/api/v1/namespaces/default/services/kubernetes");
    assert_eq!(k["spec"]["clusterIP"], "fd00:10::1", "{k}");
    assert_eq!(k["spec"]["ipFamilies"], json!(["IPv6"]), "{k}");
    // Its Endpoints publish --node-ip.
    let ep = get(&s, "/api/v1/namespaces/default/endpoints/kubernetes");
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "::1", "{ep}");

    // A dual-stack NodePort Service: IPv6 first, NodePort inside the range.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
        "spec": {"type": "NodePort", "ipFamilyPolicy": "RequireDualStack",
                 "ports": [{"port": 80}]}});
    let (code, body) = s
        .request(
            "POST",
            "/api/v1/namespaces/default/services",
            Some(&svc.to_string()),
            Some("application/json"),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["spec"]["ipFamilies"], json!(["IPv6", "IPv4"]), "{v}");
    let ips: Vec<std::net::IpAddr> = v["spec"]["clusterIPs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ips[0].is_ipv6() && ips[1].is_ipv4(), "{v}");
    let port = v["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=30099).contains(&port), "nodePort {port}");
    // A NodePort outside the range is refused with upstream's message.
    let bad = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np2"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}});
    let (code, body) = s
        .request(
            "POST",
            "/api/v1/namespaces/default/services",
            Some(&bad.to_string()),
            Some("application/json"),
        )
        .unwrap();
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains(
            "provided port is not in the valid range. The range of valid ports is 30000-30099"
        ),
        "{body}"
    );
}
