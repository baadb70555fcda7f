//! Identity page tables for 64-bit entry: 2 MiB pages covering the first 4 GiB.

use crate::layout::{PDE_START, PDPTE_START, PML4_START};

/// Bytes of identity-mapped address space the boot page tables cover.
pub const IDENTITY_MAPPED: u64 = 4 << 30;
const PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// The page tables as `(guest address, table of 512 entries)`: one PML4, one PDPT and four
/// page directories of 2 MiB pages. CR3 points at [`PML4_START`].
pub fn identity_page_tables() -> Vec<(u64, Vec<u64>)> {
    let mut pml4 = vec![0u64; 512];
    pml4[0] = PDPTE_START | PRESENT_RW;
    let mut pdpt = vec![0u64; 512];
    let mut tables = Vec::new();
    for (i, slot) in pdpt.iter_mut().take(4).enumerate() {
        let pd_addr = PDE_START + (i as u64) * 0x1000;
        *slot = pd_addr | PRESENT_RW;
        let pd: Vec<u64> = (0..512u64)
            .map(|j| (((i as u64) << 30) + (j << 21)) | PRESENT_RW | PAGE_SIZE_2M)
            .collect();
        tables.push((pd_addr, pd));
    }
    tables.insert(0, (PDPTE_START, pdpt));
    tables.insert(0, (PML4_START, pml4));
    tables
}

/// Walk the tables as the MMU would and return the physical address `va` maps to, if any.
pub fn translate(tables: &[(u64, Vec<u64>)], va: u64) -> Option<u64> {
    let table_at = |addr: u64| tables.iter().find(|(a, _)| *a == addr).map(|(_, t)| t);
    let pml4e = table_at(PML4_START)?[((va >> 39) & 0x1ff) as usize];
    if pml4e & 1 == 0 {
        return None;
    }
    let pdpte = table_at(pml4e & !0xfff)?[((va >> 30) & 0x1ff) as usize];
    if pdpte & 1 == 0 {
        return None;
    }
    let pde = table_at(pdpte & !0xfff)?[((va >> 21) & 0x1ff) as usize];
    if pde & 1 == 0 || pde & PAGE_SIZE_2M == 0 {
        return None;
    }
    Some((pde & !0x1f_ffff & 0x000f_ffff_ffff_ffff) | (va & 0x1f_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_four_gib_are_identity_mapped() {
        let t = identity_page_tables();
        assert_eq!(t.len(), 6);
        for va in [
            0u64,
            0x7000,
            0x100000,
            0x1234_5678,
            0xbfff_ffff,
            0xfee0_0000,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&t, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&t, 4 << 30), None);
        assert!(t.iter().all(|(a, tab)| a % 4096 == 0 && tab.len() == 512));
        // The tables sit below the command line and above the zero page.
        assert!(t.iter().all(|(a, _)| *a >= 0x9000 && *a < 0x10000));
    }
}
