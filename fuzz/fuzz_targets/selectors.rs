//! Label and field selector parsing and matching. Nothing may panic; a selector that parses
//! must evaluate.
#![no_main]

use std::collections::BTreeMap;

use dualstack_apimachinery::selector::{FieldSelector, LabelSelector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let labels: BTreeMap<String, String> =
        [("app", "web"), ("tier", "front"), ("n", "5")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if let Ok(sel) = LabelSelector::parse(s) {
        let _ = sel.matches(&labels);
    }
    if let Ok(sel) = FieldSelector::parse(s) {
        let _ = sel.matches(&labels);
    }
});
