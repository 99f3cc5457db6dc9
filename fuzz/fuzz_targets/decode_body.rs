//! Request-body decoding: JSON, YAML and the protobuf envelope into values, then into a typed
//! Service and Pod with unknown/duplicate field detection. Nothing may panic.
#![no_main]

use dualstack_apimachinery::decode::{BodyFormat, decode_text, decode_typed, duplicate_fields};
use dualstack_apimachinery::protobuf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let value = match sel % 3 {
        0 => {
            let _ = duplicate_fields(body);
            decode_text(BodyFormat::Json, body)
        }
        1 => decode_text(BodyFormat::Yaml, body),
        _ => {
            let _ = protobuf::decode(body, "v1", "Namespace");
            let _ = protobuf::decode(body, "v1", "ConfigMap");
            protobuf::decode(body, "v1", "Service")
        }
    };
    if let Ok(v) = value {
        let _ = decode_typed::<k8s_openapi::api::core::v1::Service>(v.clone(), "Service", "v1");
        let _ = decode_typed::<k8s_openapi::api::core::v1::Pod>(v, "Pod", "v1");
    }
});
