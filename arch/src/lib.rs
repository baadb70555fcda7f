//! x86_64 architecture support for rvmm.
//!
//! Pure functions that lay out the boot state of a PC guest in guest memory — the Linux
//! `boot_params` zero page and e820 map, identity page tables and GDT for 64-bit entry, PVH start
//! info, MP/ACPI tables — and compute the CPUID leaves and MSR values each vCPU starts with. This
//! crate owns no threads and no file descriptors: callers hand it guest memory and KVM data
//! structures and it fills them in.

pub mod acpi;
pub mod bootparams;
pub mod cpuid;
pub mod e820;
pub mod gdt;
pub mod kernel;
pub mod layout;
pub mod paging;
pub mod pvh;
pub mod regs;
