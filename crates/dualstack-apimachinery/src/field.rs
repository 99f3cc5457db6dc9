//! Field errors as upstream's `k8s.io/apimachinery/pkg/util/validation/field`: a path, a type, the
//! bad value and a detail, rendered exactly as Go renders them (`spec.clusterIPs[0]: Invalid
//! value: "x": must be a valid IP address`).
//!
//! One deliberate difference: upstream prints a bad value whole, so a 1 MB label value comes back
//! twice in the 422 (in `message` and in the cause). Here a printed value longer than
//! [`MAX_VALUE_BYTES`] keeps its first [`MAX_VALUE_BYTES`] bytes and says how many it left out
//! (`Invalid value: "aaa…aaa"...<1047552 bytes truncated>: must be no more than 63
//! characters`); every shorter value prints exactly as upstream prints it.

use std::borrow::Cow;
use std::fmt;

/// The longest printed bad value kept whole; longer ones are cut (see the module doc).
pub const MAX_VALUE_BYTES: usize = 1024;

/// The kept head of `text` and how many bytes were left out, when `text` is longer than
/// [`MAX_VALUE_BYTES`] (the cut falls on a character boundary).
fn cut(text: &str) -> Option<(&str, usize)> {
    if text.len() <= MAX_VALUE_BYTES {
        return None;
    }
    let mut end = MAX_VALUE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some((&text[..end], text.len() - end))
}

/// `text` whole when it is at most [`MAX_VALUE_BYTES`] long, else its head followed by
/// `...<N bytes truncated>`.
pub fn truncate_for_message(text: &str) -> Cow<'_, str> {
    match cut(text) {
        None => Cow::Borrowed(text),
        Some((head, left_out)) => Cow::Owned(format!("{head}...<{left_out} bytes truncated>")),
    }
}

/// A field path such as `spec.ports[0].port` or `metadata.labels[app]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(String);

impl Path {
    /// A root path element, e.g. `Path::new("spec")`.
    pub fn new(root: &str) -> Self {
        Path(root.to_string())
    }

    /// `parent.child`.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{}", self.0, name))
        }
    }

    /// `parent[i]`.
    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{}]", self.0, i))
    }

    /// `parent[key]`.
    pub fn key(&self, key: &str) -> Self {
        Path(format!("{}[{}]", self.0, key))
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of a field error (`field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// `Not found`.
    NotFound,
    /// `Required value`.
    Required,
    /// `Duplicate value`.
    Duplicate,
    /// `Invalid value`.
    Invalid,
    /// `Unsupported value`.
    NotSupported,
    /// `Forbidden`.
    Forbidden,
    /// `Too long`.
    TooLong,
    /// `Too many`.
    TooMany,
    /// `Internal error`.
    Internal,
    /// `Invalid value` (wrong type).
    TypeInvalid,
}

impl ErrorType {
    /// The text Go prints for the type.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::NotFound => "Not found",
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Internal => "Internal error",
        }
    }

    /// The `StatusCause.reason` (`metav1.CauseType`).
    pub fn cause_type(self) -> &'static str {
        match self {
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Internal => "InternalError",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }
}

/// A bad value, printed as Go's `%v`/`%q`/`%#v` would print the Go value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Not printed (`field.OmitValueType`).
    Omit,
    /// `null`.
    Null,
    /// A string, printed quoted.
    Str(String),
    /// An integer, printed plain.
    Int(i64),
    /// A boolean, printed plain.
    Bool(bool),
    /// A list of strings, printed as Go's `%#v` does: `[]string{"a", "b"}` (the Go type name is
    /// given, e.g. `string` or `core.IPFamily`).
    StrList(&'static str, Vec<String>),
    /// Printed as given.
    Raw(String),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::Str(s.clone())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i.into())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// Go's `%q` for a string.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Value {
    /// The value as printed in a message: as Go prints it, cut by [`truncate_for_message`] when
    /// long (a string is cut before quoting, so the quotes stay balanced).
    pub fn to_message(&self) -> String {
        match self {
            Value::Str(text) => match cut(text) {
                None => go_quote(text),
                Some((head, left_out)) => {
                    format!("{}...<{left_out} bytes truncated>", go_quote(head))
                }
            },
            v => truncate_for_message(&v.to_string()).into_owned(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Omit => Ok(()),
            Value::Null => f.write_str("null"),
            Value::Str(s) => f.write_str(&go_quote(s)),
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::StrList(ty, items) => {
                write!(f, "[]{ty}{{")?;
                for (i, s) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(&go_quote(s))?;
                }
                f.write_str("}")
            }
            Value::Raw(s) => f.write_str(s),
        }
    }
}

/// One field error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What kind of problem.
    pub kind: ErrorType,
    /// Where.
    pub field: Path,
    /// The offending value.
    pub value: Value,
    /// Why.
    pub detail: String,
}

impl FieldError {
    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: &Path, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Invalid,
            field: field.clone(),
            value: value.into(),
            detail: detail.into(),
        }
    }

    /// `Required value[: detail]`.
    pub fn required(field: &Path, detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Required,
            field: field.clone(),
            value: Value::Omit,
            detail: detail.into(),
        }
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: &Path, detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Forbidden,
            field: field.clone(),
            value: Value::Omit,
            detail: detail.into(),
        }
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: &Path, value: impl Into<Value>) -> Self {
        Self {
            kind: ErrorType::Duplicate,
            field: field.clone(),
            value: value.into(),
            detail: String::new(),
        }
    }

    /// `Not found: <value>`.
    pub fn not_found(field: &Path, value: impl Into<Value>) -> Self {
        Self {
            kind: ErrorType::NotFound,
            field: field.clone(),
            value: value.into(),
            detail: String::new(),
        }
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: &Path, value: impl Into<Value>, supported: &[&str]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self {
            kind: ErrorType::NotSupported,
            field: field.clone(),
            value: value.into(),
            detail,
        }
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: &Path, max: usize) -> Self {
        Self {
            kind: ErrorType::TooLong,
            field: field.clone(),
            value: Value::Omit,
            detail: format!("may not be more than {max} bytes"),
        }
    }

    /// `Too many: <actual>: must have at most <max> items`.
    pub fn too_many(field: &Path, actual: usize, max: usize) -> Self {
        Self {
            kind: ErrorType::TooMany,
            field: field.clone(),
            value: Value::Int(actual as i64),
            detail: format!("must have at most {max} items"),
        }
    }

    /// `Internal error: <detail>`.
    pub fn internal(field: &Path, detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Internal,
            field: field.clone(),
            value: Value::Omit,
            detail: detail.into(),
        }
    }

    /// The message without the field (`ErrorBody`), as in `StatusCause.message`.
    pub fn body(&self) -> String {
        let mut s = match (self.kind, &self.value) {
            (
                ErrorType::Required
                | ErrorType::Forbidden
                | ErrorType::TooLong
                | ErrorType::Internal,
                _,
            )
            | (_, Value::Omit) => self.kind.as_str().to_string(),
            (_, v) => format!("{}: {}", self.kind.as_str(), v.to_message()),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// A list of field errors.
pub type ErrorList = Vec<FieldError>;

/// Go's `errs.ToAggregate().Error()`: the one message, or `[a, b]` with duplicates removed.
pub fn aggregate(errs: &[FieldError]) -> String {
    let mut msgs: Vec<String> = Vec::new();
    for e in errs {
        let m = e.to_string();
        if !msgs.contains(&m) {
            msgs.push(m);
        }
    }
    match msgs.len() {
        1 => msgs.remove(0),
        _ => format!("[{}]", msgs.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_render_like_go() {
        let p = Path::new("spec").child("clusterIPs");
        assert_eq!(
            FieldError::invalid(&p.index(0), "x", "must be a valid IP address").to_string(),
            r#"spec.clusterIPs[0]: Invalid value: "x": must be a valid IP address"#
        );
        assert_eq!(
            FieldError::invalid(
                &p,
                Value::StrList("string", vec!["10.0.0.10".into()]),
                "failed to allocate IP 10.0.0.10: provided IP is already allocated"
            )
            .to_string(),
            r#"spec.clusterIPs: Invalid value: []string{"10.0.0.10"}: failed to allocate IP 10.0.0.10: provided IP is already allocated"#
        );
        assert_eq!(
            FieldError::required(&p, "").to_string(),
            "spec.clusterIPs: Required value"
        );
        assert_eq!(
            FieldError::forbidden(&p, "may not be set for ExternalName services").to_string(),
            "spec.clusterIPs: Forbidden: may not be set for ExternalName services"
        );
        assert_eq!(
            FieldError::not_supported(
                &Path::new("spec").child("ipFamilies").index(0),
                "IPv7",
                &["IPv4", "IPv6"]
            )
            .to_string(),
            r#"spec.ipFamilies[0]: Unsupported value: "IPv7": supported values: "IPv4", "IPv6""#
        );
        assert_eq!(
            FieldError::duplicate(&Path::new("spec").child("ipFamilies").index(1), "IPv4")
                .to_string(),
            r#"spec.ipFamilies[1]: Duplicate value: "IPv4""#
        );
        assert_eq!(
            FieldError::invalid(
                &Path::new("spec").child("ports").index(0).child("port"),
                0,
                "must be between 1 and 65535, inclusive"
            )
            .to_string(),
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
    }

    #[test]
    fn a_long_bad_value_is_printed_truncated_and_a_short_one_whole() {
        let p = Path::new("metadata").child("labels");
        let detail = "must be no more than 63 characters";
        let long = "a".repeat(1 << 20);
        let e = FieldError::invalid(&p, long.as_str(), detail);
        let expected = format!(
            "Invalid value: \"{}\"...<{} bytes truncated>: {detail}",
            "a".repeat(MAX_VALUE_BYTES),
            (1 << 20) - MAX_VALUE_BYTES
        );
        assert_eq!(e.body(), expected);
        assert!(e.to_string().len() < 2 * MAX_VALUE_BYTES);
        // Exactly at the limit: whole, as upstream prints it.
        let edge = "b".repeat(MAX_VALUE_BYTES);
        assert_eq!(
            FieldError::invalid(&p, edge.as_str(), detail).body(),
            format!("Invalid value: \"{edge}\": {detail}")
        );
        // A multi-byte character is never split.
        let wide = "é".repeat(MAX_VALUE_BYTES);
        let body = FieldError::invalid(&p, wide.as_str(), detail).body();
        assert!(body.starts_with(&format!(
            "Invalid value: \"{}\"...<{} bytes truncated>",
            "é".repeat(MAX_VALUE_BYTES / 2),
            MAX_VALUE_BYTES
        )));
        // Lists and raw values are cut too.
        let list = Value::StrList("string", vec![long.clone(), long]);
        let body = FieldError::invalid(&p, list, detail).body();
        assert!(body.len() < 2 * MAX_VALUE_BYTES, "{}", body.len());
        assert!(body.contains("bytes truncated>"));
    }

    #[test]
    fn aggregate_prints_one_or_a_bracketed_list() {
        let p = Path::new("a");
        let e1 = FieldError::required(&p, "");
        let e2 = FieldError::forbidden(&p, "no");
        assert_eq!(aggregate(std::slice::from_ref(&e1)), "a: Required value");
        assert_eq!(
            aggregate(&[e1.clone(), e2, e1]),
            "[a: Required value, a: Forbidden: no]"
        );
    }
}
