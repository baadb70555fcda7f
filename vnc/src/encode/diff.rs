//! Which parts of a frame differ from what a client was last sent: 16×16 tile comparison,
//! merged into wide rectangles so encoders see few, large regions.

use super::Frame;
use crate::framebuffer::Rect;

/// Tile side used for comparison.
pub const TILE: u16 = 16;

/// Rectangles of `region` where `new` differs from `old` (frames of equal size).
pub fn changed_rects(old: &Frame, new: &Frame, region: Rect) -> Vec<Rect> {
    let region = region.intersect(&new.bounds());
    let mut out: Vec<Rect> = Vec::new();
    // Rectangles still growing downwards: same x span as the previous tile row.
    let mut open: Vec<Rect> = Vec::new();
    let mut ty = region.y;
    while ty < region.y + region.h {
        let th = TILE.min(region.y + region.h - ty);
        let mut spans: Vec<(u16, u16)> = Vec::new();
        let mut tx = region.x;
        while tx < region.x + region.w {
            let tw = TILE.min(region.x + region.w - tx);
            let differs = (ty..ty + th).any(|y| old.row(tx, y, tw) != new.row(tx, y, tw));
            if differs {
                match spans.last_mut() {
                    Some((_, end)) if *end == tx => *end = tx + tw,
                    _ => spans.push((tx, tx + tw)),
                }
            }
            tx += tw;
        }
        let mut next_open = Vec::with_capacity(spans.len());
        for (x0, x1) in spans {
            match open.iter().position(|r| r.x == x0 && r.x + r.w == x1) {
                Some(i) => {
                    let mut r = open.swap_remove(i);
                    r.h += th;
                    next_open.push(r);
                }
                None => next_open.push(Rect::new(x0, ty, x1 - x0, th)),
            }
        }
        out.append(&mut open);
        open = next_open;
        ty += th;
    }
    out.append(&mut open);
    for r in &mut out {
        *r = tighten(old, new, *r);
    }
    out
}

/// Shrink `r` to the bounding box of the pixels that actually differ (tiles are coarse; a
/// small change should cost a small rectangle).
fn tighten(old: &Frame, new: &Frame, r: Rect) -> Rect {
    let differs = |y: u16| old.row(r.x, y, r.w) != new.row(r.x, y, r.w);
    let Some(top) = (r.y..r.y + r.h).find(|&y| differs(y)) else {
        return r;
    };
    let bottom = (r.y..r.y + r.h).rev().find(|&y| differs(y)).unwrap_or(top);
    let (mut left, mut right) = (r.x + r.w, r.x);
    for y in top..=bottom {
        let (o, n) = (old.row(r.x, y, r.w), new.row(r.x, y, r.w));
        if let Some(i) = (0..o.len()).find(|&i| o[i] != n[i]) {
            left = left.min(r.x + i as u16);
        }
        if let Some(i) = (0..o.len()).rev().find(|&i| o[i] != n[i]) {
            right = right.max(r.x + i as u16);
        }
    }
    Rect::new(left, top, right + 1 - left, bottom + 1 - top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_merges_changed_tiles() {
        let old = Frame::new(100, 50, 0);
        let mut new = old.clone();
        assert!(changed_rects(&old, &new, new.bounds()).is_empty());
        // Two pixels in neighbouring tiles of one tile row, one far below.
        new.pixels[5 * 100 + 3] = 1;
        new.pixels[5 * 100 + 20] = 1;
        new.pixels[40 * 100 + 99] = 1;
        let mut r = changed_rects(&old, &new, new.bounds());
        r.sort_by_key(|r| (r.y, r.x));
        assert_eq!(r, vec![Rect::new(3, 5, 18, 1), Rect::new(99, 40, 1, 1)]);
        // A vertical stripe merges into one tall rectangle.
        let mut new = old.clone();
        for y in 0..50 {
            new.pixels[y * 100 + 50] = 7;
        }
        assert_eq!(
            changed_rects(&old, &new, new.bounds()),
            vec![Rect::new(50, 0, 1, 50)]
        );
        // Changes outside the requested region are ignored.
        assert!(changed_rects(&old, &new, Rect::new(0, 0, 40, 50)).is_empty());
    }
}
