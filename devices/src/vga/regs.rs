//! Legacy VGA registers at ports 0x3C0–0x3DF: attribute controller, sequencer, DAC, graphics
//! controller, CRT controller, miscellaneous output and input status. They are stored and read
//! back faithfully; the renderer uses the palette (attribute + DAC), the CRTC start address and
//! cursor registers. Planar graphics modes are not rendered.

/// First port of the block.
pub const BASE: u16 = 0x3c0;
/// Number of ports.
pub const LEN: u16 = 0x20;

/// Register state.
#[derive(Debug, Clone)]
pub struct VgaRegs {
    attr_index: u8,
    attr_flip: bool,
    /// Attribute controller registers (0–15 palette, 0x10 mode, …).
    pub attr: [u8; 0x15],
    misc: u8,
    seq_index: u8,
    seq: [u8; 5],
    dac_mask: u8,
    dac_read: u16,
    dac_write: u16,
    dac_state: u8,
    dac_latch: [u8; 3],
    /// DAC palette: 256 entries of (r, g, b), 6 bits each unless the DISPI 8-bit DAC is on.
    pub dac: [[u8; 3]; 256],
    gc_index: u8,
    gc: [u8; 9],
    crtc_index: u8,
    /// CRT controller registers.
    pub crtc: [u8; 0x19],
    retrace: u8,
    /// Set when anything affecting the rendered picture changed.
    pub picture_changed: bool,
}

impl Default for VgaRegs {
    fn default() -> Self {
        let mut attr = [0u8; 0x15];
        // The standard EGA mapping of the 16 text colours onto the 64-entry DAC.
        for (i, a) in attr.iter_mut().take(16).enumerate() {
            *a = match i {
                6 => 0x14,
                8..=15 => 0x30 | i as u8,
                _ => i as u8,
            };
        }
        attr[0x10] = 0x0c;
        attr[0x12] = 0x0f;
        let mut dac = [[0u8; 3]; 256];
        // EGA colour encoding: bits 2/1/0 are red/green/blue at 2/3 intensity, bits 5/4/3
        // add 1/3 intensity.
        for (i, e) in dac.iter_mut().take(64).enumerate() {
            let ch = |hi: usize, lo: usize| -> u8 {
                (((i >> hi) & 1) * 42 + ((i >> lo) & 1) * 21) as u8
            };
            *e = [ch(2, 5), ch(1, 4), ch(0, 3)];
        }
        let mut crtc = [0u8; 0x19];
        crtc[0x0a] = 0x0d; // cursor start scanline
        crtc[0x0b] = 0x0e; // cursor end scanline
        VgaRegs {
            attr_index: 0,
            attr_flip: false,
            attr,
            misc: 0x67,
            seq_index: 0,
            seq: [0x03, 0x00, 0x03, 0x00, 0x02],
            dac_mask: 0xff,
            dac_read: 0,
            dac_write: 0,
            dac_state: 0,
            dac_latch: [0; 3],
            dac,
            gc_index: 0,
            gc: [0, 0, 0, 0, 0, 0x10, 0x0e, 0, 0xff],
            crtc_index: 0,
            crtc,
            retrace: 0,
            picture_changed: true,
        }
    }
}

impl VgaRegs {
    /// Read the port at `port` (absolute, 0x3C0–0x3DF).
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            0x3c0 => self.attr_index,
            0x3c1 => self
                .attr
                .get(usize::from(self.attr_index & 0x1f))
                .copied()
                .unwrap_or(0),
            0x3c2 => 0x10, // input status 0: switch sense
            0x3c4 => self.seq_index,
            0x3c5 => self
                .seq
                .get(usize::from(self.seq_index))
                .copied()
                .unwrap_or(0),
            0x3c6 => self.dac_mask,
            0x3c7 => self.dac_state,
            0x3c8 => (self.dac_write & 0xff) as u8,
            0x3c9 => {
                let e = self.dac[usize::from(self.dac_read / 3 % 256)];
                let v = e[usize::from(self.dac_read % 3)];
                self.dac_read = (self.dac_read + 1) % (256 * 3);
                v
            }
            0x3ca => 0,
            0x3cc => self.misc,
            0x3ce => self.gc_index,
            0x3cf => self
                .gc
                .get(usize::from(self.gc_index))
                .copied()
                .unwrap_or(0),
            0x3d4 => self.crtc_index,
            0x3d5 => self
                .crtc
                .get(usize::from(self.crtc_index))
                .copied()
                .unwrap_or(0),
            0x3da => {
                // Reading input status 1 resets the attribute flip-flop. Toggle the retrace
                // bits so guests that poll for vertical retrace make progress.
                self.attr_flip = false;
                self.retrace ^= 0x09;
                self.retrace
            }
            _ => 0xff,
        }
    }

    /// Write `v` to the port at `port`.
    pub fn write(&mut self, port: u16, v: u8) {
        match port {
            0x3c0 => {
                if self.attr_flip {
                    if let Some(r) = self.attr.get_mut(usize::from(self.attr_index & 0x1f)) {
                        *r = v;
                        self.picture_changed = true;
                    }
                } else {
                    self.attr_index = v & 0x3f;
                }
                self.attr_flip = !self.attr_flip;
            }
            0x3c2 => self.misc = v,
            0x3c4 => self.seq_index = v,
            0x3c5 => {
                if let Some(r) = self.seq.get_mut(usize::from(self.seq_index)) {
                    *r = v;
                }
            }
            0x3c6 => self.dac_mask = v,
            0x3c7 => {
                self.dac_read = u16::from(v) * 3;
                self.dac_state = 0;
            }
            0x3c8 => {
                self.dac_write = u16::from(v) * 3;
                self.dac_state = 3;
            }
            0x3c9 => {
                self.dac_latch[usize::from(self.dac_write % 3)] = v;
                if self.dac_write % 3 == 2 {
                    self.dac[usize::from(self.dac_write / 3 % 256)] = self.dac_latch;
                    self.picture_changed = true;
                }
                self.dac_write = (self.dac_write + 1) % (256 * 3);
            }
            0x3ce => self.gc_index = v,
            0x3cf => {
                if let Some(r) = self.gc.get_mut(usize::from(self.gc_index)) {
                    *r = v;
                }
            }
            0x3d4 => self.crtc_index = v,
            0x3d5 => {
                if let Some(r) = self.crtc.get_mut(usize::from(self.crtc_index)) {
                    *r = v;
                    self.picture_changed = true;
                }
            }
            _ => {}
        }
    }

    /// Text start address (in character cells) from CRTC 0x0C/0x0D.
    pub fn start_address(&self) -> usize {
        (usize::from(self.crtc[0x0c]) << 8) | usize::from(self.crtc[0x0d])
    }

    /// Cursor cell and scanlines `(cell, start, end)`, or `None` when the cursor is off.
    pub fn cursor(&self) -> Option<(usize, u8, u8)> {
        if self.crtc[0x0a] & 0x20 != 0 {
            return None;
        }
        let cell = (usize::from(self.crtc[0x0e]) << 8) | usize::from(self.crtc[0x0f]);
        Some((cell, self.crtc[0x0a] & 0x1f, self.crtc[0x0b] & 0x1f))
    }

    /// The `0x00RRGGBB` colour of DAC entry `i`.
    pub fn dac_rgb(&self, i: u8, dac_8bit: bool) -> u32 {
        let e = self.dac[usize::from(i & self.dac_mask)];
        let c = |v: u8| -> u32 {
            if dac_8bit {
                u32::from(v)
            } else {
                let v = u32::from(v & 0x3f);
                (v << 2) | (v >> 4)
            }
        };
        (c(e[0]) << 16) | (c(e[1]) << 8) | c(e[2])
    }

    /// The colour of text attribute colour `c` (0–15) through the attribute palette and DAC.
    pub fn text_rgb(&self, c: u8) -> u32 {
        self.dac_rgb(self.attr[usize::from(c & 0x0f)] & 0x3f, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dac_and_attribute_programming() {
        let mut r = VgaRegs::default();
        // Default text colours: 1 is blue, 14 is yellow, 7 light grey.
        assert_eq!(r.text_rgb(1), 0x0000aa);
        assert_eq!(r.text_rgb(14), 0xffff55);
        assert_eq!(r.text_rgb(7), 0xaaaaaa);
        // Program DAC entry 1 to pure red and read it back.
        r.write(0x3c8, 1);
        for v in [63, 0, 0] {
            r.write(0x3c9, v);
        }
        assert_eq!(r.text_rgb(1), 0xff0000);
        r.write(0x3c7, 1);
        assert_eq!([r.read(0x3c9), r.read(0x3c9), r.read(0x3c9)], [63, 0, 0]);
        // Attribute controller: index then data, flip-flop reset by 0x3DA.
        r.read(0x3da);
        r.write(0x3c0, 0x02);
        r.write(0x3c0, 0x01);
        assert_eq!(r.attr[2], 0x01);
        r.read(0x3da);
        r.write(0x3c0, 0x02);
        assert_eq!(r.read(0x3c1), 0x01);
        // Cursor location.
        r.write(0x3d4, 0x0e);
        r.write(0x3d5, 0x01);
        r.write(0x3d4, 0x0f);
        r.write(0x3d5, 0x40);
        assert_eq!(r.cursor(), Some((0x140, 0x0d, 0x0e)));
    }
}
