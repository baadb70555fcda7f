//! PCI: the host bridge, configuration space (ports 0xCF8–0xCFF and ECAM), BAR routing, MSI-X
//! and INTx, plus the ACPI description of the root bridge.
//!
//! # How the VMM uses it
//! 1. Build a [`PciRoot`] with the MMIO windows from `docs/guest-interface.md`
//!    ([`PciWindows::standard`]); it already holds the host bridge at 00:00.0.
//! 2. Build each device (e.g. [`crate::virtio::pci::VirtioPciDevice`]) handing it the small
//!    traits below that the VMM implements over KVM: [`MsiController`] (one GSI route + irqfd per
//!    MSI-X vector), [`IntxPin`] (the level of the device's IOAPIC pin: [`intx_gsi`] of
//!    [`PciRoot::next_slot`], pin 0) and
//!    [`IoEventRegistrar`] (ioeventfds for queue notifications). Devices never call KVM.
//! 3. [`PciRoot::add_device`] places it in that slot and assigns its BARs and interrupt line,
//!    as firmware would.
//! 4. Insert the bus devices: [`PciRoot::config_io`] on the PIO bus at [`CONFIG_IO_BASE`]
//!    (8 ports), [`PciRoot::ecam`] on the MMIO bus at [`ECAM_BASE`] ([`ECAM_SIZE`]), and
//!    [`PciRoot::mmio_window`] over each window of [`PciWindows`]; BAR accesses that exit are
//!    routed to the device decoding them, wherever the guest moved the BAR.
//! 5. Put [`acpi::mcfg`] in the XSDT and [`acpi::root_bridge_aml`] in the DSDT.

pub mod acpi;
pub mod config;
pub mod msix;
pub mod root;

use std::io;

use vmm_sys_util::eventfd::EventFd;

pub use root::{PciRoot, PciWindows};

/// First of the 8 configuration mechanism #1 ports (address at 0xCF8, data at 0xCFC).
pub const CONFIG_IO_BASE: u64 = 0xcf8;
/// Number of ports of configuration mechanism #1.
pub const CONFIG_IO_SIZE: u64 = 8;
/// Guest-physical base of the ECAM window (PCIe enhanced configuration access).
pub const ECAM_BASE: u64 = 0xe000_0000;
/// Size of the ECAM window: 256 buses × 32 devices × 8 functions × 4 KiB.
pub const ECAM_SIZE: u64 = 0x1000_0000;
/// First IOAPIC input used for PCI INTx (pins 16–23 are shared, level-triggered).
pub const INTX_GSI_BASE: u32 = 16;
/// Number of IOAPIC inputs PCI INTx is spread across.
pub const INTX_GSI_COUNT: u32 = 8;

/// The IOAPIC input (GSI) that INTx `pin` (0 = INTA … 3 = INTD) of `slot` on bus 0 raises.
///
/// The DSDT `_PRT` and the interrupt-line register both follow this; an MP table should too.
pub fn intx_gsi(slot: u8, pin: u8) -> u32 {
    INTX_GSI_BASE + (u32::from(slot) + u32::from(pin)) % INTX_GSI_COUNT
}

/// How a BAR decodes addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciBarKind {
    /// 32-bit memory BAR, placed in the 32-bit window.
    Mem32,
    /// 64-bit memory BAR (two registers), placed in the 64-bit window when there is one.
    Mem64,
}

/// A BAR a device declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciBarDef {
    /// BAR register index (0–5; a 64-bit BAR also uses index + 1).
    pub index: u8,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Decode type.
    pub kind: PciBarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
}

/// A BAR as currently decoded: memory decoding is on and the guest programmed an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciBarRegion {
    /// BAR register index.
    pub index: u8,
    /// Guest-physical base.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A PCI function on the root bus.
///
/// Configuration offsets are below 4096 and accesses never cross a dword; BAR offsets are
/// relative to the BAR base. Reads of nothing answer zeroes (config) or all ones (BARs).
pub trait PciDevice: Send {
    /// Read configuration space.
    fn config_read(&mut self, offset: u16, data: &mut [u8]);
    /// Write configuration space.
    fn config_write(&mut self, offset: u16, data: &[u8]);
    /// The BARs the function declares (for allocation).
    fn bar_defs(&self) -> Vec<PciBarDef>;
    /// The memory ranges the function decodes now.
    fn bar_regions(&self) -> Vec<PciBarRegion>;
    /// Guest read inside BAR `bar`.
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]);
    /// Guest write inside BAR `bar`.
    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]);
}

/// An MSI message as the guest programmed it into an MSI-X table entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address (0xFEEx_xxxx on x86).
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// MSI delivery for one device, implemented by the VMM (a KVM GSI route and an irqfd per
/// vector, allocated on first use) or by a test.
pub trait MsiController: Send + Sync {
    /// Vector `vector` now carries `msg`; `masked` says whether the guest masked it (the device
    /// holds masked interrupts pending itself, so a route may simply stay in place).
    fn configure(&self, vector: u16, msg: MsiMessage, masked: bool) -> io::Result<()>;
    /// Send vector `vector` (only called while it is enabled and unmasked).
    fn trigger(&self, vector: u16) -> io::Result<()>;
}

/// The level of a device's INTx pin, wired to IOAPIC input [`intx_gsi`] (KVM_IRQ_LINE in the VMM).
pub trait IntxPin: Send + Sync {
    /// Assert (true) or deassert the line.
    fn set_level(&self, asserted: bool) -> io::Result<()>;
}

/// Registration of ioeventfds, implemented by the VMM (KVM_IOEVENTFD on the MMIO bus).
pub trait IoEventRegistrar: Send + Sync {
    /// Signal `fd` on every guest write of any value at `addr`, `len` bytes wide (0 = any
    /// width, as with KVM_CAP_IOEVENTFD_ANY_LENGTH).
    fn register(&self, addr: u64, len: u32, fd: &EventFd) -> io::Result<()>;
    /// Undo [`IoEventRegistrar::register`].
    fn unregister(&self, addr: u64, len: u32, fd: &EventFd) -> io::Result<()>;
}
