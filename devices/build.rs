//! Generates data tables from maintained Debian package files at build time (nothing fetched is
//! committed):
//! - the VGA text-mode font: code page 437 glyphs taken from console-setup's `Uni2-VGA16` PSF
//!   font through glibc's IBM437 charmap (`OUT_DIR/vga_font.rs`).
//!
//! Missing source files only produce a warning and blank tables, so the crate still builds;
//! the unit tests then fail and say what to install (scripts/setup.sh).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

const FONT: &str = "/usr/share/consolefonts/Uni2-VGA16.psf.gz";
const CHARMAP: &str = "/usr/share/i18n/charmaps/IBM437.gz";

fn gunzip(path: &str) -> Result<Vec<u8>, String> {
    println!("cargo:rerun-if-changed={path}");
    let out = Command::new("gzip")
        .args(["-dc", path])
        .output()
        .map_err(|e| format!("running gzip on {path}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gzip -dc {path} failed (is the package installed?)"
        ));
    }
    Ok(out.stdout)
}

/// Glyph bitmaps (16 rows each) and each glyph's Unicode code points.
type Psf = (Vec<[u8; 16]>, Vec<Vec<u32>>);

/// Parse a PSF1 font.
fn parse_psf1(data: &[u8]) -> Result<Psf, String> {
    if data.len() < 4 || data[0] != 0x36 || data[1] != 0x04 {
        return Err("not a PSF1 font".into());
    }
    let (mode, height) = (data[2], usize::from(data[3]));
    if height != 16 {
        return Err(format!("font is 8x{height}, need 8x16"));
    }
    let count = if mode & 1 != 0 { 512 } else { 256 };
    let glyph_end = 4 + count * height;
    if data.len() < glyph_end {
        return Err("font truncated".into());
    }
    let glyphs = (0..count)
        .map(|i| {
            let mut g = [0u8; 16];
            g.copy_from_slice(&data[4 + i * 16..4 + i * 16 + 16]);
            g
        })
        .collect();
    let mut uni = vec![Vec::new(); count];
    if mode & 2 != 0 {
        let mut pos = glyph_end;
        for entry in uni.iter_mut() {
            let mut in_seq = false;
            while pos + 1 < data.len() {
                let v = u16::from_le_bytes([data[pos], data[pos + 1]]);
                pos += 2;
                match v {
                    0xffff => break,
                    0xfffe => in_seq = true,
                    // Only single code points map a byte; sequences are combinations.
                    _ if !in_seq => entry.push(u32::from(v)),
                    _ => {}
                }
            }
        }
    }
    Ok((glyphs, uni))
}

/// Byte → Unicode code point from a glibc charmap.
fn parse_charmap(text: &str) -> [Option<u32>; 256] {
    let mut map = [None; 256];
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(u), Some(b)) = (it.next(), it.next()) else {
            continue;
        };
        let (Some(u), Some(b)) = (
            u.strip_prefix("<U").and_then(|u| u.strip_suffix('>')),
            b.strip_prefix("/x"),
        ) else {
            continue;
        };
        if let (Ok(u), Ok(b)) = (u32::from_str_radix(u, 16), u8::from_str_radix(b, 16)) {
            map[usize::from(b)] = Some(u);
        }
    }
    map
}

fn font() -> Result<Vec<[u8; 16]>, String> {
    let (glyphs, uni) = parse_psf1(&gunzip(FONT)?)?;
    let charmap = String::from_utf8(gunzip(CHARMAP)?).map_err(|e| e.to_string())?;
    let map = parse_charmap(&charmap);
    let mut out = vec![[0u8; 16]; 256];
    for (byte, cp) in map.iter().enumerate() {
        let Some(cp) = cp else { continue };
        if let Some(g) = uni.iter().position(|cps| cps.contains(cp)) {
            out[byte] = glyphs[g];
        }
    }
    Ok(out)
}

fn main() {
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    let (glyphs, source) = match font() {
        Ok(g) => (g, FONT.to_string()),
        Err(e) => {
            println!("cargo:warning=VGA font not generated: {e}; install console-setup-linux and locales (scripts/setup.sh)");
            (vec![[0u8; 16]; 256], String::new())
        }
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "/// Where the glyphs came from (empty when the font was missing at build time)."
    );
    let _ = writeln!(s, "pub(crate) const FONT_SOURCE: &str = {source:?};");
    let _ = writeln!(
        s,
        "/// Code page 437, 8x16, one byte per row, MSB leftmost."
    );
    let _ = writeln!(s, "pub(crate) static FONT_8X16: [[u8; 16]; 256] = [");
    for g in &glyphs {
        let _ = writeln!(s, "    {g:?},");
    }
    let _ = writeln!(s, "];");
    if let Err(e) = std::fs::write(Path::new(&out_dir).join("vga_font.rs"), s) {
        panic!("writing vga_font.rs to {out_dir}: {e}");
    }
}
