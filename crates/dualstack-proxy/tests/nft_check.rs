//! The rendered transactions are accepted by the real `nft` in check mode (`nft -c`), full and
//! incremental, and by the kernel in a throwaway network namespace. Needs root and nft (CI runs as root; without root each
//! test says it was skipped).

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dualstack_proxy::{DualStackProxier, Transaction};
use support::*;

fn nft_check(args: &[&str], input: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        let mut e = String::from_utf8_lossy(&out.stderr).into_owned();
        e.truncate(3000);
        Err(e)
    }
}

/// Whether the test can run (root); says why not otherwise.
fn root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
    });
    if !root {
        eprintln!("SKIPPED: needs root and nft");
    }
    root
}

fn check_text(tx: &Transaction, label: &str) {
    let text = tx.to_text();
    nft_check(&["-c", "-f", "-"], &text).unwrap_or_else(|e| panic!("{label} refused:\n{e}"));
}

#[test]
fn nft_accepts_the_full_ruleset_of_every_scenario() {
    if !root() {
        return;
    }
    let (svcs, slices) = world();
    for cfg in [node_config(), node_config_all_nodeports()] {
        let mut p = DualStackProxier::new(&cfg);
        let r = p.update(&svcs, &slices, Instant::now()).unwrap();
        for f in r.families() {
            check_text(&f.transaction, &format!("{:?} full", f.transaction.family));
        }
    }
}

#[test]
fn nft_accepts_full_then_incremental_transactions_in_one_batch() {
    if !root() {
        return;
    }
    let (svcs, slices) = world();
    let mut p = DualStackProxier::new(&node_config());
    let t0 = Instant::now();
    let full = p.update(&svcs, &slices, t0).unwrap();
    // Drop half the Services and every slice of the rest: chains go stale, elements change.
    let half: Vec<_> = svcs.iter().step_by(2).cloned().collect();
    let inc = p
        .update(&half, &[], t0 + Duration::from_millis(10))
        .unwrap();
    for (a, b) in full.families().iter().zip(inc.families()) {
        let text = format!("{}{}", a.transaction.to_text(), b.transaction.to_text());
        nft_check(&["-c", "-f", "-"], &text).unwrap_or_else(|e| panic!("refused:\n{e}"));
    }
}

/// Applies `steps` (nft input files) one after another in a fresh network
/// namespace, then lists the ruleset.
fn apply_in_netns(steps: &[String]) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("dualstack-proxy-nft-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut script = String::from("set -e\n");
    for (i, body) in steps.iter().enumerate() {
        let path = dir.join(format!("step{i}"));
        std::fs::write(&path, body).unwrap();
        script.push_str(&format!("nft -f {}\n", path.display()));
    }
    script.push_str("nft list ruleset\n");
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    if std::env::var_os("KEEP_NFT_STEPS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut e = String::from_utf8_lossy(&out.stderr).into_owned();
        e.truncate(3000);
        Err(e)
    }
}

#[test]
fn kernel_takes_full_incremental_and_stale_chain_deletion_in_a_netns() {
    if !root() {
        return;
    }
    let (svcs, slices) = world();
    let mut p = DualStackProxier::new(&node_config());
    let t0 = Instant::now();
    let full = p.update(&svcs, &slices, t0).unwrap();
    let half: Vec<_> = svcs.iter().step_by(2).cloned().collect();
    let inc = p
        .update(&half, &slices, t0 + Duration::from_millis(10))
        .unwrap();
    let later = p.sync(t0 + Duration::from_secs(2));
    // Back again: chains that were deleted come back.
    let again = p
        .update(&svcs, &slices, t0 + Duration::from_secs(3))
        .unwrap();
    for (i, fam) in [0usize, 1].iter().enumerate() {
        let steps: Vec<String> = [&full, &inc, &later, &again]
            .iter()
            .map(|r| r.families()[*fam].transaction.to_text())
            .filter(|s| !s.is_empty())
            .collect();
        let listed = apply_in_netns(&steps).unwrap_or_else(|e| panic!("family {i}: {e}"));
        assert!(listed.contains("dualstack-proxy"));
        assert!(
            later.families()[*fam]
                .transaction
                .ops
                .iter()
                .any(|o| matches!(o, dualstack_proxy::nft::Op::DeleteChain(_)))
        );
    }
    // What the kernel holds equals a fresh full render of the same inputs.
    let mut fresh = DualStackProxier::new(&node_config());
    fresh.update(&svcs, &slices, t0).unwrap();
    assert_eq!(
        p.family(dualstack_ipam::IpFamily::IPv4).ruleset(),
        fresh.family(dualstack_ipam::IpFamily::IPv4).ruleset()
    );
}
