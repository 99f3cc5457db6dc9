//! Our CNI plugin alone, exactly what `dualstack cni` runs, as a small binary: for measuring
//! the plugin's ADD latency without the start-up cost of the whole `dualstack` binary.
//!
//! ```text
//! cargo build --release -p dualstack-cni --example plugin
//! DUALSTACK_CNI_PLUGIN=target/release/examples/plugin \
//!   cargo test -p dualstack --test cni -- --nocapture hundred
//! ```

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let out = dualstack_cni::plugin::run(&|k| std::env::var(k).ok(), &input);
    if !out.stdout.is_empty() {
        println!("{}", out.stdout);
    }
    if out.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
