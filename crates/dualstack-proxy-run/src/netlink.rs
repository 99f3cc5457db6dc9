//! Sending a transaction's batch ([`dualstack_proxy::netlink::batch`]) on a netfilter netlink
//! socket and reading the kernel's answer. The socket is kept open ([`Conn`]).

use std::time::Duration;

use dualstack_proxy::netlink::Batch;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::ProxyRunError;

/// How long the kernel may take to acknowledge a batch (a full load of 10,000 Services takes
/// a fraction of a second).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The receive buffer: a refused batch answers with one error per refused message.
const RECEIVE_BUFFER: usize = 4 << 20;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NLM_F_ACK_TLVS`: an error message carries extended-ack attributes.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

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
    /// The send buffer size set so far (0: the default).
    sndbuf: usize,
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
        // Errors quote only the refused message's header, and say why in words when the kernel
        // has words for it.
        // Room for the errors of a large refused batch (each one a message of its own).
        setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER)
            .map_err(|e| err(what, format!("netlink receive buffer: {e}")))?;
        // Best effort: kernels before 4.3 / 4.12 have neither; errors then quote the whole
        // refused message (still parsed the same way) and carry no text.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        Ok(Conn {
            socket,
            seq: 1,
            sndbuf: 0,
        })
    }

    /// Sends `tx` as one batch and waits for the kernel's answer: all of it applied, or none
    /// of it and an error naming the refused operation.
    pub fn apply(
        &mut self,
        tx: &dualstack_proxy::Transaction,
        what: &str,
    ) -> Result<(), ProxyRunError> {
        let batch = dualstack_proxy::netlink::batch(tx, self.seq);
        // Sequence numbers keep growing on this socket, so a late reply to an earlier batch is
        // never taken for one of this batch.
        self.seq = batch.last_seq.wrapping_add(2);
        if batch.last_seq == batch.first_seq {
            return Ok(()); // nothing between begin and end
        }
        // A batch goes in one `sendmsg`, which the kernel refuses beyond the send buffer:
        // raise it (as nft does; the proxy holds CAP_NET_ADMIN).
        let need = batch.bytes.len() + 4096;
        if need > self.sndbuf {
            setsockopt(&self.socket, sockopt::SndBufForce, &need)
                .map_err(|e| err(what, format!("netlink send buffer of {need} bytes: {e}")))?;
            self.sndbuf = need;
        }
        self.send(tx, &batch, what)
    }

    fn send(
        &self,
        tx: &dualstack_proxy::Transaction,
        batch: &Batch,
        what: &str,
    ) -> Result<(), ProxyRunError> {
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
        let in_batch = |seq: u32| {
            seq.wrapping_sub(batch.first_seq) <= batch.last_seq.wrapping_sub(batch.first_seq)
        };
        let mut failures: Vec<String> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.socket.recv(&mut &mut buf[..], 0) {
                // A signal (the agent reaps its children) is no answer: read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r,
            }
            .map_err(|e| {
                if e.raw_os_error() == Some(105) {
                    // ENOBUFS: more answers than the buffer holds, which only errors make.
                    err(
                        what,
                        format!(
                            "the kernel refused the batch with more errors than fit the socket's buffer; the first: {}",
                            failures.first().map_or("(none read)", String::as_str)
                        ),
                    )
                } else {
                    err(
                        what,
                        format!("netlink receive (waiting for message {}): {e}", batch.last_seq),
                    )
                }
            })?;
            let mut at = 0;
            let mut done = false;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
                let ty = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
                let flags = u16::from_ne_bytes(buf[at + 6..at + 8].try_into().expect("2 bytes"));
                if len < 16 || at + len > n {
                    return Err(err(what, "netlink: a malformed reply"));
                }
                if ty == NLMSG_ERROR && len >= 36 {
                    let code =
                        i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                    // The refused message's header follows; its sequence number names it.
                    let seq =
                        u32::from_ne_bytes(buf[at + 28..at + 32].try_into().expect("4 bytes"));
                    if in_batch(seq) {
                        if code != 0 {
                            let text = if flags & NLM_F_ACK_TLVS != 0 {
                                ext_ack_message(&buf[at + 36..at + len])
                            } else {
                                None
                            };
                            failures.push(describe(tx, batch, seq, code, text));
                        }
                        if seq == batch.last_seq || seq == batch.first_seq {
                            done = true;
                        }
                    }
                } else if ty == NLMSG_DONE {
                    done = true;
                }
                at += (len + 3) & !3;
            }
            if done || failures.len() >= 8 {
                break;
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

/// The kernel's own words for an error (`NLMSGERR_ATTR_MSG`), if it sent any.
fn ext_ack_message(mut attrs: &[u8]) -> Option<String> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if ty == NLMSGERR_ATTR_MSG {
            let s = &attrs[4..len];
            let s = s.split(|c| *c == 0).next().unwrap_or(s);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    None
}

/// "No such file or directory (…) in `add rule ip dualstack-proxy …`".
fn describe(
    tx: &dualstack_proxy::Transaction,
    batch: &Batch,
    seq: u32,
    code: i32,
    text: Option<String>,
) -> String {
    let mut s = std::io::Error::from_raw_os_error(-code).to_string();
    if let Some(t) = text {
        s.push_str(&format!(" ({t})"));
    }
    if let Some(op) = batch.op_of(seq).and_then(|i| tx.ops.get(i)) {
        let text = dualstack_proxy::nft::op_text(tx.family, op);
        let first: String = text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        s.push_str(&format!(" in `{first}`"));
    }
    s
}
