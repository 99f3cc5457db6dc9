//! Applying the proxier's transactions to the kernel, behind the narrow [`NftApplier`] trait:
//! [`NftCommand`] sends each transaction as one netlink batch of our own encoding
//! (`dualstack_proxy::netlink`, sent by `netlink.rs`), and runs the `nft` binary only for the
//! NAT probe; [`RecordingApplier`] keeps what it was given and can be told to fail, for tests.
//!
//! Not `nft -f -`: nft parses the text and reads the table back first, which took 2 s of a
//! full load of 10,000 Services; not libnftables JSON (`nft -j`, what the `nftables` crate
//! speaks) either: nft 1.0.6's JSON cannot declare our backend maps (their data is a
//! concatenation), and it parsed a third slower still (BENCHMARKS.md).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use dualstack_ipam::IpFamily;
use dualstack_proxy::Transaction;
use dualstack_proxy::nft::TABLE;

use crate::ProxyRunError;

/// Applies nftables transactions and checks what the kernel supports.
pub trait NftApplier: Send + Sync {
    /// Applies one family's transaction atomically (all or nothing).
    fn apply(&self, tx: &Transaction) -> Result<(), ProxyRunError>;

    /// Whether the kernel can hold our table with NAT chains in `family`: a table with a nat
    /// chain is created and deleted again in one batch, so nothing is left either way.
    fn probe_nat(&self, family: IpFamily) -> Result<(), ProxyRunError>;
}

/// The real thing: a netfilter netlink socket per family (opened by the first transaction, in
/// the namespace of the thread that applies it, and kept), and the `nft` binary (Debian's
/// `nftables` package) for the NAT probe.
#[derive(Debug, Clone)]
pub struct NftCommand {
    /// The `nft` executable.
    pub program: String,
    netlink: Arc<[Mutex<Option<crate::netlink::Conn>>; 2]>,
}

impl Default for NftCommand {
    fn default() -> Self {
        NftCommand {
            program: "nft".to_string(),
            netlink: Arc::new([Mutex::new(None), Mutex::new(None)]),
        }
    }
}

impl NftCommand {
    fn run(&self, args: &[&str], input: &[u8], what: &str) -> Result<(), ProxyRunError> {
        let io = |source| ProxyRunError::Nft {
            what: what.to_string(),
            detail: format!("running {}: {source}", self.program),
        };
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io)?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // Write from this thread and read stderr after: nft reads all input before it says
        // anything, so the pipes cannot deadlock.
        let wrote = stdin.write_all(input);
        drop(stdin);
        let out = child.wait_with_output().map_err(io)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let mut detail: String = stderr.lines().take(8).collect::<Vec<_>>().join("; ");
            if detail.is_empty() {
                detail = format!("{} exited with {}", self.program, out.status);
            }
            return Err(ProxyRunError::Nft {
                what: what.to_string(),
                detail,
            });
        }
        wrote.map_err(io)
    }
}

fn family_word(f: IpFamily) -> &'static str {
    match f {
        IpFamily::IPv4 => "ip",
        IpFamily::IPv6 => "ip6",
    }
}

impl NftApplier for NftCommand {
    fn apply(&self, tx: &Transaction) -> Result<(), ProxyRunError> {
        let what = format!(
            "applying {} {} transaction of {} operations to table {} {TABLE}",
            if tx.full { "a full" } else { "an incremental" },
            tx.family,
            tx.ops.len(),
            family_word(tx.family)
        );
        // One netlink batch per transaction, encoded by us: no text to parse, no table read
        // back first (what `nft -f` spends its time on).
        let slot = &self.netlink[usize::from(tx.family == IpFamily::IPv6)];
        let mut conn = slot.lock().expect("not poisoned");
        if conn.is_none() {
            *conn = Some(crate::netlink::Conn::open(&what)?);
        }
        let result = conn.as_mut().expect("opened above").apply(tx, &what);
        if result.is_err() {
            // A fresh socket next time: nothing of a failed exchange lingers.
            *conn = None;
        }
        result
    }

    fn probe_nat(&self, family: IpFamily) -> Result<(), ProxyRunError> {
        if family == IpFamily::IPv6 && ipv6_disabled() {
            return Err(ProxyRunError::Nft {
                what: "checking IPv6".to_string(),
                detail: "IPv6 is disabled on this node (net.ipv6.conf.all.disable_ipv6 = 1 or no IPv6 in the kernel)".to_string(),
            });
        }
        let f = family_word(family);
        let t = format!("{TABLE}-probe");
        let text = format!(
            "add table {f} {t}\n\
             add chain {f} {t} nat-probe {{ type nat hook postrouting priority 100 ; }}\n\
             add chain {f} {t} filter-probe {{ type filter hook input priority 0 ; }}\n\
             add rule {f} {t} filter-probe meta l4proto tcp reject with tcp reset\n\
             delete table {f} {t}\n"
        );
        self.run(
            &["-f", "-"],
            text.as_bytes(),
            &format!("creating an {family} table with a NAT chain"),
        )
    }
}

fn ipv6_disabled() -> bool {
    match std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6") {
        Ok(s) => s.trim() == "1",
        Err(_) => true,
    }
}

/// What a [`RecordingApplier`] saw.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Every transaction applied, in order (failed ones included).
    pub applied: Vec<Transaction>,
    /// How many of the next `apply` calls fail.
    pub fail_next: usize,
    /// Families whose NAT probe fails.
    pub no_nat: Vec<IpFamily>,
}

/// A fake for tests: records every transaction; can fail applies and NAT probes.
#[derive(Debug, Clone, Default)]
pub struct RecordingApplier {
    /// The shared record.
    pub state: Arc<Mutex<Recorded>>,
}

impl RecordingApplier {
    /// The transactions applied so far.
    pub fn applied(&self) -> Vec<Transaction> {
        self.state.lock().expect("not poisoned").applied.clone()
    }
}

impl NftApplier for RecordingApplier {
    fn apply(&self, tx: &Transaction) -> Result<(), ProxyRunError> {
        let mut s = self.state.lock().expect("not poisoned");
        s.applied.push(tx.clone());
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(ProxyRunError::Nft {
                what: format!("applying a {} transaction", tx.family),
                detail: "injected failure".to_string(),
            });
        }
        Ok(())
    }

    fn probe_nat(&self, family: IpFamily) -> Result<(), ProxyRunError> {
        if self
            .state
            .lock()
            .expect("not poisoned")
            .no_nat
            .contains(&family)
        {
            return Err(ProxyRunError::Nft {
                what: format!("creating an {family} table with a NAT chain"),
                detail: "injected: no NAT support".to_string(),
            });
        }
        Ok(())
    }
}
