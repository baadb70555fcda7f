//! RFB over WebSocket (RFC 6455), so browsers running noVNC connect without websockify.
//!
//! Only what RFB needs: the HTTP upgrade, binary frames (client frames masked), continuation,
//! close; pings are ignored. Frame lengths are bounded.

use std::io::{self, Read, Write};

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::{proto_err, Result};

/// Longest HTTP upgrade request accepted.
pub const MAX_REQUEST: usize = 8192;
/// Largest frame payload accepted from a client.
pub const MAX_FRAME: u64 = 1 << 20;
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The Sec-WebSocket-Accept value for a client key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Read the HTTP upgrade request from `s` and answer it; afterwards `s` carries frames.
pub fn accept(s: &mut (impl Read + Write)) -> Result<()> {
    // Byte by byte so nothing past the blank line is consumed.
    let mut req = Vec::with_capacity(512);
    while !req.ends_with(b"\r\n\r\n") {
        if req.len() >= MAX_REQUEST {
            return proto_err("websocket upgrade request too long");
        }
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        req.push(b[0]);
    }
    let text = String::from_utf8_lossy(&req);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    if !first.starts_with("GET ") {
        return proto_err(format!("not a websocket upgrade: {first:?}"));
    }
    let mut key = None;
    let mut upgrade = false;
    let mut binary = false;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "sec-websocket-key" => key = Some(value.to_string()),
            "upgrade" => upgrade = value.eq_ignore_ascii_case("websocket"),
            "sec-websocket-protocol" => {
                binary = value.split(',').any(|p| p.trim() == "binary");
            }
            _ => {}
        }
    }
    let key = match (key, upgrade) {
        (Some(k), true) => k,
        _ => {
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")?;
            return proto_err("HTTP request without websocket upgrade headers");
        }
    };
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_key(&key)
    );
    if binary {
        resp.push_str("Sec-WebSocket-Protocol: binary\r\n");
    }
    resp.push_str("\r\n");
    s.write_all(resp.as_bytes())?;
    s.flush()?;
    Ok(())
}

/// Reads the payload of a client's binary frames as one byte stream.
pub struct WsReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    closed: bool,
}

impl<R: Read> WsReader<R> {
    /// Wrap the reading half of an upgraded connection.
    pub fn new(inner: R) -> Self {
        WsReader {
            inner,
            buf: Vec::new(),
            pos: 0,
            closed: false,
        }
    }

    fn next_frame(&mut self) -> io::Result<()> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let mut h = [0u8; 2];
        self.inner.read_exact(&mut h)?;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            self.inner.read_exact(&mut b)?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            self.inner.read_exact(&mut b)?;
            len = u64::from_be_bytes(b);
        }
        if len > MAX_FRAME {
            return Err(bad("websocket frame too large"));
        }
        if !masked {
            return Err(bad("unmasked websocket frame from client"));
        }
        let mut mask = [0u8; 4];
        self.inner.read_exact(&mut mask)?;
        let mut payload = vec![0u8; len as usize];
        self.inner.read_exact(&mut payload)?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        log::trace!("vnc websocket: frame opcode {opcode} length {len}");
        match opcode {
            0 | 2 => {
                self.buf = payload;
                self.pos = 0;
                Ok(())
            }
            8 => {
                self.closed = true;
                Ok(())
            }
            9 | 10 => Ok(()),
            1 => Err(bad(
                "text websocket frames are not supported; use the binary subprotocol",
            )),
            _ => Err(bad("unknown websocket opcode")),
        }
    }
}

impl<R: Read> Read for WsReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            if self.closed {
                return Ok(0);
            }
            self.next_frame()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Sends each write as one unmasked binary frame.
pub struct WsWriter<W> {
    inner: W,
}

impl<W: Write> WsWriter<W> {
    /// Wrap the writing half of an upgraded connection.
    pub fn new(inner: W) -> Self {
        WsWriter { inner }
    }
}

/// Append a frame header for a binary payload of `len` bytes (optionally masked).
pub fn put_frame_header(len: usize, mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    out.push(0x82);
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
}

impl<W: Write> Write for WsWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut frame = Vec::with_capacity(data.len() + 10);
        put_frame_header(data.len(), None, &mut frame);
        frame.extend_from_slice(data);
        self.inner.write_all(&frame)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_accept_key() {
        // The worked example of RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn masked_frames_decode_and_bounds_hold() {
        let mut wire = Vec::new();
        let payload = b"RFB 003.008\n";
        let mask = [1, 2, 3, 4];
        put_frame_header(payload.len(), Some(mask), &mut wire);
        wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let mut r = WsReader::new(&wire[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap_err(); // stream ends without a close frame
        assert_eq!(out, payload);

        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let mut buf = [0u8; 4];
        assert!(WsReader::new(&huge[..]).read(&mut buf).is_err());
        let unmasked = [0x82, 0x01, 0x00];
        assert!(WsReader::new(&unmasked[..]).read(&mut buf).is_err());
    }

    #[test]
    fn upgrade_handshake() {
        struct Duplex {
            input: io::Cursor<Vec<u8>>,
            output: Vec<u8>,
        }
        impl Read for Duplex {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.input.read(b)
            }
        }
        impl Write for Duplex {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.output.write(b)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let req = "GET /websockify HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: binary\r\n\r\nRFB";
        let mut d = Duplex {
            input: io::Cursor::new(req.as_bytes().to_vec()),
            output: Vec::new(),
        };
        accept(&mut d).unwrap();
        let resp = String::from_utf8(d.output).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101"));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: binary"));
        // The bytes after the request are left for the RFB layer.
        let mut rest = String::new();
        d.input.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "RFB");
    }
}
