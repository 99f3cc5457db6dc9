//! The Kubernetes protobuf envelope (`application/vnd.kubernetes.protobuf`) for request bodies.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` message whose `raw` field holds
//! the `k8s.io/api` message (types from the `k8s-pb` crate). kubectl 1.32+ sends its typed
//! generators this way (`kubectl create namespace|configmap|service ...`), a `DeleteOptions`
//! body with `kubectl delete`/`drain`, and an `Eviction` with `kubectl drain`.
//!
//! Every kind we serve, `DeleteOptions`, `policy/v1 Eviction` and the review kinds of
//! `kubectl auth can-i|whoami` are turned into the JSON upstream would store for them: the field
//! tables in [`generated`] (written by `scripts/gen-protobuf-json` from the k8s-pb messages and
//! the Go types of k8s.io/api) give each field its JSON name and Go's `omitempty` rule, and the
//! types whose JSON is not a struct (`Time`, `MicroTime`, `Duration`, `FieldsV1`, `Quantity`,
//! `IntOrString`, `RawExtension`, byte fields) are written here by hand.
//!
//! Go's `omitempty` matters because proto2 carries every non-pointer field a Go client has, zero
//! or not: kubectl sends `generateName: ""` and a Service's `nodePort: 0`. Upstream decodes them
//! into Go values and its JSON encoder drops the zeros again; so do we, so a protobuf create
//! stores the same object as a JSON one. Pointer fields (`*bool`, `*int32`) keep the zero the
//! client sent, and fields without `omitempty` (`port`, `containerPort`) are always written.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use serde_json::{Map, Value};

use crate::decode::ACCEPTED_MEDIA_TYPES;
use crate::status::ApiError;

mod generated;

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

fn bad(msg: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("error decoding protobuf body: {msg}"))
}

/// A k8s-pb value rendered as the JSON upstream writes for it.
pub trait ToJson {
    /// The JSON value (`Null` for a value upstream writes as `null`, which is then left out).
    fn to_json(&self) -> Value;
}

/// How Go renders a scalar field it decoded from protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A Go pointer: written whenever the client sent it, zero or not.
    Pointer,
    /// A Go value with `omitempty`: written only when not zero.
    OmitEmpty,
    /// A Go value without `omitempty`: always written (zero when the client sent nothing).
    Always,
}

/// A scalar protobuf field type and its Go zero value.
pub trait Scalar: ToJson + Default {
    /// Whether this is Go's zero value (`""`, `0`, `false`).
    fn is_zero(&self) -> bool;
}

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl ToJson for $t {
            fn to_json(&self) -> Value {
                Value::from(*self)
            }
        }
        impl Scalar for $t {
            fn is_zero(&self) -> bool {
                *self == <$t>::default()
            }
        }
    )*};
}
scalar!(i32, i64, u32, u64, bool, f32, f64);

impl ToJson for String {
    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
}

impl Scalar for String {
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(ToJson::to_json).collect())
    }
}

impl<V: ToJson> ToJson for BTreeMap<String, V> {
    fn to_json(&self) -> Value {
        Value::Object(self.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
    }
}

fn base64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The JSON object of a message under construction (used by [`generated`]).
pub struct Fields(pub Map<String, Value>);

impl Fields {
    /// A scalar field by its Go [`Rule`].
    pub fn scalar<T: Scalar>(&mut self, key: &str, v: &Option<T>, rule: Rule) {
        let written = match (v, rule) {
            (Some(v), Rule::Pointer) => Some(v.to_json()),
            (Some(v), Rule::OmitEmpty) if !v.is_zero() => Some(v.to_json()),
            (Some(v), Rule::Always) => Some(v.to_json()),
            (None, Rule::Always) => Some(T::default().to_json()),
            _ => None,
        };
        if let Some(v) = written {
            self.0.insert(key.into(), v);
        }
    }

    /// A byte field (base64 in JSON, as Go's `[]byte`).
    pub fn bytes(&mut self, key: &str, v: &Option<Vec<u8>>, rule: Rule) {
        let written = match (v, rule) {
            (Some(v), Rule::OmitEmpty) if v.is_empty() => None,
            (Some(v), _) => Some(base64(v)),
            (None, Rule::Always) => Some(Value::Null),
            (None, _) => None,
        };
        if let Some(v) = written {
            self.0.insert(key.into(), v);
        }
    }

    /// A message field: written when sent (a Go struct is never "empty"), unless it renders as
    /// `null` (a zero `Time`).
    pub fn message<T: ToJson>(&mut self, key: &str, v: &Option<T>) {
        if let Some(v) = v {
            let v = v.to_json();
            if !v.is_null() {
                self.0.insert(key.into(), v);
            }
        }
    }

    /// A repeated field: written when not empty, or always (`[]`) without `omitempty`.
    pub fn list<T: ToJson>(&mut self, key: &str, v: &[T], required: bool) {
        if required || !v.is_empty() {
            self.0.insert(
                key.into(),
                Value::Array(v.iter().map(ToJson::to_json).collect()),
            );
        }
    }

    /// A repeated byte field.
    pub fn list_bytes(&mut self, key: &str, v: &[Vec<u8>], required: bool) {
        if required || !v.is_empty() {
            self.0.insert(
                key.into(),
                Value::Array(v.iter().map(|b| base64(b)).collect()),
            );
        }
    }

    /// A map field: written when not empty, or always without `omitempty`.
    pub fn map<V: ToJson>(&mut self, key: &str, v: &BTreeMap<String, V>, required: bool) {
        if required || !v.is_empty() {
            self.0.insert(key.into(), v.to_json());
        }
    }

    /// A map of byte values (`binaryData`).
    pub fn map_bytes(&mut self, key: &str, v: &BTreeMap<String, Vec<u8>>, required: bool) {
        if required || !v.is_empty() {
            let m = v.iter().map(|(k, b)| (k.clone(), base64(b))).collect();
            self.0.insert(key.into(), Value::Object(m));
        }
    }

    /// An embedded Go struct: its fields are the parent's (`Volume`'s `VolumeSource`).
    pub fn inline<T: ToJson>(&mut self, v: &Option<T>) {
        if let Some(Value::Object(m)) = v.as_ref().map(ToJson::to_json) {
            self.0.extend(m);
        }
    }
}

/// `metav1.Time`: RFC 3339 in seconds; an empty message is Go's zero time, written `null`.
impl ToJson for meta::Time {
    fn to_json(&self) -> Value {
        timestamp(self.seconds, self.nanos, false)
    }
}

/// `metav1.MicroTime`: RFC 3339 with exactly six fractional digits.
impl ToJson for meta::MicroTime {
    fn to_json(&self) -> Value {
        timestamp(self.seconds, self.nanos, true)
    }
}

fn timestamp(seconds: Option<i64>, nanos: Option<i32>, micro: bool) -> Value {
    if seconds.is_none() && nanos.is_none() {
        return Value::Null;
    }
    let nanos = nanos.unwrap_or(0);
    let Ok(ts) =
        k8s_openapi::jiff::Timestamp::new(seconds.unwrap_or(0), if micro { nanos } else { 0 })
    else {
        return Value::Null;
    };
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Value::String(if micro {
        format!("{base}.{:06}Z", nanos / 1000)
    } else {
        format!("{base}Z")
    })
}

/// `metav1.Duration`: Go's `time.Duration.String()` (`1h2m3.5s`, `300ms`).
impl ToJson for meta::Duration {
    fn to_json(&self) -> Value {
        Value::String(go_duration(self.duration.unwrap_or(0)))
    }
}

/// Go's `time.Duration.String()`.
fn go_duration(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let sign = if d < 0 { "-" } else { "" };
    let u = d.unsigned_abs();
    let frac = |value: u64, unit: u64| -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let f = format!("{rest:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 1_000));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 1_000_000));
    }
    let secs = u / 1_000_000_000;
    let sub = u % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let seconds = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    if h > 0 {
        format!("{sign}{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{sign}{m}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}

/// `metav1.FieldsV1`: its raw bytes are JSON.
impl ToJson for meta::FieldsV1 {
    fn to_json(&self) -> Value {
        raw_json(self.raw.as_deref())
    }
}

/// `runtime.RawExtension`: its raw bytes are the embedded object's JSON.
impl ToJson for k8s_pb::apimachinery::pkg::runtime::RawExtension {
    fn to_json(&self) -> Value {
        raw_json(self.raw.as_deref())
    }
}

fn raw_json(raw: Option<&[u8]>) -> Value {
    match raw {
        None | Some([]) => Value::Null,
        Some(b) => serde_json::from_slice(b).unwrap_or_else(|_| base64(b)),
    }
}

/// `resource.Quantity`: its string form.
impl ToJson for k8s_pb::apimachinery::pkg::api::resource::Quantity {
    fn to_json(&self) -> Value {
        Value::String(self.string.clone().unwrap_or_default())
    }
}

/// `intstr.IntOrString`: a number (type 0) or a string (type 1).
impl ToJson for k8s_pb::apimachinery::pkg::util::intstr::IntOrString {
    fn to_json(&self) -> Value {
        match self.r#type.unwrap_or(0) {
            1 => Value::from(self.str_val.clone().unwrap_or_default()),
            _ => Value::from(self.int_val.unwrap_or(0)),
        }
    }
}

/// The envelope's type and the message bytes.
struct Envelope {
    api_version: String,
    kind: String,
    raw: Vec<u8>,
}

fn envelope(body: &[u8]) -> Result<Envelope, ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s\\0 prefix"))?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(rest).map_err(bad)?;
    if unknown
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(bad("content encodings are not supported"));
    }
    let tm = unknown.type_meta.unwrap_or_default();
    Ok(Envelope {
        api_version: tm.api_version.unwrap_or_default(),
        kind: tm.kind.unwrap_or_default(),
        raw: unknown.raw.unwrap_or_default(),
    })
}

fn message<M: Message + Default + ToJson>(raw: &[u8]) -> Result<Value, ApiError> {
    Ok(M::decode(raw).map_err(bad)?.to_json())
}

/// The JSON of a `raw` message of `api_version`/`kind`, `None` for a kind not decoded here.
fn message_json(api_version: &str, kind: &str, raw: &[u8]) -> Option<Result<Value, ApiError>> {
    use k8s_pb::api::{
        apps, authentication, authorization, autoscaling, coordination, discovery, networking,
        policy,
    };
    Some(match (api_version, kind) {
        ("v1", "Namespace") => message::<core::Namespace>(raw),
        ("v1", "Node") => message::<core::Node>(raw),
        ("v1", "Pod") => message::<core::Pod>(raw),
        ("v1", "Service") => message::<core::Service>(raw),
        ("v1", "Endpoints") => message::<core::Endpoints>(raw),
        ("v1", "ConfigMap") => message::<core::ConfigMap>(raw),
        ("v1", "Event") => message::<core::Event>(raw),
        ("discovery.k8s.io/v1", "EndpointSlice") => message::<discovery::v1::EndpointSlice>(raw),
        ("coordination.k8s.io/v1", "Lease") => message::<coordination::v1::Lease>(raw),
        ("networking.k8s.io/v1", "ServiceCIDR") => message::<networking::v1::ServiceCIDR>(raw),
        ("networking.k8s.io/v1", "IPAddress") => message::<networking::v1::IPAddress>(raw),
        ("apps/v1", "Deployment") => message::<apps::v1::Deployment>(raw),
        ("apps/v1", "ReplicaSet") => message::<apps::v1::ReplicaSet>(raw),
        ("autoscaling/v1", "Scale") => message::<autoscaling::v1::Scale>(raw),
        ("policy/v1", "Eviction") => message::<policy::v1::Eviction>(raw),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            message::<authorization::v1::SelfSubjectAccessReview>(raw)
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            message::<authorization::v1::SelfSubjectRulesReview>(raw)
        }
        ("authentication.k8s.io/v1", "SelfSubjectReview") => {
            message::<authentication::v1::SelfSubjectReview>(raw)
        }
        (_, "DeleteOptions") => message::<meta::DeleteOptions>(raw),
        _ => return None,
    })
}

/// `apiVersion` and `kind` first, then the message's fields.
fn with_type(api_version: &str, kind: &str, v: Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), api_version.into());
    out.insert("kind".into(), kind.into());
    if let Value::Object(m) = v {
        out.extend(
            m.into_iter()
                .filter(|(k, _)| k != "apiVersion" && k != "kind"),
        );
    }
    Value::Object(out)
}

/// Decodes a protobuf body for a resource of `api_version`/`kind` into its JSON form.
pub fn decode(body: &[u8], api_version: &str, kind: &str) -> Result<Value, ApiError> {
    let env = envelope(body)?;
    let (av, k) = (env.api_version.as_str(), env.kind.as_str());
    if (!av.is_empty() && av != api_version) || (!k.is_empty() && k != kind) {
        return Err(ApiError::BadRequest(format!(
            "the object provided is unrecognized (must be of type {kind}): {av}, Kind={k}"
        )));
    }
    match message_json(api_version, kind, &env.raw) {
        Some(v) => Ok(with_type(api_version, kind, v?)),
        None => Err(ApiError::UnsupportedMediaType(format!(
            "{ACCEPTED_MEDIA_TYPES} (protobuf is not decoded for {api_version} {kind}; send it as JSON or YAML)"
        ))),
    }
}

/// Decodes a protobuf `DeleteOptions` body (`kubectl delete`/`drain` 1.32+). Clients send it
/// under the group version of the resource (`v1`, `apps/v1`) or `meta.k8s.io/v1`; any is
/// accepted, as upstream registers `DeleteOptions` in every group version.
pub fn decode_delete_options(body: &[u8]) -> Result<Value, ApiError> {
    let env = envelope(body)?;
    if !env.kind.is_empty() && env.kind != "DeleteOptions" {
        return Err(ApiError::BadRequest(format!(
            "the object provided is unrecognized (must be of type DeleteOptions): {}, Kind={}",
            env.api_version, env.kind
        )));
    }
    let av = if env.api_version.is_empty() {
        "meta.k8s.io/v1".to_string()
    } else {
        env.api_version
    };
    let v = message::<meta::DeleteOptions>(&env.raw)?;
    Ok(with_type(&av, "DeleteOptions", v))
}

/// Encodes a message in the envelope (for tests and tools).
pub fn encode(api_version: &str, kind: &str, msg: &impl Message) -> Vec<u8> {
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

#[cfg(test)]
mod tests;
