//! Framebuffer update encodings and the per-client state they need.
//!
//! Every encoder turns a rectangle of a [`Frame`] (server pixels `0x00RRGGBB`) into the wire
//! bytes of one or more rectangles in the client's pixel format.

pub mod diff;
pub mod hextile;
pub mod raw;
pub mod scroll;
pub mod tight;
pub mod zrle;

use flate2::{Compress, Compression, FlushCompress};

use crate::framebuffer::Rect;
use crate::pixel::Converter;
use crate::proto::{enc, put_rect_header};

/// One full screen in server pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// `0x00RRGGBB`, row-major.
    pub pixels: Vec<u32>,
}

impl Frame {
    /// A frame filled with one colour.
    pub fn new(width: u16, height: u16, fill: u32) -> Self {
        Frame {
            width,
            height,
            pixels: vec![fill; usize::from(width) * usize::from(height)],
        }
    }

    /// The whole frame as a rectangle.
    pub fn bounds(&self) -> Rect {
        Rect::new(0, 0, self.width, self.height)
    }

    /// Pixel row `y` between columns `x` and `x + w` (the rectangle must be inside the frame).
    #[inline]
    pub fn row(&self, x: u16, y: u16, w: u16) -> &[u32] {
        let start = usize::from(y) * usize::from(self.width) + usize::from(x);
        &self.pixels[start..start + usize::from(w)]
    }

    /// Copy `rect` from `src` (same size frames).
    pub fn copy_rect_from(&mut self, src: &Frame, rect: Rect) {
        for y in rect.y..rect.y + rect.h {
            let start = usize::from(y) * usize::from(self.width) + usize::from(rect.x);
            let end = start + usize::from(rect.w);
            self.pixels[start..end].copy_from_slice(&src.pixels[start..end]);
        }
    }
}

/// A zlib stream that lives as long as the client connection (RFB streams are never reset).
pub struct ZStream {
    z: Compress,
}

impl ZStream {
    /// A new stream at compression `level` (0–9).
    pub fn new(level: u32) -> Self {
        ZStream {
            z: Compress::new(Compression::new(level.min(9)), true),
        }
    }

    /// Compress `input` and sync-flush, appending the bytes to `out`.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let start_in = self.z.total_in();
        loop {
            let done = (self.z.total_in() - start_in) as usize;
            let spare = (input.len() - done) / 2 + 1024;
            if out.capacity() - out.len() < spare {
                out.reserve(spare);
            }
            if let Err(e) = self
                .z
                .compress_vec(&input[done..], out, FlushCompress::Sync)
            {
                // Cannot happen with a live stream and spare output room; the client would
                // see a corrupt stream and disconnect.
                log::error!("vnc: zlib compression failed: {e}");
                return;
            }
            // The flush is complete once all input is in and zlib left output room unused.
            let consumed_all = (self.z.total_in() - start_in) as usize == input.len();
            if consumed_all && out.len() < out.capacity() {
                return;
            }
        }
    }
}

/// Per-client encoder state: pixel conversion and the zlib streams of ZRLE and Tight.
pub struct Encoder {
    /// Client pixel format.
    pub conv: Converter,
    zrle: Option<ZStream>,
    tight: [Option<ZStream>; 4],
    /// Compression level requested by the client (0–9).
    pub compress_level: u32,
    /// JPEG quality level (0–9) for Tight, when lossy compression is allowed and requested.
    pub jpeg_quality: Option<u8>,
    scratch: Vec<u8>,
}

impl Encoder {
    /// Encoder for a client format.
    pub fn new(conv: Converter) -> Self {
        Encoder {
            conv,
            zrle: None,
            tight: [None, None, None, None],
            compress_level: 6,
            jpeg_quality: None,
            scratch: Vec::new(),
        }
    }

    /// Encode `rect` of `frame` with `encoding`, appending rectangles to `out`; returns how many
    /// rectangles were written.
    pub fn encode(&mut self, encoding: i32, frame: &Frame, rect: Rect, out: &mut Vec<u8>) -> u16 {
        match encoding {
            enc::HEXTILE => {
                put_rect_header(out, rect, enc::HEXTILE);
                hextile::encode(&self.conv, frame, rect, out);
                1
            }
            enc::ZRLE => {
                put_rect_header(out, rect, enc::ZRLE);
                self.scratch.clear();
                zrle::encode(&self.conv, frame, rect, &mut self.scratch);
                let level = self.compress_level;
                let z = self.zrle.get_or_insert_with(|| ZStream::new(level));
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                z.compress(&self.scratch, out);
                let len = (out.len() - len_at - 4) as u32;
                out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
                1
            }
            enc::TIGHT => {
                let level = self.compress_level;
                let jpeg = self.jpeg_quality;
                tight::encode(&self.conv, &mut self.tight, level, jpeg, frame, rect, out)
            }
            _ => {
                put_rect_header(out, rect, enc::RAW);
                raw::encode(&self.conv, frame, rect, out);
                1
            }
        }
    }
}
