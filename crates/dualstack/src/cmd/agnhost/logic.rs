//! The pure parts of the built-in agnhost: request → answer for netexec's HTTP endpoints and
//! its UDP commands, with upstream's texts and status codes. No sockets here (`mod.rs` and
//! `netexec.rs` own those).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

/// An HTTP answer: status code, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// `Content-Type`, when set (Go sniffs one otherwise; we say `text/plain`).
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Answer {
    /// 200 with `body`.
    pub fn ok(body: impl Into<String>) -> Answer {
        Answer {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// Go's `http.Error`: the message and a newline, as text, with `status`.
    pub fn error(status: u16, msg: impl std::fmt::Display) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{msg}\n"),
        }
    }

    fn json(body: String) -> Answer {
        Answer {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

/// The first value of query parameter `key` (Go's `FormValue`/`Query().Get`), or "".
pub fn param<'a>(query: &'a [(String, String)], key: &str) -> &'a str {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// A peer address as Go prints it: IPv4-mapped IPv6 addresses (a dual-stack socket's IPv4
/// peers) as plain IPv4, IPv6 in brackets.
pub fn peer(addr: SocketAddr) -> String {
    SocketAddr::new(addr.ip().to_canonical(), addr.port()).to_string()
}

/// `strconv.Atoi`'s error text for `s`.
fn atoi(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {s:?}: invalid syntax"))
}

/// `/echo?msg=&code=`: the message, with the status `code` when one is given.
pub fn echo(query: &[(String, String)]) -> Answer {
    let msg = param(query, "msg");
    let code = param(query, "code");
    if code.is_empty() {
        return Answer::ok(msg);
    }
    match atoi(code) {
        Ok(c) if (100..=999).contains(&c) => Answer {
            status: c as u16,
            ..Answer::ok(msg)
        },
        // Go's WriteHeader panics on such codes; the handler's connection ends in a 500.
        Ok(_) => Answer::error(500, format!("invalid WriteHeader code {code}")),
        Err(_) => Answer::ok(format!(
            "argument 'code' must be an integer or empty, got {code:?}\n"
        )),
    }
}

/// What `/exit` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRequest {
    /// The exit code.
    pub code: i32,
    /// Time allowed for connections to close; zero exits at once.
    pub timeout: Duration,
    /// Time to wait before shutting down.
    pub wait: Duration,
}

/// `/exit?code=&timeout=&wait=`: the request, or upstream's answer for a bad argument (200).
pub fn exit_request(query: &[(String, String)]) -> Result<ExitRequest, Answer> {
    let (code, timeout, wait) = (
        param(query, "code"),
        param(query, "timeout"),
        param(query, "wait"),
    );
    let bad = |s: String| Answer::ok(s);
    let timeout_d = match go_duration(timeout) {
        Some(d) => d,
        None if timeout.is_empty() => Duration::ZERO,
        None => {
            return Err(bad(format!(
                "argument 'timeout' must be a valid golang duration or empty, got {timeout:?}\n"
            )));
        }
    };
    let wait_d = match go_duration(wait) {
        Some(d) => d,
        None if wait.is_empty() => Duration::ZERO,
        None => {
            return Err(bad(format!(
                "argument 'wait' must be a valid golang duration or empty, got {wait:?}\n"
            )));
        }
    };
    let code_n = match atoi(code) {
        Ok(c) => c as i32,
        Err(_) if code.is_empty() => 0,
        Err(_) => {
            return Err(bad(format!(
                "argument 'code' must be an integer [0-127] or empty, got {code:?}\n"
            )));
        }
    };
    Ok(ExitRequest {
        code: code_n,
        timeout: timeout_d,
        wait: wait_d,
    })
}

/// Go's `time.ParseDuration` for non-negative durations ("0", "1.5s", "1m30s", "300ms").
pub fn go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += number * unit;
    }
    Some(Duration::from_secs_f64(total))
}

/// The protocol `/dial` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialProtocol {
    /// `GET http://host:port/<request>`, the body is the response.
    Http,
    /// `<request>` as one datagram, the reply datagram is the response.
    Udp,
}

/// A `/dial` request, its parameters checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// `host`, as given (an IP or a name).
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `request`: the HTTP path (without its leading `/`) or the UDP payload.
    pub request: String,
    /// `protocol`.
    pub protocol: DialProtocol,
    /// `tries`.
    pub tries: u32,
}

/// `/dial?request=&host=&port=&protocol=&tries=`: the request, or upstream's 400.
pub fn dial_request(query: &[(String, String)]) -> Result<Dial, Answer> {
    let tries_s = param(query, "tries");
    let tries = if tries_s.is_empty() {
        1
    } else {
        match atoi(tries_s) {
            Ok(n) => n.clamp(0, u32::MAX.into()) as u32,
            Err(e) => {
                return Err(Answer::error(
                    400,
                    format!("tries parameter is invalid. {e}"),
                ));
            }
        }
    };
    let request = param(query, "request");
    if request.is_empty() {
        return Err(Answer::error(400, "request parameter not specified. <nil>"));
    }
    let protocol = match param(query, "protocol").to_ascii_lowercase().as_str() {
        "" | "http" => DialProtocol::Http,
        "udp" => DialProtocol::Udp,
        _ => {
            return Err(Answer::error(
                400,
                format!("unsupported protocol. {}", param(query, "protocol")),
            ));
        }
    };
    let (host, port_s) = (param(query, "host"), param(query, "port"));
    let port = port_s.parse::<u16>().map_err(|_| {
        Answer::error(
            400,
            format!("host and/or port param are invalid. address {port_s}: invalid port"),
        )
    })?;
    Ok(Dial {
        host: host.to_string(),
        port,
        request: request.to_string(),
        protocol,
        tries,
    })
}

/// The URL `/dial` fetches over HTTP for `request` at `addr` (Go's `http://%s/%s`).
pub fn dial_url(addr: SocketAddr, request: &str) -> String {
    format!("http://{addr}/{request}")
}

#[derive(Serialize)]
struct DialOutput<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    responses: Option<&'a [String]>,
}

/// `/dial`'s answer from each try's outcome, as upstream builds it: `{"errors":[...],
/// "responses":[...]}` (keys sorted, as Go's `json.Marshal` of a map), always 200;
/// `responses` only when the last try answered something non-empty, `errors` only when one
/// failed.
pub fn dial_answer(tries: &[Result<String, String>]) -> Answer {
    let responses: Vec<String> = tries.iter().filter_map(|t| t.clone().ok()).collect();
    let errors: Vec<String> = tries.iter().filter_map(|t| t.clone().err()).collect();
    let last_nonempty = matches!(tries.last(), Some(Ok(r)) if !r.is_empty());
    let out = DialOutput {
        errors: (!errors.is_empty()).then_some(&errors[..]),
        responses: last_nonempty.then_some(&responses[..]),
    };
    Answer::json(go_json(
        &serde_json::to_string(&out).expect("strings serialize"),
    ))
}

/// JSON as Go's `json.Marshal` writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped (they
/// only occur inside strings, so replacing them everywhere is exact).
fn go_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The UDP server's reply to a datagram, or `None` (no reply): `hostname`, `echo <msg>`,
/// `clientip`, matched after trimming and lowercasing as upstream does (so the echo is in
/// lowercase too).
pub fn udp_reply(datagram: &[u8], hostname: &str, client: SocketAddr) -> Option<String> {
    let text = String::from_utf8_lossy(datagram).trim().to_lowercase();
    if text == "hostname" {
        Some(hostname.to_string())
    } else if let Some(msg) = text.strip_prefix("echo ") {
        Some(msg.to_string())
    } else if text == "clientip" {
        Some(peer(client))
    } else {
        None
    }
}

/// `/shell`'s answer: `{"error":..., "output":...}` with each key only when non-empty.
pub fn shell_answer(output: &str, error: Option<&str>) -> Answer {
    let mut m = serde_json::Map::new();
    if let Some(e) = error {
        m.insert("error".into(), e.into());
    }
    if !output.is_empty() {
        m.insert("output".into(), output.into());
    }
    Answer::json(go_json(&serde_json::Value::Object(m).to_string()))
}

/// `/healthz` and `/readyz`: 200 once the UDP server listens, 412 before (and always, when
/// there is no UDP server, as upstream).
pub fn healthz(ready: bool) -> Answer {
    Answer {
        status: if ready { 200 } else { 412 },
        ..Answer::ok("")
    }
}

/// `/redirect?location=&code=`: the redirect (302 by default).
pub fn redirect(query: &[(String, String)]) -> Result<(u16, String), Answer> {
    let location = param(query, "location");
    let code = param(query, "code");
    if code.is_empty() {
        return Ok((302, location.to_string()));
    }
    match atoi(code) {
        Ok(c) if (300..=399).contains(&c) => Ok((c as u16, location.to_string())),
        Ok(c) => Ok((c.clamp(100, 999) as u16, location.to_string())),
        Err(_) => Err(Answer::ok(format!(
            "argument 'code' must be an integer or empty, got {code:?}\n"
        ))),
    }
}

/// `host` as an IP literal, when it is one (else it is a name to look up).
pub fn literal(host: &str) -> Option<IpAddr> {
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn peers_print_as_go_prints_them_for_both_families() {
        let cases = [
            ("[::ffff:10.244.1.5]:4000", "10.244.1.5:4000"),
            ("10.244.1.5:4000", "10.244.1.5:4000"),
            ("[fd00:10:244:1::5]:4000", "[fd00:10:244:1::5]:4000"),
        ];
        for (addr, want) in cases {
            assert_eq!(peer(addr.parse().unwrap()), want);
        }
    }

    #[test]
    fn udp_commands_answer_hostname_echo_and_clientip_for_both_families() {
        let v4: SocketAddr = "[::ffff:10.244.1.5]:4000".parse().unwrap();
        let v6: SocketAddr = "[fd00:10:244:1::5]:4000".parse().unwrap();
        let cases = [
            (&b"hostname"[..], v4, Some("pod-a")),
            (b" HostName\n", v6, Some("pod-a")),
            (b"echo Hello World", v4, Some("hello world")),
            // Trimmed to "echo", which is no command (as upstream).
            (b"echo ", v4, None),
            (b"clientip", v4, Some("10.244.1.5:4000")),
            (b"clientip", v6, Some("[fd00:10:244:1::5]:4000")),
            (b"nope", v4, None),
            (b"", v4, None),
        ];
        for (datagram, client, want) in cases {
            assert_eq!(
                udp_reply(datagram, "pod-a", client).as_deref(),
                want,
                "{:?}",
                String::from_utf8_lossy(datagram)
            );
        }
    }

    #[test]
    fn dial_parameters_are_checked_with_upstreams_messages() {
        let ok = dial_request(&q(&[
            ("request", "hostname"),
            ("host", "fd00:10:244:1::5"),
            ("port", "8081"),
            ("protocol", "udp"),
            ("tries", "3"),
        ]))
        .unwrap();
        assert_eq!(
            ok,
            Dial {
                host: "fd00:10:244:1::5".into(),
                port: 8081,
                request: "hostname".into(),
                protocol: DialProtocol::Udp,
                tries: 3
            }
        );
        let http = dial_request(&q(&[
            ("request", "hostname"),
            ("host", "10.244.1.5"),
            ("port", "8080"),
        ]))
        .unwrap();
        assert_eq!((http.protocol, http.tries), (DialProtocol::Http, 1));
        let cases = [
            (
                q(&[("request", "hostname"), ("port", "80"), ("tries", "x")]),
                "tries parameter is invalid. strconv.Atoi: parsing \"x\": invalid syntax\n",
            ),
            (
                q(&[("host", "10.0.0.1"), ("port", "80")]),
                "request parameter not specified. <nil>\n",
            ),
            (
                q(&[("request", "hostname"), ("port", "80"), ("protocol", "ftp")]),
                "unsupported protocol. ftp\n",
            ),
            (
                q(&[("request", "hostname"), ("host", "10.0.0.1"), ("port", "x")]),
                "host and/or port param are invalid. address x: invalid port\n",
            ),
        ];
        for (query, want) in cases {
            let e = dial_request(&query).unwrap_err();
            assert_eq!((e.status, e.body.as_str()), (400, want), "{query:?}");
        }
    }

    #[test]
    fn dial_answers_are_upstreams_json() {
        let ok = |s: &str| Ok(s.to_string());
        let err = |s: &str| Err(s.to_string());
        let cases = [
            (vec![ok("pod-a")], r#"{"responses":["pod-a"]}"#),
            (
                vec![ok("pod-a"), ok("pod-b")],
                r#"{"responses":["pod-a","pod-b"]}"#,
            ),
            (
                vec![err("udp dial failed"), ok("pod-a")],
                r#"{"errors":["udp dial failed"],"responses":["pod-a"]}"#,
            ),
            // Upstream lists responses only when the last try answered.
            (vec![ok("pod-a"), err("e")], r#"{"errors":["e"]}"#),
            (vec![], "{}"),
            (
                vec![ok("<a & b>")],
                r#"{"responses":["\u003ca \u0026 b\u003e"]}"#,
            ),
        ];
        for (tries, want) in cases {
            let a = dial_answer(&tries);
            assert_eq!((a.status, a.body.as_str()), (200, want));
        }
    }

    #[test]
    fn echo_and_exit_parse_their_arguments_as_upstream() {
        assert_eq!(echo(&q(&[("msg", "hi")])), Answer::ok("hi"));
        assert_eq!(echo(&q(&[("msg", "hi"), ("code", "503")])).status, 503);
        assert_eq!(
            echo(&q(&[("msg", "hi"), ("code", "x")])).body,
            "argument 'code' must be an integer or empty, got \"x\"\n"
        );
        assert_eq!(
            exit_request(&q(&[
                ("code", "3"),
                ("timeout", "1m30s"),
                ("wait", "250ms")
            ]))
            .unwrap(),
            ExitRequest {
                code: 3,
                timeout: Duration::from_secs(90),
                wait: Duration::from_millis(250)
            }
        );
        assert_eq!(
            exit_request(&[]).unwrap(),
            ExitRequest {
                code: 0,
                timeout: Duration::ZERO,
                wait: Duration::ZERO
            }
        );
        assert_eq!(
            exit_request(&q(&[("timeout", "soon")])).unwrap_err().body,
            "argument 'timeout' must be a valid golang duration or empty, got \"soon\"\n"
        );
        assert_eq!(
            exit_request(&q(&[("code", "x")])).unwrap_err().body,
            "argument 'code' must be an integer [0-127] or empty, got \"x\"\n"
        );
    }

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("0", Some(Duration::ZERO)),
            ("1s", Some(Duration::from_secs(1))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("2h1m", Some(Duration::from_secs(7260))),
            ("10", None),
            ("s", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(go_duration(s), want, "{s}");
        }
    }

    #[test]
    fn health_shell_and_redirect_answers() {
        assert_eq!(healthz(true).status, 200);
        assert_eq!(healthz(false).status, 412);
        assert_eq!(shell_answer("a\n", None).body, r#"{"output":"a\n"}"#);
        assert_eq!(
            shell_answer("", Some("exit status 1")).body,
            r#"{"error":"exit status 1"}"#
        );
        assert_eq!(
            redirect(&q(&[("location", "/echo?msg=x")])).unwrap(),
            (302, "/echo?msg=x".to_string())
        );
        assert_eq!(
            redirect(&q(&[("location", "/x"), ("code", "307")])).unwrap(),
            (307, "/x".to_string())
        );
    }
}
