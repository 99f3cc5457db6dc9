//! Request-body decoding: JSON, YAML and the Kubernetes protobuf envelope into a JSON value, then
//! into a typed object with strict field validation (unknown and duplicate fields reported by
//! path, as kube-apiserver's strict decoder does).

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::status::ApiError;

/// Largest request body accepted (kube-apiserver's 3 MiB limit).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Media types a request body may have.
pub const ACCEPTED_MEDIA_TYPES: &str =
    "application/json, application/yaml, application/vnd.kubernetes.protobuf";

/// The media type of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json` (also the default when no Content-Type is given).
    Json,
    /// `application/yaml`.
    Yaml,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
}

impl BodyFormat {
    /// Picks the format from a Content-Type header (parameters ignored).
    pub fn from_content_type(ct: Option<&str>) -> Result<Self, ApiError> {
        let base = ct
            .unwrap_or("application/json")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "" | "application/json" | "*/*" | "text/plain" => Ok(BodyFormat::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(BodyFormat::Yaml),
            "application/vnd.kubernetes.protobuf" => Ok(BodyFormat::Protobuf),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "{ACCEPTED_MEDIA_TYPES} (got {other})"
            ))),
        }
    }
}

/// Decodes a JSON or YAML body into a JSON object value. Protobuf bodies go through
/// [`crate::protobuf::decode`].
pub fn decode_text(format: BodyFormat, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge(MAX_BODY_BYTES));
    }
    let value: Value = match format {
        BodyFormat::Json => serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("error decoding request body: {e}")))?,
        BodyFormat::Yaml => {
            let text = std::str::from_utf8(body)
                .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?;
            check_yaml_depth(text)?;
            serde_norway::from_str(text)
                .map_err(|e| ApiError::BadRequest(format!("error converting YAML to JSON: {e}")))?
        }
        BodyFormat::Protobuf => {
            return Err(ApiError::BadRequest(
                "protobuf bodies are decoded by kind".into(),
            ));
        }
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest(format!(
            "Object 'Kind' is missing in '{}'",
            truncate(&String::from_utf8_lossy(body), 200)
        )));
    }
    Ok(value)
}

/// Refuses YAML nested deeper than the decoder accepts before the decoder sees it: deeper than
/// upstream's limit with upstream's text, deeper than `serde_norway`'s recursion limit with the
/// decoder's own words (the answer such a document always got, only sooner).
fn check_yaml_depth(text: &str) -> Result<(), ApiError> {
    use crate::depth::{DECODER_DEPTH, MAX_DEPTH, check_yaml_depth};
    let Err(e) = check_yaml_depth(text, DECODER_DEPTH) else {
        return Ok(());
    };
    let msg = match check_yaml_depth(text, MAX_DEPTH) {
        Err(deep) => deep.to_string(),
        Ok(()) => format!("recursion limit exceeded at line {}", e.line),
    };
    Err(ApiError::BadRequest(format!(
        "error converting YAML to JSON: {msg}"
    )))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Paths of keys that appear twice in one JSON object of `body` (`spec.clusterIP`).
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut out = Vec::new();
    let _ = DupSeed {
        path: String::new(),
        out: &mut out,
    }
    .deserialize(&mut de);
    out
}

struct DupSeed<'a> {
    path: String,
    out: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for DupSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DupSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let path = format!("{}[{}]", self.path, i);
            if seq
                .next_element_seed(DupSeed {
                    path,
                    out: &mut *self.out,
                })?
                .is_none()
            {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{}", self.path, key)
            };
            if !seen.insert(key) {
                self.out.push(path.clone());
            }
            map.next_value_seed(DupSeed {
                path,
                out: &mut *self.out,
            })?;
        }
        Ok(())
    }
}

/// Turns a `serde_ignored` path (`spec.?.ports.?.0.zzz`) into Kubernetes form
/// (`spec.ports[0].zzz`).
fn clean_ignored_path(p: &str) -> String {
    let mut out = String::new();
    for seg in p.split('.') {
        if seg == "?" || seg.is_empty() {
            continue;
        }
        if seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// A typed object decoded from a JSON value, with the fields the type does not know.
#[derive(Debug)]
pub struct Decoded<K> {
    /// The object.
    pub object: K,
    /// Unknown field paths (`spec.bogus`), in document order.
    pub unknown: Vec<String>,
}

/// Decodes `value` into `K`, collecting unknown fields. Type errors are 400s with the
/// `<Kind> in version "<v>" cannot be handled as a <Kind>: ...` message of upstream.
pub fn decode_typed<K: DeserializeOwned>(
    value: Value,
    kind: &str,
    version: &str,
) -> Result<Decoded<K>, ApiError> {
    let mut unknown = Vec::new();
    let object =
        serde_ignored::deserialize(value, |p| unknown.push(clean_ignored_path(&p.to_string())))
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "{kind} in version {version:?} cannot be handled as a {kind}: {e}"
                ))
            })?;
    Ok(Decoded { object, unknown })
}

/// How unknown or duplicate fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped, with a `Warning` header per field (the default for most clients).
    #[default]
    Warn,
    /// The request fails with 400.
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter (`Strict`, `Warn`, `Ignore`; empty means the default).
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s.unwrap_or("") {
            "" => Ok(FieldValidation::default()),
            "Strict" => Ok(FieldValidation::Strict),
            "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(ApiError::BadRequest(format!(
                "fieldValidation parameter unsupported: {other}. Supported values: Strict, Warn, Ignore"
            ))),
        }
    }

    /// Applies the policy to unknown and duplicate fields: `Err` for Strict, warning texts
    /// otherwise.
    pub fn check(
        self,
        kind: &str,
        version: &str,
        unknown: &[String],
        duplicate: &[String],
    ) -> Result<Vec<String>, ApiError> {
        if self == FieldValidation::Ignore || (unknown.is_empty() && duplicate.is_empty()) {
            return Ok(Vec::new());
        }
        let mut problems: Vec<String> = duplicate
            .iter()
            .map(|p| format!("duplicate field {p:?}"))
            .collect();
        problems.extend(unknown.iter().map(|p| format!("unknown field {p:?}")));
        match self {
            FieldValidation::Strict => Err(ApiError::BadRequest(format!(
                "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
                problems.join(", ")
            ))),
            _ => Ok(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    #[test]
    fn unknown_fields_are_reported_with_kubernetes_paths() {
        let v: Value = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"},"spec":{"bogusField":1,"ports":[{"port":80,"zzz":true}]}}"#,
        )
        .unwrap();
        let d: Decoded<Service> = decode_typed(v, "Service", "v1").unwrap();
        assert_eq!(d.unknown, vec!["spec.bogusField", "spec.ports[0].zzz"]);
        let err = FieldValidation::Strict
            .check("Service", "v1", &d.unknown[..1], &[])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "spec.bogusField""#
        );
        let warn = FieldValidation::Warn
            .check("Service", "v1", &d.unknown[..1], &[])
            .unwrap();
        assert_eq!(warn, vec![r#"unknown field "spec.bogusField""#]);
    }

    #[test]
    fn duplicate_fields_are_found_at_any_depth() {
        let body = br#"{"spec":{"clusterIP":"a","clusterIP":"b","ports":[{"port":1,"port":2}]}}"#;
        assert_eq!(
            duplicate_fields(body),
            vec!["spec.clusterIP", "spec.ports[0].port"]
        );
        assert!(duplicate_fields(br#"{"a":{"b":1},"c":{"b":2}}"#).is_empty());
    }

    #[test]
    fn bodies_decode_from_json_and_yaml_and_reject_garbage() {
        let y = decode_text(
            BodyFormat::Yaml,
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        )
        .unwrap();
        assert_eq!(y["metadata"]["name"], "x");
        assert_eq!(
            decode_text(BodyFormat::Json, b"{nope").unwrap_err().code(),
            400
        );
        assert_eq!(
            decode_text(BodyFormat::Json, b"[1]").unwrap_err().code(),
            400
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("application/cbor"))
                .unwrap_err()
                .code(),
            415
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            BodyFormat::Json
        );
    }

    #[test]
    fn type_errors_are_bad_requests_with_upstream_prefix() {
        let v: Value = serde_json::from_str(r#"{"spec":{"ports":"nope"}}"#).unwrap();
        let err = decode_typed::<Service>(v, "Service", "v1").unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(
            err.to_string()
                .starts_with(r#"Service in version "v1" cannot be handled as a Service: "#)
        );
    }
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    #[test]
    fn yaml_nested_past_ten_thousand_levels_is_a_400_before_parsing() {
        for body in [
            format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("a:\n{}x\n", "- ".repeat(100_000)),
            format!("{}\n", "{a: ".repeat(50_000)),
        ] {
            let started = std::time::Instant::now();
            let err = decode_text(BodyFormat::Yaml, body.as_bytes()).unwrap_err();
            assert_eq!(err.code(), 400);
            assert!(
                err.to_string()
                    .starts_with("error converting YAML to JSON: yaml: line "),
                "{err}"
            );
            assert!(
                err.to_string().ends_with("exceeded max depth of 10000"),
                "{err}"
            );
            // The quadratic parse of this body took 16 s; the pre-scan is linear.
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
        }
    }

    #[test]
    fn deeply_nested_json_is_a_400() {
        let body = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let err = decode_text(BodyFormat::Json, body.as_bytes()).unwrap_err();
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn yaml_deeper_than_the_decoder_accepts_is_refused_before_libyaml_scans_it() {
        // 9,000 levels and 100,000 tokens inside: libyaml's scan took 15 s (debug build).
        let body = format!(
            "a: {}{}{}",
            "[".repeat(9_000),
            "1,".repeat(100_000),
            "]".repeat(9_000)
        );
        let started = std::time::Instant::now();
        let err = decode_text(BodyFormat::Yaml, body.as_bytes()).unwrap_err();
        assert_eq!(err.code(), 400);
        assert_eq!(
            err.to_string(),
            "error converting YAML to JSON: recursion limit exceeded at line 1"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // 100 levels still decode.
        let body = format!("a: {}{}", "[".repeat(100), "]".repeat(100));
        assert!(decode_text(BodyFormat::Yaml, body.as_bytes()).is_ok());
    }
}
