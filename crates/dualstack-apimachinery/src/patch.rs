//! The three patch types of `PATCH` requests: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
//! and strategic merge patch (`k8s.io/apimachinery/pkg/util/strategicpatch`), plus the
//! `Content-Type` → [`PatchType`] mapping (server-side apply lives in [`crate::apply`]).
//!
//! Strategic merge patch, as upstream applies it on the server (`MergeParallelList` and
//! `IgnoreUnmatchedNulls` on):
//!
//! - maps merge recursively; `null` deletes a key (and is dropped where nothing is deleted);
//! - lists follow [`schema::ListStrategy`]: `Replace` lists are replaced, `Merge { key }` lists
//!   merge elements by the merge key (new ones are added, `{"$patch": "delete", key: v}` deletes,
//!   an element `{"$patch": "replace"}` makes the rest of the patch list the whole list),
//!   `MergePrimitives` lists are unions;
//! - `{"$patch": "replace"}` in a map replaces the map, `{"$patch": "delete"}` deletes it
//!   (upstream leaves `{}`, which decodes to the same object for maps and omitempty fields);
//! - `$retainKeys: [..]` keeps only the listed keys of the map it is in;
//! - `$deleteFromPrimitiveList/<field>: [..]` removes those values from a scalar list;
//! - `$setElementOrder/<field>: [..]` orders the merged list: the listed elements in that order,
//!   elements only on the server interleaved by their live position.
//!
//! Element order without `$setElementOrder` follows upstream too: patch elements (merged or new)
//! come in patch order and server-only elements keep their live order, placed before a patch
//! element only when both were live and the server element came first; so an element added by
//! a bare patch (`kubectl patch`, the Python client, kube-rs) lands *before* the live ones.
//! Upstream's `$setElementOrder` step compares server-only elements with the live list as it
//! stands after deletions and additions (an accident of Go slice aliasing that its tests pin
//! down); we use that list on purpose, so new elements go after server-only ones.
//!
//! Directive keys never reach the result, not even inside values added wholesale.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::schema::{self, FieldSchema, ListStrategy};
use crate::status::ApiError;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// The `Content-Type`s a `PATCH` may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// Every supported type, in upstream's order (used in the 415 message).
    pub const ALL: [PatchType; 4] = [
        PatchType::Json,
        PatchType::Merge,
        PatchType::Strategic,
        PatchType::Apply,
    ];

    /// The media type.
    pub fn as_str(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }

    /// The patch type of a `Content-Type` header (parameters such as `; charset=utf-8` ignored);
    /// anything else is 415 listing the supported types, as upstream.
    pub fn from_content_type(content_type: &str) -> Result<PatchType, ApiError> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        PatchType::ALL
            .into_iter()
            .find(|t| t.as_str() == media)
            .ok_or_else(|| {
                let accepted: Vec<&str> = PatchType::ALL.iter().map(|t| t.as_str()).collect();
                ApiError::UnsupportedMediaType(accepted.join(", "))
            })
    }
}

impl std::fmt::Display for PatchType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed for its type (HTTP 400 `BadRequest`).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well formed but cannot be applied to this object: a failed `test`, a path
    /// that does not exist, an element without its merge key (HTTP 422; upstream's message is
    /// `the server rejected our request due to an error in our request` with this text as the
    /// cause).
    #[error("{0}")]
    Unprocessable(String),
    /// The patch has more operations than upstream allows (HTTP 413 `RequestEntityTooLarge`).
    #[error("{0}")]
    TooLarge(String),
}

impl PatchError {
    /// The HTTP status code upstream answers with.
    pub fn code(&self) -> u16 {
        match self {
            PatchError::Malformed(_) => 400,
            PatchError::Unprocessable(_) => 422,
            PatchError::TooLarge(_) => 413,
        }
    }
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut doc = target.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

/// Most operations a JSON patch may have (the apiserver's `maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Most bytes the `copy` operations of one JSON patch may add together (the apiserver's
/// `JSONPatchMaxCopyBytes`, the 3 MiB request limit, given to json-patch as
/// `AccumulatedCopySizeLimit`).
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

/// RFC 6902 JSON patch, all six operations including `test`. A body that is not a list of
/// operations is [`PatchError::Malformed`]; more than [`MAX_JSON_PATCH_OPERATIONS`] operations is
/// [`PatchError::TooLarge`]; an operation that fails is [`PatchError::Unprocessable`] and
/// nothing is applied.
///
/// Operations are applied one at a time and every `copy` adds the encoded size of what it copies
/// to a running total: once the total passes [`MAX_JSON_PATCH_COPY_BYTES`] the patch stops with
/// upstream's error, so copies of a growing value into itself cannot double the memory again and
/// again before any check (the total is counted before the copy is made).
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    json_patch_limited(target, patch, MAX_JSON_PATCH_COPY_BYTES)
}

/// [`json_patch`] with a chosen copy limit (tests).
fn json_patch_limited(
    target: &Value,
    patch: &Value,
    copy_limit: usize,
) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    if ops.0.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooLarge(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            ops.0.len()
        )));
    }
    let mut doc = target.clone();
    let mut copied: usize = 0;
    for (i, op) in ops.0.iter().enumerate() {
        if let json_patch::PatchOperation::Copy(copy) = op {
            // A missing source is left to json-patch, which reports it.
            if let Some(source) = doc.pointer(copy.from.as_str()) {
                copied = copied.saturating_add(encoded_len(source));
                if copied > copy_limit {
                    return Err(PatchError::Unprocessable(format!(
                        "Unable to complete the copy, the accumulated size increase of copy is {copied}, exceeding the limit {copy_limit}"
                    )));
                }
            }
        }
        json_patch::patch_unsafe(&mut doc, std::slice::from_ref(op)).map_err(|e| {
            PatchError::Unprocessable(format!(
                "operation '/{i}' failed at path '{}': {}",
                e.path, e.kind
            ))
        })?;
    }
    Ok(doc)
}

/// The length of `value` encoded as compact JSON, counted without building the text.
fn encoded_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Strategic merge patch of an object of (`api_version`, `kind`), list semantics from
/// [`schema`]. Kinds we do not know get upstream's defaults (lists replaced, maps merged).
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    api_version: &str,
    kind: &str,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Malformed("invalid JSON document".into()));
    };
    let original = target.as_object().cloned().unwrap_or_default();
    let merged = merge_map(original, patch.clone(), schema::root(api_version, kind))?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

/// Merges `patch` into `original` (a struct of `definition`, or a map). `None`: the patch says
/// `$patch: delete`.
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    definition: Option<&'static str>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    if let Some(directive) = patch.shift_remove(DIRECTIVE) {
        match directive.as_str() {
            Some("replace") => return merge_map(Map::new(), patch, definition),
            Some("delete") => return Ok(None),
            Some("merge") => {}
            _ => return Err(bad_patch_type(&directive, &patch)),
        }
    }
    if let Some(keys) = patch.shift_remove(RETAIN_KEYS) {
        retain_keys(&mut original, &patch, &keys)?;
    }

    let ordered: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive in ordered {
        let Some(Value::Array(order)) = patch.shift_remove(&directive) else {
            return Err(PatchError::Malformed(
                "invalid patch format of setElementOrder list".into(),
            ));
        };
        let name = &directive[SET_ELEMENT_ORDER.len()..];
        let field = schema::field(definition, name);
        let live = match original.get(name) {
            Some(Value::Array(live)) => Some(live.clone()),
            _ => None,
        };
        let patched = match patch.shift_remove(name) {
            Some(Value::Array(list)) => Some(list),
            Some(Value::Null) | None => None,
            Some(other) => return Err(expected("list", &other)),
        };
        let (merged, server_order) = match (live, patched) {
            (Some(live), None) => (live.clone(), live),
            (None, Some(list)) => merge_list(Vec::new(), list, field)?,
            (Some(live), Some(list)) => merge_list(live, list, field)?,
            (None, None) => continue,
        };
        let identity = Identity::of(field);
        let ordered = order_by_set_element_order(merged, &order, &server_order, identity);
        original.insert(name.to_string(), Value::Array(ordered));
    }

    for (key, value) in patch {
        if let Some(name) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Value::Array(remove) = value else {
                return Err(PatchError::Malformed(
                    "invalid patch format of primitive list".into(),
                ));
            };
            if let Some(Value::Array(list)) = original.get_mut(name) {
                let remove: HashSet<String> = remove.iter().map(canonical).collect();
                list.retain(|v| !remove.contains(&canonical(v)));
            }
            continue;
        }
        if key.starts_with('$') {
            // An unknown directive: never a field name of ours, never kept.
            continue;
        }
        if value.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let field = schema::field(definition, &key);
        let current = original.get_mut(&key).map(std::mem::take);
        let merged = match (current, value) {
            (Some(Value::Object(live)), Value::Object(patch)) => {
                let replace = field.property.and_then(|p| p.patch_strategy) == Some("replace");
                let live = if replace { Map::new() } else { live };
                merge_map(live, patch, field.child())?.map(Value::Object)
            }
            (Some(Value::Array(live)), Value::Array(patch)) => {
                Some(Value::Array(merge_list(live, patch, field)?.0))
            }
            (_, value) => clean(value, field)?,
        };
        match merged {
            Some(v) => {
                original.insert(key, v);
            }
            None => {
                original.shift_remove(&key);
            }
        }
    }
    Ok(Some(original))
}

/// A patch value for a place with nothing to merge with: directives processed, `null`s dropped.
fn clean(value: Value, field: FieldSchema) -> Result<Option<Value>, PatchError> {
    Ok(match value {
        Value::Null => None,
        Value::Object(m) => merge_map(Map::new(), m, field.child())?.map(Value::Object),
        Value::Array(list) => Some(Value::Array(merge_list(Vec::new(), list, field)?.0)),
        scalar => Some(scalar),
    })
}

/// How elements of a list are identified: by a merge key, or by value for scalars.
#[derive(Clone, Copy)]
enum Identity {
    Key(&'static str),
    Value,
}

impl Identity {
    fn of(field: FieldSchema) -> Identity {
        match field.list_strategy() {
            ListStrategy::Merge { key } => Identity::Key(key),
            _ => Identity::Value,
        }
    }

    /// The hashable identity of an element (`None`: an element without its merge key, which
    /// matches nothing).
    fn id(self, v: &Value) -> Option<String> {
        match self {
            Identity::Key(key) => v.get(key).map(canonical),
            Identity::Value => Some(canonical(v)),
        }
    }

    /// Position of each identity in `list` (the first one, as a linear search finds it), so
    /// that ordering and merging are `n log n` rather than quadratic.
    fn index(self, list: &[Value]) -> Positions {
        let mut map = HashMap::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            if let Some(id) = self.id(v) {
                map.entry(id).or_insert(i);
            }
        }
        Positions {
            identity: self,
            map,
        }
    }
}

/// First positions of the elements of a list by [`Identity`].
struct Positions {
    identity: Identity,
    map: HashMap<String, usize>,
}

impl Positions {
    fn of(&self, item: &Value) -> Option<usize> {
        self.identity
            .id(item)
            .and_then(|id| self.map.get(&id).copied())
    }
}

/// A string equal for values [`same`] calls equal: numbers by their `f64` value, object keys
/// sorted.
fn canonical(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Number(n) => match n.as_f64() {
                Some(f) => out.push_str(&format!("n{f:e}")),
                None => out.push_str(&format!("n{n}")),
            },
            Value::String(s) => {
                out.push('s');
                out.push_str(&Value::from(s.as_str()).to_string());
            }
            Value::Array(items) => {
                out.push('[');
                for item in items {
                    write(item, out);
                    out.push(',');
                }
                out.push(']');
            }
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for k in keys {
                    out.push_str(&Value::from(k.as_str()).to_string());
                    out.push(':');
                    write(&map[k], out);
                    out.push(',');
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// Merges a patch list into a live list. Returns the merged list and the order server-only
/// elements are compared against by a `$setElementOrder` directive (the live list after
/// deletions, then the added elements).
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: FieldSchema,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    match field.list_strategy() {
        ListStrategy::Replace => {
            let child = FieldSchema { property: None };
            let mut out = Vec::with_capacity(patch.len());
            for element in patch {
                match element {
                    Value::Object(m) => {
                        if let Some(m) = merge_map(Map::new(), m, field.child())? {
                            out.push(Value::Object(m));
                        }
                    }
                    Value::Array(_) => out.extend(clean(element, child)?),
                    other => out.push(other),
                }
            }
            Ok((out, original))
        }
        ListStrategy::MergePrimitives => Ok(merge_primitives(original, patch)),
        ListStrategy::Merge { key } => merge_keyed(original, patch, key, field.child()),
    }
}

fn merge_primitives(original: Vec<Value>, patch: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    let replace = patch
        .iter()
        .any(|v| v.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"));
    let patch: Vec<Value> = patch.into_iter().filter(|v| !v.is_object()).collect();
    if replace {
        return (dedup(patch), original);
    }
    let original = dedup(original);
    let mut merged = original.clone();
    let mut seen: HashSet<String> = merged.iter().map(canonical).collect();
    for v in &patch {
        if seen.insert(canonical(v)) {
            merged.push(v.clone());
        }
    }
    let ordered = normalize_order(merged.clone(), &patch, &original, Identity::Value);
    (ordered, merged)
}

/// Merges a list by merge key. Elements are found through a hash index of the live list (slots
/// emptied by deletions), so a patch of `n` elements into a list of `m` costs `n + m`, not
/// `n · m`.
fn merge_keyed(
    original: Vec<Value>,
    patch: Vec<Value>,
    key: &'static str,
    element: Option<&'static str>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let identity = Identity::Key(key);
    let mut slots: Vec<Option<Value>> = original.into_iter().map(Some).collect();
    // Every slot holding an element with a given merge key, in list order.
    let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, v) in slots.iter().enumerate() {
        if let Some(id) = v.as_ref().and_then(|v| identity.id(v)) {
            by_key.entry(id).or_default().push(i);
        }
    }
    let mut replace = false;
    let mut rest = Vec::with_capacity(patch.len());
    for item in patch {
        let Value::Object(map) = item else {
            return Err(expected("map", &item));
        };
        match map.get(DIRECTIVE) {
            None => rest.push(map),
            Some(Value::String(d)) if d == "delete" => {
                let Some(value) = map.get(key) else {
                    return Err(no_merge_key(&map, key));
                };
                for i in by_key.remove(&canonical(value)).unwrap_or_default() {
                    slots[i] = None;
                }
            }
            Some(Value::String(d)) if d == "replace" => replace = true,
            Some(Value::String(d)) if d == "merge" => {
                return Err(PatchError::Unprocessable(
                    "merging lists cannot yet be specified in the patch".into(),
                ));
            }
            Some(other) => return Err(bad_patch_type(other, &map)),
        }
    }
    if replace {
        let mut list = Vec::with_capacity(rest.len());
        for map in rest {
            list.extend(merge_map(Map::new(), map, element)?.map(Value::Object));
        }
        return Ok((list.clone(), list));
    }

    let live: Vec<Value> = slots.iter().flatten().cloned().collect();
    let mut patch_order = Vec::with_capacity(rest.len());
    for map in rest {
        let Some(value) = map.get(key).cloned() else {
            return Err(no_merge_key(&map, key));
        };
        let id = canonical(&value);
        patch_order.push(Value::Object(Map::from_iter([(key.to_string(), value)])));
        let found = by_key
            .get(&id)
            .and_then(|at| at.iter().copied().find(|&i| slots[i].is_some()));
        match found {
            Some(i) => {
                let live = match slots[i].take() {
                    Some(Value::Object(live)) => live,
                    Some(other) => return Err(expected("map", &other)),
                    None => Map::new(),
                };
                slots[i] = merge_map(live, map, element)?.map(Value::Object);
            }
            None => {
                if let Some(m) = merge_map(Map::new(), map, element)? {
                    by_key.entry(id).or_default().push(slots.len());
                    slots.push(Some(Value::Object(m)));
                }
            }
        }
    }
    let original: Vec<Value> = slots.into_iter().flatten().collect();
    let ordered = normalize_order(original.clone(), &patch_order, &live, identity);
    Ok((ordered, original))
}

/// Upstream's `normalizeElementOrder`: elements named by the patch in patch order, the others in
/// live order, interleaved by live position.
fn normalize_order(
    merged: Vec<Value>,
    patch: &[Value],
    live: &[Value],
    identity: Identity,
) -> Vec<Value> {
    order_by_set_element_order(merged, patch, live, identity)
}

/// `$setElementOrder`: the listed elements in that order, server-only ones interleaved.
fn order_by_set_element_order(
    merged: Vec<Value>,
    order: &[Value],
    server_order: &[Value],
    identity: Identity,
) -> Vec<Value> {
    let order = identity.index(order);
    let server_order = identity.index(server_order);
    let (mut listed, mut server_only): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|v| order.of(v).is_some());
    sort_by_order(&mut listed, &order);
    sort_by_order(&mut server_only, &server_order);
    merge_sorted(server_only, listed, &server_order)
}

fn sort_by_order(items: &mut Vec<Value>, order: &Positions) {
    let mut keyed: Vec<(usize, Value)> = items
        .drain(..)
        .map(|v| (order.of(&v).unwrap_or(usize::MAX), v))
        .collect();
    keyed.sort_by_key(|(at, _)| *at);
    items.extend(keyed.into_iter().map(|(_, v)| v));
}

/// Upstream's `mergeSortedSlice`: takes from `left` (server-only) only when both elements are in
/// `server_order` and the left one comes first there.
fn merge_sorted(left: Vec<Value>, right: Vec<Value>, server_order: &Positions) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (server_order.of(l), server_order.of(r)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
    out
}

fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    keys: &Value,
) -> Result<(), PatchError> {
    let malformed = || PatchError::Malformed("invalid patch format of retainKeys".into());
    let Value::Array(keys) = keys else {
        return Err(malformed());
    };
    let keys: Vec<&str> = keys
        .iter()
        .map(Value::as_str)
        .collect::<Option<_>>()
        .ok_or_else(malformed)?;
    for (k, v) in patch {
        if v.is_null() || k.starts_with('$') {
            continue;
        }
        if !keys.contains(&k.as_str()) {
            return Err(malformed());
        }
    }
    original.retain(|k, _| keys.contains(&k.as_str()));
    Ok(())
}

fn dedup(list: Vec<Value>) -> Vec<Value> {
    let mut seen = HashSet::with_capacity(list.len());
    list.into_iter()
        .filter(|v| seen.insert(canonical(v)))
        .collect()
}

fn no_merge_key(map: &Map<String, Value>, key: &str) -> PatchError {
    PatchError::Unprocessable(format!(
        "map: {} does not contain declared merge key: {key}",
        Value::Object(map.clone())
    ))
}

fn bad_patch_type(directive: &Value, map: &Map<String, Value>) -> PatchError {
    let shown = directive
        .as_str()
        .map_or_else(|| directive.to_string(), str::to_string);
    PatchError::Unprocessable(format!(
        "unknown patch type: {shown} in map: {}",
        Value::Object(map.clone())
    ))
}

fn expected(what: &str, got: &Value) -> PatchError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    };
    PatchError::Unprocessable(format!("expected a {what}, but received a {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ports: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "ports": ports,
                "selector": {"app": "web"},
                "clusterIPs": ["10.96.0.10", "fd00:10:96::a"],
                "ipFamilies": ["IPv4", "IPv6"],
                "ipFamilyPolicy": "RequireDualStack"
            }
        })
    }

    fn smp(target: &Value, patch: Value) -> Value {
        let api_version = target["apiVersion"].as_str().unwrap();
        let kind = target["kind"].as_str().unwrap();
        let out = strategic_merge_patch(target, &patch, api_version, kind).unwrap();
        assert_no_directives(&out);
        out
    }

    fn assert_no_directives(v: &Value) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    assert!(!k.starts_with('$'), "directive {k} leaked");
                    assert_no_directives(v);
                }
            }
            Value::Array(l) => l.iter().for_each(assert_no_directives),
            _ => {}
        }
    }

    fn port_numbers(svc: &Value) -> Vec<i64> {
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect()
    }

    #[test]
    fn kubectl_client_side_apply_patch_changes_target_port_and_keeps_the_rest_of_the_port() {
        let live =
            service(json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9376}]));
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Service\"}\n"}},
            "spec": {"$setElementOrder/ports": [{"port": 80}], "ports": [{"port": 80, "targetPort": 9090}]}
        });
        let out = smp(&live, patch);
        assert_eq!(
            out["spec"]["ports"],
            json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9090}])
        );
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{\"kind\":\"Service\"}\n"
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            out["spec"]["clusterIPs"],
            json!(["10.96.0.10", "fd00:10:96::a"])
        );
    }

    #[test]
    fn kubectl_deleting_a_port_sends_a_delete_directive_and_the_new_order() {
        let live = service(json!([
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9376},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 9377}
        ]));
        let patch = json!({"spec": {"$setElementOrder/ports": [{"port": 443}], "ports": [{"$patch": "delete", "port": 80}]}});
        let out = smp(&live, patch);
        assert_eq!(
            out["spec"]["ports"],
            json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 9377}])
        );
    }

    #[test]
    fn set_element_order_places_an_added_port_where_the_config_has_it() {
        let live =
            service(json!([{"port": 443, "protocol": "TCP"}, {"port": 80, "protocol": "TCP"}]));
        let patch = json!({"spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 8080}, {"port": 443}],
            "ports": [{"port": 8080, "targetPort": 80}]
        }});
        assert_eq!(port_numbers(&smp(&live, patch)), vec![80, 8080, 443]);
    }

    #[test]
    fn set_element_order_keeps_server_only_elements_by_their_live_position() {
        // upstream's "add map and delete map from merging list" case.
        let live = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
            {"name": "1"}, {"name": "2", "image": "b"}, {"name": "4", "image": "c"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "2"}, {"name": "3"}],
            "containers": [{"name": "3"}, {"name": "1", "$patch": "delete"}]
        }});
        let out = smp(&live, patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "2", "image": "b"}, {"name": "4", "image": "c"}, {"name": "3"}])
        );
    }

    #[test]
    fn a_bare_patch_adds_new_list_elements_before_the_live_ones_as_upstream() {
        let live = service(json!([{"port": 80, "protocol": "TCP"}]));
        let out = smp(
            &live,
            json!({"spec": {"ports": [{"port": 443, "protocol": "TCP"}]}}),
        );
        assert_eq!(port_numbers(&out), vec![443, 80]);
        let out = smp(
            &live,
            json!({"spec": {"ports": [{"port": 80, "name": "http"}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "name": "http"}])
        );
    }

    #[test]
    fn smp_merges_service_ports_by_port_alone() {
        let live = service(json!([{"port": 53, "protocol": "UDP", "name": "dns"}]));
        let out = smp(
            &live,
            json!({"spec": {"ports": [{"port": 53, "protocol": "TCP"}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 53, "protocol": "TCP", "name": "dns"}])
        );
    }

    #[test]
    fn finalizers_are_a_union_and_delete_from_primitive_list_removes_values() {
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "finalizers": ["a.example.com/x", "b.example.com/y"]}});
        let out = smp(
            &live,
            json!({"metadata": {"finalizers": ["c.example.com/z", "a.example.com/x"]}}),
        );
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["c.example.com/z", "a.example.com/x", "b.example.com/y"])
        );
        let kubectl = json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": ["b.example.com/y"],
            "$setElementOrder/finalizers": ["a.example.com/x"]
        }});
        assert_eq!(
            smp(&live, kubectl)["metadata"]["finalizers"],
            json!(["a.example.com/x"])
        );
    }

    #[test]
    fn node_pod_cidrs_merge_as_a_set() {
        let live = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "spec": {"podCIDRs": ["10.244.1.0/24"]}});
        let patch = json!({"spec": {
            "$setElementOrder/podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
            "podCIDRs": ["fd00:10:244:1::/64"]
        }});
        assert_eq!(
            smp(&live, patch)["spec"]["podCIDRs"],
            json!(["10.244.1.0/24", "fd00:10:244:1::/64"])
        );
    }

    #[test]
    fn container_env_merges_by_name_inside_a_container_merged_by_name() {
        let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}]},
            {"name": "sidecar", "image": "side:1"}
        ]}});
        let patch = json!({"spec": {"containers": [{"name": "app", "env": [
            {"name": "B", "value": "2"}, {"name": "A", "$patch": "delete"}, {"name": "C", "value": "3"}
        ]}]}});
        let out = smp(&live, patch);
        assert_eq!(out["spec"]["containers"][0]["image"], "app:1");
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "B", "value": "2"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(
            out["spec"]["containers"][1],
            json!({"name": "sidecar", "image": "side:1"})
        );
    }

    #[test]
    fn node_status_addresses_merge_by_type_and_replace_directive_sets_both_families() {
        let live = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "status": {"addresses": [
            {"type": "InternalIP", "address": "192.0.2.10"}, {"type": "Hostname", "address": "n1"}
        ]}});
        let out = smp(
            &live,
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]}}),
        );
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "192.0.2.11"}, {"type": "Hostname", "address": "n1"}])
        );
        // Dual-stack nodes have two InternalIP entries: merging by type cannot express them,
        // so writers replace the list.
        let replace = json!({"status": {"addresses": [
            {"$patch": "replace"},
            {"type": "InternalIP", "address": "192.0.2.10"},
            {"type": "InternalIP", "address": "2001:db8::10"},
            {"type": "Hostname", "address": "n1"}
        ]}});
        assert_eq!(
            smp(&live, replace)["status"]["addresses"],
            json!([
                {"type": "InternalIP", "address": "192.0.2.10"},
                {"type": "InternalIP", "address": "2001:db8::10"},
                {"type": "Hostname", "address": "n1"}
            ])
        );
    }

    #[test]
    fn pod_status_pod_ips_merge_by_ip() {
        let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}});
        let patch = json!({"status": {
            "$setElementOrder/podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}],
            "podIPs": [{"ip": "fd00:10:244:1::5"}]
        }});
        assert_eq!(
            smp(&live, patch)["status"]["podIPs"],
            json!([{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}])
        );
    }

    #[test]
    fn replace_lists_are_replaced_and_maps_merge() {
        let live = service(json!([{"port": 80, "protocol": "TCP"}]));
        let patch = json!({
            "metadata": {"labels": {"tier": "front"}},
            "spec": {"clusterIPs": ["10.96.0.10"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "selector": {"version": "v2"}}
        });
        let out = smp(&live, patch);
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "tier": "front"})
        );
        assert_eq!(out["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(out["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(
            out["spec"]["selector"],
            json!({"app": "web", "version": "v2"})
        );
    }

    #[test]
    fn null_deletes_a_key_and_is_dropped_where_nothing_exists() {
        let live = service(json!([{"port": 80, "protocol": "TCP"}]));
        let patch = json!({"metadata": {"labels": {"app": null, "new": null}}, "spec": {"ipFamilyPolicy": null,
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10, "bogus": null}}}});
        let out = smp(&live, patch);
        assert_eq!(out["metadata"]["labels"], json!({}));
        assert!(out["spec"].get("ipFamilyPolicy").is_none());
        assert_eq!(
            out["spec"]["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 10}})
        );
    }

    #[test]
    fn patch_directive_replaces_or_deletes_a_map() {
        let live = service(json!([{"port": 80, "protocol": "TCP"}]));
        let out = smp(
            &live,
            json!({"spec": {"selector": {"$patch": "replace", "app": "api"}}}),
        );
        assert_eq!(out["spec"]["selector"], json!({"app": "api"}));
        let out = smp(&live, json!({"metadata": {"labels": {"$patch": "delete"}}}));
        assert!(out["metadata"].get("labels").is_none());
        assert_eq!(out["metadata"]["name"], "web");
    }

    #[test]
    fn retain_keys_clears_the_other_volume_source() {
        let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"volumes": [
            {"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}
        ]}});
        let patch = json!({"spec": {"volumes": [
            {"name": "data", "hostPath": {"path": "/srv"}, "$retainKeys": ["hostPath", "name"]}
        ]}});
        let out = smp(&live, patch);
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "data", "hostPath": {"path": "/srv"}}, {"name": "cfg", "configMap": {"name": "c"}}])
        );
        let bad =
            json!({"spec": {"volumes": [{"name": "data", "nfs": {}, "$retainKeys": ["name"]}]}});
        let err = strategic_merge_patch(&live, &bad, "v1", "Pod").unwrap_err();
        assert_eq!(
            err,
            PatchError::Malformed("invalid patch format of retainKeys".into())
        );
    }

    #[test]
    fn directives_inside_added_values_are_processed_not_copied() {
        let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "app", "image": "app:1"}
        ]}});
        let patch = json!({"spec": {"containers": [{
            "name": "new",
            "image": "new:1",
            "$setElementOrder/env": [{"name": "X"}],
            "env": [{"name": "X", "value": "1"}, {"name": "Y", "$patch": "delete"}],
            "resources": {"$patch": "replace", "limits": {"cpu": "1"}},
            "ports": [{"containerPort": 80, "hostIP": null}]
        }]}});
        let out = smp(&live, patch);
        assert_eq!(
            out["spec"]["containers"][0],
            json!({"name": "new", "image": "new:1", "env": [{"name": "X", "value": "1"}],
                   "resources": {"limits": {"cpu": "1"}}, "ports": [{"containerPort": 80}]})
        );
    }

    #[test]
    fn unknown_kinds_replace_lists() {
        let live = json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"items": [{"name": "a"}]}});
        let out = smp(&live, json!({"spec": {"items": [{"name": "b"}]}}));
        assert_eq!(out["spec"]["items"], json!([{"name": "b"}]));
    }

    #[test]
    fn smp_errors_are_reported() {
        let live = service(json!([{"port": 80, "protocol": "TCP"}]));
        let cases = [
            (
                json!([{"op": "add"}]),
                PatchError::Malformed("invalid JSON document".into()),
            ),
            (
                json!({"spec": {"ports": [{"name": "x"}]}}),
                PatchError::Unprocessable(
                    r#"map: {"name":"x"} does not contain declared merge key: port"#.into(),
                ),
            ),
            (
                json!({"spec": {"selector": {"$patch": "explode"}}}),
                PatchError::Unprocessable("unknown patch type: explode in map: {}".into()),
            ),
            (
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
                PatchError::Malformed("invalid patch format of primitive list".into()),
            ),
            (
                json!({"spec": {"$setElementOrder/ports": {"port": 80}}}),
                PatchError::Malformed("invalid patch format of setElementOrder list".into()),
            ),
        ];
        for (patch, want) in cases {
            assert_eq!(
                strategic_merge_patch(&live, &patch, "v1", "Service").unwrap_err(),
                want,
                "{patch}"
            );
        }
        assert_eq!(PatchError::Malformed(String::new()).code(), 400);
        assert_eq!(PatchError::Unprocessable(String::new()).code(), 422);
    }

    #[test]
    fn json_patch_applies_operations_and_a_failed_test_changes_nothing() {
        let live = service(json!([{"port": 80, "protocol": "TCP"}]));
        let ok = json!([
            {"op": "test", "path": "/spec/ipFamilyPolicy", "value": "RequireDualStack"},
            {"op": "replace", "path": "/spec/ports/0/port", "value": 8080},
            {"op": "add", "path": "/metadata/labels/tier", "value": "front"},
            {"op": "remove", "path": "/spec/selector"}
        ]);
        let out = json_patch(&live, &ok).unwrap();
        assert_eq!(out["spec"]["ports"][0]["port"], 8080);
        assert_eq!(out["metadata"]["labels"]["tier"], "front");
        assert!(out["spec"].get("selector").is_none());

        let failing = json!([
            {"op": "replace", "path": "/spec/ports/0/port", "value": 8080},
            {"op": "test", "path": "/spec/ipFamilyPolicy", "value": "SingleStack"}
        ]);
        let err = json_patch(&live, &failing).unwrap_err();
        assert_eq!(err.code(), 422);
        assert_eq!(
            err.to_string(),
            "operation '/1' failed at path '/spec/ipFamilyPolicy': value did not match"
        );
        let missing =
            json_patch(&live, &json!([{"op": "remove", "path": "/spec/nope"}])).unwrap_err();
        assert_eq!(missing.code(), 422);
        let malformed = json_patch(&live, &json!({"op": "add"})).unwrap_err();
        assert_eq!(malformed.code(), 400);
    }

    #[test]
    fn json_patch_writes_managed_fields_and_resource_version_like_kubectl_migration() {
        let mut live = service(json!([{"port": 80, "protocol": "TCP"}]));
        live["metadata"]["resourceVersion"] = json!("108");
        live["metadata"]["managedFields"] =
            json!([{"manager": "kubectl-client-side-apply", "operation": "Update"}]);
        let patch = json!([
            {"op": "replace", "path": "/metadata/managedFields", "value": [{"manager": "kubectl", "operation": "Apply"}]},
            {"op": "replace", "path": "/metadata/resourceVersion", "value": "109"}
        ]);
        let out = json_patch(&live, &patch).unwrap();
        assert_eq!(
            out["metadata"]["managedFields"],
            json!([{"manager": "kubectl", "operation": "Apply"}])
        );
        assert_eq!(out["metadata"]["resourceVersion"], "109");
    }

    #[test]
    fn merge_patch_deletes_with_null_and_replaces_lists() {
        let live =
            service(json!([{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]));
        let out = merge_patch(
            &live,
            &json!({"metadata": {"labels": {"app": null, "k": "v"}}, "spec": {"ports": [{"port": 8080}]}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"k": "v"}));
        assert_eq!(out["spec"]["ports"], json!([{"port": 8080}]));
        assert_eq!(out["spec"]["selector"], json!({"app": "web"}));
    }

    #[test]
    fn patch_types_come_from_the_content_type() {
        let cases = [
            ("application/json-patch+json", PatchType::Json),
            ("application/merge-patch+json", PatchType::Merge),
            (
                "application/strategic-merge-patch+json; charset=utf-8",
                PatchType::Strategic,
            ),
            ("application/apply-patch+yaml", PatchType::Apply),
            ("Application/Apply-Patch+YAML", PatchType::Apply),
        ];
        for (ct, want) in cases {
            assert_eq!(PatchType::from_content_type(ct).unwrap(), want, "{ct}");
        }
        let err = PatchType::from_content_type("application/json").unwrap_err();
        assert_eq!(err.code(), 415);
        assert_eq!(
            err.to_string(),
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, \
             application/strategic-merge-patch+json, application/apply-patch+yaml"
        );
        assert!(PatchType::from_content_type("application/apply-patch+cbor").is_err());
    }

    #[test]
    fn a_json_patch_with_more_than_ten_thousand_operations_is_413_with_upstreams_text() {
        let live = json!({"metadata": {"name": "a"}});
        let ops: Vec<Value> = (0..10_001)
            .map(|_| json!({"op": "test", "path": "/metadata/name", "value": "a"}))
            .collect();
        let err = json_patch(&live, &Value::Array(ops)).unwrap_err();
        assert_eq!(err.code(), 413);
        assert_eq!(
            err.to_string(),
            "The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
        let ops: Vec<Value> = (0..10_000)
            .map(|_| json!({"op": "test", "path": "/metadata/name", "value": "a"}))
            .collect();
        assert!(json_patch(&live, &Value::Array(ops)).is_ok());
    }

    #[test]
    fn copies_of_a_growing_value_into_itself_stop_at_the_copy_limit_before_doubling_again() {
        // 40 doublings of 1 KiB would need 1 TiB; the running total stops the patch after about
        // 12 copies, before the copy that would pass 3 MiB is made.
        let live = json!({"metadata": {"annotations": {"a": "x".repeat(1024)}}});
        let ops: Vec<Value> = (0..40)
            .map(|i| {
                json!({"op": "copy", "from": "/metadata/annotations", "path": format!("/metadata/annotations/c{i}")})
            })
            .collect();
        let err = json_patch(&live, &Value::Array(ops)).unwrap_err();
        assert_eq!(err.code(), 422);
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "Unable to complete the copy, the accumulated size increase of copy is "
            ) && msg.ends_with(", exceeding the limit 3145728"),
            "{msg}"
        );
    }

    #[test]
    fn copies_are_counted_across_operations_against_the_limit() {
        let live = json!({"a": "x".repeat(100)});
        let copy = |to: &str| json!({"op": "copy", "from": "/a", "path": to});
        // Each copy adds 102 bytes ("x" * 100 with its quotes).
        assert!(json_patch_limited(&live, &json!([copy("/b"), copy("/c")]), 204).is_ok());
        let err = json_patch_limited(&live, &json!([copy("/b"), copy("/c"), copy("/d")]), 204)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unable to complete the copy, the accumulated size increase of copy is 306, exceeding the limit 204"
        );
    }

    #[test]
    fn a_failed_operation_names_its_index_and_changes_nothing() {
        let live = json!({"a": 1});
        let err = json_patch(
            &live,
            &json!([{"op": "add", "path": "/b", "value": 2}, {"op": "remove", "path": "/zz"}]),
        )
        .unwrap_err();
        assert_eq!(err.code(), 422);
        assert!(
            err.to_string()
                .starts_with("operation '/1' failed at path '/zz'"),
            "{err}"
        );
    }

    #[test]
    fn smp_of_twenty_thousand_pod_conditions_merges_by_type_without_quadratic_work() {
        let conditions = |n: usize, status: &str| -> Vec<Value> {
            (0..n)
                .map(|i| json!({"type": format!("C{i}"), "status": status}))
                .collect()
        };
        let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "status": {"conditions": conditions(20_000, "False")}});
        let mut patch_list = conditions(20_000, "True");
        patch_list.remove(5);
        patch_list.reverse();
        patch_list.push(json!({"type": "C5", "$patch": "delete"}));
        let patch = json!({"status": {"conditions": patch_list}});
        let started = std::time::Instant::now();
        let out = smp(&live, patch);
        let merged = out["status"]["conditions"].as_array().unwrap();
        assert_eq!(merged.len(), 19_999);
        assert!(merged.iter().all(|c| c["status"] == "True"));
        // Patch order: C19999 first.
        assert_eq!(merged[0]["type"], "C19999");
        assert!(!merged.iter().any(|c| c["type"] == "C5"));
        // Not a timing assertion of the fix (the quadratic merge took 20 s in a release build);
        // a generous bound that only a quadratic algorithm misses.
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn element_identity_treats_80_and_80_0_as_the_same_port() {
        let live = service(json!([{"port": 80, "protocol": "TCP"}]));
        let out = smp(
            &live,
            json!({"spec": {"ports": [{"port": 80.0, "name": "http"}]}}),
        );
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 1);
        assert_eq!(out["spec"]["ports"][0]["name"], "http");
    }
}
