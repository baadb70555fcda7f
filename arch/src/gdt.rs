//! The flat GDT rvmm boots with and the KVM segment registers derived from it.

use kvm_bindings::kvm_segment;

/// Selector of the code segment (Linux boot protocol's `__BOOT_CS`).
pub const BOOT_CS: u16 = 0x10;
/// Selector of the data segment (`__BOOT_DS`).
pub const BOOT_DS: u16 = 0x18;
/// Selector of the TSS.
pub const BOOT_TSS: u16 = 0x20;

/// Encode a GDT descriptor from its flags (access byte in bits 0–7, flags in 12–15), base and
/// 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// The GDT for 64-bit entry (`long = true`) or 32-bit PVH entry: null, null, code, data, TSS.
pub fn boot_gdt(long: bool) -> [u64; 5] {
    let code = if long { 0xa09b } else { 0xc09b };
    [
        0,
        0,
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// The KVM view of the descriptor `entry` loaded with selector `sel`.
pub fn segment_from_gdt(entry: u64, sel: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    // With 4 KiB granularity the limit counts pages.
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: sel,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if present == 1 { 0 } else { 1 },
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_code_segment_is_64_bit_flat() {
        let gdt = boot_gdt(true);
        assert_eq!(gdt[2], 0x00af_9b00_0000_ffff);
        let cs = segment_from_gdt(gdt[2], BOOT_CS);
        assert_eq!(
            (cs.l, cs.db, cs.g, cs.present, cs.s, cs.type_),
            (1, 0, 1, 1, 1, 0xb)
        );
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 0x10));
    }

    #[test]
    fn pvh_code_segment_is_32_bit_flat_and_data_is_writable() {
        let gdt = boot_gdt(false);
        assert_eq!(gdt[2], 0x00cf_9b00_0000_ffff);
        let cs = segment_from_gdt(gdt[2], BOOT_CS);
        assert_eq!((cs.l, cs.db, cs.limit), (0, 1, 0xffff_ffff));
        let ds = segment_from_gdt(gdt[3], BOOT_DS);
        assert_eq!(gdt[3], 0x00cf_9300_0000_ffff);
        assert_eq!((ds.type_, ds.db, ds.s, ds.selector), (3, 1, 1, 0x18));
        let tss = segment_from_gdt(gdt[4], BOOT_TSS);
        assert_eq!((tss.type_, tss.s, tss.present), (0xb, 0, 1));
    }

    #[test]
    fn base_and_limit_round_trip() {
        let e = gdt_entry(0x4093, 0x1234_5678, 0xabcde);
        let s = segment_from_gdt(e, 0x8);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde);
        assert_eq!(s.g, 0);
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }
}
