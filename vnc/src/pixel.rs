//! RFB pixel formats and conversion between the server's XRGB8888 frames and a client's format.
//!
//! Internally every frame is `u32` per pixel, `0x00RRGGBB`. A client may ask for any true-colour
//! format (8/16/32 bits per pixel, any shifts and maxima, either byte order); [`Converter`] maps
//! server pixels to that format with per-channel lookup tables.

use crate::{proto_err, Result};

/// An RFB PIXEL_FORMAT (RFC 6143 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelFormat {
    /// Bits per pixel on the wire: 8, 16 or 32.
    pub bits_per_pixel: u8,
    /// Useful bits in a pixel.
    pub depth: u8,
    /// Multi-byte pixels are big-endian.
    pub big_endian: bool,
    /// True colour (only true colour is served).
    pub true_colour: bool,
    /// Maximum red value.
    pub red_max: u16,
    /// Maximum green value.
    pub green_max: u16,
    /// Maximum blue value.
    pub blue_max: u16,
    /// Bit position of red.
    pub red_shift: u8,
    /// Bit position of green.
    pub green_shift: u8,
    /// Bit position of blue.
    pub blue_shift: u8,
}

impl PixelFormat {
    /// 32 bpp little-endian `0x00RRGGBB`: the server's native format.
    pub const XRGB8888: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// 16 bpp little-endian RGB565.
    pub const RGB565: PixelFormat = PixelFormat {
        bits_per_pixel: 16,
        depth: 16,
        big_endian: false,
        true_colour: true,
        red_max: 31,
        green_max: 63,
        blue_max: 31,
        red_shift: 11,
        green_shift: 5,
        blue_shift: 0,
    };

    /// 8 bpp BGR233 (as TigerVNC's "very low" colour level uses).
    pub const BGR233: PixelFormat = PixelFormat {
        bits_per_pixel: 8,
        depth: 8,
        big_endian: false,
        true_colour: true,
        red_max: 7,
        green_max: 7,
        blue_max: 3,
        red_shift: 0,
        green_shift: 3,
        blue_shift: 6,
    };

    /// Bytes per pixel on the wire.
    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }

    /// The server's layout for 8-bit colour-map clients: BGR233 indices, with a matching colour
    /// map sent by [`colour_map_message`].
    pub const COLOUR_MAP_8: PixelFormat = PixelFormat {
        true_colour: false,
        ..PixelFormat::BGR233
    };

    /// Parse the 16-byte wire form and check it is one this server can produce. An 8-bit
    /// colour-map request becomes [`PixelFormat::COLOUR_MAP_8`] (the server picks the map).
    pub fn from_bytes(b: &[u8; 16]) -> Result<Self> {
        if b[3] == 0 && b[0] == 8 {
            return Ok(PixelFormat::COLOUR_MAP_8);
        }
        let pf = PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        };
        pf.validate()?;
        Ok(pf)
    }

    /// The 16-byte wire form.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bits_per_pixel;
        b[1] = self.depth;
        b[2] = u8::from(self.big_endian);
        b[3] = u8::from(self.true_colour);
        b[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        b[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        b[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        b[10] = self.red_shift;
        b[11] = self.green_shift;
        b[12] = self.blue_shift;
        b
    }

    /// Reject formats that cannot be represented: bad bpp, colour maps, channels outside the pixel.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.bits_per_pixel, 8 | 16 | 32) {
            return proto_err(format!(
                "unsupported bits-per-pixel {}",
                self.bits_per_pixel
            ));
        }
        if !self.true_colour && self.bits_per_pixel != 8 {
            return proto_err("colour-map pixel formats need 8 bits per pixel");
        }
        for (name, max, shift) in [
            ("red", self.red_max, self.red_shift),
            ("green", self.green_max, self.green_shift),
            ("blue", self.blue_max, self.blue_shift),
        ] {
            let bits = 16 - max.leading_zeros();
            if max == 0 || u32::from(shift) + bits > u32::from(self.bits_per_pixel) {
                return proto_err(format!(
                    "{name} max {max} at shift {shift} does not fit {} bpp",
                    self.bits_per_pixel
                ));
            }
        }
        Ok(())
    }

    /// Bitmask of every colour bit in a pixel value.
    pub fn colour_mask(&self) -> u32 {
        (u32::from(self.red_max) << self.red_shift)
            | (u32::from(self.green_max) << self.green_shift)
            | (u32::from(self.blue_max) << self.blue_shift)
    }

    /// Decode a pixel value in this format to `0x00RRGGBB` (channels scaled back to 8 bits).
    pub fn value_to_rgb(&self, v: u32) -> u32 {
        let ch = |shift: u8, max: u16| -> u32 {
            let c = (v >> shift) & u32::from(max);
            (c * 255 + u32::from(max) / 2) / u32::from(max)
        };
        (ch(self.red_shift, self.red_max) << 16)
            | (ch(self.green_shift, self.green_max) << 8)
            | ch(self.blue_shift, self.blue_max)
    }

    /// Read one pixel value of this format from the start of `b` (`bytes_per_pixel` bytes).
    pub fn read_value(&self, b: &[u8]) -> u32 {
        match (self.bits_per_pixel, self.big_endian) {
            (8, _) => u32::from(b[0]),
            (16, false) => u32::from(u16::from_le_bytes([b[0], b[1]])),
            (16, true) => u32::from(u16::from_be_bytes([b[0], b[1]])),
            (_, false) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            (_, true) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    /// Where the 3 bytes of a ZRLE CPIXEL lie in the 4-byte pixel, or `None` for full pixels.
    pub fn cpixel_offset(&self) -> Option<usize> {
        if self.bits_per_pixel != 32 || self.depth > 24 {
            return None;
        }
        let mask = self.colour_mask();
        let low = mask & 0xff00_0000 == 0;
        let high = mask & 0x0000_00ff == 0;
        match (low, high, self.big_endian) {
            (true, _, false) => Some(0),
            (true, _, true) => Some(1),
            (false, true, false) => Some(1),
            (false, true, true) => Some(0),
            _ => None,
        }
    }

    /// Bytes of a ZRLE CPIXEL.
    pub fn cpixel_size(&self) -> usize {
        if self.cpixel_offset().is_some() {
            3
        } else {
            self.bytes_per_pixel()
        }
    }

    /// Tight sends 3-byte R,G,B pixels for 32 bpp depth-24 formats with 8-bit channels.
    pub fn tight_rgb24(&self) -> bool {
        self.bits_per_pixel == 32
            && self.depth == 24
            && self.red_max == 255
            && self.green_max == 255
            && self.blue_max == 255
    }
}

/// SetColourMapEntries for [`PixelFormat::COLOUR_MAP_8`]: entry i is the colour of BGR233
/// value i.
pub fn colour_map_message() -> Vec<u8> {
    let pf = PixelFormat::BGR233;
    let mut m = vec![1u8, 0, 0, 0, 1, 0];
    for i in 0..256u32 {
        let rgb = pf.value_to_rgb(i);
        for c in [(rgb >> 16) & 0xff, (rgb >> 8) & 0xff, rgb & 0xff] {
            m.extend_from_slice(&((c * 257) as u16).to_be_bytes());
        }
    }
    m
}

/// Maps server pixels (`0x00RRGGBB`) to one client pixel format.
#[derive(Clone)]
pub struct Converter {
    pf: PixelFormat,
    r: [u32; 256],
    g: [u32; 256],
    b: [u32; 256],
}

impl Converter {
    /// Lookup tables for `pf` (which must be valid).
    pub fn new(pf: PixelFormat) -> Self {
        let table = |max: u16, shift: u8| {
            let mut t = [0u32; 256];
            for (i, e) in t.iter_mut().enumerate() {
                let c = (i as u32 * u32::from(max) + 127) / 255;
                *e = c << shift;
            }
            t
        };
        Converter {
            pf,
            r: table(pf.red_max, pf.red_shift),
            g: table(pf.green_max, pf.green_shift),
            b: table(pf.blue_max, pf.blue_shift),
        }
    }

    /// The client format.
    pub fn format(&self) -> &PixelFormat {
        &self.pf
    }

    /// The client pixel value of a server pixel.
    #[inline]
    pub fn value(&self, rgb: u32) -> u32 {
        self.r[((rgb >> 16) & 0xff) as usize]
            | self.g[((rgb >> 8) & 0xff) as usize]
            | self.b[(rgb & 0xff) as usize]
    }

    /// Append a client pixel value in wire byte order.
    #[inline]
    pub fn put_value(&self, v: u32, out: &mut Vec<u8>) {
        match (self.pf.bits_per_pixel, self.pf.big_endian) {
            (8, _) => out.push(v as u8),
            (16, false) => out.extend_from_slice(&(v as u16).to_le_bytes()),
            (16, true) => out.extend_from_slice(&(v as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&v.to_le_bytes()),
            (_, true) => out.extend_from_slice(&v.to_be_bytes()),
        }
    }

    /// Append a server pixel as a full client PIXEL.
    #[inline]
    pub fn put(&self, rgb: u32, out: &mut Vec<u8>) {
        self.put_value(self.value(rgb), out)
    }

    /// Append a server pixel as a ZRLE CPIXEL.
    #[inline]
    pub fn put_cpixel(&self, rgb: u32, out: &mut Vec<u8>) {
        match self.pf.cpixel_offset() {
            None => self.put(rgb, out),
            Some(off) => {
                let v = self.value(rgb);
                let b = if self.pf.big_endian {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                out.extend_from_slice(&b[off..off + 3]);
            }
        }
    }

    /// Append a server pixel as a Tight TPIXEL.
    #[inline]
    pub fn put_tpixel(&self, rgb: u32, out: &mut Vec<u8>) {
        if self.pf.tight_rgb24() {
            out.extend_from_slice(&[(rgb >> 16) as u8, (rgb >> 8) as u8, rgb as u8]);
        } else {
            self.put(rgb, out)
        }
    }

    /// Server pixel as the client will see it after quantisation (for change detection in
    /// reduced formats and for tests).
    pub fn quantise(&self, rgb: u32) -> u32 {
        self.pf.value_to_rgb(self.value(rgb))
    }
}

/// Convert `src` pixels of format `pf` (as a [`crate::Framebuffer`] reports them) to server
/// pixels, appending to `out`.
pub fn to_server_pixels(pf: &PixelFormat, src: &[u8], out: &mut Vec<u32>) {
    let bpp = pf.bytes_per_pixel();
    if *pf == PixelFormat::XRGB8888 {
        out.extend(
            src.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], 0])),
        );
        return;
    }
    out.extend(
        src.chunks_exact(bpp)
            .map(|c| pf.value_to_rgb(pf.read_value(c))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_validation() {
        let b = PixelFormat::RGB565.to_bytes();
        assert_eq!(PixelFormat::from_bytes(&b).unwrap(), PixelFormat::RGB565);
        let mut bad = PixelFormat::XRGB8888;
        bad.red_shift = 28;
        assert!(PixelFormat::from_bytes(&bad.to_bytes()).is_err());
        bad = PixelFormat::XRGB8888;
        bad.bits_per_pixel = 24;
        assert!(bad.validate().is_err());
        bad = PixelFormat::XRGB8888;
        bad.true_colour = false;
        assert!(bad.validate().is_err());
        // An 8-bit colour-map request gets the server's BGR233 map.
        let mut cm = [0u8; 16];
        cm[0] = 8;
        cm[1] = 8;
        assert_eq!(
            PixelFormat::from_bytes(&cm).unwrap(),
            PixelFormat::COLOUR_MAP_8
        );
        let m = colour_map_message();
        assert_eq!(m.len(), 6 + 256 * 6);
        // Entry 7 is full red.
        assert_eq!(&m[6 + 7 * 6..6 + 8 * 6], &[0xff, 0xff, 0, 0, 0, 0]);
    }

    #[test]
    fn converts_any_shift_and_endianness() {
        // noVNC's format: red at shift 0.
        let novnc = PixelFormat {
            red_shift: 0,
            blue_shift: 16,
            ..PixelFormat::XRGB8888
        };
        let c = Converter::new(novnc);
        let mut out = Vec::new();
        c.put(0x112233, &mut out);
        assert_eq!(out, [0x11, 0x22, 0x33, 0]);
        let be = PixelFormat {
            big_endian: true,
            ..PixelFormat::XRGB8888
        };
        out.clear();
        Converter::new(be).put(0x112233, &mut out);
        assert_eq!(out, [0, 0x11, 0x22, 0x33]);
        out.clear();
        Converter::new(PixelFormat::RGB565).put(0xff0000, &mut out);
        assert_eq!(out, 0xf800u16.to_le_bytes());
        out.clear();
        Converter::new(PixelFormat::BGR233).put(0x0000ff, &mut out);
        assert_eq!(out, [0xc0]);
    }

    #[test]
    fn cpixel_picks_the_colour_bytes() {
        let mut out = Vec::new();
        Converter::new(PixelFormat::XRGB8888).put_cpixel(0x112233, &mut out);
        assert_eq!(out, [0x33, 0x22, 0x11]);
        let high = PixelFormat {
            red_shift: 24,
            green_shift: 16,
            blue_shift: 8,
            big_endian: true,
            ..PixelFormat::XRGB8888
        };
        out.clear();
        Converter::new(high).put_cpixel(0x112233, &mut out);
        assert_eq!(out, [0x11, 0x22, 0x33]);
        assert_eq!(PixelFormat::RGB565.cpixel_size(), 2);
    }

    #[test]
    fn source_formats_convert_to_server_pixels() {
        let mut out = Vec::new();
        to_server_pixels(&PixelFormat::RGB565, &0xf800u16.to_le_bytes(), &mut out);
        to_server_pixels(&PixelFormat::XRGB8888, &[1, 2, 3, 0xff], &mut out);
        assert_eq!(out, [0xff0000, 0x030201]);
    }
}
