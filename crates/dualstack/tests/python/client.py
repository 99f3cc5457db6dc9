#!/usr/bin/env python3
"""The official Python `kubernetes` client against a running `dualstack server`.

Usage: client.py KUBECONFIG NAMESPACE

Lists, creates (a RequireDualStack Service), patches (strategic merge and JSON patch), watches
(from a list resourceVersion with bookmarks allowed, and from "now" with synthetic ADDEDs) and
deletes Services in NAMESPACE, reads /version and uses the DynamicClient once. Every check
raises on failure (non-zero exit with a message); the last line of stdout is a JSON summary
that the Rust test (crates/dualstack/tests/python_client.rs) checks again.
"""

import ipaddress
import json
import queue
import sys
import threading

from kubernetes import client, config, dynamic, watch


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def cluster_ips(spec):
    """`spec.clusterIPs`: `cluster_ips` in the pydantic client (37.x), `cluster_i_ps` before."""
    if hasattr(spec, "cluster_ips"):
        return spec.cluster_ips
    return spec.cluster_i_ps


def watch_services(v1, ns, events, **kwargs):
    """Streams service events into `events` until a DELETED of `web` (or the timeout)."""
    try:
        w = watch.Watch()
        for ev in w.stream(v1.list_namespaced_service, ns, timeout_seconds=30, **kwargs):
            if ev["type"] == "BOOKMARK":
                rv = ev["raw_object"]["metadata"]["resourceVersion"]
                events.put(("BOOKMARK", "", rv))
                continue
            obj = ev["object"]
            events.put((ev["type"], obj.metadata.name, obj.metadata.resource_version))
            if ev["type"] == "DELETED" and obj.metadata.name == "web":
                w.stop()
    except Exception as e:  # reported to the main thread
        events.put(("EXCEPTION", repr(e), ""))
    events.put(("END", "", ""))


def main():
    kubeconfig, ns = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    api = client.ApiClient()
    v1 = client.CoreV1Api(api)
    summary = {}

    version = client.VersionApi(api).get_code()
    check(version.major == "1" and version.git_version.startswith("v1."), f"version {version}")
    summary["gitVersion"] = version.git_version

    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    listed = v1.list_namespaced_service(ns)
    check(listed.items == [], f"fresh namespace has services: {listed.items}")
    list_rv = listed.metadata.resource_version
    check(list_rv, "list without resourceVersion")

    # Watch from the list's resourceVersion, bookmarks allowed, in the background.
    events = queue.Queue()
    watcher = threading.Thread(
        target=watch_services,
        args=(v1, ns, events),
        kwargs={"resource_version": list_rv, "allow_watch_bookmarks": True},
        daemon=True,
    )
    watcher.start()

    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name="web", labels={"app": "web"}),
        spec=client.V1ServiceSpec(
            ip_family_policy="RequireDualStack",
            selector={"app": "web"},
            ports=[client.V1ServicePort(name="http", port=80, target_port=8080)],
        ),
    )
    created = v1.create_namespaced_service(ns, svc)
    ips = cluster_ips(created.spec)
    families = created.spec.ip_families
    check(len(ips) == 2, f"RequireDualStack gave clusterIPs {ips}")
    versions = [ipaddress.ip_address(ip).version for ip in ips]
    check(sorted(versions) == [4, 6], f"clusterIPs of one family: {ips}")
    check(
        families == ["IPv%d" % v for v in versions],
        f"ipFamilies {families} do not match clusterIPs {ips}",
    )
    check(created.spec.cluster_ip == ips[0], "clusterIP != clusterIPs[0]")
    check(created.spec.ip_family_policy == "RequireDualStack", "policy not kept")
    summary["clusterIPs"] = ips
    summary["ipFamilies"] = families

    listed = v1.list_namespaced_service(ns, label_selector="app=web")
    check([s.metadata.name for s in listed.items] == ["web"], "label-selected list")

    # A dict body is a strategic merge patch, a list body a JSON patch.
    patched = v1.patch_namespaced_service(
        "web", ns, {"metadata": {"labels": {"tier": "frontend"}}, "spec": {"ports": [{"port": 80, "targetPort": 9090}]}}
    )
    check(patched.metadata.labels == {"app": "web", "tier": "frontend"}, f"labels {patched.metadata.labels}")
    check(len(patched.spec.ports) == 1, f"ports merged by key: {patched.spec.ports}")
    check(patched.spec.ports[0].target_port == 9090, f"targetPort {patched.spec.ports[0].target_port}")
    check(cluster_ips(patched.spec) == ips, "a patch moved the clusterIPs")
    patched = v1.patch_namespaced_service(
        "web", ns, [{"op": "add", "path": "/metadata/annotations", "value": {"by": "json-patch"}}]
    )
    check(patched.metadata.annotations == {"by": "json-patch"}, "JSON patch")
    read = v1.read_namespaced_service("web", ns)
    check(read.metadata.resource_version == patched.metadata.resource_version, "read after patch")

    # A watch without resourceVersion starts with a synthetic ADDED of what exists.
    w = watch.Watch()
    first = None
    for ev in w.stream(v1.list_namespaced_service, ns, timeout_seconds=10):
        first = (ev["type"], ev["object"].metadata.name)
        w.stop()
    check(first == ("ADDED", "web"), f"first event of a fresh watch: {first}")

    v1.delete_namespaced_service("web", ns)

    seen = []
    while True:
        kind, name, rv = events.get(timeout=30)
        if kind == "END":
            break
        check(kind != "EXCEPTION", f"watch failed: {name}")
        seen.append([kind, name, rv])
    types = [t for t, _, _ in seen if t != "BOOKMARK"]
    check(types == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"], f"watch events {seen}")
    rvs = [int(rv) for t, _, rv in seen if t != "BOOKMARK"]
    check(rvs == sorted(rvs) and rvs[0] > int(list_rv), f"resourceVersions {rvs} after {list_rv}")
    summary["events"] = seen

    # The DynamicClient: discovery, then a create and a list through it.
    dyn = dynamic.DynamicClient(api)
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    cms.create(
        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-dynamic"}, "data": {"a": "1"}},
        namespace=ns,
    )
    names = [i.metadata.name for i in cms.get(namespace=ns).items]
    check("from-dynamic" in names, f"dynamic list {names}")
    slices = dyn.resources.get(api_version="discovery.k8s.io/v1", kind="EndpointSlice")
    default_slices = [i.metadata.name for i in slices.get(namespace="default").items]
    check("kubernetes" in default_slices, f"endpointslices in default: {default_slices}")
    summary["dynamic"] = {"configmaps": names, "endpointslices": default_slices}

    print(json.dumps(summary))


if __name__ == "__main__":
    main()
