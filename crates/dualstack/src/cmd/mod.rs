//! One file per subcommand.

pub mod agent;
pub mod agnhost;
pub mod bench;
pub mod cni;
pub mod controller_manager;
pub mod dns;
pub mod down;
pub mod exec;
pub mod lb;
pub mod masq_agent;
pub mod migrate;
pub mod proxy;
pub mod server;
pub mod shim;
pub mod token;
pub mod up;

/// Logs to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_tracing() {
    init_tracing_with("info");
}

/// Logs to stderr; `RUST_LOG` overrides the `default` filter.
pub fn init_tracing_with(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
