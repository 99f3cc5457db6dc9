//! The pure core of the dual-stack ip-masq-agent (`kubernetes-sigs/ip-masq-agent`, rules in
//! `../shared/spec/upstream-dual-stack.md` §9): its configuration and flags in, one nftables
//! masquerade ruleset per IP family out.
//!
//! Start at [`MasqConfig::parse`] (the config file or the ConfigMap's `config` key, YAML or JSON
//! laid over the defaults, then validated with upstream's messages), then [`render`] with the
//! [`MasqFlags`] for one family: a [`Ruleset`] that replaces our table (`ip dualstack-masq` /
//! `ip6 dualstack-masq`) in one transaction, as `nft -f` text ([`Ruleset::to_text`]) or
//! libnftables JSON ([`Ruleset::to_json`]). The design (table, chain priority, rule order) is in
//! this crate's `README.md`.
//!
//! No tokio, no I/O, no clock.

pub mod config;
pub mod flags;
pub mod ruleset;

pub use config::{ConfigError, MasqConfig};
pub use flags::{FlagError, MasqFlags, PortInterval};
pub use ruleset::{Rule, Ruleset, TABLE, render};
