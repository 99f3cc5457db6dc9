//! SPDY/3.1 as Kubernetes streams use it (kubectl 1.27–1.29 `exec`/`attach`, `port-forward`
//! over plain SPDY, and kubectl 1.31+'s `port-forward` tunnelled in WebSocket messages): the
//! frames (control frames `SYN_STREAM`, `SYN_REPLY`, `RST_STREAM`, `SETTINGS`, `PING`,
//! `GOAWAY`, `HEADERS`, `WINDOW_UPDATE`; data frames), the name/value header blocks with their
//! zlib compression against the protocol's dictionary (one compression context per direction
//! for the whole connection), and a small connection driver: a reader task that turns frames
//! into [`Event`]s (answering `PING`s itself) and a writer for the server's frames.
//!
//! Only what a server of client-initiated streams needs: no server push, no priorities, and no
//! flow-control accounting (the client library, spdystream, neither enforces nor waits for
//! windows).

use std::sync::Arc;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;

/// `FLAG_FIN`: the sender's half of the stream ends with this frame.
pub const FLAG_FIN: u8 = 0x01;

/// The largest frame payload accepted (the length field is 24 bits).
pub const MAX_FRAME: usize = (1 << 24) - 1;

/// The header compression dictionary of SPDY/3 (draft-mbelshe-httpbis-spdy-00, section
/// 2.6.10.1): 1,423 bytes, Adler-32 `0xe3c6a7c2` (the id a peer's zlib stream names).
pub const DICTIONARY: &[u8; 1423] = include_bytes!("spdy_dictionary.bin");

/// Protocol failures.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpdyError {
    /// A control frame of another version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A frame shorter than its type needs.
    #[error("short {0} frame")]
    Short(&'static str),
    /// A header block that does not inflate or parse.
    #[error("bad header block: {0}")]
    Headers(String),
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `SYN_STREAM`: a stream opened by the peer (headers still compressed).
    SynStream {
        /// Stream id.
        id: u32,
        /// `FLAG_FIN`.
        fin: bool,
        /// The compressed header block.
        block: Vec<u8>,
    },
    /// `SYN_REPLY` (compressed headers).
    SynReply {
        /// Stream id.
        id: u32,
        /// `FLAG_FIN`.
        fin: bool,
        /// The compressed header block.
        block: Vec<u8>,
    },
    /// `RST_STREAM`.
    RstStream {
        /// Stream id.
        id: u32,
        /// Status code.
        status: u32,
    },
    /// `PING` with its id.
    Ping(u32),
    /// `GOAWAY`.
    GoAway {
        /// The last stream id the sender accepted.
        last: u32,
    },
    /// A data frame.
    Data {
        /// Stream id.
        id: u32,
        /// `FLAG_FIN`.
        fin: bool,
        /// The payload.
        data: Vec<u8>,
    },
    /// Any other control frame (`SETTINGS`, `HEADERS`, `WINDOW_UPDATE`, ...), ignored.
    Other(u16),
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Parses the first frame of `buf`: `Ok(None)` until a whole frame is there, else the frame
/// and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let flags = buf[4];
    let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let p = &buf[8..8 + len];
    let fin = flags & FLAG_FIN != 0;
    let frame = if buf[0] & 0x80 == 0 {
        Frame::Data {
            id: u32_at(buf, 0) & 0x7fff_ffff,
            fin,
            data: p.to_vec(),
        }
    } else {
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([buf[2], buf[3]]);
        let need = |n: usize, what: &'static str| {
            if p.len() < n {
                Err(SpdyError::Short(what))
            } else {
                Ok(())
            }
        };
        match kind {
            1 => {
                need(10, "SYN_STREAM")?;
                Frame::SynStream {
                    id: u32_at(p, 0) & 0x7fff_ffff,
                    fin,
                    block: p[10..].to_vec(),
                }
            }
            2 => {
                need(4, "SYN_REPLY")?;
                Frame::SynReply {
                    id: u32_at(p, 0) & 0x7fff_ffff,
                    fin,
                    block: p[4..].to_vec(),
                }
            }
            3 => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    id: u32_at(p, 0) & 0x7fff_ffff,
                    status: u32_at(p, 4),
                }
            }
            6 => {
                need(4, "PING")?;
                Frame::Ping(u32_at(p, 0))
            }
            7 => {
                need(4, "GOAWAY")?;
                Frame::GoAway {
                    last: u32_at(p, 0) & 0x7fff_ffff,
                }
            }
            other => Frame::Other(other),
        }
    };
    Ok(Some((frame, 8 + len)))
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(MAX_FRAME);
    let mut out = Vec::with_capacity(8 + len);
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&payload[..len]);
    out
}

/// Encodes a frame (header blocks must already be compressed).
pub fn encode(f: &Frame) -> Vec<u8> {
    let fl = |fin: bool| if fin { FLAG_FIN } else { 0 };
    match f {
        Frame::SynStream { id, fin, block } => {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            p.extend_from_slice(block);
            control(1, fl(*fin), &p)
        }
        Frame::SynReply { id, fin, block } => {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(block);
            control(2, fl(*fin), &p)
        }
        Frame::RstStream { id, status } => {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(3, 0, &p)
        }
        Frame::Ping(id) => control(6, 0, &id.to_be_bytes()),
        Frame::GoAway { last } => {
            let mut p = last.to_be_bytes().to_vec();
            p.extend_from_slice(&0u32.to_be_bytes());
            control(7, 0, &p)
        }
        Frame::Data { id, fin, data } => {
            let len = data.len().min(MAX_FRAME);
            let mut out = Vec::with_capacity(8 + len);
            out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            out.push(fl(*fin));
            out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&data[..len]);
            out
        }
        Frame::Other(kind) => control(*kind, 0, &[]),
    }
}

/// The uncompressed form of a header block: a count, then length-prefixed names and values
/// (all 32-bit big-endian lengths).
pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (headers.len() as u32).to_be_bytes().to_vec();
    for (n, v) in headers {
        for s in [n, v] {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

/// Parses an uncompressed header block (names lower-cased as the protocol requires them).
pub fn parse_header_block(b: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let bad = || SpdyError::Headers("truncated".into());
    let mut i = 0;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let s = b.get(i..i + n).ok_or_else(bad)?;
        i += n;
        Ok(s)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
    let mut out = Vec::new();
    for _ in 0..count {
        let mut pair = Vec::with_capacity(2);
        for _ in 0..2 {
            let n = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            pair.push(String::from_utf8_lossy(take(n)?).to_string());
        }
        let v = pair.pop().expect("two");
        out.push((pair.pop().expect("two").to_ascii_lowercase(), v));
    }
    Ok(out)
}

/// Inflates the peer's header blocks (one zlib stream for the connection).
pub struct Inflater(Decompress);

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inflater")
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater(Decompress::new(true))
    }
}

impl Inflater {
    /// The headers of one compressed block.
    pub fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let err = |e: &dyn std::fmt::Display| SpdyError::Headers(e.to_string());
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.0.total_in();
        loop {
            let done = (self.0.total_in() - start) as usize;
            if done >= block.len() && out.len() < out.capacity() {
                break;
            }
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            match self
                .0
                .decompress_vec(&block[done..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let now = (self.0.total_in() - start) as usize;
                    if now == done && out.len() < out.capacity() {
                        break;
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0.set_dictionary(DICTIONARY).map_err(|e| err(&e))?;
                }
                Err(e) => return Err(err(&e)),
            }
        }
        parse_header_block(&out)
    }
}

/// Compresses our header blocks (one zlib stream for the connection).
pub struct Deflater(Compress);

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deflater")
    }
}

impl Default for Deflater {
    fn default() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(DICTIONARY)
            .expect("a fresh zlib stream takes a dictionary");
        Deflater(c)
    }
}

impl Deflater {
    /// One compressed block of `headers`, flushed so the peer can inflate it at once.
    pub fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let raw = header_block(headers);
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.0.total_in();
        loop {
            let done = (self.0.total_in() - start) as usize;
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let _ = self
                .0
                .compress_vec(&raw[done..], &mut out, FlushCompress::Sync);
            // Done when all input is in and zlib left room (the flush is complete).
            if (self.0.total_in() - start) as usize >= raw.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// What the peer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// It opened a stream with these headers.
    Syn {
        /// Stream id.
        id: u32,
        /// Its headers.
        headers: Vec<(String, String)>,
    },
    /// Data on a stream (`fin`: its half is closed).
    Data {
        /// Stream id.
        id: u32,
        /// The bytes.
        data: Vec<u8>,
        /// End of the peer's half.
        fin: bool,
    },
    /// It reset a stream.
    Reset {
        /// Stream id.
        id: u32,
    },
}

/// The server's side of a connection's writes.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Vec<u8>>,
    deflate: Arc<Mutex<Deflater>>,
}

impl Writer {
    /// Accepts a stream (`SYN_REPLY` without headers). False once the connection is gone.
    pub async fn reply(&self, id: u32) -> bool {
        // Compression and sending stay in order: the peer inflates blocks in sequence.
        let mut d = self.deflate.lock().await;
        let block = d.block(&[]);
        self.tx
            .send(encode(&Frame::SynReply {
                id,
                fin: false,
                block,
            }))
            .await
            .is_ok()
    }

    /// Sends data (in frames of at most 32 KiB), `fin` closing our half.
    pub async fn data(&self, id: u32, data: &[u8], fin: bool) -> bool {
        if data.is_empty() {
            return self
                .tx
                .send(encode(&Frame::Data {
                    id,
                    fin,
                    data: Vec::new(),
                }))
                .await
                .is_ok();
        }
        let chunks: Vec<&[u8]> = data.chunks(32 * 1024).collect();
        let last = chunks.len() - 1;
        for (i, c) in chunks.into_iter().enumerate() {
            let f = Frame::Data {
                id,
                fin: fin && i == last,
                data: c.to_vec(),
            };
            if self.tx.send(encode(&f)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Resets a stream (status 5, `CANCEL`).
    pub async fn reset(&self, id: u32) {
        let _ = self
            .tx
            .send(encode(&Frame::RstStream { id, status: 5 }))
            .await;
    }
}

/// Starts the reader and writer tasks of a connection over `io`.
pub fn start<IO>(io: IO) -> (mpsc::Receiver<Event>, Writer)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let (ev_tx, ev_rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
            if out_rx.is_empty() && wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let pings = out_tx.clone();
    tokio::spawn(async move {
        let mut inflate = Inflater::default();
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            loop {
                let (frame, n) = match parse(&buf) {
                    Ok(Some(x)) => x,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "SPDY: closing the connection");
                        return;
                    }
                };
                buf.drain(..n);
                let ev = match frame {
                    Frame::SynStream { id, block, .. } => match inflate.headers(&block) {
                        Ok(headers) => Event::Syn { id, headers },
                        Err(e) => {
                            tracing::debug!(error = %e, "SPDY: closing the connection");
                            return;
                        }
                    },
                    Frame::Data { id, fin, data } => Event::Data { id, data, fin },
                    Frame::RstStream { id, .. } => Event::Reset { id },
                    Frame::Ping(id) => {
                        let _ = pings.send(encode(&Frame::Ping(id))).await;
                        continue;
                    }
                    Frame::GoAway { .. } => return,
                    Frame::SynReply { .. } | Frame::Other(_) => continue,
                };
                if ev_tx.send(ev).await.is_err() {
                    return;
                }
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    (
        ev_rx,
        Writer {
            tx: out_tx,
            deflate: Arc::new(Mutex::new(Deflater::default())),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_one_peers_name() {
        let (mut a, mut b) = (1u32, 0u32);
        for &c in DICTIONARY {
            a = (a + u32::from(c)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_round_trip() {
        for f in [
            Frame::SynStream {
                id: 1,
                fin: false,
                block: vec![1, 2, 3],
            },
            Frame::SynReply {
                id: 3,
                fin: true,
                block: vec![],
            },
            Frame::RstStream { id: 5, status: 5 },
            Frame::Ping(7),
            Frame::GoAway { last: 9 },
            Frame::Data {
                id: 11,
                fin: true,
                data: b"hello".to_vec(),
            },
        ] {
            let bytes = encode(&f);
            assert_eq!(parse(&bytes).unwrap(), Some((f.clone(), bytes.len())));
            assert_eq!(parse(&bytes[..bytes.len() - 1]).unwrap(), None, "{f:?}");
        }
        let mut v2 = encode(&Frame::Ping(1));
        v2[1] = 2;
        assert_eq!(parse(&v2), Err(SpdyError::Version(2)));
    }

    #[test]
    fn header_blocks_compress_across_one_stream_per_direction() {
        let mut d = Deflater::default();
        let mut i = Inflater::default();
        let first = d.block(&[("streamtype", "error")]);
        let second = d.block(&[("streamType", "stdout"), ("port", "80")]);
        assert_eq!(
            i.headers(&first).unwrap(),
            vec![("streamtype".to_string(), "error".to_string())]
        );
        assert_eq!(
            i.headers(&second).unwrap(),
            vec![
                ("streamtype".to_string(), "stdout".to_string()),
                ("port".to_string(), "80".to_string())
            ]
        );
        assert!(i.headers(b"\xff\xff\xff").is_err());
    }
}
