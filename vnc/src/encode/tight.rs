//! Tight encoding (community RFB spec): per rectangle a fill colour, a palette with packed
//! indices, or full-colour pixels, each zlib-compressed on one of four per-client streams;
//! full-colour areas go out as JPEG when the server allows lossy compression and the client
//! asked for a JPEG quality level.

use super::{Frame, ZStream};
use crate::framebuffer::Rect;
use crate::pixel::Converter;
use crate::proto::{enc, put_rect_header};

/// Widest rectangle a Tight decoder must accept.
pub const MAX_WIDTH: u16 = 2048;
/// Largest rectangle area sent at once.
pub const MAX_AREA: usize = 65536;
/// Data shorter than this is sent uncompressed.
const MIN_TO_COMPRESS: usize = 12;
/// Stream used for full-colour data.
const STREAM_FULL: usize = 0;
/// Stream used for two-colour data.
const STREAM_MONO: usize = 1;
/// Stream used for indexed data.
const STREAM_INDEXED: usize = 2;
/// Compression control: fill.
const FILL: u8 = 0x80;
/// Compression control bit: an explicit filter id follows.
const EXPLICIT_FILTER: u8 = 0x40;
/// Filter id: palette.
const FILTER_PALETTE: u8 = 1;
/// Compression control: JPEG.
const JPEG: u8 = 0x90;
/// Smallest area worth a JPEG.
const MIN_JPEG_AREA: usize = 4096;
/// JPEG quality for the client's quality levels 0–9 (TigerVNC's scale).
const JPEG_QUALITY: [u8; 10] = [15, 29, 41, 42, 62, 77, 79, 86, 92, 100];

/// Append a Tight compact length (7 bits per byte, low first, at most 3 bytes).
pub fn put_compact_len(n: usize, out: &mut Vec<u8>) {
    let n = n.min(0x3f_ffff);
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x4000 {
        out.extend_from_slice(&[(n as u8 & 0x7f) | 0x80, (n >> 7) as u8]);
    } else {
        out.extend_from_slice(&[
            (n as u8 & 0x7f) | 0x80,
            ((n >> 7) as u8 & 0x7f) | 0x80,
            (n >> 14) as u8,
        ]);
    }
}

fn put_data(
    streams: &mut [Option<ZStream>; 4],
    level: u32,
    id: usize,
    data: &[u8],
    out: &mut Vec<u8>,
) {
    if data.len() < MIN_TO_COMPRESS {
        out.extend_from_slice(data);
        return;
    }
    let mut z = Vec::with_capacity(data.len() / 2 + 64);
    streams[id]
        .get_or_insert_with(|| ZStream::new(level.max(1)))
        .compress(data, &mut z);
    put_compact_len(z.len(), out);
    out.extend_from_slice(&z);
}

/// Append Tight rectangles covering `rect`; returns how many were written. `jpeg` is the
/// client's JPEG quality level (0–9) when lossy compression is allowed.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    conv: &Converter,
    streams: &mut [Option<ZStream>; 4],
    level: u32,
    jpeg: Option<u8>,
    frame: &Frame,
    rect: Rect,
    out: &mut Vec<u8>,
) -> u16 {
    let mut count = 0;
    let cw = rect.w.min(MAX_WIDTH);
    let ch = (MAX_AREA / usize::from(cw.max(1))).clamp(1, usize::from(u16::MAX)) as u16;
    let mut y = rect.y;
    while y < rect.y + rect.h {
        let h = ch.min(rect.y + rect.h - y);
        let mut x = rect.x;
        while x < rect.x + rect.w {
            let w = cw.min(rect.x + rect.w - x);
            encode_one(
                conv,
                streams,
                level,
                jpeg,
                frame,
                Rect::new(x, y, w, h),
                out,
            );
            count += 1;
            x += w;
        }
        y += h;
    }
    count
}

#[allow(clippy::too_many_arguments)]
fn encode_one(
    conv: &Converter,
    streams: &mut [Option<ZStream>; 4],
    level: u32,
    jpeg: Option<u8>,
    frame: &Frame,
    r: Rect,
    out: &mut Vec<u8>,
) {
    put_rect_header(out, r, enc::TIGHT);
    let mut px = Vec::with_capacity(r.area());
    for y in r.y..r.y + r.h {
        px.extend_from_slice(frame.row(r.x, y, r.w));
    }
    let limit = (px.len() / 4).clamp(2, 256);
    if let Some((pal, idx)) = super::zrle::palette(&px, limit) {
        if pal.len() == 1 {
            out.push(FILL);
            conv.put_tpixel(pal[0], out);
            return;
        }
        let (stream, data) = if pal.len() == 2 {
            // One bit per pixel, rows padded to bytes, bit set = palette entry 1.
            let mut d = Vec::with_capacity(px.len() / 8 + usize::from(r.h));
            for row in px.chunks_exact(usize::from(r.w)) {
                let mut acc = 0u8;
                let mut used = 0;
                for &p in row {
                    acc = (acc << 1) | u8::from(p == pal[1]);
                    used += 1;
                    if used == 8 {
                        d.push(acc);
                        acc = 0;
                        used = 0;
                    }
                }
                if used > 0 {
                    d.push(acc << (8 - used));
                }
            }
            (STREAM_MONO, d)
        } else {
            let d = px
                .iter()
                .map(|p| idx.get(p).copied().unwrap_or(0))
                .collect::<Vec<u8>>();
            (STREAM_INDEXED, d)
        };
        out.push(((stream as u8) << 4) | EXPLICIT_FILTER);
        out.push(FILTER_PALETTE);
        out.push((pal.len() - 1) as u8);
        for &c in &pal {
            conv.put_tpixel(c, out);
        }
        put_data(streams, level, stream, &data, out);
        return;
    }
    if let Some(q) =
        jpeg.filter(|_| r.area() >= MIN_JPEG_AREA && conv.format().bits_per_pixel >= 16)
    {
        let rgb: Vec<u8> = px
            .iter()
            .flat_map(|p| [(p >> 16) as u8, (p >> 8) as u8, *p as u8])
            .collect();
        let mut data = Vec::new();
        let quality = JPEG_QUALITY[usize::from(q.min(9))];
        match jpeg_encoder::Encoder::new(&mut data, quality).encode(
            &rgb,
            r.w,
            r.h,
            jpeg_encoder::ColorType::Rgb,
        ) {
            Ok(()) => {
                out.push(JPEG);
                put_compact_len(data.len(), out);
                out.extend_from_slice(&data);
                return;
            }
            // Fall back to lossless below.
            Err(e) => log::warn!("vnc: JPEG encoding of {r:?} failed: {e}"),
        }
    }
    out.push((STREAM_FULL as u8) << 4);
    let mut d = Vec::with_capacity(px.len() * 3);
    for &p in &px {
        conv.put_tpixel(p, &mut d);
    }
    put_data(streams, level, STREAM_FULL, &d, out);
}
