//! Pure Kubernetes API machinery, independent of any one kind.
//!
//! - [`field`]: field errors rendered exactly as Go renders them.
//! - [`status`]: every API failure ([`status::ApiError`]) with its code, reason and message.
//! - [`validation`]: names, labels, annotations, object meta.
//! - [`selector`]: label and field selectors.
//! - [`decode`]: request bodies (JSON, YAML) into values and typed objects, strict field checks.
//! - [`depth`]: a linear pre-scan that refuses YAML nested deeper than upstream's 10,000 levels.
//! - [`protobuf`]: the Kubernetes protobuf envelope for the kinds kubectl 1.32+ sends that way.
//! - [`schema`]: list and map merge semantics of our kinds (patch strategies, list-map keys).
//! - [`patch`]: JSON merge patch, JSON patch and strategic merge patch.
//! - [`apply`]: server-side apply: managed fields, ownership and conflicts.

pub mod apply;
pub mod decode;
pub mod depth;
pub mod field;
pub mod patch;
pub mod protobuf;
pub mod schema;
pub mod selector;
pub mod status;
pub mod validation;
