//! X11 keysym → XT (scancode set 1) mapping, generated at build time from QEMU's `en-us`
//! keymap and `keysymdef.h` (see devices/build.rs).

include!(concat!(env!("OUT_DIR"), "/keymap.rs"));

/// Where a keysym lives on a US PC keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyMapping {
    /// XT scancode; `0xE0xx` for extended keys.
    pub xt: u16,
    /// The keysym is the shifted level of its key.
    pub shift: bool,
    /// The keysym needs AltGr.
    pub altgr: bool,
}

/// The key producing `keysym`, if the US layout has one.
pub fn keysym_to_xt(keysym: u32) -> Option<KeyMapping> {
    let i = KEYSYM_TO_XT.binary_search_by_key(&keysym, |e| e.0).ok()?;
    let (_, xt, flags) = KEYSYM_TO_XT[i];
    Some(KeyMapping {
        xt,
        shift: flags & 1 != 0,
        altgr: flags & 2 != 0,
    })
}

/// Number of keysyms in the table (0 when the sources were missing at build time).
pub fn table_len() -> usize {
    KEYSYM_TO_XT.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_table_maps_common_keys() {
        assert!(
            table_len() > 100,
            "keymap missing at build time: install qemu-system-data and x11proto-dev (scripts/setup.sh)"
        );
        let xt = |k| keysym_to_xt(k).map(|m| m.xt);
        assert_eq!(xt(0x61), Some(0x1e)); // a
        assert_eq!(xt(0x41), Some(0x1e)); // A, same key
        assert!(keysym_to_xt(0x41).unwrap().shift);
        assert_eq!(xt(0xff0d), Some(0x1c)); // Return
        assert_eq!(xt(0xff1b), Some(0x01)); // Escape
        assert_eq!(xt(0xffe1), Some(0x2a)); // Shift_L
        assert_eq!(xt(0xffe4), Some(0xe01d)); // Control_R
        assert_eq!(xt(0xff8d), Some(0xe01c)); // KP_Enter
        assert_eq!(xt(0xff52), Some(0xe048)); // Up
        assert_eq!(xt(0x20), Some(0x39)); // space
        assert_eq!(xt(0x0031), Some(0x02)); // 1
        assert_eq!(xt(0xffbe), Some(0x3b)); // F1
        assert_eq!(keysym_to_xt(0x12345678), None);
    }
}
