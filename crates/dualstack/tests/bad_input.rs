//! Bad input against the real server: every failure is a Kubernetes `Status` with upstream's
//! HTTP code, reason and message (field causes for 422), and a failed write stores nothing —
//! each test proves that with a GET or a LIST afterwards.

mod common;

use common::{Response, TestServer};
use serde_json::{Value, json};

const DUAL: &[&str] = &["--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108"];
const CM: &str = "/api/v1/namespaces/default/configmaps";
const SVC: &str = "/api/v1/namespaces/default/services";
const JSON: (&str, &str) = ("Content-Type", "application/json");

fn post(s: &TestServer, path: &str, body: &str, ct: &str) -> Response {
    s.call(
        &s.token,
        "POST",
        path,
        Some(body.as_bytes()),
        &[("Content-Type", ct)],
    )
}

fn get(s: &TestServer, path: &str) -> Response {
    s.call(&s.token, "GET", path, None, &[])
}

/// Asserts a `Status` failure with this code and reason; returns the Status.
fn assert_status(r: &Response, code: u16, reason: &str) -> Value {
    assert_eq!(r.status, code, "want HTTP {code} {reason}, got: {}", r.body);
    assert_eq!(
        r.header_values("content-type"),
        ["application/json"],
        "{}",
        r.body
    );
    let v = r.json();
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    v
}

fn assert_not_found(s: &TestServer, path: &str) {
    let r = get(s, path);
    assert_status(&r, 404, "NotFound");
}

fn names(s: &TestServer, path: &str) -> Vec<String> {
    let r = get(s, path);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn list_rv(s: &TestServer, path: &str) -> u64 {
    let r = get(s, path);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["metadata"]["resourceVersion"]
        .as_str()
        .expect("list RV")
        .parse()
        .expect("numeric RV")
}

fn cm(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
        .to_string()
}

fn svc(name: &str, label: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "labels": {"v": label}},
           "spec": {"ports": [{"port": 80}]}})
    .to_string()
}

#[test]
fn malformed_json_is_a_400_bad_request_and_stores_nothing() {
    let s = TestServer::start(&[]);
    let r = post(
        &s,
        CM,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"broken-json"}"#,
        "application/json",
    );
    assert_status(&r, 400, "BadRequest");
    let r = post(&s, CM, "not json at all", "application/json");
    assert_status(&r, 400, "BadRequest");
    assert_not_found(&s, &format!("{CM}/broken-json"));
    assert!(!names(&s, CM).contains(&"broken-json".to_string()));
}

#[test]
fn malformed_yaml_is_a_400_bad_request_and_well_formed_yaml_is_accepted() {
    let s = TestServer::start(&[]);
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken-yaml\ndata: [a, b\n";
    let r = post(&s, CM, bad, "application/yaml");
    assert_status(&r, 400, "BadRequest");
    assert_not_found(&s, &format!("{CM}/broken-yaml"));
    // Control: the same content type with a well-formed document is a create.
    let good = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: good-yaml\ndata:\n  a: b\n";
    let r = post(&s, CM, good, "application/yaml");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(get(&s, &format!("{CM}/good-yaml")).json()["data"]["a"], "b");
}

#[test]
fn a_body_of_another_kind_or_api_version_than_the_url_is_a_400() {
    let s = TestServer::start(&[]);
    // A ConfigMap sent to the services collection.
    let r = post(&s, SVC, &cm("wrong-kind"), "application/json");
    let st = assert_status(&r, 400, "BadRequest");
    assert!(
        st["message"].as_str().unwrap().contains("Service"),
        "message should name the expected kind: {st}"
    );
    assert_not_found(&s, &format!("{SVC}/wrong-kind"));
    assert_not_found(&s, &format!("{CM}/wrong-kind"));
    // A Service with an apiVersion of another group.
    let body = json!({"apiVersion": "apps/v1", "kind": "Service", "metadata": {"name": "wrong-gv"},
                      "spec": {"ports": [{"port": 80}]}});
    let r = post(&s, SVC, &body.to_string(), "application/json");
    let st = assert_status(&r, 400, "BadRequest");
    assert!(
        st["message"].as_str().unwrap().contains("apps/v1"),
        "message should name the wrong apiVersion: {st}"
    );
    assert_not_found(&s, &format!("{SVC}/wrong-gv"));
}

#[test]
fn a_namespace_in_the_body_that_differs_from_the_url_is_a_400_with_upstreams_message() {
    let s = TestServer::start(&[]);
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "elsewhere", "namespace": "kube-system"}});
    let r = post(&s, CM, &body.to_string(), "application/json");
    let st = assert_status(&r, 400, "BadRequest");
    assert_eq!(
        st["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    assert_not_found(&s, &format!("{CM}/elsewhere"));
    assert_not_found(&s, "/api/v1/namespaces/kube-system/configmaps/elsewhere");
}

#[test]
fn a_create_in_a_missing_namespace_is_a_404_naming_the_namespace() {
    let s = TestServer::start(&[]);
    let r = post(
        &s,
        "/api/v1/namespaces/no-such-ns/configmaps",
        &cm("orphan"),
        "application/json",
    );
    let st = assert_status(&r, 404, "NotFound");
    assert_eq!(st["message"], r#"namespaces "no-such-ns" not found"#);
    assert!(!names(&s, "/api/v1/configmaps").contains(&"orphan".to_string()));
}

#[test]
fn unknown_resources_and_paths_are_404_with_upstreams_message() {
    let s = TestServer::start(&[]);
    for (method, path) in [
        ("GET", "/api/v1/namespaces/default/frobnicators"),
        ("POST", "/api/v1/namespaces/default/frobnicators"),
        ("GET", "/api/v1/frobnicators/x"),
        ("GET", "/apis/example.com/v1/widgets"),
        (
            "GET",
            "/apis/discovery.k8s.io/v7/namespaces/default/endpointslices",
        ),
        ("GET", "/no/such/path"),
    ] {
        let body = (method == "POST").then_some(cm("frob").into_bytes());
        let r = s.call(&s.token, method, path, body.as_deref(), &[JSON]);
        let st = assert_status(&r, 404, "NotFound");
        assert_eq!(
            st["message"], "the server could not find the requested resource",
            "{method} {path}"
        );
    }
    assert!(!names(&s, "/api/v1/configmaps").contains(&"frob".to_string()));
}

#[test]
fn a_body_over_3_mib_is_a_413_and_stores_nothing() {
    let s = TestServer::start(&[]);
    let big = "x".repeat(3 * 1024 * 1024 + 16);
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "huge"},
                      "data": {"a": big}})
    .to_string();
    let r = s.call(&s.token, "POST", CM, Some(body.as_bytes()), &[JSON]);
    let st = assert_status(&r, 413, "RequestEntityTooLarge");
    assert_eq!(st["message"], "Request entity too large: limit is 3145728");
    assert_not_found(&s, &format!("{CM}/huge"));
}

#[test]
fn invalid_names_labels_and_fields_are_422_invalid_with_upstream_field_paths() {
    let s = TestServer::start(DUAL);
    let body = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "Bad_Name", "labels": {"bad key": "v"}},
        "spec": {"ports": [{"port": 0}], "type": "Weird"}});
    let r = post(&s, SVC, &body.to_string(), "application/json");
    let st = assert_status(&r, 422, "Invalid");
    assert_eq!(st["details"]["name"], "Bad_Name");
    assert_eq!(st["details"]["kind"], "Service");
    let causes = st["details"]["causes"].as_array().expect("causes");
    let field = |f: &str| {
        causes
            .iter()
            .find(|c| c["field"] == f)
            .unwrap_or_else(|| panic!("no cause for {f}: {st}"))
            .clone()
    };
    let name = field("metadata.name");
    assert_eq!(name["reason"], "FieldValueInvalid");
    assert!(
        name["message"]
            .as_str()
            .unwrap()
            .starts_with(r#"Invalid value: "Bad_Name": a DNS-1035 label must consist of lower case alphanumeric characters"#),
        "{name}"
    );
    assert_eq!(field("metadata.labels")["reason"], "FieldValueInvalid");
    assert_eq!(
        field("spec.ports[0].port")["message"],
        "Invalid value: 0: must be between 1 and 65535, inclusive"
    );
    let ty = field("spec.type");
    assert_eq!(ty["reason"], "FieldValueNotSupported");
    assert_eq!(
        ty["message"],
        r#"Unsupported value: "Weird": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort""#
    );
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.starts_with(r#"Service "Bad_Name" is invalid: ["#),
        "{msg}"
    );
    assert!(
        msg.contains("spec.ports[0].port: Invalid value: 0"),
        "{msg}"
    );
    assert!(!names(&s, SVC).contains(&"Bad_Name".to_string()));

    // A ConfigMap name is a DNS-1123 subdomain; data keys have their own rule and path.
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}});
    let r = post(&s, CM, &body.to_string(), "application/json");
    let st = assert_status(&r, 422, "Invalid");
    let cause = &st["details"]["causes"][0];
    assert_eq!(cause["field"], "metadata.name");
    assert!(
        cause["message"]
            .as_str()
            .unwrap()
            .contains("a lowercase RFC 1123 subdomain must consist of"),
        "{cause}"
    );
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad-key"},
                      "data": {"bad key": "x"}});
    let r = post(&s, CM, &body.to_string(), "application/json");
    let st = assert_status(&r, 422, "Invalid");
    assert_eq!(st["details"]["causes"][0]["field"], "data[bad key]");
    let long = "v".repeat(64);
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "long-label", "labels": {"k": long}}});
    let r = post(&s, CM, &body.to_string(), "application/json");
    let st = assert_status(&r, 422, "Invalid");
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.labels");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("must be no more than 63 characters"),
        "{st}"
    );
    let stored = names(&s, CM);
    for n in ["Bad_Name", "bad-key", "long-label"] {
        assert!(!stored.contains(&n.to_string()), "{n} was stored");
    }

    // Dual-stack fields: an unknown family is FieldValueNotSupported at its index.
    let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fam"},
        "spec": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv7"],
                 "ports": [{"port": 80}]}});
    let r = post(&s, SVC, &body.to_string(), "application/json");
    let st = assert_status(&r, 422, "Invalid");
    let cause = &st["details"]["causes"][0];
    assert_eq!(cause["field"], "spec.ipFamilies[1]");
    assert_eq!(cause["reason"], "FieldValueNotSupported");
    assert_eq!(
        cause["message"],
        r#"Unsupported value: "IPv7": supported values: "IPv4", "IPv6""#
    );
    assert_not_found(&s, &format!("{SVC}/fam"));
}

#[test]
fn a_1_mb_label_value_is_a_422_whose_message_and_cause_print_the_value_truncated() {
    let s = TestServer::start(&[]);
    let long = "v".repeat(1 << 20);
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "huge-label", "labels": {"k": long}}});
    let r = post(&s, CM, &body.to_string(), "application/json");
    assert!(
        r.body.len() < 8 * 1024,
        "a 422 for a 1 MB label echoes {} bytes",
        r.body.len()
    );
    let st = assert_status(&r, 422, "Invalid");
    let kept = "v".repeat(1024);
    let printed = format!(
        r#"Invalid value: "{kept}"...<{} bytes truncated>"#,
        (1 << 20) - 1024
    );
    let cause = &st["details"]["causes"][0];
    assert_eq!(cause["field"], "metadata.labels");
    assert_eq!(cause["reason"], "FieldValueInvalid");
    assert_eq!(
        cause["message"],
        format!("{printed}: must be no more than 63 characters")
    );
    assert_eq!(
        st["message"],
        format!(
            r#"ConfigMap "huge-label" is invalid: metadata.labels: {printed}: must be no more than 63 characters"#
        )
    );
    assert_not_found(&s, &format!("{CM}/huge-label"));
}

#[test]
fn require_dual_stack_on_a_single_stack_cluster_is_422_on_spec_ip_family_policy() {
    let s = TestServer::start(&["--service-cluster-ip-range=10.0.0.0/16"]);
    let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "needs-two"},
        "spec": {"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}});
    let r = post(&s, SVC, &body.to_string(), "application/json");
    let st = assert_status(&r, 422, "Invalid");
    let cause = &st["details"]["causes"][0];
    assert_eq!(cause["field"], "spec.ipFamilyPolicy");
    assert_eq!(
        cause["message"],
        r#"Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#
    );
    assert_not_found(&s, &format!("{SVC}/needs-two"));
}

#[test]
fn a_duplicate_create_is_409_already_exists_and_keeps_the_original() {
    let s = TestServer::start(&[]);
    let r = post(&s, SVC, &svc("web", "first"), "application/json");
    assert_eq!(r.status, 201, "{}", r.body);
    let original = r.json();
    let r = post(&s, SVC, &svc("web", "second"), "application/json");
    let st = assert_status(&r, 409, "AlreadyExists");
    assert_eq!(st["message"], r#"services "web" already exists"#);
    assert_eq!(st["details"], json!({"name": "web", "kind": "services"}));
    let now = get(&s, &format!("{SVC}/web")).json();
    assert_eq!(now["metadata"]["labels"]["v"], "first");
    assert_eq!(
        now["metadata"]["resourceVersion"],
        original["metadata"]["resourceVersion"]
    );
    assert_eq!(now["spec"]["clusterIP"], original["spec"]["clusterIP"]);
}

#[test]
fn an_update_with_a_stale_resource_version_is_409_conflict_with_upstreams_message() {
    let s = TestServer::start(&[]);
    let r = post(&s, SVC, &svc("web", "v1"), "application/json");
    assert_eq!(r.status, 201, "{}", r.body);
    let mut first = r.json();
    let stale_rv = first["metadata"]["resourceVersion"].clone();
    // A real update moves the resourceVersion on.
    first["metadata"]["labels"]["v"] = json!("v2");
    let r = s.call(
        &s.token,
        "PUT",
        &format!("{SVC}/web"),
        Some(first.to_string().as_bytes()),
        &[JSON],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let current = r.json();
    assert_ne!(current["metadata"]["resourceVersion"], stale_rv);
    // A writer still holding the old resourceVersion loses.
    first["metadata"]["resourceVersion"] = stale_rv;
    first["metadata"]["labels"]["v"] = json!("stale");
    let r = s.call(
        &s.token,
        "PUT",
        &format!("{SVC}/web"),
        Some(first.to_string().as_bytes()),
        &[JSON],
    );
    let st = assert_status(&r, 409, "Conflict");
    assert_eq!(
        st["message"],
        r#"Operation cannot be fulfilled on services "web": the object has been modified; please apply your changes to the latest version and try again"#
    );
    assert_eq!(st["details"]["name"], "web");
    assert_eq!(st["details"]["kind"], "services");
    let now = get(&s, &format!("{SVC}/web")).json();
    assert_eq!(now["metadata"]["labels"]["v"], "v2");
    assert_eq!(
        now["metadata"]["resourceVersion"],
        current["metadata"]["resourceVersion"]
    );
    // A merge patch carrying the stale resourceVersion is a precondition too.
    let patch = json!({"metadata": {"resourceVersion": first["metadata"]["resourceVersion"],
                                    "labels": {"v": "stale-patch"}}});
    let r = s.call(
        &s.token,
        "PATCH",
        &format!("{SVC}/web"),
        Some(patch.to_string().as_bytes()),
        &[("Content-Type", "application/merge-patch+json")],
    );
    assert_status(&r, 409, "Conflict");
    assert_eq!(
        get(&s, &format!("{SVC}/web")).json()["metadata"]["labels"]["v"],
        "v2"
    );
}

fn bogus_svc(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"bogusField": true, "ports": [{"port": 80}]}})
    .to_string()
}

#[test]
fn field_validation_strict_rejects_an_unknown_field_with_upstreams_message() {
    let s = TestServer::start(&[]);
    let r = post(
        &s,
        &format!("{SVC}?fieldValidation=Strict"),
        &bogus_svc("strict"),
        "application/json",
    );
    let st = assert_status(&r, 400, "BadRequest");
    assert_eq!(
        st["message"],
        r#"Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "spec.bogusField""#
    );
    assert_not_found(&s, &format!("{SVC}/strict"));

    // Strict on update and patch as well; the object stays as it was.
    let r = post(&s, SVC, &svc("target", "orig"), "application/json");
    assert_eq!(r.status, 201, "{}", r.body);
    let mut obj = r.json();
    obj["spec"]["bogusField"] = json!(true);
    obj["metadata"]["labels"]["v"] = json!("changed");
    let r = s.call(
        &s.token,
        "PUT",
        &format!("{SVC}/target?fieldValidation=Strict"),
        Some(obj.to_string().as_bytes()),
        &[JSON],
    );
    let st = assert_status(&r, 400, "BadRequest");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains(r#"strict decoding error: unknown field "spec.bogusField""#),
        "{st}"
    );
    let patch = json!({"metadata": {"labels": {"v": "patched"}}, "spec": {"bogusField": 1}});
    let r = s.call(
        &s.token,
        "PATCH",
        &format!("{SVC}/target?fieldValidation=Strict"),
        Some(patch.to_string().as_bytes()),
        &[("Content-Type", "application/merge-patch+json")],
    );
    let st = assert_status(&r, 400, "BadRequest");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains(r#"unknown field "spec.bogusField""#),
        "{st}"
    );
    assert_eq!(
        get(&s, &format!("{SVC}/target")).json()["metadata"]["labels"]["v"],
        "orig"
    );
}

#[test]
fn field_validation_strict_rejects_a_duplicate_json_field() {
    let s = TestServer::start(&[]);
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup","name":"dup"},"data":{}}"#;
    let r = post(
        &s,
        &format!("{CM}?fieldValidation=Strict"),
        body,
        "application/json",
    );
    let st = assert_status(&r, 400, "BadRequest");
    assert_eq!(
        st["message"],
        r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: duplicate field "metadata.name""#
    );
    assert_not_found(&s, &format!("{CM}/dup"));
}

#[test]
fn field_validation_warn_succeeds_with_a_warning_header_per_problem() {
    let s = TestServer::start(&[]);
    let r = post(
        &s,
        &format!("{SVC}?fieldValidation=Warn"),
        &bogus_svc("warned"),
        "application/json",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.header_values("warning"),
        [r#"299 - "unknown field \"spec.bogusField\"""#]
    );
    let stored = get(&s, &format!("{SVC}/warned")).json();
    assert!(stored["spec"].get("bogusField").is_none(), "{stored}");

    // Duplicates under Warn: a warning, and the last value wins (upstream keeps the last).
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup-warn","labels":{"v":"1"},"labels":{"v":"2"}}}"#;
    let r = post(
        &s,
        &format!("{CM}?fieldValidation=Warn"),
        body,
        "application/json",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.header_values("warning"),
        [r#"299 - "duplicate field \"metadata.labels\"""#]
    );
    assert_eq!(
        get(&s, &format!("{CM}/dup-warn")).json()["metadata"]["labels"]["v"],
        "2"
    );

    // Without the parameter the default is Warn (upstream since 1.23); Ignore is silent.
    let r = post(&s, SVC, &bogus_svc("defaulted"), "application/json");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header_values("warning").len(), 1, "{:?}", r.headers);
    let r = post(
        &s,
        &format!("{SVC}?fieldValidation=Ignore"),
        &bogus_svc("ignored"),
        "application/json",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.header_values("warning").is_empty(), "{:?}", r.headers);
}

#[test]
fn dry_run_writes_store_nothing_and_do_not_bump_the_resource_version() {
    // The API server alone: the built-in controllers write on their own schedule (the
    // leader Lease every 2 s), which moves the store's revision this test compares.
    let s = TestServer::start(&[
        "--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108",
        "--controllers=-*",
    ]);
    let rv_before = list_rv(&s, CM);
    let r = post(
        &s,
        &format!("{CM}?dryRun=All"),
        &cm("dry"),
        "application/json",
    );
    // The status code itself is checked in `a_dry_run_create_answers_201_like_a_create`.
    assert!((200..300).contains(&r.status), "{}", r.body);
    assert_eq!(r.json()["metadata"]["name"], "dry");
    assert_not_found(&s, &format!("{CM}/dry"));
    assert_eq!(list_rv(&s, CM), rv_before, "a dry run bumped the RV");

    // Dry-run update, patch and delete of a real object change nothing.
    let r = post(&s, CM, &cm("real"), "application/json");
    assert_eq!(r.status, 201, "{}", r.body);
    let real = r.json();
    let rv = list_rv(&s, CM);
    let mut changed = real.clone();
    changed["data"]["k"] = json!("dry-put");
    let r = s.call(
        &s.token,
        "PUT",
        &format!("{CM}/real?dryRun=All"),
        Some(changed.to_string().as_bytes()),
        &[JSON],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["k"], "dry-put");
    let r = s.call(
        &s.token,
        "PATCH",
        &format!("{CM}/real?dryRun=All"),
        Some(br#"{"data":{"k":"dry-patch"}}"#),
        &[("Content-Type", "application/merge-patch+json")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call(
        &s.token,
        "DELETE",
        &format!("{CM}/real?dryRun=All"),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let now = get(&s, &format!("{CM}/real")).json();
    assert_eq!(now["data"]["k"], "v");
    assert_eq!(
        now["metadata"]["resourceVersion"],
        real["metadata"]["resourceVersion"]
    );
    assert_eq!(list_rv(&s, CM), rv, "a dry run bumped the RV");

    // A dry-run Service create allocates no ClusterIP: the same IPs are free afterwards.
    let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pinned"},
        "spec": {"ipFamilyPolicy": "RequireDualStack", "clusterIP": "10.0.0.50",
                 "clusterIPs": ["10.0.0.50", "fd00:10::50"],
                 "ports": [{"port": 80}]}})
    .to_string();
    let r = post(&s, &format!("{SVC}?dryRun=All"), &body, "application/json");
    assert!((200..300).contains(&r.status), "{}", r.body);
    assert_eq!(
        r.json()["spec"]["clusterIPs"],
        json!(["10.0.0.50", "fd00:10::50"])
    );
    assert_not_found(&s, &format!("{SVC}/pinned"));
    let r = post(&s, SVC, &body, "application/json");
    assert_eq!(r.status, 201, "the dry run kept its ClusterIPs: {}", r.body);
}

#[test]
fn a_dry_run_create_answers_201_like_a_create() {
    let s = TestServer::start(&[]);
    let r = post(
        &s,
        &format!("{CM}?dryRun=All"),
        &cm("dry"),
        "application/json",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_not_found(&s, &format!("{CM}/dry"));
}

#[test]
fn an_unsupported_patch_content_type_is_415() {
    let s = TestServer::start(&[]);
    assert_eq!(post(&s, CM, &cm("p"), "application/json").status, 201);
    for ct in [
        "application/xml",
        "application/apply-patch+cbor",
        "text/plain",
    ] {
        let r = s.call(
            &s.token,
            "PATCH",
            &format!("{CM}/p"),
            Some(br#"{"data":{"k":"patched"}}"#),
            &[("Content-Type", ct)],
        );
        assert_status(&r, 415, "UnsupportedMediaType");
    }
    assert_eq!(get(&s, &format!("{CM}/p")).json()["data"]["k"], "v");
}

#[test]
fn a_failed_json_patch_test_operation_is_422_and_applies_no_operation() {
    let s = TestServer::start(&[]);
    assert_eq!(post(&s, CM, &cm("jp"), "application/json").status, 201);
    let before = get(&s, &format!("{CM}/jp")).json();
    let patch = json!([
        {"op": "add", "path": "/metadata/labels", "value": {"added": "yes"}},
        {"op": "test", "path": "/data/k", "value": "not-v"},
        {"op": "replace", "path": "/data/k", "value": "replaced"}
    ]);
    let r = s.call(
        &s.token,
        "PATCH",
        &format!("{CM}/jp"),
        Some(patch.to_string().as_bytes()),
        &[("Content-Type", "application/json-patch+json")],
    );
    assert_status(&r, 422, "Invalid");
    let after = get(&s, &format!("{CM}/jp")).json();
    assert_eq!(after, before, "a failed JSON patch changed the object");
}

#[test]
fn bad_selectors_are_400_bad_request() {
    let s = TestServer::start(&[]);
    let r = get(&s, &format!("{CM}?fieldSelector=spec.foo%3Dx"));
    let st = assert_status(&r, 400, "BadRequest");
    assert_eq!(st["message"], "field label not supported: spec.foo");
    let r = get(&s, &format!("{CM}?labelSelector=a%20in%20("));
    assert_status(&r, 400, "BadRequest");
}

#[test]
fn a_write_to_a_collection_path_with_put_or_patch_is_405_method_not_allowed() {
    let s = TestServer::start(&[]);
    for (method, ct) in [
        ("PUT", "application/json"),
        ("PATCH", "application/merge-patch+json"),
    ] {
        let r = s.call(
            &s.token,
            method,
            CM,
            Some(cm("coll").as_bytes()),
            &[("Content-Type", ct)],
        );
        let st = assert_status(&r, 405, "MethodNotAllowed");
        assert_eq!(
            st["message"],
            "the server does not allow this method on the requested resource"
        );
    }
    assert_not_found(&s, &format!("{CM}/coll"));
}

#[test]
fn a_post_to_a_named_object_path_is_405_and_creates_nothing() {
    let s = TestServer::start(&[]);
    let r = post(&s, &format!("{CM}/foo"), &cm("bar"), "application/json");
    assert_status(&r, 405, "MethodNotAllowed");
    assert_not_found(&s, &format!("{CM}/bar"));
    assert_not_found(&s, &format!("{CM}/foo"));
}
