//! Strategic merge, JSON merge and JSON patches of a Service with arbitrary patch documents.
#![no_main]

use dualstack_apimachinery::patch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let target = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "labels": {"a": "b"}, "finalizers": ["x"]},
        "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}], "clusterIPs": ["10.0.0.1"], "selector": {"app": "web"}},
    });
    let _ = patch::strategic_merge_patch(&target, &p, "v1", "Service");
    let _ = patch::merge_patch(&target, &p);
    let _ = patch::json_patch(&target, &p);
});
