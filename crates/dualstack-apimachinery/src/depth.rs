//! A linear pre-scan of YAML text that measures its nesting depth before any parser sees it.
//!
//! libyaml (under `serde_norway`) spends time quadratic in the nesting depth: a 200 KB document
//! nested 100,000 deep took 16 s. Upstream's YAML parser (go-yaml, used by `sigs.k8s.io/yaml`)
//! refuses more than 10,000 levels with `exceeded max depth of 10000`, so we count the levels in
//! one pass over the bytes and refuse the same documents at once.
//!
//! What counts as a level:
//! - a flow collection opened by `[` or `{` (in block context only where a value starts, so
//!   `a[0]` in a plain scalar is not one);
//! - each `- ` or `? ` that opens a block collection on a line (`- - - x` is three levels);
//! - each deeper indentation of a line than the open block levels above it.
//!
//! Quoted scalars, comments and the bodies of block scalars (`|`, `>`) are skipped. The count is
//! an upper bound of the parser's depth that is exact for the shapes that can be deep within the
//! 3 MiB body limit (flow brackets and compact `- ` runs: indentation alone needs `d²/2` bytes
//! for `d` levels, 50 MB for 10,000).

use thiserror::Error;

/// Upstream's deepest nesting (go-yaml's `max_flow_level` and `max_indents`, kjson's
/// `maxNestingDepth`); deeper documents get upstream's `exceeded max depth of 10000`.
pub const MAX_DEPTH: usize = 10_000;

/// Deepest nesting our YAML decoder is handed. `serde_norway` refuses more than 128 levels
/// (`recursion limit exceeded`) anyway, but only after libyaml has scanned the whole document,
/// at a cost of tokens × depth (a 200 KB body 9,000 deep took 15 s in a debug build). So the
/// pre-scan refuses what the decoder would refuse, at once; the margin over 128 keeps the
/// pre-scan's count (an upper bound) from refusing a document the decoder accepts.
pub const DECODER_DEPTH: usize = 160;

/// A document nested deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("yaml: line {line}: exceeded max depth of {limit}")]
pub struct TooDeep {
    /// The 1-based line where the limit was passed.
    pub line: usize,
    /// The limit.
    pub limit: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Checks that `text` nests at most `limit` levels deep.
pub fn check_yaml_depth(text: &str, limit: usize) -> Result<(), TooDeep> {
    let mut scanner = Scanner {
        indents: Vec::new(),
        flow: 0,
        quote: Quote::None,
        block_scalar_min: None,
        plain_continuation: None,
        limit,
    };
    for (i, line) in text.split('\n').enumerate() {
        // A lone `\r` breaks a line too (YAML's line breaks are LF, CR and CRLF).
        for part in line.split('\r') {
            scanner
                .line(part)
                .map_err(|()| TooDeep { line: i + 1, limit })?;
        }
    }
    Ok(())
}

struct Scanner {
    /// Columns of the open block levels.
    indents: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    /// A quoted scalar continues from an earlier line.
    quote: Quote,
    /// Inside a block scalar: lines indented at least this much (or empty) are its body; the
    /// bool says the first body line has fixed the indentation.
    block_scalar_min: Option<(usize, bool)>,
    /// A plain scalar of block context is open: lines indented at least this much continue it
    /// (`[` in them is text, not a flow collection).
    plain_continuation: Option<usize>,
    limit: usize,
}

impl Scanner {
    fn depth(&self) -> usize {
        self.indents.len() + self.flow
    }

    fn check(&self) -> Result<(), ()> {
        if self.depth() > self.limit {
            Err(())
        } else {
            Ok(())
        }
    }

    fn line(&mut self, line: &str) -> Result<(), ()> {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let rest = &bytes[indent..];
        if let Some((min, fixed)) = self.block_scalar_min {
            if rest.is_empty() {
                return Ok(());
            }
            if indent >= min {
                if !fixed {
                    self.block_scalar_min = Some((indent, true));
                }
                return Ok(());
            }
            self.block_scalar_min = None;
        }
        if self.quote == Quote::None && self.flow == 0 {
            if rest.is_empty() || rest[0] == b'#' {
                return Ok(());
            }
            if let Some(min) = self.plain_continuation {
                if indent >= min {
                    return Ok(());
                }
                self.plain_continuation = None;
            }
            let marker = indent == 0
                && (rest.starts_with(b"---") || rest.starts_with(b"..."))
                && rest.get(3).is_none_or(|&c| c == b' ' || c == b'\t');
            if marker {
                // A document marker (`---###` is a plain scalar instead).
                self.indents.clear();
                self.plain_continuation = None;
                return self.scan(bytes, 3);
            }
            while self.indents.last().is_some_and(|&top| top >= indent) {
                self.indents.pop();
            }
            self.indents.push(indent);
            self.check()?;
        }
        self.scan(bytes, indent)
    }

    /// Scans the content of a line from column `start`.
    fn scan(&mut self, bytes: &[u8], start: usize) -> Result<(), ()> {
        let mut i = start;
        // In block context: a value starts here (flow and quote indicators count only there).
        let mut value_start = self.flow == 0 && self.quote == Quote::None;
        // In flow context: a token starts here.
        let mut token_start = true;
        // In block context: a plain scalar is open, and the column of the node it belongs to
        // (the key or entry), once a `: ` or `- ` on this line has named one.
        let mut plain = false;
        let mut node_col = None;
        while i < bytes.len() {
            let b = bytes[i];
            match self.quote {
                Quote::Double => {
                    match b {
                        b'\\' => i += 1,
                        b'"' => self.quote = Quote::None,
                        _ => {}
                    }
                    i += 1;
                    continue;
                }
                Quote::Single => {
                    if b == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            self.quote = Quote::None;
                        }
                    }
                    i += 1;
                    continue;
                }
                Quote::None => {}
            }
            let next_is_space = bytes.get(i + 1).is_none_or(|&n| n == b' ' || n == b'\t');
            let prev_is_space = i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t';
            let in_flow = self.flow > 0;
            let opens = if in_flow { token_start } else { value_start };
            match b {
                b' ' | b'\t' => {}
                b'#' if prev_is_space => {
                    // A comment ends a plain scalar: the next line starts afresh.
                    plain = false;
                    break;
                }
                b'"' if opens => {
                    self.quote = Quote::Double;
                    value_start = false;
                }
                b'\'' if opens => {
                    self.quote = Quote::Single;
                    value_start = false;
                }
                b'[' | b'{' if opens || in_flow => {
                    self.flow += 1;
                    self.check()?;
                    token_start = true;
                    value_start = false;
                    i += 1;
                    continue;
                }
                b']' | b'}' if in_flow => {
                    self.flow -= 1;
                    token_start = false;
                }
                b',' if in_flow => {
                    token_start = true;
                    i += 1;
                    continue;
                }
                b'-' | b'?' if !in_flow && value_start && next_is_space => {
                    // A block sequence entry or complex key: one more level at its column.
                    self.indents.push(i);
                    self.check()?;
                    node_col = Some(i);
                }
                b':' if next_is_space || (in_flow && token_start) => {
                    value_start = !in_flow;
                    plain = false;
                    if !in_flow && node_col.is_none() {
                        node_col = Some(start);
                    }
                    token_start = true;
                    i += 1;
                    continue;
                }
                b'&' | b'*' if opens => {
                    // Anchor or alias: its name is letters, digits, `-` and `_` (libyaml); a
                    // value may follow the anchor, and whatever touches the name is a plain
                    // scalar's text.
                    i += 1;
                    while i < bytes.len()
                        && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'-' | b'_'))
                    {
                        i += 1;
                    }
                    if bytes.get(i).is_some_and(|&c| c != b' ' && c != b'\t') {
                        if !in_flow {
                            plain = true;
                        }
                        value_start = false;
                        token_start = false;
                    }
                    continue;
                }
                b'!' if opens => {
                    // A tag: everything to the next blank; a value may still follow.
                    while i < bytes.len() && bytes[i] != b' ' && bytes[i] != b'\t' {
                        i += 1;
                    }
                    continue;
                }
                b'|' | b'>' if !in_flow && value_start => {
                    // A block scalar: its header is the rest of the line; its body is every
                    // following line indented deeper than the node it is the value of (the key
                    // or entry on this line, else the level above this line).
                    let header = &bytes[i + 1..];
                    let header = header
                        .iter()
                        .position(|&c| c == b'#')
                        .map_or(header, |at| &header[..at]);
                    if header
                        .iter()
                        .all(|c| matches!(c, b'-' | b'+' | b'0'..=b'9' | b' ' | b'\t'))
                    {
                        self.block_scalar_min = Some((self.parent_min(node_col), false));
                        return Ok(());
                    }
                    value_start = false;
                }
                _ => {
                    if !in_flow && value_start {
                        plain = true;
                    }
                    value_start = false;
                }
            }
            if b != b' ' && b != b'\t' {
                token_start = false;
            }
            i += 1;
        }
        if plain && self.flow == 0 && self.quote == Quote::None {
            // `key: text` continues on lines deeper than the key; a bare scalar on lines deeper
            // than the level holding it (any line, at the top of a document).
            self.plain_continuation = Some(self.parent_min(node_col));
        }
        Ok(())
    }

    /// The least indentation of a line that continues a value: deeper than its node's column
    /// (`node_col`, a key or entry on the current line), else deeper than the level above the
    /// current line; any line at the top of a document.
    fn parent_min(&self, node_col: Option<usize>) -> usize {
        match node_col {
            Some(col) => col + 1,
            None => {
                let levels = self.indents.len();
                if levels >= 2 {
                    self.indents[levels - 2] + 1
                } else {
                    0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, limit: usize) -> bool {
        check_yaml_depth(text, limit).is_ok()
    }

    #[test]
    fn flow_nesting_past_the_limit_is_refused_with_go_yamls_text() {
        let deep = format!("{}{}", "[".repeat(10_001), "]".repeat(10_001));
        assert_eq!(
            check_yaml_depth(&deep, MAX_DEPTH).unwrap_err().to_string(),
            "yaml: line 1: exceeded max depth of 10000"
        );
        let shallow = format!("a: {}{}", "[".repeat(9_000), "]".repeat(9_000));
        assert!(depth_ok(&shallow, MAX_DEPTH));
    }

    #[test]
    fn compact_block_sequences_count_one_level_per_dash() {
        let deep = format!("{}x\n", "- ".repeat(100_000));
        assert!(!depth_ok(&deep, MAX_DEPTH));
        assert!(depth_ok("- - - x\n", 4));
        assert!(!depth_ok("- - - x\n", 3));
    }

    #[test]
    fn indentation_levels_count_and_close_again() {
        let text = "a:\n  b:\n    c:\n      d: 1\ne: 2\n";
        assert!(depth_ok(text, 4));
        assert!(!depth_ok(text, 3));
    }

    #[test]
    fn brackets_in_quotes_comments_block_scalars_and_plain_scalars_do_not_count() {
        let brackets = "[".repeat(50);
        let text = format!(
            "a: \"{brackets}\"\nb: '{brackets}'\nc: x{brackets}\n# {brackets}\nd: |\n  {brackets}\n   {brackets}\ne: >-\n  {brackets}\nf: [1, [2], {{g: \"]\"}}]\n"
        );
        assert!(depth_ok(&text, 5), "{:?}", check_yaml_depth(&text, 5));
    }

    #[test]
    fn brackets_that_continue_a_multi_line_plain_scalar_do_not_count() {
        // Found by the yaml_depth fuzz target: line 2 continues the scalar of line 1.
        let text = format!("apiVesn ior:v2\n{}x\n", "[".repeat(200));
        assert!(depth_ok(&text, 5), "{:?}", check_yaml_depth(&text, 5));
        let text = format!("a: some text\n  {}x\nb: 1\n", "[".repeat(200));
        assert!(depth_ok(&text, 5), "{:?}", check_yaml_depth(&text, 5));
        // A new key at the key's column is not a continuation.
        let text = format!("a: some text\nb: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(!depth_ok(&text, 5));
        // Nor is a line after a comment, which ends the scalar.
        let text = format!("a: text # c\n  {}\n", "[".repeat(200));
        assert!(!depth_ok(&text, 5));
    }

    #[test]
    fn a_block_scalar_on_its_own_line_belongs_to_the_key_above() {
        // Found by the yaml_depth fuzz target: the body is indented like the `|` line.
        let text = format!("a:\n  |\n  x:\n  {}\nb: 1\n", "[".repeat(200));
        assert!(depth_ok(&text, 5), "{:?}", check_yaml_depth(&text, 5));
        let text = format!("a: |\n  x\n  {}\nb: 1\n", "{".repeat(200));
        assert!(depth_ok(&text, 5), "{:?}", check_yaml_depth(&text, 5));
        // The first body line fixes the indentation: a shallower line ends the scalar.
        let text = format!("a: |\n  x\n {}\n", "{".repeat(200));
        assert!(!depth_ok(&text, 5));
    }

    #[test]
    fn anchors_end_at_their_last_name_character() {
        // Found by the yaml_depth fuzz target: `&d:x [[[` is an anchor and a plain scalar.
        let text = format!("&d:!!n:1 !q&o {}\n", "[".repeat(200));
        assert!(depth_ok(&text, 5), "{:?}", check_yaml_depth(&text, 5));
        let text = format!("a: &x {}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(!depth_ok(&text, 5));
    }

    #[test]
    fn document_markers_need_a_blank_after_them() {
        // Found by the yaml_depth fuzz target: `---###` is a scalar that the next line continues.
        let text = format!("---###\n{}\n", "{".repeat(200));
        assert!(depth_ok(&text, 5), "{:?}", check_yaml_depth(&text, 5));
        let text = format!("--- {}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(!depth_ok(&text, 5));
        assert!(depth_ok("a: 1\n---\nb: 2\n...\n", 2));
    }

    #[test]
    fn a_carriage_return_alone_breaks_a_line() {
        // Found by the yaml_depth fuzz target: the quote after `\r` opens a scalar.
        let text = format!("#\r'a:\n  {}'\n", "[".repeat(200));
        assert!(depth_ok(&text, 5), "{:?}", check_yaml_depth(&text, 5));
        assert!(depth_ok("a:\r\n  b: 1\r\n", 2));
    }

    #[test]
    fn a_kubernetes_manifest_is_shallow() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: nginx\n    args: [\"-c\", 'echo [x']\n    ports:\n    - containerPort: 80\n";
        assert!(depth_ok(text, 8), "{:?}", check_yaml_depth(text, 8));
    }
}
