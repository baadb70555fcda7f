//! Register, FPU, MSR and local-APIC state a vCPU starts with.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_sregs};

use crate::gdt::{boot_gdt, segment_from_gdt, BOOT_CS, BOOT_DS, BOOT_TSS};
use crate::layout::{BOOT_STACK_POINTER, GDT_START, IDT_START, PML4_START};

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// How the BSP enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode, paging on, RSI = `boot_params` (bzImage and plain ELF).
    Long64,
    /// 32-bit protected mode, paging off, EBX = `hvm_start_info` (PVH).
    Pvh32,
}

/// Set segment, descriptor-table and control registers for `mode` on top of the vCPU's reset
/// state. The GDT must be at [`GDT_START`] and, for [`EntryMode::Long64`], the identity page
/// tables at [`PML4_START`].
pub fn setup_sregs(sregs: &mut kvm_sregs, mode: EntryMode) {
    let gdt = boot_gdt(mode == EntryMode::Long64);
    let code = segment_from_gdt(gdt[2], BOOT_CS);
    let data = segment_from_gdt(gdt[3], BOOT_DS);
    let tss = segment_from_gdt(gdt[4], BOOT_TSS);
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    match mode {
        EntryMode::Long64 => {
            sregs.cr0 |= CR0_PE | CR0_PG | CR0_ET;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= CR4_PAE;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh32 => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
}

/// General registers at entry: `entry` in RIP, `info` (the boot_params or hvm_start_info
/// address) in RSI for 64-bit entry or RBX for PVH, interrupts off.
pub fn boot_regs(mode: EntryMode, entry: u64, info: u64) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::Long64 => {
            regs.rsi = info;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
        }
        EntryMode::Pvh32 => regs.rbx = info,
    }
    regs
}

/// The FPU state after FNINIT with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// MSR indices rvmm initialises.
pub mod msr_index {
    /// IA32_SYSENTER_CS.
    pub const SYSENTER_CS: u32 = 0x174;
    /// IA32_SYSENTER_ESP.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// STAR.
    pub const STAR: u32 = 0xc000_0081;
    /// LSTAR.
    pub const LSTAR: u32 = 0xc000_0082;
    /// CSTAR.
    pub const CSTAR: u32 = 0xc000_0083;
    /// SYSCALL_MASK.
    pub const SYSCALL_MASK: u32 = 0xc000_0084;
    /// KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// IA32_TSC.
    pub const TSC: u32 = 0x10;
    /// IA32_MISC_ENABLE.
    pub const MISC_ENABLE: u32 = 0x1a0;
    /// IA32_MTRR_DEF_TYPE.
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
}

/// MSR values each vCPU starts with: syscall MSRs cleared, fast strings on, MTRRs enabled
/// with write-back as the default type (as Firecracker and Cloud Hypervisor do).
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    use msr_index::*;
    let e = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        e(SYSENTER_CS, 0),
        e(SYSENTER_ESP, 0),
        e(SYSENTER_EIP, 0),
        e(STAR, 0),
        e(CSTAR, 0),
        e(KERNEL_GS_BASE, 0),
        e(SYSCALL_MASK, 0),
        e(LSTAR, 0),
        e(TSC, 0),
        e(MISC_ENABLE, 1),
        e(MTRR_DEF_TYPE, (1 << 11) | 6),
    ]
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_reg(l: &kvm_lapic_state, off: usize) -> u32 {
    let b = &l.regs[off..off + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(l: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, b) in v.to_le_bytes().iter().enumerate() {
        l.regs[off + i] = *b as _;
    }
}

/// Route LINT0 as ExtINT (the 8259 PIC) and LINT1 as NMI, as a PC BIOS leaves them.
pub fn setup_lint(lapic: &mut kvm_lapic_state) {
    let set_mode = |v: u32, mode: u32| (v & !0x700) | (mode << 8);
    let lvt0 = lapic_reg(lapic, APIC_LVT0);
    set_lapic_reg(lapic, APIC_LVT0, set_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = lapic_reg(lapic, APIC_LVT1);
    set_lapic_reg(lapic, APIC_LVT1, set_mode(lvt1, APIC_MODE_NMI));
}

/// The register value at `off` in a local APIC state page.
pub fn lapic_register(lapic: &kvm_lapic_state, off: usize) -> u32 {
    lapic_reg(lapic, off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_enables_paging_pae_and_lma() {
        let mut s = kvm_sregs {
            cr0: 0x6000_0010,
            ..Default::default()
        };
        setup_sregs(&mut s, EntryMode::Long64);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.cr3, PML4_START);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!((s.cs.selector, s.cs.l), (0x10, 1));
        assert_eq!((s.ds.selector, s.ss.selector), (0x18, 0x18));
        assert_eq!((s.gdt.base, s.gdt.limit), (GDT_START, 39));
    }

    #[test]
    fn pvh_is_protected_mode_without_paging() {
        let mut s = kvm_sregs {
            cr0: 0x6000_0010,
            efer: 0x500,
            ..Default::default()
        };
        setup_sregs(&mut s, EntryMode::Pvh32);
        assert_eq!(s.cr0 & CR0_PG, 0);
        assert_eq!(s.cr0 & CR0_PE, CR0_PE);
        assert_eq!(s.efer, 0);
        assert_eq!((s.cs.l, s.cs.db), (0, 1));
        let r = boot_regs(EntryMode::Pvh32, 0x100_0000, 0x6000);
        assert_eq!((r.rip, r.rbx, r.rsi, r.rflags), (0x100_0000, 0x6000, 0, 2));
        let r = boot_regs(EntryMode::Long64, 0x100_0200, 0x7000);
        assert_eq!((r.rip, r.rsi, r.rbx), (0x100_0200, 0x7000, 0));
    }

    #[test]
    fn lint_pins_become_extint_and_nmi() {
        let mut l = kvm_lapic_state::default();
        set_lapic_reg(&mut l, APIC_LVT0, 0x0001_0000);
        setup_lint(&mut l);
        assert_eq!(lapic_register(&l, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_register(&l, APIC_LVT1), 0x400);
    }

    #[test]
    fn msrs_are_unique_and_enable_mtrrs() {
        let m = boot_msrs();
        let mut idx: Vec<u32> = m.iter().map(|e| e.index).collect();
        idx.sort();
        idx.dedup();
        assert_eq!(idx.len(), m.len());
        let mtrr = m
            .iter()
            .find(|e| e.index == msr_index::MTRR_DEF_TYPE)
            .unwrap();
        assert_eq!(mtrr.data, 0x806);
    }
}
