//! Hextile encoding (RFC 6143 §7.7.4): 16×16 tiles, each raw or a background plus
//! single-colour subrectangles.

use super::Frame;
use crate::framebuffer::Rect;
use crate::pixel::Converter;

/// Tile is raw pixels.
pub const RAW: u8 = 1;
/// A background pixel follows.
pub const BACKGROUND_SPECIFIED: u8 = 2;
/// A foreground pixel follows.
pub const FOREGROUND_SPECIFIED: u8 = 4;
/// Subrectangles follow.
pub const ANY_SUBRECTS: u8 = 8;
/// Each subrectangle carries its own pixel.
pub const SUBRECTS_COLOURED: u8 = 16;

/// Append the hextile data of `rect`.
pub fn encode(conv: &Converter, frame: &Frame, rect: Rect, out: &mut Vec<u8>) {
    let mut bg: Option<u32> = None;
    let mut fg: Option<u32> = None;
    let mut tile = [0u32; 256];
    let mut ty = rect.y;
    while ty < rect.y + rect.h {
        let th = 16.min(rect.y + rect.h - ty);
        let mut tx = rect.x;
        while tx < rect.x + rect.w {
            let tw = 16.min(rect.x + rect.w - tx);
            let n = usize::from(tw) * usize::from(th);
            for row in 0..th {
                let r = frame.row(tx, ty + row, tw);
                let at = usize::from(row) * usize::from(tw);
                tile[at..at + usize::from(tw)].copy_from_slice(r);
            }
            encode_tile(conv, &tile[..n], tw, th, &mut bg, &mut fg, out);
            tx += tw;
        }
        ty += th;
    }
}

/// Most frequent colour and, when there are exactly two, the other one; `None` as the colour
/// count means more than two.
fn colours(px: &[u32]) -> (u32, Option<u32>, bool) {
    let a = px[0];
    let mut b = None;
    let mut count_a = 0usize;
    for &p in px {
        if p == a {
            count_a += 1;
        } else {
            match b {
                None => b = Some(p),
                Some(bb) if bb == p => {}
                Some(_) => return (a, None, true),
            }
        }
    }
    match b {
        Some(bb) if count_a * 2 < px.len() => (bb, Some(a), false),
        other => (a, other, false),
    }
}

fn encode_tile(
    conv: &Converter,
    px: &[u32],
    w: u16,
    h: u16,
    bg: &mut Option<u32>,
    fg: &mut Option<u32>,
    out: &mut Vec<u8>,
) {
    let bpp = conv.format().bytes_per_pixel();
    let raw_size = px.len() * bpp;
    let (back, two, many) = colours(px);
    let start = out.len();
    let mut flags = 0u8;
    out.push(0);
    if *bg != Some(back) {
        flags |= BACKGROUND_SPECIFIED;
        conv.put(back, out);
    }
    if two.is_some() || many {
        flags |= ANY_SUBRECTS;
        if many {
            flags |= SUBRECTS_COLOURED;
        } else if let Some(front) = two {
            if *fg != Some(front) {
                flags |= FOREGROUND_SPECIFIED;
                conv.put(front, out);
            }
        }
        let count_at = out.len();
        out.push(0);
        let n = subrects(
            px,
            w,
            h,
            back,
            raw_size,
            |c, x, y, sw, sh, out| {
                if many {
                    conv.put(c, out);
                }
                out.push(((x as u8) << 4) | y as u8);
                out.push((((sw - 1) as u8) << 4) | (sh - 1) as u8);
            },
            out,
            start,
        );
        match n {
            Some(n) => {
                out[count_at] = n;
                out[start] = flags;
                *bg = Some(back);
                // Decoders differ on what foreground a coloured tile leaves behind.
                *fg = if many { None } else { two };
                return;
            }
            None => out.truncate(start),
        }
    } else {
        out[start] = flags;
        *bg = Some(back);
        return;
    }
    // Raw tile; colours of later tiles must be given again.
    out.push(RAW);
    for &p in px {
        conv.put(p, out);
    }
    *bg = None;
    *fg = None;
}

/// Cover every non-background pixel with greedy maximal rectangles, emitting each through
/// `emit`. Gives up (returns `None`) once the tile would be larger than raw or needs more than
/// 255 subrectangles.
#[allow(clippy::too_many_arguments)]
fn subrects(
    px: &[u32],
    w: u16,
    h: u16,
    back: u32,
    raw_size: usize,
    emit: impl Fn(u32, u16, u16, u16, u16, &mut Vec<u8>),
    out: &mut Vec<u8>,
    start: usize,
) -> Option<u8> {
    let (w, h) = (usize::from(w), usize::from(h));
    let mut done = [false; 256];
    let mut count = 0u8;
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let c = px[i];
            if c == back || done[i] {
                continue;
            }
            // Widest run of c from x on this row, then grow downwards while rows match.
            let mut x1 = x + 1;
            while x1 < w && px[y * w + x1] == c && !done[y * w + x1] {
                x1 += 1;
            }
            let mut y1 = y + 1;
            'grow: while y1 < h {
                for xx in x..x1 {
                    let j = y1 * w + xx;
                    if px[j] != c || done[j] {
                        break 'grow;
                    }
                }
                y1 += 1;
            }
            for yy in y..y1 {
                for xx in x..x1 {
                    done[yy * w + xx] = true;
                }
            }
            count = count.checked_add(1)?;
            emit(c, x as u16, y as u16, (x1 - x) as u16, (y1 - y) as u16, out);
            if out.len() - start > raw_size {
                return None;
            }
        }
    }
    Some(count)
}
