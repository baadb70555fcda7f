//! Scancode set 1 byte sequences for key presses and releases.

/// XT code of Pause (sent as a special sequence, no release).
pub const XT_PAUSE: u16 = 0xe046;
/// XT code of Print Screen.
pub const XT_PRINT: u16 = 0xe037;

/// The set-1 bytes a keyboard sends when the key with XT code `xt` goes down or up.
pub fn set1_bytes(xt: u16, down: bool) -> Vec<u8> {
    let code = (xt & 0x7f) as u8;
    let brk = if down { 0 } else { 0x80 };
    match xt {
        // Pause: E1 1D 45 E1 9D C5 on press, nothing on release.
        XT_PAUSE => {
            if down {
                vec![0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5]
            } else {
                Vec::new()
            }
        }
        // Print Screen carries a fake shift.
        XT_PRINT => {
            if down {
                vec![0xe0, 0x2a, 0xe0, 0x37]
            } else {
                vec![0xe0, 0xb7, 0xe0, 0xaa]
            }
        }
        x if x & 0xff00 == 0xe000 => vec![0xe0, code | brk],
        _ => vec![code | brk],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_and_break_codes() {
        assert_eq!(set1_bytes(0x1e, true), [0x1e]);
        assert_eq!(set1_bytes(0x1e, false), [0x9e]);
        assert_eq!(set1_bytes(0xe048, true), [0xe0, 0x48]);
        assert_eq!(set1_bytes(0xe048, false), [0xe0, 0xc8]);
        assert_eq!(set1_bytes(XT_PAUSE, true).len(), 6);
        assert!(set1_bytes(XT_PAUSE, false).is_empty());
        assert_eq!(set1_bytes(XT_PRINT, false), [0xe0, 0xb7, 0xe0, 0xaa]);
    }
}
