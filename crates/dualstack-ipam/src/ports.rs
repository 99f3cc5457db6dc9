//! The NodePort allocator (`kubernetes/kubernetes:pkg/registry/core/service/portallocator`).
//!
//! NodePorts are family-independent: one allocator serves both families. Like ClusterIPs, the
//! range has a static band at its bottom (upstream `calculateRangeOffset` for ports:
//! `0 if size <= 16 else clamp(size / 32, 16, 128)`; 86 for the default `30000-32767`) that
//! [`NodePortAllocator::allocate_next`] uses only once the rest is full. The bands are the same
//! bitmaps as the ClusterIP allocator's, so every operation is O(1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::bands::BandedAllocator;

/// The default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: PortRange = PortRange {
    base: 30000,
    size: 2768,
};

/// Why a port range string cannot be parsed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PortRangeError {
    /// The string is empty.
    #[error("port range is empty")]
    Empty,
    /// The string is not `N`, `N-M` or `N+M` with decimal numbers.
    #[error("unable to parse port range: {value}")]
    Unparsable {
        /// The string that was given.
        value: String,
    },
    /// A part that is not a decimal number (Go's `strconv.Atoi` error).
    #[error("strconv.Atoi: parsing {part:?}: invalid syntax")]
    NotANumber {
        /// The part that is not a number.
        part: String,
    },
    /// A port above 65535.
    #[error("the port range cannot be greater than 65535: {value}")]
    TooLarge {
        /// The string that was given.
        value: String,
    },
    /// The last port is below the first.
    #[error("end port cannot be less than start port: {value}")]
    Reversed {
        /// The string that was given.
        value: String,
    },
}

/// Why a port allocation, dry run or restore failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PortAllocError {
    /// Every port is taken.
    #[error("range is full")]
    Full,
    /// The requested port is already allocated.
    #[error("provided port is already allocated")]
    Allocated,
    /// The requested port is outside the range.
    #[error("provided port is not in the valid range. The range of valid ports is {range}")]
    NotInRange {
        /// The allocator's range.
        range: PortRange,
    },
    /// A snapshot of a different range was given to restore.
    #[error("the provided port range does not match the current port range")]
    MismatchedRange,
}

/// An inclusive range of ports, written `first-last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    base: u16,
    /// 1 ..= 65536.
    size: u32,
}

impl PortRange {
    /// The ports `first..=last`; `None` when `last < first`.
    pub fn new(first: u16, last: u16) -> Option<Self> {
        (first <= last).then(|| PortRange {
            base: first,
            size: u32::from(last - first) + 1,
        })
    }

    /// Parses `N-M`, `N+M` (N to N+M) or a single port `N`, like upstream `net.ParsePortRange`.
    /// Surrounding whitespace is ignored; an empty string is refused.
    pub fn parse(value: &str) -> Result<Self, PortRangeError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(PortRangeError::Empty);
        }
        let unparsable = || PortRangeError::Unparsable {
            value: value.to_string(),
        };
        let number = |s: &str| -> Result<u64, PortRangeError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(PortRangeError::NotANumber {
                    part: s.to_string(),
                });
            }
            // Saturate absurdly long numbers: they are "too large", not unparsable.
            Ok(s.parse::<u64>().unwrap_or(u64::MAX))
        };
        let (low, high) = match (v.find('-'), v.find('+')) {
            (None, None) => {
                let port = number(v)?;
                (port, port)
            }
            (Some(i), None) => (number(&v[..i])?, number(&v[i + 1..])?),
            (None, Some(i)) => {
                let low = number(&v[..i])?;
                (low, low.saturating_add(number(&v[i + 1..])?))
            }
            (Some(_), Some(_)) => return Err(unparsable()),
        };
        let (Ok(first), Ok(last)) = (u16::try_from(low), u16::try_from(high)) else {
            return Err(PortRangeError::TooLarge {
                value: value.to_string(),
            });
        };
        PortRange::new(first, last).ok_or_else(|| PortRangeError::Reversed {
            value: value.to_string(),
        })
    }

    /// The first port.
    pub fn first(&self) -> u16 {
        self.base
    }

    /// The last port.
    pub fn last(&self) -> u16 {
        // size >= 1 and base + size - 1 <= 65535 by construction.
        (u32::from(self.base) + self.size - 1) as u16
    }

    /// How many ports the range holds.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        port >= self.base && u32::from(port - self.base) < self.size
    }

    /// The KEP-3070 static band size for ports (upstream `calculateRangeOffset`).
    pub fn static_band_size(&self) -> u32 {
        const MIN: u32 = 16;
        const MAX: u32 = 128;
        const STEP: u32 = 32;
        if self.size <= MIN {
            0
        } else {
            (self.size / STEP).clamp(MIN, MAX)
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first(), self.last())
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PortRange::parse(s)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        PortRange::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The saved state of a [`NodePortAllocator`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSnapshot {
    /// The port range, as `first-last`.
    pub range: PortRange,
    /// Every allocated port, in increasing order.
    pub allocated: Vec<u16>,
}

/// Allocates NodePorts out of one [`PortRange`].
#[derive(Clone, Debug)]
pub struct NodePortAllocator {
    range: PortRange,
    alloc: BandedAllocator,
}

impl NodePortAllocator {
    /// An empty allocator, seeded deterministically from the range.
    pub fn new(range: PortRange) -> Self {
        let seed = (u64::from(range.base) << 32) ^ u64::from(range.size) ^ 0x6e6f_6465_706f_7274;
        Self::with_seed(range, seed)
    }

    /// An empty allocator whose random choices follow `seed`.
    pub fn with_seed(range: PortRange, seed: u64) -> Self {
        NodePortAllocator {
            range,
            alloc: BandedAllocator::new(
                u64::from(range.size),
                u64::from(range.static_band_size()),
                seed,
            ),
        }
    }

    /// Restarts the random sequence from `seed` (the allocated set is kept).
    pub fn reseed(&mut self, seed: u64) {
        self.alloc.reseed(seed);
    }

    /// The port range.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// How many ports are allocated.
    pub fn used(&self) -> u32 {
        self.alloc.used() as u32
    }

    /// How many ports are free.
    pub fn free(&self) -> u32 {
        self.alloc.free() as u32
    }

    fn offset(&self, port: u16) -> Result<u64, PortAllocError> {
        if self.range.contains(port) {
            Ok(u64::from(port - self.range.base))
        } else {
            Err(PortAllocError::NotInRange { range: self.range })
        }
    }

    fn port_at(&self, offset: u64) -> u16 {
        // offset < size, so the sum is at most the last port.
        (u64::from(self.range.base) + offset) as u16
    }

    /// Whether `port` is allocated.
    pub fn has(&self, port: u16) -> bool {
        self.offset(port).is_ok_and(|o| self.alloc.has(o))
    }

    /// Allocates the requested port.
    pub fn allocate(&mut self, port: u16) -> Result<(), PortAllocError> {
        let offset = self.offset(port)?;
        if self.alloc.allocate(offset) {
            Ok(())
        } else {
            Err(PortAllocError::Allocated)
        }
    }

    /// Allocates a random free port, outside the static band while possible.
    pub fn allocate_next(&mut self) -> Result<u16, PortAllocError> {
        let offset = self.alloc.allocate_next().ok_or(PortAllocError::Full)?;
        Ok(self.port_at(offset))
    }

    /// Frees `port`; true when it was allocated. Other ports are ignored.
    pub fn release(&mut self, port: u16) -> bool {
        self.offset(port).is_ok_and(|o| self.alloc.release(o))
    }

    /// Checks that [`NodePortAllocator::allocate`] would succeed, without changing anything.
    pub fn dry_run_allocate(&self, port: u16) -> Result<(), PortAllocError> {
        if self.alloc.has(self.offset(port)?) {
            Err(PortAllocError::Allocated)
        } else {
            Ok(())
        }
    }

    /// The port the next [`NodePortAllocator::allocate_next`] would return, without changing
    /// anything.
    pub fn dry_run_allocate_next(&self) -> Result<u16, PortAllocError> {
        let offset = self.alloc.peek_next().ok_or(PortAllocError::Full)?;
        Ok(self.port_at(offset))
    }

    /// The current state, to persist.
    pub fn snapshot(&self) -> PortSnapshot {
        PortSnapshot {
            range: self.range,
            allocated: self
                .alloc
                .allocated()
                .into_iter()
                .map(|o| self.port_at(o))
                .collect(),
        }
    }

    /// Replaces the state with a snapshot's. The range must match
    /// ([`PortAllocError::MismatchedRange`]) and every port must be in it
    /// ([`PortAllocError::NotInRange`]); on error nothing changes.
    pub fn restore(&mut self, snapshot: &PortSnapshot) -> Result<(), PortAllocError> {
        if snapshot.range != self.range {
            return Err(PortAllocError::MismatchedRange);
        }
        let offsets = snapshot
            .allocated
            .iter()
            .map(|&p| self.offset(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.alloc.replace_with(offsets);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn range(s: &str) -> PortRange {
        PortRange::parse(s).unwrap()
    }

    #[test]
    fn should_parse_upstream_port_range_notations() {
        let cases = [
            ("30000-32767", 30000, 32767),
            ("  30000-32767 ", 30000, 32767),
            ("80", 80, 80),
            ("80+8", 80, 88),
            ("0-65535", 0, 65535),
            ("65535", 65535, 65535),
            ("10-10", 10, 10),
        ];
        for (text, first, last) in cases {
            let r = range(text);
            assert_eq!((r.first(), r.last()), (first, last), "{text}");
            assert_eq!(r.size(), u32::from(last - first) + 1);
        }
        assert_eq!(range("30000-32767"), DEFAULT_NODE_PORT_RANGE);
        assert_eq!(DEFAULT_NODE_PORT_RANGE.to_string(), "30000-32767");
    }

    #[test]
    fn should_refuse_bad_port_ranges_with_clear_messages() {
        let cases = [
            ("", "port range is empty"),
            ("  ", "port range is empty"),
            // Upstream's net.ParsePortRange returns strconv.Atoi's error for a part that is
            // not a number, and its own message only when both '-' and '+' appear.
            ("abc", r#"strconv.Atoi: parsing "abc": invalid syntax"#),
            (
                "30000-abc",
                r#"strconv.Atoi: parsing "abc": invalid syntax"#,
            ),
            ("1-", r#"strconv.Atoi: parsing "": invalid syntax"#),
            ("-5", r#"strconv.Atoi: parsing "": invalid syntax"#),
            ("1-2-3", r#"strconv.Atoi: parsing "2-3": invalid syntax"#),
            ("1-2+3", "unable to parse port range: 1-2+3"),
            ("1 - 2", r#"strconv.Atoi: parsing "1 ": invalid syntax"#),
            ("+5", r#"strconv.Atoi: parsing "": invalid syntax"#),
            (
                "30000-70000",
                "the port range cannot be greater than 65535: 30000-70000",
            ),
            (
                "65535+1",
                "the port range cannot be greater than 65535: 65535+1",
            ),
            (
                "99999999999999999999999",
                "the port range cannot be greater than 65535: 99999999999999999999999",
            ),
            (
                "32767-30000",
                "end port cannot be less than start port: 32767-30000",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(
                PortRange::parse(text).unwrap_err().to_string(),
                message,
                "{text:?}"
            );
        }
    }

    #[test]
    fn should_compute_the_upstream_port_offset() {
        // upstream Test_calculateRangeOffset (portallocator): sizes 2768, 10, 16, 128, 2048, 4096.
        let cases = [
            ("30000-32767", 86),
            ("30000-30009", 0),
            ("30000-30015", 0),
            ("30000-30127", 16),
            ("30000-32047", 64),
            ("30000-34095", 128),
            ("1-65535", 128),
            ("80", 0),
        ];
        for (text, offset) in cases {
            assert_eq!(range(text).static_band_size(), offset, "{text}");
        }
    }

    #[test]
    fn should_report_upstream_errors() {
        let mut a = NodePortAllocator::new(DEFAULT_NODE_PORT_RANGE);
        a.allocate(30080).unwrap();
        assert_eq!(
            a.allocate(30080).unwrap_err().to_string(),
            "provided port is already allocated"
        );
        for port in [29999, 32768, 80] {
            assert_eq!(
                a.allocate(port).unwrap_err().to_string(),
                "provided port is not in the valid range. The range of valid ports is 30000-32767"
            );
        }
        assert_eq!(a.dry_run_allocate(30080), Err(PortAllocError::Allocated));
        assert_eq!(a.dry_run_allocate(30081), Ok(()));
        assert!(!a.has(30081));
    }

    #[test]
    fn should_fill_the_dynamic_band_first_then_the_static_band() {
        let r = range("30000-30099"); // size 100: offset 16
        let mut a = NodePortAllocator::with_seed(r, 5);
        let mut seen = BTreeSet::new();
        for _ in 0..84 {
            let p = a.allocate_next().unwrap();
            assert!(p >= 30016, "{p}");
            assert!(seen.insert(p));
        }
        for _ in 0..16 {
            let p = a.allocate_next().unwrap();
            assert!(p < 30016, "{p}");
            assert!(seen.insert(p));
        }
        assert_eq!(a.allocate_next().unwrap_err().to_string(), "range is full");
        assert_eq!(a.free(), 0);
        assert_eq!(a.used(), 100);
        assert!(a.release(30005));
        assert!(!a.release(30005));
        assert!(!a.release(1));
        assert_eq!(a.dry_run_allocate_next(), Ok(30005));
        assert_eq!(a.allocate_next(), Ok(30005));
    }

    /// Upstream `TestNewFromSnapshot` (portallocator).
    #[test]
    fn should_count_free_and_used_ports_after_a_restore() {
        let mut a = NodePortAllocator::new(range("200-300"));
        let allocated: Vec<u16> = (0..50).map(|_| a.allocate_next().unwrap()).collect();
        let mut b = NodePortAllocator::new(range("200-300"));
        b.restore(&a.snapshot()).unwrap();
        assert_eq!(b.free(), 51);
        assert_eq!(b.used(), 50);
        assert!(allocated.iter().all(|&p| b.has(p)));
    }

    #[test]
    fn should_allocate_the_whole_port_space() {
        let mut a = NodePortAllocator::new(range("0-65535"));
        assert_eq!(a.free(), 65536);
        a.allocate(0).unwrap();
        a.allocate(65535).unwrap();
        assert!(a.has(0) && a.has(65535));
        assert_eq!(a.snapshot().allocated, vec![0, 65535]);
    }

    #[test]
    fn should_restore_a_snapshot_and_refuse_a_mismatched_one() {
        let mut a = NodePortAllocator::new(DEFAULT_NODE_PORT_RANGE);
        for _ in 0..50 {
            a.allocate_next().unwrap();
        }
        let json = serde_json::to_string(&a.snapshot()).unwrap();
        assert!(json.contains("\"30000-32767\""), "{json}");
        let snap: PortSnapshot = serde_json::from_str(&json).unwrap();
        let mut b = NodePortAllocator::new(DEFAULT_NODE_PORT_RANGE);
        b.restore(&snap).unwrap();
        assert_eq!(b.snapshot(), a.snapshot());
        assert_eq!(b.used(), 50);

        let mut other = NodePortAllocator::new(range("30000-32000"));
        assert_eq!(
            other.restore(&snap).unwrap_err().to_string(),
            "the provided port range does not match the current port range"
        );
        let bad = PortSnapshot {
            range: DEFAULT_NODE_PORT_RANGE,
            allocated: vec![30001, 80],
        };
        assert_eq!(
            b.restore(&bad),
            Err(PortAllocError::NotInRange {
                range: DEFAULT_NODE_PORT_RANGE
            })
        );
        assert_eq!(b.used(), 50);
    }
}
