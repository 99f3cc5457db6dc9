//! Kernel parameters under `/proc/sys`.
//!
//! Entries of `/proc/sys/net` belong to the network namespace of the thread that opens them,
//! so call [`write_net`] from inside [`crate::netns::run_in`] to change another namespace.
//! Keys are given as path components, not dotted strings, because interface names may contain
//! dots (`net.ipv6.conf.eth0.1.accept_dad` would be ambiguous).

use std::io;
use std::path::PathBuf;

/// The file of `net.<components...>`.
pub fn net_path(components: &[&str]) -> PathBuf {
    let mut p = PathBuf::from("/proc/sys/net");
    for c in components {
        p.push(c);
    }
    p
}

/// Writes `value` to `net.<components...>` in the calling thread's network namespace.
pub fn write_net(components: &[&str], value: &str) -> io::Result<()> {
    std::fs::write(net_path(components), value)
}

/// Reads `net.<components...>` of the calling thread's network namespace, trimmed.
pub fn read_net(components: &[&str]) -> io::Result<String> {
    Ok(std::fs::read_to_string(net_path(components))?
        .trim()
        .to_string())
}
