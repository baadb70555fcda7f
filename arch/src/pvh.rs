//! The Xen PVH boot ABI's `hvm_start_info`, memory map and module list.

use crate::e820::E820Entry;
use crate::layout::{PVH_INFO_START, PVH_MEMMAP_START};

/// `hvm_start_info.magic`.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;
/// Version 1: the memory map fields are valid.
pub const HVM_START_VERSION: u32 = 1;
/// Where the module list (one entry: the initrd) goes.
pub const PVH_MODLIST_START: u64 = PVH_INFO_START + 0xf00;
/// Size of one memory map entry.
pub const MEMMAP_ENTRY_SIZE: usize = 24;
/// Most memory map entries that fit between the memmap start and the module list.
pub const MEMMAP_MAX_ENTRIES: usize =
    ((PVH_MODLIST_START - PVH_MEMMAP_START) as usize) / MEMMAP_ENTRY_SIZE;

/// A blob of boot data and the guest address it belongs at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Guest-physical address.
    pub addr: u64,
    /// Bytes to write there.
    pub bytes: Vec<u8>,
}

/// Errors building PVH start info.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PvhError {
    /// The memory map does not fit the space reserved for it.
    #[error("PVH memory map has {0} entries; at most {MEMMAP_MAX_ENTRIES} fit")]
    TooManyEntries(usize),
}

/// The start info, memory map and (with an initrd) module list for PVH entry. EBX at entry
/// must be [`PVH_INFO_START`].
pub fn start_info(
    cmdline_addr: u64,
    rsdp_addr: u64,
    memmap: &[E820Entry],
    initrd: Option<(u64, u64)>,
) -> Result<Vec<Placed>, PvhError> {
    if memmap.len() > MEMMAP_MAX_ENTRIES {
        return Err(PvhError::TooManyEntries(memmap.len()));
    }
    let mut info = Vec::with_capacity(56);
    info.extend_from_slice(&HVM_START_MAGIC.to_le_bytes());
    info.extend_from_slice(&HVM_START_VERSION.to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&(initrd.is_some() as u32).to_le_bytes()); // nr_modules
    let modlist = if initrd.is_some() {
        PVH_MODLIST_START
    } else {
        0
    };
    info.extend_from_slice(&modlist.to_le_bytes());
    info.extend_from_slice(&cmdline_addr.to_le_bytes());
    info.extend_from_slice(&rsdp_addr.to_le_bytes());
    info.extend_from_slice(&PVH_MEMMAP_START.to_le_bytes());
    info.extend_from_slice(&(memmap.len() as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());

    let mut map = Vec::with_capacity(memmap.len() * MEMMAP_ENTRY_SIZE);
    for e in memmap {
        map.extend_from_slice(&e.addr.to_le_bytes());
        map.extend_from_slice(&e.size.to_le_bytes());
        map.extend_from_slice(&e.kind.to_le_bytes());
        map.extend_from_slice(&0u32.to_le_bytes());
    }
    let mut out = vec![
        Placed {
            addr: PVH_INFO_START,
            bytes: info,
        },
        Placed {
            addr: PVH_MEMMAP_START,
            bytes: map,
        },
    ];
    if let Some((addr, size)) = initrd {
        let mut m = Vec::with_capacity(32);
        m.extend_from_slice(&addr.to_le_bytes());
        m.extend_from_slice(&size.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes()); // no module command line
        m.extend_from_slice(&0u64.to_le_bytes());
        out.push(Placed {
            addr: PVH_MODLIST_START,
            bytes: m,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn start_info_layout_matches_the_abi() {
        let map = crate::e820::e820_map(256 << 20);
        let p = start_info(0x20000, 0xe0000, &map, Some((0x800_0000, 0x1234))).unwrap();
        let info = &p[0].bytes;
        assert_eq!(info.len(), 56);
        assert_eq!(u32_at(info, 0), HVM_START_MAGIC);
        assert_eq!(u32_at(info, 4), 1);
        assert_eq!(u32_at(info, 12), 1);
        assert_eq!(u64_at(info, 16), PVH_MODLIST_START);
        assert_eq!(u64_at(info, 24), 0x20000);
        assert_eq!(u64_at(info, 32), 0xe0000);
        assert_eq!(u64_at(info, 40), PVH_MEMMAP_START);
        assert_eq!(u32_at(info, 48) as usize, map.len());
        let mm = &p[1].bytes;
        assert_eq!(mm.len(), map.len() * 24);
        assert_eq!(u64_at(mm, 24 * 2), 0x100000);
        assert_eq!(u32_at(mm, 24 + 16), 2);
        assert_eq!(u64_at(&p[2].bytes, 0), 0x800_0000);
        assert_eq!(u64_at(&p[2].bytes, 8), 0x1234);
        // Start info, memmap and module list do not overlap.
        const { assert!(PVH_INFO_START + 56 <= PVH_MEMMAP_START) };
        assert!(PVH_MEMMAP_START + mm.len() as u64 <= PVH_MODLIST_START);
    }

    #[test]
    fn no_initrd_means_no_modules() {
        let p = start_info(0x20000, 0, &crate::e820::e820_map(64 << 20), None).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(u32_at(&p[0].bytes, 12), 0);
        assert_eq!(u64_at(&p[0].bytes, 16), 0);
        let too_many = vec![
            E820Entry {
                addr: 0,
                size: 1,
                kind: 1
            };
            MEMMAP_MAX_ENTRIES + 1
        ];
        assert!(start_info(0, 0, &too_many, None).is_err());
    }
}
