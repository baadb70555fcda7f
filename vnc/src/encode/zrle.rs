//! ZRLE encoding (RFC 6143 §7.7.6): 64×64 tiles, each raw, solid, packed palette, plain RLE or
//! palette RLE, whichever is smallest; the caller zlib-compresses the result.

use std::collections::HashMap;

use super::Frame;
use crate::framebuffer::Rect;
use crate::pixel::Converter;

/// Tile side length.
pub const TILE: u16 = 64;
/// Largest palette for palette RLE.
const MAX_PALETTE: usize = 127;

/// Append the uncompressed ZRLE tile data of `rect`.
pub fn encode(conv: &Converter, frame: &Frame, rect: Rect, out: &mut Vec<u8>) {
    let mut tile = Vec::with_capacity(usize::from(TILE) * usize::from(TILE));
    let mut ty = rect.y;
    while ty < rect.y + rect.h {
        let th = TILE.min(rect.y + rect.h - ty);
        let mut tx = rect.x;
        while tx < rect.x + rect.w {
            let tw = TILE.min(rect.x + rect.w - tx);
            tile.clear();
            for row in 0..th {
                tile.extend_from_slice(frame.row(tx, ty + row, tw));
            }
            encode_tile(conv, &tile, tw, out);
            tx += tw;
        }
        ty += th;
    }
}

/// A tile's palette in first-seen order with each colour's index, or `None` beyond
/// `limit` colours.
pub(crate) fn palette(px: &[u32], limit: usize) -> Option<(Vec<u32>, HashMap<u32, u8>)> {
    let mut pal: Vec<u32> = Vec::new();
    let mut idx: HashMap<u32, u8> = HashMap::new();
    let mut last = None;
    for &p in px {
        // Runs are common: skip the lookup for a repeat of the previous pixel.
        if last == Some(p) {
            continue;
        }
        last = Some(p);
        if idx.contains_key(&p) {
            continue;
        }
        if pal.len() == limit {
            return None;
        }
        idx.insert(p, pal.len() as u8);
        pal.push(p);
    }
    Some((pal, idx))
}

fn runs(px: &[u32]) -> Vec<(u32, usize)> {
    let mut v: Vec<(u32, usize)> = Vec::new();
    for &p in px {
        match v.last_mut() {
            Some((c, n)) if *c == p => *n += 1,
            _ => v.push((p, 1)),
        }
    }
    v
}

fn run_len_bytes(n: usize) -> usize {
    (n - 1) / 255 + 1
}

fn put_run_len(n: usize, out: &mut Vec<u8>) {
    let mut rem = n - 1;
    while rem >= 255 {
        out.push(255);
        rem -= 255;
    }
    out.push(rem as u8);
}

fn bits_for(palette_len: usize) -> usize {
    match palette_len {
        0..=2 => 1,
        3..=4 => 2,
        _ => 4,
    }
}

fn encode_tile(conv: &Converter, px: &[u32], w: u16, out: &mut Vec<u8>) {
    let cp = conv.format().cpixel_size();
    let w = usize::from(w);
    let h = px.len() / w;
    let pal = palette(px, MAX_PALETTE);
    if let Some((p, _)) = &pal {
        if p.len() == 1 {
            out.push(1);
            conv.put_cpixel(p[0], out);
            return;
        }
    }
    let runs = runs(px);
    let raw_cost = px.len() * cp;
    let plain_rle_cost: usize = runs.iter().map(|&(_, n)| cp + run_len_bytes(n)).sum();
    let mut best = (raw_cost, 0u8);
    if plain_rle_cost < best.0 {
        best = (plain_rle_cost, 128);
    }
    if let Some((p, _)) = &pal {
        let pal_rle: usize = p.len() * cp
            + runs
                .iter()
                .map(|&(_, n)| if n == 1 { 1 } else { 1 + run_len_bytes(n) })
                .sum::<usize>();
        if pal_rle < best.0 {
            best = (pal_rle, 128 + p.len() as u8);
        }
        if p.len() <= 16 {
            let packed = p.len() * cp + h * (w * bits_for(p.len())).div_ceil(8);
            if packed < best.0 {
                best = (packed, p.len() as u8);
            }
        }
    }
    out.push(best.1);
    let (p, idx) = match &pal {
        Some((p, idx)) => (p.as_slice(), Some(idx)),
        None => (&[][..], None),
    };
    let index = |c: u32| idx.and_then(|m| m.get(&c).copied()).unwrap_or(0);
    match best.1 {
        0 => {
            for &p in px {
                conv.put_cpixel(p, out);
            }
        }
        128 => {
            for &(c, n) in &runs {
                conv.put_cpixel(c, out);
                put_run_len(n, out);
            }
        }
        n if n > 128 => {
            for &c in p {
                conv.put_cpixel(c, out);
            }
            for &(c, len) in &runs {
                let i = index(c);
                if len == 1 {
                    out.push(i);
                } else {
                    out.push(i | 128);
                    put_run_len(len, out);
                }
            }
        }
        _ => {
            for &c in p {
                conv.put_cpixel(c, out);
            }
            let bits = bits_for(p.len());
            for row in px.chunks_exact(w) {
                let mut acc = 0u8;
                let mut used = 0;
                for &c in row {
                    acc = (acc << bits) | index(c);
                    used += bits;
                    if used == 8 {
                        out.push(acc);
                        acc = 0;
                        used = 0;
                    }
                }
                if used > 0 {
                    out.push(acc << (8 - used));
                }
            }
        }
    }
}
