//! The kernel edge of the node side: everything that touches namespaces, links, routes,
//! processes and mounts lives here, behind small functions that the agent, the CNI plugin and
//! the lab call. Start with [`netns`]: named network namespaces as bind-mounted nsfs files at
//! any path (not only `/run/netns`), so several labs and test runs never share names;
//! [`netlink`]: links (bridges, veth pairs), addresses and routes over rtnetlink in one
//! namespace; [`sysctl`]: `/proc/sys/net` entries of the calling thread's namespace.
//!
//! Everything here needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); tests that need it are marked
//! `#[ignore = "needs root"]` where they cannot run otherwise and run as root in CI.

pub mod mount;
pub mod netlink;
pub mod netns;
pub mod process;
pub mod sysctl;

pub use mount::MountError;
pub use netlink::NetlinkError;
pub use netns::NetnsError;
