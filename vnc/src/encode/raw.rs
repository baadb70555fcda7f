//! Raw encoding: every pixel in the client's format.

use super::Frame;
use crate::framebuffer::Rect;
use crate::pixel::Converter;

/// Append the raw pixels of `rect`.
pub fn encode(conv: &Converter, frame: &Frame, rect: Rect, out: &mut Vec<u8>) {
    out.reserve(rect.area() * conv.format().bytes_per_pixel());
    for y in rect.y..rect.y + rect.h {
        for &p in frame.row(rect.x, y, rect.w) {
            conv.put(p, out);
        }
    }
}
