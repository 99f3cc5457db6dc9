//! The YAML depth pre-scan on arbitrary text: it never panics, and it never refuses a document
//! the YAML decoder itself accepts (the decoder refuses more than 128 levels, the pre-scan more
//! than 160, so a refusal of a decodable document is an over-count).
#![no_main]

use dualstack_apimachinery::decode::{BodyFormat, decode_text};
use dualstack_apimachinery::depth::{DECODER_DEPTH, MAX_DEPTH, check_yaml_depth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let deep = check_yaml_depth(text, MAX_DEPTH);
    let refused = check_yaml_depth(text, DECODER_DEPTH);
    // A limit passed at 10,000 levels is passed at 160.
    assert!(deep.is_ok() || refused.is_err());
    let decodes = serde_norway::from_str::<serde_json::Value>(text).is_ok();
    if decodes {
        assert!(
            refused.is_ok(),
            "pre-scan refused a document the decoder accepts: {refused:?}"
        );
    }
    let _ = decode_text(BodyFormat::Yaml, data);
});
