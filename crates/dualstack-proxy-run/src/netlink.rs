//! Sending an element-only batch ([`dualstack_proxy::netlink::element_batch`]) on a netfilter
//! netlink socket and reading the kernel's acknowledgements. The socket is kept open ([`Conn`]).

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

/// A netfilter netlink socket kept open across syncs: closing one costs the kernel an RCU grace
/// period (~20 ms here), more than the batch itself. It belongs to the network namespace of the
/// thread that opened it.
pub struct Conn {
    socket: Socket,
    seq: u32,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("seq", &self.seq).finish()
    }
}

impl Conn {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open(what: &str) -> Result<Conn, ProxyRunError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)
            .map_err(|e| err(what, format!("netlink socket: {e}")))?;
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
        Ok(Conn { socket, seq: 1 })
    }

    /// Sends the element-only `tx` as one batch and waits for every acknowledgement; an error
    /// of any message fails the whole batch (the kernel has then applied none of it). `None`
    /// when `tx` is not element-only or too large for one batch (the caller uses `nft`).
    pub fn apply(
        &mut self,
        tx: &dualstack_proxy::Transaction,
        what: &str,
    ) -> Option<Result<(), ProxyRunError>> {
        let batch = dualstack_proxy::netlink::element_batch(tx, self.seq)?;
        if batch.bytes.len() > MAX_BATCH_BYTES {
            return None;
        }
        // Sequence numbers keep growing on this socket, so a late reply to an earlier batch is
        // never taken for one of this batch.
        self.seq = self
            .seq
            .wrapping_add(u32::try_from(batch.acked.len()).unwrap_or(u32::MAX))
            .wrapping_add(2);
        Some(self.send(&batch, what))
    }

    fn send(&self, batch: &Batch, what: &str) -> Result<(), ProxyRunError> {
        let sent = self
            .socket
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
            let n = self
                .socket
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
                    let code =
                        i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                    // The original header follows; its sequence number names the message.
                    let seq = if len >= 36 {
                        u32::from_ne_bytes(buf[at + 28..at + 32].try_into().expect("4 bytes"))
                    } else {
                        0
                    };
                    if pending.contains(&seq) {
                        pending.retain(|s| *s != seq);
                        if code != 0 {
                            failures.push(std::io::Error::from_raw_os_error(-code).to_string());
                            // The batch is aborted as a whole; stop waiting for the others.
                            pending.clear();
                        }
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
}
