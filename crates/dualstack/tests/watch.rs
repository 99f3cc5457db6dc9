//! The raw HTTP watch and list protocol against the real server (curl `-N`, read line by
//! line): synthetic ADDEDs, resuming from a list resourceVersion, one compact JSON object per
//! line, bookmarks, selectors on watches (leaving the selection is a DELETED), the in-stream 410
//! after a restart, `timeoutSeconds`, `limit`/`continue` paging and the 504 for a list from the
//! future.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Next, Response, TestServer, WatchStream, summary};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn call(s: &TestServer, method: &str, path: &str, body: Option<Value>, ct: &str) -> Response {
    let body = body.map(|b| b.to_string());
    s.call(
        &s.token,
        method,
        path,
        body.as_deref().map(str::as_bytes),
        &[("Content-Type", ct)],
    )
}

fn ok(r: Response) -> Value {
    assert!((200..300).contains(&r.status), "{}: {}", r.status, r.body);
    r.json()
}

fn namespace(s: &TestServer, ns: &str) {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    ok(call(
        s,
        "POST",
        "/api/v1/namespaces",
        Some(body),
        "application/json",
    ));
}

fn cms(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps")
}

fn create_cm(s: &TestServer, ns: &str, name: &str, labels: Value) -> Value {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": name, "labels": labels}, "data": {"k": "0"}});
    ok(call(s, "POST", &cms(ns), Some(body), "application/json"))
}

fn patch_cm(s: &TestServer, ns: &str, name: &str, patch: Value) -> Value {
    ok(call(
        s,
        "PATCH",
        &format!("{}/{name}", cms(ns)),
        Some(patch),
        "application/merge-patch+json",
    ))
}

fn delete_cm(s: &TestServer, ns: &str, name: &str) {
    ok(call(
        s,
        "DELETE",
        &format!("{}/{name}", cms(ns)),
        None,
        "application/json",
    ));
}

fn list_rv(s: &TestServer, path: &str) -> String {
    let v = ok(call(s, "GET", path, None, "application/json"));
    v["metadata"]["resourceVersion"]
        .as_str()
        .expect("list RV")
        .to_string()
}

fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no numeric resourceVersion: {obj}"))
}

fn name_of(ev: &Value) -> &str {
    ev["object"]["metadata"]["name"].as_str().unwrap_or("")
}

/// Reads the next line and checks the framing: exactly one compact JSON object.
fn next_compact(w: &mut WatchStream) -> Value {
    match w.next_line(WAIT) {
        Next::Line(line) => {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("line is not exactly one JSON object ({e}): {line}"));
            assert_eq!(
                serde_json::to_string(&v).unwrap(),
                line,
                "watch line is not compact JSON"
            );
            v
        }
        other => panic!("expected a watch event, got {other:?}"),
    }
}

fn assert_event_object(ev: &Value, kind: &str) {
    let o = &ev["object"];
    assert_eq!(o["kind"], kind, "{ev}");
    assert_eq!(o["apiVersion"], "v1", "{ev}");
    assert!(rv_of(o) > 0, "{ev}");
}

#[test]
fn a_watch_without_resource_version_starts_with_an_added_for_every_object() {
    let s = TestServer::start(&[]);
    namespace(&s, "wa");
    namespace(&s, "wa-other");
    let names = ["c1", "c2", "c3"];
    for n in names {
        create_cm(&s, "wa", n, json!({}));
    }
    create_cm(&s, "wa-other", "elsewhere", json!({}));
    // `watch=true`, `watch=1` and Python 31's `watch=True` are all the same request.
    for (i, q) in [
        "watch=true",
        "watch=1",
        "watch=True",
        "watch=true&resourceVersion=0",
    ]
    .into_iter()
    .enumerate()
    {
        let mut w = s.watch(&format!("{}?{q}", cms("wa")));
        assert_eq!(w.status(), 200, "{q}");
        assert_eq!(
            w.header("content-type").as_deref(),
            Some("application/json"),
            "{q}"
        );
        let mut seen = BTreeSet::new();
        for _ in names {
            let ev = next_compact(&mut w);
            assert_eq!(ev["type"], "ADDED", "{q}: {ev}");
            assert_event_object(&ev, "ConfigMap");
            assert_eq!(ev["object"]["metadata"]["namespace"], "wa");
            seen.insert(name_of(&ev).to_string());
        }
        assert_eq!(seen, names.iter().map(|n| n.to_string()).collect());
        // Then live changes, and nothing from the other namespace.
        let marker = format!("live-{i}");
        create_cm(&s, "wa-other", &format!("{marker}-x"), json!({}));
        create_cm(&s, "wa", &marker, json!({}));
        let ev = next_compact(&mut w);
        assert_eq!(
            (ev["type"].as_str().unwrap(), name_of(&ev)),
            ("ADDED", marker.as_str()),
            "{q}"
        );
        delete_cm(&s, "wa", &marker);
        let ev = next_compact(&mut w);
        assert_eq!(ev["type"], "DELETED", "{ev}");
    }
}

#[test]
fn a_watch_from_a_list_resource_version_gets_only_later_changes_in_order() {
    let s = TestServer::start(&[]);
    namespace(&s, "wb");
    create_cm(&s, "wb", "a", json!({}));
    create_cm(&s, "wb", "b", json!({}));
    let rv = list_rv(&s, &cms("wb"));
    let mut w = s.watch(&format!("{}?watch=true&resourceVersion={rv}", cms("wb")));
    create_cm(&s, "wb", "c", json!({}));
    patch_cm(&s, "wb", "a", json!({"data": {"k": "1"}}));
    delete_cm(&s, "wb", "b");
    let mut last = rv.parse::<u64>().unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = next_compact(&mut w);
        assert_event_object(&ev, "ConfigMap");
        let this = rv_of(&ev["object"]);
        assert!(this > last, "events out of order: {this} after {last}");
        last = this;
        got.push((
            ev["type"].as_str().unwrap().to_string(),
            name_of(&ev).to_string(),
        ));
        if ev["type"] == "MODIFIED" {
            assert_eq!(ev["object"]["data"]["k"], "1");
        }
    }
    let want: Vec<(String, String)> = [("ADDED", "c"), ("MODIFIED", "a"), ("DELETED", "b")]
        .iter()
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect();
    assert_eq!(got, want, "no synthetic ADDEDs, exactly the later changes");
    assert_eq!(w.status(), 200);
}

#[test]
fn a_streaming_list_ends_its_initial_events_with_an_annotated_bookmark() {
    let s = TestServer::start(&[]);
    namespace(&s, "wc");
    for n in ["s1", "s2"] {
        create_cm(&s, "wc", n, json!({}));
    }
    let list_rv: u64 = list_rv(&s, &cms("wc")).parse().unwrap();
    let mut w = s.watch(&format!(
        "{}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0&allowWatchBookmarks=true",
        cms("wc")
    ));
    assert_eq!(w.status(), 200);
    let mut added = BTreeSet::new();
    let bookmark = loop {
        let ev = next_compact(&mut w);
        match ev["type"].as_str().unwrap() {
            "ADDED" => {
                added.insert(name_of(&ev).to_string());
            }
            "BOOKMARK" => break ev,
            other => panic!("unexpected {other} before the bookmark: {ev}"),
        }
    };
    assert_eq!(added, ["s1", "s2"].map(String::from).into());
    let o = &bookmark["object"];
    assert_eq!(o["kind"], "ConfigMap", "{bookmark}");
    assert_eq!(o["apiVersion"], "v1", "{bookmark}");
    assert!(rv_of(o) >= list_rv, "{bookmark}");
    assert_eq!(
        o["metadata"]["annotations"]["k8s.io/initial-events-end"], "true",
        "{bookmark}"
    );
    // After the bookmark: live events.
    create_cm(&s, "wc", "s3", json!({}));
    let ev = next_compact(&mut w);
    assert_eq!(
        (ev["type"].as_str().unwrap(), name_of(&ev)),
        ("ADDED", "s3")
    );
}

#[test]
fn a_watch_with_bookmarks_and_a_timeout_gets_a_bookmark_before_the_deadline() {
    let s = TestServer::start(&[]);
    namespace(&s, "wd");
    create_cm(&s, "wd", "x", json!({}));
    let rv = list_rv(&s, &cms("wd"));
    let start = Instant::now();
    let mut w = s.watch(&format!(
        "{}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=4",
        cms("wd")
    ));
    let mut bookmark = None;
    loop {
        match w.next_line(WAIT) {
            Next::Line(l) => {
                let ev: Value = serde_json::from_str(&l).unwrap();
                if ev["type"] == "BOOKMARK" {
                    bookmark = Some(ev);
                }
            }
            Next::End => break,
            Next::Timeout => panic!("the stream did not end at timeoutSeconds=4"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(8));
    let ev = bookmark.expect("a BOOKMARK before the timeout (upstream: 2 s before the deadline)");
    let o = &ev["object"];
    assert_eq!(o["kind"], "ConfigMap", "{ev}");
    assert_eq!(o["apiVersion"], "v1", "{ev}");
    assert!(rv_of(o) >= rv.parse().unwrap(), "{ev}");
}

#[test]
fn a_watch_answers_200_with_its_headers_before_the_first_event() {
    let s = TestServer::start(&[]);
    namespace(&s, "wi");
    let rv = list_rv(&s, &cms("wi"));
    let mut w = s.watch(&format!("{}?watch=true&resourceVersion={rv}", cms("wi")));
    assert!(
        w.head_within(Duration::from_secs(10)),
        "no response head within 10 s of a watch with nothing to send"
    );
    assert_eq!(w.status(), 200);
    assert_eq!(
        w.header("content-type").as_deref(),
        Some("application/json")
    );
}

#[test]
fn label_and_field_selectors_filter_watches_and_leaving_the_selection_is_a_deleted() {
    let s = TestServer::start(&[]);
    namespace(&s, "we");
    create_cm(&s, "we", "in", json!({"app": "web"}));
    create_cm(&s, "we", "out", json!({"app": "db"}));
    let rv = list_rv(&s, &cms("we"));

    // Label selector, synthetic start: only the matching object.
    let mut initial = s.watch(&format!("{}?watch=true&labelSelector=app%3Dweb", cms("we")));
    let ev = next_compact(&mut initial);
    assert_eq!(
        (ev["type"].as_str().unwrap(), name_of(&ev)),
        ("ADDED", "in")
    );

    let mut w = s.watch(&format!(
        "{}?watch=true&resourceVersion={rv}&labelSelector=app%3Dweb",
        cms("we")
    ));
    let mut by_name = s.watch(&format!(
        "{}?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dout",
        cms("we")
    ));
    // A non-matching change is not delivered; the object leaving is a DELETED.
    patch_cm(&s, "we", "out", json!({"data": {"k": "1"}}));
    patch_cm(
        &s,
        "we",
        "in",
        json!({"metadata": {"labels": {"app": "other"}}}),
    );
    let ev = next_compact(&mut w);
    assert_eq!(
        (ev["type"].as_str().unwrap(), name_of(&ev)),
        ("DELETED", "in"),
        "{ev}"
    );
    // Coming back is an ADDED; a new matching object too.
    patch_cm(
        &s,
        "we",
        "in",
        json!({"metadata": {"labels": {"app": "web"}}}),
    );
    let ev = next_compact(&mut w);
    assert_eq!(
        (ev["type"].as_str().unwrap(), name_of(&ev)),
        ("ADDED", "in")
    );
    create_cm(&s, "we", "new-web", json!({"app": "web"}));
    let ev = next_compact(&mut w);
    assert_eq!(
        (ev["type"].as_str().unwrap(), name_of(&ev)),
        ("ADDED", "new-web")
    );
    // The field-selector watch saw only `out`.
    let ev = next_compact(&mut by_name);
    assert_eq!(
        (ev["type"].as_str().unwrap(), name_of(&ev)),
        ("MODIFIED", "out")
    );
    delete_cm(&s, "we", "in");
    delete_cm(&s, "we", "out");
    let ev = next_compact(&mut by_name);
    assert_eq!(
        (ev["type"].as_str().unwrap(), name_of(&ev)),
        ("DELETED", "out"),
        "{}",
        summary(&ev)
    );

    // Pods: a field selector on status.phase; the pod leaves it when its phase changes.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                     "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}});
    let pods = "/api/v1/namespaces/we/pods";
    ok(call(&s, "POST", pods, Some(pod), "application/json"));
    let mut pending = s.watch(&format!(
        "{pods}?watch=true&fieldSelector=status.phase%3DPending,spec.nodeName%3Dn1"
    ));
    let ev = next_compact(&mut pending);
    assert_eq!((ev["type"].as_str().unwrap(), name_of(&ev)), ("ADDED", "p"));
    assert_event_object(&ev, "Pod");
    ok(call(
        &s,
        "PATCH",
        &format!("{pods}/p/status"),
        Some(json!({"status": {"phase": "Running"}})),
        "application/merge-patch+json",
    ));
    let ev = next_compact(&mut pending);
    assert_eq!(
        (ev["type"].as_str().unwrap(), name_of(&ev)),
        ("DELETED", "p"),
        "{ev}"
    );
}

#[test]
fn a_watch_from_before_a_restart_gets_http_200_and_an_in_stream_410_expired() {
    let mut s = TestServer::start(&[]);
    namespace(&s, "wf");
    let old = rv_of(&create_cm(&s, "wf", "before", json!({})));
    // One more write, so that `old` is strictly older than the store's revision at restart
    // (a watch from exactly the restart revision would be valid upstream too).
    create_cm(&s, "wf", "before-2", json!({}));
    s.restart(None);
    create_cm(&s, "wf", "after", json!({}));
    let mut w = s.watch(&format!("{}?watch=true&resourceVersion={old}", cms("wf")));
    assert_eq!(
        w.status(),
        200,
        "an expired RV is an in-stream ERROR, not an HTTP error"
    );
    let ev = next_compact(&mut w);
    assert_eq!(ev["type"], "ERROR", "{ev}");
    let st = &ev["object"];
    assert_eq!(st["kind"], "Status", "{ev}");
    assert_eq!(st["apiVersion"], "v1", "{ev}");
    assert_eq!(st["status"], "Failure", "{ev}");
    assert_eq!(st["code"], 410, "{ev}");
    assert_eq!(st["reason"], "Expired", "{ev}");
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("too old resource version: {old} (")),
        "{msg}"
    );
    // The server then ends the stream.
    assert_eq!(w.next_line(WAIT), Next::End);
}

#[test]
fn timeout_seconds_ends_the_watch_stream() {
    let s = TestServer::start(&[]);
    namespace(&s, "wg");
    let start = Instant::now();
    let mut w = s.watch(&format!("{}?watch=true&timeoutSeconds=1", cms("wg")));
    assert_eq!(w.next_line(WAIT), Next::End, "the stream should end");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "ended after {took:?}"
    );
}

#[test]
fn list_paging_with_limit_and_continue_returns_every_object_exactly_once() {
    let s = TestServer::start(&[]);
    namespace(&s, "wh");
    let want: BTreeSet<String> = (0..23).map(|i| format!("cm-{i:02}")).collect();
    for n in &want {
        create_cm(&s, "wh", n, json!({}));
    }
    let mut seen = Vec::new();
    let mut cont = String::new();
    let mut page_rv = None;
    let mut pages = 0;
    loop {
        let mut path = format!("{}?limit=5", cms("wh"));
        if !cont.is_empty() {
            path.push_str(&format!("&continue={cont}"));
        }
        let v = ok(call(&s, "GET", &path, None, "application/json"));
        let items = v["items"].as_array().expect("items");
        assert!(items.len() <= 5, "page larger than limit");
        seen.extend(
            items
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        let rv = v["metadata"]["resourceVersion"].clone();
        match &page_rv {
            None => page_rv = Some(rv),
            Some(first) => assert_eq!(&rv, first, "every page is served from one snapshot"),
        }
        pages += 1;
        match v["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => {
                cont = form_encode(c);
                let left = v["metadata"]["remainingItemCount"].as_u64();
                if let Some(left) = left {
                    assert_eq!(left as usize, want.len() - seen.len());
                }
            }
            _ => break,
        }
    }
    assert_eq!(pages, 5);
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an object came twice: {seen:?}");
    assert_eq!(unique, want);
}

#[test]
fn list_pages_after_the_first_are_served_from_the_snapshot_of_the_first() {
    let s = TestServer::start(&[]);
    namespace(&s, "wj");
    for i in 0..6 {
        create_cm(&s, "wj", &format!("cm-{i}"), json!({}));
    }
    let page = |cont: &str| {
        let mut path = format!("{}?limit=3", cms("wj"));
        if !cont.is_empty() {
            path.push_str(&format!("&continue={}", form_encode(cont)));
        }
        ok(call(&s, "GET", &path, None, "application/json"))
    };
    let first = page("");
    let list_rv = first["metadata"]["resourceVersion"].clone();
    // Between the pages: one object is deleted and one is created after the cursor.
    delete_cm(&s, "wj", "cm-4");
    create_cm(&s, "wj", "cm-9", json!({}));
    let second = page(first["metadata"]["continue"].as_str().expect("continue"));
    assert_eq!(second["metadata"]["resourceVersion"], list_rv);
    let names: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    // Upstream reads every page at the list's resourceVersion (etcd revision): the list is the
    // state at that RV, so cm-4 is in it and cm-9 (created later) is not.
    assert_eq!(
        names,
        ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4", "cm-5"],
        "not the snapshot at RV {list_rv}"
    );
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_list_at_a_resource_version_far_in_the_future_is_504_too_large() {
    let s = TestServer::start(&[]);
    let current: u64 = list_rv(&s, "/api/v1/configmaps").parse().unwrap();
    let future = current + 1_000_000;
    let r = call(
        &s,
        "GET",
        &format!("/api/v1/configmaps?resourceVersion={future}"),
        None,
        "application/json",
    );
    assert_eq!(r.status, 504, "{}", r.body);
    let st = r.json();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "Timeout");
    assert_eq!(st["code"], 504);
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("Too large resource version: {future}, current: ")),
        "{msg}"
    );
    assert_eq!(
        st["details"]["causes"][0]["reason"], "ResourceVersionTooLarge",
        "{st}"
    );
    assert_eq!(st["details"]["retryAfterSeconds"], 1, "{st}");
}
