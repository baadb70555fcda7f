//! RFB wire constants and the client-to-server messages, read with every length bounded.

use std::io::Read;

use crate::framebuffer::Rect;
use crate::pixel::PixelFormat;
use crate::{proto_err, Result};

/// Encoding numbers (RFC 6143 §7.7 and the community registry).
pub mod enc {
    /// Raw pixels.
    pub const RAW: i32 = 0;
    /// Copy from another screen position.
    pub const COPY_RECT: i32 = 1;
    /// 16×16 tiles with subrectangles.
    pub const HEXTILE: i32 = 5;
    /// Tight (zlib with filters, optional JPEG).
    pub const TIGHT: i32 = 7;
    /// Zlib run-length encoding.
    pub const ZRLE: i32 = 16;
    /// Pseudo: the client handles framebuffer size changes.
    pub const DESKTOP_SIZE: i32 = -223;
    /// Pseudo: a LastRect marker ends an update of unknown rectangle count.
    pub const LAST_RECT: i32 = -224;
    /// Pseudo: rich cursor shape.
    pub const CURSOR: i32 = -239;
    /// Pseudo: QEMU Extended Key Event messages (raw scancodes).
    pub const QEMU_EXTENDED_KEY_EVENT: i32 = -258;
    /// Pseudo: QEMU keyboard LED state.
    pub const QEMU_LED_STATE: i32 = -261;
    /// Pseudo: the client speaks Fence.
    pub const FENCE: i32 = -312;
    /// Pseudo: the client speaks ContinuousUpdates.
    pub const CONTINUOUS_UPDATES: i32 = -313;
    /// Pseudo: extended desktop size (screen layout).
    pub const EXTENDED_DESKTOP_SIZE: i32 = -308;
    /// Pseudo range: Tight JPEG quality levels -32 (0) .. -23 (9).
    pub const JPEG_QUALITY_0: i32 = -32;
    /// Pseudo range: compression levels -256 (0) .. -247 (9).
    pub const COMPRESS_LEVEL_0: i32 = -256;
}

/// Most encodings a SetEncodings message may list; more are read and ignored.
pub const MAX_ENCODINGS: usize = 64;
/// Longest ClientCutText accepted (bytes); longer drops the client.
pub const MAX_CUT_TEXT: u32 = 1 << 20;

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// SetPixelFormat.
    SetPixelFormat(PixelFormat),
    /// SetEncodings, in the client's preference order (at most [`MAX_ENCODINGS`]).
    SetEncodings(Vec<i32>),
    /// FramebufferUpdateRequest.
    UpdateRequest {
        /// Only changes are wanted.
        incremental: bool,
        /// Region of interest.
        rect: Rect,
    },
    /// KeyEvent.
    Key {
        /// Pressed (true) or released.
        down: bool,
        /// X11 keysym.
        keysym: u32,
    },
    /// PointerEvent.
    Pointer {
        /// Button mask.
        buttons: u8,
        /// X position.
        x: u16,
        /// Y position.
        y: u16,
    },
    /// ClientCutText (contents discarded: no clipboard integration).
    CutText(u32),
    /// SetDesktopSize (ExtendedDesktopSize extension): the client asks for a new size.
    SetDesktopSize {
        /// Requested width.
        width: u16,
        /// Requested height.
        height: u16,
    },
    /// EnableContinuousUpdates.
    EnableContinuousUpdates {
        /// On or off.
        enable: bool,
        /// Region to keep updated.
        rect: Rect,
    },
    /// Fence (request or answer).
    Fence {
        /// Flags (bit 31 = request).
        flags: u32,
        /// Opaque payload, at most 64 bytes.
        payload: Vec<u8>,
    },
    /// QEMU Extended Key Event.
    ExtendedKey {
        /// Pressed (true) or released.
        down: bool,
        /// X11 keysym.
        keysym: u32,
        /// XT scancode in QEMU's form (see [`qemu_keycode_to_xt`]).
        keycode: u32,
    },
}

/// Convert QEMU's Extended Key Event keycode (XT code, 0xE0-prefixed keys with bit 7 set in
/// the code: `0x80 | code`) to `0xE0xx` form; `None` when out of range.
pub fn qemu_keycode_to_xt(keycode: u32) -> Option<u16> {
    match keycode {
        0..=0x7f => Some(keycode as u16),
        0x80..=0xff => Some(0xe000 | (keycode as u16 & 0x7f)),
        // Some clients send the prefix literally.
        0xe000..=0xe07f => Some(keycode as u16),
        _ => None,
    }
}

fn read_array<const N: usize>(r: &mut impl Read) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// Read and discard exactly `n` bytes.
fn skip(r: &mut impl Read, n: u64) -> Result<()> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if copied != n {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(())
}

/// Read one client message. Errors mean the stream is unusable and the client must be dropped.
pub fn read_client_message(r: &mut impl Read) -> Result<ClientMessage> {
    let [kind] = read_array::<1>(r)?;
    match kind {
        0 => {
            let b = read_array::<19>(r)?;
            let mut pf = [0u8; 16];
            pf.copy_from_slice(&b[3..19]);
            Ok(ClientMessage::SetPixelFormat(PixelFormat::from_bytes(&pf)?))
        }
        2 => {
            let b = read_array::<3>(r)?;
            let n = usize::from(u16::from_be_bytes([b[1], b[2]]));
            let mut list = Vec::with_capacity(n.min(MAX_ENCODINGS));
            for i in 0..n {
                let e = i32::from_be_bytes(read_array::<4>(r)?);
                if i < MAX_ENCODINGS {
                    list.push(e);
                }
            }
            Ok(ClientMessage::SetEncodings(list))
        }
        3 => {
            let b = read_array::<9>(r)?;
            let u = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
            Ok(ClientMessage::UpdateRequest {
                incremental: b[0] != 0,
                rect: Rect::new(u(1), u(3), u(5), u(7)),
            })
        }
        4 => {
            let b = read_array::<7>(r)?;
            Ok(ClientMessage::Key {
                down: b[0] != 0,
                keysym: u32::from_be_bytes([b[3], b[4], b[5], b[6]]),
            })
        }
        5 => {
            let b = read_array::<5>(r)?;
            Ok(ClientMessage::Pointer {
                buttons: b[0],
                x: u16::from_be_bytes([b[1], b[2]]),
                y: u16::from_be_bytes([b[3], b[4]]),
            })
        }
        6 => {
            let b = read_array::<7>(r)?;
            let len = i32::from_be_bytes([b[3], b[4], b[5], b[6]]);
            // A negative length is the extended-clipboard form; its size is the magnitude.
            let len = len.unsigned_abs();
            if len > MAX_CUT_TEXT {
                return proto_err(format!("cut text of {len} bytes exceeds {MAX_CUT_TEXT}"));
            }
            skip(r, u64::from(len))?;
            Ok(ClientMessage::CutText(len))
        }
        150 => {
            let b = read_array::<9>(r)?;
            let u = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
            Ok(ClientMessage::EnableContinuousUpdates {
                enable: b[0] != 0,
                rect: Rect::new(u(1), u(3), u(5), u(7)),
            })
        }
        248 => {
            let b = read_array::<8>(r)?;
            let len = usize::from(b[7]);
            if len > 64 {
                return proto_err(format!("fence payload of {len} bytes exceeds 64"));
            }
            let mut payload = vec![0u8; len];
            r.read_exact(&mut payload)?;
            Ok(ClientMessage::Fence {
                flags: u32::from_be_bytes([b[3], b[4], b[5], b[6]]),
                payload,
            })
        }
        251 => {
            let b = read_array::<7>(r)?;
            // The screen layout follows: 16 bytes per screen.
            skip(r, u64::from(b[5]) * 16)?;
            Ok(ClientMessage::SetDesktopSize {
                width: u16::from_be_bytes([b[1], b[2]]),
                height: u16::from_be_bytes([b[3], b[4]]),
            })
        }
        255 => {
            let [sub] = read_array::<1>(r)?;
            if sub != 0 {
                return proto_err(format!("unsupported QEMU client message subtype {sub}"));
            }
            let b = read_array::<10>(r)?;
            Ok(ClientMessage::ExtendedKey {
                down: u16::from_be_bytes([b[0], b[1]]) != 0,
                keysym: u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
                keycode: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
            })
        }
        other => proto_err(format!("unknown client message type {other}")),
    }
}

/// Append a rectangle header.
pub fn put_rect_header(out: &mut Vec<u8>, r: Rect, encoding: i32) {
    out.extend_from_slice(&r.x.to_be_bytes());
    out.extend_from_slice(&r.y.to_be_bytes());
    out.extend_from_slice(&r.w.to_be_bytes());
    out.extend_from_slice(&r.h.to_be_bytes());
    out.extend_from_slice(&encoding.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<ClientMessage> {
        read_client_message(&mut &b[..])
    }

    #[test]
    fn parses_each_message() {
        let mut pf = vec![0u8, 0, 0, 0];
        pf.extend_from_slice(&PixelFormat::RGB565.to_bytes());
        assert_eq!(
            parse(&pf).unwrap(),
            ClientMessage::SetPixelFormat(PixelFormat::RGB565)
        );
        assert_eq!(
            parse(&[2, 0, 0, 2, 0, 0, 0, 16, 0xff, 0xff, 0xff, 0x21]).unwrap(),
            ClientMessage::SetEncodings(vec![16, -223])
        );
        assert_eq!(
            parse(&[3, 1, 0, 1, 0, 2, 0, 3, 0, 4]).unwrap(),
            ClientMessage::UpdateRequest {
                incremental: true,
                rect: Rect::new(1, 2, 3, 4)
            }
        );
        assert_eq!(
            parse(&[4, 1, 0, 0, 0, 0, 0xff, 0x0d]).unwrap(),
            ClientMessage::Key {
                down: true,
                keysym: 0xff0d
            }
        );
        assert_eq!(
            parse(&[5, 1, 0, 10, 0, 20]).unwrap(),
            ClientMessage::Pointer {
                buttons: 1,
                x: 10,
                y: 20
            }
        );
        assert_eq!(
            parse(&[6, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']).unwrap(),
            ClientMessage::CutText(2)
        );
        assert_eq!(
            parse(&[255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e]).unwrap(),
            ClientMessage::ExtendedKey {
                down: true,
                keysym: 0x61,
                keycode: 0x1e
            }
        );
    }

    #[test]
    fn hostile_messages_fail_cleanly() {
        // Unknown type, truncated bodies, oversize cut text, bad pixel format.
        assert!(parse(&[42]).is_err());
        assert!(parse(&[3, 1, 0]).is_err());
        assert!(parse(&[6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(parse(&[6, 0, 0, 0, 0, 0, 0, 5, 1]).is_err());
        let mut pf = vec![0u8, 0, 0, 0];
        pf.extend_from_slice(&[24; 16]);
        assert!(parse(&pf).is_err());
        // SetEncodings claims more entries than sent.
        assert!(parse(&[2, 0, 0xff, 0xff, 0, 0, 0, 0]).is_err());
        // Many encodings: read all, keep the first MAX_ENCODINGS.
        let mut m = vec![2u8, 0, 0x01, 0x00];
        m.extend(std::iter::repeat_n([0u8, 0, 0, 5], 256).flatten());
        match parse(&m).unwrap() {
            ClientMessage::SetEncodings(v) => assert_eq!(v.len(), MAX_ENCODINGS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn qemu_keycodes() {
        assert_eq!(qemu_keycode_to_xt(0x1e), Some(0x1e));
        assert_eq!(qemu_keycode_to_xt(0x9d), Some(0xe01d));
        assert_eq!(qemu_keycode_to_xt(0x1_0000), None);
    }
}
