//! A one-query DNS client (UDP, or TCP with the 2-byte length prefix): what `dualstack dns
//! query` and `dualstack bench dns` send, and how the server forwards to its upstreams.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::Error;

/// A query message for `name` `qtype` with recursion desired; `edns` adds an OPT record
/// advertising that payload size.
pub fn query_message(
    id: u16,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
) -> Result<Vec<u8>, Error> {
    let mut n = Name::from_ascii(name).map_err(|e| Error::Name {
        name: name.to_string(),
        source: e,
    })?;
    n.set_fqdn(true);
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(n, qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().map_err(|e| Error::Proto(e.to_string()))
}

/// Sends `query` over UDP and returns the first datagram that comes back.
pub async fn exchange_udp(
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Error> {
    let io = |what: &str| {
        let what = format!("{what} {server}");
        move |source| Error::Io { what, source }
    };
    let local: IpAddr = if server.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sock = UdpSocket::bind((local, 0))
        .await
        .map_err(io("binding a socket for"))?;
    sock.connect(server).await.map_err(io("connecting to"))?;
    sock.send(query).await.map_err(io("sending to"))?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(timeout, sock.recv(&mut buf))
        .await
        .map_err(|_| Error::Timeout { server, timeout })?
        .map_err(io("receiving from"))?;
    buf.truncate(n);
    Ok(buf)
}

/// Sends `query` over TCP (length-prefixed) and reads one answer.
pub async fn exchange_tcp(
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Error> {
    let io = |what: &str| {
        let what = format!("{what} {server}");
        move |source| Error::Io { what, source }
    };
    let work = async {
        let mut s = TcpStream::connect(server)
            .await
            .map_err(io("connecting to"))?;
        let len = u16::try_from(query.len()).map_err(|_| Error::Proto("query too long".into()))?;
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(query);
        s.write_all(&out).await.map_err(io("sending to"))?;
        let len = s.read_u16().await.map_err(io("reading from"))?;
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.map_err(io("reading from"))?;
        Ok(buf)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Error::Timeout { server, timeout })?
}

/// Asks `server` for `name` `qtype` and decodes the answer.
pub async fn query(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
    timeout: Duration,
) -> Result<Message, Error> {
    let id = rand_id();
    let q = query_message(id, name, qtype, (!tcp).then_some(1232))?;
    let bytes = if tcp {
        exchange_tcp(server, &q, timeout).await?
    } else {
        exchange_udp(server, &q, timeout).await?
    };
    let m = Message::from_vec(&bytes).map_err(|e| Error::Proto(e.to_string()))?;
    if m.metadata.id != id {
        return Err(Error::Proto(format!(
            "answer id {} for query id {id}",
            m.metadata.id
        )));
    }
    Ok(m)
}

fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (nanos >> 16)) as u16
}
