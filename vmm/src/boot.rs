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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SerialMode;
    use std::io::Write;

    fn cfg(kernel: &std::path::Path, initrd: Option<&std::path::Path>, mem: u64) -> VmConfig {
        VmConfig {
            kernel: kernel.into(),
            initrd: initrd.map(Into::into),
            cmdline: "console=ttyS0 hello=1".into(),
            mem_size: mem,
            cpus: 2,
            serial: SerialMode::None,
            no_reboot: false,
            cpu_model: arch::cpuid::CpuModel::Host,
            hugepages: false,
            kvm_device: "/dev/kvm".into(),
        }
    }

    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 5 * 512];
        img[0x1f1] = 4;
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x211] = 1;
        img[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes());
        img[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&255u32.to_le_bytes());
        img.extend_from_slice(payload);
        img
    }

    fn pvh_elf(entry: u32) -> Vec<u8> {
        let code = [0xf4u8; 16];
        let mut note = Vec::new();
        for v in [4u32, 4, 18] {
            note.extend_from_slice(&v.to_le_bytes());
        }
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&entry.to_le_bytes());
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x12] = 62;
        b[0x18..0x20].copy_from_slice(&0x10_0000u64.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36] = 56;
        b[0x38] = 2;
        let ph = |kind: u32, off: u64, addr: u64, size: u64| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&kind.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[24..32].copy_from_slice(&addr.to_le_bytes());
            p[32..40].copy_from_slice(&size.to_le_bytes());
            p[40..48].copy_from_slice(&size.to_le_bytes());
            p
        };
        let code_off = 64 + 112u64;
        b.extend(ph(1, code_off, 0x10_0000, code.len() as u64));
        b.extend(ph(4, code_off + code.len() as u64, 0, note.len() as u64));
        b.extend_from_slice(&code);
        b.extend_from_slice(&note);
        b
    }

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn mem(size: u64) -> GuestMemoryMmap {
        crate::memory::create_guest_memory(size, false).unwrap()
    }

    #[test]
    fn bzimage_boot_lays_out_kernel_params_cmdline_initrd_and_acpi() {
        let k = file(&bzimage(b"\x90KERNEL"));
        let initrd = file(&[0x5a; 10000]);
        let c = cfg(k.path(), Some(initrd.path()), 64 << 20);
        let m = mem(c.mem_size);
        let e = load(&m, &c, &AcpiExtras::default()).unwrap();
        assert_eq!(
            e,
            BootEntry {
                mode: EntryMode::Long64,
                entry: 0x100200,
                info_addr: 0x7000
            }
        );
        let mut k = [0u8; 7];
        m.read_slice(&mut k, GuestAddress(0x100000)).unwrap();
        assert_eq!(&k, b"\x90KERNEL");
        let zp = |off: u64| m.read_obj::<u32>(GuestAddress(0x7000 + off)).unwrap();
        assert_eq!(zp(0x202), 0x5372_6448);
        assert_eq!(zp(0x210) & 0xff, 0xff, "type_of_loader");
        assert_eq!(zp(0x228), 0x20000, "cmd_line_ptr");
        let (addr, size) = (u64::from(zp(0x218)), zp(0x21c));
        assert_eq!(size, 10000);
        assert_eq!(addr % 4096, 0);
        assert!(addr + 10000 <= 64 << 20 && addr >= 0x100007);
        assert_eq!(m.read_obj::<u8>(GuestAddress(addr + 9999)).unwrap(), 0x5a);
        let mut cl = vec![0u8; c.cmdline.len() + 1];
        m.read_slice(&mut cl, GuestAddress(0x20000)).unwrap();
        assert_eq!(&cl[..c.cmdline.len()], c.cmdline.as_bytes());
        assert_eq!(cl[c.cmdline.len()], 0);
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(0x7070)).unwrap(),
            0xe0000,
            "acpi_rsdp_addr"
        );
        let mut sig = [0u8; 8];
        m.read_slice(&mut sig, GuestAddress(0xe0000)).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
        // Page tables: PML4[0] points at the PDPT.
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(0x9000)).unwrap() & !0xfff,
            0xa000
        );
    }

    #[test]
    fn pvh_boot_writes_start_info_and_a_32_bit_gdt() {
        let k = file(&pvh_elf(0x10_0004));
        let c = cfg(k.path(), None, 32 << 20);
        let m = mem(c.mem_size);
        let e = load(&m, &c, &AcpiExtras::default()).unwrap();
        assert_eq!(
            e,
            BootEntry {
                mode: EntryMode::Pvh32,
                entry: 0x10_0004,
                info_addr: 0x6000
            }
        );
        assert_eq!(
            m.read_obj::<u32>(GuestAddress(0x6000)).unwrap(),
            0x336e_c578
        );
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(0x6018)).unwrap(),
            0x20000,
            "cmdline_paddr"
        );
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(0x6020)).unwrap(),
            0xe0000,
            "rsdp_paddr"
        );
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(0x500 + 16)).unwrap(),
            0x00cf_9b00_0000_ffff
        );
    }

    #[test]
    fn kernels_and_initrds_that_do_not_fit_are_refused_with_advice() {
        let k = file(&bzimage(&vec![0x90; 6 << 20]));
        let c = cfg(k.path(), None, 4 << 20);
        let err = load(&mem(c.mem_size), &c, &AcpiExtras::default()).unwrap_err();
        assert!(format!("{err:#}").contains("more --memory"), "{err:#}");
        let k = file(&bzimage(b"\x90"));
        let big = file(&vec![0u8; 5 << 20]);
        let c = cfg(k.path(), Some(big.path()), 4 << 20);
        let err = load(&mem(c.mem_size), &c, &AcpiExtras::default()).unwrap_err();
        assert!(format!("{err:#}").contains("initrd"), "{err:#}");
        let junk = file(b"not a kernel at all");
        let c = cfg(junk.path(), None, 8 << 20);
        let err = load(&mem(c.mem_size), &c, &AcpiExtras::default()).unwrap_err();
        assert!(format!("{err:#}").contains("not a kernel image"), "{err:#}");
        let mut c = cfg(k.path(), None, 8 << 20);
        c.cmdline = "x".repeat(300);
        let err = load(&mem(c.mem_size), &c, &AcpiExtras::default()).unwrap_err();
        assert!(format!("{err:#}").contains("at most 255"), "{err:#}");
    }
}
