//! The DNS server's sockets: hickory-server's `Server` on UDP and TCP listeners, with our
//! [`Handler`] answering from the current [`ClusterView`] through [`Zone::answer`].
//!
//! Names outside the cluster domain (and reverse names of addresses that are not ours) are
//! forwarded to the upstream resolvers (`--upstream`, by default the `nameserver`s of
//! `/etc/resolv.conf`, as CoreDNS's `forward . /etc/resolv.conf`), each tried once with a 2 s
//! timeout; when none answers the reply is SERVFAIL, and with no upstream at all it is REFUSED
//! at once (the lab has no upstream: a pod's resolver then moves on without waiting).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::Error;
use crate::records::{Outcome, Zone};
use crate::view::ClusterView;

/// How long one upstream gets to answer a forwarded query.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP connection may stay idle.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// The EDNS payload size we advertise (the DNS flag day 2020 value).
const MAX_PAYLOAD: u16 = 1232;

/// Answers one request: cluster names from the view, the rest forwarded or refused.
pub struct Handler {
    zone: Zone,
    view: watch::Receiver<Arc<ClusterView>>,
    upstreams: Vec<SocketAddr>,
}

impl Handler {
    /// A handler for `zone` reading the view from `view` and forwarding to `upstreams`.
    pub fn new(
        zone: Zone,
        view: watch::Receiver<Arc<ClusterView>>,
        upstreams: Vec<SocketAddr>,
    ) -> Handler {
        Handler {
            zone,
            view,
            upstreams,
        }
    }

    /// Forwards the raw query to each upstream in turn; the first answer wins.
    async fn forward(&self, raw: &[u8]) -> Option<Message> {
        for up in &self.upstreams {
            match crate::client::exchange_udp(*up, raw, UPSTREAM_TIMEOUT).await {
                Ok(bytes) => match Message::from_vec(&bytes) {
                    Ok(m) => return Some(m),
                    Err(e) => tracing::debug!(%up, error = %e, "bad upstream answer"),
                },
                Err(e) => tracing::debug!(%up, error = %e, "upstream failed"),
            }
        }
        None
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, MAX_PAYLOAD));
            e.set_version(0);
            e
        });
        let builder = || {
            let mut b = MessageResponseBuilder::from_message_request(request);
            if let Some(e) = &edns {
                b.edns(e);
            }
            b
        };
        let mut meta = Metadata::new(
            request.metadata.id,
            MessageType::Response,
            request.metadata.op_code,
        );
        meta.recursion_desired = request.metadata.recursion_desired;
        meta.recursion_available = !self.upstreams.is_empty();
        let error = |code: ResponseCode| {
            let mut m = meta;
            m.response_code = code;
            m
        };
        let sent = if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            response
                .send_response(builder().build_no_records(error(ResponseCode::NotImp)))
                .await
        } else if let Ok(info) = request.request_info() {
            let name = info.query.original().name().clone();
            let qtype = info.query.query_type();
            let view = self.view.borrow().clone();
            match self.zone.answer(&view, &name, qtype) {
                Outcome::Answer(a) => {
                    let mut m = error(a.code);
                    m.authoritative = true;
                    response
                        .send_response(builder().build(
                            m,
                            a.answers.iter(),
                            a.authority.iter(),
                            std::iter::empty(),
                            a.additionals.iter(),
                        ))
                        .await
                }
                Outcome::NotOurs if self.upstreams.is_empty() => {
                    response
                        .send_response(builder().build_no_records(error(ResponseCode::Refused)))
                        .await
                }
                Outcome::NotOurs => match self.forward(request.as_slice()).await {
                    Some(up) => {
                        let mut m = error(up.metadata.response_code);
                        m.truncation = up.metadata.truncation;
                        response
                            .send_response(builder().build(
                                m,
                                up.answers.iter(),
                                up.authorities.iter(),
                                std::iter::empty(),
                                up.additionals.iter(),
                            ))
                            .await
                    }
                    None => {
                        response
                            .send_response(
                                builder().build_no_records(error(ResponseCode::ServFail)),
                            )
                            .await
                    }
                },
            }
        } else {
            response
                .send_response(builder().build_no_records(error(ResponseCode::FormErr)))
                .await
        };
        match sent {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending a dns response");
                hickory_proto::op::Header {
                    metadata: error(ResponseCode::ServFail),
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}

/// Binds UDP and TCP on every address (port 0: the UDP socket's port is used for TCP too,
/// trying again when that port is taken for TCP).
pub async fn bind(listen: &[SocketAddr]) -> Result<Vec<(UdpSocket, TcpListener)>, Error> {
    let mut out = Vec::new();
    for addr in listen {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let udp = UdpSocket::bind(addr).await.map_err(|e| Error::Io {
                what: format!("binding udp {addr}"),
                source: e,
            })?;
            let bound = udp.local_addr().map_err(|e| Error::Io {
                what: format!("binding udp {addr}"),
                source: e,
            })?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => {
                    out.push((udp, tcp));
                    break;
                }
                Err(e)
                    if addr.port() == 0
                        && e.kind() == std::io::ErrorKind::AddrInUse
                        && attempts < 20 => {}
                Err(e) => {
                    return Err(Error::Io {
                        what: format!("binding tcp {bound}"),
                        source: e,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Serves on the bound sockets until the future is dropped.
pub async fn serve(handler: Handler, sockets: Vec<(UdpSocket, TcpListener)>) -> Result<(), Error> {
    let mut server = Server::new(handler);
    for (udp, tcp) in sockets {
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, 64);
    }
    server
        .block_until_done()
        .await
        .map_err(|e| Error::Proto(e.to_string()))
}
