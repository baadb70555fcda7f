//! What the server serves ([`Framebuffer`]) and where client input goes ([`InputSink`]).

use crate::pixel::PixelFormat;

/// A rectangle in framebuffer pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    /// Left edge.
    pub x: u16,
    /// Top edge.
    pub y: u16,
    /// Width.
    pub w: u16,
    /// Height.
    pub h: u16,
}

impl Rect {
    /// A rectangle from its position and size.
    pub const fn new(x: u16, y: u16, w: u16, h: u16) -> Self {
        Rect { x, y, w, h }
    }

    /// Whether it covers no pixel.
    pub fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }

    /// The part of `self` inside `other` (empty when they do not overlap).
    pub fn intersect(&self, other: &Rect) -> Rect {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 =
            (u32::from(self.x) + u32::from(self.w)).min(u32::from(other.x) + u32::from(other.w));
        let y1 =
            (u32::from(self.y) + u32::from(self.h)).min(u32::from(other.y) + u32::from(other.h));
        if x1 <= u32::from(x0) || y1 <= u32::from(y0) {
            return Rect::default();
        }
        Rect::new(
            x0,
            y0,
            (x1 - u32::from(x0)) as u16,
            (y1 - u32::from(y0)) as u16,
        )
    }

    /// Number of pixels.
    pub fn area(&self) -> usize {
        usize::from(self.w) * usize::from(self.h)
    }
}

/// Which parts of a framebuffer changed since the previous [`Framebuffer::take_dirty`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dirty {
    /// Nothing changed.
    None,
    /// Only these rectangles (may overlap; clipped by the server).
    Rects(Vec<Rect>),
    /// Treat everything as changed (also after a mode change).
    All,
}

/// A pointer shape for the Cursor pseudo-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Hot spot x.
    pub hot_x: u16,
    /// Hot spot y.
    pub hot_y: u16,
    /// `0x00RRGGBB` per pixel, row-major.
    pub pixels: Vec<u32>,
    /// One bit per pixel (MSB first, rows padded to bytes): 1 = opaque.
    pub mask: Vec<u8>,
}

/// A screen the VNC server can serve: a display device model, a test pattern, a guest
/// framebuffer in guest memory.
///
/// The server's capture thread calls these under a lock, a few dozen times per second.
pub trait Framebuffer: Send {
    /// Current mode in pixels. A change is a mode switch: the server tells clients that
    /// support DesktopSize and resends everything.
    fn size(&self) -> (u16, u16);
    /// Format of the bytes [`Framebuffer::read_rect`] produces (true colour).
    fn pixel_format(&self) -> PixelFormat;
    /// Write the pixels of `rect` (inside [`Framebuffer::size`]) row by row, packed, to `out`.
    fn read_rect(&mut self, rect: Rect, out: &mut Vec<u8>);
    /// Regions written since the previous call (a hint; the server also compares tiles).
    fn take_dirty(&mut self) -> Dirty;
    /// A new pointer shape since the previous call, if the source has one.
    fn take_cursor(&mut self) -> Option<Cursor> {
        None
    }
}

/// Receives keyboard and pointer events from VNC clients.
pub trait InputSink: Send + Sync {
    /// A key went down or up. `keysym` is the X11 keysym; `xt` is the raw XT (set 1) scancode
    /// when the client sent a QEMU Extended Key Event (0xE0-prefixed keys as `0xE0xx`).
    fn key(&self, down: bool, keysym: u32, xt: Option<u16>);
    /// Absolute pointer position and button mask (bit 0 left, 1 middle, 2 right, 3/4 wheel),
    /// with the framebuffer size it refers to.
    fn pointer(&self, x: u16, y: u16, buttons: u8, width: u16, height: u16);
}

/// An input sink that drops everything (view-only servers).
pub struct NoInput;

impl InputSink for NoInput {
    fn key(&self, _down: bool, _keysym: u32, _xt: Option<u16>) {}
    fn pointer(&self, _x: u16, _y: u16, _buttons: u8, _width: u16, _height: u16) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersect_clips() {
        let a = Rect::new(10, 10, 20, 20);
        assert_eq!(
            a.intersect(&Rect::new(0, 0, 15, 100)),
            Rect::new(10, 10, 5, 20)
        );
        assert!(a.intersect(&Rect::new(30, 0, 5, 5)).is_empty());
        assert_eq!(
            Rect::new(65530, 0, 5, 1).intersect(&Rect::new(0, 0, 65535, 1)),
            Rect::new(65530, 0, 5, 1)
        );
    }
}
