//! A minimal RFB client: the reference decoder for tests and the benchmark's probe.
//!
//! It decodes Raw, CopyRect, Hextile, ZRLE and Tight (with JPEG) plus the DesktopSize,
//! ExtendedDesktopSize, LastRect, Cursor, QEMU LED State and QEMU Extended Key Event
//! pseudo-rectangles into a [`Frame`] of server pixels. It trusts nothing the server sends:
//! every size is checked against the screen.

use std::io::{BufReader, Read, Write};

use flate2::{Decompress, FlushDecompress};

use crate::auth::vnc_response;
use crate::encode::Frame;
use crate::framebuffer::Rect;
use crate::pixel::PixelFormat;
use crate::proto::enc;
use crate::{proto_err, Result, VncError};

/// A client session after the handshake.
pub struct RfbClient<S> {
    s: Counted<S>,
    /// Pixel format updates arrive in.
    pub pf: PixelFormat,
    /// The screen as decoded so far.
    pub screen: Frame,
    /// Desktop name from ServerInit.
    pub name: String,
    /// Last cursor received: (hot spot, width, height).
    pub cursor: Option<(u16, u16, u16, u16)>,
    /// Colour map from SetColourMapEntries (colour-map pixel formats).
    pub colour_map: Vec<u32>,
    /// Last LED state received.
    pub leds: Option<u8>,
    /// The server acknowledged QEMU Extended Key Events.
    pub ext_key: bool,
    /// EndOfContinuousUpdates messages received.
    pub end_of_continuous: u32,
    /// Payloads of the fences the server sent (requests are answered automatically).
    pub fences: Vec<(u32, Vec<u8>)>,
    zrle: Decompress,
    tight: [Decompress; 4],
}

/// Buffers reads and counts bytes, so callers can measure update sizes.
struct Counted<S> {
    inner: BufReader<S>,
    read: u64,
}

impl<S: Write> Counted<S> {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.inner.get_mut().write_all(b)
    }
}

impl<S: Read> Read for Counted<S> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(b)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Summary of one FramebufferUpdate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateInfo {
    /// Rectangles with their encodings, in order.
    pub rects: Vec<(Rect, i32)>,
    /// Bytes the whole message took on the wire.
    pub bytes: u64,
}

/// The stream of a VeNCrypt (TLS) client.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

impl RfbClient<TlsStream> {
    /// Handshake as a VeNCrypt client (X509None, or X509Vnc with `password`), trusting the
    /// PEM certificates in `ca_pem` for `server_name`.
    pub fn connect_vencrypt(
        mut tcp: std::net::TcpStream,
        password: Option<&[u8]>,
        shared: bool,
        ca_pem: &std::path::Path,
        server_name: &str,
    ) -> Result<Self> {
        let mut v = [0u8; 12];
        tcp.read_exact(&mut v)?;
        tcp.write_all(b"RFB 003.008\n")?;
        let mut n = [0u8; 1];
        tcp.read_exact(&mut n)?;
        if n[0] == 0 {
            return Err(VncError::AuthFailed(read_string(&mut tcp)?));
        }
        let mut types = vec![0u8; usize::from(n[0])];
        tcp.read_exact(&mut types)?;
        if !types.contains(&19) {
            return proto_err(format!("server does not offer VeNCrypt: {types:?}"));
        }
        tcp.write_all(&[19])?;
        let mut ver = [0u8; 2];
        tcp.read_exact(&mut ver)?;
        tcp.write_all(&[0, 2])?;
        let mut b = [0u8; 2];
        tcp.read_exact(&mut b)?;
        if b[0] != 0 {
            return proto_err("server refused VeNCrypt 0.2");
        }
        let mut subs = vec![0u8; usize::from(b[1]) * 4];
        tcp.read_exact(&mut subs)?;
        let subs: Vec<u32> = subs
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let want = if password.is_some() { 261 } else { 260 };
        if !subs.contains(&want) {
            return proto_err(format!("VeNCrypt subtype {want} not offered: {subs:?}"));
        }
        tcp.write_all(&want.to_be_bytes())?;
        let mut ok = [0u8; 1];
        tcp.read_exact(&mut ok)?;
        if ok[0] != 1 {
            return proto_err("server rejected the VeNCrypt subtype");
        }
        let tls_err = |e: String| VncError::Protocol(format!("TLS: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca_pem)?;
        for c in rustls_pemfile::certs(&mut &pem[..]) {
            roots
                .add(c.map_err(|e| tls_err(e.to_string()))?)
                .map_err(|e| tls_err(e.to_string()))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| tls_err(e.to_string()))?;
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
            .map_err(|e| tls_err(e.to_string()))?;
        let s = Counted {
            inner: BufReader::with_capacity(64 * 1024, rustls::StreamOwned::new(conn, tcp)),
            read: 0,
        };
        Self::finish(s, password, shared, want == 261)
    }
}

/// Largest string (name, reason, cut text) accepted from a server.
const MAX_STRING: u32 = 1 << 20;

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

impl<S: Read + Write> RfbClient<S> {
    /// Handshake as an RFB 3.8 client with `password` for VNC authentication.
    pub fn connect(s: S, password: Option<&[u8]>, shared: bool) -> Result<Self> {
        let mut s = Counted {
            inner: BufReader::with_capacity(64 * 1024, s),
            read: 0,
        };
        let mut v = [0u8; 12];
        s.read_exact(&mut v)?;
        if &v[..4] != b"RFB " {
            return proto_err("server did not send an RFB version");
        }
        s.write_all(b"RFB 003.008\n")?;
        let mut n = [0u8; 1];
        s.read_exact(&mut n)?;
        if n[0] == 0 {
            return Err(VncError::AuthFailed(read_string(&mut s)?));
        }
        let mut types = vec![0u8; usize::from(n[0])];
        s.read_exact(&mut types)?;
        let chosen = if types.contains(&1) && password.is_none() {
            1
        } else if types.contains(&2) {
            2
        } else {
            return proto_err(format!("no usable security type in {types:?}"));
        };
        s.write_all(&[chosen])?;
        Self::finish(s, password, shared, chosen == 2)
    }

    /// The handshake after the security type: VNC auth, SecurityResult, ClientInit/ServerInit.
    fn finish(
        mut s: Counted<S>,
        password: Option<&[u8]>,
        shared: bool,
        vnc_auth: bool,
    ) -> Result<Self> {
        if vnc_auth {
            let mut ch = [0u8; 16];
            s.read_exact(&mut ch)?;
            s.write_all(&vnc_response(password.unwrap_or_default(), &ch))?;
        }
        let mut res = [0u8; 4];
        s.read_exact(&mut res)?;
        if u32::from_be_bytes(res) != 0 {
            return Err(VncError::AuthFailed(read_string(&mut s)?));
        }
        s.write_all(&[u8::from(shared)])?;
        let mut init = [0u8; 20];
        s.read_exact(&mut init)?;
        let mut pfb = [0u8; 16];
        pfb.copy_from_slice(&init[4..20]);
        let pf = PixelFormat::from_bytes(&pfb)?;
        let name = read_string(&mut s)?;
        Ok(RfbClient {
            s,
            pf,
            screen: Frame::new(u16_at(&init, 0), u16_at(&init, 2), 0),
            name,
            cursor: None,
            colour_map: vec![0; 256],
            leds: None,
            ext_key: false,
            end_of_continuous: 0,
            fences: Vec::new(),
            zrle: Decompress::new(true),
            tight: std::array::from_fn(|_| Decompress::new(true)),
        })
    }

    /// Send SetPixelFormat.
    pub fn set_pixel_format(&mut self, pf: PixelFormat) -> Result<()> {
        let mut m = vec![0u8, 0, 0, 0];
        m.extend_from_slice(&pf.to_bytes());
        self.s.write_all(&m)?;
        self.pf = pf;
        Ok(())
    }

    /// Send SetEncodings.
    pub fn set_encodings(&mut self, list: &[i32]) -> Result<()> {
        let mut m = vec![2u8, 0];
        m.extend_from_slice(&(list.len() as u16).to_be_bytes());
        for e in list {
            m.extend_from_slice(&e.to_be_bytes());
        }
        self.s.write_all(&m)?;
        Ok(())
    }

    /// Send FramebufferUpdateRequest for the whole screen.
    pub fn request(&mut self, incremental: bool) -> Result<()> {
        let (w, h) = (self.screen.width, self.screen.height);
        let mut m = vec![3u8, u8::from(incremental)];
        for v in [0, 0, w, h] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        self.s.write_all(&m)?;
        Ok(())
    }

    /// Send a KeyEvent.
    pub fn key(&mut self, down: bool, keysym: u32) -> Result<()> {
        let mut m = vec![4u8, u8::from(down), 0, 0];
        m.extend_from_slice(&keysym.to_be_bytes());
        self.s.write_all(&m)?;
        Ok(())
    }

    /// Send a QEMU Extended Key Event.
    pub fn ext_key(&mut self, down: bool, keysym: u32, keycode: u32) -> Result<()> {
        let mut m = vec![255u8, 0];
        m.extend_from_slice(&u16::from(down).to_be_bytes());
        m.extend_from_slice(&keysym.to_be_bytes());
        m.extend_from_slice(&keycode.to_be_bytes());
        self.s.write_all(&m)?;
        Ok(())
    }

    /// Send a PointerEvent.
    pub fn pointer(&mut self, x: u16, y: u16, buttons: u8) -> Result<()> {
        let mut m = vec![5u8, buttons];
        m.extend_from_slice(&x.to_be_bytes());
        m.extend_from_slice(&y.to_be_bytes());
        self.s.write_all(&m)?;
        Ok(())
    }

    /// Send EnableContinuousUpdates for the whole screen.
    pub fn continuous_updates(&mut self, enable: bool) -> Result<()> {
        let (w, h) = (self.screen.width, self.screen.height);
        let mut m = vec![150u8, u8::from(enable)];
        for v in [0, 0, w, h] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        self.s.write_all(&m)?;
        Ok(())
    }

    /// Send a Fence message.
    pub fn fence(&mut self, flags: u32, payload: &[u8]) -> Result<()> {
        let mut m = vec![248u8, 0, 0, 0];
        m.extend_from_slice(&flags.to_be_bytes());
        m.push(payload.len() as u8);
        m.extend_from_slice(payload);
        self.s.write_all(&m)?;
        Ok(())
    }

    /// Send raw bytes (for protocol-violation tests).
    pub fn send_raw(&mut self, b: &[u8]) -> Result<()> {
        self.s.write_all(b)?;
        Ok(())
    }

    /// Read server messages until a FramebufferUpdate has been decoded.
    pub fn read_update(&mut self) -> Result<UpdateInfo> {
        loop {
            let start = self.s.read;
            let mut t = [0u8; 1];
            self.s.read_exact(&mut t)?;
            match t[0] {
                0 => {
                    let mut info = self.read_update_body()?;
                    info.bytes = self.s.read - start;
                    return Ok(info);
                }
                1 => {
                    let mut h = [0u8; 5];
                    self.s.read_exact(&mut h)?;
                    let (first, n) = (usize::from(u16_at(&h, 1)), usize::from(u16_at(&h, 3)));
                    let mut e = vec![0u8; n * 6];
                    self.s.read_exact(&mut e)?;
                    for (i, c) in e.chunks_exact(6).enumerate() {
                        let ch = |j: usize| u32::from(c[j]);
                        if let Some(slot) = self.colour_map.get_mut(first + i) {
                            *slot = (ch(0) << 16) | (ch(2) << 8) | ch(4);
                        }
                    }
                }
                2 => {}
                150 => self.end_of_continuous += 1,
                248 => {
                    let mut h = [0u8; 8];
                    self.s.read_exact(&mut h)?;
                    let flags = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
                    let mut payload = vec![0u8; usize::from(h[7].min(64))];
                    self.s.read_exact(&mut payload)?;
                    if flags & (1 << 31) != 0 {
                        self.fence(flags & !(1 << 31), &payload)?;
                    }
                    self.fences.push((flags, payload));
                }
                3 => {
                    let mut h = [0u8; 3];
                    self.s.read_exact(&mut h)?;
                    read_string(&mut self.s)?;
                }
                other => return proto_err(format!("unknown server message {other}")),
            }
        }
    }

    fn read_update_body(&mut self) -> Result<UpdateInfo> {
        let mut h = [0u8; 3];
        self.s.read_exact(&mut h)?;
        let n = u16_at(&h, 1);
        let mut info = UpdateInfo::default();
        for _ in 0..n {
            let mut rh = [0u8; 12];
            self.s.read_exact(&mut rh)?;
            let r = Rect::new(
                u16_at(&rh, 0),
                u16_at(&rh, 2),
                u16_at(&rh, 4),
                u16_at(&rh, 6),
            );
            let e = i32::from_be_bytes([rh[8], rh[9], rh[10], rh[11]]);
            info.rects.push((r, e));
            if e == enc::LAST_RECT {
                break;
            }
            self.decode_rect(r, e)?;
        }
        Ok(info)
    }

    fn check_inside(&self, r: Rect) -> Result<()> {
        if r.intersect(&self.screen.bounds()) != r {
            return proto_err(format!("rectangle {r:?} outside the screen"));
        }
        Ok(())
    }

    fn read_pixel(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        let n = self.pf.bytes_per_pixel();
        self.s.read_exact(&mut b[..n])?;
        Ok(self.rgb(self.pf.read_value(&b)))
    }

    /// A pixel value in the client format as `0x00RRGGBB`.
    fn rgb(&self, v: u32) -> u32 {
        if self.pf.true_colour {
            self.pf.value_to_rgb(v)
        } else {
            self.colour_map.get(v as usize).copied().unwrap_or(0)
        }
    }

    fn put(&mut self, x: u16, y: u16, c: u32) {
        let i = usize::from(y) * usize::from(self.screen.width) + usize::from(x);
        self.screen.pixels[i] = c;
    }

    fn fill(&mut self, r: Rect, c: u32) {
        for y in r.y..r.y + r.h {
            for x in r.x..r.x + r.w {
                self.put(x, y, c);
            }
        }
    }

    fn decode_rect(&mut self, r: Rect, e: i32) -> Result<()> {
        match e {
            enc::DESKTOP_SIZE => {
                self.screen = Frame::new(r.w, r.h, 0);
                Ok(())
            }
            enc::EXTENDED_DESKTOP_SIZE => {
                let mut b = [0u8; 4];
                self.s.read_exact(&mut b)?;
                let mut skip = vec![0u8; usize::from(b[0]) * 16];
                self.s.read_exact(&mut skip)?;
                if (r.w, r.h) != (self.screen.width, self.screen.height) {
                    self.screen = Frame::new(r.w, r.h, 0);
                }
                Ok(())
            }
            enc::QEMU_LED_STATE => {
                let mut b = [0u8; 1];
                self.s.read_exact(&mut b)?;
                self.leds = Some(b[0]);
                Ok(())
            }
            enc::QEMU_EXTENDED_KEY_EVENT => {
                self.ext_key = true;
                Ok(())
            }
            enc::CURSOR => {
                let n = r.area() * self.pf.bytes_per_pixel()
                    + usize::from(r.w).div_ceil(8) * usize::from(r.h);
                std::io::copy(&mut (&mut self.s).take(n as u64), &mut std::io::sink())?;
                self.cursor = Some((r.x, r.y, r.w, r.h));
                Ok(())
            }
            enc::RAW => {
                self.check_inside(r)?;
                for y in r.y..r.y + r.h {
                    for x in r.x..r.x + r.w {
                        let c = self.read_pixel()?;
                        self.put(x, y, c);
                    }
                }
                Ok(())
            }
            enc::COPY_RECT => {
                self.check_inside(r)?;
                let mut b = [0u8; 4];
                self.s.read_exact(&mut b)?;
                let src = Rect::new(u16_at(&b, 0), u16_at(&b, 2), r.w, r.h);
                self.check_inside(src)?;
                let old = self.screen.clone();
                for dy in 0..r.h {
                    let row = old.row(src.x, src.y + dy, r.w).to_vec();
                    for (dx, c) in row.into_iter().enumerate() {
                        self.put(r.x + dx as u16, r.y + dy, c);
                    }
                }
                Ok(())
            }
            enc::HEXTILE => {
                self.check_inside(r)?;
                self.hextile(r)
            }
            enc::ZRLE => {
                self.check_inside(r)?;
                let mut l = [0u8; 4];
                self.s.read_exact(&mut l)?;
                let len = u32::from_be_bytes(l);
                if len > 64 << 20 {
                    return proto_err("ZRLE data too long");
                }
                let mut z = vec![0u8; len as usize];
                self.s.read_exact(&mut z)?;
                let max = r.area() * 5 + 4096 * 8;
                let data = inflate(&mut self.zrle, &z, max)?;
                self.zrle_tiles(r, &data)
            }
            enc::TIGHT => {
                self.check_inside(r)?;
                self.tight(r)
            }
            other => proto_err(format!("cannot decode encoding {other}")),
        }
    }

    fn hextile(&mut self, r: Rect) -> Result<()> {
        let (mut bg, mut fg) = (0u32, 0u32);
        let mut ty = r.y;
        while ty < r.y + r.h {
            let th = 16.min(r.y + r.h - ty);
            let mut tx = r.x;
            while tx < r.x + r.w {
                let tw = 16.min(r.x + r.w - tx);
                let mut f = [0u8; 1];
                self.s.read_exact(&mut f)?;
                let f = f[0];
                if f & 1 != 0 {
                    for y in ty..ty + th {
                        for x in tx..tx + tw {
                            let c = self.read_pixel()?;
                            self.put(x, y, c);
                        }
                    }
                } else {
                    if f & 2 != 0 {
                        bg = self.read_pixel()?;
                    }
                    self.fill(Rect::new(tx, ty, tw, th), bg);
                    if f & 4 != 0 {
                        fg = self.read_pixel()?;
                    }
                    if f & 8 != 0 {
                        let mut n = [0u8; 1];
                        self.s.read_exact(&mut n)?;
                        for _ in 0..n[0] {
                            let c = if f & 16 != 0 { self.read_pixel()? } else { fg };
                            let mut b = [0u8; 2];
                            self.s.read_exact(&mut b)?;
                            let (sx, sy) = (u16::from(b[0] >> 4), u16::from(b[0] & 15));
                            let (sw, sh) = (u16::from(b[1] >> 4) + 1, u16::from(b[1] & 15) + 1);
                            if sx + sw > tw || sy + sh > th {
                                return proto_err("hextile subrectangle outside its tile");
                            }
                            self.fill(Rect::new(tx + sx, ty + sy, sw, sh), c);
                        }
                    }
                }
                tx += tw;
            }
            ty += th;
        }
        Ok(())
    }

    fn zrle_tiles(&mut self, r: Rect, data: &[u8]) -> Result<()> {
        let mut d = Bytes { b: data, pos: 0 };
        let cp = self.pf.cpixel_size();
        let off = self.pf.cpixel_offset();
        let pf = self.pf;
        let map = (!pf.true_colour).then(|| self.colour_map.clone());
        let cpixel = |d: &mut Bytes| -> Result<u32> {
            let b = d.take(cp)?;
            let v = match off {
                None => pf.read_value(b),
                Some(o) => {
                    let mut full = [0u8; 4];
                    full[o..o + 3].copy_from_slice(b);
                    pf.read_value(&full)
                }
            };
            Ok(match &map {
                Some(m) => m.get(v as usize).copied().unwrap_or(0),
                None => pf.value_to_rgb(v),
            })
        };
        let run_len = |d: &mut Bytes| -> Result<usize> {
            let mut n = 1usize;
            loop {
                let b = d.take(1)?[0];
                n += usize::from(b);
                if b != 255 {
                    return Ok(n);
                }
            }
        };
        let mut ty = r.y;
        while ty < r.y + r.h {
            let th = 64.min(r.y + r.h - ty);
            let mut tx = r.x;
            while tx < r.x + r.w {
                let tw = 64.min(r.x + r.w - tx);
                let n = usize::from(tw) * usize::from(th);
                let sub = d.take(1)?[0];
                let mut px: Vec<u32> = Vec::with_capacity(n);
                match sub {
                    0 => {
                        for _ in 0..n {
                            px.push(cpixel(&mut d)?);
                        }
                    }
                    1 => px.resize(n, cpixel(&mut d)?),
                    2..=16 => {
                        let pal = (0..sub)
                            .map(|_| cpixel(&mut d))
                            .collect::<Result<Vec<_>>>()?;
                        let bits = match sub {
                            2 => 1,
                            3..=4 => 2,
                            _ => 4,
                        };
                        for _ in 0..th {
                            let row = d.take((usize::from(tw) * bits).div_ceil(8))?;
                            for x in 0..usize::from(tw) {
                                let bit = x * bits;
                                let v = (row[bit / 8] >> (8 - bits - bit % 8)) & ((1 << bits) - 1);
                                px.push(*pal.get(usize::from(v)).ok_or_else(|| {
                                    VncError::Protocol("ZRLE index beyond palette".into())
                                })?);
                            }
                        }
                    }
                    128 => {
                        while px.len() < n {
                            let c = cpixel(&mut d)?;
                            let l = run_len(&mut d)?;
                            px.extend(std::iter::repeat_n(c, l));
                        }
                    }
                    130..=255 => {
                        let pal = (0..sub - 128)
                            .map(|_| cpixel(&mut d))
                            .collect::<Result<Vec<_>>>()?;
                        while px.len() < n {
                            let i = d.take(1)?[0];
                            let c = *pal.get(usize::from(i & 127)).ok_or_else(|| {
                                VncError::Protocol("ZRLE index beyond palette".into())
                            })?;
                            let l = if i & 128 != 0 { run_len(&mut d)? } else { 1 };
                            px.extend(std::iter::repeat_n(c, l));
                        }
                    }
                    other => return proto_err(format!("bad ZRLE subencoding {other}")),
                }
                if px.len() != n {
                    return proto_err("ZRLE run crosses its tile");
                }
                for (i, c) in px.into_iter().enumerate() {
                    self.put(
                        tx + (i % usize::from(tw)) as u16,
                        ty + (i / usize::from(tw)) as u16,
                        c,
                    );
                }
                tx += tw;
            }
            ty += th;
        }
        if d.pos != data.len() {
            return proto_err("trailing ZRLE data");
        }
        Ok(())
    }

    fn tpixel(&self, b: &[u8]) -> u32 {
        if self.pf.tight_rgb24() {
            (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
        } else {
            self.rgb(self.pf.read_value(b))
        }
    }

    /// A Tight compact length followed by that many bytes.
    fn read_compact_data(&mut self) -> Result<Vec<u8>> {
        let mut len = 0usize;
        for i in 0..3 {
            let mut b = [0u8; 1];
            self.s.read_exact(&mut b)?;
            len |= usize::from(b[0] & if i == 2 { 0xff } else { 0x7f }) << (7 * i);
            if b[0] & 0x80 == 0 || i == 2 {
                break;
            }
        }
        let mut z = vec![0u8; len];
        self.s.read_exact(&mut z)?;
        Ok(z)
    }

    fn tight(&mut self, r: Rect) -> Result<()> {
        let tp = if self.pf.tight_rgb24() {
            3
        } else {
            self.pf.bytes_per_pixel()
        };
        let mut c = [0u8; 1];
        self.s.read_exact(&mut c)?;
        let ctl = c[0];
        for i in 0..4 {
            if ctl & (1 << i) != 0 {
                self.tight[i] = Decompress::new(true);
            }
        }
        let kind = ctl >> 4;
        if kind == 8 {
            let mut b = vec![0u8; tp];
            self.s.read_exact(&mut b)?;
            let px = self.tpixel(&b);
            self.fill(r, px);
            return Ok(());
        }
        if kind == 9 {
            let z = self.read_compact_data()?;
            let mut d = jpeg_decoder::Decoder::new(&z[..]);
            let rgb = d
                .decode()
                .map_err(|e| VncError::Protocol(format!("Tight JPEG: {e}")))?;
            let info = d
                .info()
                .ok_or_else(|| VncError::Protocol("Tight JPEG without header".into()))?;
            if (info.width, info.height) != (r.w, r.h)
                || info.pixel_format != jpeg_decoder::PixelFormat::RGB24
                || rgb.len() != r.area() * 3
            {
                return proto_err(format!("Tight JPEG does not match {r:?}"));
            }
            for (i, p) in rgb.chunks_exact(3).enumerate() {
                let c = (u32::from(p[0]) << 16) | (u32::from(p[1]) << 8) | u32::from(p[2]);
                let w = usize::from(r.w);
                self.put(r.x + (i % w) as u16, r.y + (i / w) as u16, c);
            }
            return Ok(());
        }
        if kind > 7 {
            return proto_err(format!("unsupported Tight compression {kind:#x}"));
        }
        let stream = usize::from(kind & 3);
        let filter = if kind & 4 != 0 {
            let mut f = [0u8; 1];
            self.s.read_exact(&mut f)?;
            f[0]
        } else {
            0
        };
        let mut palette = Vec::new();
        let data_len = match filter {
            0 => r.area() * tp,
            1 => {
                let mut n = [0u8; 1];
                self.s.read_exact(&mut n)?;
                let n = usize::from(n[0]) + 1;
                let mut b = vec![0u8; n * tp];
                self.s.read_exact(&mut b)?;
                palette = b.chunks_exact(tp).map(|p| self.tpixel(p)).collect();
                if n == 2 {
                    usize::from(r.w).div_ceil(8) * usize::from(r.h)
                } else {
                    r.area()
                }
            }
            other => return proto_err(format!("unsupported Tight filter {other}")),
        };
        let data = if data_len < 12 {
            let mut b = vec![0u8; data_len];
            self.s.read_exact(&mut b)?;
            b
        } else {
            let z = self.read_compact_data()?;
            let out = inflate(&mut self.tight[stream], &z, data_len)?;
            if out.len() != data_len {
                return proto_err(format!(
                    "Tight data is {} bytes, expected {data_len}",
                    out.len()
                ));
            }
            out
        };
        let w = usize::from(r.w);
        for y in 0..usize::from(r.h) {
            for x in 0..w {
                let c = match (filter, palette.len()) {
                    (0, _) => self.tpixel(&data[(y * w + x) * tp..]),
                    (_, 2) => {
                        let byte = data[y * w.div_ceil(8) + x / 8];
                        palette[usize::from((byte >> (7 - x % 8)) & 1)]
                    }
                    _ => *palette
                        .get(usize::from(data[y * w + x]))
                        .ok_or_else(|| VncError::Protocol("Tight index beyond palette".into()))?,
                };
                self.put(r.x + x as u16, r.y + y as u16, c);
            }
        }
        Ok(())
    }
}

struct Bytes<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        match end {
            Some(e) => {
                let s = &self.b[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => proto_err("compressed data ends early"),
        }
    }
}

/// Inflate all of `z` on a continuing stream, refusing more than `max` bytes of output.
fn inflate(d: &mut Decompress, z: &[u8], max: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(max.min(1 << 20) + 64);
    let start = d.total_in();
    loop {
        let used = (d.total_in() - start) as usize;
        if used == z.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        if out.len() > max {
            return proto_err("decompressed data exceeds the rectangle");
        }
        if out.capacity() - out.len() < 1024 {
            out.reserve(64 * 1024);
        }
        let before = (d.total_in(), d.total_out());
        d.decompress_vec(&z[used..], &mut out, FlushDecompress::Sync)
            .map_err(|e| VncError::Protocol(format!("zlib: {e}")))?;
        if (d.total_in(), d.total_out()) == before {
            return proto_err("zlib stream stalled");
        }
    }
}

fn read_string(r: &mut impl Read) -> Result<String> {
    let mut l = [0u8; 4];
    r.read_exact(&mut l)?;
    let len = u32::from_be_bytes(l);
    if len > MAX_STRING {
        return proto_err("string too long");
    }
    let mut b = vec![0u8; len as usize];
    r.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}
