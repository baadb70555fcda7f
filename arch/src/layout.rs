//! Guest-physical addresses of everything rvmm places in memory (see docs/guest-interface.md).

/// Start of RAM.
pub const RAM_START: u64 = 0;
/// GDT used for 64-bit and PVH entry.
pub const GDT_START: u64 = 0x500;
/// An empty IDT, so a stray early interrupt faults instead of jumping to garbage.
pub const IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`; its memory map follows at [`PVH_MEMMAP_START`].
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH memory map table (array of `hvm_memmap_table_entry`).
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the BSP.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level-4 page map of the identity page tables.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// First of four page directories (2 MiB pages, 4 GiB identity map).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line rvmm accepts, including the terminating NUL.
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Extended BIOS data area: start of the reserved range below 1 MiB.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables (and the RSDP, found by the legacy scan) live here.
pub const ACPI_START: u64 = 0xe0000;
/// End (exclusive) of the BIOS area that holds the ACPI tables.
pub const ACPI_END: u64 = 0x100000;
/// Start of high memory: the protected-mode kernel's default load address.
pub const HIMEM_START: u64 = 0x100000;
/// Start of the 32-bit MMIO hole below 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xC000_0000;
/// Size of the 32-bit MMIO hole.
pub const MMIO_HOLE_SIZE: u64 = 0x4000_0000;
/// First address above 4 GiB.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// 32-bit PCI MMIO window for BARs.
pub const PCI_MMIO32_START: u64 = 0xC000_0000;
/// Size of the 32-bit PCI MMIO window.
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
/// PCIe ECAM (MMCONFIG) base, 256 buses.
pub const PCIE_ECAM_START: u64 = 0xE000_0000;
/// PCIe ECAM size.
pub const PCIE_ECAM_SIZE: u64 = 0x1000_0000;
/// KVM's three-page TSS region (required on Intel), inside the hole.
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// IOAPIC MMIO base.
pub const IOAPIC_START: u64 = 0xFEC0_0000;
/// Number of IOAPIC input pins.
pub const IOAPIC_PINS: u32 = 24;
/// Local APIC MMIO base.
pub const LAPIC_START: u64 = 0xFEE0_0000;

/// ACPI PM1a event block (status + enable, 4 bytes).
pub const ACPI_PM1A_EVT: u16 = 0x600;
/// ACPI PM1a control block (2 bytes).
pub const ACPI_PM1A_CNT: u16 = 0x604;
/// ACPI PM timer (4 bytes, 3.579545 MHz).
pub const ACPI_PM_TMR: u16 = 0x608;
/// ACPI reset register (1 byte); writing [`ACPI_RESET_VALUE`] resets the machine.
pub const ACPI_RESET_REG: u16 = 0x60c;
/// Value the guest writes to [`ACPI_RESET_REG`] to reset.
pub const ACPI_RESET_VALUE: u8 = 0x1;
/// Total length of the ACPI PM I/O block starting at [`ACPI_PM1A_EVT`].
pub const ACPI_PM_LEN: u16 = 0x10;
/// SLP_TYP value the DSDT's `\_S5` gives for soft-off.
pub const ACPI_S5_SLP_TYP: u8 = 5;
/// The SCI interrupt (ISA IRQ).
pub const ACPI_SCI_IRQ: u8 = 9;

/// Start of the 64-bit PCI MMIO window for a machine whose RAM ends at `ram_end` (exclusive):
/// the first 1 GiB boundary at or above both 4 GiB and the end of RAM.
pub fn pci_mmio64_start(ram_end: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    ram_end.max(HIGH_RAM_START).div_ceil(GIB) * GIB
}
