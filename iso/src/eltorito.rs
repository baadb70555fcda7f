//! The El Torito boot catalog: which boot images the ISO offers (BIOS, UEFI) and where they are.

use crate::error::Result;
use crate::image::{Iso, BLOCK};

/// Catalog blocks read at most; 4 blocks hold 256 entries, far more than any real catalog.
const MAX_CATALOG_BLOCKS: usize = 4;

/// Platform of a boot entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// 80x86 BIOS (ISOLINUX, GRUB's i386-pc eltorito image).
    X86Bios,
    /// UEFI (an EFI System Partition image).
    Efi,
    /// PowerPC, Mac or anything else, with its platform ID.
    Other(u8),
}

impl Platform {
    fn from_id(id: u8) -> Platform {
        match id {
            0 => Platform::X86Bios,
            0xEF => Platform::Efi,
            other => Platform::Other(other),
        }
    }
}

/// One bootable (or non-bootable) image listed in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootEntry {
    /// Platform this entry is for.
    pub platform: Platform,
    /// Boot indicator 0x88.
    pub bootable: bool,
    /// Emulation type (0 = no emulation, 1–3 floppies, 4 hard disk).
    pub media_type: u8,
    /// Real-mode load segment (0 means the default 0x7C0).
    pub load_segment: u16,
    /// Virtual 512-byte sectors loaded at boot.
    pub sector_count: u16,
    /// First 2048-byte block of the boot image.
    pub load_lba: u32,
}

/// The parsed catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootCatalog {
    /// Entries in catalog order; the first is the initial/default entry.
    pub entries: Vec<BootEntry>,
}

fn entry(platform: u8, e: &[u8]) -> BootEntry {
    BootEntry {
        platform: Platform::from_id(platform),
        bootable: e[0] == 0x88,
        media_type: e[1] & 0x0F,
        load_segment: u16::from_le_bytes([e[2], e[3]]),
        sector_count: u16::from_le_bytes([e[6], e[7]]),
        load_lba: u32::from_le_bytes([e[8], e[9], e[10], e[11]]),
    }
}

impl Iso {
    /// Parse the El Torito boot catalog; `Ok(None)` when the image has no boot record.
    pub fn boot_catalog(&self) -> Result<Option<BootCatalog>> {
        let Some(lba) = self.boot_catalog_lba() else {
            return Ok(None);
        };
        let offset = u64::from(lba) * BLOCK as u64;
        // The catalog may be a single block at the very end of a small image.
        let avail = self.size().saturating_sub(offset);
        let len = (MAX_CATALOG_BLOCKS * BLOCK).min(avail as usize);
        if len < 64 {
            return Err(self.corrupt(format!("boot catalog at block {lba} is outside the image")));
        }
        let mut cat = vec![0u8; len];
        self.read_bytes(offset, &mut cat, "El Torito boot catalog")?;
        let v = &cat[0..32];
        let sum = v.chunks_exact(2).fold(0u16, |s, w| {
            s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        if v[0] != 1 || v[30] != 0x55 || v[31] != 0xAA || sum != 0 {
            return Err(self.corrupt(format!(
                "boot catalog at block {lba} has a bad validation entry (checksum {sum:#x})"
            )));
        }
        let mut entries = vec![entry(v[1], &cat[32..64])];
        let mut pos = 64;
        // Section headers (0x90 more follow, 0x91 last), each followed by its entries.
        while pos + 32 <= cat.len() {
            let h = &cat[pos..pos + 32];
            if h[0] != 0x90 && h[0] != 0x91 {
                break;
            }
            let platform = h[1];
            let count = u16::from_le_bytes([h[2], h[3]]) as usize;
            pos += 32;
            let mut taken = 0;
            while taken < count && pos + 32 <= cat.len() {
                let e = &cat[pos..pos + 32];
                pos += 32;
                if e[0] == 0x44 {
                    continue; // extension record of the previous entry
                }
                entries.push(entry(platform, e));
                taken += 1;
            }
            if h[0] == 0x91 {
                break;
            }
        }
        Ok(Some(BootCatalog { entries }))
    }
}
