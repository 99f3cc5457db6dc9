//! Sending an element-only batch ([`dualstack_proxy::netlink::element_batch`]) on a netfilter
//! netlink socket of the calling thread's network namespace, and reading the kernel's
//! acknowledgements. One socket per batch: cheap, and no state to go stale across namespaces.

use std::time::Duration;

use dualstack_proxy::netlink::Batch;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::ProxyRunError;

/// The largest batch sent in one `sendmsg` (the socket's default send buffer is ~208 KiB);
/// larger element-only transactions go through `nft`.
pub const MAX_BATCH_BYTES: usize = 128 * 1024;

/// How long the kernel may take to acknowledge a batch.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

fn err(what: &str, detail: impl std::fmt::Display) -> ProxyRunError {
    ProxyRunError::Nft {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

/// Sends `batch` and waits for every acknowledgement; an error of any message fails the whole
/// batch (the kernel has then applied none of it).
pub fn send(batch: &Batch, what: &str) -> Result<(), ProxyRunError> {
    let mut socket =
        Socket::new(NETLINK_NETFILTER).map_err(|e| err(what, format!("netlink socket: {e}")))?;
    socket
        .bind_auto()
        .map_err(|e| err(what, format!("netlink bind: {e}")))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| err(what, format!("netlink connect: {e}")))?;
    setsockopt(
        &socket,
        sockopt::ReceiveTimeout,
        &TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0),
    )
    .map_err(|e| err(what, format!("netlink timeout: {e}")))?;
    let sent = socket
        .send(&batch.bytes, 0)
        .map_err(|e| err(what, format!("netlink send: {e}")))?;
    if sent != batch.bytes.len() {
        return Err(err(
            what,
            format!("netlink send: {sent} of {} bytes", batch.bytes.len()),
        ));
    }
    let mut pending: Vec<u32> = batch.acked.clone();
    let mut failures = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !pending.is_empty() {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(|e| err(what, format!("netlink receive (acks for {pending:?}): {e}")))?;
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let ty = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
            if len < 16 || at + len > n {
                return Err(err(what, "netlink: a malformed reply"));
            }
            if ty == NLMSG_ERROR && len >= 20 {
                let code = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                // The original header follows; its sequence number names the message.
                let seq = if len >= 36 {
                    u32::from_ne_bytes(buf[at + 28..at + 32].try_into().expect("4 bytes"))
                } else {
                    0
                };
                pending.retain(|s| *s != seq);
                if code != 0 {
                    failures.push(std::io::Error::from_raw_os_error(-code).to_string());
                    // The batch is aborted as a whole; stop waiting for the others.
                    pending.clear();
                }
            } else if ty == NLMSG_DONE {
                pending.clear();
            }
            at += (len + 3) & !3;
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(err(
            what,
            format!("the kernel refused the batch: {}", failures.join("; ")),
        ))
    }
}
