//! PS/2 mouse packets and the absolute → relative conversion a VNC pointer needs when the
//! guest only has a relative PS/2 mouse.

/// A standard 3-byte PS/2 mouse packet for a motion of `(dx, dy)` (screen coordinates, y
/// down) and `buttons` (bit 0 left, 1 right, 2 middle in PS/2 order). Deltas are clamped to
/// the 9-bit range.
pub fn packet(dx: i32, dy: i32, buttons: u8) -> [u8; 3] {
    let dx = dx.clamp(-255, 255);
    // PS/2 y grows upwards.
    let dy = (-dy).clamp(-255, 255);
    let mut b0 = 0x08 | (buttons & 0x07);
    if dx < 0 {
        b0 |= 0x10;
    }
    if dy < 0 {
        b0 |= 0x20;
    }
    [b0, dx as u8, dy as u8]
}

/// Map RFB buttons (bit 0 left, 1 middle, 2 right) to PS/2 order (left, right, middle).
pub fn rfb_to_ps2_buttons(rfb: u8) -> u8 {
    (rfb & 1) | ((rfb & 4) >> 1) | ((rfb & 2) << 1)
}

/// Turns absolute pointer positions into relative packets.
#[derive(Debug, Default)]
pub struct RelativePointer {
    last: Option<(i32, i32)>,
}

impl RelativePointer {
    /// Packets moving from the previous position to `(x, y)` with `buttons` (RFB order).
    /// Long moves are split so no delta overflows.
    pub fn move_to(&mut self, x: u16, y: u16, buttons: u8) -> Vec<[u8; 3]> {
        let (x, y) = (i32::from(x), i32::from(y));
        let (lx, ly) = self.last.unwrap_or((x, y));
        self.last = Some((x, y));
        let (mut dx, mut dy) = (x - lx, y - ly);
        let b = rfb_to_ps2_buttons(buttons);
        let mut out = Vec::new();
        loop {
            let (sx, sy) = (dx.clamp(-255, 255), dy.clamp(-255, 255));
            out.push(packet(sx, sy, b));
            dx -= sx;
            dy -= sy;
            if dx == 0 && dy == 0 {
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_and_splitting() {
        assert_eq!(packet(5, 3, 1), [0x29, 5, 0xfd]);
        assert_eq!(packet(-1, -1, 0), [0x18, 0xff, 1]);
        assert_eq!(rfb_to_ps2_buttons(0b100), 0b010);
        let mut p = RelativePointer::default();
        assert_eq!(p.move_to(100, 100, 0), vec![[0x08, 0, 0]]);
        let v = p.move_to(700, 90, 1);
        assert_eq!(v.len(), 3);
        let sum: i32 = v
            .iter()
            .map(|b| {
                if b[0] & 0x10 != 0 {
                    i32::from(b[1]) - 256
                } else {
                    i32::from(b[1])
                }
            })
            .sum();
        assert_eq!(sum, 600);
        assert!(v.iter().all(|b| b[0] & 1 == 1));
    }
}
