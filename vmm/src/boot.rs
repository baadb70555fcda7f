//! Loading a kernel, initrd and command line into guest memory and laying out the boot
//! structures (ACPI, page tables, GDT, boot_params or PVH start info) for the BSP.

use anyhow::{bail, Context, Result};
use vm_memory::{Bytes, GuestAddress};

use arch::bootparams::{self, BootInfo};
use arch::kernel::{KernelImage, STARTUP_64_OFFSET};
use arch::layout::*;
use arch::regs::EntryMode;
use devices::GuestMemoryMmap;

use crate::config::VmConfig;
use crate::pci::AcpiExtras;

/// Where and how the BSP starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    /// 64-bit or PVH 32-bit.
    pub mode: EntryMode,
    /// RIP at entry.
    pub entry: u64,
    /// `boot_params` (RSI) or `hvm_start_info` (RBX) address.
    pub info_addr: u64,
}

fn write(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8], what: &str) -> Result<()> {
    mem.write_slice(bytes, GuestAddress(addr))
        .with_context(|| format!("cannot write {what} ({} bytes) at {addr:#x}", bytes.len()))
}

fn write_common(mem: &GuestMemoryMmap, cfg: &VmConfig, extras: &AcpiExtras) -> Result<u64> {
    let acpi = arch::acpi::build(&arch::acpi::AcpiConfig {
        cpus: cfg.cpus,
        dsdt_aml: extras.dsdt_aml.clone(),
        extra_tables: extras.tables.clone(),
    })
    .context("cannot build the ACPI tables")?;
    write(mem, acpi.rsdp_addr, &acpi.image, "ACPI tables")?;
    let gdt: Vec<u8> = arch::gdt::boot_gdt(true)
        .iter()
        .flat_map(|e| e.to_le_bytes())
        .collect();
    write(mem, GDT_START, &gdt, "GDT")?;
    write(mem, IDT_START, &[0u8; 8], "IDT")?;
    for (addr, table) in arch::paging::identity_page_tables() {
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        write(mem, addr, &bytes, "page tables")?;
    }
    Ok(acpi.rsdp_addr)
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    cfg: &VmConfig,
    limit: u64,
    kernel_end: u64,
) -> Result<Option<(u64, u64)>> {
    let Some(path) = &cfg.initrd else {
        return Ok(None);
    };
    let data =
        std::fs::read(path).with_context(|| format!("cannot read initrd {}", path.display()))?;
    let low_end = arch::e820::low_ram_end(cfg.mem_size);
    let addr = bootparams::initrd_address(data.len() as u64, limit, low_end, kernel_end)
        .with_context(|| format!("initrd {} is too large", path.display()))?;
    write(mem, addr, &data, "initrd")?;
    Ok(Some((addr, data.len() as u64)))
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<()> {
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    write(mem, CMDLINE_START, &bytes, "kernel command line")
}

/// Load `cfg.kernel` (and initrd, command line) into `mem` and prepare the boot structures,
/// with `extras` (for example PCI's MCFG and root bridge) in the ACPI tables.
pub fn load(mem: &GuestMemoryMmap, cfg: &VmConfig, extras: &AcpiExtras) -> Result<BootEntry> {
    let path = &cfg.kernel;
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read kernel {}", path.display()))?;
    let image =
        arch::kernel::parse(&bytes).with_context(|| format!("cannot boot {}", path.display()))?;
    let low_end = arch::e820::low_ram_end(cfg.mem_size);
    let (kstart, kend) = image.footprint();
    if kstart < HIMEM_START || kend > low_end {
        bail!(
            "kernel {} needs guest memory {kstart:#x}-{kend:#x}, but RAM for it is \
             {HIMEM_START:#x}-{low_end:#x}: give the guest more --memory",
            path.display()
        );
    }
    let rsdp = write_common(mem, cfg, extras)?;
    let e820 = arch::e820::e820_map(cfg.mem_size);
    match &image {
        KernelImage::BzImage { hdr, payload } => {
            bootparams::check_cmdline(&cfg.cmdline, hdr).context("invalid --cmdline")?;
            write(mem, kstart, payload, "kernel")?;
            let initrd = load_initrd(mem, cfg, bootparams::initrd_limit(hdr), kend)?;
            write_cmdline(mem, &cfg.cmdline)?;
            let info = BootInfo {
                cmdline_addr: CMDLINE_START,
                cmdline_len: cfg.cmdline.len(),
                initrd,
                e820,
                rsdp_addr: rsdp,
            };
            let mut h = *hdr;
            h.code32_start = kstart as u32;
            let params = bootparams::build_boot_params(&h, &info)?;
            mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
                .context("cannot write boot_params")?;
            Ok(BootEntry {
                mode: EntryMode::Long64,
                entry: kstart + STARTUP_64_OFFSET,
                info_addr: ZERO_PAGE_START,
            })
        }
        KernelImage::Elf {
            segments,
            entry,
            pvh_entry,
        } => {
            for s in segments {
                write(mem, s.paddr, s.data, "kernel segment")?;
            }
            let hdr = bootparams::default_setup_header();
            bootparams::check_cmdline(&cfg.cmdline, &hdr).context("invalid --cmdline")?;
            let initrd = load_initrd(mem, cfg, bootparams::initrd_limit(&hdr), kend)?;
            write_cmdline(mem, &cfg.cmdline)?;
            if let Some(pvh) = pvh_entry {
                for p in arch::pvh::start_info(CMDLINE_START, rsdp, &e820, initrd)? {
                    write(mem, p.addr, &p.bytes, "PVH start info")?;
                }
                // PVH enters in 32-bit mode: the GDT's code segment must be 32-bit.
                let gdt: Vec<u8> = arch::gdt::boot_gdt(false)
                    .iter()
                    .flat_map(|e| e.to_le_bytes())
                    .collect();
                write(mem, GDT_START, &gdt, "GDT")?;
                return Ok(BootEntry {
                    mode: EntryMode::Pvh32,
                    entry: *pvh,
                    info_addr: PVH_INFO_START,
                });
            }
            let info = BootInfo {
                cmdline_addr: CMDLINE_START,
                cmdline_len: cfg.cmdline.len(),
                initrd,
                e820,
                rsdp_addr: rsdp,
            };
            let params = bootparams::build_boot_params(&hdr, &info)?;
            mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
                .context("cannot write boot_params")?;
            Ok(BootEntry {
                mode: EntryMode::Long64,
                entry: *entry,
                info_addr: ZERO_PAGE_START,
            })
        }
    }
}
