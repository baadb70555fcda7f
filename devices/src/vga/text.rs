//! 80×25 text mode rendering from the 0xB8000 character/attribute cells with the generated
//! code page 437 font.

use super::regs::VgaRegs;

include!(concat!(env!("OUT_DIR"), "/vga_font.rs"));

/// Columns.
pub const COLS: usize = 80;
/// Rows.
pub const ROWS: usize = 25;
/// Glyph width in pixels.
pub const CELL_W: usize = 8;
/// Glyph height in pixels.
pub const CELL_H: usize = 16;
/// Rendered width.
pub const WIDTH: u16 = (COLS * CELL_W) as u16;
/// Rendered height.
pub const HEIGHT: u16 = (ROWS * CELL_H) as u16;
/// Offset of the colour text buffer (0xB8000) in the 128 KiB legacy window.
pub const TEXT_OFFSET: usize = 0x18000;

/// The glyph of a code page 437 character.
pub fn glyph(c: u8) -> &'static [u8; 16] {
    &FONT_8X16[usize::from(c)]
}

/// Where the font came from (empty when it was missing at build time).
pub fn font_source() -> &'static str {
    FONT_SOURCE
}

/// What is on a text screen: the cells and the cursor. Equal snapshots render equally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextSnapshot {
    /// `(char, attribute)` per cell, row-major.
    pub cells: Vec<(u8, u8)>,
    /// Cursor cell and scanlines.
    pub cursor: Option<(usize, u8, u8)>,
    /// The 16 text colours.
    pub palette: [u32; 16],
    /// Attribute bit 7 means blink (else: bright background), from the attribute mode register.
    pub blink: bool,
}

impl TextSnapshot {
    /// Capture the screen from the legacy window contents and registers.
    pub fn capture(window: &[u8], regs: &VgaRegs) -> Self {
        let start = regs.start_address();
        let cells = (0..COLS * ROWS)
            .map(|i| {
                // The text buffer is 32 KiB of cells; addresses wrap inside it.
                let at = TEXT_OFFSET + ((start + i) * 2) % 0x8000;
                (
                    window.get(at).copied().unwrap_or(0),
                    window.get(at + 1).copied().unwrap_or(0),
                )
            })
            .collect();
        let cursor = regs
            .cursor()
            .and_then(|(cell, s, e)| cell.checked_sub(start).map(|c| (c, s, e)))
            .filter(|(c, _, _)| *c < COLS * ROWS);
        let mut palette = [0u32; 16];
        for (i, p) in palette.iter_mut().enumerate() {
            *p = regs.text_rgb(i as u8);
        }
        TextSnapshot {
            cells,
            cursor,
            palette,
            blink: regs.attr[0x10] & 0x08 != 0,
        }
    }

    /// Render text row `row` into `out` (WIDTH × CELL_H pixels, `0x00RRGGBB`).
    pub fn render_row(&self, row: usize, out: &mut [u32]) {
        for col in 0..COLS {
            let i = row * COLS + col;
            let (ch, at) = self.cells[i];
            let fg = self.palette[usize::from(at & 0x0f)];
            // With blink on, bit 7 blinks the character; it is shown steady so an idle screen
            // stays idle. With blink off it selects the bright background colours.
            let bg_mask = if self.blink { 0x07 } else { 0x0f };
            let bg = self.palette[usize::from((at >> 4) & bg_mask)];
            let g = glyph(ch);
            for (y, bits) in g.iter().enumerate() {
                let cursor_here = matches!(self.cursor, Some((c, s, e)) if c == i && (s as usize..=e as usize).contains(&y));
                for x in 0..CELL_W {
                    let on = cursor_here || bits & (0x80 >> x) != 0;
                    out[y * usize::from(WIDTH) + col * CELL_W + x] = if on { fg } else { bg };
                }
            }
        }
    }

    /// Text rows that differ from `other`.
    pub fn changed_rows(&self, other: &TextSnapshot) -> Vec<usize> {
        if self.palette != other.palette || self.blink != other.blink {
            return (0..ROWS).collect();
        }
        let cursor_row = |s: &TextSnapshot| s.cursor.map(|(c, _, _)| c / COLS);
        (0..ROWS)
            .filter(|&r| {
                self.cells[r * COLS..(r + 1) * COLS] != other.cells[r * COLS..(r + 1) * COLS]
                    || (self.cursor != other.cursor
                        && (cursor_row(self) == Some(r) || cursor_row(other) == Some(r)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn font_was_generated_from_the_console_font() {
        assert!(
            !font_source().is_empty(),
            "VGA font missing at build time: install console-setup-linux and locales (scripts/setup.sh)"
        );
        // 'A' has ink, space has none, and they differ from 'B'.
        assert!(glyph(b'A').iter().any(|&r| r != 0));
        assert!(glyph(b' ').iter().all(|&r| r == 0));
        assert_ne!(glyph(b'A'), glyph(b'B'));
        // Code page 437 0xDB is the full block.
        assert!(glyph(0xdb).iter().all(|&r| r == 0xff));
    }
}
