//! Scroll detection for CopyRect: finds a band of a changed rectangle whose new rows equal old
//! rows at a fixed vertical offset (a terminal or page scrolling), so the client can copy them.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::Frame;
use crate::framebuffer::Rect;

/// Fewest rows worth a CopyRect.
const MIN_BAND: u16 = 16;

fn row_hash(f: &Frame, r: Rect, y: u16) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    f.row(r.x, y, r.w).hash(&mut h);
    h.finish()
}

fn uniform(f: &Frame, r: Rect, y: u16) -> bool {
    let row = f.row(r.x, y, r.w);
    row.iter().all(|&p| p == row[0])
}

/// A band of `r` in `new` that equals `old` shifted vertically, as `(source y, destination)`;
/// the source lies inside `r` so no other rectangle of the same update disturbs it.
pub fn find_scroll(old: &Frame, new: &Frame, r: Rect) -> Option<(u16, Rect)> {
    if r.h < MIN_BAND * 2 || r.w < 64 || old.bounds() != new.bounds() {
        return None;
    }
    let mut old_rows: HashMap<u64, u16> = HashMap::new();
    for y in r.y..r.y + r.h {
        if !uniform(old, r, y) {
            old_rows.entry(row_hash(old, r, y)).or_insert(y);
        }
    }
    let mut votes: HashMap<i32, u32> = HashMap::new();
    for y in r.y..r.y + r.h {
        if uniform(new, r, y) {
            continue;
        }
        if let Some(&oy) = old_rows.get(&row_hash(new, r, y)) {
            let dy = i32::from(oy) - i32::from(y);
            if dy != 0 {
                *votes.entry(dy).or_default() += 1;
            }
        }
    }
    let (&dy, &n) = votes.iter().max_by_key(|(dy, n)| (**n, -dy.abs()))?;
    if n < u32::from(MIN_BAND) / 2 {
        return None;
    }
    // Longest run of rows equal to the old rows dy away, sources inside r.
    let (top, bottom) = (i32::from(r.y), i32::from(r.y) + i32::from(r.h));
    let mut best: Option<(i32, i32)> = None;
    let mut run_start: Option<i32> = None;
    for y in top..=bottom {
        let sy = y + dy;
        let same = y < bottom
            && sy >= top
            && sy < bottom
            && new.row(r.x, y as u16, r.w) == old.row(r.x, sy as u16, r.w);
        match (same, run_start) {
            (true, None) => run_start = Some(y),
            (false, Some(s)) => {
                if best.is_none_or(|(bs, be)| y - s > be - bs) {
                    best = Some((s, y));
                }
                run_start = None;
            }
            _ => {}
        }
    }
    let (s, e) = best?;
    if e - s < i32::from(MIN_BAND) {
        return None;
    }
    Some((
        (s + dy) as u16,
        Rect::new(r.x, s as u16, r.w, (e - s) as u16),
    ))
}

/// The parts of `r` above and below the band `dst` (same width).
pub fn remainder(r: Rect, dst: Rect) -> Vec<Rect> {
    let mut v = Vec::new();
    if dst.y > r.y {
        v.push(Rect::new(r.x, r.y, r.w, dst.y - r.y));
    }
    let (end, dst_end) = (r.y + r.h, dst.y + dst.h);
    if dst_end < end {
        v.push(Rect::new(r.x, dst_end, r.w, end - dst_end));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_like(w: u16, h: u16, seed: u32) -> Frame {
        let mut f = Frame::new(w, h, 0);
        for y in 0..h {
            for x in 0..w {
                let v = (u32::from(y) + seed).wrapping_mul(2654435761) ^ u32::from(x / 3);
                f.pixels[usize::from(y) * usize::from(w) + usize::from(x)] = v & 0xffffff;
            }
        }
        f
    }

    #[test]
    fn detects_a_scroll_up() {
        let old = text_like(128, 100, 0);
        // Scroll up by 10 rows: new row y = old row y + 10; bottom rows are new content.
        let mut new = old.clone();
        for y in 0..90usize {
            let (a, b) = (y * 128, (y + 10) * 128);
            new.pixels.copy_within(b..b + 128, a);
        }
        for p in &mut new.pixels[90 * 128..] {
            *p = 0x123456;
        }
        let r = Rect::new(0, 0, 128, 100);
        let (src_y, dst) = find_scroll(&old, &new, r).unwrap();
        assert_eq!((src_y, dst), (10, Rect::new(0, 0, 128, 90)));
        assert_eq!(remainder(r, dst), vec![Rect::new(0, 90, 128, 10)]);
        // Unrelated content: no scroll.
        assert!(find_scroll(&old, &text_like(128, 100, 7777), r).is_none());
    }
}
