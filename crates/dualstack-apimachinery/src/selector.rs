//! Label selectors (`labels.Parse`) and field selectors (`fields.ParseSelector`).
//!
//! Label grammar: comma-separated requirements `k`, `!k`, `k=v`, `k==v`, `k!=v`,
//! `k in (a,b)`, `k notin (a,b)`, `k>n`, `k<n`. Field grammar: `k=v`, `k==v`, `k!=v`, with `\`
//! escaping `,`, `=` and `\` in values.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::validation::{is_qualified_name, is_valid_label_value};

/// A selector that does not parse; the message is what the API returns (400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `k` — the label exists.
    Exists(String),
    /// `!k` — the label does not exist.
    DoesNotExist(String),
    /// `k=v` / `k==v` (one value) or `k in (a,b)`.
    In(String, Vec<String>),
    /// `k!=v` or `k notin (a,b)`: true when the label is absent too.
    NotIn(String, Vec<String>),
    /// `k>n`.
    GreaterThan(String, i64),
    /// `k<n`.
    LessThan(String, i64),
}

impl LabelRequirement {
    fn matches_with<'a>(&self, get: &impl Fn(&str) -> Option<&'a str>) -> bool {
        match self {
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::DoesNotExist(k) => get(k).is_none(),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            LabelRequirement::GreaterThan(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelRequirement::LessThan(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// A parsed label selector: all requirements must hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut lx = Lexer::new(s);
        let mut reqs = Vec::new();
        loop {
            lx.skip_ws();
            if lx.at_end() {
                break;
            }
            reqs.push(parse_requirement(&mut lx)?);
            lx.skip_ws();
            if lx.at_end() {
                break;
            }
            if !lx.eat(',') {
                return Err(SelectorError(format!(
                    "unable to parse requirement: found '{}', expected: ','",
                    lx.rest_token()
                )));
            }
            lx.skip_ws();
            if lx.at_end() {
                return Err(SelectorError(
                    "unable to parse requirement: found '', expected: identifier".into(),
                ));
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Builds a selector from a `matchLabels`-style map (`k=v` for each entry).
    pub fn from_map(m: &BTreeMap<String, String>) -> Self {
        LabelSelector(
            m.iter()
                .map(|(k, v)| LabelRequirement::In(k.clone(), vec![v.clone()]))
                .collect(),
        )
    }

    /// True when no requirement is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// upstream's `metav1.LabelSelectorAsSelector` of an API `LabelSelector` (`matchLabels`
    /// then `matchExpressions`); an empty selector matches everything (callers treat a missing
    /// one as matching nothing, as upstream does).
    pub fn from_api(
        sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<Self, SelectorError> {
        let mut reqs: Vec<LabelRequirement> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| LabelRequirement::In(k.clone(), vec![v.clone()]))
            .collect();
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            reqs.push(match e.operator.as_str() {
                "In" => LabelRequirement::In(e.key.clone(), values),
                "NotIn" => LabelRequirement::NotIn(e.key.clone(), values),
                "Exists" => LabelRequirement::Exists(e.key.clone()),
                "DoesNotExist" => LabelRequirement::DoesNotExist(e.key.clone()),
                op => {
                    return Err(SelectorError(format!(
                        "{op:?} is not a valid label selector operator"
                    )));
                }
            });
        }
        Ok(LabelSelector(reqs))
    }

    /// upstream's `metav1.FormatLabelSelector`: `app=web`, `k in (a,b)`, `<none>` when empty.
    pub fn format_api(
        sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> String {
        let mut parts: Vec<String> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for e in sel.match_expressions.iter().flatten() {
            let mut values = e.values.clone().unwrap_or_default();
            values.sort();
            parts.push(match e.operator.as_str() {
                "In" if values.len() == 1 => format!("{}={}", e.key, values[0]),
                "NotIn" if values.len() == 1 => format!("{}!={}", e.key, values[0]),
                "In" => format!("{} in ({})", e.key, values.join(",")),
                "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
                "Exists" => e.key.clone(),
                "DoesNotExist" => format!("!{}", e.key),
                _ => String::new(),
            });
        }
        if parts.is_empty() {
            "<none>".to_string()
        } else {
            parts.join(",")
        }
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Like [`matches`](Self::matches) with labels looked up by a function.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| r.matches_with(&get))
    }
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Self { s, pos: 0 }
    }
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }
    fn eat_str(&mut self, t: &str) -> bool {
        if self.s[self.pos..].starts_with(t) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    /// An identifier: anything up to whitespace or one of `,=!()<>`.
    fn ident(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || ",=!()<>".contains(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }
    fn rest_token(&self) -> String {
        self.s[self.pos..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect()
    }
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    let errs = is_qualified_name(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: <nil>: Invalid value: {:?}: {}",
            key,
            errs.join("; ")
        )))
    }
}

fn check_value(v: &str) -> Result<(), SelectorError> {
    let errs = is_valid_label_value(v);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: <nil>: Invalid value: {:?}: {}",
            v,
            errs.join("; ")
        )))
    }
}

fn parse_requirement(lx: &mut Lexer<'_>) -> Result<LabelRequirement, SelectorError> {
    if lx.eat('!') {
        lx.skip_ws();
        let key = lx.ident();
        if key.is_empty() {
            return Err(SelectorError(format!(
                "unable to parse requirement: found '{}', expected: identifier",
                lx.rest_token()
            )));
        }
        check_key(key)?;
        return Ok(LabelRequirement::DoesNotExist(key.to_string()));
    }
    let key = lx.ident();
    if key.is_empty() {
        return Err(SelectorError(format!(
            "unable to parse requirement: found '{}', expected: !, identifier",
            lx.rest_token()
        )));
    }
    check_key(key)?;
    let key = key.to_string();
    lx.skip_ws();
    if lx.at_end() || lx.peek() == Some(',') {
        return Ok(LabelRequirement::Exists(key));
    }
    if lx.eat_str("==") || lx.eat('=') {
        lx.skip_ws();
        let v = lx.ident();
        check_value(v)?;
        return Ok(LabelRequirement::In(key, vec![v.to_string()]));
    }
    if lx.eat_str("!=") {
        lx.skip_ws();
        let v = lx.ident();
        check_value(v)?;
        return Ok(LabelRequirement::NotIn(key, vec![v.to_string()]));
    }
    if lx.eat('>') || lx.eat('<') {
        let gt = lx.s[..lx.pos].ends_with('>');
        lx.skip_ws();
        let v = lx.ident();
        let n: i64 = v.parse().map_err(|_| {
            SelectorError(format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {v:?}"))
        })?;
        return Ok(if gt {
            LabelRequirement::GreaterThan(key, n)
        } else {
            LabelRequirement::LessThan(key, n)
        });
    }
    let op = lx.ident();
    let notin = match op {
        "in" => false,
        "notin" => true,
        other => {
            return Err(SelectorError(format!(
                "unable to parse requirement: found '{other}', expected: in, notin, =, ==, !=, gt, lt"
            )));
        }
    };
    lx.skip_ws();
    if !lx.eat('(') {
        return Err(SelectorError(format!(
            "unable to parse requirement: found '{}', expected: '('",
            lx.rest_token()
        )));
    }
    let mut values = Vec::new();
    loop {
        lx.skip_ws();
        if lx.eat(')') {
            break;
        }
        let v = lx.ident();
        check_value(v)?;
        values.push(v.to_string());
        lx.skip_ws();
        if lx.eat(',') {
            continue;
        }
        if lx.eat(')') {
            break;
        }
        return Err(SelectorError(format!(
            "unable to parse requirement: found '{}', expected: ',', ')'",
            lx.rest_token()
        )));
    }
    Ok(if notin {
        LabelRequirement::NotIn(key, values)
    } else {
        LabelRequirement::In(key, values)
    })
}

/// One field requirement: `key=value` or `key!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field, e.g. `metadata.name`.
    pub field: String,
    /// `true` for `!=`.
    pub negate: bool,
    /// The value compared with.
    pub value: String,
}

/// A parsed field selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_unescaped(s, ',') {
            if part.is_empty() {
                continue;
            }
            let (field, negate, value) = if let Some(i) = find_unescaped(&part, "!=") {
                (&part[..i], true, &part[i + 2..])
            } else if let Some(i) = find_unescaped(&part, "==") {
                (&part[..i], false, &part[i + 2..])
            } else if let Some(i) = find_unescaped(&part, "=") {
                (&part[..i], false, &part[i + 1..])
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            reqs.push(FieldRequirement {
                field: field.to_string(),
                negate,
                value: unescape(value),
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// True when no requirement is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value required for `field` by an `=` requirement, if any.
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.field == field && !r.negate)
            .map(|r| r.value.as_str())
    }

    /// Whether `fields` satisfy every requirement (a missing field counts as `""`).
    pub fn matches(&self, fields: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| fields.get(k).map(String::as_str))
    }

    /// Like [`matches`](Self::matches) with fields looked up by a function.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0
            .iter()
            .all(|r| (get(&r.field).unwrap_or("") == r.value) != r.negate)
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            chars.next();
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_parse_and_match_every_operator() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let cases = [
            ("", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web,api)", true),
            ("app notin (web)", false),
            ("app in (api), tier", false),
            ("app=web,tier=front", true),
            ("n>4", true),
            ("n<4", false),
            ("kubernetes.io/service-name=web", false),
        ];
        for (s, want) in cases {
            assert_eq!(LabelSelector::parse(s).unwrap().matches(&l), want, "{s}");
        }
    }

    #[test]
    fn bad_label_selectors_are_errors() {
        for s in [
            "app in web",
            "app in (web",
            "=x",
            "app=web,",
            "a b",
            "app=we b",
        ] {
            assert!(LabelSelector::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn field_selectors_support_equality_inequality_and_escapes() {
        let f: BTreeMap<String, String> = [
            ("metadata.name", "web"),
            ("status.phase", "Running"),
            ("involvedObject.namespace", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sel =
            FieldSelector::parse("metadata.name=web,status.phase!=Succeeded,status.phase!=Failed")
                .unwrap();
        assert!(sel.matches(&f));
        assert!(
            FieldSelector::parse("involvedObject.namespace=")
                .unwrap()
                .matches(&f)
        );
        assert!(
            !FieldSelector::parse("metadata.name==api")
                .unwrap()
                .matches(&f)
        );
        // Multi-byte characters next to operators and Unicode spaces (found by the fuzzer).
        assert!(LabelSelector::parse("R\u{a0}tn").is_err());
        assert!(FieldSelector::parse("ti ren (a ԕ֠!x").is_err());
        assert_eq!(FieldSelector::parse("a=ԕ!=").unwrap().0[0].field, "a=ԕ");
        let esc = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert_eq!(esc.0[0].value, "a,b");
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
