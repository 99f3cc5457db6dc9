//! JSON patch application with arbitrary operations: never a panic, never more than 10,000
//! operations applied, and the result grows by at most the copy limit plus what the patch text
//! itself carries (added values and keys).
#![no_main]

use dualstack_apimachinery::patch::{MAX_JSON_PATCH_COPY_BYTES, MAX_JSON_PATCH_OPERATIONS, json_patch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let target = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n", "labels": {"a": "b"}, "annotations": {"x": "y".repeat(64)}},
        "spec": {"podCIDRs": ["10.244.0.0/24", "fd00:10:244::/64"]},
        "status": {"images": [{"names": ["i"], "sizeBytes": 1}], "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]},
    });
    let before = target.to_string().len();
    match json_patch(&target, &p) {
        Ok(out) => {
            assert!(p.as_array().is_some_and(|ops| ops.len() <= MAX_JSON_PATCH_OPERATIONS));
            let after = out.to_string().len();
            // Each operation may also add a key or an array slot of its own: a few bytes of
            // separators per operation on top of the patch text.
            let ops = p.as_array().map_or(0, Vec::len);
            assert!(
                after <= before + MAX_JSON_PATCH_COPY_BYTES + 2 * data.len() + 8 * ops,
                "grew from {before} to {after} with a {}-byte patch",
                data.len()
            );
        }
        Err(e) => {
            let _ = e.code();
        }
    }
});
