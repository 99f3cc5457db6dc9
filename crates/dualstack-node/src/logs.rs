//! Container logs as kubelet keeps and serves them: the CRI log format
//! (`<RFC 3339 nano time> <stdout|stderr> <F|P> <content>`, one record per line; `P` marks a
//! partial line whose content continues in the next record, `F` a full one), written by the
//! shim, and the `kubectl logs` options (`tailLines`, `sinceSeconds`/`sinceTime`,
//! `timestamps`, `limitBytes`) applied to the records as kubelet's `ReadLogs` does.

use jiff::Timestamp;

/// The longest content of one record before the shim cuts it (a `P` record), as containerd's
/// 16 KiB line buffer.
pub const MAX_RECORD: usize = 16 * 1024;

/// Which output a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the shim read it.
    pub time: Timestamp,
    /// stdout or stderr.
    pub stream: Stream,
    /// Whether the line continues in the next record (`P`).
    pub partial: bool,
    /// The bytes, without the newline.
    pub content: Vec<u8>,
}

/// Renders one record as a log file line (with its newline). The time keeps nine fractional
/// digits, as CRI runtimes write it.
pub fn format_record(time: Timestamp, stream: Stream, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 48);
    out.extend_from_slice(format!("{time:.9}").as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Splits a chunk read from a container's output into records: complete lines are full
/// records, the rest stays in `pending` (cut into a partial record when it reaches
/// [`MAX_RECORD`]). Returns `(partial, content)` pairs in order.
pub fn split_lines(pending: &mut Vec<u8>, chunk: &[u8]) -> Vec<(bool, Vec<u8>)> {
    pending.extend_from_slice(chunk);
    let mut out = Vec::new();
    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=i).collect();
        out.push((false, line[..line.len() - 1].to_vec()));
    }
    while pending.len() >= MAX_RECORD {
        out.push((true, pending.drain(..MAX_RECORD).collect()));
    }
    out
}

/// Parses one log file line (without its newline); `None` for a malformed one.
pub fn parse_record(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        partial,
        content: parts.next().unwrap_or_default().to_vec(),
    })
}

/// The options of a log request (kubelet's `PodLogOptions` as it applies them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `tailLines`: only the last N lines (counted in full lines).
    pub tail_lines: Option<u64>,
    /// `sinceSeconds`/`sinceTime`, resolved to a time: only records at or after it.
    pub since: Option<Timestamp>,
    /// `timestamps`: each line starts with its time (RFC 3339 with nanoseconds) and a space.
    pub timestamps: bool,
    /// `limitBytes`: stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

/// Renders the records of a log as `kubectl logs` shows them: partial records joined to the
/// line they continue, the timestamp (of the line's first record) when asked for.
#[derive(Debug, Default)]
pub struct Renderer {
    timestamps: bool,
    since: Option<Timestamp>,
    left: Option<u64>,
    /// Inside a line whose earlier records were partial.
    continuing: bool,
}

impl Renderer {
    /// A renderer for `opts` (the tail is chosen beforehand with [`tail_start`]).
    pub fn new(opts: &LogOptions) -> Self {
        Renderer {
            timestamps: opts.timestamps,
            since: opts.since,
            left: opts.limit_bytes,
            continuing: false,
        }
    }

    /// Whether `limitBytes` is used up (the stream ends).
    pub fn done(&self) -> bool {
        self.left == Some(0)
    }

    /// Appends the output of one record to `out`.
    pub fn push(&mut self, r: &Record, out: &mut Vec<u8>) {
        if self.done() {
            return;
        }
        if !self.continuing && self.since.is_some_and(|s| r.time < s) {
            // A line before `since`: skip all its records.
            self.continuing = r.partial;
            return;
        }
        let mut chunk = Vec::with_capacity(r.content.len() + 40);
        if self.timestamps && !self.continuing {
            chunk.extend_from_slice(format!("{:.9} ", r.time).as_bytes());
        }
        chunk.extend_from_slice(&r.content);
        if !r.partial {
            chunk.push(b'\n');
        }
        self.continuing = r.partial;
        if let Some(left) = self.left.as_mut() {
            let n = usize::try_from(*left)
                .unwrap_or(usize::MAX)
                .min(chunk.len());
            chunk.truncate(n);
            *left -= n as u64;
        }
        out.extend_from_slice(&chunk);
    }
}

/// Where in `records` output starts for `tailLines = n` (full lines counted from the end; a
/// trailing partial record belongs to the last line). `None` means from the beginning.
pub fn tail_start(records: &[Record], n: Option<u64>) -> usize {
    let Some(n) = n else { return 0 };
    if n == 0 {
        return records.len();
    }
    let mut lines = 0u64;
    // Walk back over line ends: record i ends a line if it is full, or is the last record.
    for i in (0..records.len()).rev() {
        let ends_line = !records[i].partial || i + 1 == records.len();
        if ends_line {
            if lines == n {
                return i + 1;
            }
            lines += 1;
        }
    }
    0
}

/// Renders a whole log file's bytes with `opts` (the non-follow case; `follow` continues with
/// a [`Renderer`] over new records).
pub fn render(file: &[u8], opts: &LogOptions) -> Vec<u8> {
    let records: Vec<Record> = file
        .split(|&b| b == b'\n')
        .filter_map(parse_record)
        .collect();
    let mut r = Renderer::new(opts);
    let mut out = Vec::new();
    for rec in &records[tail_start(&records, opts.tail_lines)..] {
        r.push(rec, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn file(lines: &[(&str, bool, &str)]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|(time, p, c)| format_record(t(time), Stream::Stdout, *p, c.as_bytes()))
            .collect()
    }

    fn sample() -> Vec<u8> {
        file(&[
            ("2026-01-01T00:00:01Z", false, "one"),
            ("2026-01-01T00:00:02Z", true, "tw"),
            ("2026-01-01T00:00:03Z", false, "o"),
            ("2026-01-01T00:00:04Z", false, "three"),
        ])
    }

    #[test]
    fn records_are_written_and_read_in_the_cri_format() {
        let line = format_record(t("2026-01-01T00:00:01.5Z"), Stream::Stderr, false, b"a b c");
        assert_eq!(line, b"2026-01-01T00:00:01.500000000Z stderr F a b c\n");
        let r = parse_record(&line[..line.len() - 1]).unwrap();
        assert_eq!(r.stream, Stream::Stderr);
        assert!(!r.partial);
        assert_eq!(r.content, b"a b c");
        assert_eq!(parse_record(b"garbage"), None);
    }

    #[test]
    fn lines_are_split_and_a_long_line_is_cut_into_partial_records() {
        let mut pending = Vec::new();
        assert_eq!(
            split_lines(&mut pending, b"a\nb\nc"),
            vec![(false, b"a".to_vec()), (false, b"b".to_vec())]
        );
        assert_eq!(pending, b"c");
        assert_eq!(
            split_lines(&mut pending, b"d\n"),
            vec![(false, b"cd".to_vec())]
        );
        let long = vec![b'x'; MAX_RECORD + 3];
        let got = split_lines(&mut pending, &long);
        assert_eq!(got.len(), 1);
        assert!(got[0].0);
        assert_eq!(pending.len(), 3);
    }

    #[test]
    fn partial_records_join_into_one_line() {
        assert_eq!(
            render(&sample(), &LogOptions::default()),
            b"one\ntwo\nthree\n"
        );
    }

    #[test]
    fn tail_counts_whole_lines() {
        let opts = |n| LogOptions {
            tail_lines: Some(n),
            ..Default::default()
        };
        assert_eq!(render(&sample(), &opts(1)), b"three\n");
        assert_eq!(render(&sample(), &opts(2)), b"two\nthree\n");
        assert_eq!(render(&sample(), &opts(9)), b"one\ntwo\nthree\n");
        assert_eq!(render(&sample(), &opts(0)), b"");
    }

    #[test]
    fn timestamps_prefix_each_line_with_its_first_record_time() {
        let out = render(
            &sample(),
            &LogOptions {
                timestamps: true,
                tail_lines: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-01-01T00:00:02.000000000Z two\n2026-01-01T00:00:04.000000000Z three\n"
        );
    }

    #[test]
    fn since_skips_earlier_lines_and_limit_bytes_cuts_the_output() {
        let since = LogOptions {
            since: Some(t("2026-01-01T00:00:02Z")),
            ..Default::default()
        };
        assert_eq!(render(&sample(), &since), b"two\nthree\n");
        let limit = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(render(&sample(), &limit), b"one\ntw");
    }
}
