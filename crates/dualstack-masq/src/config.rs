//! ip-masq-agent's configuration (`MasqConfig`): its keys, defaults and validation messages.
//!
//! As upstream's `syncConfig`: the text (the file `/etc/config/ip-masq-agent` or the ConfigMap's
//! `config` key) is JSON when it starts with `{` (apimachinery's `yaml.ToJSON` passes JSON
//! through) and YAML otherwise; it is laid over a fresh default config, so only the keys present
//! override (an explicit `nonMasqueradeCIDRs: []` means an empty list); keys match
//! case-insensitively and unknown keys are ignored, as Go's `encoding/json` does. Then
//! [`MasqConfig::validate`]. A text that fails leaves the caller's previous config in force.

use std::net::IpAddr;
use std::time::Duration;

use dualstack_ipam::IpFamily;
use ipnet::IpNet;
use serde_json::{Map, Value};
use thiserror::Error;

/// Upstream's config path (a ConfigMap mount).
pub const CONFIG_PATH: &str = "/etc/config/ip-masq-agent";
/// The ConfigMap the agent reads when it talks to the API: namespace.
pub const CONFIGMAP_NAMESPACE: &str = "kube-system";
/// ... name.
pub const CONFIGMAP_NAME: &str = "ip-masq-agent";
/// ... and key.
pub const CONFIGMAP_KEY: &str = "config";

/// The IPv4 link-local range, never masqueraded unless `masqLinkLocal`.
pub const LINK_LOCAL_V4: &str = "169.254.0.0/16";
/// The IPv6 link-local range (RFC 4291), never masqueraded unless `masqLinkLocalIPv6`.
pub const LINK_LOCAL_V6: &str = "fe80::/10";

/// RFC 1918: the default non-masquerade list.
pub const DEFAULT_NON_MASQ: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
/// Added to the default list by `--nomasq-all-reserved-ranges`, in upstream's order.
pub const RESERVED_NON_MASQ: [&str; 8] = [
    "100.64.0.0/10",   // RFC 6598
    "192.0.0.0/24",    // RFC 6890
    "192.0.2.0/24",    // RFC 5737
    "192.88.99.0/24",  // RFC 7526
    "198.18.0.0/15",   // RFC 6815
    "198.51.100.0/24", // RFC 5737
    "203.0.113.0/24",  // RFC 5737
    "240.0.0.0/4",     // RFC 5735, former class E
];

/// The agent's configuration (upstream's `MasqConfig`, same JSON keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqConfig {
    /// `nonMasqueradeCIDRs`: destinations that keep the pod's address, both families in one list.
    pub non_masquerade_cidrs: Vec<String>,
    /// `cidrLimit` (64): at most this many `nonMasqueradeCIDRs`.
    pub cidr_limit: i64,
    /// `masqLinkLocal` (false): also masquerade to 169.254.0.0/16.
    pub masq_link_local: bool,
    /// `masqLinkLocalIPv6` (false): also masquerade to fe80::/10.
    pub masq_link_local_ipv6: bool,
    /// `resyncInterval` (60s, a Go duration string): how often config and rules are re-synced.
    pub resync_interval: Duration,
}

/// A configuration that cannot be used; the messages are upstream's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The text is not YAML.
    #[error("yaml: {0}")]
    Yaml(String),
    /// The text starts with `{` but is not JSON.
    #[error("{0}")]
    Json(String),
    /// The document is not an object.
    #[error("json: cannot unmarshal {kind} into Go value of type main.MasqConfig")]
    NotAnObject {
        /// The JSON kind found (`array`, `string`, ...).
        kind: &'static str,
    },
    /// A key holds a value of the wrong type.
    #[error("json: cannot unmarshal {kind} into Go struct field MasqConfig.{key} of type {want}")]
    WrongType {
        /// The key, as upstream spells it.
        key: &'static str,
        /// The JSON kind found.
        kind: &'static str,
        /// The Go type wanted.
        want: &'static str,
    },
    /// `resyncInterval` is not a Go duration.
    #[error("time: invalid duration {0:?}")]
    Duration(String),
    /// `resyncInterval` is zero or negative (ours: upstream would resync in a busy loop).
    #[error("resyncInterval must be positive, but got {0:?}")]
    NonPositiveResync(String),
    /// More CIDRs than `cidrLimit`.
    #[error(
        "the daemon can only accept up to {limit} CIDRs (excluding link-local), but got {got} CIDRs (excluding link local)"
    )]
    TooManyCidrs {
        /// `cidrLimit`.
        limit: i64,
        /// How many were given.
        got: usize,
    },
    /// An entry is not a CIDR.
    #[error("CIDR {cidr:?} could not be parsed, invalid CIDR address: {cidr}")]
    CidrParse {
        /// The entry.
        cidr: String,
    },
    /// An entry has host bits set.
    #[error("CIDR {cidr:?} is not aligned to a CIDR block, ip: {ip:?} network: {network:?}")]
    CidrNotAligned {
        /// The entry.
        cidr: String,
        /// Its address.
        ip: String,
        /// The network it lies in.
        network: String,
    },
    /// An IPv6 entry without `--enable-ipv6`.
    #[error(
        "ipv6 is not enabled, but ipv6 cidr {0} provided. Enable ipv6 using --enable-ipv6 agent flag"
    )]
    Ipv6NotEnabled(String),
}

impl MasqConfig {
    /// Upstream's `NewMasqConfig`: RFC 1918 (plus the reserved ranges with
    /// `--nomasq-all-reserved-ranges`), limit 64, link-local never masqueraded, 60 s resync.
    pub fn new(nomasq_all_reserved_ranges: bool) -> Self {
        let mut non_masq: Vec<String> = DEFAULT_NON_MASQ.iter().map(|s| s.to_string()).collect();
        if nomasq_all_reserved_ranges {
            non_masq.extend(RESERVED_NON_MASQ.iter().map(|s| s.to_string()));
        }
        MasqConfig {
            non_masquerade_cidrs: non_masq,
            cidr_limit: 64,
            masq_link_local: false,
            masq_link_local_ipv6: false,
            resync_interval: Duration::from_secs(60),
        }
    }

    /// Parses `text` (YAML, or JSON when it starts with `{`) over the defaults and validates it.
    pub fn parse(
        text: &str,
        nomasq_all_reserved_ranges: bool,
        enable_ipv6: bool,
    ) -> Result<Self, ConfigError> {
        let doc: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?
        } else {
            serde_norway::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))?
        };
        let mut c = MasqConfig::new(nomasq_all_reserved_ranges);
        match doc {
            Value::Null => {}
            Value::Object(m) => c.overlay(&m)?,
            other => {
                return Err(ConfigError::NotAnObject { kind: kind(&other) });
            }
        }
        c.validate(enable_ipv6)?;
        Ok(c)
    }

    /// Sets the fields present in `m` (Go's `json.Unmarshal` into an existing struct).
    fn overlay(&mut self, m: &Map<String, Value>) -> Result<(), ConfigError> {
        for (k, v) in m {
            let Some(key) = field(k) else { continue };
            let wrong = |want| ConfigError::WrongType {
                key,
                kind: kind(v),
                want,
            };
            match key {
                "nonMasqueradeCIDRs" => match v {
                    Value::Null => self.non_masquerade_cidrs.clear(),
                    Value::Array(items) => {
                        self.non_masquerade_cidrs = items
                            .iter()
                            .map(|i| match i {
                                Value::String(s) => Ok(s.clone()),
                                other => Err(ConfigError::WrongType {
                                    key,
                                    kind: kind(other),
                                    want: "string",
                                }),
                            })
                            .collect::<Result<_, _>>()?
                    }
                    _ => return Err(wrong("[]string")),
                },
                "cidrLimit" => match v {
                    Value::Null => {}
                    Value::Number(n) => self.cidr_limit = n.as_i64().ok_or_else(|| wrong("int"))?,
                    _ => return Err(wrong("int")),
                },
                "masqLinkLocal" | "masqLinkLocalIPv6" => {
                    let b = match v {
                        Value::Null => continue,
                        Value::Bool(b) => *b,
                        _ => return Err(wrong("bool")),
                    };
                    if key == "masqLinkLocal" {
                        self.masq_link_local = b;
                    } else {
                        self.masq_link_local_ipv6 = b;
                    }
                }
                _ => {
                    // resyncInterval: metav1.Duration reads a JSON string (null reads as "").
                    let s = match v {
                        Value::String(s) => s.as_str(),
                        Value::Null => "",
                        other => {
                            return Err(ConfigError::WrongType {
                                key,
                                kind: kind(other),
                                want: "string",
                            });
                        }
                    };
                    let nanos =
                        parse_go_duration(s).ok_or_else(|| ConfigError::Duration(s.into()))?;
                    if nanos <= 0 {
                        return Err(ConfigError::NonPositiveResync(s.into()));
                    }
                    self.resync_interval = Duration::from_nanos(nanos.min(u64::MAX as i128) as u64);
                }
            }
        }
        Ok(())
    }

    /// Upstream's `validate`: the CIDR count (both families together), then each entry in order:
    /// it parses, it is aligned, and it is IPv4 unless `enable_ipv6`.
    pub fn validate(&self, enable_ipv6: bool) -> Result<(), ConfigError> {
        let n = self.non_masquerade_cidrs.len();
        if n as i128 > self.cidr_limit as i128 {
            return Err(ConfigError::TooManyCidrs {
                limit: self.cidr_limit,
                got: n,
            });
        }
        for cidr in &self.non_masquerade_cidrs {
            let net = parse_cidr(cidr)?;
            if !enable_ipv6 && net.addr().is_ipv6() {
                return Err(ConfigError::Ipv6NotEnabled(cidr.clone()));
            }
        }
        Ok(())
    }

    /// The valid non-masquerade networks of one family, in config order.
    pub fn nets(&self, family: IpFamily) -> Vec<IpNet> {
        self.non_masquerade_cidrs
            .iter()
            .filter_map(|c| parse_cidr(c).ok())
            .filter(|n| family_of(n.addr()) == family)
            .collect()
    }

    /// The config as upstream logs it (`Using config: {...}`).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "nonMasqueradeCIDRs": self.non_masquerade_cidrs,
            "cidrLimit": self.cidr_limit,
            "masqLinkLocal": self.masq_link_local,
            "masqLinkLocalIPv6": self.masq_link_local_ipv6,
            "resyncInterval": format_go_duration(self.resync_interval),
        })
    }
}

/// Go's `net.ParseCIDR` plus upstream's alignment test.
fn parse_cidr(cidr: &str) -> Result<IpNet, ConfigError> {
    let parse_err = || ConfigError::CidrParse { cidr: cidr.into() };
    let (addr, len) = cidr.split_once('/').ok_or_else(parse_err)?;
    // Go accepts only decimal prefix lengths without sign.
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || addr.contains('%') {
        return Err(parse_err());
    }
    let ip: IpAddr = addr.parse().map_err(|_| parse_err())?;
    let net = IpNet::new(ip, len.parse().map_err(|_| parse_err())?).map_err(|_| parse_err())?;
    if net.network() != ip {
        return Err(ConfigError::CidrNotAligned {
            cidr: cidr.into(),
            ip: ip.to_string(),
            network: net.trunc().to_string(),
        });
    }
    Ok(net)
}

fn family_of(ip: IpAddr) -> IpFamily {
    if ip.is_ipv4() {
        IpFamily::IPv4
    } else {
        IpFamily::IPv6
    }
}

/// The upstream spelling of a key, matched as `encoding/json` does (exact, else case-folded).
fn field(k: &str) -> Option<&'static str> {
    const KEYS: [&str; 5] = [
        "nonMasqueradeCIDRs",
        "cidrLimit",
        "masqLinkLocal",
        "masqLinkLocalIPv6",
        "resyncInterval",
    ];
    KEYS.iter()
        .find(|f| **f == k)
        .or_else(|| KEYS.iter().find(|f| f.eq_ignore_ascii_case(k)))
        .copied()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's `time.ParseDuration`, in nanoseconds: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` or `0`.
pub fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * unit;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let n = total.round() as i128;
    Some(if neg { -n } else { n })
}

/// Go's `Duration.String` for the durations a config holds (`1m0s`, `5s`, `1.5s`, `500ms`).
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_fraction(nanos, div));
    }
    let h = nanos / 3_600_000_000_000;
    let m = nanos / 60_000_000_000 % 60;
    let s = nanos % 60_000_000_000;
    let secs = format!("{}s", trim_fraction(s, 1_000_000_000));
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

fn trim_fraction(n: u128, div: u128) -> String {
    let whole = n / div;
    let frac = n % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let f = format!("{frac:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> MasqConfig {
        MasqConfig::new(false)
    }

    #[test]
    fn should_parse_go_durations_as_time_parse_duration_does() {
        for (s, want) in [
            ("60s", Some(60_000_000_000)),
            ("5m", Some(300_000_000_000)),
            ("1h30m", Some(5_400_000_000_000)),
            ("1.5s", Some(1_500_000_000)),
            ("500ms", Some(500_000_000)),
            ("0", Some(0)),
            ("-5s", Some(-5_000_000_000)),
            ("", None),
            ("5", None),
            ("abc", None),
            ("5x", None),
        ] {
            assert_eq!(parse_go_duration(s), want, "{s:?}");
        }
        for (d, want) in [
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(3600), "1h0m0s"),
        ] {
            assert_eq!(format_go_duration(d), want);
        }
    }

    /// Upstream's `TestSyncConfig`, over both syntaxes.
    #[test]
    fn should_lay_yaml_and_json_over_the_defaults_as_upstreams_sync_config() {
        let all_keys = MasqConfig {
            non_masquerade_cidrs: vec!["172.16.0.0/12".into(), "10.0.0.0/8".into()],
            cidr_limit: 64,
            masq_link_local: true,
            masq_link_local_ipv6: false,
            resync_interval: Duration::from_secs(5),
        };
        let cases: Vec<(&str, &str, MasqConfig)> = vec![
            (
                "valid yaml file, all keys",
                "\nnonMasqueradeCIDRs:\n  - 172.16.0.0/12\n  - 10.0.0.0/8\ncidrLimit: 64\nmasqLinkLocal: true\nresyncInterval: 5s\n",
                all_keys.clone(),
            ),
            (
                "valid yaml file, just nonMasqueradeCIDRs",
                "nonMasqueradeCIDRs:\n  - 192.168.0.0/16\n",
                MasqConfig {
                    non_masquerade_cidrs: vec!["192.168.0.0/16".into()],
                    ..defaults()
                },
            ),
            (
                "valid yaml file, just masqLinkLocal",
                "masqLinkLocal: true\n",
                MasqConfig {
                    masq_link_local: true,
                    ..defaults()
                },
            ),
            (
                "valid yaml file, just resyncInterval",
                "resyncInterval: 5m\n",
                MasqConfig {
                    resync_interval: Duration::from_secs(300),
                    ..defaults()
                },
            ),
            (
                "valid json file, all keys",
                r#"{"nonMasqueradeCIDRs": ["172.16.0.0/12", "10.0.0.0/8"], "masqLinkLocal": true, "resyncInterval": "5s"}"#,
                all_keys.clone(),
            ),
            (
                "valid json file, just resyncInterval but escaped",
                "{\n\t\"resyncInterval\": \"\\u0035\\u006d\"\n}\n",
                MasqConfig {
                    resync_interval: Duration::from_secs(300),
                    ..defaults()
                },
            ),
            (
                "valid json file, all keys with ipv6 cidr",
                r#"  {"nonMasqueradeCIDRs": ["172.16.0.0/12", "10.0.0.0/8", "fc00::/7"], "masqLinkLocal": true, "resyncInterval": "5s"}"#,
                MasqConfig {
                    non_masquerade_cidrs: vec![
                        "172.16.0.0/12".into(),
                        "10.0.0.0/8".into(),
                        "fc00::/7".into(),
                    ],
                    ..all_keys.clone()
                },
            ),
            (
                "an explicit empty list really is empty",
                "nonMasqueradeCIDRs: []\nmasqLinkLocalIPv6: true\n",
                MasqConfig {
                    non_masquerade_cidrs: vec![],
                    masq_link_local_ipv6: true,
                    ..defaults()
                },
            ),
            ("an empty file is the defaults", "", defaults()),
            (
                "keys match case-insensitively, unknown keys are ignored",
                "NonMasqueradeCIDRs: [10.0.0.0/8]\nfoo: bar\n",
                MasqConfig {
                    non_masquerade_cidrs: vec!["10.0.0.0/8".into()],
                    ..defaults()
                },
            ),
        ];
        for (desc, text, want) in cases {
            assert_eq!(MasqConfig::parse(text, false, true), Ok(want), "{desc}");
        }
    }

    #[test]
    fn should_refuse_syntax_and_type_errors_naming_the_key() {
        let e = MasqConfig::parse("*", false, true).unwrap_err();
        assert!(matches!(e, ConfigError::Yaml(_)), "{e}");
        assert!(e.to_string().starts_with("yaml: "));
        let e = MasqConfig::parse("{*", false, true).unwrap_err();
        assert!(matches!(e, ConfigError::Json(_)), "{e}");
        for (text, want) in [
            (
                "cidrLimit: \"64\"",
                "json: cannot unmarshal string into Go struct field MasqConfig.cidrLimit of type int",
            ),
            (
                "nonMasqueradeCIDRs: 10.0.0.0/8",
                "json: cannot unmarshal string into Go struct field MasqConfig.nonMasqueradeCIDRs of type []string",
            ),
            (
                "masqLinkLocal: yes please",
                "json: cannot unmarshal string into Go struct field MasqConfig.masqLinkLocal of type bool",
            ),
            ("resyncInterval: soon", "time: invalid duration \"soon\""),
            (
                "resyncInterval: 0s",
                "resyncInterval must be positive, but got \"0s\"",
            ),
            (
                "- 10.0.0.0/8",
                "json: cannot unmarshal array into Go value of type main.MasqConfig",
            ),
        ] {
            assert_eq!(
                MasqConfig::parse(text, false, true)
                    .unwrap_err()
                    .to_string(),
                want,
                "{text}"
            );
        }
    }

    /// Upstream's `TestConfigValidate` plus the IPv6 and limit rules, both families.
    #[test]
    fn should_validate_with_upstreams_messages_naming_the_bad_entry() {
        let cfg = |cidrs: &[&str]| MasqConfig {
            non_masquerade_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
            ..defaults()
        };
        let cases: Vec<(MasqConfig, bool, Option<&str>)> = vec![
            (cfg(&[]), false, None),
            (defaults(), false, None),
            (MasqConfig::new(true), false, None),
            (
                cfg(&["abcdefg"]),
                false,
                Some(r#"CIDR "abcdefg" could not be parsed, invalid CIDR address: abcdefg"#),
            ),
            (
                cfg(&["10.0.0.0/8", "abcdefg"]),
                false,
                Some(r#"CIDR "abcdefg" could not be parsed, invalid CIDR address: abcdefg"#),
            ),
            (
                cfg(&["10.256.0.0/16"]),
                false,
                Some(
                    r#"CIDR "10.256.0.0/16" could not be parsed, invalid CIDR address: 10.256.0.0/16"#,
                ),
            ),
            (
                cfg(&["10.0.0.0/33"]),
                false,
                Some(
                    r#"CIDR "10.0.0.0/33" could not be parsed, invalid CIDR address: 10.0.0.0/33"#,
                ),
            ),
            (
                cfg(&["10.0.0.1/8"]),
                false,
                Some(
                    r#"CIDR "10.0.0.1/8" is not aligned to a CIDR block, ip: "10.0.0.1" network: "10.0.0.0/8""#,
                ),
            ),
            (
                cfg(&["fc00::1/48"]),
                true,
                Some(
                    r#"CIDR "fc00::1/48" is not aligned to a CIDR block, ip: "fc00::1" network: "fc00::/48""#,
                ),
            ),
            (
                cfg(&["10.244.0.0/16", "fc00::/7"]),
                false,
                Some(
                    "ipv6 is not enabled, but ipv6 cidr fc00::/7 provided. Enable ipv6 using --enable-ipv6 agent flag",
                ),
            ),
            (cfg(&["10.244.0.0/16", "fc00::/7"]), true, None),
            (
                MasqConfig {
                    cidr_limit: 1,
                    ..cfg(&["10.0.0.0/8", "fc00::/7"])
                },
                true,
                Some(
                    "the daemon can only accept up to 1 CIDRs (excluding link-local), but got 2 CIDRs (excluding link local)",
                ),
            ),
        ];
        for (c, v6, want) in cases {
            assert_eq!(
                c.validate(v6).err().map(|e| e.to_string()).as_deref(),
                want,
                "{:?}",
                c.non_masquerade_cidrs
            );
        }
    }

    #[test]
    fn should_split_one_list_by_family_in_config_order() {
        let c = MasqConfig {
            non_masquerade_cidrs: vec![
                "fc00::/7".into(),
                "10.244.0.0/16".into(),
                "2001:db8::/32".into(),
                "192.168.0.0/16".into(),
            ],
            ..defaults()
        };
        let s = |f| {
            c.nets(f)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(s(IpFamily::IPv4), ["10.244.0.0/16", "192.168.0.0/16"]);
        assert_eq!(s(IpFamily::IPv6), ["fc00::/7", "2001:db8::/32"]);
    }

    #[test]
    fn should_default_to_rfc1918_and_add_the_reserved_ranges_in_upstreams_order() {
        assert_eq!(defaults().non_masquerade_cidrs, DEFAULT_NON_MASQ);
        assert_eq!(
            MasqConfig::new(true).non_masquerade_cidrs[3..],
            RESERVED_NON_MASQ.map(String::from)
        );
        assert_eq!(
            defaults().to_json().to_string(),
            r#"{"nonMasqueradeCIDRs":["10.0.0.0/8","172.16.0.0/12","192.168.0.0/16"],"cidrLimit":64,"masqLinkLocal":false,"masqLinkLocalIPv6":false,"resyncInterval":"1m0s"}"#
        );
    }
}
