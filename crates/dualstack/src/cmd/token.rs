//! `dualstack token create`: bearer tokens for a server's data directory (admin or node), and
//! optionally a kubeconfig that uses one.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use dualstack_apiserver::auth::{MASTERS_GROUP, NODE_USER_PREFIX, NODES_GROUP, Tokens, UserInfo};

/// `dualstack token ...`
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum TokenCommand {
    /// Print the token of a user, creating it if needed.
    Create(CreateArgs),
}

#[derive(Debug, Clone, Args)]
struct CreateArgs {
    /// The server's data directory.
    #[arg(long = "data-dir", default_value = "./dualstack-data")]
    data_dir: PathBuf,
    /// A token for the node agent of this node (user system:node:NAME, group system:nodes).
    #[arg(long = "node", conflicts_with = "admin")]
    node: Option<String>,
    /// A token with full access (group system:masters).
    #[arg(long = "admin")]
    admin: bool,
    /// Also write a kubeconfig using the token (server URL and CA from DATA_DIR/kubeconfig).
    #[arg(long = "kubeconfig-out")]
    kubeconfig_out: Option<PathBuf>,
}

/// Runs the subcommand.
pub fn run(args: TokenArgs) -> Result<()> {
    match args.command {
        TokenCommand::Create(c) => create(c),
    }
}

fn create(c: CreateArgs) -> Result<()> {
    let user = match (&c.node, c.admin) {
        (Some(n), _) => {
            let errs = dualstack_apimachinery::validation::is_dns1123_subdomain(n);
            if !errs.is_empty() {
                bail!("invalid node name {n:?}: {}", errs.join("; "));
            }
            UserInfo::new(format!("{NODE_USER_PREFIX}{n}"), &[NODES_GROUP])
        }
        (None, true) => UserInfo::new("admin", &[MASTERS_GROUP]),
        (None, false) => bail!("one of --node NAME or --admin is required"),
    };
    let token = Tokens::new(&c.data_dir).ensure(&user)?;
    if let Some(out) = &c.kubeconfig_out {
        let admin = c.data_dir.join("kubeconfig");
        let text = std::fs::read_to_string(&admin).with_context(|| {
            format!("reading {} (start the server once first)", admin.display())
        })?;
        let server = field(&text, "server:").context("no server URL in the admin kubeconfig")?;
        let ca = std::fs::read_to_string(c.data_dir.join("pki/ca.crt"))?;
        dualstack_apiserver::tls::write_kubeconfig(out, &server, &ca, &user.name, &token)?;
    }
    println!("{token}");
    Ok(())
}

fn field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
}
