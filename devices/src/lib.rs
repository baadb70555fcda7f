//! Everything an rvmm guest sees.
//!
//! Devices are plain structs reached through a [`bus::Bus`] (port I/O or MMIO ranges): the serial
//! 8250, i8042, RTC/CMOS, ACPI power management, the PCI host bridge and config space, the
//! virtio-pci transport and the virtio block, network, input and display devices. A device never
//! calls KVM: it is handed guest memory and an interrupt line ([`irq`]) when it is built. That is
//! what lets the same virtio device code run inside the `rvmm` VMM and behind the vhost-user
//! backends of `rvmm-vhost`. Every value a guest writes is validated before use; a bad one fails
//! that request, is logged, and leaves the VM running.

pub mod acpi_pm;
pub mod bus;
pub mod cmos;
pub mod debug_port;
pub mod i8042;
pub mod input;
pub mod irq;
pub mod pci;
pub mod scsi;
pub mod serial;
pub mod vga;
pub mod virtio;

/// Guest RAM as every device sees it; the VMM and the vhost-user backends both hand this in.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;
/// Guest RAM behind an atomic handle, so a vhost-user frontend can swap the map at run time.
pub type GuestMemoryAtomic = vm_memory::GuestMemoryAtomic<GuestMemoryMmap>;
