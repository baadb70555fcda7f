//! The Linux x86 boot protocol's `boot_params` ("zero page") and initrd placement.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};

use crate::e820::E820Entry;

/// "HdrS": the setup header magic.
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// The 0xAA55 boot flag.
pub const BOOT_FLAG: u16 = 0xaa55;
/// Loader type "undefined" (0xff): rvmm has no assigned boot loader id.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Kernel load alignment used when no setup header is available (ELF boot).
pub const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x0100_0000;
/// Highest initrd address for boot protocols before 2.03.
pub const LEGACY_INITRD_ADDR_MAX: u32 = 0x37ff_ffff;
/// Number of e820 slots in `boot_params`.
pub const E820_MAX_ENTRIES: usize = 128;

/// Errors laying out boot information.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BootError {
    /// The e820 map has more entries than `boot_params` holds.
    #[error("the e820 map has {0} entries; boot_params holds at most 128")]
    TooManyE820Entries(usize),
    /// The initrd does not fit between the kernel and the highest address it may use.
    #[error(
        "initrd of {size} bytes does not fit in guest memory below {max:#x} above the kernel \
         (ends at {kernel_end:#x}); give the guest more --memory or use a smaller initrd"
    )]
    InitrdTooLarge {
        /// Initrd size in bytes.
        size: u64,
        /// Highest usable address + 1.
        max: u64,
        /// End of the loaded kernel.
        kernel_end: u64,
    },
    /// The command line is longer than the kernel accepts.
    #[error("kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Length given.
        len: usize,
        /// Maximum length (without NUL).
        max: usize,
    },
    /// The command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
}

/// Where the boot loader put things, as recorded in `boot_params`.
#[derive(Debug, Clone, Default)]
pub struct BootInfo {
    /// Address of the NUL-terminated command line.
    pub cmdline_addr: u64,
    /// Length of the command line without the NUL.
    pub cmdline_len: usize,
    /// Initrd `(address, size)`, if any.
    pub initrd: Option<(u64, u64)>,
    /// The memory map.
    pub e820: Vec<E820Entry>,
    /// Address of the ACPI RSDP, or 0.
    pub rsdp_addr: u64,
}

/// A setup header for kernels that come without one (ELF vmlinux entered at its 64-bit entry).
pub fn default_setup_header() -> setup_header {
    setup_header {
        boot_flag: BOOT_FLAG,
        header: HDRS_MAGIC,
        version: 0x020f,
        kernel_alignment: DEFAULT_KERNEL_ALIGNMENT,
        initrd_addr_max: 0x7fff_ffff,
        cmdline_size: (crate::layout::CMDLINE_MAX_SIZE - 1) as u32,
        ..Default::default()
    }
}

/// The highest initrd address + 1 a kernel with header `hdr` accepts.
pub fn initrd_limit(hdr: &setup_header) -> u64 {
    let max = if hdr.version >= 0x0203 && hdr.initrd_addr_max != 0 {
        hdr.initrd_addr_max
    } else {
        LEGACY_INITRD_ADDR_MAX
    };
    u64::from(max) + 1
}

/// The longest command line (without NUL) a kernel with header `hdr` accepts.
pub fn cmdline_limit(hdr: &setup_header) -> usize {
    let kernel_max = if hdr.version >= 0x0206 && hdr.cmdline_size != 0 {
        hdr.cmdline_size as usize
    } else {
        255
    };
    kernel_max.min(crate::layout::CMDLINE_MAX_SIZE - 1)
}

/// Check a command line for a kernel with header `hdr`.
pub fn check_cmdline(cmdline: &str, hdr: &setup_header) -> Result<(), BootError> {
    if cmdline.as_bytes().contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    let max = cmdline_limit(hdr);
    if cmdline.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    Ok(())
}

/// Page-aligned address for an initrd of `size` bytes: as high as possible below both
/// `limit` (from the kernel header) and `ram_end` (end of low RAM), and not below `kernel_end`.
pub fn initrd_address(
    size: u64,
    limit: u64,
    ram_end: u64,
    kernel_end: u64,
) -> Result<u64, BootError> {
    let max = limit.min(ram_end);
    let err = BootError::InitrdTooLarge {
        size,
        max,
        kernel_end,
    };
    let start = max.checked_sub(size).ok_or(err.clone())? & !0xfff;
    if start < kernel_end {
        return Err(err);
    }
    Ok(start)
}

/// Fill `boot_params` from the kernel's setup header and where things were placed.
pub fn build_boot_params(hdr: &setup_header, info: &BootInfo) -> Result<boot_params, BootError> {
    if info.e820.len() > E820_MAX_ENTRIES {
        return Err(BootError::TooManyE820Entries(info.e820.len()));
    }
    let mut params = boot_params {
        hdr: *hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG;
    params.hdr.header = HDRS_MAGIC;
    // The command line is below 4 GiB, so the 32-bit pointer suffices.
    params.hdr.cmd_line_ptr = info.cmdline_addr as u32;
    params.ext_cmd_line_ptr = (info.cmdline_addr >> 32) as u32;
    if let Some((addr, size)) = info.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    for (slot, e) in params.e820_table.iter_mut().zip(&info.e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = info.e820.len() as u8;
    params.acpi_rsdp_addr = info.rsdp_addr;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::ByteValued;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn fields_land_at_the_offsets_of_the_boot_protocol() {
        let info = BootInfo {
            cmdline_addr: 0x20000,
            cmdline_len: 10,
            initrd: Some((0x1f00_0000, 0x12345)),
            e820: crate::e820::e820_map(512 << 20),
            rsdp_addr: 0xe0000,
        };
        let hdr = setup_header {
            version: 0x020f,
            setup_sects: 0x1b,
            ..Default::default()
        };
        let p = build_boot_params(&hdr, &info).unwrap();
        let b = p.as_slice();
        assert_eq!(b.len(), 4096);
        assert_eq!(u64_at(b, 0x070), 0xe0000, "acpi_rsdp_addr");
        assert_eq!(b[0x1e8], 4, "e820_entries");
        assert_eq!(b[0x1f1], 0x1b, "setup_sects");
        assert_eq!(
            u16::from_le_bytes([b[0x1fe], b[0x1ff]]),
            0xaa55,
            "boot_flag"
        );
        assert_eq!(u32_at(b, 0x202), HDRS_MAGIC, "header");
        assert_eq!(u16::from_le_bytes([b[0x206], b[0x207]]), 0x020f, "version");
        assert_eq!(b[0x210], 0xff, "type_of_loader");
        assert_eq!(u32_at(b, 0x218), 0x1f00_0000, "ramdisk_image");
        assert_eq!(u32_at(b, 0x21c), 0x12345, "ramdisk_size");
        assert_eq!(u32_at(b, 0x228), 0x20000, "cmd_line_ptr");
        // e820_table at 0x2d0, 20 bytes an entry.
        assert_eq!(u64_at(b, 0x2d0), 0);
        assert_eq!(u64_at(b, 0x2d8), 0x9fc00);
        assert_eq!(u32_at(b, 0x2e0), 1);
        assert_eq!(u64_at(b, 0x2d0 + 2 * 20), 0x100000);
        assert_eq!(u32_at(b, 0x2d0 + 20 + 16), 2);
    }

    #[test]
    fn initrd_goes_high_page_aligned_and_above_the_kernel() {
        let a = initrd_address(0x1800, 0x3800_0000, 0x2000_0000, 0x200_0000).unwrap();
        assert_eq!(a, 0x2000_0000 - 0x2000);
        assert_eq!(a % 4096, 0);
        // The kernel's limit is lower than RAM.
        assert_eq!(
            initrd_address(0x1000, 0x1000_0000, 0x2000_0000, 0).unwrap(),
            0x0fff_f000
        );
        assert!(matches!(
            initrd_address(0x1f00_0000, 0x3800_0000, 0x2000_0000, 0x200_0000),
            Err(BootError::InitrdTooLarge { .. })
        ));
        assert!(initrd_address(u64::MAX, 0x3800_0000, 0x2000_0000, 0).is_err());
    }

    #[test]
    fn header_limits_follow_the_protocol_version() {
        let old = setup_header {
            version: 0x0202,
            initrd_addr_max: 0x1000,
            ..Default::default()
        };
        assert_eq!(initrd_limit(&old), 0x3800_0000);
        assert_eq!(cmdline_limit(&old), 255);
        let new = setup_header {
            version: 0x020f,
            initrd_addr_max: 0x7fff_ffff,
            cmdline_size: 2047,
            ..Default::default()
        };
        assert_eq!(initrd_limit(&new), 0x8000_0000);
        assert_eq!(cmdline_limit(&new), 2047);
        assert!(check_cmdline(&"x".repeat(2047), &new).is_ok());
        assert!(matches!(
            check_cmdline(&"x".repeat(2048), &new),
            Err(BootError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        ));
        assert_eq!(check_cmdline("a\0b", &new), Err(BootError::CmdlineNul));
    }

    #[test]
    fn too_many_e820_entries_is_an_error() {
        let info = BootInfo {
            e820: vec![
                crate::e820::E820Entry {
                    addr: 0,
                    size: 1,
                    kind: 1
                };
                129
            ],
            ..Default::default()
        };
        assert_eq!(
            build_boot_params(&default_setup_header(), &info).err(),
            Some(BootError::TooManyE820Entries(129))
        );
    }
}
